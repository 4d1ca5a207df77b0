"""The Gaussian fit of the training data as a base score that a network corrects.

Fit mu and Sigma to the training examples (flattened to D values). Under noise of scale sigma the
Gaussian N(mu, Sigma) becomes N(mu, Sigma + sigma^2 I), whose score is known in closed form:

    s_G(x, sigma) = -(Sigma + sigma^2 I)^{-1} (x - mu) = -U diag(1 / (lambda + sigma^2)) U^T (x - mu)

with Sigma = U diag(lambda) U^T. A model s(x, sigma) = s_G(x, sigma) + F(x, sigma) / sigma then learns
only the non-Gaussian part. At large sigma p_sigma is close to Gaussian, so s_G alone is nearly right
there (Tweedie's denoiser of a Gaussian is the Wiener filter); in directions where the data do not
vary at all (MNIST's always-black border) it is exact at every sigma. The residual network no longer
has to learn either, which is what an under-trained NCSN gets wrong: on mnist5k its annealed chains
collapsed to thin "1"s or white blobs far from the data (docs/RESULTS.md).

This is the full-covariance form of models/cond_unet.py's `gaussian_skip` (which models only the image
mean). Used by NCSN through config.model.base_score = 'gaussian'.
"""
from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np


class GaussianBase(NamedTuple):
  mean: jax.Array    # [D]
  basis: jax.Array   # [D, D], columns are the eigenvectors U of Sigma
  eigvals: jax.Array  # [D], lambda >= 0


def fit(examples: np.ndarray) -> GaussianBase:
  """The maximum-likelihood Gaussian of examples [N, ...] (computed in float64, stored float32)."""
  x = np.asarray(examples, np.float64).reshape(len(examples), -1)
  if x.shape[0] < 2:
    raise ValueError(f"fitting a Gaussian needs at least 2 examples, got {x.shape[0]}")
  mu = x.mean(0)
  cov = np.cov(x, rowvar=False, bias=True).reshape(x.shape[1], x.shape[1])
  lam, u = np.linalg.eigh(cov)
  lam = np.clip(lam, 0.0, None)  # round-off can leave tiny negative eigenvalues
  return GaussianBase(jnp.asarray(mu, jnp.float32), jnp.asarray(u, jnp.float32), jnp.asarray(lam, jnp.float32))


def score(base: GaussianBase, x: jax.Array, sigma: jax.Array) -> jax.Array:
  """-(Sigma + sigma^2 I)^{-1} (x - mu) for x [B, ...] and sigma [B] (or a scalar); sigma > 0."""
  b = x.shape[0]
  flat = x.reshape(b, -1)
  chex.assert_axis_dimension(flat, 1, base.mean.shape[0])
  sig = jnp.broadcast_to(jnp.asarray(sigma, flat.dtype), (b,))
  coef = (flat - base.mean) @ base.basis                       # U^T (x - mu), row-wise
  coef = coef / (base.eigvals[None, :] + sig[:, None] ** 2)
  return -(coef @ base.basis.T).reshape(x.shape).astype(x.dtype)


def log_density(base: GaussianBase, x: jax.Array, sigma: jax.Array) -> jax.Array:
  """log N(x; mu, Sigma + sigma^2 I) up to the constant -D/2 log(2 pi), for x [B, ...]; [B]."""
  b = x.shape[0]
  flat = x.reshape(b, -1)
  sig = jnp.broadcast_to(jnp.asarray(sigma, flat.dtype), (b,))
  var = base.eigvals[None, :] + sig[:, None] ** 2
  coef = (flat - base.mean) @ base.basis
  return -0.5 * jnp.sum(coef ** 2 / var + jnp.log(var), axis=-1)

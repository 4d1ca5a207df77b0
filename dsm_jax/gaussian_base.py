"""The Gaussian fit of the training data as a base score that a network corrects.

Fit mu and Sigma to the training examples (flattened to D values). Under noise of scale sigma the
Gaussian N(mu, Sigma) becomes N(mu, Sigma + sigma^2 I), whose score is known in closed form:

    s_G(x, sigma) = -(Sigma + sigma^2 I)^{-1} (x - mu) = -U diag(1 / (lambda + sigma^2)) U^T (x - mu)

with Sigma = U diag(lambda) U^T. A model s(x, sigma) = s_G(x, sigma) + F(x, sigma) / sigma then learns
only the non-Gaussian part. At large sigma p_sigma is close to Gaussian, so s_G alone is nearly right
there (Tweedie's denoiser of a Gaussian is the Wiener filter); in directions where the data do not
vary at all (MNIST's always-black border) it is exact at every sigma. The residual network then does not
have to learn either, which is what an under-trained NCSN gets wrong: on mnist5k its annealed chains
collapse to thin "1"s or white blobs far from the data without it (docs/log/).

This is the full-covariance form of models/cond_unet.py's `gaussian_skip` (which models only the image
mean). Used by NCSN through config.model.base_score = 'gaussian'.

MDSM's energy has no sigma input: one E(x) is fitted to all noise levels at once (losses.mdsm, eq. 10). Its
Gaussian counterpart is the quadratic E_G(x) = 1/2 sum_k a_k (u_k . (x - mu))^2 whose a_k minimise the MDSM
loss on the Gaussian data N(mu, Sigma). Per eigen-direction k (data variance lambda_k, noise sigma with loss
weight w(sigma) = sigma^-weight_power, c = 1/sigma0^2) the loss is sum_sigma w [a^2 lambda + (a - c)^2 sigma^2],
minimised at

    a_k = c * sum_sigma w sigma^2 / sum_sigma w (lambda_k + sigma^2)

(`mdsm_coefficients`). In directions the data do not vary in, a_k = 1/sigma0^2; in high-variance ones it is
small. Used by MDSM through config.model.base_energy = 'gaussian': E = E_G + network.
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


def fit_dataset(dataset, seed: int = 0, n_draws: int = 10000) -> GaussianBase:
  """`fit` of an image dataset's training split, or of n_draws draws of a toy dataset (key from seed)."""
  if hasattr(dataset, "train_images"):
    return fit(dataset.train_images())
  return fit(np.asarray(dataset.sample(jax.random.PRNGKey(seed), n_draws)))


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


def mdsm_coefficients(base: GaussianBase, sigmas, sigma0: float, weight_power: float) -> jax.Array:
  """The a_k [D] of the MDSM-optimal quadratic energy for N(mu, Sigma) (module docstring), for the noise levels
  sigmas (a 1-D array of the levels the loss sees, equally likely: e.g. the batch's spread)."""
  sig = np.asarray(sigmas, np.float64).ravel()
  if sig.size == 0 or np.any(sig <= 0):
    raise ValueError(f"sigmas must be a non-empty array of positive values, got {sigmas!r}")
  w = sig ** -float(weight_power)
  lam = np.asarray(base.eigvals, np.float64)
  a = np.sum(w * sig ** 2) / (np.sum(w) * lam + np.sum(w * sig ** 2)) / sigma0 ** 2
  return jnp.asarray(a, jnp.float32)


def quadratic_energy(base: GaussianBase, coef: jax.Array, x: jax.Array) -> jax.Array:
  """1/2 sum_k coef_k (u_k . (x - mu))^2 for x [B, ...]; [B]."""
  flat = x.reshape(x.shape[0], -1)
  chex.assert_axis_dimension(flat, 1, base.mean.shape[0])
  proj = (flat - base.mean.astype(flat.dtype)) @ base.basis.astype(flat.dtype)
  return 0.5 * jnp.sum(coef.astype(flat.dtype) * proj ** 2, axis=-1)

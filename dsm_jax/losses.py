"""Score-matching objectives as pure functions.

Every loss takes the model as a callable closed over its parameters (`score_fn(x, sigma)`,
`energy_fn(x, sigma)` or `denoiser_fn(x, sigma)`, see `dsm_jax.fields`), an explicit PRNG key where it
draws noise, and a batch x of shape [B, ...]. It returns (scalar loss, aux dict of arrays). Norms are
summed over all non-batch dimensions and averaged over the batch.
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from dsm_jax import fields, sigmas as sigmas_lib

Array = jax.Array


def _sqnorm(v: Array) -> Array:
  return jnp.sum(jnp.reshape(v, (v.shape[0], -1)) ** 2, axis=-1)


def _check_batch(x: Array) -> None:
  chex.assert_rank(x, {2, 3, 4, 5})
  chex.assert_type(x, float)


# --------------------------------------------------------------------------- DAE / DSM (Vincent 2011)
def dsm(score_fn, rng: Array, x: Array, sigma) -> tuple[Array, dict]:
  """Denoising score matching at noise sigma (Vincent 2011, eq. 17 up to the 1/2):
      1/2 E || s(x~, sigma) + (x~ - x) / sigma^2 ||^2,   x~ = x + sigma n.
  sigma: a scalar or per-example [B]."""
  _check_batch(x)
  n = jax.random.normal(rng, x.shape, x.dtype)
  s = fields.bcast(sigma, x)
  x_noisy = x + s * n
  per_example = 0.5 * _sqnorm(score_fn(x_noisy, sigma) + n / s)
  return jnp.mean(per_example), {"per_example": per_example}


def dae(denoiser_fn, rng: Array, x: Array, sigma) -> tuple[Array, dict]:
  """Denoising autoencoder loss E || r(x~, sigma) - x ||^2 (Vincent 2011; Alain & Bengio 2014).
  Its minimiser is the Tweedie denoiser, r = x + sigma^2 s."""
  _check_batch(x)
  n = jax.random.normal(rng, x.shape, x.dtype)
  x_noisy = x + fields.bcast(sigma, x) * n
  per_example = _sqnorm(denoiser_fn(x_noisy, sigma) - x)
  return jnp.mean(per_example), {"per_example": per_example}


# --------------------------------------------------------------------------- NCSN (Song & Ermon 2019)
def ncsn(score_fn, rng: Array, x: Array, ladder: Array, anneal_power: float = 2.0) -> tuple[Array, dict]:
  """NCSN objective (Song & Ermon 2019, eqs. 5-6): one level i per example, uniformly,
      lambda(sigma_i) * 1/2 || s(x~, sigma_i) + (x~ - x)/sigma_i^2 ||^2,  lambda(sigma) = sigma^anneal_power
  (anneal_power = 2 is the paper's lambda(sigma) = sigma^2, which makes every level O(1)).

  aux: `level_loss_sum` and `level_count` ([L] each: the batch's per-level sums and counts)."""
  _check_batch(x)
  ladder = jnp.asarray(ladder, x.dtype)
  chex.assert_rank(ladder, 1)
  k_level, k_noise = jax.random.split(rng)
  levels = sigmas_lib.sample_levels(k_level, x.shape[0], ladder.shape[0])
  sigma = ladder[levels]
  n = jax.random.normal(k_noise, x.shape, x.dtype)
  s = fields.bcast(sigma, x)
  x_noisy = x + s * n
  dsm_term = 0.5 * _sqnorm(score_fn(x_noisy, sigma) + n / s)
  per_example = dsm_term * sigma ** anneal_power
  onehot = jax.nn.one_hot(levels, ladder.shape[0], dtype=x.dtype)
  aux = {
      "per_example": per_example,
      "level_loss_sum": per_example @ onehot,
      "level_count": jnp.sum(onehot, axis=0),
  }
  return jnp.mean(per_example), aux


# --------------------------------------------------------------------------- exact SM (Hyvarinen 2005)
def esm(score_fn, x: Array, sigma=None) -> tuple[Array, dict]:
  """Exact (implicit) score matching (Hyvarinen 2005, eq. 4):
      E[ tr(grad_x s(x)) + 1/2 ||s(x)||^2 ].
  The full Jacobian trace costs D forward-mode passes: for low-dimensional data only."""
  _check_batch(x)
  shape = x.shape[1:]
  sig = None if sigma is None else jnp.broadcast_to(jnp.asarray(sigma, x.dtype), x.shape[:1])

  def one(xi, si):  # xi: one flattened example [D]; si: its sigma (or None)
    f = lambda v: score_fn(v.reshape((1,) + shape), None if si is None else si[None]).reshape(-1)
    return jnp.trace(jax.jacfwd(f)(xi)) + 0.5 * jnp.sum(f(xi) ** 2)

  per_example = jax.vmap(one)(x.reshape(x.shape[0], -1), sig)
  return jnp.mean(per_example), {"per_example": per_example}


# --------------------------------------------------------------------------- sliced SM (Song et al. 2019)
def ssm(score_fn, rng: Array, x: Array, sigma=None, n_projections: int = 1,
        variance_reduced: bool = True, projection: str = "gaussian") -> tuple[Array, dict]:
  """Sliced score matching (Song, Garg, Shi & Ermon 2019, eq. 7):
      E_v[ v^T (grad_x s) v + 1/2 (v^T s)^2 ],
  and the variance-reduced form (SSM-VR) with 1/2 ||s||^2 in place of 1/2 (v^T s)^2, which is its
  expectation for E[v v^T] = I. v^T J v is one forward-mode product (jax.jvp) per projection."""
  _check_batch(x)
  vs = jax.random.normal(rng, (n_projections,) + x.shape, x.dtype)
  if projection == "rademacher":
    vs = jnp.sign(vs)
  elif projection != "gaussian":
    raise ValueError(f"unknown projection {projection!r}; use gaussian or rademacher")
  f = lambda y: score_fn(y, sigma)

  def one(v):
    s, jv = jax.jvp(f, (x,), (v,))
    vjv = jnp.sum((v * jv).reshape(x.shape[0], -1), axis=-1)
    if variance_reduced:
      return vjv + 0.5 * _sqnorm(s)
    vs_ = jnp.sum((v * s).reshape(x.shape[0], -1), axis=-1)
    return vjv + 0.5 * vs_ ** 2

  per_example = jnp.mean(jax.vmap(one)(vs), axis=0)
  return jnp.mean(per_example), {"per_example": per_example}


# --------------------------------------------------------------------------- MDSM (Li, Chen & Sommer 2019)
def mdsm(energy_fn, rng: Array, x: Array, sigma, sigma0: float,
         weight_power: float = 2.0) -> tuple[Array, dict]:
  """Multi-scale DSM for a scalar energy (Li, Chen & Sommer 2019, eq. 10):
      || (x - x~)/sigma0^2 + grad_x E(x~) ||^2 / sigma^weight_power,   x~ = x + sigma n,
  with sigma per example (drawn by the caller over [sigma_min, sigma_max]) and grad_x E taken by
  jax.grad inside the loss, so differentiating the loss w.r.t. the parameters is a double backprop.
  weight_power = 2 is the paper's l(sigma) = 1/sigma^2; weight_power = 0 gives, up to the constant
  sigma0^4, the unweighted form || x - x~ + sigma0^2 grad_x E(x~) ||^2.
  The energy is evaluated as energy_fn(x~, sigma0): it models p at the fixed scale sigma0."""
  _check_batch(x)
  n = jax.random.normal(rng, x.shape, x.dtype)
  s = fields.bcast(sigma, x)
  x_noisy = x + s * n
  grad_e = jax.grad(lambda y: jnp.sum(energy_fn(y, sigma0)))(x_noisy)
  resid = (x - x_noisy) / sigma0 ** 2 + grad_e
  per_example = _sqnorm(resid) / jnp.asarray(sigma, x.dtype) ** weight_power
  return jnp.mean(per_example), {"per_example": per_example}

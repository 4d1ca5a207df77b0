"""The Tweedie algebra: score <-> denoiser <-> energy.

Conventions, stated once for the whole library:
  * a *score* is grad_x log p_sigma(x);
  * a *denoiser* is r(x, sigma) ~ E[x_clean | x_noisy = x] for x_noisy = x_clean + sigma * n;
  * an *energy* E(x, sigma) is a negative unnormalised log-density: p_sigma ∝ exp(-E), s = -grad_x E.
    Where a paper writes a log-density network instead (DDE: E = sigma^2 log p_hat), use
    `score_from_log_density`.

Tweedie / Miyasawa: the optimal denoiser under squared error is r(x) = x + sigma^2 grad log p_sigma(x).

Callables take a batch: x of shape [B, ...] and sigma as a scalar or per-example [B]. Energies and
log-densities return one number per example, shape [B].
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array
ScoreFn = Callable[[Array, Array], Array]
DenoiserFn = Callable[[Array, Array], Array]
EnergyFn = Callable[[Array, Array], Array]


def bcast(sigma, x: Array) -> Array:
  """sigma (scalar or [B]) shaped to broadcast against x [B, ...]."""
  sigma = jnp.asarray(sigma, x.dtype)
  if sigma.ndim == 0:
    return sigma
  return sigma.reshape(sigma.shape + (1,) * (x.ndim - sigma.ndim))


def score_from_denoised(denoised: Array, x: Array, sigma) -> Array:
  """s = (r(x) - x) / sigma^2."""
  return (denoised - x) / bcast(sigma, x) ** 2


def denoised_from_score(score: Array, x: Array, sigma) -> Array:
  """r(x) = x + sigma^2 s(x)  (Tweedie)."""
  return x + bcast(sigma, x) ** 2 * score


def score_from_denoiser(denoiser: DenoiserFn) -> ScoreFn:
  """The score field of a denoiser r(x, sigma)."""
  return lambda x, sigma: score_from_denoised(denoiser(x, sigma), x, sigma)


def denoiser_from_score(score: ScoreFn) -> DenoiserFn:
  """The denoiser of a score field s(x, sigma)."""
  return lambda x, sigma: denoised_from_score(score(x, sigma), x, sigma)


def score_from_energy(energy: EnergyFn) -> ScoreFn:
  """s = -grad_x E. Per-example energies are independent, so the gradient of their sum is the
  per-example gradient. Differentiable again (double backprop, MDSM)."""
  def score(x, sigma):
    return -jax.grad(lambda y: jnp.sum(energy(y, sigma)))(x)
  return score


def score_from_log_density(log_density: EnergyFn, scale=1.0) -> ScoreFn:
  """s = grad_x f / scale for a log-density network f = scale * log p (+ const)."""
  def score(x, sigma):
    return jax.grad(lambda y: jnp.sum(log_density(y, sigma)))(x) / scale
  return score


def energy_and_score(energy: EnergyFn, x: Array, sigma) -> tuple[Array, Array]:
  """Energies [B] and scores -grad E in one pass."""
  e, vjp = jax.vjp(lambda y: energy(y, sigma), x)
  (g,) = vjp(jnp.ones_like(e))
  return e, -g


def tweedie_denoise(score: ScoreFn, x: Array, sigma) -> Array:
  """The final denoising step x + sigma^2 s(x, sigma) (NCSNv2 / Tweedie)."""
  return denoised_from_score(score(x, sigma), x, sigma)

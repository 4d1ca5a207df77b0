"""Noise ladders, per-example noise draws and temperature schedules.

Convention: a ladder is ordered from the largest noise to the smallest,
sigma_1 > sigma_2 > ... > sigma_L (NCSN, Song & Ermon 2019, Sec. 4.1).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _check_range(sigma_max: float, sigma_min: float) -> None:
  if not (sigma_min > 0 and sigma_max > 0):
    raise ValueError(f"sigmas must be positive, got sigma_max={sigma_max}, sigma_min={sigma_min}")
  if not sigma_max > sigma_min:
    raise ValueError(f"need sigma_max > sigma_min, got sigma_max={sigma_max}, sigma_min={sigma_min}")


def geometric(sigma_max: float, sigma_min: float, num_levels: int) -> jnp.ndarray:
  """Geometric ladder sigma_1 = sigma_max > ... > sigma_L = sigma_min (NCSN Sec. 4.1)."""
  _check_range(sigma_max, sigma_min)
  if num_levels < 2:
    raise ValueError(f"a ladder needs num_levels >= 2, got {num_levels}")
  return jnp.asarray(np.geomspace(sigma_max, sigma_min, num_levels), jnp.float32)


def linear(sigma_max: float, sigma_min: float, num_levels: int) -> jnp.ndarray:
  """Linearly spaced ladder, largest first (the MDSM reference spreads sigmas linearly)."""
  _check_range(sigma_max, sigma_min)
  if num_levels < 2:
    raise ValueError(f"a ladder needs num_levels >= 2, got {num_levels}")
  return jnp.asarray(np.linspace(sigma_max, sigma_min, num_levels), jnp.float32)


def sample_levels(rng: jax.Array, batch_size: int, num_levels: int) -> jnp.ndarray:
  """One ladder index per example, uniform over the L levels (NCSN eq. 6, expectation over i)."""
  return jax.random.randint(rng, (batch_size,), 0, num_levels)


def log_uniform(rng: jax.Array, shape, sigma_min: float, sigma_max: float) -> jnp.ndarray:
  """Continuous draws with log sigma ~ U[log sigma_min, log sigma_max]."""
  _check_range(sigma_max, sigma_min)
  u = jax.random.uniform(rng, shape)
  return jnp.exp(jnp.log(sigma_min) + u * (jnp.log(sigma_max) - jnp.log(sigma_min)))


def uniform(rng: jax.Array, shape, sigma_min: float, sigma_max: float) -> jnp.ndarray:
  """Continuous draws with sigma ~ U[sigma_min, sigma_max]."""
  _check_range(sigma_max, sigma_min)
  return sigma_min + jax.random.uniform(rng, shape) * (sigma_max - sigma_min)


def batch_linear(batch_size: int, sigma_min: float, sigma_max: float) -> jnp.ndarray:
  """A deterministic linear spread of sigmas over a batch (the MDSM reference code's choice)."""
  _check_range(sigma_max, sigma_min)
  return jnp.linspace(sigma_min, sigma_max, batch_size, dtype=jnp.float32)


def batch_geometric(batch_size: int, sigma_min: float, sigma_max: float) -> jnp.ndarray:
  """A deterministic geometric spread of sigmas over a batch (the MDSM reference's
  noise_distribution='exp', np.logspace over the batch; its Fashion-MNIST run)."""
  _check_range(sigma_max, sigma_min)
  return jnp.asarray(np.geomspace(sigma_min, sigma_max, batch_size), jnp.float32)


# ---------------------------------------------------------------- temperatures
def temperature_schedule(kind: str, t_max: float, t_min: float, n_steps: int) -> np.ndarray:
  """A monotone temperature schedule of n_steps values from t_max to t_min.

  kind: 'geometric' (needs t_min > 0), 'linear', or 'constant' (t_max throughout).
  """
  if n_steps <= 0:
    return np.zeros((0,), np.float32)
  if kind == "geometric":
    if t_min <= 0 or t_max <= 0:
      raise ValueError("geometric temperature schedule needs positive temperatures")
    return np.geomspace(t_max, t_min, n_steps).astype(np.float32)
  if kind == "linear":
    return np.linspace(t_max, t_min, n_steps).astype(np.float32)
  if kind == "constant":
    return np.full((n_steps,), t_max, np.float32)
  raise ValueError(f"unknown temperature schedule {kind!r}; use geometric, linear or constant")


def mdsm_temperatures(t_start: float = 100.0, n_flat: int = 500, n_decay: int = 2000,
                      n_cool: int = 200, decay: str = "geometric", t_end: float = 0.0) -> np.ndarray:
  """The MDSM reference sampler's schedule: flat at t_start for n_flat steps, n_decay steps
  decaying to T = 1 (geometric or linear), then n_cool steps linearly from 1 to t_end (the reference
  cools to 0; t_end = 1 holds T = 1, i.e. samples the model's own density)."""
  flat = temperature_schedule("constant", t_start, t_start, n_flat)
  dec = temperature_schedule(decay, t_start, 1.0, n_decay)
  cool = temperature_schedule("linear", 1.0, t_end, n_cool)
  return np.concatenate([flat, dec, cool]).astype(np.float32)


# ---------------------------------------------------------------- from a config
def ladder_from_config(config) -> jnp.ndarray:
  """The geometric ladder model.sigma_max -> model.sigma_min over model.num_scales levels (NCSN, Sec. 4.1;
  Denoising-EBM's S levels), with one-line config errors."""
  from dsm_jax.validation import positive, require  # noqa: PLC0415
  m = config.model
  positive(config, "model.sigma_min")
  positive(config, "model.sigma_max")
  require(m.sigma_max > m.sigma_min, "model.sigma_max", f"must exceed model.sigma_min ({m.sigma_min}), got {m.sigma_max}")
  positive(config, "model.num_scales", integer=True)
  require(m.num_scales >= 2, "model.num_scales", f"an annealing ladder needs >= 2 levels, got {m.num_scales}")
  return geometric(m.sigma_max, m.sigma_min, m.num_scales)


TEMPERATURE_KEYS = ("t_start", "n_flat", "n_decay", "n_cool", "decay", "t_end")


def temperatures_from_config(config) -> np.ndarray:
  """mdsm_temperatures of the sampling section (t_start, n_flat, n_decay, n_cool, decay, t_end), checked."""
  from dsm_jax.validation import one_of, positive, require  # noqa: PLC0415
  positive(config, "sampling.t_start")
  for k in ("n_flat", "n_decay", "n_cool"):
    positive(config, f"sampling.{k}", integer=True, allow_zero=True)
  positive(config, "sampling.t_end", allow_zero=True)
  one_of(config, "sampling.decay", ("geometric", "linear"))
  s = config.sampling
  require(s.n_flat + s.n_decay + s.n_cool > 0, "sampling.n_decay", "the temperature schedule has no steps")
  return mdsm_temperatures(s.t_start, s.n_flat, s.n_decay, s.n_cool, s.decay, s.t_end)

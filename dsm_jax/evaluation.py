"""Evaluations shared by methods on 2-D toy data with closed-form densities."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dsm_jax import metrics


def noisy_data(dataset, key, n: int, sigma: float) -> jax.Array:
  """n draws of x + sigma n from the dataset (samples of p_sigma)."""
  k1, k2 = jax.random.split(key)
  x = dataset.sample(k1, n)
  return x + sigma * jax.random.normal(k2, x.shape)


def score_error(score_fn, dataset, key, sigma: float, n: int = 5000) -> float:
  """score_rel_mse of score_fn(., sigma) against the analytic score of p_sigma on p_sigma's draws."""
  x = noisy_data(dataset, key, n, sigma)
  sig = jnp.full((n,), sigma, jnp.float32)
  pred = jax.jit(score_fn)(x, sig)
  true = dataset.score(x, sigma)
  return metrics.score_rel_mse(pred, true)


def mmd_to_data(samples, dataset, key, sigma: float = 0.0, n: int = 2000) -> float:
  """Unbiased MMD^2 between (the first n finite) samples and fresh draws of p_sigma."""
  s = np.asarray(samples)
  s = s[np.all(np.isfinite(s.reshape(len(s), -1)), axis=1)][:n]
  ref = np.asarray(noisy_data(dataset, key, len(s), sigma)) if sigma > 0 else np.asarray(dataset.sample(key, len(s)))
  return metrics.mmd(s, ref)

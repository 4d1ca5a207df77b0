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
  if len(s) < 2:
    return float("nan")  # a diverged sampler: eval.json reports null and nonfinite_<set>
  ref = np.asarray(noisy_data(dataset, key, len(s), sigma)) if sigma > 0 else np.asarray(dataset.sample(key, len(s)))
  return metrics.mmd(s, ref)


def mdsm_optimal_score(dataset, x: jax.Array, sigma0: float, sigma_min: float, sigma_max: float,
                       sigma_dist: str = "uniform", weight_power: float = 2.0, n_grid: int = 64) -> jax.Array:
  """-grad E* for the minimiser E* of the MDSM loss on a toy with a closed-form density.

  Per noise level the loss || (x - x~)/sigma0^2 + g ||^2 sigma^-p is minimised at
  g = -sigma^2 s_sigma(x~) / sigma0^2 (Tweedie), so pooling the levels at a point x~,
      -grad E*(x~) = sum_sigma q(sigma) p_sigma(x~) sigma^(2-p) s_sigma(x~) / (sigma0^2 sum_sigma q(sigma) p_sigma(x~) sigma^-p),
  with q the sigma distribution (quadrature on n_grid levels). Equals s_sigma0 only when every sigma is sigma0:
  MDSM's energy is a noise-pooled, rescaled score, not the score of one smoothed density."""
  # equal probability mass per grid point: linear grid for (batch-)linear sigmas, geometric for log-spaced ones
  grid = np.geomspace(sigma_min, sigma_max, n_grid) if sigma_dist in ("log_uniform", "batch_geometric") else np.linspace(sigma_min, sigma_max, n_grid)
  logps = jnp.stack([dataset.log_prob(x, float(s)) for s in grid])  # [S, B]
  # normalised weights q p_sigma sigma^-p over the grid (the denominator's terms), stably in log space
  w = jax.nn.softmax(logps - weight_power * jnp.log(jnp.asarray(grid, jnp.float32))[:, None], axis=0)
  pooled = sum(w[i][:, None] * float(s) ** 2 * dataset.score(x, float(s)) for i, s in enumerate(grid))
  return pooled / sigma0 ** 2

"""Evaluation on 2-D toy data with closed-form densities, shared by every method that samples them: score errors
against the exact smoothed score, MMD to fresh draws, the mass per mixture component, and KL divergences
between densities on a grid."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dsm_jax.eval import metrics


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


def nearer_fraction(x: np.ndarray, a, b) -> float:
  """Fraction of rows of x strictly nearer to point a than to point b."""
  x = np.asarray(x)
  return float(np.mean(np.linalg.norm(x - np.asarray(a), axis=1) < np.linalg.norm(x - np.asarray(b), axis=1)))


def component_fractions(x: np.ndarray, dataset) -> np.ndarray:
  """The share of the finite samples x whose nearest mean is each mixture component's."""
  x = np.asarray(x, np.float64)
  x = x[np.all(np.isfinite(x), axis=1)]
  mu = np.asarray(dataset.means, np.float64)
  k = np.argmin(((x[:, None, :] - mu[None]) ** 2).sum(-1), axis=1)
  return np.bincount(k, minlength=len(mu)) / max(len(x), 1)


def mode_tv(x: np.ndarray, dataset) -> float:
  """1/2 sum_k |frac_k - w_k|: the samples' mass per mixture component (by nearest mean) against the weights."""
  return float(0.5 * np.abs(component_fractions(x, dataset) - np.asarray(dataset.weights, np.float64)).sum())


def heavy_mode_weight(x: np.ndarray, dataset) -> float:
  """The share of samples nearer the heaviest component's mean than the other's, for a two-component mixture
  (NCSN's 1/5, 4/5 toy: the 0.8 that annealed Langevin recovers and plain Langevin does not). Non-finite
  samples count as not there, as in `nearer_fraction`."""
  w = np.asarray(dataset.weights)
  if len(w) != 2:
    raise ValueError(f"heavy_mode_weight is for two-component mixtures, {dataset.name!r} has {len(w)}")
  heavy = int(np.argmax(w))
  return nearer_fraction(x, dataset.means[heavy], dataset.means[1 - heavy])


def mixture_metrics(x: np.ndarray, dataset, prefix: str = "weight_pos") -> dict:
  """{prefix: heavy_mode_weight} for a two-component mixture, else {}."""
  if hasattr(dataset, "means") and len(dataset.means) == 2:
    return {prefix: heavy_mode_weight(x, dataset)}
  return {}


# ------------------------------------------------------------------------------------ densities on a grid
def grid_kl(log_q: np.ndarray, log_p: np.ndarray, cell_area: float) -> float:
  """KL[q || p] = sum_cells q (log q - log p) dA for two densities normalised on the same grid."""
  q = np.exp(log_q)
  mask = q * cell_area > 1e-12
  return float(np.sum(q[mask] * (log_q[mask] - log_p[mask])) * cell_area)


def smoothed_histogram(x: np.ndarray, g: np.ndarray, sigma: float) -> np.ndarray:
  """log q_hat on the square grid g x g ([len(g), len(g)], rows: 2nd coordinate): the histogram of the 2-D
  samples x on the grid's cells convolved with N(0, sigma^2 I) (exact Gaussian smoothing), normalised on the
  grid. Samples outside the grid are dropped."""
  from scipy.ndimage import gaussian_filter  # noqa: PLC0415
  x = np.asarray(x, np.float64)
  x = x[np.all(np.isfinite(x), axis=1)]
  d = g[1] - g[0]
  edges = np.concatenate([g - d / 2, [g[-1] + d / 2]])
  hist, _, _ = np.histogram2d(x[:, 1], x[:, 0], bins=[edges, edges])
  dens = np.maximum(gaussian_filter(hist, sigma / d, mode="constant", truncate=6.0), 0.0)
  dens = dens / max(dens.sum() * d * d, 1e-300)
  return np.log(np.maximum(dens, 1e-300))


def grid_kls(x: np.ndarray, dataset, sigma: float, lim: float, n: int) -> dict:
  """kl_grid = KL(p_hat || q_hat) and kl_grid_rev = KL(q_hat || p_hat) on an n x n grid over [-lim, lim]^2,
  p_hat the exact smoothed target (normalised on the grid), q_hat the smoothed histogram of x."""
  g = np.linspace(-lim, lim, n)
  area = (g[1] - g[0]) ** 2
  w1, w2 = np.meshgrid(g, g, indexing="xy")
  pts = jnp.asarray(np.stack([w1.ravel(), w2.ravel()], -1), jnp.float32)
  lp = np.asarray(dataset.log_prob(pts, sigma), np.float64).reshape(n, n)
  lp = lp - np.log(np.sum(np.exp(lp - lp.max())) * area) - lp.max()
  lq = smoothed_histogram(x, g, sigma)
  return {"kl_grid": grid_kl(lp, lq, area), "kl_grid_rev": grid_kl(lq, lp, area)}

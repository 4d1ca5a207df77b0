"""2-D toy distributions (dsm_jax.data.toy): samplers, smoothed log-densities and scores."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dsm_jax.data.toy import TOY_DATASETS, GaussianMixture, get_toy
from dsm_jax.eval.toy import nearer_fraction

NSE = 5.0
DENSITY = sorted(k for k in TOY_DATASETS if get_toy(k).has_density)
SAMPLE_ONLY = sorted(k for k in TOY_DATASETS if not get_toy(k).has_density)


def test_registry():
  assert set(DENSITY) == {"mixture", "ring8", "checkerboard"}
  assert set(SAMPLE_ONLY) == {"moons", "swiss_roll", "rings"}
  with pytest.raises(ValueError):
    get_toy("nope")


@pytest.mark.parametrize("name", sorted(TOY_DATASETS))
def test_samples_shape_dtype_deterministic(name):
  ds = get_toy(name)
  assert ds.name == name
  assert tuple(ds.shape) == (2,)
  key = jax.random.PRNGKey(0)
  a = ds.sample(key, 257)
  chex.assert_shape(a, (257, 2))
  chex.assert_type(a, jnp.float32)
  chex.assert_tree_all_finite(a)
  chex.assert_trees_all_equal(a, ds.sample(key, 257))
  assert not np.array_equal(a, ds.sample(jax.random.PRNGKey(1), 257))
  # drawn inside jit as in the train step: the same draws
  chex.assert_trees_all_close(jax.jit(ds.sample, static_argnums=1)(key, 257), a, atol=1e-5)


@pytest.mark.parametrize("name", SAMPLE_ONLY)
def test_sample_only_has_no_density(name):
  ds = get_toy(name)
  with pytest.raises(NotImplementedError):
    ds.log_prob(jnp.zeros((2, 2)), 1.0)
  with pytest.raises(NotImplementedError):
    ds.score(jnp.zeros((2, 2)), 1.0)


# ------------------------------------------------------------------------------------------ densities
GRID_H = 0.05
_g = np.arange(-14.0, 14.0, GRID_H) + GRID_H / 2
GRID = np.stack(np.meshgrid(_g, _g), -1).reshape(-1, 2).astype(np.float32)


@functools.partial(jax.jit, static_argnums=0)
def _density_on_grid(name, sigma):
  return jnp.exp(get_toy(name).log_prob(jnp.asarray(GRID), sigma))


@pytest.mark.parametrize("name", DENSITY)
def test_log_prob_integrates_to_one(name):
  for sigma in (0.5, 1.0):
    p = np.asarray(_density_on_grid(name, jnp.float32(sigma)), np.float64)
    assert np.all(p >= 0)
    np.testing.assert_allclose(p.sum() * GRID_H ** 2, 1.0, atol=1e-4, err_msg=f"{name} sigma={sigma}")


@functools.partial(jax.jit, static_argnums=0)
def _score_and_fd(name, x, sigma, h):
  ds = get_toy(name)
  lp = lambda y: ds.log_prob(y, sigma)
  e = jnp.eye(2, dtype=x.dtype)
  fd = jnp.stack([(lp(x + h * e[i]) - lp(x - h * e[i])) / (2 * h) for i in range(2)], -1)
  return ds.score(x, sigma), fd


@pytest.mark.parametrize("name", DENSITY)
def test_score_matches_finite_differences(name):
  ds = get_toy(name)
  for sigma in (0.5, 1.0):
    kx, kn = jax.random.split(jax.random.PRNGKey(int(10 * sigma)))
    x = ds.sample(kx, 200) + sigma * jax.random.normal(kn, (200, 2))
    score, fd = _score_and_fd(name, x, jnp.float32(sigma), jnp.float32(1e-2))
    chex.assert_shape(score, (200, 2))
    # float32 central differences: O(h^2) truncation plus eps |log p| / h rounding
    np.testing.assert_allclose(score, fd, atol=2e-3, rtol=1e-3, err_msg=f"{name} sigma={sigma}")


@functools.partial(jax.jit, static_argnums=0)
def _lp_and_score(name, x, sigma):
  ds = get_toy(name)
  return ds.log_prob(x, sigma), ds.score(x, sigma)


@pytest.mark.parametrize("name", DENSITY)
def test_per_example_sigma_matches_scalar(name):
  ds = get_toy(name)
  x = ds.sample(jax.random.PRNGKey(3), 6) + 0.3
  sig = jnp.asarray([0.1, 0.3, 0.5, 1.0, 2.0, 4.0], jnp.float32)
  lp, score = _lp_and_score(name, x, sig)
  chex.assert_shape(lp, (6,))
  chex.assert_shape(score, (6, 2))
  rows = [_lp_and_score(name, x[i:i + 1], sig[i]) for i in range(6)]
  chex.assert_trees_all_close(lp, jnp.concatenate([r[0] for r in rows]), atol=1e-5, rtol=1e-5)
  chex.assert_trees_all_close(score, jnp.concatenate([r[1] for r in rows]), atol=1e-4, rtol=1e-4)


def test_mixture_closed_form_and_forms():
  mix = get_toy("mixture")
  x = jnp.asarray([[5.0, 5.0], [-5.0, -5.0], [0.0, 0.0]])
  sigma = 0.6
  v = 1.0 + sigma ** 2
  xm = np.asarray(x, np.float64)
  dens = lambda mu, var: np.exp(-np.sum((xm - mu) ** 2, 1) / (2 * var)) / (2 * np.pi * var)
  expected = np.log(0.2 * dens(-5.0, v) + 0.8 * dens(5.0, v))
  np.testing.assert_allclose(mix.log_prob(x, sigma), expected, rtol=1e-5)
  # 'reference': every component has std sigma itself
  ref = np.log(0.2 * dens(-5.0, sigma ** 2) + 0.8 * dens(5.0, sigma ** 2))
  np.testing.assert_allclose(mix.log_prob(x, sigma, form="reference"), ref, rtol=1e-5)
  np.testing.assert_allclose(mix.component_stds(sigma), [np.sqrt(v)] * 2, rtol=1e-6)
  np.testing.assert_allclose(mix.component_stds(sigma, "reference"), [sigma] * 2, rtol=1e-6)
  with pytest.raises(ValueError):
    mix.component_stds(sigma, "nope")
  assert mix.dim == 2 and mix.shape == (2,)


# ------------------------------------------------------------------------------------------ samples
N = 20000


def test_mixture_sample_weights():
  x = np.asarray(get_toy("mixture").sample(jax.random.PRNGKey(4), N))
  w = nearer_fraction(x, (5.0, 5.0), (-5.0, -5.0))
  assert abs(w - 0.8) < NSE * np.sqrt(0.8 * 0.2 / N), w
  assert abs(nearer_fraction(x, (-5.0, -5.0), (5.0, 5.0)) - 0.2) < NSE * np.sqrt(0.8 * 0.2 / N)
  for mu in (5.0, -5.0):
    comp = x[np.sign(x.sum(1)) == np.sign(mu)]
    np.testing.assert_array_less(np.abs(comp.mean(0) - mu), NSE / np.sqrt(len(comp)))
    np.testing.assert_array_less(np.abs(comp.std(0) - 1.0), NSE * np.sqrt(0.5 / len(comp)))


def test_unequal_mixture_sample_weights():
  mix = GaussianMixture(weights=(0.5, 0.3, 0.2), means=((-6.0, 0.0), (6.0, 0.0), (0.0, 8.0)),
                        stds=(0.5, 1.0, 0.7))
  x = np.asarray(mix.sample(jax.random.PRNGKey(5), N))
  mu = np.asarray(mix.means)
  k = np.argmin(np.linalg.norm(x[:, None] - mu[None], axis=-1), axis=1)
  for i, (w, s) in enumerate(zip(mix.weights, mix.stds)):
    assert abs(np.mean(k == i) - w) < NSE * np.sqrt(w * (1 - w) / N)
    np.testing.assert_array_less(np.abs(x[k == i].std(0) - s), NSE * s * np.sqrt(0.5 / np.sum(k == i)))


def test_ring8_components_balanced():
  ds = get_toy("ring8")
  x = np.asarray(ds.sample(jax.random.PRNGKey(6), N))
  mu = np.asarray(ds.means)
  np.testing.assert_allclose(np.linalg.norm(mu, axis=1), 4.0, rtol=1e-6)
  k = np.argmin(np.linalg.norm(x[:, None] - mu[None], axis=-1), axis=1)
  p = 1 / 8
  assert np.all(np.abs(np.bincount(k, minlength=8) / N - p) < NSE * np.sqrt(p * (1 - p) / N))


def test_checkerboard_samples_on_dark_squares():
  ds = get_toy("checkerboard")
  x = np.asarray(ds.sample(jax.random.PRNGKey(7), N))
  assert np.all(np.abs(x) <= 2.0)
  cell = np.floor(x).astype(int)
  assert np.all((cell.sum(1) % 2) == 0)
  sq = (cell[:, 0] + 2) * 4 + (cell[:, 1] + 2)
  counts = np.bincount(sq, minlength=16)[np.bincount(sq, minlength=16) > 0]
  assert len(counts) == 8
  p = 1 / 8
  assert np.all(np.abs(counts / N - p) < NSE * np.sqrt(p * (1 - p) / N))
  # the density at sigma -> 0 is 1/8 on the dark squares and ~0 on the light ones
  centers = jnp.asarray([[0.5, 0.5], [-1.5, -1.5], [0.5, 1.5], [-0.5, 0.5]])
  np.testing.assert_allclose(np.exp(ds.log_prob(centers, 1e-3)), [1 / 8, 1 / 8, 0.0, 0.0], atol=1e-6)


def test_rings_radii():
  x = np.asarray(get_toy("rings").sample(jax.random.PRNGKey(8), 4000))
  r = np.linalg.norm(x, axis=1)
  assert np.mean(np.abs(r - np.round(r)) < 0.4) > 0.999
  counts = np.bincount(np.round(r).astype(int), minlength=5)[1:5]
  assert np.all(np.abs(counts / 4000 - 0.25) < NSE * np.sqrt(0.25 * 0.75 / 4000))


def test_nearer_fraction():
  x = np.asarray([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [-1.0, 0.0]])
  assert nearer_fraction(x, (2.0, 2.0), (0.0, 0.0)) == 0.25  # (1, 1) is a tie: not strictly nearer
  assert nearer_fraction(x, (0.0, 0.0), (2.0, 2.0)) == 0.5
  assert nearer_fraction(x, (0.0, 0.0), (0.0, 0.0)) == 0.0

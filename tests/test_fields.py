"""The Tweedie algebra: score <-> denoiser <-> energy (dsm_jax.fields), checked against closed forms."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from dsm_jax import fields
from dsm_jax.data.toy import GaussianMixture, get_toy

batch_shapes = st.tuples(st.integers(1, 5), st.lists(st.integers(1, 4), min_size=1, max_size=3))


def _draw(seed, b, rest, per_example):
  """Data from numpy (a new shape costs no jax.random compile)."""
  rng = np.random.default_rng(seed)
  x = (3.0 * rng.standard_normal((b,) + tuple(rest))).astype(np.float32)
  if per_example:
    sigma = rng.uniform(0.1, 5.0, (b,)).astype(np.float32)
  else:
    sigma = np.float32(rng.uniform(0.1, 5.0))
  return x, sigma


def _sig_full(sigma, x):
  """sigma broadcast to x by hand (independent of fields.bcast)."""
  sigma = np.asarray(sigma)
  return sigma if sigma.ndim == 0 else sigma.reshape((-1,) + (1,) * (x.ndim - 1))


@settings(max_examples=10)
@given(shape=batch_shapes, per_example=st.booleans())
def test_bcast(shape, per_example):
  b, rest = shape
  x, sigma = _draw(0, b, rest, per_example)
  s = fields.bcast(sigma, jnp.asarray(x))
  assert s.ndim == (x.ndim if per_example else 0)
  assert s.dtype == jnp.float32
  np.testing.assert_array_equal(np.broadcast_to(s, x.shape), np.broadcast_to(_sig_full(sigma, x), x.shape))


def _denoiser(x, sigma):
  s = fields.bcast(sigma, x)
  return 0.7 * x + s * jnp.sin(x) - 0.3


def _score(x, sigma):
  s = fields.bcast(sigma, x)
  return -x / (1.0 + s ** 2) + jnp.cos(x) / s


@jax.jit
def _conversions(x, sigma):
  return {
      "r2": fields.denoiser_from_score(fields.score_from_denoiser(_denoiser))(x, sigma),
      "s2": fields.score_from_denoiser(fields.denoiser_from_score(_score))(x, sigma),
      "denoised": fields.denoised_from_score(_score(x, sigma), x, sigma),
      "score": fields.score_from_denoised(_denoiser(x, sigma), x, sigma),
      "tweedie": fields.tweedie_denoise(_score, x, sigma),
  }


@settings(max_examples=10)
@given(shape=batch_shapes, per_example=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_denoiser_score_round_trips(shape, per_example, seed):
  b, rest = shape
  x, sigma = _draw(seed, b, rest, per_example)
  out = _conversions(x, sigma)
  # numpy references, written out by hand
  sf = _sig_full(sigma, x).astype(np.float64)
  x64 = x.astype(np.float64)
  r_ref = 0.7 * x64 + sf * np.sin(x64) - 0.3
  s_ref = -x64 / (1.0 + sf ** 2) + np.cos(x64) / sf
  chex.assert_shape(list(out.values()), x.shape)
  # denoiser -> score -> denoiser
  np.testing.assert_allclose(out["r2"], r_ref, rtol=1e-5, atol=1e-5)
  # score -> denoiser -> score (cancellation in (r - x) / sigma^2 costs ~ eps |x| / sigma^2)
  np.testing.assert_allclose(out["s2"], s_ref, rtol=1e-4, atol=2e-4)
  np.testing.assert_allclose(out["denoised"], x64 + sf ** 2 * s_ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out["score"], (r_ref - x64) / sf ** 2, rtol=1e-4, atol=2e-4)
  np.testing.assert_array_equal(out["tweedie"], out["denoised"])


@jax.jit
def _quadratic_case(x, a, c):
  energy = lambda y, sigma: 0.5 * jnp.einsum("bi,ij,bj->b", y, a, y) + y @ c
  score = fields.score_from_energy(energy)(x, None)
  e, s = fields.energy_and_score(energy, x, None)
  return score, e, s, energy(x, None)


@settings(max_examples=10)
@given(d=st.integers(1, 6), b=st.integers(1, 5), seed=st.integers(0, 2 ** 16))
def test_score_from_energy_quadratic(d, b, seed):
  rng = np.random.default_rng(seed)
  m = rng.standard_normal((d, d))
  a = (m @ m.T + np.eye(d)).astype(np.float32)
  c = rng.standard_normal(d).astype(np.float32)
  x = rng.standard_normal((b, d)).astype(np.float32)
  score, e, s, e_ref = _quadratic_case(x, a, c)
  chex.assert_shape(score, (b, d))
  chex.assert_shape(e, (b,))
  np.testing.assert_allclose(score, -(x.astype(np.float64) @ a + c), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(e, e_ref, rtol=1e-6)
  np.testing.assert_allclose(s, score, rtol=1e-6, atol=1e-6)


def test_score_from_energy_per_example_sigma():
  x = jax.random.normal(jax.random.PRNGKey(0), (6, 3, 2))
  sigma = jnp.linspace(0.5, 3.0, 6)
  energy = lambda y, s: 0.5 * jnp.sum(y ** 2, axis=(1, 2)) / s ** 2
  score = fields.score_from_energy(energy)(x, sigma)
  chex.assert_trees_all_close(score, -x / sigma[:, None, None] ** 2, rtol=1e-6)
  # differentiable again (double backprop): d/dsigma of sum(score) = 2 sum(x) / sigma^3
  g = jax.grad(lambda s: jnp.sum(fields.score_from_energy(energy)(x, s)))(sigma)
  chex.assert_trees_all_close(g, 2 * jnp.sum(x, axis=(1, 2)) / sigma ** 3, rtol=1e-5)


@pytest.mark.parametrize("scale", [1.0, 0.25, 7.0, "sigma2"])
def test_score_from_log_density_with_scale(scale):
  x = jax.random.normal(jax.random.PRNGKey(1), (8, 3))
  sigma = 1.7
  sc = sigma ** 2 if scale == "sigma2" else scale
  # f = scale * log N(x; 0, sigma^2 I) + const, as a DDE-style network would output
  log_density = lambda y, s: sc * (-0.5 * jnp.sum(y ** 2, axis=-1) / s ** 2 + 3.0)
  score = fields.score_from_log_density(log_density, scale=sc)(x, sigma)
  chex.assert_trees_all_close(score, -x / sigma ** 2, rtol=1e-5)


# ------------------------------------------------------------------------------------------- Tweedie
UNEQUAL = GaussianMixture(weights=(0.3, 0.5, 0.2), means=((-2.0, 0.0), (2.0, 1.0), (0.0, -3.0)),
                          stds=(0.5, 1.0, 2.0), name="unequal")


@functools.partial(jax.jit, static_argnums=0)
def _tweedie(mix, x, sigma):
  return (x + fields.bcast(sigma, x) ** 2 * mix.score(x, sigma), mix.posterior_mean(x, sigma),
          fields.tweedie_denoise(mix.score, x, sigma))


def _tweedie_points(mix, seed, n=256):
  """Noisy points from the model plus a grid through the low-density region between the modes."""
  rng = np.random.default_rng(seed)
  xs = np.asarray(mix.sample(jax.random.PRNGKey(seed), n)) + 2.0 * rng.standard_normal((n, mix.dim))
  g = np.linspace(-8.0, 8.0, 9)
  grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
  return np.concatenate([xs, grid]).astype(np.float32)


@pytest.mark.parametrize("mix", [get_toy("mixture"), UNEQUAL], ids=["mixture", "unequal_stds"])
def test_tweedie_mixture(mix):
  x = _tweedie_points(mix, 0)
  for sigma in (0.1, 0.5, 1.0, 2.0, 5.0):
    denoised, post_mean, tweedie = _tweedie(mix, x, jnp.float32(sigma))
    np.testing.assert_allclose(denoised, post_mean, atol=1e-4, rtol=1e-5, err_msg=f"sigma={sigma}")
    np.testing.assert_allclose(tweedie, denoised, atol=1e-6, rtol=1e-6)


def test_tweedie_per_example_sigma():
  mix = UNEQUAL
  sig = np.asarray([0.1, 0.5, 1.0, 2.0, 5.0, 0.3], np.float32)
  x = _tweedie_points(mix, 1, n=6)[:6]
  denoised, pm, _ = _tweedie(mix, x, sig)
  rows = np.concatenate([_tweedie(mix, x[i:i + 1], sig[i])[1] for i in range(6)])
  np.testing.assert_allclose(pm, rows, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(denoised, pm, atol=1e-4, rtol=1e-5)
  # a batch the size of the number of components (B == K) must not broadcast sigma over components
  _, pm3, _ = _tweedie(mix, x[:3], sig[:3])
  np.testing.assert_allclose(pm3, rows[:3], atol=1e-5, rtol=1e-5)


def test_tweedie_single_gaussian_closed_form():
  """One component: E[x | x~] = mu + std^2/(std^2 + sigma^2) (x~ - mu)."""
  mix = GaussianMixture(weights=(1.0,), means=((1.0, -2.0),), stds=(0.7,), name="one")
  x = 3 * np.random.default_rng(2).standard_normal((32, 2)).astype(np.float32)
  mu = np.asarray([1.0, -2.0])
  for sigma in (0.2, 1.0, 3.0):
    expected = mu + 0.49 / (0.49 + sigma ** 2) * (x - mu)
    denoised, pm, _ = _tweedie(mix, x, jnp.float32(sigma))
    np.testing.assert_allclose(denoised, expected, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(pm, expected, atol=1e-5, rtol=1e-5)

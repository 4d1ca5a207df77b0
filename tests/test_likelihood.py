"""Annealed importance sampling (dsm_jax.likelihood) against normalising constants known exactly: quadratic
energies in d = 2 and d = 784 (log Z = d/2 log 2 pi - 1/2 log det A), and a 2-D mixture-like energy with no closed
form against grid integration. Tolerances: 4 of AIS's own standard errors plus a small bias allowance."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dsm_jax import gaussian_base, likelihood
from dsm_jax.data.toy import get_toy


def _quadratic(d, seed, lo=0.5, hi=2.0, shift=0.3):
  rng = np.random.default_rng(seed)
  q, _ = np.linalg.qr(rng.normal(size=(d, d)))
  a = rng.uniform(lo, hi, d)
  prec = (q * a) @ q.T
  c = shift * rng.normal(size=d)
  log_z = 0.5 * d * np.log(2 * np.pi) - 0.5 * np.sum(np.log(a))
  p = jnp.asarray(prec, jnp.float32)
  cj = jnp.asarray(c, jnp.float32)
  energy = lambda x: 0.5 * jnp.einsum("bi,ij,bj->b", x - cj, p, x - cj)
  return energy, log_z, prec, c


def _std_base(d):
  return likelihood.WhitenedBase(gaussian_base.GaussianBase(jnp.zeros(d), jnp.eye(d), jnp.ones(d)), 0.0, (d,))


def test_log_z_of_a_quadratic_in_2d_with_the_bidirectional_sandwich():
  energy, truth, prec, c = _quadratic(2, 0, 0.3, 4.0, 1.0)
  base = _std_base(2)
  fwd = likelihood.log_z(energy, base, jax.random.PRNGKey(0), 500, 200)
  assert abs(fwd["log_z"] - truth) < 4 * fwd["log_z_se"] + 0.02, (fwd, truth)
  assert fwd["ess"] > 100 and 0.4 < fwd["accept"] <= 1.0
  exact = np.random.default_rng(1).multivariate_normal(c, np.linalg.inv(prec), 500).astype(np.float32)
  rev = likelihood.log_z(energy, base, jax.random.PRNGKey(2), 500, 200, direction="reverse", x_start=exact)
  lower, upper = fwd["log_w_mean"], rev["log_z"]
  assert lower - 4 * rev["log_z_se"] <= truth <= upper + 4 * rev["log_z_se"], (lower, truth, upper)
  assert upper - lower < 0.2  # a tight sandwich on an easy target


@pytest.mark.slow  # about 30 s alone on 2 CPU cores
def test_log_z_of_a_quadratic_in_784_dimensions():
  """784 curvatures in [0.7, 1.5] away from the base's 1: HMC with 5 leapfrog steps over 200 temperatures."""
  energy, truth, _, _ = _quadratic(784, 3, 0.7, 1.5, 0.1)
  res = likelihood.log_z(energy, _std_base(784), jax.random.PRNGKey(4), 100, 200, n_leapfrog=5)
  assert abs(res["log_z"] - truth) < 4 * res["log_z_se"] + 0.3, (res, truth)  # truth is about 705
  assert res["log_w_mean"] < truth + 0.1  # mean log w is a lower bound


def test_a_bad_schedule_is_biased_low_and_says_so():
  """With a handful of temperatures the estimate falls below the truth and its ESS collapses: the diagnostics
  expose an under-sized run."""
  energy, truth, _, _ = _quadratic(784, 3, 0.7, 1.5, 0.1)
  res = likelihood.log_z(energy, _std_base(784), jax.random.PRNGKey(5), 100, 3)
  assert res["log_w_mean"] < truth - 1.0 and res["ess"] < 20


def test_log_z_of_a_bimodal_2d_energy_against_grid_integration():
  mix = get_toy("mixture")
  energy = lambda x: -mix.log_prob(x, 0.5) + 0.3 * jnp.sin(x[:, 0]) * jnp.cos(0.5 * x[:, 1])  # no closed form
  g = np.linspace(-14, 14, 801)
  w1, w2 = np.meshgrid(g, g)
  pts = jnp.asarray(np.stack([w1.ravel(), w2.ravel()], -1), jnp.float32)
  e = np.asarray(energy(pts), np.float64)
  truth = np.log(np.sum(np.exp(-e - (-e).max())) * (g[1] - g[0]) ** 2) + (-e).max()
  base = likelihood.WhitenedBase(gaussian_base.fit_dataset(mix), 0.5, (2,))
  res = likelihood.log_z(energy, base, jax.random.PRNGKey(6), 500, 500, step=0.3)
  assert abs(res["log_z"] - truth) < 4 * res["log_z_se"] + 0.03, (res, truth)


def test_heldout_log_likelihood_of_a_normalised_gaussian_energy():
  """exp(-E) = N(c, A^-1) up to a constant 5: the AIS log-likelihood equals the exact log-density, and the base
  (N(0, I)) scores its own log-density."""
  energy, truth, prec, c = _quadratic(2, 7)
  shifted = lambda x: energy(x) + 5.0
  x = np.random.default_rng(8).multivariate_normal(c, np.linalg.inv(prec), 400).astype(np.float32)
  res = likelihood.heldout_log_likelihood(shifted, _std_base(2), x, jax.random.PRNGKey(9), 400, 200)
  exact = -np.asarray(energy(jnp.asarray(x)), np.float64) - truth
  assert abs(res["test_loglik"] - exact.mean()) < 4 * res["test_loglik_se"] + 0.02
  gauss = -0.5 * np.sum(x.astype(np.float64) ** 2, -1) - np.log(2 * np.pi)
  np.testing.assert_allclose(res["test_loglik_gaussian"], gauss.mean(), rtol=1e-5)


def test_bits_per_dim_of_the_uniform_density_is_eight():
  assert likelihood.bits_per_dim(0.0, 784, 1.0) == pytest.approx(8.0)
  # [-1, 1]: the uniform density is 2^-D there, the same 8 bits per dimension
  assert likelihood.bits_per_dim(-784 * np.log(2.0), 784, 2.0) == pytest.approx(8.0)


def test_sigmoid_betas_and_bad_arguments():
  b = likelihood.sigmoid_betas(100)
  assert b[0] == 0.0 and b[-1] == 1.0 and np.all(np.diff(b) > 0) and len(b) == 101
  assert np.diff(b)[0] < np.diff(b)[50]  # denser at the ends
  base = _std_base(2)
  with pytest.raises(ValueError, match="x_start"):
    likelihood.ais(lambda x: jnp.sum(x ** 2, -1), base, jax.random.PRNGKey(0), 4, b, direction="reverse")
  with pytest.raises(ValueError, match="increase"):
    likelihood.ais(lambda x: jnp.sum(x ** 2, -1), base, jax.random.PRNGKey(0), 4, b[::-1])

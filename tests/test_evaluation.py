"""Toy evaluations: score error against the analytic score, MMD to data, and the MDSM loss optimum."""
import jax
import jax.numpy as jnp
import numpy as np

from dsm_jax.eval import toy as evaluation
from dsm_jax.methods import mdsm
from dsm_jax.data.toy import GaussianMixture, get_toy

GAUSS = GaussianMixture(weights=(1.0,), means=((0.0, 0.0),), stds=(1.5,), name="gauss")


def test_score_error_of_exact_score_is_zero():
  mix = get_toy("mixture")
  err = evaluation.score_error(lambda x, s: mix.score(x, s), mix, jax.random.PRNGKey(0), 0.7, n=500)
  assert err < 1e-10


def test_mmd_to_data_handles_diverged_samples():
  mix = get_toy("mixture")
  good = np.asarray(mix.sample(jax.random.PRNGKey(1), 400))
  assert abs(evaluation.mmd_to_data(good, mix, jax.random.PRNGKey(2))) < 0.02
  assert np.isnan(evaluation.mmd_to_data(np.full((10, 2), np.nan), mix, jax.random.PRNGKey(2)))


def test_mdsm_optimum_single_sigma_is_the_smoothed_score():
  mix = get_toy("mixture")
  x = evaluation.noisy_data(mix, jax.random.PRNGKey(3), 300, 0.5)
  opt = mdsm.optimal_score(mix, x, 0.5, 0.5, 0.5 + 1e-6)
  np.testing.assert_allclose(opt, mix.score(x, 0.5), rtol=1e-3, atol=1e-4)


def test_mdsm_optimum_gaussian_closed_form():
  """For N(0, tau^2 I): p_sigma = N(0, (tau^2+sigma^2) I), s_sigma = -x/(tau^2+sigma^2); pool by hand."""
  tau2, sigma0, lo, hi = 1.5 ** 2, 0.4, 0.4, 1.6
  x = jnp.array([[0.3, -0.2], [1.0, 2.0], [-2.5, 0.5]])
  grid = np.linspace(lo, hi, 64)
  v = tau2 + grid ** 2
  r2 = np.sum(np.asarray(x) ** 2, 1)
  p = np.exp(-r2[None] / (2 * v[:, None])) / (2 * np.pi * v[:, None])  # [S, B]
  w = p / grid[:, None] ** 2
  scale = np.sum(w * (grid[:, None] ** 2) / v[:, None], 0) / np.sum(w, 0)  # -grad E* = -x * scale / sigma0^2
  expect = -np.asarray(x) * scale[:, None] / sigma0 ** 2
  got = mdsm.optimal_score(GAUSS, x, sigma0, lo, hi)
  np.testing.assert_allclose(got, expect, rtol=1e-4)


def test_mdsm_optimum_minimises_the_mdsm_loss():
  """The pooled optimum (as a linear energy gradient for Gaussian data) beats nearby scalings in the
  Monte Carlo MDSM loss with per-example sigma ~ U[lo, hi]."""
  tau, sigma0, lo, hi = 1.0, 0.5, 0.5, 1.5
  g = GaussianMixture(weights=(1.0,), means=((0.0, 0.0),), stds=(tau,), name="g")
  key = jax.random.PRNGKey(4)
  kx, ks, kn = jax.random.split(key, 3)
  data = g.sample(kx, 40_000)
  sig = jax.random.uniform(ks, (data.shape[0],), minval=lo, maxval=hi)
  # for Gaussian data the optimum is linear in x~ only when pooled weights do not depend on x~; use
  # the network-free optimum at each x~ directly as grad E = -opt
  def loss_for(c):
    def energy_grad_loss():
      n = jax.random.normal(kn, data.shape)
      xt = data + sig[:, None] * n
      opt = mdsm.optimal_score(g, xt, sigma0, lo, hi, n_grid=24)
      resid = (data - xt) / sigma0 ** 2 - c * opt
      return jnp.mean(jnp.sum(resid ** 2, -1) / sig ** 2)
    return float(energy_grad_loss())
  base = loss_for(1.0)
  assert base < loss_for(0.9) and base < loss_for(1.1)

"""Conditional sampling (samplers.inpaint_langevin) against the exact conditional of a Gaussian.

For p = N(mu, C) smoothed at sigma, p_sigma = N(mu, C + sigma^2 I). With x_0 held at y = a + sigma z (z fixed for
the level), x_1 | y is N(m(y), v) with b = C_s10 / C_s00, m(y) = mu_1 + b (y - mu_0), v = C_s11 - b C_s10, and ULA
with step alpha has the stationary variance v / (1 - alpha / (4 v)) (tests/test_samplers.py). Over the draws of z
the free coordinate is N(mu_1 + b (a - mu_0), v / (1 - alpha / (4 v)) + b^2 sigma^2): the law the chains must
reach at the last level, checked to 5 standard errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dsm_jax import samplers, sigmas
from dsm_jax.eval import inpaint as inpaint_eval

MU = np.asarray([1.0, -0.5])
COV = np.asarray([[1.0, 0.8], [0.8, 1.0]])
N = 4000
A = 2.5  # the conditioned value of x_0: 1.5 sd above its mean, so the conditional mean moves far from mu_1


def smoothed_score(x, sigma):
  cov = jnp.asarray(COV, jnp.float32)[None] + (sigma ** 2)[:, None, None] * jnp.eye(2)[None]
  return -jnp.linalg.solve(cov, (x - jnp.asarray(MU, jnp.float32))[..., None])[..., 0]


def exact_law(sigma, alpha):
  cs = COV + sigma ** 2 * np.eye(2)
  b = cs[1, 0] / cs[0, 0]
  v = cs[1, 1] - b * cs[1, 0]
  return MU[1] + b * (A - MU[0]), v / (1 - alpha / (4 * v)) + b ** 2 * sigma ** 2


@pytest.mark.parametrize("form", ["annealed", "tempered"])
def test_conditioning_one_coordinate_gives_the_exact_conditional(form):
  if form == "annealed":
    ladder = np.asarray(sigmas.geometric(3.0, 0.1, 6))
    sched = samplers.annealed_schedule(ladder, 0.01, 300, "paper")
    sigma_l, alpha_l = float(ladder[-1]), 0.01
  else:  # MDSM's form at T = 1 throughout: the score of p_sigma0, known values at known + sigma0 z
    sched = samplers.tempered_schedule(0.1, np.ones(1500), 0.3, n_levels=5)
    sigma_l, alpha_l = 0.3, 0.01
  known = jnp.broadcast_to(jnp.asarray([A, 0.0], jnp.float32), (N, 2))
  mask = jnp.asarray([1.0, 0.0])
  x0 = 4.0 * jax.random.normal(jax.random.PRNGKey(0), (N, 2))
  x, aux = jax.jit(lambda k: samplers.inpaint_langevin(smoothed_score, k, x0, known, mask, sched, n_keep=3))(
      jax.random.PRNGKey(1))
  x = np.asarray(x, np.float64)
  np.testing.assert_array_equal(x[:, 0], A)  # the known entry comes back exactly
  mean, var = exact_law(sigma_l, alpha_l)
  assert abs(x[:, 1].mean() - mean) < 5 * np.sqrt(var / N), (x[:, 1].mean(), mean)
  assert abs(x[:, 1].var() - var) < 5 * var * np.sqrt(2 / N), (x[:, 1].var(), var)
  # not the unconditional marginal of x_1 (mean -0.5): conditioning moved it
  assert abs(x[:, 1].mean() - MU[1]) > 1.0
  assert aux["trajectory"].shape == (int(np.max(sched["level"])) + 1, 3, 2)
  assert int(aux["n_nonfinite"]) == 0


def test_final_denoise_moves_only_the_free_entries():
  sched = samplers.annealed_schedule(np.asarray([1.0, 0.5]), 0.05, 20, "paper")
  known = jnp.ones((64, 2)) * jnp.asarray([A, 0.0])
  mask = jnp.asarray([1.0, 0.0])
  x0 = jax.random.normal(jax.random.PRNGKey(3), (64, 2))
  plain, aux = samplers.inpaint_langevin(smoothed_score, jax.random.PRNGKey(4), x0, known, mask, sched, n_keep=64)
  den, _ = samplers.inpaint_langevin(smoothed_score, jax.random.PRNGKey(4), x0, known, mask, sched,
                                     final_denoise_sigma=0.5)
  np.testing.assert_array_equal(np.asarray(den[:, 0]), A)
  last = aux["trajectory"][-1]  # the last state, known entry still at its noised value
  np.testing.assert_array_equal(np.asarray(last[:, 1]), np.asarray(plain[:, 1]))
  # one Tweedie step at sigma 0.5 on the free entry: x_1 + 0.25 s_1(x)
  expect = np.asarray(last[:, 1] + 0.25 * smoothed_score(last, jnp.full((64,), 0.5))[:, 1])
  np.testing.assert_allclose(np.asarray(den[:, 1]), expect, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", inpaint_eval.MASKS)
def test_masks_hide_what_they_name(name):
  m = inpaint_eval.make_mask(name, (28, 28, 1), n=5, key=jax.random.PRNGKey(0), frac=0.5, square=14)
  assert m.shape == (5, 28, 28, 1) and set(np.unique(m)) <= {0.0, 1.0}
  hidden = 1.0 - m
  if name == "lower_half":
    assert hidden[:, 14:].all() and not hidden[:, :14].any()
  elif name == "centre_square":
    assert hidden[:, 7:21, 7:21].all() and hidden.sum() == 5 * 14 * 14
  else:  # random pixels: about frac hidden, different per image
    assert abs(hidden.mean() - 0.5) < 0.05 and not np.array_equal(m[0], m[1])


def test_bad_mask_name_is_one_line():
  with pytest.raises(ValueError, match="lower_half"):
    inpaint_eval.make_mask("upper_left", (28, 28, 1), 2, jax.random.PRNGKey(0))

"""MCMC samplers (dsm_jax.samplers) on targets with known laws.

ULA's stationary law for a Gaussian target N(mu, S) is itself Gaussian and known in closed form: the
chain x' = x - alpha/2 P (x - mu) + sqrt(alpha) z (P = S^-1) is a linear AR(1) with stationary covariance
C = alpha (I - M^2)^-1, M = I - alpha/2 P, i.e. C = S (I - alpha/4 P)^-1 = S + O(alpha).
So ULA is checked against its *exact* biased law, MALA against the target itself; tolerances are
5 standard errors of the estimates over independent chains (fixed keys).
"""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dsm_jax import fields, samplers, sigmas
from dsm_jax.data.toy import get_toy
from dsm_jax.eval.toy import nearer_fraction

NSE = 5.0
MU = np.asarray([1.0, -0.5])
COV = np.asarray([[1.0, 0.6], [0.6, 0.8]])
PREC = np.linalg.inv(COV)
N_CHAINS = 4000


def gauss_score(x, sigma=None):
  return -(x - MU.astype(np.float32)) @ PREC.astype(np.float32)


def gauss_log_prob(x, sigma=None):
  d = x - MU.astype(np.float32)
  return -0.5 * jnp.einsum("bi,ij,bj->b", d, PREC.astype(np.float32), d)


def ula_cov(cov, alpha):
  prec = np.linalg.inv(cov)
  return cov @ np.linalg.inv(np.eye(len(cov)) - alpha / 4 * prec)


def _x0(seed, n=N_CHAINS, d=2, scale=3.0):
  return scale * jax.random.normal(jax.random.PRNGKey(seed), (n, d))


def _check_moments(x, mean, cov, what):
  x = np.asarray(x, np.float64)
  n = x.shape[0]
  se_mean = np.sqrt(np.diag(cov) / n)
  np.testing.assert_array_less(np.abs(x.mean(0) - mean), NSE * se_mean, err_msg=f"{what}: mean")
  emp = np.cov(x.T)
  # sd of a Gaussian sample covariance entry: sqrt((C_ii C_jj + C_ij^2) / n)
  se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov ** 2) / n)
  np.testing.assert_array_less(np.abs(emp - cov), NSE * se_cov, err_msg=f"{what}: cov {emp} vs {cov}")


# ----------------------------------------------------------------------------------- ULA and MALA
@functools.partial(jax.jit, static_argnames=("alpha", "n_steps"))
def _ula(rng, x0, alpha, n_steps):
  return samplers.langevin(gauss_score, rng, x0, alpha, n_steps)


def test_langevin_gaussian_stationary_law():
  alpha = 0.05
  x, aux = _ula(jax.random.PRNGKey(0), _x0(1), alpha, 400)
  chex.assert_shape(x, (N_CHAINS, 2))
  assert int(aux["n_nonfinite"]) == 0
  c = ula_cov(COV, alpha)
  assert np.max(np.abs(c - COV)) < alpha  # the O(alpha) bias is small at this step
  _check_moments(x, MU, c, "ULA")


@functools.partial(jax.jit, static_argnames=("alpha", "n_steps"))
def _mala(rng, x0, alpha, n_steps):
  return samplers.mala(gauss_log_prob, rng, x0, alpha, n_steps)


def test_mala_gaussian_exact_law():
  x, aux = _mala(jax.random.PRNGKey(2), _x0(3), 0.4, 300)
  chex.assert_shape(x, (N_CHAINS, 2))
  rate = float(aux["accept_rate"])
  assert 0.0 < rate <= 1.0
  chex.assert_shape(aux["accept"], (300,))
  assert np.all((np.asarray(aux["accept"]) >= 0) & (np.asarray(aux["accept"]) <= 1))
  np.testing.assert_allclose(rate, np.mean(aux["accept"]), rtol=1e-5)
  _check_moments(x, MU, COV, "MALA")
  # a much larger step is still a valid MH chain but is rejected more often
  _, aux_big = _mala(jax.random.PRNGKey(4), _x0(5, n=500), 3.0, 20)
  assert 0.0 < float(aux_big["accept_rate"]) < rate


def test_mala_explicit_score_equals_autodiff_score():
  x0 = _x0(6, n=64)
  key = jax.random.PRNGKey(7)
  a, aux_a = samplers.mala(gauss_log_prob, key, x0, 0.3, 20)
  b, aux_b = samplers.mala(gauss_log_prob, key, x0, 0.3, 20, score_fn=gauss_score)
  chex.assert_trees_all_close(a, b, atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(aux_a["accept_rate"], aux_b["accept_rate"], atol=0.02)


# ----------------------------------------------------------------------------------- annealed Langevin
MIX = get_toy("mixture")
N_MIX = 3000


def _uniform_start(seed, n=N_MIX):
  return jax.random.uniform(jax.random.PRNGKey(seed), (n, 2), minval=-8.0, maxval=8.0)


@functools.partial(jax.jit, static_argnames=("form",))
def _annealed_mixture(rng, x0, form):
  score = lambda x, s: MIX.score(x, s, form=form)
  return samplers.annealed_langevin(score, rng, x0, sigmas.geometric(20.0, 1.0, 10), 0.1, 100)


@jax.jit
def _plain_mixture(rng, x0):
  return samplers.langevin(lambda x, s: MIX.score(x, s), rng, x0, 0.1, 1000, sigma=1.0)


@pytest.mark.parametrize("form", ["convolved", "reference"])
def test_annealed_langevin_recovers_mixture_weights(form):
  x, aux = _annealed_mixture(jax.random.PRNGKey(8), _uniform_start(9), form)
  assert int(aux["n_nonfinite"]) == 0
  w = nearer_fraction(np.asarray(x), (5.0, 5.0), (-5.0, -5.0))
  # sd of the fraction over 3000 chains is 0.0073: 0.03 is ~4 sd
  assert abs(w - 0.8) < 0.03, w
  # and the samples sit on the modes, not in between (P(|n| > 5.5) = exp(-5.5^2 / 4) < 1e-3 for std sqrt(2))
  dist = np.minimum(np.linalg.norm(x - 5.0, axis=1), np.linalg.norm(x + 5.0, axis=1))
  assert np.mean(dist < 5.5) > 0.99


# ----------------------------------------------------------------------------------- annealed MALA
LADDER3 = sigmas.geometric(1.5, 1.0, 3)  # alpha_i = eps (2.25, 1.5, 1)


@functools.partial(jax.jit, static_argnames=("eps", "mala", "exact"))
def _annealed_gauss(rng, x0, eps, mala, exact=False):
  if not mala:
    return samplers.annealed_langevin(gauss_score, rng, x0, LADDER3, eps, 60)
  return samplers.annealed_mala(gauss_score, rng, x0, LADDER3, eps, 60, log_prob_fn=gauss_log_prob if exact else None)


def test_annealed_mala_samples_the_target_at_a_step_where_langevin_is_biased():
  """A target whose score ignores sigma: each level is N(MU, COV). At the last level's alpha = 0.5 ULA's law is
  S (I - alpha/4 P)^-1 (far from COV); the Metropolis-adjusted chain's law is COV itself, its acceptance rate
  reported per chain and level."""
  x_ula, _ = _annealed_gauss(jax.random.PRNGKey(0), _x0(1), 0.5, False)
  biased = ula_cov(COV, 0.5)
  assert np.max(np.abs(biased - COV)) > 0.15
  _check_moments(x_ula, MU, biased, "annealed ULA")
  x, aux = _annealed_gauss(jax.random.PRNGKey(0), _x0(1), 0.5, True)
  _check_moments(x, MU, COV, "annealed MALA")
  acc = np.asarray(aux["accept"])
  assert acc.shape == (3, N_CHAINS) and np.all((acc >= 0) & (acc <= 1))
  np.testing.assert_allclose(float(aux["accept_rate"]), acc.mean(), rtol=1e-5)
  # alpha_i = eps sigma_i^2 / sigma_L^2: the larger steps of the higher levels are rejected more often
  assert acc[0].mean() < acc[1].mean() < acc[2].mean() < 1.0 and acc[0].mean() > 0.0


def test_annealed_mala_trapezoid_ratio_is_exact_for_a_gaussian():
  """The score-only acceptance (trapezoid line integral of the score) equals the exact log-density ratio when
  log p is quadratic: the same draws with log_prob_fn given give the same chains."""
  x0 = _x0(2, n=256)
  a, aux_a = _annealed_gauss(jax.random.PRNGKey(3), x0, 0.4, True)
  b, aux_b = _annealed_gauss(jax.random.PRNGKey(3), x0, 0.4, True, exact=True)
  same = np.all(np.isclose(np.asarray(a), np.asarray(b), atol=1e-4), axis=1)
  assert same.mean() > 0.99, same.mean()
  np.testing.assert_allclose(aux_a["accept"], aux_b["accept"], atol=0.02)


@jax.jit
def _annealed_mala_mixture(rng, x0):
  score = lambda x, s: MIX.score(x, s)
  return samplers.annealed_mala(score, rng, x0, sigmas.geometric(20.0, 1.0, 10), 0.1, 100, return_traj=True)


def test_annealed_mala_recovers_mixture_weights():
  """On the 2-D mixture (a non-quadratic log-density: the trapezoid ratio is approximate) the adjusted chain
  keeps annealing's weights 0.8 / 0.2 and accepts most of NCSN's small steps."""
  x, aux = _annealed_mala_mixture(jax.random.PRNGKey(8), _uniform_start(9))
  assert int(aux["n_nonfinite"]) == 0 and aux["trajectory"].shape == (10, N_MIX, 2)
  w = nearer_fraction(np.asarray(x), (5.0, 5.0), (-5.0, -5.0))
  assert abs(w - 0.8) < 0.03, w
  assert 0.5 < float(aux["accept_rate"]) < 1.0


def test_plain_langevin_misses_mixture_weights():
  x, _ = _plain_mixture(jax.random.PRNGKey(8), _uniform_start(9))
  w = nearer_fraction(np.asarray(x), (5.0, 5.0), (-5.0, -5.0))
  assert w < 0.7, w  # the chains stay on the side of the start they began on (~0.5)


# ----------------------------------------------------------------------------------- tempered Langevin
M_Q = np.asarray([1.0, 2.0], np.float32)
V_Q = 0.5


def quad_score(x, sigma=None):
  return -(x - M_Q) / V_Q


@functools.partial(jax.jit, static_argnames=("eps", "n_steps", "temp", "thin", "denoise"))
def _tempered(rng, x0, eps, n_steps, temp, thin=0, denoise=None):
  return samplers.tempered_langevin(quad_score, rng, x0, eps, jnp.full((n_steps,), temp), thin=thin,
                                    final_denoise_sigma=denoise)


@pytest.mark.parametrize("temp", [1.0, 2.0])
def test_tempered_langevin_constant_temperature(temp):
  eps = 0.2
  x, aux = _tempered(jax.random.PRNGKey(10), _x0(11) + M_Q, eps, 300, temp)
  assert int(aux["n_nonfinite"]) == 0
  # per-coordinate ULA with alpha = eps^2 and noise scaled by sqrt(T): var = T v / (1 - alpha / (4 v))
  var = temp * V_Q / (1 - eps ** 2 / (4 * V_Q))
  _check_moments(x, M_Q, var * np.eye(2), f"tempered T={temp}")


def test_tempered_langevin_zero_temperature_contracts_to_mode():
  eps, n = 0.2, 300
  x0 = _x0(12, n=256) + M_Q
  x, _ = _tempered(jax.random.PRNGKey(13), x0, eps, n, 0.0)
  # gradient descent on |x - m|^2 / (2v): x_n - m = (1 - eps^2 / (2v))^n (x_0 - m)
  expected = M_Q + (1 - eps ** 2 / (2 * V_Q)) ** n * (np.asarray(x0) - M_Q)
  np.testing.assert_allclose(x, expected, atol=1e-5)
  assert np.max(np.abs(np.asarray(x) - M_Q)) < 1e-4


def test_tempered_final_denoise_and_thin():
  eps, sigma0 = 0.2, 0.3
  x0 = _x0(14, n=32) + M_Q
  key = jax.random.PRNGKey(15)
  x, aux = _tempered(key, x0, eps, 20, 1.0, thin=4, denoise=sigma0)
  chex.assert_shape(aux["trajectory"], (5, 32, 2))
  last = aux["trajectory"][-1]
  chex.assert_trees_all_close(x, last + sigma0 ** 2 * quad_score(last), atol=1e-6)
  x_nothin, aux_nothin = _tempered(key, x0, eps, 20, 1.0, denoise=sigma0)
  assert "trajectory" not in aux_nothin
  chex.assert_trees_all_close(x, x_nothin, atol=1e-5)


# ----------------------------------------------------------------------------------- trajectories
def test_langevin_thinned_trajectory():
  x0, key = _x0(16, n=8), jax.random.PRNGKey(17)
  x, aux = samplers.langevin(gauss_score, key, x0, 0.1, 20, thin=5)
  chex.assert_shape(aux["trajectory"], (4, 8, 2))
  chex.assert_trees_all_equal(aux["trajectory"][-1], x)
  # thinning only records the chain: same keys, same final state
  x_plain, aux_plain = samplers.langevin(gauss_score, key, x0, 0.1, 20)
  assert "trajectory" not in aux_plain
  chex.assert_trees_all_close(x, x_plain, atol=1e-5)
  # record k is the state after (k + 1) * thin steps of the same chain
  _, aux1 = samplers.langevin(gauss_score, key, x0, 0.1, 20, thin=1)
  chex.assert_shape(aux1["trajectory"], (20, 8, 2))
  chex.assert_trees_all_close(aux1["trajectory"][4::5], aux["trajectory"], atol=1e-5)
  with pytest.raises(ValueError):
    samplers.langevin(gauss_score, key, x0, 0.1, 20, thin=3)


def test_mala_thinned_trajectory():
  x0, key = _x0(18, n=8), jax.random.PRNGKey(19)
  x, aux = samplers.mala(gauss_log_prob, key, x0, 0.3, 12, thin=4)
  chex.assert_shape(aux["trajectory"], (3, 8, 2))
  chex.assert_trees_all_equal(aux["trajectory"][-1], x)
  chex.assert_shape(aux["accept"], (12,))


@pytest.mark.parametrize("final_denoise", [False, True])
def test_annealed_trajectory(final_denoise):
  ladder = sigmas.geometric(3.0, 0.5, 4)
  x0, key = _x0(20, n=8), jax.random.PRNGKey(21)
  score = lambda x, s: -x / (1.0 + fields.bcast(s, x) ** 2)
  x, aux = samplers.annealed_langevin(score, key, x0, ladder, 0.05, 6, return_traj=True,
                                      final_denoise=final_denoise)
  chex.assert_shape(aux["trajectory"], (4, 8, 2))
  last = aux["trajectory"][-1]
  if final_denoise:
    chex.assert_trees_all_close(x, last + 0.25 * score(last, 0.5), atol=1e-6)
  else:
    chex.assert_trees_all_equal(last, x)
  x_nt, aux_nt = samplers.annealed_langevin(score, key, x0, ladder, 0.05, 6, final_denoise=final_denoise)
  assert "trajectory" not in aux_nt
  chex.assert_trees_all_close(x_nt, x, atol=1e-5)


# ----------------------------------------------------------------------------------- conventions
def test_code_convention_is_paper_with_doubled_step():
  x0, key = _x0(22, n=16), jax.random.PRNGKey(23)
  a, _ = samplers.langevin(gauss_score, key, x0, 0.01, 10, convention="code")
  b, _ = samplers.langevin(gauss_score, key, x0, 0.02, 10, convention="paper")
  chex.assert_trees_all_equal(a, b)
  ladder = sigmas.geometric(2.0, 0.5, 3)
  score = lambda x, s: -x / fields.bcast(s, x) ** 2
  a, _ = samplers.annealed_langevin(score, key, x0, ladder, 0.003, 5, convention="code")
  b, _ = samplers.annealed_langevin(score, key, x0, ladder, 0.006, 5, convention="paper")
  chex.assert_trees_all_equal(a, b)


def test_annealed_alphas_and_bad_convention():
  ladder = sigmas.geometric(10.0, 0.5, 5)
  lad = np.asarray(ladder, np.float64)
  np.testing.assert_allclose(samplers.annealed_alphas(ladder, 0.1), 0.1 * lad ** 2 / lad[-1] ** 2, rtol=1e-5)
  np.testing.assert_allclose(samplers.annealed_alphas(ladder, 0.1, "code"), 0.2 * lad ** 2 / lad[-1] ** 2,
                             rtol=1e-5)
  np.testing.assert_allclose(samplers.annealed_alphas(ladder, 0.1)[-1], 0.1, rtol=1e-6)
  assert samplers.paper_alpha(0.3, "paper") == 0.3 and samplers.paper_alpha(0.3, "code") == 0.6
  with pytest.raises(ValueError):
    samplers.paper_alpha(0.3, "ncsnv2")
  with pytest.raises(ValueError):
    samplers.langevin(gauss_score, jax.random.PRNGKey(0), jnp.zeros((2, 2)), 0.1, 3, convention="bogus")


def test_sigma_is_passed_per_example():
  seen = {}

  def score(x, s):
    seen["sigma"] = s
    return -x

  x0 = jnp.zeros((5, 2))
  samplers.langevin(score, jax.random.PRNGKey(0), x0, 0.1, 2)
  assert seen["sigma"] is None
  samplers.langevin(score, jax.random.PRNGKey(0), x0, 0.1, 2, sigma=0.7)
  chex.assert_shape(seen["sigma"], (5,))


# ----------------------------------------------------------------------------------- non-finite
def test_n_nonfinite_counts_nan_chains():
  bad = jnp.arange(10) < 3   # chains 0, 1, 2 blow up

  def score(x, s=None):
    return jnp.where(bad[:, None] & (jnp.arange(2) == 0)[None], jnp.nan, -x)  # one NaN entry per bad row

  x0, key = _x0(24, n=10), jax.random.PRNGKey(25)
  _, aux = samplers.langevin(score, key, x0, 0.1, 5)
  assert int(aux["n_nonfinite"]) == 3
  _, aux = samplers.annealed_langevin(score, key, x0, sigmas.geometric(2.0, 1.0, 2), 0.1, 3)
  assert int(aux["n_nonfinite"]) == 3
  _, aux = samplers.tempered_langevin(score, key, x0, 0.1, np.ones(4))
  assert int(aux["n_nonfinite"]) == 3
  _, aux = samplers.langevin(gauss_score, key, x0, 0.1, 5)
  assert int(aux["n_nonfinite"]) == 0


# ----------------------------------------------------------------------------------- jit == no jit
class SamplerJitTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_langevin(self):
    x0, key = _x0(26, n=16), jax.random.PRNGKey(27)
    fn = lambda key, x0: samplers.langevin(gauss_score, key, x0, 0.1, 10, thin=5)
    chex.assert_trees_all_close(self.variant(fn)(key, x0), fn(key, x0), atol=1e-5, rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_annealed_langevin(self):
    x0, key = _x0(28, n=16), jax.random.PRNGKey(29)
    ladder = sigmas.geometric(3.0, 0.5, 3)
    score = lambda x, s: jnp.tanh(x) - x / fields.bcast(s, x) ** 2
    fn = lambda key, x0: samplers.annealed_langevin(score, key, x0, ladder, 0.05, 5, final_denoise=True,
                                                    return_traj=True)
    chex.assert_trees_all_close(self.variant(fn)(key, x0), fn(key, x0), atol=1e-5, rtol=1e-5)


SHARD_SCRIPT = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
sys.path.insert(0, {repo!r})
from dsm_jax import samplers, sigmas
from dsm_jax.data.toy import get_toy
assert jax.local_device_count() == 8
mix = get_toy("mixture")
score = lambda x, s: mix.score(x, s)
ladder = sigmas.geometric(20.0, 1.0, 4)

def run(shard, n):
  def f(key):
    x0 = jax.random.uniform(jax.random.fold_in(key, 0), (n, 2), minval=-8, maxval=8)
    if shard:
      x0 = samplers.shard_chains(x0)
    return samplers.annealed_langevin(score, key, x0, ladder, 0.1, 20, convention="paper")[0]
  out = jax.jit(f)(jax.random.PRNGKey(3))
  return np.asarray(out), len(out.sharding.device_set)

a, da = run(False, 64)
b, db = run(True, 64)
c, dc = run(True, 60)  # 60 chains do not split over 8 devices: left as is
print(json.dumps({{"diff": float(np.max(np.abs(a - b))), "devices": [da, db, dc]}}))
"""


def test_shard_chains_splits_over_devices_and_keeps_the_samples(tmp_path):
  import json, os, subprocess, sys  # noqa: E401
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-c", SHARD_SCRIPT.format(repo=repo)], capture_output=True, text=True,
                     env=env, timeout=600)
  assert r.returncode == 0, r.stderr[-2000:]
  res = json.loads(r.stdout.strip().splitlines()[-1])
  assert res["devices"] == [1, 8, 1], res
  assert res["diff"] < 1e-4, res

"""Score-matching objectives (dsm_jax.losses) against closed forms for Gaussian data.

Monte Carlo checks use fixed keys and tolerances of 5 standard errors (estimated from the same draws).
Comparisons between a model and a perturbed one are *paired* (same key, hence same noise), so the
standard error is that of the per-example difference, and the expected excess loss is known exactly.
"""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import given, settings, strategies as st
from jax.flatten_util import ravel_pytree

from dsm_jax import fields, losses, sigmas
from dsm_jax.models import EnergyMLP, ScoreMLP

TAU = 1.5   # data ~ N(0, TAU^2 I_D)
D = 4
B = 20000
NSE = 5.0   # tolerance in standard errors


def _gauss(seed, n=B, d=D, tau=TAU):
  return tau * jax.random.normal(jax.random.PRNGKey(seed), (n, d))


def _se(a):
  a = np.asarray(a, np.float64)
  return a.std(ddof=1) / np.sqrt(a.size)


def _check_mean(per_example, expected, what=""):
  pe = np.asarray(per_example, np.float64)
  se = _se(pe)
  assert abs(pe.mean() - expected) < NSE * se, f"{what}: MC mean {pe.mean():.5g} vs {expected:.5g} (se {se:.3g})"


def _check_excess(per_pert, per_opt, excess, what=""):
  """The paired excess loss of a perturbed model matches its closed form, and is far above the MC error."""
  diff = np.asarray(per_pert, np.float64) - np.asarray(per_opt, np.float64)
  se = _se(diff)
  assert excess > 2 * NSE * se, f"{what}: test design, excess {excess:.4g} vs se {se:.3g}"
  assert abs(diff.mean() - excess) < NSE * se, f"{what}: excess {diff.mean():.5g} vs {excess:.5g} (se {se:.3g})"
  assert diff.mean() > NSE * se


def opt_score(y, sigma):
  """Score of N(0, (TAU^2 + sigma^2) I): the optimum of DSM at sigma for N(0, TAU^2 I) data."""
  return -y / (TAU ** 2 + fields.bcast(sigma, y) ** 2)


SHIFT = jnp.asarray([0.5, -0.3, 0.2, 0.3])  # ||SHIFT||^2 = 0.47
SCALES = (0.5, 1.5)


# --------------------------------------------------------------------------------------- (1) DSM
@jax.jit
def _dsm_runs(rng, x, sigma):
  out = {"opt": losses.dsm(opt_score, rng, x, sigma)[1]["per_example"],
         "shift": losses.dsm(lambda y, s: opt_score(y, s) + SHIFT, rng, x, sigma)[1]["per_example"]}
  for c in SCALES:
    out[f"x{c}"] = losses.dsm(lambda y, s: c * opt_score(y, s), rng, x, sigma)[1]["per_example"]
  full = jnp.full(x.shape[:1], sigma)
  out["per_example_sigma"] = losses.dsm(opt_score, rng, x, full)[1]["per_example"]
  out["loss"] = losses.dsm(opt_score, rng, x, sigma)[0]
  return out


@pytest.mark.parametrize("sigma", [0.3, 1.0, 3.0])
def test_dsm_gaussian_optimum_and_perturbations(sigma):
  x = _gauss(0)
  out = _dsm_runs(jax.random.PRNGKey(1), x, jnp.float32(sigma))
  closed = D * TAU ** 2 / (2 * sigma ** 2 * (TAU ** 2 + sigma ** 2))
  _check_mean(out["opt"], closed, "dsm optimum")
  np.testing.assert_allclose(out["loss"], np.mean(out["opt"]), rtol=1e-5)
  # a per-example sigma filled with sigma is the same loss, draw for draw
  np.testing.assert_allclose(out["per_example_sigma"], out["opt"], rtol=1e-5, atol=1e-7)
  for c in SCALES:
    _check_excess(out[f"x{c}"], out["opt"], 0.5 * (c - 1) ** 2 * D / (TAU ** 2 + sigma ** 2), f"scale {c}")
  _check_excess(out["shift"], out["opt"], 0.5 * float(jnp.sum(SHIFT ** 2)), "shift")


# --------------------------------------------------------------------------------------- (2) NCSN
LADDER = sigmas.geometric(5.0, 0.1, 6)


@functools.partial(jax.jit, static_argnames=("power",))
def _ncsn_run(rng, x, ladder, power=2.0):
  return losses.ncsn(opt_score, rng, x, ladder, anneal_power=power)


def test_ncsn_levels_consistent_and_optimal():
  x = _gauss(2)
  rng = jax.random.PRNGKey(3)
  loss, aux = _ncsn_run(rng, x, LADDER)
  _, aux0 = _ncsn_run(rng, x, LADDER, power=0.0)
  pe, pe0 = np.asarray(aux["per_example"], np.float64), np.asarray(aux0["per_example"], np.float64)
  lsum, count = np.asarray(aux["level_loss_sum"], np.float64), np.asarray(aux["level_count"])
  L = LADDER.shape[0]
  chex.assert_shape([aux["level_loss_sum"], aux["level_count"]], (L,))
  chex.assert_shape(aux["per_example"], (B,))
  np.testing.assert_allclose(loss, pe.mean(), rtol=1e-5)
  np.testing.assert_allclose(lsum.sum(), pe.sum(), rtol=1e-4)
  np.testing.assert_array_equal(count, np.round(count))
  assert count.sum() == B
  # levels uniform over the ladder
  p = 1 / L
  assert np.all(np.abs(count / B - p) < NSE * np.sqrt(p * (1 - p) / B)), count
  # recover each example's level from the weight lambda(sigma) = sigma^2 (same key => same draws)
  lad = np.asarray(LADDER, np.float64)
  ratio = pe / pe0
  level = np.argmin(np.abs(ratio[:, None] / lad[None] ** 2 - 1), axis=1)
  np.testing.assert_allclose(ratio, lad[level] ** 2, rtol=1e-4)
  np.testing.assert_array_equal(np.bincount(level, minlength=L), count)
  np.testing.assert_allclose(np.bincount(level, weights=pe, minlength=L), lsum, rtol=1e-4)
  # with the optimal conditional score, each level's weighted loss is sigma^2 * the DSM closed form
  for i, s in enumerate(lad):
    closed = D * TAU ** 2 / (2 * s ** 2 * (TAU ** 2 + s ** 2))
    _check_mean(pe[level == i], s ** 2 * closed, f"level {i} (sigma={s:.3g})")
    np.testing.assert_allclose(lsum[i] / count[i], pe[level == i].mean(), rtol=1e-4)


@functools.partial(jax.jit, static_argnums=2)
def _ncsn_tanh(rng, x, n_levels):
  score = lambda y, s: jnp.tanh(y) - y / fields.bcast(s, y)
  return losses.ncsn(score, rng, x, sigmas.geometric(3.0, 0.2, n_levels))


@settings(max_examples=4)
@given(b=st.sampled_from([1, 7, 33]), shape=st.sampled_from([(3,), (2, 3), (2, 2, 2)]),
       n_levels=st.integers(2, 7), seed=st.integers(0, 1000))
def test_ncsn_aux_property(b, shape, n_levels, seed):
  x = np.random.default_rng(seed).standard_normal((b,) + shape).astype(np.float32)
  loss, aux = _ncsn_tanh(jax.random.PRNGKey(seed), x, n_levels)
  chex.assert_shape(loss, ())
  chex.assert_shape([aux["level_loss_sum"], aux["level_count"]], (n_levels,))
  assert float(jnp.sum(aux["level_count"])) == b
  np.testing.assert_allclose(jnp.sum(aux["level_loss_sum"]), jnp.sum(aux["per_example"]), rtol=1e-5)
  np.testing.assert_allclose(loss, jnp.mean(aux["per_example"]), rtol=1e-6)


# --------------------------------------------------------------------------------------- (3) DAE
def opt_denoiser(y, sigma):
  return TAU ** 2 / (TAU ** 2 + fields.bcast(sigma, y) ** 2) * y


@jax.jit
def _dae_runs(rng, x, sigma):
  out = {"opt": losses.dae(opt_denoiser, rng, x, sigma)[1]["per_example"],
         "shift": losses.dae(lambda y, s: opt_denoiser(y, s) + SHIFT, rng, x, sigma)[1]["per_example"]}
  for c in (0.7, 1.3):
    out[f"x{c}"] = losses.dae(lambda y, s: c * opt_denoiser(y, s), rng, x, sigma)[1]["per_example"]
  return out


@pytest.mark.parametrize("sigma", [0.3, 1.0, 3.0])
def test_dae_tweedie_denoiser_is_optimal(sigma):
  x = _gauss(4)
  out = _dae_runs(jax.random.PRNGKey(5), x, jnp.float32(sigma))
  t2, s2 = TAU ** 2, sigma ** 2
  _check_mean(out["opt"], D * t2 * s2 / (t2 + s2), "dae optimum (posterior variance)")
  for c in (0.7, 1.3):
    _check_excess(out[f"x{c}"], out["opt"], (c - 1) ** 2 * D * t2 ** 2 / (t2 + s2), f"scale {c}")
  _check_excess(out["shift"], out["opt"], float(jnp.sum(SHIFT ** 2)), "shift")


@pytest.mark.parametrize("shape,per_example", [((5, 3), False), ((5, 3), True), ((4, 2, 3), True),
                                               ((3, 2, 2, 2), False)])
def test_dae_equals_scaled_dsm(shape, per_example):
  """r - x = sigma^2 (s + n / sigma) for r = x + sigma^2 s, so DAE = 2 sigma^4 DSM, draw for draw."""
  x = jax.random.normal(jax.random.PRNGKey(6), shape)
  sigma = jnp.linspace(0.3, 2.0, shape[0]) if per_example else jnp.float32(0.7)
  score = lambda y, s: jnp.sin(y) - y / fields.bcast(s, y)
  rng = jax.random.PRNGKey(7)
  _, a_dsm = losses.dsm(score, rng, x, sigma)
  _, a_dae = losses.dae(fields.denoiser_from_score(score), rng, x, sigma)
  chex.assert_shape([a_dsm["per_example"], a_dae["per_example"]], shape[:1])
  np.testing.assert_allclose(a_dae["per_example"], 2 * np.asarray(sigma) ** 4 * a_dsm["per_example"],
                             rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------- (4) ESM / SSM
A_LIN = np.asarray([[-1.0, 0.4, 0.2], [0.3, -0.5, 0.1], [-0.2, 0.6, 0.8]], np.float32)
B_LIN = np.asarray([0.3, -0.7, 0.5], np.float32)


def lin_score(y, sigma=None):
  return y @ A_LIN.T + B_LIN


_esm_lin = jax.jit(lambda x: losses.esm(lin_score, x))


@functools.partial(jax.jit, static_argnames=("vr", "proj", "n_proj"))
def _ssm_run(rng, x, vr, proj, n_proj=1):
  return losses.ssm(lin_score, rng, x, variance_reduced=vr, projection=proj, n_projections=n_proj)


def test_esm_exact_per_sample_for_linear_score():
  x = np.random.default_rng(8).standard_normal((64, 3)).astype(np.float32)
  loss, aux = _esm_lin(x)
  s = x.astype(np.float64) @ A_LIN.T + B_LIN
  expected = np.trace(A_LIN) + 0.5 * np.sum(s ** 2, axis=1)
  np.testing.assert_allclose(aux["per_example"], expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(loss, expected.mean(), rtol=1e-5)


def test_esm_exact_nonlinear_and_sigma():
  """tanh score: tr grad s = sum_i (1 - tanh^2(Wx)_i) W_ii; sigma is passed through per example."""
  rng = np.random.default_rng(9)
  w = rng.standard_normal((3, 3)).astype(np.float32)
  x = rng.standard_normal((32, 3)).astype(np.float32)
  sig = rng.uniform(0.5, 2.0, (32,)).astype(np.float32)
  score = lambda y, s: jnp.tanh(y @ w.T) - y / fields.bcast(s, y) ** 2
  _, aux = losses.esm(score, x, sig)
  h = np.tanh(x.astype(np.float64) @ w.T)
  sv = h - x / sig[:, None] ** 2
  expected = (1 - h ** 2) @ np.diag(w) - 3 / sig ** 2 + 0.5 * np.sum(sv ** 2, axis=1)
  np.testing.assert_allclose(aux["per_example"], expected, rtol=1e-4, atol=1e-4)


def test_esm_ssm_image_shaped_diagonal_score():
  """Elementwise-linear score on [B, 2, 3]: tr = sum(a); with Rademacher v, v^T diag(a) v = sum(a) exactly,
  so SSM-VR equals ESM per sample."""
  rng = np.random.default_rng(10)
  a = rng.standard_normal((2, 3)).astype(np.float32)
  c = rng.standard_normal((2, 3)).astype(np.float32)
  x = rng.standard_normal((8, 2, 3)).astype(np.float32)
  score = lambda y, s: a * y + c
  (_, aux), (_, aux_s) = jax.jit(lambda x: (
      losses.esm(score, x),
      losses.ssm(score, jax.random.PRNGKey(0), x, projection="rademacher", n_projections=3)))(x)
  expected = a.sum() + 0.5 * np.sum((a * x + c) ** 2, axis=(1, 2))
  np.testing.assert_allclose(aux["per_example"], expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(aux_s["per_example"], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("proj", ["gaussian", "rademacher"])
@pytest.mark.parametrize("vr", [True, False])
def test_ssm_matches_esm_in_expectation(vr, proj):
  n = 10000
  x = jax.random.normal(jax.random.PRNGKey(11), (n, 3))
  closed = float(np.trace(A_LIN) + 0.5 * (B_LIN @ B_LIN + np.sum(A_LIN ** 2)))
  _, aux_e = _esm_lin(x)
  _check_mean(aux_e["per_example"], closed, "esm")
  loss, aux = _ssm_run(jax.random.PRNGKey(12), x, vr, proj)
  chex.assert_shape(aux["per_example"], (n,))
  _check_mean(aux["per_example"], closed, f"ssm vr={vr} {proj}")
  # paired with ESM on the same x: only the projection noise is left
  diff = np.asarray(aux["per_example"], np.float64) - np.asarray(aux_e["per_example"], np.float64)
  assert abs(diff.mean()) < NSE * _se(diff)
  if vr or proj == "rademacher":
    return
  # more projections: an average of independent estimates, same mean, lower variance
  _, aux4 = _ssm_run(jax.random.PRNGKey(13), x, vr, proj, n_proj=4)
  diff4 = np.asarray(aux4["per_example"], np.float64) - np.asarray(aux_e["per_example"], np.float64)
  assert abs(diff4.mean()) < NSE * _se(diff4)
  assert diff4.var() < diff.var()


def test_ssm_unknown_projection_raises():
  with pytest.raises(ValueError):
    losses.ssm(lin_score, jax.random.PRNGKey(0), jnp.ones((2, 3)), projection="sphere")


# --------------------------------------------------------------------------------------- (5) MDSM
def _tiny_energy(params, y):
  h = jnp.tanh(y @ params["w"].T + params["b"])
  return 0.5 * jax.nn.softplus(params["c"]) * jnp.sum(y ** 2, axis=-1) + h @ params["v"]


def _fd_check(loss_fn, params, directions, h=1e-5, rtol=1e-6):
  """Central finite differences of loss_fn along flat directions vs the autodiff gradient."""
  flat, unravel = ravel_pytree(params)
  assert flat.dtype == jnp.float64
  grad = ravel_pytree(jax.jit(jax.grad(loss_fn))(params))[0]
  assert float(jnp.linalg.norm(grad)) > 1e-3
  lf = jax.jit(lambda f: loss_fn(unravel(f)))
  for v in directions:
    fd = (lf(flat + h * v) - lf(flat - h * v)) / (2 * h)
    ad = grad @ v
    np.testing.assert_allclose(ad, fd, rtol=rtol, atol=rtol * float(jnp.linalg.norm(grad)))


@pytest.mark.parametrize("weight_power", [2.0, 0.0])
def test_mdsm_gradient_matches_finite_differences_tiny(weight_power):
  with jax.enable_x64(True):
    rng = np.random.default_rng(14)
    params = {"w": rng.standard_normal((4, 2)), "b": rng.standard_normal(4),
              "v": rng.standard_normal(4), "c": np.float64(0.3)}
    params = jax.tree_util.tree_map(jnp.asarray, params)
    x = jnp.asarray(rng.standard_normal((16, 2)))
    sig = jnp.asarray(rng.uniform(0.1, 1.0, 16))
    key = jax.random.PRNGKey(15)

    def loss_fn(p):
      return losses.mdsm(lambda y, s0: _tiny_energy(p, y), key, x, sig, 0.3, weight_power=weight_power)[0]

    assert jax.eval_shape(loss_fn, params).dtype == jnp.float64
    n = ravel_pytree(params)[0].size
    _fd_check(loss_fn, params, list(jnp.eye(n)))  # every coordinate


def test_mdsm_gradient_matches_finite_differences_energy_mlp():
  with jax.enable_x64(True):
    model = EnergyMLP(hidden=(8,))
    x = jax.random.normal(jax.random.PRNGKey(16), (16, 2), jnp.float64)
    params = jax.jit(model.init)(jax.random.PRNGKey(17), x)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    sig = jnp.linspace(0.1, 1.0, 16)
    key = jax.random.PRNGKey(18)

    def loss_fn(p):
      return losses.mdsm(lambda y, s0: model.apply(p, y, s0), key, x, sig, 0.5)[0]

    assert jax.eval_shape(loss_fn, params).dtype == jnp.float64
    n = ravel_pytree(params)[0].size
    dirs = jax.random.normal(jax.random.PRNGKey(19), (4, n), jnp.float64)
    _fd_check(loss_fn, params, list(dirs))


SIGMA0 = 0.5


@jax.jit
def _mdsm_runs(rng, x):
  sig = jnp.full(x.shape[:1], SIGMA0)
  k = TAU ** 2 + SIGMA0 ** 2
  out = {}
  for c in (0.6, 1.0, 1.4):
    energy = lambda y, s0: c * jnp.sum(y ** 2, axis=-1) / (2 * k)
    out[f"x{c}"] = losses.mdsm(energy, rng, x, sig, SIGMA0)[1]["per_example"]
  opt = lambda y, s0: jnp.sum(y ** 2, axis=-1) / (2 * k)
  out["dsm"] = losses.dsm(opt_score, rng, x, sig)[1]["per_example"]
  sig_r = jnp.linspace(0.1, 2.0, x.shape[0])
  out["w2"] = losses.mdsm(opt, rng, x, sig_r, SIGMA0)[1]["per_example"]
  out["w0"] = losses.mdsm(opt, rng, x, sig_r, SIGMA0, weight_power=0.0)[1]["per_example"]
  return out


def test_mdsm_gaussian_optimal_energy():
  x = _gauss(20)
  out = _mdsm_runs(jax.random.PRNGKey(21), x)
  k = TAU ** 2 + SIGMA0 ** 2
  # at sigma = sigma0 the residual is -(s* + n / sigma0): MDSM = 2 DSM / sigma0^2, draw for draw
  np.testing.assert_allclose(out["x1.0"], 2 * np.asarray(out["dsm"]) / SIGMA0 ** 2, rtol=1e-4)
  _check_mean(out["x1.0"], D * TAU ** 2 / (SIGMA0 ** 4 * k), "mdsm optimum")
  for c in (0.6, 1.4):
    _check_excess(out[f"x{c}"], out["x1.0"], (c - 1) ** 2 * D / (k * SIGMA0 ** 2), f"curvature x{c}")
  # weight_power: l(sigma) = 1/sigma^power
  sig_r = np.linspace(0.1, 2.0, x.shape[0])
  np.testing.assert_allclose(out["w0"], sig_r ** 2 * np.asarray(out["w2"], np.float64), rtol=1e-4)


# --------------------------------------------------------------------------------------- (6) API
def _models():
  x = jax.random.normal(jax.random.PRNGKey(22), (8, 2))
  sig = jnp.linspace(0.2, 2.0, 8)
  score_model, energy_model = ScoreMLP(hidden=(16,)), EnergyMLP(hidden=(16,))
  sp = score_model.init(jax.random.PRNGKey(23), x, sig)
  ep = energy_model.init(jax.random.PRNGKey(24), x)
  return x, sig, score_model, sp, energy_model, ep


def _all_losses(score_model, energy_model):
  ladder = sigmas.geometric(2.0, 0.2, 4)

  def run(sp, ep, rng, x, sig):
    score = lambda y, s: score_model.apply(sp, y, s)
    energy = lambda y, s: energy_model.apply(ep, y, s)
    return {
        "dsm": losses.dsm(score, rng, x, sig),
        "ncsn": losses.ncsn(score, rng, x, ladder),
        "ssm": losses.ssm(score, rng, x, sig, n_projections=2),
        "esm": losses.esm(score, x, sig),
        "mdsm": losses.mdsm(energy, rng, x, sig, 0.3),
    }
  return run


class LossApiTest(parameterized.TestCase):

  @parameterized.parameters("dsm", "dae", "ncsn", "ssm", "esm", "mdsm")
  def test_rejects_rank1_and_integer_input(self, name):
    fn = {
        "dsm": lambda x: losses.dsm(opt_score, jax.random.PRNGKey(0), x, 1.0),
        "dae": lambda x: losses.dae(opt_denoiser, jax.random.PRNGKey(0), x, 1.0),
        "ncsn": lambda x: losses.ncsn(opt_score, jax.random.PRNGKey(0), x, LADDER),
        "ssm": lambda x: losses.ssm(opt_score, jax.random.PRNGKey(0), x, 1.0),
        "esm": lambda x: losses.esm(opt_score, x, 1.0),
        "mdsm": lambda x: losses.mdsm(lambda y, s: jnp.sum(y ** 2, -1), jax.random.PRNGKey(0), x, 1.0, 1.0),
    }[name]
    with self.assertRaises(AssertionError):
      fn(jnp.ones((5,)))
    with self.assertRaises(AssertionError):
      fn(jnp.ones((5, 3), jnp.int32))
    loss, aux = fn(jnp.ones((5, 3)))
    chex.assert_shape(loss, ())
    chex.assert_type(loss, jnp.float32)
    chex.assert_shape(aux["per_example"], (5,))


class LossJitTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_jit_equals_nojit_and_scalar_float32(self):
    x, sig, score_model, sp, energy_model, ep = _models()
    run = _all_losses(score_model, energy_model)
    rng = jax.random.PRNGKey(25)
    ref = run(sp, ep, rng, x, sig)
    out = self.variant(run)(sp, ep, rng, x, sig)
    for name, (loss, aux) in out.items():
      chex.assert_shape(loss, ())
      chex.assert_type(loss, jnp.float32)
      chex.assert_tree_all_finite(loss)
      chex.assert_shape(aux["per_example"], (8,))
      chex.assert_trees_all_close((loss, aux), ref[name], rtol=1e-5, atol=1e-5)

"""Denoising-EBM (dsm_jax.methods.debm, dsm_jax.models.unet_dae).

The losses, samplers and the Algorithm-1 step take any `params -> DAEFunctions` map, so most tests use a
small closed-form model (`toy_fns`): r(x~, s) = mu + (x~ - mu) v / (v + s^2) is the exact posterior mean
for data N(mu, v I), which makes expected energies computable. The U-Net is checked for shapes and the
parameter tree; the paper configs and the runner end to end are marked slow (each compiles Algorithm 1's step,
minutes on a 2-core CPU)."""
import dataclasses
import json
import os
import zlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dsm_jax import models, samplers, sigmas, train
from dsm_jax.methods import debm
from dsm_jax.models import unet_dae
from dsm_jax.train import NetState
from dsm_jax.validation import ConfigError

SHAPE = (4, 4, 1)
D = int(np.prod(SHAPE))
MU, VAR = 0.3, 0.25   # the toy data law N(MU, VAR I)


# ------------------------------------------------------------------------------------------ a toy model
def toy_params(key=None, d_latent: int = D, optimal: bool = True):
  """phi: (mu, log v, encoder W); gamma: decoder (V, b). optimal=True: the exact denoiser of the data
  law, identity encoder/decoder (d_latent = D)."""
  if optimal:
    return {"phi": {"mu": jnp.full(SHAPE, MU), "log_v": jnp.full(SHAPE, np.log(VAR)), "W": jnp.eye(D, d_latent)},
            "gamma": {"V": jnp.eye(d_latent, D), "b": jnp.zeros((D,))}}
  k1, k2, k3 = jax.random.split(key, 3)
  return {"phi": {"mu": jnp.zeros(SHAPE), "log_v": jnp.zeros(SHAPE),
                  "W": 0.3 * jax.random.normal(k1, (D, d_latent))},
          "gamma": {"V": 0.3 * jax.random.normal(k2, (d_latent, D)), "b": 0.1 * jax.random.normal(k3, (D,))}}


def toy_fns(params) -> unet_dae.DAEFunctions:
  phi, gamma = params["phi"], params["gamma"]

  def denoise(x, s):
    chex.assert_shape(s, (x.shape[0],))
    v = jnp.exp(phi["log_v"])
    return phi["mu"] + (x - phi["mu"]) * v / (v + s[:, None, None, None] ** 2)

  encode = lambda x, s: x.reshape(x.shape[0], -1) @ phi["W"]
  return unet_dae.DAEFunctions(
      denoise=denoise, encode=encode, denoise_and_code=lambda x, s: (denoise(x, s), encode(x, s)),
      semantic_decode=lambda z: (z @ gamma["V"] + gamma["b"]).reshape((z.shape[0],) + SHAPE))


def data(key, n):
  return MU + np.sqrt(VAR) * jax.random.normal(key, (n,) + SHAPE)


# ------------------------------------------------------------------------------------------ energies
@pytest.mark.parametrize("sigma", [0.01, 0.05, 0.3, 1.0])
def test_energies_nonnegative_and_zero_for_perfect_reconstruction(sigma):
  key = jax.random.PRNGKey(0)
  x = 2.0 * jax.random.normal(key, (64,) + SHAPE)
  f = toy_fns(toy_params(jax.random.PRNGKey(1), optimal=False))
  u = debm.texture_energy(f.denoise, key, x, sigma)
  assert u.shape == (64,) and bool(jnp.all(u >= 0)) and bool(jnp.all(u > 0))
  # a denoiser that reconstructs x exactly: U_c = 0 for every noise draw
  oracle = lambda x_noisy, s: x
  np.testing.assert_array_equal(debm.texture_energy(oracle, key, x, sigma), 0.0)
  # the identity denoiser r(y) = y: zero without noise, ||n||^2 / 2 with unit noise n (eq. 7's scaling)
  ident = lambda y, s: y
  np.testing.assert_array_equal(debm.texture_energy(ident, key, x, sigma, eps=jnp.zeros_like(x)), 0.0)
  n = jax.random.normal(jax.random.PRNGKey(2), x.shape)
  np.testing.assert_allclose(debm.texture_energy(ident, key, x, sigma, eps=n),
                             0.5 * jnp.sum(n ** 2, axis=(1, 2, 3)), rtol=1e-4)
  # eq. 8: U_s(z) = U_c(h(z)); zero when r reconstructs h(z)
  z = jax.random.normal(key, (64, 5))
  h = lambda z: jnp.tanh(z[:, :1, None, None] + jnp.zeros((1,) + SHAPE))
  np.testing.assert_allclose(debm.semantic_energy(f.denoise, h, key, z, sigma),
                             debm.texture_energy(f.denoise, key, h(z), sigma), rtol=1e-6)
  assert bool(jnp.all(debm.semantic_energy(f.denoise, h, key, z, sigma) > 0))
  np.testing.assert_array_equal(debm.semantic_energy(lambda y, s: h(z), h, key, z, sigma), 0.0)


def test_texture_energy_expectation_matches_closed_form():
  """For data N(mu, v I) and the exact denoiser, E U_c(x, s) = D v / (2 (v + s^2)): checks eq. 7's
  noise scale (eps ~ N(0, s^2 I)) and the 1/(2 s^2) factor."""
  x = data(jax.random.PRNGKey(3), 20000)
  f = toy_fns(toy_params())
  for s in (0.05, 0.3, 1.0):
    u = float(jnp.mean(debm.texture_energy(f.denoise, jax.random.PRNGKey(4), x, s)))
    assert u == pytest.approx(D * VAR / (2 * (VAR + s ** 2)), rel=0.02), s


# ------------------------------------------------------------------------------------------ Langevin
@pytest.mark.parametrize("rule,drift,var", [("paper", 1.0, 1.0 / (1.0 - 0.1 / 2)), ("half", 0.5, 1.0 / (1.0 - 0.1 / 4))])
def test_langevin_step_rules(rule, drift, var):
  """The paper's rule (eqs. 6, 15, 16) x <- x - eta grad U + sqrt(2 eta) e, and 'half', x - eta/2 grad U +
  sqrt(eta) e, through debm.STEP_RULES into samplers.energy_langevin. On U = ||x||^2 / 2 with noise_scale 0 the
  chain is x_t = (1 - drift eta)^t x_0 exactly; with noise_scale 1 the stationary variance is 2 drift eta /
  (1 - (1 - drift eta)^2) (paper: 1 / (1 - eta/2); half: 1 / (1 - eta/4))."""
  u = lambda x, k: 0.5 * jnp.sum(x ** 2, axis=(1, 2, 3))
  x0 = jax.random.normal(jax.random.PRNGKey(0), (4000,) + SHAPE) * 3.0
  eta, conv = 0.1, debm.Chains(1, 1, step_rule=rule).convention
  x, aux = samplers.energy_langevin(u, jax.random.PRNGKey(1), x0, eta, 30, conv, noise_scale=0.0, n_keep=2)
  traj, energies = aux["trajectory"], aux["energy"]
  np.testing.assert_allclose(x, x0 * (1 - drift * eta) ** 30, rtol=1e-4, atol=1e-6)
  assert traj.shape == (31, 2) + SHAPE and energies.shape == (30,)
  np.testing.assert_allclose(traj[0], x0[:2])
  assert bool(jnp.all(jnp.diff(energies) < 0))
  x, _ = samplers.energy_langevin(u, jax.random.PRNGKey(1), x0, eta, 300, conv, noise_scale=1.0)
  assert float(jnp.var(x)) == pytest.approx(var, rel=0.03)
  assert abs(float(jnp.mean(x))) < 0.02


def test_two_stage_chain_follows_the_step_rule():
  """The chains take Chains.step_rule: 'paper' at (eta_1, eta_2) is 'half' at (2 eta_1, 2 eta_2), draw for draw,
  and differs from 'half' at the same etas (the default is the paper's rule)."""
  assert debm.Chains(1, 1).step_rule == "paper"
  f = toy_fns(toy_params(jax.random.PRNGKey(5), d_latent=3, optimal=False))
  z0 = jax.random.normal(jax.random.PRNGKey(7), (16, 3))
  run = lambda ch: debm.two_stage_chain(f.denoise, f.semantic_decode, jax.random.PRNGKey(0), z0, ch)["x"]
  base = dict(latent_steps=4, pixel_steps=5, sigma_latent=0.3, sigma_pixel=0.1)
  paper = run(debm.Chains(**base, eta_latent=0.05, eta_pixel=0.005, step_rule="paper"))
  half2 = run(debm.Chains(**base, eta_latent=0.1, eta_pixel=0.01, step_rule="half"))
  half = run(debm.Chains(**base, eta_latent=0.05, eta_pixel=0.005, step_rule="half"))
  np.testing.assert_allclose(paper, half2, rtol=1e-4, atol=1e-5)
  assert float(jnp.max(jnp.abs(paper - half))) > 1e-2


# ------------------------------------------------------------------------------------------ the two-stage sampler
CH = debm.Chains(latent_steps=6, pixel_steps=9, eta_latent=0.1, eta_pixel=0.01, sigma_latent=0.3, sigma_pixel=0.1)


def _two_stage(key, n=32):
  f = toy_fns(toy_params(jax.random.PRNGKey(5), d_latent=3, optimal=False))
  z0 = jax.random.normal(jax.random.fold_in(key, 7), (n, 3))
  return jax.jit(lambda k, z: debm.two_stage_chain(f.denoise, f.semantic_decode, k, z, CH, n_keep=4))(key, z0)


def test_two_stage_shapes_and_determinism():
  a = _two_stage(jax.random.PRNGKey(0))
  assert a["z"].shape == (32, 3) and a["x0"].shape == (32,) + SHAPE and a["x"].shape == (32,) + SHAPE
  assert a["z_traj"].shape == (7, 4, 3) and a["x_traj"].shape == (10, 4) + SHAPE
  assert a["energy_latent"].shape == (6,) and a["energy_pixel"].shape == (9,)
  f = toy_fns(toy_params(jax.random.PRNGKey(5), d_latent=3, optimal=False))
  np.testing.assert_allclose(a["x0"], f.semantic_decode(a["z"]), rtol=1e-5, atol=1e-6)  # x^0 = h(z^K)
  np.testing.assert_allclose(a["x_traj"][0], a["x0"][:4], rtol=1e-6)
  np.testing.assert_allclose(a["x_traj"][-1], a["x"][:4], rtol=1e-6)
  b = _two_stage(jax.random.PRNGKey(0))
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  c = _two_stage(jax.random.PRNGKey(1))
  assert float(jnp.min(jnp.abs(a["x"] - c["x"]))) > 0 and float(jnp.mean(jnp.abs(a["z"] - c["z"]))) > 0.1


def test_pixel_chain_moves_towards_data():
  """Pixel Langevin on U_c with the exact denoiser of N(mu, v I) from far away ends near the data law."""
  f = toy_fns(toy_params())
  x0 = jnp.full((2000,) + SHAPE, 3.0)
  u_c = lambda x, k: debm.texture_energy(f.denoise, k, x, 0.3)
  x, aux = samplers.energy_langevin(u_c, jax.random.PRNGKey(0), x0, 0.02, 600)
  e = aux["energy"]
  assert float(e[-1]) < 0.3 * float(e[0])  # stationary: ~0.25 (the chain samples the smoothed law)
  assert float(jnp.mean(x)) == pytest.approx(MU, abs=0.1)


# ------------------------------------------------------------------------------------------ Algorithm 1
def test_contrastive_step_lowers_data_energy_relative_to_samples():
  """One Adam (and one SGD) update on the contrastive loss lowers U(data) - U(samples) for both energies,
  measured with the same noise draws before and after, by at least half the first-order prediction
  -<g, delta> of the update's own network (phi for the texture term, gamma for the semantic one); the
  opposite update raises it."""
  key = jax.random.PRNGKey(0)
  params = toy_params(jax.random.PRNGKey(1), d_latent=3, optimal=False)
  x_data = data(jax.random.PRNGKey(2), 256)
  x_samp = 1.5 * jax.random.normal(jax.random.PRNGKey(3), (64,) + SHAPE) - 1.0
  z_samp = 2.0 * jax.random.normal(jax.random.PRNGKey(4), (64, 3))
  loss = lambda p: debm.contrastive_loss(toy_fns, p, key, x_data, z_samp, x_samp, CH)
  dot = lambda a, b: sum(float(jnp.sum(x * y)) for x, y in zip(jax.tree_util.tree_leaves(a),
                                                                jax.tree_util.tree_leaves(b)))
  for settings in ({"optimizer": "adam", "lr": 1e-2}, {"optimizer": "sgd", "lr": 1e-3}):
    (_, before), g = jax.value_and_grad(loss, has_aux=True)(params)
    new = _params(debm.apply_updates(_nets(params, **settings), g, "cd"))
    _, after = loss(new)
    delta = jax.tree_util.tree_map(jnp.subtract, new, params)
    for term, net in (("cd_texture", "phi"), ("cd_semantic", "gamma")):
      predicted = -dot(g[net], delta[net])  # first-order decrease of the term its network's gradient carries
      assert predicted > 0, (term, predicted)
      assert float(before[term]) - float(after[term]) > 0.5 * predicted, (term, before[term], after[term], predicted)
    # and the opposite update raises it (the test can tell the sign)
    wrong = _params(debm.apply_updates(_nets(params, **settings), jax.tree_util.tree_map(jnp.negative, g), "cd"))
    assert float(loss(wrong)[1]["cd_texture"]) > float(before["cd_texture"])
    assert float(loss(wrong)[1]["cd_semantic"]) > float(before["cd_semantic"])


def test_energy_reg_bounds_the_contrastive_energies():
  """training.energy_reg = alpha adds alpha (mean U^2(data) + mean U^2(samples)) for both energies. On the
  toy, Adam on the plain contrastive loss drives every energy up without bound (the toy's U_d - U_s is
  linear in mu when v -> 0); with alpha the energies settle below 1 / (2 alpha), the samples' above the
  data's, and the loss is the contrastive terms plus the reported regulariser."""
  key = jax.random.PRNGKey(0)
  params = toy_params(jax.random.PRNGKey(1), d_latent=3, optimal=False)
  x_data = data(jax.random.PRNGKey(2), 256)
  x_samp = 1.5 * jax.random.normal(jax.random.PRNGKey(3), (64,) + SHAPE) - 1.0
  z_samp = 2.0 * jax.random.normal(jax.random.PRNGKey(4), (64, 3))
  names = ("u_c_data", "u_c_sample", "u_s_data", "u_s_sample")

  def train(alpha, n=400):
    nets, hist = _nets(params, lr=3e-2), []
    f = jax.jit(jax.value_and_grad(
        lambda p: debm.contrastive_loss(toy_fns, p, key, x_data, z_samp, x_samp, CH, alpha), has_aux=True))
    update = jax.jit(lambda n, g: debm.apply_updates(n, g, "cd"))
    for _ in range(n):
      (loss, aux), g = f(_params(nets))
      nets = update(nets, g)
      hist.append({k: float(v) for k, v in aux.items()} | {"loss": float(loss)})
    return hist

  free = train(0.0)
  assert free[-1]["energy_reg"] == 0.0
  assert min(free[-1][k] for k in names) > 1e4, free[-1]          # runaway without the regulariser
  for alpha in (1e-3, 1e-2):
    h = train(alpha)
    last, prev = h[-1], h[-100]
    assert max(last[k] for k in names) < 1 / (2 * alpha), (alpha, last)
    assert last["u_c_sample"] > last["u_c_data"] and last["u_s_sample"] > last["u_s_data"], last
    for k in names:  # settled
      assert abs(last[k] - prev[k]) < 0.05 * prev[k], (alpha, k, prev[k], last[k])
    assert last["loss"] == pytest.approx(last["cd_semantic"] + last["cd_texture"] + last["energy_reg"], rel=1e-4, abs=1e-3)
    assert last["energy_reg"] >= alpha * sum(last[k] ** 2 for k in names) * (1 - 1e-5)  # mean of squares >= square of mean


def test_updates_reach_the_right_network():
  """grad_gamma only from the semantic terms and the decoder loss, grad_phi only from the texture terms
  and the DAE loss (Algorithm 1), z enters h_gamma with stop_gradient."""
  key = jax.random.PRNGKey(0)
  params = toy_params(jax.random.PRNGKey(1), d_latent=3, optimal=False)
  x = data(key, 32)
  ladder = sigmas.geometric(1.0, 0.01, 16)
  zeros = lambda t: all(float(jnp.max(jnp.abs(l))) == 0.0 for l in jax.tree_util.tree_leaves(t))
  nonzero = lambda t: all(float(jnp.max(jnp.abs(l))) > 0.0 for l in jax.tree_util.tree_leaves(t))
  part = lambda name: jax.grad(lambda p: debm.dae_and_decoder_loss(toy_fns, p, key, x, ladder)[1][name])(params)
  g_dae, g_dec = part("dae_loss"), part("decoder_loss")
  assert zeros(g_dae["gamma"]) and nonzero(g_dae["phi"]["mu"])
  assert zeros(g_dec["phi"]) and nonzero(g_dec["gamma"])
  cd = lambda name: jax.grad(lambda p: debm.contrastive_loss(toy_fns, p, key, x, jnp.ones((8, 3)), x[:8] + 1,
                                                              CH)[1][name])(params)
  g_s, g_c = cd("cd_semantic"), cd("cd_texture")
  assert zeros(g_s["phi"]) and nonzero(g_s["gamma"])
  assert zeros(g_c["gamma"]) and nonzero(g_c["phi"]["mu"])


def test_contrastive_terms_use_the_chain_sigmas_and_the_noisy_data_code():
  """Without a ladder ('chain'): u_c_data is U_c at sigma_pixel; u_s_data is U_s at sigma_latent of the code of
  x + sigma_latent n (identity encoder/decoder: E = D (s^4 / (v + s^2) + v^2 s^2 / (v + s^2)^2) / (2 s^2); the
  clean code would give D v / (2 (v + s^2)))."""
  x = data(jax.random.PRNGKey(0), 40000)
  params = toy_params()
  s = 0.3
  for sp in (0.1, 0.5):
    ch = debm.Chains(1, 1, sigma_latent=s, sigma_pixel=sp)
    _, aux = debm.contrastive_loss(toy_fns, params, jax.random.PRNGKey(1), x, jnp.zeros((2, D)), x[:2], ch)
    assert float(aux["u_c_data"]) == pytest.approx(_u_c(sp), rel=0.02)
    assert float(aux["u_s_data"]) == pytest.approx(_u_s_noisy_code(s), rel=0.02)
    assert abs(_u_s_noisy_code(s) - _u_c(s)) > 0.08 * _u_c(s)


def _u_c(s):
  """E U_c(x, s) for x ~ N(MU, VAR I) under the exact denoiser: D v / (2 (v + s^2))."""
  return D * VAR / (2 * (VAR + s ** 2))


def _u_s_noisy_code(s):
  """E U_s(f(x + s n), s) with the identity code: D (s^4 / (v + s^2) + v^2 s^2 / (v + s^2)^2) / (2 s^2)."""
  return D * (s ** 4 / (VAR + s ** 2) + VAR ** 2 * s ** 2 / (VAR + s ** 2) ** 2) / (2 * s ** 2)


def test_contrastive_terms_use_each_examples_sigma_from_the_ladder():
  """With a ladder (Alg. 1 lines 14-17), data and samples alike get sigma_i uniform over the ladder, independently
  for U_c and U_s: the mean energies are the ladder averages of the closed forms, whatever the chains' sigmas."""
  x = data(jax.random.PRNGKey(0), 40000)
  params, ladder = toy_params(), jnp.asarray([0.1, 0.5])
  ch = debm.Chains(1, 1, sigma_latent=0.05, sigma_pixel=0.05)
  z_samples = x.reshape(len(x), -1)  # the identity code of x
  _, aux = debm.contrastive_loss(toy_fns, params, jax.random.PRNGKey(1), x, z_samples, x, ch, ladder=ladder)
  expect_c = np.mean([_u_c(s) for s in (0.1, 0.5)])
  for k in ("u_c_data", "u_c_sample"):  # the samples here are data too: same law, same levels
    assert float(aux[k]) == pytest.approx(expect_c, rel=0.03), k
  assert float(aux["u_s_data"]) == pytest.approx(np.mean([_u_s_noisy_code(s) for s in (0.1, 0.5)]), rel=0.03)
  assert float(aux["u_s_sample"]) == pytest.approx(expect_c, rel=0.03)  # clean codes z = x: U_s = U_c(x)
  assert abs(expect_c - _u_c(0.05)) > 0.1 * _u_c(0.05)  # the chains' sigma would give another value


@pytest.mark.parametrize("mode,sigma", [("per_example", None), ("chain", 0.05)])
def test_train_step_takes_the_contrastive_sigma(mode, sigma):
  """make_step(contrastive_sigma=...) reaches the contrastive terms: u_c_data of one iteration (exact toy denoiser,
  a negligible learning rate) is the ladder average (per_example) or the chain's closed form (chain)."""
  ladder = jnp.asarray([0.1, 0.5])
  ch = debm.Chains(1, 1, sigma_latent=0.05, sigma_pixel=0.05)
  step = _trainer_step(debm.make_step(toy_fns, ladder, ch, 3, 8, D, contrastive_sigma=mode))
  _, m = step(_state(toy_params(), lr=1e-12), data(jax.random.PRNGKey(2), 30000))
  expect = _u_c(sigma) if sigma else np.mean([_u_c(s) for s in (0.1, 0.5)])
  assert float(m["u_c_data"]) == pytest.approx(expect, rel=0.03)


def _nets(params, ema_rate=0.0, **settings):
  """phi and gamma as NetStates with their 'dae' and 'cd' optimizer slots (Adam 1e-3 unless settings say)."""
  return {k: NetState.from_settings(params[k], settings, 1000, ema_rate, slots=debm.SLOTS) for k in debm.NETS}


def _params(nets):
  return {k: nets[k].params for k in debm.NETS}


def _state(params, ema_rate=0.0, **settings):
  return {"step": jnp.asarray(0, jnp.int32), "key": jax.random.PRNGKey(9), "n_skipped": jnp.asarray(0, jnp.int32),
          "nets": _nets(params, ema_rate, **settings)}


def _trainer_step(step):
  """The trainer's guarded step around a method step (train.guarded_step)."""
  import types  # noqa: PLC0415
  return jax.jit(train.guarded_step(types.SimpleNamespace(step=step)))


def _slot_count(nets, slot):
  return [int(nets[n].opt_state[slot][0].count) for n in debm.NETS]  # chain(scale_by_adam)


def test_train_step_algorithm_1_and_nan_guard():
  ladder = sigmas.geometric(1.0, 0.01, 16)
  step = _trainer_step(debm.make_step(toy_fns, ladder, CH, dae_steps=3, n_chains=8, latent_dim=3))
  params = toy_params(jax.random.PRNGKey(1), d_latent=3, optimal=False)
  st = _state(params, ema_rate=0.5)
  x = data(jax.random.PRNGKey(2), 24)
  new, m = step(st, x)
  assert int(new["step"]) == 1 and int(new["n_skipped"]) == 0 and float(m["nonfinite"]) == 0.0
  for k in ("loss", "decoder_loss", "cd_texture", "cd_semantic", "u_c_data", "u_c_sample", "u_s_data", "u_s_sample"):
    assert np.isfinite(float(m[k])), k
  # L = 3 DAE updates + 1 contrastive update per iteration, per network, each objective with its own Adam moments
  assert _slot_count(new["nets"], "dae") == [3, 3] and _slot_count(new["nets"], "cd") == [1, 1]
  assert [int(new["nets"][n].count) for n in debm.NETS] == [4, 4]  # the schedule's clock counts all four
  assert float(jnp.max(jnp.abs(new["nets"]["phi"].params["mu"] - params["phi"]["mu"]))) > 0
  # EMA (train/state.py, debiased): an average of the four updated parameter values, none of the init's
  ema = new["nets"]["phi"].ema["mu"]
  assert bool(jnp.all(jnp.isfinite(ema))) and float(jnp.max(jnp.abs(ema - params["phi"]["mu"]))) > 0
  # a NaN in the batch: nothing reaches params, EMA or the optimizer states; counted and flagged
  bad, m = step(new, x.at[5, 0, 0, 0].set(jnp.nan))
  assert float(m["nonfinite"]) == 1.0 and int(bad["n_skipped"]) == 1 and int(bad["step"]) == 2
  for a, b in zip(jax.tree_util.tree_leaves(new["nets"]), jax.tree_util.tree_leaves(bad["nets"])):
    np.testing.assert_array_equal(a, b)
  # diverging chains (a huge pixel step) are caught the same way
  wild = debm.Chains(2, 3, eta_pixel=1e30, sigma_pixel=0.1)
  out, m = _trainer_step(debm.make_step(toy_fns, ladder, wild, 3, 8, 3))(st, x)
  assert float(m["nonfinite"]) == 1.0
  for a, b in zip(jax.tree_util.tree_leaves(st["nets"]), jax.tree_util.tree_leaves(out["nets"])):
    np.testing.assert_array_equal(a, b)


def test_dae_pretrain_runs_only_the_dae_steps_first():
  """dae_pretrain = 2: iterations 0 and 1 make the L = 3 DAE / decoder updates and no contrastive update (its
  Adam state untouched, its metrics NaN, algorithm1 = 0), and equal the DAE part of a full iteration; iteration 2
  is a full iteration of Algorithm 1."""
  ladder = sigmas.geometric(1.0, 0.01, 16)
  step = _trainer_step(debm.make_step(toy_fns, ladder, CH, 3, 8, 3, dae_pretrain=2))
  full = _trainer_step(debm.make_step(toy_fns, ladder, CH, 3, 8, 3))
  st = _state(toy_params(jax.random.PRNGKey(1), d_latent=3, optimal=False))
  x = data(jax.random.PRNGKey(2), 24)
  s1, m1 = step(st, x)
  assert float(m1["algorithm1"]) == 0.0 and float(m1["nonfinite"]) == 0.0
  assert np.isnan(float(m1["cd_texture"])) and np.isnan(float(m1["grad_norm_cd"]))
  assert _slot_count(s1["nets"], "dae") == [3, 3] and _slot_count(s1["nets"], "cd") == [0, 0]
  assert np.isfinite(float(m1["loss"])) and np.isfinite(float(m1["decoder_loss"]))
  # the DAE part is the full iteration's: the same 'dae' moments (the full step then also applies (c))
  f1, fm = full(st, x)
  for n in debm.NETS:
    for a, b in zip(jax.tree_util.tree_leaves(s1["nets"][n].opt_state["dae"]),
                    jax.tree_util.tree_leaves(f1["nets"][n].opt_state["dae"])):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert float(fm["algorithm1"]) == 1.0
  s2, m2 = step(s1, x)
  assert float(m2["algorithm1"]) == 0.0 and _slot_count(s2["nets"], "cd") == [0, 0]
  s3, m3 = step(s2, x)
  assert float(m3["algorithm1"]) == 1.0 and _slot_count(s3["nets"], "cd") == [1, 1]
  assert _slot_count(s3["nets"], "dae") == [9, 9]
  for k in ("cd_texture", "cd_semantic", "u_c_sample", "grad_norm_cd"):
    assert np.isfinite(float(m3[k])), k


def test_cosine_schedule_counts_all_updates_of_a_network():
  """A cosine schedule over n_iters (L + 1) updates: each iteration of Algorithm 1 advances phi's and gamma's
  clock by L + 1 = 4 (both slots), and every update uses the rate of its own count."""
  ladder = sigmas.geometric(1.0, 0.01, 16)
  step = _trainer_step(debm.make_step(toy_fns, ladder, CH, 3, 8, 3))
  params = toy_params(jax.random.PRNGKey(1), d_latent=3, optimal=False)
  n_iters = 5
  st = {"step": jnp.asarray(0, jnp.int32), "key": jax.random.PRNGKey(9), "n_skipped": jnp.asarray(0, jnp.int32),
        "nets": {k: NetState.from_settings(params[k], {"schedule": "cosine", "lr": 1e-2}, n_iters * 4,
                                           slots=debm.SLOTS) for k in debm.NETS}}
  x = data(jax.random.PRNGKey(2), 24)
  for i in range(n_iters):
    st, m = step(st, x)
    assert float(m["nonfinite"]) == 0.0
    assert [int(st["nets"][n].count) for n in debm.NETS] == [4 * (i + 1)] * 2
  lr = st["nets"]["phi"].lr
  np.testing.assert_allclose([float(lr(c)) for c in (0, 10, 19, 20)],
                             [1e-2, 1e-2 * 0.5 * (1 + np.cos(np.pi * 10 / 20)), 1e-2 * 0.5 * (1 + np.cos(np.pi * 19 / 20)),
                              0.0], rtol=1e-5, atol=1e-9)


def test_training_and_sampling_chains_take_their_own_settings():
  """training.* sets the training chains, sampling.* the sampler's (debm_mnist5k: eta_1 0.1 vs 0.001); the
  energies' sigmas (model.sigma_latent, model.sigma_pixel) are shared."""
  config = _config("debm_mnist5k")
  tr, sa = debm.chains_of(config, "training"), debm.chains_of(config, "sampling")
  assert (tr.eta_latent, sa.eta_latent) == (config.training.eta_latent, config.sampling.eta_latent) == (0.1, 0.001)
  assert dataclasses.replace(tr, eta_latent=0.0) == dataclasses.replace(sa, eta_latent=0.0)
  config.training.eta_pixel = 0.5
  config.training.latent_steps = 7
  tr = debm.chains_of(config, "training")
  assert (tr.eta_pixel, tr.latent_steps) == (0.5, 7) and (sa.eta_pixel, sa.latent_steps) == (0.01, 5)
  assert (tr.sigma_latent, tr.sigma_pixel) == (sa.sigma_latent, sa.sigma_pixel) == (0.1, 0.1)


def test_dae_adam_moments_do_not_see_the_contrastive_gradients():
  """The DAE/decoder updates keep their own Adam moments (the 'dae' slot): two iterations whose chains differ
  (so their contrastive gradients differ) leave identical 'dae' moments and different 'cd' moments; with
  one shared state the contrastive gradients (~20x the DAE's on mnist5k) would shrink every DAE step."""
  ladder = sigmas.geometric(1.0, 0.01, 16)
  params = toy_params(jax.random.PRNGKey(1), d_latent=3, optimal=False)
  x = data(jax.random.PRNGKey(2), 24)
  outs = []
  for ch in (CH, debm.Chains(6, 9, eta_latent=0.1, eta_pixel=3.0, sigma_latent=0.3, sigma_pixel=0.1)):
    new, m = _trainer_step(debm.make_step(toy_fns, ladder, ch, 3, 8, 3))(_state(params), x)
    assert float(m["nonfinite"]) == 0.0
    outs.append(({s: {n: new["nets"][n].opt_state[s] for n in debm.NETS} for s in debm.SLOTS},
                 float(m["grad_norm_cd"])))
  (o1, g1), (o2, g2) = outs
  assert max(g1, g2) > 1.2 * min(g1, g2), (g1, g2)  # the two contrastive gradients really differ
  for a, b in zip(jax.tree_util.tree_leaves(o1["dae"]), jax.tree_util.tree_leaves(o2["dae"])):
    np.testing.assert_array_equal(a, b)
  nu = lambda o: o["cd"]["phi"][0].nu  # chain(scale_by_adam)
  assert any(float(jnp.max(jnp.abs(a - b))) > 0 for a, b in zip(jax.tree_util.tree_leaves(nu(o1)),
                                                                 jax.tree_util.tree_leaves(nu(o2))))


def test_train_step_learns_the_toy_denoiser():
  """200 iterations of Algorithm 1 on N(mu, v I) data move the toy DAE's mu and v to the data's."""
  import types  # noqa: PLC0415
  ladder = sigmas.geometric(1.0, 0.05, 16)
  step = train.guarded_step(types.SimpleNamespace(step=debm.make_step(toy_fns, ladder, CH, 3, 8, 3)))
  st = _state(toy_params(jax.random.PRNGKey(1), d_latent=3, optimal=False), lr=3e-2)

  def run(st, i):
    return step(st, data(jax.random.fold_in(jax.random.PRNGKey(2), i), 48))
  st, m = jax.jit(lambda st: jax.lax.scan(run, st, jnp.arange(200)))(st)
  phi = st["nets"]["phi"].params
  assert float(jnp.mean(phi["mu"])) == pytest.approx(MU, abs=0.1)
  assert float(jnp.mean(jnp.exp(phi["log_v"]))) == pytest.approx(VAR, rel=0.4)
  # the decoder loss falls from its start to near its floor within a few steps (a rank-3 linear code of 16
  # pixels leaves ~13 x VAR = 3.25 unexplained), so compare the end with the first step
  assert float(jnp.mean(m["decoder_loss"][-20:])) < 0.6 * float(m["decoder_loss"][0])


# ------------------------------------------------------------------------------------------ the U-Net
def _fill(tmpl, seed=0, scale=0.2):
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype), tmpl)


@pytest.mark.parametrize("shape,ch_mult", [((28, 28, 1), (1, 2, 2)), ((32, 32, 3), (1, 2, 2, 2)),
                                           ((64, 64, 3), (1, 1, 2, 2, 2))], ids=["28", "32", "64"])
def test_unet_shapes(shape, ch_mult):
  net = unet_dae.UNetDAE(shape, nf=8, ch_mult=ch_mult, num_res_blocks=2, latent_dim=16)
  x, s = jnp.zeros((3,) + shape), jnp.ones((3,))
  variables = jax.eval_shape(net.init, jax.random.PRNGKey(0), x, s)
  p = unet_dae.split(variables)
  assert set(variables["params"]) == set(unet_dae.PHI_KEYS) | {unet_dae.GAMMA_KEY}
  assert jax.tree_util.tree_structure(unet_dae.merge(p)) == jax.tree_util.tree_structure(variables)
  fn = lambda name: (lambda p, *a: getattr(unet_dae.functions(net, p), name)(*a))
  z = jax.eval_shape(fn("encode"), p, x, s)
  r, z2 = jax.eval_shape(fn("denoise_and_code"), p, x, s)
  assert z.shape == (3, 16) and z2.shape == (3, 16) and r.shape == (3,) + shape
  assert jax.eval_shape(fn("denoise"), p, x, s).shape == (3,) + shape
  assert jax.eval_shape(fn("semantic_decode"), p, jax.ShapeDtypeStruct((5, 16), jnp.float32)).shape == (5,) + shape
  zs, skips = jax.eval_shape(lambda v, x, s: net.apply(v, x, s, method=unet_dae.UNetDAE.encode), variables, x, s)
  f_ = 2 ** (len(ch_mult) - 1)
  assert len(skips) == 1 + 2 * (len(ch_mult) - 1)  # conv_in + num_res_blocks per finer level, none at the coarsest
  assert min(sk.shape[1] for sk in skips) == 2 * shape[0] // f_
  with pytest.raises(AssertionError):  # chex: wrong image shape
    jax.eval_shape(fn("denoise"), p, jnp.zeros((3, 8, 8, shape[2])), s)


def test_unet_values():
  """Identity at init (zero last conv), latent codes normalised, g_beta uses both z and the skips,
  h_gamma ignores sigma and skips; deterministic given params."""
  shape = (8, 8, 1)
  net = unet_dae.UNetDAE(shape, nf=4, ch_mult=(1, 2), num_res_blocks=1, latent_dim=6)
  x, s = jax.random.normal(jax.random.PRNGKey(0), (2,) + shape), jnp.array([0.1, 1.0])
  tmpl = jax.eval_shape(net.init, jax.random.PRNGKey(0), x, s)
  v0 = _fill(tmpl)
  v0["params"]["decoder"] = jax.tree_util.tree_map(jnp.zeros_like, v0["params"]["decoder"])
  f0 = unet_dae.functions(net, unet_dae.split(v0))
  np.testing.assert_array_equal(f0.denoise(x, s), x)
  v = _fill(tmpl, seed=1)
  enc = jax.jit(lambda x, s: net.apply(v, x, s, method=unet_dae.UNetDAE.encode))
  dec = jax.jit(lambda z, sk, x, s: net.apply(v, z, sk, x, s, method=unet_dae.UNetDAE.decode))
  z, skips = enc(x, s)
  np.testing.assert_allclose(jnp.mean(z, -1), 0.0, atol=1e-5)
  np.testing.assert_allclose(jnp.var(z, -1), 1.0, rtol=1e-3)
  r = dec(z, skips, x, s)
  assert float(jnp.max(jnp.abs(dec(z + 1.0, skips, x, s) - r))) > 1e-4
  assert float(jnp.max(jnp.abs(dec(z, tuple(sk + 1.0 for sk in skips), x, s) - r))) > 1e-4
  np.testing.assert_allclose(unet_dae.functions(net, unet_dae.split(v)).denoise(x, s), r, rtol=1e-5, atol=1e-6)


def test_unet_gradients_agree_across_convolution_forms():
  """The U-Net's convolutions are models/layers.py's Conv: its three forms give the same denoiser and the same
  parameter gradients of the DAE loss (the forms' own tests are in tests/test_layers.py)."""
  from dsm_jax.models import layers  # noqa: PLC0415
  shape = (8, 8, 1)
  net = unet_dae.UNetDAE(shape, nf=4, ch_mult=(1, 2), num_res_blocks=1, latent_dim=6)
  x, s = jax.random.normal(jax.random.PRNGKey(0), (2,) + shape), jnp.array([0.1, 1.0])
  p = unet_dae.split(_fill(jax.eval_shape(net.init, jax.random.PRNGKey(0), x, s), seed=2))
  grads = {}
  for impl in layers.CONV_IMPLS:
    layers.set_default_conv_impl(impl)
    try:
      loss = lambda q: jnp.sum((unet_dae.functions(net, q).denoise(x, s) - 1.0) ** 2)
      grads[impl] = jax.grad(loss)(p)
    finally:
      layers.set_default_conv_impl("xla")
  scale = max(float(np.abs(l).max()) for l in jax.tree_util.tree_leaves(grads["xla"]))
  for impl in ("vjp", "patches"):  # (biases before a GroupNorm have gradient 0: round-off there, hence atol)
    for a, b in zip(jax.tree_util.tree_leaves(grads[impl]), jax.tree_util.tree_leaves(grads["xla"])):
      np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * scale)


def _model_config(**kw):
  cfg = models.section("unet_dae", nf=8, ch_mult=(1, 2, 2), num_res_blocks=1, latent_dim=16, latent_norm=True)
  with cfg.ignore_type():
    cfg.update(kw)
  return cfg


@pytest.mark.parametrize("kw,shape,key", [
    ({"ch_mult": (1, 2, 2, 2)}, (28, 28, 1), "model.ch_mult"),   # 28 -> 14 -> 7 -> 3.5
    ({"ch_mult": (1,)}, (28, 28, 1), "model.ch_mult"),
    ({"nf": 0}, (28, 28, 1), "model.nf"),
    ({"latent_dim": 2.5}, (28, 28, 1), "model.latent_dim"),
    ({}, (784,), "model.name"),
])
def test_get_model_rejects_bad_values(kw, shape, key):
  with pytest.raises(ConfigError) as e:
    models.build(_model_config(**kw), shape)
  assert e.value.key == key and "\n" not in str(e.value)
  assert isinstance(models.build(_model_config(), (28, 28, 1)), unet_dae.UNetDAE)


# ------------------------------------------------------------------------------------------ configs
def _config(name):
  import importlib
  return importlib.import_module(f"configs.{name}").get_config()


@pytest.mark.parametrize("name,shape,k,t", [("debm_cifar10", (32, 32, 3), 20, 90), ("debm_svhn", (32, 32, 3), 20, 90),
                                            ("debm_celeba64", (64, 64, 3), 40, 100), ("debm_mnist5k", (28, 28, 1), None, None)])
def test_configs_are_valid_at_full_size(name, shape, k, t):
  """Paper values, validation and the full-size network's parameter tree (traced, not compiled)."""
  config = _config(name)
  debm.validate(config, shape)
  if k is not None:
    assert (config.training.latent_steps, config.training.pixel_steps) == (k, t)
    assert (config.sampling.latent_steps, config.sampling.pixel_steps) == (k, t)
    assert config.training.lr == 5e-5 and config.training.dae_steps == 3 and config.model.num_scales == 128
    assert config.training.energy_reg == 0.0  # the paper has no energy regulariser
    assert (config.sampling.eta_latent, config.sampling.eta_pixel) == (0.1, 0.01)
    assert config.training.eta_latent == 0.1 and config.training.dae_pretrain == 0
    assert config.data.scale == "-11" and config.data.random_flip
  # the paper's rules in every paper-value config: eqs. 6, 15, 16's step, Alg. 1's per-example sigma; the CPU config
  # departs from both, as its docstring states and measures; Fig. 5's long pixel-only baseline everywhere
  rules = ("paper", "paper", "per_example") if k is not None else ("half", "half", "chain")
  assert (config.training.step_rule, config.sampling.step_rule, config.training.contrastive_sigma) == rules
  assert config.sampling.pixel_only_steps >= 100
  assert config.eval.ood_sigma == 0.05
  net = models.build(config.model, shape)
  tmpl = jax.eval_shape(net.init, jax.random.PRNGKey(0), jnp.zeros((1,) + shape), jnp.ones((1,)))
  assert sum(int(np.prod(l.shape)) for l in jax.tree_util.tree_leaves(tmpl)) > 10_000


@pytest.mark.parametrize("key,value", [
    ("training.batch_size", 130), ("training.dae_steps", 0), ("training.eta_pixel", 0.0),
    ("training.noise_scale", -1.0), ("sampling.eta_pixel", -0.01), ("model.sigma_latent", 0.0),
    ("sampling.final_denoise", 1), ("model.dae_weight", "sigma"), ("eval.ood_datasets", "svhn_cropped"),
    ("model.num_scales", 1), ("sampling.method", "annealed_langevin"), ("training.n_chains", -1),
    ("training.energy_reg", -1e-3), ("training.energy_reg", "1e-3"), ("sampling.latent_init", "uniform"),
    ("sampling.latent_fit_n", 1), ("training.dae_pretrain", -1), ("training.dae_pretrain", 2.5),
    ("training.eta_latent", 0.0), ("training.step_rule", "code"), ("sampling.step_rule", "full"),
    ("training.contrastive_sigma", "fixed"), ("sampling.pixel_only_steps", 0), ("sampling.pixel_only_n", -1),
])
def test_bad_values_are_one_line_config_errors(key, value):
  config = _config("debm_cifar10")
  config.sampling.latent_init = "data_gaussian"  # so that latent_fit_n is checked
  node = config
  *path, leaf = key.split(".")
  for p in path:
    node = node[p]
  with node.ignore_type():
    node[leaf] = value
  with pytest.raises(ConfigError) as e:
    debm.validate(config, (32, 32, 3))
  assert e.value.key == key and "\n" not in str(e.value)
  with pytest.raises(ConfigError, match="data.dataset"):
    debm.validate(_config("debm_cifar10"), (2,))


def test_latent_gaussian_fits_the_codes_and_draw_latents_reproduces_them():
  """sampling.latent_init = 'data_gaussian': the Gaussian of the codes of noisy training images, and
  z^0 drawn from it has that mean and covariance; without a base z^0 ~ N(0, I) (the paper)."""
  rng = np.random.default_rng(0)
  a = rng.normal(size=(12, 3))
  x = rng.normal(size=(3000, 2, 2, 3)).astype(np.float32) + 2.0
  sig = 0.3
  # a linear "encoder" that depends on sigma, so the fit must see the noisy images at that sigma
  encode = lambda xb, s: xb.reshape(xb.shape[0], -1) @ jnp.asarray(a, jnp.float32) * s[:, None] / sig
  base = debm.latent_gaussian(encode, jax.random.PRNGKey(1), x, sig, batch_size=700)
  flat = x.reshape(len(x), -1).astype(np.float64)
  mu_want = flat.mean(0) @ a
  cov_want = a.T @ (np.cov(flat, rowvar=False) + sig ** 2 * np.eye(12)) @ a
  np.testing.assert_allclose(base.mean, mu_want, atol=0.05)
  cov = np.asarray(base.basis) @ np.diag(base.eigvals) @ np.asarray(base.basis).T
  np.testing.assert_allclose(cov, cov_want, atol=0.1 * np.abs(cov_want).max())
  z = np.asarray(debm.draw_latents(jax.random.PRNGKey(2), 40000, 3, base), np.float64)
  np.testing.assert_allclose(z.mean(0), base.mean, atol=0.05)
  np.testing.assert_allclose(np.cov(z, rowvar=False), cov, atol=0.05 * np.abs(cov).max())
  z0 = np.asarray(debm.draw_latents(jax.random.PRNGKey(2), 40000, 3))
  np.testing.assert_allclose(z0.mean(0), 0.0, atol=0.03)
  np.testing.assert_allclose(np.cov(z0, rowvar=False), np.eye(3), atol=0.03)


def test_data_gaussian_latent_init_samples_from_the_codes(tmp_path):
  """The method's sampler with latent_init = 'data_gaussian' starts its chains at codes like the data's:
  with K = 0 latent steps, x^0 = h(z^0) and the decoded starts differ from the paper's N(0, I) ones."""
  from dsm_jax.data.pipeline import get_dataset
  config = tiny("debm_mnist5k", **{"data.dataset": "digits", "data.data_dir": str(tmp_path / "tfds")})
  s = config.sampling
  s.latent_steps, s.pixel_steps, s.pixel_only, s.latent_fit_n = 0, 1, False, 50
  ds = get_dataset(config.data)
  out = {}
  for init in ("normal", "data_gaussian"):
    s.latent_init = init
    method = debm.build(config, ds)
    params = method.init(jax.random.PRNGKey(0))
    out[init] = method.sample(params, jax.random.PRNGKey(3))
    assert out[init]["x"].shape == (6, 8, 8, 1) and np.all(np.isfinite(out[init]["x"]))
  assert not np.allclose(out["normal"]["semantic"], out["data_gaussian"]["semantic"])
  # determinism given the key
  again = method.sample(params, jax.random.PRNGKey(3))
  np.testing.assert_array_equal(again["x"], out["data_gaussian"]["x"])


# ------------------------------------------------------------------------------------------ end to end (slow)
def tiny(name, **over):
  config = _config(name)
  m = config.model
  m.nf, m.ch_mult, m.num_res_blocks, m.latent_dim, m.num_scales = 4, (1, 2), 1, 8, 16
  t = config.training
  t.n_iters, t.batch_size, t.n_chains, t.latent_steps, t.pixel_steps = 4, 6, 2, 2, 2
  t.log_every, t.ckpt_every, t.steps_per_call = 2, 2, 2
  config.runtime.progress = False
  t.dae_pretrain = 0
  s = config.sampling
  s.n_samples, s.batch_size, s.latent_steps, s.pixel_steps, s.n_traj = 6, 6, 2, 3, 3
  s.pixel_only_steps, s.pixel_only_n = 4, 5
  config.eval.ood_n, config.eval.ood_batch_size = 40, 40
  for k, v in over.items():
    node = config
    *path, leaf = k.split(".")
    for p in path:
      node = node[p]
    node[leaf] = v
  return config


@pytest.fixture
def stand_in_tfds(monkeypatch):
  """Random uint8 images (with labels) in place of tfds splits that are not prepared on this machine."""
  from dsm_jax.data import images

  def fake(name, split, data_dir, geo):
    rng = np.random.default_rng(zlib.crc32(f"{name}/{split}".encode()))
    h, w, c = images.NATIVE_SHAPE[name]
    n = 24 if split == "train" else 12
    x = images._apply_geometry(rng.integers(0, 256, (n, h, w, c), dtype=np.uint8), geo)
    return x, rng.integers(0, 10, n)
  images.clear_cache()
  monkeypatch.setattr(images, "_read_split", fake)
  yield
  images.clear_cache()


@pytest.mark.slow
@pytest.mark.parametrize("name,shape", [("debm_cifar10", (32, 32, 3)), ("debm_svhn", (32, 32, 3)),
                                        ("debm_celeba64", (64, 64, 3))])
def test_paper_configs_train_and_sample(tmp_path, stand_in_tfds, name, shape):
  from dsm_jax import run_lib
  wd = str(tmp_path / name)
  res = run_lib.run(tiny(name, **{"eval.enabled": False}), wd)
  assert res["step"] == 4
  x = np.load(os.path.join(wd, "samples/samples.npz"))["x"]
  po = np.load(os.path.join(wd, "samples/pixel_only.npz"))["x"]
  eq = np.load(os.path.join(wd, "samples/pixel_only_equal_cost.npz"))["x"]
  assert x.shape == eq.shape == (6,) + shape and po.shape == (5,) + shape  # sampling.pixel_only_n = 5
  assert np.all(np.isfinite(x)) and x.min() >= 0 and x.max() <= 1
  rows = [json.loads(l) for l in open(os.path.join(wd, "metrics.jsonl"))]
  assert [r["step"] for r in rows] == [2, 4] and all(np.isfinite(r["loss"]) for r in rows)


@pytest.mark.slow
def test_runner_end_to_end_digits(tmp_path):
  """Output contract on the offline 8x8 digits: checkpoints, metrics.jsonl, samples.npz (two-stage, in
  [0, 1], NHWC) beside pixel_only.npz, grids and both trajectory strips, eval.json with feature FID/KID
  for both samplers and the OOD AUROCs; --mode=sample redraws the same samples."""
  from dsm_jax import checkpoint, run_lib
  wd = str(tmp_path / "run")
  config = tiny("debm_mnist5k", **{"data.dataset": "digits", "training.dae_pretrain": 2})
  res = run_lib.run(config, wd)
  for f in ("config.json", "metrics.jsonl", "eval.json", "samples/samples.npz", "samples/pixel_only.npz",
            "samples/pixel_only_equal_cost.npz", "samples/semantic.npz", "samples/samples.png", "samples/pixel_only.png", "samples/trajectory.png",
            "samples/trajectory_pixel_only.png"):
    assert os.path.exists(os.path.join(wd, f)), f
  assert sorted(checkpoint.Checkpointer(wd).steps()) == [2, 4]
  x = np.load(os.path.join(wd, "samples/samples.npz"))["x"]
  assert x.shape == (6, 8, 8, 1) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
  traj = np.load(os.path.join(wd, "samples/trajectory.npz"))["x"]
  assert traj.shape[1:] == (3, 8, 8, 1) and traj.shape[0] == 3 + 3 + 1  # h(z) x 3, pixel steps x 3, output
  po_traj = np.load(os.path.join(wd, "samples/trajectory_pixel_only.npz"))["x"]
  assert po_traj.shape == (4 + 1 + 1, 3, 8, 8, 1)  # Fig. 5's chain: x^0 .. x^4 (pixel_only_steps = 4), output
  ev = json.load(open(os.path.join(wd, "eval.json")))
  assert ev == pytest.approx(res, nan_ok=True)
  for k in ("fid_feat", "kid_feat", "pixel_only_fid_feat", "pixel_only_kid_feat", "pixel_only_equal_cost_fid_feat",
            "auroc_noise", "auroc_constant", "auroc_interp", "ood_score_mean_in", "fid_feat_real_baseline",
            "chain_sigma_auroc_noise", "chain_sigma_auroc_constant", "chain_sigma_auroc_interp"):
    assert isinstance(ev[k], float) and np.isfinite(ev[k]), k
  assert all(0.0 <= ev[p + k] <= 1.0 for k in ("auroc_noise", "auroc_constant", "auroc_interp")
             for p in ("", "chain_sigma_"))
  assert (ev["ood_sigma"], ev["chain_sigma_ood_sigma"]) == (config.eval.ood_sigma, config.model.sigma_pixel)
  assert ev["ood_score_mean_in"] != ev["chain_sigma_ood_score_mean_in"]
  rows = [json.loads(l) for l in open(os.path.join(wd, "metrics.jsonl"))]
  assert [r["step"] for r in rows] == [2, 4]
  assert [r["algorithm1"] for r in rows] == [0.0, 1.0]  # steps 1-2 pre-train the DAE, 3-4 run Algorithm 1
  assert all(np.isfinite(r[k]) for r in rows for k in ("loss", "decoder_loss", "step_time"))
  assert np.isnan(rows[0]["cd_texture"]) and all(np.isfinite(rows[1][k]) for k in ("cd_texture", "cd_semantic"))
  os.remove(os.path.join(wd, "samples/samples.npz"))
  run_lib.run(config, wd, mode="sample")
  np.testing.assert_array_equal(np.load(os.path.join(wd, "samples/samples.npz"))["x"], x)

"""DDE (dsm_jax/methods/dde.py): the trained E_p of Gaussian data has the analytic gradient
sigma^2 grad log p_hat, the generator gradient (E4) is the exact gradient of KL(q_hat || p_hat) for Gaussians,
the grid KL estimator, and the runner end to end (output contract, resume == uninterrupted, config errors)."""
import functools
import importlib
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dsm_jax import checkpoint, models, run_lib, train
from dsm_jax.data.toy import get_toy
from dsm_jax.eval import toy as toy_eval
from dsm_jax.methods import dde
from dsm_jax.models.mlp import EnergyMLP
from dsm_jax.train import NetState
from dsm_jax.validation import ConfigError

TAU, SIGMA = 1.5, 0.5  # data N(0, TAU^2 I_2), DDE noise SIGMA


def _gauss_batches(key, n):
  return TAU * jax.random.normal(key, (n, 2))


def test_dde_loss_minimised_by_the_analytic_log_density():
  """(E2) for E(x) = -a/2 ||x||^2 on N(0, TAU^2 I): minimised at a = SIGMA^2 / (TAU^2 + SIGMA^2), i.e. at
  E = SIGMA^2 log p_hat; a constant E scores 1."""
  key = jax.random.PRNGKey(0)
  x = _gauss_batches(key, 200_000)
  loss = lambda a: float(dde.dde_loss(lambda v: -0.5 * a * jnp.sum(v ** 2, -1), jax.random.PRNGKey(1), x, SIGMA))
  a_star = SIGMA ** 2 / (TAU ** 2 + SIGMA ** 2)
  assert loss(0.0) == pytest.approx(1.0, rel=0.01)
  assert loss(a_star) == pytest.approx(1.0 - a_star, rel=0.01)  # closed form: 1 - sigma^2 / (tau^2 + sigma^2)
  assert loss(a_star) < loss(0.8 * a_star) and loss(a_star) < loss(1.2 * a_star)


def test_trained_ep_on_gaussian_data_has_the_analytic_gradient():
  """An MLP DDE trained by fit_dde on N(0, TAU^2 I): grad E matches SIGMA^2 grad log p_hat =
  -SIGMA^2 x / (TAU^2 + SIGMA^2) on data-distributed points (relative MSE < 5%); untrained it does not."""
  net = EnergyMLP(hidden=(64, 64), act="softplus", quadratic=True)
  apply = lambda p, v: -net.apply(p, v)  # the DDE is E = -u
  params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 2)))
  fit = jax.jit(lambda n, k: dde.fit_dde(apply, n, k, lambda kk: _gauss_batches(kk, 512), 1500, SIGMA,
                                         antithetic=True))
  state, _ = fit(NetState.from_settings(params, {"lr": 3e-3}), jax.random.PRNGKey(1))
  assert int(state.count) == 1500 and int(state.n_skipped) == 0
  trained = state.params
  v = np.sqrt(TAU ** 2 + SIGMA ** 2) * jax.random.normal(jax.random.PRNGKey(2), (4000, 2))
  target = -SIGMA ** 2 * v / (TAU ** 2 + SIGMA ** 2)
  rel = lambda p: float(jnp.mean(jnp.sum((jax.grad(lambda x: jnp.sum(apply(p, x)))(v) - target) ** 2, -1))
                        / jnp.mean(jnp.sum(target ** 2, -1)))
  assert rel(trained) < 0.05, rel(trained)
  assert rel(params) > 0.5


def test_generator_gradient_is_the_exact_kl_gradient_for_gaussians():
  """(E4) with the exact DDEs of p = N(m_p, tau_p^2 I) and q = N(mu, s^2 I), G(z) = mu + s z: the gradient of
  generator_loss in (mu, s) equals d KL(q_hat || p_hat) / d(mu, s) in closed form (Monte Carlo tolerance)."""
  d, n, sig = 2, 400_000, SIGMA
  m_p, tau_p = jnp.array([1.0, -0.5]), 1.2
  mu, s = jnp.array([-0.3, 0.4]), 0.7
  vp, vq = tau_p ** 2 + sig ** 2, s ** 2 + sig ** 2
  log_p = lambda v: -sig ** 2 * 0.5 * jnp.sum((v - m_p) ** 2, -1) / vp  # E = sigma^2 log p_hat + const
  log_q = lambda v: -sig ** 2 * 0.5 * jnp.sum((v - mu) ** 2, -1) / vq   # fixed at the current (mu, s)
  kz, ke = jax.random.split(jax.random.PRNGKey(3))
  z = jax.random.normal(kz, (n, d))
  eps = sig * jax.random.normal(ke, (n, d))
  g_apply = lambda p, zz: p["mu"] + p["s"] * zz
  grads = jax.grad(dde.generator_loss)({"mu": mu, "s": jnp.asarray(s)}, g_apply, log_q, log_p, z, eps, sig)
  want_mu = (mu - m_p) / vp
  want_s = d * (s / vp - s / vq)  # d/ds of KL between isotropic Gaussians of variances vq, vp (d dims)
  np.testing.assert_allclose(np.asarray(grads["mu"]), np.asarray(want_mu), atol=0.01)
  assert float(grads["s"]) == pytest.approx(float(want_s), abs=0.01)
  assert abs(float(want_s)) > 0.3  # not trivially zero: the test would catch a sign or a missing term


def test_antithetic_generator_gradient_is_unbiased_with_less_variance():
  """training.antithetic_g: (E4) averaged over eps and -eps. In D = 64 dimensions with the exact Gaussian DDEs, over
  300 batches of 32: the mean gradient in (mu, s) is the closed form either way, and the antithetic estimate's
  variance is far smaller (its eps-linear part cancels; only the z part is left)."""
  d, n, sig = 64, 32, SIGMA
  m_p, tau_p = jnp.linspace(-1.0, 1.0, d), 1.2
  mu, s = jnp.zeros(d), 0.3
  vp, vq = tau_p ** 2 + sig ** 2, s ** 2 + sig ** 2
  log_p = lambda v: -sig ** 2 * 0.5 * jnp.sum((v - m_p) ** 2, -1) / vp
  log_q = lambda v: -sig ** 2 * 0.5 * jnp.sum((v - mu) ** 2, -1) / vq
  g_apply = lambda p, zz: p["mu"] + p["s"] * zz
  params = {"mu": mu, "s": jnp.asarray(s)}

  @functools.partial(jax.jit, static_argnums=1)
  def grad_at(key, anti):
    kz, ke = jax.random.split(key)
    g = jax.grad(dde.generator_loss)(params, g_apply, log_q, log_p, jax.random.normal(kz, (n, d)),
                                     sig * jax.random.normal(ke, (n, d)), sig, anti)
    return jnp.concatenate([g["mu"], g["s"][None]])

  keys = jax.random.split(jax.random.PRNGKey(7), 300)
  plain = np.stack([np.asarray(grad_at(k, False)) for k in keys])
  anti = np.stack([np.asarray(grad_at(k, True)) for k in keys])
  want = np.concatenate([np.asarray((mu - m_p) / vp), [d * (s / vp - s / vq)]])
  for g in (plain, anti):
    se = g.std(0) / np.sqrt(len(g))
    assert np.all(np.abs(g.mean(0) - want) < 5 * se + 1e-6), np.max(np.abs(g.mean(0) - want) / se)
  assert anti.var(0).sum() < 0.5 * plain.var(0).sum()


def test_grid_kl_floor_and_sensitivity():
  """kl_grid on exact draws of the mixture is near 0; on draws re-weighted to w' (components kept whole) it is
  the weights' KL sum_k w_k log(w_k / w'_k) (the components barely overlap), far above the floor."""
  ds = get_toy("mixture")
  x = np.asarray(ds.sample(jax.random.PRNGKey(0), 20000))
  floor = toy_eval.grid_kls(x, ds, 1.0, 14.0, 128)["kl_grid"]
  pos, neg = x[x[:, 0] > 0][:10000], x[x[:, 0] < 0]
  wrong = np.concatenate([pos, neg])
  w_new = np.array([len(neg), len(pos)]) / len(wrong)  # ~ (0.29, 0.71) instead of (0.2, 0.8)
  w = np.array([0.2, 0.8])
  want = float(np.sum(w * np.log(w / w_new)))
  bad = toy_eval.grid_kls(wrong, ds, 1.0, 14.0, 128)["kl_grid"]
  assert 0 <= floor < 0.003
  assert bad == pytest.approx(want, abs=0.003) and want > 0.015
  assert toy_eval.mode_tv(x, ds) < 0.02 and toy_eval.mode_tv(wrong, ds) == pytest.approx(abs(w_new[0] - 0.2), abs=0.01)


def tiny(name: str, **over):
  config = importlib.import_module(f"configs.{name}").get_config()
  t = config.training
  m = config.model
  if name == "dde_toy":
    m.dde.hidden = m.generator.hidden = (16, 16)
    t.p_steps, t.q_steps, t.snapshot_every, t.snapshot_n, t.gen_batch_size = 10, 2, 5, 50, 64
    t.batch_size = 64
    config.sampling.n_samples = 500
    config.eval.grid_n = 64
  else:
    m.dde.hidden = m.generator.hidden = 8
    m.dde.n_layers = m.generator.n_layers = 2
    t.p_steps, t.q_steps, t.snapshot_every, t.snapshot_n, t.gen_batch_size = 10, 2, 5, 4, 8
    if t.anneal_sigmas:  # dde_mnist5k's ladder, one round and one E_p step per level
      t.anneal_rounds = t.anneal_p_steps = 1
    t.batch_size = 8
    config.sampling.n_samples = 16
    config.eval.enabled = False
  t.n_snapshots = 2
  t.n_iters, t.log_every, t.ckpt_every, t.steps_per_call, t.max_to_keep = 20, 5, 10, 5, 5
  config.runtime.progress = False
  for k, v in over.items():
    node = config
    *path, leaf = k.split(".")
    for p in path:
      node = node[p]
    node[leaf] = v
  return config


def test_fit_dde_on_batches_takes_one_step_per_batch():
  """The joint E_p update: one (E2) step on each minibatch in turn, the same as stepping by hand."""
  net = EnergyMLP(hidden=(8,), act="softplus", quadratic=False)
  apply = lambda p, v: -net.apply(p, v)
  state = NetState.from_settings(net.init(jax.random.PRNGKey(0), jnp.zeros((1, 2))), {"lr": 1e-2})
  batches = _gauss_batches(jax.random.PRNGKey(1), 30).reshape(3, 10, 2)
  key = jax.random.PRNGKey(2)
  got, loss = dde.fit_dde_on_batches(apply, state, key, batches, SIGMA)
  want, losses = state, []
  for x, k in zip(batches, jax.random.split(key, 3)):
    l, g = jax.value_and_grad(lambda q: dde.dde_loss(lambda v: apply(q, v), k, x, SIGMA))(want.params)
    want, losses = want.apply_gradients(g), losses + [float(l)]
  assert int(got.count) == 3
  chex.assert_trees_all_close(got.params, want.params, rtol=1e-5, atol=1e-6)
  assert float(loss) == pytest.approx(np.mean(losses), rel=1e-5)


@pytest.mark.parametrize("init", ["reference", "flax"])
def test_dense_net_reference_form(init):
  """The reference DenseNetModule: no quadratic term unless asked, and createLinear's initialisation
  (Xavier-uniform weights, biases U(+-sqrt(3 / n_out))); 'flax' is LeCun-normal weights and zero biases."""
  net = models.dense_net.DenseNet(hidden=64, n_layers=3, weight_init=init)
  params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 200)))["params"]
  assert "quad" not in params
  k0, b0 = params["Dense_0"]["kernel"], params["Dense_0"]["bias"]  # 200 -> 64
  if init == "reference":
    assert float(jnp.max(jnp.abs(k0))) <= np.sqrt(6 / (200 + 64)) and float(jnp.std(k0)) == pytest.approx(
        np.sqrt(2 / (200 + 64)), rel=0.05)
    assert float(jnp.max(jnp.abs(b0))) <= np.sqrt(3 / 64) and float(jnp.std(b0)) == pytest.approx(1.0 / 8, rel=0.3)
  else:
    assert float(jnp.std(k0)) == pytest.approx(np.sqrt(1 / 200), rel=0.05) and not bool(jnp.any(b0))
  quad = models.dense_net.DenseNet(hidden=8, n_layers=1, quadratic=True).init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))
  assert "quad" in quad["params"]


def test_joint_ep_training_steps_ep_in_every_round(tmp_path):
  """training.ep_training = 'joint' (the reference): E_p takes q_steps steps per round, one per minibatch of the
  round's data batch, so after 10 pre-training steps and 10 rounds of q_steps = 2 it has made 10 + 20 updates
  and keeps changing between rounds; the generator and E_q as with 'pretrain'."""
  config = tiny("dde_toy", **{"training.ep_training": "joint"})
  wd = str(tmp_path / "joint")
  run_lib.run(tiny("dde_toy", **{"training.ep_training": "joint", "training.n_iters": 15}), wd)
  s15 = _state(wd, config)[1]
  run_lib.run(config, wd)
  s20 = _state(wd, config)[1]
  nets = s20["nets"]
  assert [int(nets[k].count) for k in ("Ep", "Eq", "G")] == [10 + 2 * 10, 10 + 2 * 10, 10]
  assert not all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
                 zip(jax.tree_util.tree_leaves(s15["nets"]["Ep"].params), jax.tree_util.tree_leaves(nets["Ep"].params)))
  rows = [json.loads(l) for l in open(os.path.join(wd, "metrics.jsonl"))]
  assert all(np.isfinite(r["loss_p"]) for r in rows)


def test_toy_runner_output_contract(tmp_path):
  wd = str(tmp_path / "dde_toy")
  res = run_lib.run(tiny("dde_toy"), wd)
  for f in ("config.json", "metrics.jsonl", "eval.json", "samples/samples.npz", "samples/samples.png",
            "samples/training_rounds.png", "samples/densities.png"):
    assert os.path.exists(os.path.join(wd, f)), f
  out = {"x": np.load(os.path.join(wd, "samples/samples.npz"))["x"],
         "snapshots": np.load(os.path.join(wd, "samples/snapshots.npz"))["x"]}
  chex.assert_shape(out["x"], (500, 2))
  chex.assert_shape(out["snapshots"], (2, 50, 2))
  assert np.all(np.isfinite(out["x"]))
  assert not np.allclose(out["snapshots"][0], out["snapshots"][1])  # round 0 and round 5 differ
  ev = json.load(open(os.path.join(wd, "eval.json")))
  for k in ("kl_grid", "kl_grid_rev", "kl_grid_baseline", "mmd", "mode_tv", "weight_pos", "ep_score_rel_mse"):
    assert isinstance(ev[k], (int, float)) and np.isfinite(ev[k]), k
  rows = [json.loads(l) for l in open(os.path.join(wd, "metrics.jsonl"))]
  assert [r["step"] for r in rows] == [5, 10, 15, 20]
  # 10 pre-training steps, then one round per step; a row holds the window's mean (rounds 1..5, then 6..10)
  assert [r["round"] for r in rows] == [0, 0, 3, 8]
  assert all(np.isfinite(r["loss_p"]) and np.isfinite(r["kl_hat"]) for r in rows)
  assert rows[0]["grad_norm_g"] == 0 and rows[-1]["grad_norm_g"] > 0  # G moves only after pre-training
  assert sorted(checkpoint.Checkpointer(wd).steps()) == [10, 20] and res["step"] == 20


def test_frozen_ep_and_moving_generator(tmp_path):
  """After pre-training E_p is frozen (bit-identical between steps 15 and 20); G and E_q keep changing."""
  wd = str(tmp_path / "frozen")
  run_lib.run(tiny("dde_toy", **{"training.n_iters": 15}), wd)
  s15 = _state(wd, tiny("dde_toy"))[1]
  run_lib.run(tiny("dde_toy"), wd)
  s20 = _state(wd, tiny("dde_toy"))[1]
  same = lambda a, b: all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in
                          zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
  assert same(s15["nets"]["Ep"].params, s20["nets"]["Ep"].params)
  assert not same(s15["nets"]["G"].params, s20["nets"]["G"].params)
  assert not same(s15["nets"]["Eq"].params, s20["nets"]["Eq"].params)


@pytest.mark.parametrize("name", ["dde_mnist5k", "dde_mnist", "dde_fashion_mnist"])
def test_image_configs_train_and_sample(name, request, tmp_path):
  """Each image config with tiny DenseNets (mnist/fashion_mnist on stand-in tfds images): 20 steps, samples in
  [0, 1] NHWC, the sample grid and the strip of training rounds."""
  if name != "dde_mnist5k":  # mnist5k is the real offline data
    request.getfixturevalue("standin_tfds")
  wd = str(tmp_path / name)
  run_lib.run(tiny(name), wd)
  out = {"x": np.load(os.path.join(wd, "samples/samples.npz"))["x"],
         "snapshots": np.load(os.path.join(wd, "samples/snapshots.npz"))["x"]}
  chex.assert_shape(out["x"], (16, 28, 28, 1))
  chex.assert_shape(out["snapshots"], (2, 4, 28, 28, 1))
  assert np.all(np.isfinite(out["x"])) and out["x"].min() >= 0 and out["x"].max() <= 1
  for png in ("samples.png", "training_rounds.png"):
    assert os.path.getsize(os.path.join(wd, "samples", png)) > 0


def test_latent_std_scales_the_generator_input(tmp_path):
  """model.latent_std = c: samples are G's network at c * z for the same z draws (c = 1 is the reference),
  and a larger c spreads the untrained generator's samples."""
  from dsm_jax.data.pipeline import get_dataset
  base = tiny("dde_toy")
  ds = get_dataset(base.data)
  out = {}
  for c in (1.0, 3.0):
    config = tiny("dde_toy", **{"model.latent_std": c})
    method = dde.build(config, ds)
    params = method.init(jax.random.PRNGKey(0))
    out[c] = method.sample(params, jax.random.PRNGKey(1))["x"]
  g_net = models.build(base.model.generator, (2,), generator=True)
  z = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(1), 0), (base.sampling.n_samples, base.model.latent_dim))
  np.testing.assert_allclose(out[3.0], g_net.apply(params["G"], 3.0 * z), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out[1.0], g_net.apply(params["G"], z), rtol=1e-5, atol=1e-6)
  assert out[3.0].std(0).sum() > 1.5 * out[1.0].std(0).sum()


def _zero_network(params):
  """Every network parameter 0 and the quadratic coefficient softplus(-100) ~ 0: the network's energy is 0."""
  return jax.tree_util.tree_map_with_path(
      lambda path, v: jnp.full_like(v, -100.0) if "quad" in jax.tree_util.keystr(path) else jnp.zeros_like(v), params)


def test_gaussian_base_energy_makes_the_untrained_ep_the_exact_gaussian_dde():
  """model.base_energy = 'gaussian' on Gaussian data N(mu, s^2 I): with the network's energy at 0, E_p's score
  grad E_p / sigma^2 is the exact score of p_hat = N(mu, (s^2 + sigma^2) I) (up to the 10,000-sample fit);
  without the base the same network has score 0."""
  from dsm_jax.data.toy import GaussianMixture
  mu, s = np.array([1.0, -2.0]), 1.5
  ds = GaussianMixture(weights=(1.0,), means=(tuple(mu),), stds=(s,), name="gauss")
  x = mu + np.sqrt(s ** 2 + SIGMA ** 2) * np.asarray(jax.random.normal(jax.random.PRNGKey(3), (500, 2)))
  exact = -(x - mu) / (s ** 2 + SIGMA ** 2)
  out = {}
  for b in ("gaussian", "none"):
    config = tiny("dde_toy", **{"model.base_energy": b, "model.sigma": SIGMA})
    method = dde.build(config, ds)
    params = _zero_network(method.init(jax.random.PRNGKey(0)))
    out[b] = np.asarray(method.score(params)(jnp.asarray(x, jnp.float32), SIGMA))
  rel = np.mean(np.sum((out["gaussian"] - exact) ** 2, -1)) / np.mean(np.sum(exact ** 2, -1))
  assert rel < 1e-3, rel
  np.testing.assert_allclose(out["none"], 0.0, atol=1e-6)


def test_a_shared_base_cancels_in_the_generator_gradient():
  """(E4) with E_q + b and E_p + b for any shared b (here sigma^2 log N_hat of a Gaussian fit) is (E4) without b:
  the base changes how the DDEs are fitted, not what the generator is told."""
  from dsm_jax import gaussian_base
  key = jax.random.PRNGKey(0)
  base = gaussian_base.fit(np.asarray(jax.random.normal(key, (300, 3))) @ np.diag([2.0, 1.0, 0.3]))
  net = EnergyMLP(hidden=(16,), act="softplus", quadratic=True)
  pq, pp = net.init(jax.random.PRNGKey(1), jnp.zeros((1, 3))), net.init(jax.random.PRNGKey(2), jnp.zeros((1, 3)))
  g_apply = lambda p, z: z @ p["A"] + p["b"]
  g = {"A": jnp.eye(3) * 0.5, "b": jnp.ones(3)}
  z, eps = jax.random.normal(jax.random.PRNGKey(4), (64, 3)), SIGMA * jax.random.normal(jax.random.PRNGKey(5), (64, 3))
  b = lambda v: SIGMA ** 2 * gaussian_base.log_density(base, v, SIGMA)
  grads = {}
  for name, extra in (("plain", lambda v: 0.0), ("base", b)):
    log_q = lambda v, e=extra: -net.apply(pq, v) + e(v)
    log_p = lambda v, e=extra: -net.apply(pp, v) + e(v)
    grads[name] = jax.grad(dde.generator_loss)(g, g_apply, log_q, log_p, z, eps, SIGMA)
  chex.assert_trees_all_close(grads["plain"], grads["base"], rtol=1e-4, atol=1e-5)
  assert float(jnp.abs(grads["plain"]["A"]).max()) > 1e-3  # the gradient is not trivially 0


def test_mnist5k_config_anneals_with_the_gaussian_base(tmp_path):
  """configs/dde_mnist5k.py: Gaussian base energy, sigma ladder 4 -> 2 -> 1.4 -> 1 with 200 rounds at each of the
  first three and 900 at sigma 1; its tiny version trains through every level and ends at sigma 1."""
  c = importlib.import_module("configs.dde_mnist5k").get_config()
  assert c.model.base_energy == "gaussian" and c.model.sigma == 1.0
  t = dde.stage_table(c)
  levels, first = np.unique(t["sigma"], return_index=True)
  assert list(levels[np.argsort(first)]) == [4.0, 2.0, 1.4, 1.0]
  assert [int(np.sum(~t["pre"] & (t["sigma"] == s))) for s in (4.0, 2.0, 1.4, 1.0)] == [200, 200, 200, 900]
  wd = str(tmp_path / "gb")
  run_lib.run(tiny("dde_mnist5k"), wd)
  x = np.load(os.path.join(wd, "samples/samples.npz"))["x"]
  chex.assert_shape(x, (16, 28, 28, 1))
  assert np.all(np.isfinite(x))
  rows = [json.loads(l) for l in open(os.path.join(wd, "metrics.jsonl"))]
  assert all(np.isfinite(r["loss_p"]) and np.isfinite(r["kl_hat"]) for r in rows)
  assert rows[0]["sigma"] == pytest.approx(4.0) and rows[-1]["sigma"] == pytest.approx(1.0)


def test_paper_values():
  c = importlib.import_module("configs.dde_mnist").get_config()
  assert (c.model.sigma, c.training.lr, c.model.latent_dim) == (0.5, 1e-3, 16)
  assert (c.model.dde.hidden, c.model.dde.n_layers, c.model.dde.act) == (256, 16, "softplus")
  assert c.model.generator.out_act == "sigmoid" and c.training.q_steps == 10
  # the reference loop: E_p and E_q on every batch of 100, G every 10th, 30,000 batches, no pre-training
  assert c.training.ep_training == "joint" and c.training.p_steps == 0 and c.training.n_iters == 3000
  assert c.training.batch_size // c.training.q_steps == 100 == c.training.gen_batch_size
  for net in (c.model.dde, c.model.generator):
    assert net.weight_init == "reference" and not net.quadratic  # createLinear's init, a linear last layer
  assert c.model.latent_std == 1.0  # z ~ N(0, I)
  assert (c.model.generator.hidden, c.model.generator.n_layers) == (64, 16)  # --n_gen_hidden 64, --n_layers 16
  assert c.model.base_energy == "none"


def _state(workdir, config):
  _, method = run_lib.prepare(config, workdir)
  return train.load_latest(config, workdir, method)


def test_resume_equals_straight_run(tmp_path):
  """15 steps, then the same workdir with n_iters = 20: bit-identical params (the snapshot buffer included) and
  all three Adam states to a straight 20-step run."""
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  run_lib.run(tiny("dde_toy"), straight)
  run_lib.run(tiny("dde_toy", **{"training.n_iters": 15}), resumed)
  run_lib.run(tiny("dde_toy"), resumed)
  (s1, a), (s2, b) = _state(straight, tiny("dde_toy")), _state(resumed, tiny("dde_toy"))
  assert s1 == s2 == 20
  la = jax.tree_util.tree_leaves({k: a[k] for k in ("nets", "key")})
  lb = jax.tree_util.tree_leaves({k: b[k] for k in ("nets", "key")})
  assert len(la) == len(lb) > 0
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_stage_table_lays_out_the_sigma_ladder():
  """training.anneal_sigmas: p_steps pre-training steps and anneal_rounds rounds at the first level, then per later
  level anneal_p_steps pre-training steps and its rounds; the last level (model.sigma) runs to n_iters. Without
  annealing: the single-sigma layout (p_steps pre-training steps, then rounds)."""
  c = tiny("dde_toy", **{"model.sigma": 0.5, "training.anneal_sigmas": (2.0, 1.0), "training.anneal_rounds": 3,
                         "training.anneal_p_steps": 4, "training.n_iters": 32})
  t = dde.stage_table(c)
  want_sigma = [2.0] * 13 + [1.0] * 7 + [0.5] * 12
  want_pre = [True] * 10 + [False] * 3 + [True] * 4 + [False] * 3 + [True] * 4 + [False] * 8
  np.testing.assert_array_equal(t["sigma"], np.asarray(want_sigma, np.float32))
  np.testing.assert_array_equal(t["pre"], want_pre)
  np.testing.assert_array_equal(t["round"], np.concatenate([[0], np.cumsum(~np.asarray(want_pre))[:-1]]))
  assert t["round"][-1] == 13  # 3 + 3 + 8 rounds, the last one not yet done before step 31
  plain = dde.stage_table(tiny("dde_toy", **{"model.sigma": 0.5}))  # p_steps 10, n_iters 20
  np.testing.assert_array_equal(plain["sigma"], np.full(20, 0.5, np.float32))
  np.testing.assert_array_equal(plain["pre"], np.arange(20) < 10)
  np.testing.assert_array_equal(plain["round"], np.maximum(np.arange(20) - 10, 0))


def test_annealing_refits_ep_at_each_level_and_freezes_it_during_rounds(tmp_path):
  """anneal_sigmas = (1.0,), then sigma 0.5: steps 0-7 pre-train at 1.0, 8-11 are rounds at 1.0, 12-15 pre-train
  E_p again at 0.5 (G untouched), 16-19 are rounds at 0.5 (E_p untouched). Checked on the checkpoints of steps
  8, 12, 16, 20, and on the per-step metrics (sigma, and G's gradient norm 0 on pre-training steps)."""
  config = tiny("dde_toy", **{"model.sigma": 0.5, "training.anneal_sigmas": (1.0,), "training.anneal_rounds": 4,
                              "training.anneal_p_steps": 4, "training.p_steps": 8, "training.ckpt_every": 4,
                              "training.max_to_keep": 10, "training.log_every": 1})
  wd = str(tmp_path / "anneal")
  run_lib.run(config, wd)
  rows = [json.loads(l) for l in open(os.path.join(wd, "metrics.jsonl"))]
  assert [r["sigma"] for r in rows] == [1.0] * 12 + [0.5] * 8
  moved_g = [r["grad_norm_g"] > 0 for r in rows]
  assert moved_g == [False] * 8 + [True] * 4 + [False] * 4 + [True] * 4
  assert [r["round"] for r in rows] == [0] * 8 + [1, 2, 3, 4] + [4] * 4 + [5, 6, 7, 8]
  _, method = run_lib.prepare(config, wd)
  _, target = train.load_latest(config, wd, method)
  ckpt = checkpoint.Checkpointer(wd, max_to_keep=10)
  try:
    st = {s: train.sampling_params(ckpt._restore(s, target)[0]["nets"]) for s in (8, 12, 16, 20)}
  finally:
    ckpt.close()
  same = lambda a, b: all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in
                          zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
  assert same(st[8]["Ep"], st[12]["Ep"]) and same(st[16]["Ep"], st[20]["Ep"])  # frozen during rounds
  assert not same(st[12]["Ep"], st[16]["Ep"])  # refitted at the new level
  assert same(st[12]["G"], st[16]["G"]) and not same(st[8]["G"], st[12]["G"]) and not same(st[16]["G"], st[20]["G"])


def test_annealing_stages_must_leave_rounds_at_the_last_sigma(tmp_path):
  config = tiny("dde_toy", **{"model.sigma": 0.5, "training.anneal_sigmas": (1.0,), "training.anneal_rounds": 4,
                              "training.anneal_p_steps": 6})
  with pytest.raises(ConfigError, match="training.n_iters.*annealing stages"):  # 10 + 4 + 6 = 20 = n_iters
    run_lib.run(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_joint_batch_must_split_into_the_ep_steps(tmp_path):
  config = tiny("dde_toy", **{"training.ep_training": "joint", "training.batch_size": 63})  # q_steps = 2
  with pytest.raises(ConfigError, match="training.batch_size") as e:
    run_lib.run(config, str(tmp_path / "run"))
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("key,value,match", [
    ("model.sigma", 0.0, "model.sigma"),
    ("training.q_steps", 0, "training.q_steps"),
    ("training.p_steps", 25, "training.n_iters"),
    ("model.dde.name", "score_mlp", "model.dde.name"),
    ("model.generator.hidden", (), "model.generator.hidden"),
    ("model.dde.act", "cosh", "model.dde.act"),
    ("training.antithetic", 1, "training.antithetic"),
    ("training.antithetic_g", "yes", "training.antithetic_g"),
    ("model.latent_std", 0.0, "model.latent_std"),
    ("model.base_energy", "laplace", "model.base_energy"),
    ("training.anneal_sigmas", (3.0, 4.0), "training.anneal_sigmas"),  # must decrease
    ("training.anneal_sigmas", (1.0,), "training.anneal_sigmas"),  # below the toy's model.sigma (2.0)
    ("training.anneal_sigmas", (4.0, -1.0), "training.anneal_sigmas"),
    ("training.anneal_sigmas", (4.0, 3.0), "training.anneal_rounds"),  # the default 0 rounds per level
    ("eval.grid_n", 10, "eval.grid_n"),
    ("data.dataset", "mnist5k", "model.dde.name"),  # the toy's MLP energy cannot take images
    ("training.ep_training", "frozen", "training.ep_training"),
    ("training.p_steps", 0, "training.p_steps"),  # 'pretrain' needs pre-training steps
])
def test_bad_values_stop_before_compute(tmp_path, key, value, match):
  config = tiny("dde_toy")
  node = config
  *path, leaf = key.split(".")
  for p in path:
    node = node[p]
  with node.ignore_type():
    node[leaf] = value
  with pytest.raises(ConfigError, match=match) as e:
    run_lib.run(config, str(tmp_path / "run"))
  assert "\n" not in str(e.value)
  assert not os.path.exists(tmp_path / "run" / "checkpoints")

"""One state per network (dsm_jax/train/state.py): the optimizer update, the non-finite guard and the debiased
EMA of NetState.apply_gradients, schedules that count each network's own updates, optimizer slots, and the
trainer running two networks with different optimizers and schedules."""
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs.default import get_default_config
from dsm_jax import run_lib, train
from dsm_jax.methods.base import Method
from dsm_jax.train import NetState
from dsm_jax.train.state import net_optimizer
from dsm_jax.validation import ConfigError


def _tree_equal(a, b):
  return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in
             zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.mark.parametrize("settings", [{"optimizer": "adam", "lr": 1e-2, "beta2": 0.95},
                                      {"optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.1},
                                      {"optimizer": "sgd", "lr": 0.1, "grad_clip": 0.5},
                                      {"optimizer": "adam", "lr": 1e-2, "schedule": "cosine", "warmup": 2}])
def test_apply_gradients_is_the_optax_optimizer(settings):
  """Five updates equal optax's own optimizer with the same settings (its schedule counting the same updates)."""
  params = {"w": jnp.arange(3.0), "b": jnp.asarray(-1.0)}
  net = NetState.from_settings(params, settings, horizon=5)
  cfg = {**train.state.DEFAULTS, **settings}
  lr = train.state.learning_rate(cfg, 5)
  if cfg["optimizer"] == "adam":
    ref = optax.adam(lr, b1=cfg["beta1"], b2=cfg["beta2"], eps=cfg["adam_eps"])
  elif cfg["optimizer"] == "adamw":
    ref = optax.adamw(lr, b1=cfg["beta1"], b2=cfg["beta2"], eps=cfg["adam_eps"], weight_decay=cfg["weight_decay"])
  else:
    ref = optax.sgd(lr)
  if cfg["grad_clip"]:
    ref = optax.chain(optax.clip_by_global_norm(cfg["grad_clip"]), ref)
  p_ref, o_ref = params, ref.init(params)
  for i in range(5):
    g = jax.tree_util.tree_map(lambda v, i=i: jnp.sin(v + i) * 3.0, p_ref)
    net = net.apply_gradients(g)
    u, o_ref = ref.update(g, o_ref, p_ref)
    p_ref = optax.apply_updates(p_ref, u)
    for a, b in zip(jax.tree_util.tree_leaves(net.params), jax.tree_util.tree_leaves(p_ref)):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert int(net.count) == 5 and int(net.n_skipped) == 0


def test_non_finite_gradients_change_nothing_and_are_counted():
  net = NetState.from_settings({"w": jnp.ones(3)}, {"lr": 0.1}, ema_rate=0.9)
  net = net.apply_gradients({"w": jnp.ones(3)})
  for bad in (jnp.nan, jnp.inf):
    out = net.apply_gradients({"w": jnp.asarray([1.0, bad, 1.0])})
    assert _tree_equal((out.params, out.ema, out.opt_state, out.count), (net.params, net.ema, net.opt_state, net.count))
    assert int(out.n_skipped) == int(net.n_skipped) + 1


def test_ema_is_debiased_and_follows_the_networks_own_updates():
  """After the first update the EMA is the new parameters (the initialisation gets no weight); after t updates it
  is (1 - r) sum_s r^(t-s) p_s / (1 - r^t)."""
  r = 0.5
  net = NetState.from_settings({"w": jnp.asarray(100.0)}, {"optimizer": "sgd", "lr": 1.0}, ema_rate=r)
  seen = []
  for g in (3.0, -1.0, 2.0):
    net = net.apply_gradients({"w": jnp.asarray(g)})
    seen.append(float(net.params["w"]))
    w = np.array([r ** (len(seen) - s) for s in range(1, len(seen) + 1)])
    assert float(net.ema["w"]) == pytest.approx(float(np.sum(w * np.array(seen)) / np.sum(w)), rel=1e-6)
  assert net.sampling_params is net.ema
  assert NetState.from_settings({"w": jnp.asarray(1.0)}).sampling_params["w"] == 1.0  # no EMA: the parameters


def test_slots_keep_separate_moments_and_share_the_clock():
  net = NetState.from_settings({"w": jnp.zeros(2)}, {"lr": 0.1, "schedule": "cosine"}, horizon=4, slots=("a", "b"))
  net = net.apply_gradients({"w": jnp.ones(2)}, slot="a")
  net = net.apply_gradients({"w": jnp.ones(2)}, slot="a")
  net = net.apply_gradients({"w": -jnp.ones(2)}, slot="b")
  assert int(net.count) == 3
  assert int(net.opt_state["a"][0].count) == 2 and int(net.opt_state["b"][0].count) == 1
  assert float(net.opt_state["a"][0].mu["w"][0]) > 0 > float(net.opt_state["b"][0].mu["w"][0])


# ------------------------------------------------------------------------------------ two networks, one trainer
class _Points:
  """A 2-D dataset drawn inside the compiled step."""
  shape = (2,)
  name = "points"

  def sample(self, key, n):
    return jax.random.normal(key, (n, 2))


def _two_network_method(updates_b: int):
  """Networks 'a' and 'b', each a vector w with loss |w - 1|^2 / 2 (gradient w - 1): 'a' makes one update per
  step, 'b' makes updates_b."""

  def init(key):
    return {"a": {"w": jnp.zeros(2)}, "b": {"w": jnp.zeros(2)}}

  def step(nets, key, batch, t):
    grad = lambda n: jax.tree_util.tree_map(lambda w: w - 1.0, n.params)
    a = nets["a"].apply_gradients(grad(nets["a"]))
    b = jax.lax.fori_loop(0, updates_b, lambda i, n: n.apply_gradients(grad(n)), nets["b"])
    return {"a": a, "b": b}, {"loss": jnp.sum((a.params["w"] - 1.0) ** 2)}

  return Method(name="two", init=init, step=step, networks={"a": 1, "b": updates_b}, sample=None, evaluate=None)


def test_two_networks_train_with_their_own_schedules(tmp_path):
  """training.nets.<name> gives each network its own optimizer: 'a' SGD at a constant 0.1, 'b' SGD at 0.5 with a
  cosine decay over its own 3 n_iters updates. After n steps, a's parameters equal SGD at 0.1 for n updates and
  b's SGD with the cosine rate at b's update counts 0 .. 3n - 1: each schedule counts its network's updates."""
  config = get_default_config()
  config.method = "two"
  t = config.training
  t.n_iters, t.log_every, t.ckpt_every, t.steps_per_call, t.batch_size = 6, 3, 6, 3, 4
  t.optimizer = "sgd"
  t.lr = 0.1
  t.nets.a = net_optimizer()                               # inherits training: SGD, 0.1, constant
  t.nets.b = net_optimizer(lr=0.5, schedule="cosine")      # its own rate and schedule
  config.runtime.progress = config.runtime.tensorboard = False
  method = _two_network_method(updates_b=3)
  res = train.train(config, str(tmp_path / "run"), method, _Points())
  a, b = res.state["nets"]["a"], res.state["nets"]["b"]
  assert (int(a.count), int(b.count)) == (6, 18)
  want_a = 1.0 - 0.9 ** 6  # w <- w - 0.1 (w - 1) from 0
  np.testing.assert_allclose(a.params["w"], want_a, rtol=1e-6)
  cos = lambda k: 0.5 * 0.5 * (1 + np.cos(np.pi * k / 18))
  w = 0.0
  for k in range(18):
    w -= cos(k) * (w - 1.0)
  np.testing.assert_allclose(b.params["w"], w, rtol=1e-5)
  assert float(b.lr(18)) == pytest.approx(0.0, abs=1e-9) and float(a.lr(18)) == pytest.approx(0.1)


def test_net_sections_are_checked(tmp_path):
  config = get_default_config("dvi")
  config.training.nets.G.schedule = "linear"
  with pytest.raises(ConfigError, match=r"training\.nets\.G\.schedule"):
    train.validate(config, {"G": 1, "F": 1})
  config = get_default_config("dvi")
  config.training.nets.H = net_optimizer()
  with pytest.raises(ConfigError, match=r"training\.nets\.H: names no network"):
    train.validate(config, {"G": 1, "F": 1})


def test_the_trainer_keeps_a_step_only_if_every_network_accepted_it(tmp_path):
  """One network's non-finite gradient rolls back the whole step (the other network's update too) and counts it."""
  def init(key):
    return {"a": {"w": jnp.zeros(2)}, "b": {"w": jnp.zeros(2)}}

  def step(nets, key, batch, t):
    a = nets["a"].apply_gradients({"w": jnp.ones(2)})
    bad = jnp.where(t == 1, jnp.nan, 1.0)
    b = nets["b"].apply_gradients({"w": jnp.full(2, bad)})
    return {"a": a, "b": b}, {"loss": jnp.asarray(0.0)}

  method = types.SimpleNamespace(step=step)
  guarded = jax.jit(train.guarded_step(method))
  nets = {k: NetState.from_settings(v, {"optimizer": "sgd", "lr": 1.0}) for k, v in init(None).items()}
  state = {"step": jnp.asarray(0), "key": jax.random.PRNGKey(0), "n_skipped": jnp.asarray(0), "nets": nets}
  s1, m1 = guarded(state, jnp.zeros(1))
  s2, m2 = guarded(s1, jnp.zeros(1))
  assert float(m1["nonfinite"]) == 0.0 and float(m2["nonfinite"]) == 1.0 and int(s2["n_skipped"]) == 1
  assert _tree_equal(s2["nets"], s1["nets"]) and int(s2["step"]) == 2

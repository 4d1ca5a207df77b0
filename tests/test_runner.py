"""The experiment runner: output contract, resume == uninterrupted, determinism, sample/eval modes,
config errors before compute, the NaN guard, and every toy config end to end at tiny sizes."""
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dsm_jax import checkpoint, run_lib, train
from dsm_jax.validation import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny(name: str, **over):
  import importlib
  config = importlib.import_module(f"configs.{name}").get_config()
  t = config.training
  t.n_iters, t.batch_size, t.log_every, t.ckpt_every, t.steps_per_call = 20, 32, 5, 10, 5
  t.max_to_keep = 5
  config.runtime.progress = False
  s = config.sampling
  s.n_samples = 128
  if name == "ncsn_toy":
    s.n_steps_each = 4
  else:
    s.n_flat, s.n_decay, s.n_cool = 5, 10, 5
  m = config.model
  if "hidden" in m:
    m.hidden = (16, 16)
  for k, v in over.items():
    node = config
    *path, leaf = k.split(".")
    for p in path:
      node = node[p]
    node[leaf] = v
  return config


def params_of(workdir, config):
  """(step, the whole trainer state) of the newest checkpoint in workdir."""
  dataset, method = run_lib.prepare(config, workdir)
  return train.load_latest(config, workdir, method)


def test_output_contract(tmp_path):
  wd = str(tmp_path / "run")
  res = run_lib.run(tiny("ncsn_toy"), wd)
  for f in ("config.json", "metrics.jsonl", "eval.json", "samples/samples.npz", "samples/langevin.npz",
            "samples/samples.png", "samples/langevin.png", "samples/trajectory.png"):
    assert os.path.exists(os.path.join(wd, f)), f
  x = np.load(os.path.join(wd, "samples/samples.npz"))["x"]
  assert x.shape == (128, 2) and x.dtype == np.float32
  ev = json.load(open(os.path.join(wd, "eval.json")))
  assert ev == pytest.approx(res, nan_ok=True)
  for k in ("weight_pos_annealed", "weight_pos_langevin", "weight_pos_annealed_exact_score", "score_rel_mse",
            "mmd", "step"):
    assert k in ev and isinstance(ev[k], (int, float)), k
  assert all(isinstance(v, (int, float)) or v is None for v in ev.values())  # flat name -> number
  rows = [json.loads(l) for l in open(os.path.join(wd, "metrics.jsonl"))]
  assert [r["step"] for r in rows] == [5, 10, 15, 20]
  for r in rows:
    assert np.isfinite(r["loss"]) and r["step_time"] > 0
    assert "level_loss_0" in r and "level_loss_9" in r  # per-level losses
  assert sorted(checkpoint.Checkpointer(wd).steps()) == [10, 20]


def test_ncsn_toy_annealed_mala(tmp_path):
  """sampling.method = 'annealed_mala' on the toy: acceptance per chain and level saved beside the samples and
  reported in eval.json, for the network's score and for the exact-score reference."""
  wd = str(tmp_path / "mala")
  res = run_lib.run(tiny("ncsn_toy", **{"sampling.method": "annealed_mala"}), wd)
  acc = np.load(os.path.join(wd, "samples/mala_accept.npz"))["x"]
  assert acc.shape == (128, 10) and np.all((acc >= 0) & (acc <= 1))
  assert res["mala_accept_rate"] == pytest.approx(float(acc.mean()), rel=1e-6)
  assert 0.0 < res["mala_accept_rate_exact_score"] <= 1.0 and "mala_accept_level_9_exact_score" in res
  assert np.isfinite(res["weight_pos_annealed"])


def test_resume_equals_uninterrupted(tmp_path):
  """A run stopped after 10 of 20 steps (its newer checkpoint and metrics gone, as after a kill) and
  rerun with the same command ends with the same parameters and metrics as an uninterrupted run."""
  config = tiny("ncsn_toy")
  full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
  run_lib.run(config, full)
  run_lib.run(config, cut)
  shutil.rmtree(os.path.join(cut, "checkpoints", "20"))
  rows = open(os.path.join(cut, "metrics.jsonl")).readlines()
  with open(os.path.join(cut, "metrics.jsonl"), "w") as f:
    f.writelines(rows + ['{"step": 25, "loss": 1.0}\n', '{"step": 30, "lo'])  # rows past the checkpoint
  res = run_lib.run(config, cut)
  assert res["step"] == 20
  (s1, a), (s2, b) = params_of(full, config), params_of(cut, config)
  assert s1 == s2 == 20
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  strip = lambda rows: [{k: v for k, v in json.loads(r).items() if k not in ("step_time", "steps_per_sec")}
                        for r in rows]
  assert strip(open(os.path.join(full, "metrics.jsonl"))) == strip(open(os.path.join(cut, "metrics.jsonl")))


def test_same_seed_same_result_and_modes(tmp_path):
  config = tiny("ncsn_toy")
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  ra, rb = run_lib.run(config, a), run_lib.run(config, b)
  xa = np.load(os.path.join(a, "samples/samples.npz"))["x"]
  np.testing.assert_array_equal(xa, np.load(os.path.join(b, "samples/samples.npz"))["x"])
  drop = lambda r: {k: v for k, v in r.items() if not k.endswith("_time_s")}
  assert drop(ra) == drop(rb)
  # --mode=sample redraws the same samples from the checkpoint; --mode=eval re-evaluates them
  os.remove(os.path.join(a, "samples/samples.npz"))
  assert run_lib.run(config, a, mode="sample") == {}
  np.testing.assert_array_equal(xa, np.load(os.path.join(a, "samples/samples.npz"))["x"])
  assert drop(run_lib.run(config, a, mode="eval")) == drop(ra)


def test_sample_mode_without_checkpoint_fails(tmp_path):
  with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
    run_lib.run(tiny("ncsn_toy"), str(tmp_path / "empty"), mode="sample")


def test_checkpoint_from_other_model_shape_is_named(tmp_path):
  wd = str(tmp_path / "run")
  run_lib.run(tiny("ncsn_toy", **{"training.n_iters": 10}), wd)
  with pytest.raises(checkpoint.CheckpointError, match=r"model\.hidden"):
    run_lib.run(tiny("ncsn_toy", **{"model.hidden": (32, 32)}), wd)


@pytest.mark.parametrize("key,value,match", [
    ("model.sigma_min", -1.0, "model.sigma_min"),
    ("model.sigma_max", 0.5, "model.sigma_max"),
    ("model.num_scales", 1, "model.num_scales"),
    ("training.batch_size", 0, "training.batch_size"),
    ("training.lr", -1e-3, "training.lr"),
    ("training.nan_policy", "ignore", "training.nan_policy"),
    ("training.ema_rate", 1.0, "training.ema_rate"),
    ("sampling.convention", "mine", "sampling.convention"),
    ("sampling.init_range", (1.0, -1.0), "sampling.init_range"),
    ("method", "gan", "method"),
    ("data.dataset", "imagenet", "data.dataset"),
    ("model.hidden", (), "model.hidden"),
])
def test_bad_values_stop_before_compute(tmp_path, key, value, match):
  config = tiny("ncsn_toy")
  node = config
  *path, leaf = key.split(".")
  for p in path:
    node = node[p]
  with node.ignore_type():
    node[leaf] = value
  with pytest.raises(ValueError, match=match) as e:
    run_lib.run(config, str(tmp_path / "run"))
  assert "\n" not in str(e.value)
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_unwritable_workdir(tmp_path):
  ro = tmp_path / "ro"
  ro.mkdir()
  os.chmod(ro, 0o500)
  if os.access(ro, os.W_OK):  # root ignores permission bits: use a path under a regular file
    target = str(tmp_path / "file" / "run")
    (tmp_path / "file").write_text("x")
  else:
    target = str(ro / "run")
  with pytest.raises(run_lib.RunError, match="not writable"):
    run_lib.run(tiny("ncsn_toy"), target)


class _NaNAt:
  """A host dataset whose batch at one step is NaN."""
  shape = (2,)
  name = "nan_at"
  has_density = False

  def __init__(self, bad_step):
    self.bad_step = bad_step

  def host_batches(self, steps, batch_size):
    rng = np.random.default_rng(0)
    out = rng.normal(size=(len(steps), batch_size, 2)).astype(np.float32)
    out[np.asarray(steps) == self.bad_step] = np.nan
    return out


def _train_nan(tmp_path, policy):
  from dsm_jax.methods import ncsn
  config = tiny("ncsn_toy", **{"training.nan_policy": policy})
  ds = _NaNAt(bad_step=13)
  method = ncsn.build(config, ds)
  return config, train.train(config, str(tmp_path / policy), method, ds, progress=False)


def test_nan_stops_with_step_and_checkpoint_named(tmp_path):
  with pytest.raises(train.NonFiniteLossError, match=r"step 13.*newest good checkpoint: .*/10"):
    _train_nan(tmp_path, "stop")
  assert checkpoint.Checkpointer(str(tmp_path / "stop")).steps() == [10]


def test_nan_skip_policy_counts_and_keeps_params_finite(tmp_path):
  _, result = _train_nan(tmp_path, "skip")
  assert int(result.state["n_skipped"]) == 1 and int(result.state["step"]) == 20
  assert all(np.all(np.isfinite(np.asarray(l))) for l in jax.tree_util.tree_leaves(result.state["nets"]))


@pytest.mark.parametrize("name", ["ncsn_toy", "dsm_toy", "esm_toy", "ssm_toy", "mdsm_toy"])
def test_every_toy_config_runs(tmp_path, name):
  res = run_lib.run(tiny(name), str(tmp_path / name))
  assert np.isfinite(res["mmd"])
  assert np.isfinite(res["score_rel_mse"])
  assert res["nonfinite_x"] == 0


def test_cli_one_line_errors(tmp_path):
  def cli(*args):
    return subprocess.run([sys.executable, "-m", "experiments.run", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
  r = cli("--config=configs/ncsn_toy.py", f"--workdir={tmp_path}/w", "--config.training.n_itrs=5")
  assert r.returncode == 2
  assert r.stderr.strip() == 'error: config.training.n_itrs: unknown config key (did you mean "n_iters"?)'
  r = cli("--config=configs/ncsn_toy.py", f"--workdir={tmp_path}/w", "--config.model.sigma_min=-1")
  assert r.returncode == 2 and r.stderr.strip().splitlines() == ["error: config.model.sigma_min: must be > 0, got -1.0"]
  r = cli("--config=configs/ncsn_toy.py")
  assert r.returncode == 2 and r.stderr.strip().startswith("error: --workdir is required")
  assert not os.path.exists(f"{tmp_path}/w/checkpoints")


SHARDED_SCRIPT = r"""
import os, sys, json
import jax, numpy as np
sys.path.insert(0, {repo!r})
from tests.test_runner import tiny
from dsm_jax import run_lib, train
assert jax.local_device_count() == 8, jax.local_device_count()
out = {{}}
for n in (1, 8):
  cfg = tiny("ncsn_toy", **{{"runtime.num_devices": n, "training.batch_size": 64}})
  wd = os.path.join({tmp!r}, f"d{{n}}")
  ds, m = run_lib.prepare(cfg, wd)
  res = train.train(cfg, wd, m, ds, progress=False)
  out[n] = [np.asarray(l) for l in jax.tree_util.tree_leaves(res.params)]
  out[f"loss{{n}}"] = [json.loads(l)["loss"] for l in open(os.path.join(wd, "metrics.jsonl"))]
diff = max(float(np.max(np.abs(a - b))) for a, b in zip(out[1], out[8]))
from dsm_jax.validation import ConfigError
try:
  run_lib.prepare(tiny("ncsn_toy", **{{"training.batch_size": 12}}), os.path.join({tmp!r}, "bad"))
  bad = "no error"
except ConfigError as e:
  bad = str(e)
print(json.dumps({{"diff": diff, "l1": out["loss1"], "l8": out["loss8"], "bad": bad}}))
"""


def test_eight_devices_match_one(tmp_path):
  """Data-parallel training over 8 (simulated) devices == 1 device for the same global batch and keys."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT.format(repo=REPO, tmp=str(tmp_path))],
                     cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
  assert r.returncode == 0, r.stderr[-2000:]
  res = json.loads(r.stdout.strip().splitlines()[-1])
  assert res["diff"] < 1e-4, res
  np.testing.assert_allclose(res["l1"], res["l8"], rtol=1e-5)
  # a global batch that does not split over the devices stops before compute, naming key and fix
  assert res["bad"].startswith("config.training.batch_size: 12 is not divisible by the 8 devices"), res["bad"]


def test_ema_is_the_debiased_average_of_the_optimised_parameters():
  """train.ema_update after t updates = (1 - r) sum_s r^(t-s) p_s / (1 - r^t): no weight on the
  initialisation (the plain EMA kept r^t of it), and the same decay as the plain EMA once r^t -> 0."""
  train_lib = train
  r = 0.9
  init = {"w": jnp.asarray(100.0)}
  ps = [jnp.asarray(float(v)) for v in (1.0, 2.0, -1.0, 4.0, 0.5)]
  ema = init
  for t, p in enumerate(ps, start=1):
    ema = jax.jit(train_lib.ema_update, static_argnums=2)(ema, {"w": p}, r, t)
    w = np.array([r ** (t - s) for s in range(1, t + 1)])
    want = float(np.sum(w * np.array([float(q) for q in ps[:t]])) / np.sum(w))
    np.testing.assert_allclose(float(ema["w"]), want, rtol=1e-5)
  # late in a run the update is the plain EMA
  late = train_lib.ema_update({"w": jnp.asarray(1.0)}, {"w": jnp.asarray(0.0)}, 0.999, 200000)
  np.testing.assert_allclose(float(late["w"]), 0.999, rtol=1e-6)


def test_load_gives_the_trained_runs_method_and_parameters(tmp_path):
  """run_lib.load restores the newest checkpoint: its method, sampling with run_keys' key, redraws the very
  samples the run saved, and its evaluate reproduces eval.json."""
  config = tiny("dsm_toy")
  wd = str(tmp_path / "run")
  res = run_lib.run(config, wd)
  loaded = run_lib.load(config, wd)
  assert loaded.step == config.training.n_iters == res["step"]
  k_sample, k_eval = run_lib.run_keys(config)
  x = np.asarray(loaded.method.sample(loaded.params, k_sample)["x"])
  np.testing.assert_array_equal(x, np.load(os.path.join(wd, "samples", "samples.npz"))["x"])
  again = loaded.method.evaluate(loaded.params, k_eval, {"x": x})
  assert again["score_rel_mse"] == pytest.approx(res["score_rel_mse"], rel=1e-5)
  # the method's score is the field its evaluation measured
  from dsm_jax.eval import toy as toy_eval
  err = toy_eval.score_error(loaded.method.score(loaded.params), loaded.dataset, jax.random.split(k_eval)[0],
                             config.model.sigma)
  assert err == pytest.approx(res["score_rel_mse"], rel=1e-5)
  with pytest.raises(checkpoint.CheckpointError):
    run_lib.load(config, str(tmp_path / "empty"))


def test_mdsm_functions_energy_is_the_sampled_fields_potential():
  """method.functions(params)['energy'] is the energy whose negative gradient is the method's score."""
  from dsm_jax import data as data_lib
  from dsm_jax import methods
  config = tiny("mdsm_toy")
  dataset = data_lib.get_dataset(config.data, config.seed)
  method = methods.build(config, dataset)
  params = method.init(jax.random.PRNGKey(0))
  energy = method.functions(params)["energy"]
  x = jax.random.normal(jax.random.PRNGKey(1), (7, 2)) * 3.0
  assert energy(x).shape == (7,)
  grad = jax.grad(lambda v: jnp.sum(energy(v)))(x)
  np.testing.assert_allclose(-grad, method.score(params)(x, None), rtol=1e-5, atol=1e-6)

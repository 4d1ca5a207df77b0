"""Reliability: runs that survive SIGKILL at any moment, damaged checkpoints, malformed configs and
arrays, diverging samplers, and bounded disk use."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from dsm_jax import checkpoint, losses, run_lib, samplers, train
from dsm_jax.validation import ConfigError
from tests.test_runner import REPO, params_of, tiny

KILL_ARGS = ["--config=configs/ncsn_toy.py", "--config.training.n_iters=400",
             "--config.training.ckpt_every=20", "--config.training.log_every=10",
             "--config.training.steps_per_call=10", "--config.training.batch_size=64",
             "--config.training.max_to_keep=3", "--config.runtime.progress=False",
             "--config.sampling.n_samples=64", "--config.sampling.n_steps_each=2",
             "--config.eval.enabled=False", "--config.model.hidden=(16,16)"]


# one compiled step and one metrics row per step: slow enough (a few ms per step) to signal a run mid-way
SLOW = ["--config.training.steps_per_call=1", "--config.training.log_every=1"]


def _cli(workdir, extra=()):
  return [sys.executable, "-m", "experiments.run", f"--workdir={workdir}", *KILL_ARGS, *extra]


def _kill_config():
  config = tiny("ncsn_toy")
  t = config.training
  t.n_iters, t.ckpt_every, t.log_every, t.steps_per_call, t.batch_size, t.max_to_keep = 400, 20, 10, 10, 64, 3
  config.sampling.n_samples, config.sampling.n_steps_each = 64, 2
  config.eval.enabled = False
  return config


def _metric_rows(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return [{k: v for k, v in r.items() if k not in ("step_time", "steps_per_sec")} for r in rows]


def _last_logged(workdir):
  try:
    rows = open(os.path.join(workdir, "metrics.jsonl")).read().splitlines()
  except FileNotFoundError:
    return 0
  steps = []
  for r in rows:
    try:
      steps.append(json.loads(r)["step"])
    except (json.JSONDecodeError, KeyError):
      pass
  return max(steps, default=0)


def _kill_loop(workdir, seed, n_kills, window=(1.0, 7.0)):
  """Starts the CLI, SIGKILLs it at random moments n_kills times, then lets it finish. Returns the
  number of kills that landed while it was running and checks nothing beyond one save interval is lost."""
  rng = random.Random(seed)
  landed = 0
  for attempt in range(n_kills + 1):
    proc = subprocess.Popen(_cli(workdir), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if attempt < n_kills:
      try:
        proc.wait(timeout=rng.uniform(*window))
      except subprocess.TimeoutExpired:
        logged = _last_logged(workdir)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        landed += 1
        steps = checkpoint.Checkpointer(workdir).steps()
        newest = max(steps, default=0)
        assert newest >= logged - 20, (newest, logged)  # at most one save interval lost
        continue
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-2000:]
    if attempt < n_kills:  # it finished before the kill: later attempts are plain reruns
      continue
  return landed


def _kill_during_save(workdir, timeout=120.0):
  """Starts the CLI and SIGKILLs it the moment an orbax temporary checkpoint directory appears (a save in
  progress). Returns True if the kill landed inside a save."""
  proc = subprocess.Popen(_cli(workdir), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  ckdir = os.path.join(workdir, "checkpoints")
  start = time.time()
  try:
    while proc.poll() is None and time.time() - start < timeout:
      try:
        names = os.listdir(ckdir)
      except FileNotFoundError:
        names = []
      if any("tmp" in n for n in names):
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True
      time.sleep(0.0005)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  return False


def test_sigkill_during_checkpoint_save(tmp_path):
  wd = str(tmp_path / "killed")
  landed = sum(_kill_during_save(wd) for _ in range(2))
  assert landed >= 1
  r = subprocess.run(_cli(wd), cwd=REPO, capture_output=True, timeout=600)  # finish the run
  assert r.returncode == 0, r.stderr.decode()[-2000:]
  _check_same_as_uninterrupted(tmp_path, wd)


def _check_same_as_uninterrupted(tmp_path, workdir, extra=()):
  ref = str(tmp_path / "reference")
  r = subprocess.run(_cli(ref, extra), cwd=REPO, capture_output=True, timeout=600)
  assert r.returncode == 0, r.stderr.decode()[-2000:]
  config = _kill_config()
  (s1, a), (s2, b) = params_of(ref, config), params_of(workdir, config)
  assert s1 == s2 == 400
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert _metric_rows(ref) == _metric_rows(workdir)  # no row lost, none duplicated
  np.testing.assert_array_equal(np.load(os.path.join(ref, "samples/samples.npz"))["x"],
                                np.load(os.path.join(workdir, "samples/samples.npz"))["x"])
  leftovers = [d for d in os.listdir(os.path.join(workdir, "checkpoints")) if "tmp" in d]
  assert not leftovers, leftovers


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
  wd = str(tmp_path / "killed")
  landed = _kill_loop(wd, seed=0, n_kills=3)
  assert landed >= 1
  _check_same_as_uninterrupted(tmp_path, wd)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_sigkill_many_seeds(tmp_path, seed):
  wd = str(tmp_path / "killed")
  in_save = sum(_kill_during_save(wd) for _ in range(2))
  landed = _kill_loop(wd, seed=seed, n_kills=8, window=(0.5, 6.0))
  print(f"seed {seed}: {landed} kills at random moments + {in_save} during a checkpoint save")
  _check_same_as_uninterrupted(tmp_path, wd)


# ------------------------------------------------------------------------------- damaged checkpoints
def _state_files(workdir, step):
  root = os.path.join(workdir, "checkpoints", str(step), "state")
  files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
  return sorted(files, key=os.path.getsize, reverse=True)


@pytest.mark.parametrize("damage", ["truncate", "delete", "delete_meta"])
def test_damaged_newest_checkpoint_falls_back(tmp_path, damage, caplog):
  # a constant learning rate, so a 20-step run extended to 30 steps equals a 30-step run
  config = tiny("ncsn_toy", **{"training.n_iters": 30, "training.schedule": "constant"})
  ref = str(tmp_path / "ref")
  run_lib.run(config, ref)
  wd = str(tmp_path / "run")
  run_lib.run(tiny("ncsn_toy", **{"training.n_iters": 20, "training.schedule": "constant"}), wd)  # ckpts 10, 20
  if damage == "truncate":
    for f in _state_files(wd, 20):
      with open(f, "r+b") as fh:
        fh.truncate(max(os.path.getsize(f) // 3, 1))
  elif damage == "delete":
    for f in _state_files(wd, 20):
      os.remove(f)
  else:
    shutil.rmtree(os.path.join(wd, "checkpoints", "20", "meta"))
  with caplog.at_level("WARNING"):
    run_lib.run(config, wd)
  assert any("checkpoints/20 is damaged" in r.getMessage() for r in caplog.records)
  (_, a), (_, b) = params_of(ref, config), params_of(wd, config)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # redone from step 10, same result


def test_all_checkpoints_damaged_never_restarts_silently(tmp_path):
  wd = str(tmp_path / "run")
  run_lib.run(tiny("ncsn_toy", **{"training.n_iters": 20}), wd)
  for step in (10, 20):
    for f in _state_files(wd, step):
      os.remove(f)
  with pytest.raises(checkpoint.CheckpointError, match="every checkpoint .* is damaged"):
    run_lib.run(tiny("ncsn_toy", **{"training.n_iters": 30}), wd)


def test_max_to_keep_bounds_disk(tmp_path):
  wd = str(tmp_path / "run")
  run_lib.run(tiny("ncsn_toy", **{"training.n_iters": 40, "training.ckpt_every": 5,
                                  "training.max_to_keep": 2}), wd)
  assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["35", "40"]


# ------------------------------------------------------------------------------- samplers that diverge
def test_diverging_sampler_is_reported(tmp_path):
  config = tiny("ncsn_toy", **{"sampling.eps": 1e6, "training.n_iters": 10})
  res = run_lib.run(config, str(tmp_path / "run"))
  assert res["nonfinite_x"] > 0
  assert res["mmd"] is None or np.isfinite(res["mmd"])


# ------------------------------------------------------------------------------- malformed configs
_BAD = st.one_of(st.integers(-5, 0), st.floats(allow_nan=True, allow_infinity=True, width=32),
                 st.text(max_size=4), st.none(), st.booleans(), st.tuples(st.integers(-3, 3)))
_KEYS = ["training.n_iters", "training.batch_size", "training.lr", "training.ema_rate",
         "training.log_every", "training.ckpt_every", "training.grad_clip", "training.nan_policy",
         "model.sigma_max", "model.sigma_min", "model.num_scales", "model.hidden", "model.act",
         "sampling.eps", "sampling.n_samples", "sampling.n_steps_each", "sampling.convention",
         "sampling.init_range", "data.dataset", "seed", "method"]


@settings(max_examples=60)
@given(key=st.sampled_from(_KEYS), value=_BAD)
def test_malformed_configs_fail_with_one_line_naming_the_key(tmp_path_factory, key, value):
  config = tiny("ncsn_toy")
  node = config
  *path, leaf = key.split(".")
  for p in path:
    node = node[p]
  with node.ignore_type():
    node[leaf] = value
  try:
    run_lib.prepare(config, str(tmp_path_factory.mktemp("w")))
  except ValueError as e:  # ConfigError / DataError
    msg = str(e)
    assert "\n" not in msg and key.split(".")[-1] in msg, msg
  # values that happen to be valid (e.g. seed=0) pass: nothing else may escape


@settings(max_examples=25)
@given(shape=st.lists(st.integers(1, 4), min_size=0, max_size=1))
def test_losses_reject_unbatched_arrays(shape):
  x = jnp.zeros(tuple(shape))
  score = lambda y, s: -y
  with pytest.raises((ValueError, AssertionError)):
    losses.dsm(score, jax.random.PRNGKey(0), x, 1.0)


@settings(max_examples=20)
@given(n_bad=st.integers(0, 8))
def test_sampler_counts_nonfinite_chains(n_bad):
  x0 = jnp.zeros((8, 2)).at[:n_bad].set(jnp.nan)
  x, aux = samplers.langevin(lambda y, s: -y, jax.random.PRNGKey(0), x0, 0.1, 3)
  assert int(aux["n_nonfinite"]) == n_bad


# ------------------------------------------------------------------------------- preemption (SIGTERM / SIGINT)
def _wait_for_step(workdir, step, proc, timeout=300.0):
  start = time.time()
  while time.time() - start < timeout and proc.poll() is None:
    if _last_logged(workdir) >= step:
      return True
    time.sleep(0.05)
  return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_preemption_saves_exits_75_and_resumes_bit_identically(tmp_path, sig):
  """SIGTERM (or SIGINT) mid-run: the trainer finishes the step, saves a checkpoint at that step, exits with
  status 75 and one line saying how to resume; a second signal during the save changes nothing; the rerun ends
  bit-identical to an uninterrupted run (parameters, samples, metrics)."""
  wd = str(tmp_path / "preempted")
  proc = subprocess.Popen(_cli(wd, SLOW), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  assert _wait_for_step(wd, 15, proc), "the run did not reach step 15"
  proc.send_signal(sig)
  time.sleep(0.05)
  proc.send_signal(sig)  # a second signal while it saves
  out, err = proc.communicate(timeout=300)
  err = err.decode()
  assert proc.returncode == 75, err[-2000:]
  last = [l for l in err.splitlines() if l.strip()][-1]
  assert last.startswith("preempted: stopped by SIG") and "rerun the same command to resume" in last, last
  steps = checkpoint.Checkpointer(wd).steps()
  saved = int(last.split(" at step ")[1].split()[0])
  assert max(steps) == saved and saved < 400
  r = subprocess.run(_cli(wd, SLOW), cwd=REPO, capture_output=True, timeout=600)
  assert r.returncode == 0, r.stderr.decode()[-2000:]
  _check_same_as_uninterrupted(tmp_path, wd, SLOW)


# ------------------------------------------------------------------------------- one writer per workdir
def test_a_second_run_on_the_same_workdir_stops_naming_the_holder(tmp_path):
  """While a run trains in DIR, the same command on DIR exits 2 with one line naming the holder (pid, host,
  start, command); sample/eval beside it must write elsewhere (--outdir), which works."""
  wd = str(tmp_path / "busy")
  long = [*SLOW, "--config.training.n_iters=100000"]
  proc = subprocess.Popen(_cli(wd, long), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  try:
    assert _wait_for_step(wd, 20, proc)
    second = subprocess.run(_cli(wd, long), cwd=REPO, capture_output=True, text=True, timeout=300)
    lines = [l for l in second.stderr.splitlines() if l.strip()]
    assert second.returncode == 2 and len(lines) == 1, second.stderr[-2000:]
    assert f"process {proc.pid}" in lines[0] and "in use by" in lines[0] and "experiments/run.py" in lines[0], lines[0]
    beside = subprocess.run(_cli(wd) + ["--mode=sample"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert beside.returncode == 2 and "--outdir" in beside.stderr
    other = str(tmp_path / "other")
    elsewhere = subprocess.run(_cli(wd) + ["--mode=sample", f"--outdir={other}"], cwd=REPO, capture_output=True,
                               text=True, timeout=300)
    assert elsewhere.returncode == 0, elsewhere.stderr[-2000:]
    assert os.path.exists(os.path.join(other, "samples", "samples.npz"))
    assert not os.path.exists(os.path.join(wd, "samples"))  # nothing written into the running run's directory
  finally:
    proc.kill()
    proc.wait()


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
  """A run SIGKILLed leaves DIR/.lock naming it; the next run takes it over with a warning and finishes."""
  wd = str(tmp_path / "stale")
  proc = subprocess.Popen(_cli(wd, SLOW), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  assert _wait_for_step(wd, 20, proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert str(proc.pid) in open(os.path.join(wd, ".lock")).read()
  r = subprocess.run(_cli(wd, SLOW), cwd=REPO, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-2000:]
  assert "taking over the lock" in r.stderr and f"process {proc.pid}" in r.stderr
  assert open(os.path.join(wd, ".lock")).read() == ""  # released at the end


def test_lock_in_process(tmp_path):
  from dsm_jax.workdir import LockError, WorkdirLock
  with WorkdirLock(str(tmp_path), command=["first"]):
    with pytest.raises(LockError, match=r"in use by process \d+ on .* \(first\)"):
      WorkdirLock(str(tmp_path), command=["second"]).acquire()
  with WorkdirLock(str(tmp_path), command=["third"]):  # released: free again
    pass


# ------------------------------------------------------------------------------- writes that fail
def test_a_checkpoint_save_that_fails_is_one_line_and_keeps_the_previous_one(tmp_path, monkeypatch):
  """The disk fills while the checkpoint of step 20 is written: CheckpointError naming the directory, the cause
  (ENOSPC) and the intact checkpoint of step 10; a rerun resumes from 10 and ends as an uninterrupted run."""
  import errno
  import orbax.checkpoint as ocp
  config = tiny("ncsn_toy", **{"training.schedule": "constant"})
  wd = str(tmp_path / "full")
  real = ocp.CheckpointManager.save

  def save(self, step, *a, **k):
    if step == 20:
      raise OSError(errno.ENOSPC, "No space left on device")
    return real(self, step, *a, **k)

  monkeypatch.setattr(ocp.CheckpointManager, "save", save)
  with pytest.raises(checkpoint.CheckpointError) as e:
    run_lib.run(config, wd)
  msg = str(e.value)
  assert "\n" not in msg and "step 20" in msg and "No space left on device" in msg and "checkpoints/10" in msg, msg
  assert checkpoint.Checkpointer(wd).steps() == [10]
  monkeypatch.setattr(ocp.CheckpointManager, "save", real)
  run_lib.run(config, wd)
  ref = str(tmp_path / "ref")
  run_lib.run(config, ref)
  (_, a), (_, b) = params_of(ref, config), params_of(wd, config)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("target", ["samples", "eval.json", "metrics.jsonl"])
def test_failed_writes_of_samples_eval_and_metrics_are_one_line(tmp_path, monkeypatch, target):
  """A write that fails (permission lost mid-run) names the path and the cause in one line."""
  import builtins
  import errno
  from dsm_jax.checkpoint import WriteError
  real_open, real_savez = builtins.open, np.savez

  def failing_open(path, mode="r", *a, **k):
    if ("w" in mode or "a" in mode) and target in str(path):
      raise PermissionError(errno.EACCES, "Permission denied", str(path))
    return real_open(path, mode, *a, **k)

  def failing_savez(path, *a, **k):
    raise OSError(errno.EROFS, "Read-only file system", str(path))

  if target == "samples":
    monkeypatch.setattr(np, "savez", failing_savez)
  else:
    monkeypatch.setattr(builtins, "open", failing_open)
  with pytest.raises(WriteError) as e:
    run_lib.run(tiny("ncsn_toy"), str(tmp_path / "w"))
  msg = str(e.value)
  assert "\n" not in msg and "cannot write" in msg and target.split(".")[0] in msg, msg
  assert ("Read-only file system" if target == "samples" else "Permission denied") in msg

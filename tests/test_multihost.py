"""Multi-host data parallelism through jax.distributed.initialize: two processes on this machine
(one CPU device each, gloo collectives) train the same global batch as one process with two devices,
and end with the same parameters and samples (within float tolerance)."""
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from dsm_jax import run_lib, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config=configs/ncsn_mnist5k.py", "--config.data.dataset=digits", "--config.model.channels=(4,8,8)",
        "--config.training.n_iters=4", "--config.training.batch_size=8", "--config.training.steps_per_call=2",
        "--config.training.log_every=2", "--config.training.ckpt_every=2", "--config.runtime.progress=False",
        "--config.runtime.tensorboard=False", "--config.sampling.n_samples=4", "--config.sampling.batch_size=4",
        "--config.sampling.n_steps_each=1", "--config.eval.enabled=False"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _env():
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["JAX_PLATFORMS"] = "cpu"
  return env


@pytest.mark.slow
def test_two_processes_match_one_process_two_devices(tmp_path):
  single = str(tmp_path / "single")
  subprocess.run([sys.executable, "-m", "experiments.run", *TINY, f"--workdir={single}",
                  "--config.runtime.cpu_devices=2"], cwd=REPO, env=_env(), check=True, timeout=900)
  multi = str(tmp_path / "multi")
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, "-m", "experiments.run", *TINY, f"--workdir={multi}",
                             "--config.runtime.cpu_devices=1", "--config.runtime.distributed=True",
                             f"--config.runtime.coordinator_address=localhost:{port}",
                             "--config.runtime.num_processes=2", f"--config.runtime.process_id={i}"],
                            cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  outs = [p.communicate(timeout=900)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outs)

  import importlib
  config = importlib.import_module("configs.ncsn_mnist5k").get_config()
  config.data.dataset = "digits"
  config.model.channels = (4, 8, 8)
  config.training.batch_size = 8
  states = []
  for wd in (single, multi):
    _, method = run_lib.prepare(config, wd)
    step, state = train.load_latest(config, wd, method)
    assert step == 4
    states.append(state)
  for a, b in zip(jax.tree_util.tree_leaves(states[0]["nets"]), jax.tree_util.tree_leaves(states[1]["nets"])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
  xs = [np.load(f"{wd}/samples/samples.npz")["x"] for wd in (single, multi)]
  np.testing.assert_allclose(xs[0], xs[1], rtol=1e-3, atol=1e-4)
  assert len(open(f"{multi}/metrics.jsonl").readlines()) == 2  # one writer: process 0


@pytest.mark.slow
def test_sigterm_to_one_process_stops_every_process_at_the_same_step(tmp_path):
  """Two processes of one job; SIGTERM reaches only process 1: both agree on the step (an all-gather of the stop
  flag at each chunk boundary), process 0 saves the checkpoint there, both exit with status 75; the same command
  then resumes and finishes."""
  import signal
  import time
  wd = str(tmp_path / "multi")
  port = _free_port()
  long = [a for a in TINY if not a.startswith("--config.training.n_iters")] + ["--config.training.n_iters=400",
                                                                               "--config.training.ckpt_every=400"]

  def start(i):
    return subprocess.Popen([sys.executable, "-m", "experiments.run", *long, f"--workdir={wd}",
                             "--config.runtime.cpu_devices=1", "--config.runtime.distributed=True",
                             f"--config.runtime.coordinator_address=localhost:{port}",
                             "--config.runtime.num_processes=2", f"--config.runtime.process_id={i}"],
                            cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

  procs = [start(i) for i in range(2)]
  deadline = time.time() + 600
  while time.time() < deadline and not os.path.exists(f"{wd}/metrics.jsonl"):
    time.sleep(0.2)
  time.sleep(2.0)
  procs[1].send_signal(signal.SIGTERM)
  outs = [p.communicate(timeout=600)[0] for p in procs]
  assert [p.returncode for p in procs] == [75, 75], "\n".join(o[-2000:] for o in outs)
  steps = [int(o.split(" at step ")[1].split()[0]) for o in outs if " at step " in o]
  assert len(steps) == 2 and steps[0] == steps[1] < 400, outs
  from dsm_jax import checkpoint  # noqa: PLC0415
  assert max(checkpoint.Checkpointer(wd).steps()) == steps[0]
  port = _free_port()
  procs = [start(i) for i in range(2)]
  outs = [p.communicate(timeout=900)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), "\n".join(o[-2000:] for o in outs)

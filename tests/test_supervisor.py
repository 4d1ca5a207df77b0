"""experiments/run.py's supervisor: training on a host split into several CPU devices runs in a child process
that is rerun (resuming from its newest checkpoint) when it aborts, as XLA's CPU all-reduce once did
(docs/RESULTS.md, "Reliability")."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from dsm_jax.platform import supervise

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# aborts (SIGABRT) on its first `n` runs, counted in a file, then exits with status `code`
_FLAKY = """
import os, sys
path, n, code = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
runs = int(open(path).read()) if os.path.exists(path) else 0
open(path, "w").write(str(runs + 1))
if runs < n:
    os.abort()
sys.exit(code)
"""


def _runs(path):
  return int(open(path).read())


def test_an_aborted_child_is_rerun_until_it_finishes(tmp_path, capfd):
  count = str(tmp_path / "count")
  assert supervise([sys.executable, "-c", _FLAKY, count, "2", "0"], restarts=3) == 0
  assert _runs(count) == 3
  err = capfd.readouterr().err
  assert err.count("aborted (SIGABRT)") == 2 and "restart 2 of 3" in err


def test_restarts_run_out(tmp_path):
  count = str(tmp_path / "count")
  assert supervise([sys.executable, "-c", _FLAKY, count, "5", "0"], restarts=1) == -signal.SIGABRT
  assert _runs(count) == 2


def test_other_failures_are_not_rerun(tmp_path):
  count = str(tmp_path / "count")
  assert supervise([sys.executable, "-c", _FLAKY, count, "0", "3"], restarts=3) == 3
  assert _runs(count) == 1


def test_killing_the_supervisor_kills_the_child(tmp_path):
  pid_file = str(tmp_path / "pid")
  child = f"import os, time; open({pid_file!r}, 'w').write(str(os.getpid())); time.sleep(120)"
  boss = subprocess.Popen([sys.executable, "-c", f"import sys; from dsm_jax.platform import supervise; "
                           f"supervise([sys.executable, '-c', {child!r}], 1)"], cwd=REPO)
  deadline = time.time() + 60
  while not (os.path.exists(pid_file) and open(pid_file).read()) and time.time() < deadline:
    time.sleep(0.1)
  pid = int(open(pid_file).read())
  boss.send_signal(signal.SIGKILL)
  boss.wait(timeout=30)
  deadline = time.time() + 30
  while time.time() < deadline:
    try:
      os.kill(pid, 0)
    except ProcessLookupError:
      break
    time.sleep(0.1)
  else:
    os.kill(pid, signal.SIGKILL)
    pytest.fail("the child outlived its supervisor")


def test_cli_with_two_cpu_devices_trains_through_the_supervisor(tmp_path):
  """The real CLI with runtime.cpu_devices = 2 (supervised): trains, samples, evaluates, exits 0; a bad
  --restarts stops before any compute."""
  wd = str(tmp_path / "run")
  args = [sys.executable, "-m", "experiments.run", "--config=configs/ncsn_toy.py", f"--workdir={wd}",
          "--config.runtime.cpu_devices=2", "--config.training.n_iters=20", "--config.training.log_every=10",
          "--config.training.ckpt_every=10", "--config.sampling.n_samples=64", "--config.runtime.progress=False"]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert json.load(open(os.path.join(wd, "eval.json")))["step"] == 20
  bad = subprocess.run(args[:5] + ["--restarts=-1"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert bad.returncode == 2 and "--restarts" in bad.stderr

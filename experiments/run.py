"""The one entry point for every experiment.

    python -m experiments.run --config=configs/<name>.py --workdir=DIR [--mode=train|sample|eval]
                              [--config.training.n_iters=50 ...]

Bad flags, unknown config keys and bad values stop before any compute with one line on stderr
('error: config.<key>: ...') and exit status 2.

Training on a CPU host split into several XLA devices (config.training.cpu_devices > 1, one process) runs in a
child process that is restarted, up to --restarts times, if it aborts (SIGABRT). XLA's in-process CPU all-reduce
can stall and then abort the process ('Termination timeout for all reduce ... exceeded'; seen twice in one run
on the 2-core machine, docs/RESULTS.md, "Reliability"). The restarted command resumes from the newest checkpoint, as
any rerun does.
"""
import os
import re
import signal
import subprocess
import sys

from absl import app, flags, logging
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Path to a config file in configs/.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, samples and eval.json.")
flags.DEFINE_enum("mode", "train", ["train", "sample", "eval"],
                  "train (then sample and evaluate), sample or eval from the newest checkpoint.")
flags.DEFINE_integer("restarts", 3, "Training with training.cpu_devices > 1: rerun the command (it resumes from "
                     "the newest checkpoint) up to this many times if it aborts (SIGABRT). 0: no child process.")
FLAGS = flags.FLAGS
_CHILD_ENV = "DSM_JAX_SUPERVISED_CHILD"


def _die_with_parent() -> None:
  """In the child, before exec: its own process group (a terminal's Ctrl-C reaches only the supervisor, which
  passes it on once), and Linux's PR_SET_PDEATHSIG, so a killed supervisor does not leave it running."""
  os.setpgid(0, 0)
  try:
    import ctypes  # noqa: PLC0415
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass


def supervise(cmd: list, restarts: int, env: dict | None = None) -> int:
  """Runs cmd; while it dies of SIGABRT and restarts remain, runs it again. SIGINT and SIGTERM sent to this
  process are passed on to the child. Returns the last exit status (negative: killed by that signal)."""
  for attempt in range(restarts + 1):
    child = subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent)
    forward = lambda sig, _frame: child.send_signal(sig)  # noqa: E731
    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
      rc = child.wait()
    finally:
      for sig, handler in old.items():
        signal.signal(sig, handler)
    if rc != -signal.SIGABRT or attempt == restarts:
      return rc
    print(f"warning: the training process aborted (SIGABRT); rerunning the command, which resumes from the "
          f"newest checkpoint (restart {attempt + 1} of {restarts})", file=sys.stderr, flush=True)
  return rc


def _supervised() -> bool:
  t = FLAGS.config.training
  return (FLAGS.mode == "train" and FLAGS.restarts > 0 and os.environ.get(_CHILD_ENV) != "1"
          and int(t.get("cpu_devices", 0) or 0) > 1 and not t.get("distributed", False))


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def parse_flags(argv):
  """absl parsing with one-line errors for unknown keys and bad values."""
  try:
    rest = FLAGS(argv)
  except flags.Error as e:
    _fail(str(e).splitlines()[0])
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    text = str(e).replace("\\n", " ").replace("\\'", "'")
    overrides = [a.split("=")[0][2:] for a in argv[1:] if a.startswith("--config.")]
    key = next((k for k in overrides if re.search(r"'%s'" % re.escape(k.split(".")[-1]), text)), None)
    hint = re.search(r'Did you mean "([^"]+)"', text)
    if isinstance(e, (AttributeError, KeyError)):
      _fail(f"{key or 'config'}: unknown config key" + (f' (did you mean "{hint.group(1)}"?)' if hint else ""))
    _fail(f"{key or 'config'}: {' '.join(text.split())}")
  for name in ("config", "workdir"):
    if FLAGS[name].value is None:
      _fail(f"--{name} is required")
  if FLAGS.restarts < 0:
    _fail(f"--restarts must be >= 0, got {FLAGS.restarts}")
  return rest


def main(argv):
  del argv
  if _supervised():  # this process only watches; the child (same flags) does the work
    rc = supervise([sys.executable, "-m", "experiments.run", *sys.argv[1:]], FLAGS.restarts,
                   {**os.environ, _CHILD_ENV: "1"})
    sys.exit(rc if rc >= 0 else 128 - rc)
  from dsm_jax import checkpoint, run_lib, train
  from dsm_jax.data.pipeline import DataError
  from dsm_jax.validation import ConfigError

  logging.set_verbosity(logging.WARNING)
  try:
    train.setup_devices(FLAGS.config)
    train.setup_distributed(FLAGS.config)
    results = run_lib.run(FLAGS.config, FLAGS.workdir, FLAGS.mode)
  except (ConfigError, DataError, run_lib.RunError, checkpoint.CheckpointError,
          train.NonFiniteLossError) as e:
    _fail(str(e))
  if results:
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in results.items()))


def cli(argv: list) -> int:
  """Runs the command line argv (argv[0] is the program name) in this process, as `python -m experiments.run`
  does, and returns its exit status. For tests and notebooks."""
  FLAGS.unparse_flags()
  for name in [n for n in FLAGS if n.startswith("config.")]:  # a previous call's override flags
    delattr(FLAGS, name)
  saved, sys.argv = sys.argv, list(argv)  # ml_collections reads --config.* overrides from sys.argv
  try:
    main(parse_flags(list(argv)))
  except SystemExit as e:
    return 0 if e.code is None else int(e.code)
  finally:
    sys.argv = saved
  return 0


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)

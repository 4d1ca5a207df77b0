"""The one entry point for every experiment.

    python -m experiments.run --config=configs/<name>.py --workdir=DIR [--mode=train|sample|eval|inpaint|loglik]
                              [--outdir=OTHER] [--config.training.n_iters=50 ...]
    python -m experiments.run --config=configs/<name>.py --mode=fid_stats   (the FID protocol's reference statistics)

Every mistake on the command line (a missing or misspelled config file, a config that does not load, an
unknown key, a bad value, a mode that needs a checkpoint where there is none, a workdir another run holds)
stops before any compute with one line on stderr ('error: ...') and exit status 2. SIGTERM or SIGINT during
training saves a checkpoint at the step reached and exits with status 75 (rerun the same command to resume).

Where the platform asks for it (dsm_jax/platform.py: training on a CPU host split into several XLA devices),
training runs in a child process that is rerun, resuming, if XLA aborts it (up to --restarts times).
"""
import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Path to a config file in configs/.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, samples and eval.json.")
flags.DEFINE_enum("mode", "train", ["train", "sample", "eval", "fid_stats", "inpaint", "loglik"],
                  "train (then sample and evaluate); sample, eval, inpaint (complete masked test images) or loglik "
                  "(test log-likelihood by annealed importance sampling) from the newest checkpoint; fid_stats: the "
                  "FID protocol's reference Inception statistics of the config's data (cached beside the data).")
flags.DEFINE_string("outdir", None, "--mode=sample|eval: write samples and eval.json here instead of --workdir "
                    "(needed beside a run that is still training in --workdir).")
flags.DEFINE_integer("restarts", 3, "Supervised training (dsm_jax/platform.py): rerun the command (it resumes "
                     "from the newest checkpoint) up to this many times if it aborts (SIGABRT). 0: no child process.")
FLAGS = flags.FLAGS
USAGE = 2


def _fail(message: str) -> None:
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
  sys.exit(USAGE)


def _config_path(argv) -> str:
  for i, a in enumerate(argv):
    if a.startswith("--config="):
      return a.split("=", 1)[1]
    if a == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return ""


def _load_error(path: str, e: BaseException) -> str:
  """One line for a config file that does not load."""
  if path and not os.path.isfile(path):
    return f"--config={path}: no such file (the configs are in configs/, e.g. --config=configs/ncsn_toy.py)"
  cause = e
  while cause.__cause__ is not None or cause.__context__ is not None:
    nxt = cause.__cause__ or cause.__context__
    if isinstance(nxt, flags.Error) or nxt is cause:
      break
    cause = nxt
  if isinstance(cause, SyntaxError):
    return f"--config={path}: syntax error at line {cause.lineno}: {cause.msg}"
  text = " ".join(str(cause).split()) or type(cause).__name__
  return f"--config={path}: {type(cause).__name__}: {text[:300]}"


def parse_flags(argv):
  """absl parsing with one-line errors for unloadable config files, unknown keys and bad values."""
  path = _config_path(argv)
  try:
    rest = FLAGS(argv)
  except flags.UnrecognizedFlagError as e:
    name = getattr(e, "flagname", "") or ""
    if name.startswith("config."):
      key = name[len("config."):]
      hint = re.search(r"Did you mean: ([\w.]+)", str(e))
      _fail(f"config.{key}: unknown config key" + (f' (did you mean "{hint.group(1)}"?)' if hint else ""))
    _fail(str(e).splitlines()[0])
  except flags.Error as e:
    text = " ".join(str(e).split())
    override = re.search(r"--?config\.([\w.]+)", text) or re.search(r"flag --config\.([\w.]+)", text)
    if override is None and ("--config" in text or "config_file" in text or "load" in text.lower()):
      _fail(_load_error(path, e))
    key = next((a.split("=")[0][len("--config."):] for a in argv[1:] if a.startswith("--config.")
                and a.split("=")[0][len("--config."):] in text), None)
    if key is not None:
      _fail(f"config.{key}: {_override_error(text)}")
    _fail(text.split(": ", 1)[-1] if text.startswith("flags parsing error") else text)
  except (AttributeError, KeyError) as e:  # an override of a key that does not exist
    text = " ".join(str(e).replace("\\n", " ").replace("\\'", "'").split())
    overrides = [a.split("=")[0][len("--config."):] for a in argv[1:] if a.startswith("--config.")]
    key = next((k for k in overrides if any(re.search(r"'%s'" % re.escape(part), text) for part in k.split("."))),
               None)
    hint = re.search(r'Did you mean "([^"]+)"', text)
    if key is None:
      _fail(f"--config={path}: {text[:300]}")
    _fail(f"config.{key}: unknown config key" + (f' (did you mean "{hint.group(1)}"?)' if hint else ""))
  except (TypeError, ValueError) as e:
    text = " ".join(str(e).replace("\\n", " ").replace("\\'", "'").split())
    overrides = [a.split("=")[0][len("--config."):] for a in argv[1:] if a.startswith("--config.")]
    key = next((k for k in overrides if re.search(r"'%s'" % re.escape(k.split(".")[-1]), text)), None)
    _fail(f"config.{key}: {text[:300]}" if key else _load_error(path, e))
  except Exception as e:  # noqa: BLE001 - a config file whose get_config raises: one line, not a traceback
    _fail(_load_error(path, e))
  if FLAGS["config"].value is None:
    _fail("--config is required, e.g. --config=configs/ncsn_toy.py")
  try:
    FLAGS.config.keys()  # a config file that did not load raises here (ml_collections defers the error)
  except Exception as e:  # noqa: BLE001
    _fail(_load_error(path, e))
  if not FLAGS.workdir and FLAGS.mode != "fid_stats":
    _fail("--workdir is required, e.g. --workdir=runs/ncsn_toy")
  if FLAGS.restarts < 0:
    _fail(f"--restarts must be >= 0, got {FLAGS.restarts}")
  if FLAGS.outdir is not None and FLAGS.mode == "train":
    _fail("--outdir is for --mode=sample or eval; training writes into --workdir")
  return rest


def _override_error(text: str) -> str:
  text = re.sub(r"^.*?flag --config\.[\w.]+=\S*: ", "", text)
  return text[:300]


def main(argv):
  del argv
  from dsm_jax import platform  # noqa: PLC0415

  config = FLAGS.config
  if platform.supervised(config, FLAGS.mode, FLAGS.restarts):  # this process watches; a child does the work
    rc = platform.supervise([sys.executable, "-m", "experiments.run", *sys.argv[1:]], FLAGS.restarts,
                            {**os.environ, platform.SUPERVISED_CHILD_ENV: "1"})
    sys.exit(rc if rc >= 0 else 128 - rc)
  from dsm_jax import checkpoint, run_lib, train  # noqa: PLC0415
  from dsm_jax.data.pipeline import DataError  # noqa: PLC0415
  from dsm_jax.validation import ConfigError  # noqa: PLC0415
  from dsm_jax.workdir import LockError  # noqa: PLC0415

  logging.set_verbosity(logging.WARNING)
  try:
    platform.setup(config)
    results = run_lib.run(config, FLAGS.workdir, FLAGS.mode, outdir=FLAGS.outdir)
  except train.Preempted as e:
    print(f"preempted: {e}", file=sys.stderr)
    sys.exit(train.PREEMPTED)
  except (ConfigError, DataError, run_lib.RunError, checkpoint.CheckpointError, checkpoint.WriteError, LockError,
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

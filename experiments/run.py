"""The one entry point for every experiment.

    python -m experiments.run --config=configs/<name>.py --workdir=DIR [--mode=train|sample|eval]
                              [--config.training.n_iters=50 ...]

Bad flags, unknown config keys and bad values stop before any compute with one line on stderr
('error: config.<key>: ...') and exit status 2.
"""
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Path to a config file in configs/.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, samples and eval.json.")
flags.DEFINE_enum("mode", "train", ["train", "sample", "eval"],
                  "train (then sample and evaluate), sample or eval from the newest checkpoint.")
FLAGS = flags.FLAGS


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
  return rest


def main(argv):
  del argv
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


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)

"""The one entry point for every experiment.

    python -m experiments.run --config=configs/<name>.py --workdir=DIR [--mode=train|sample|eval]
                              [--config.training.n_iters=50 ...]
"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Path to a config file in configs/.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, samples and eval.json.")
flags.DEFINE_enum("mode", "train", ["train", "sample", "eval"],
                  "train (then sample and evaluate), sample or eval from the newest checkpoint.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from dsm_jax import checkpoint, run_lib, train
  from dsm_jax.data.pipeline import DataError
  from dsm_jax.validation import ConfigError

  logging.set_verbosity(logging.WARNING)
  try:
    results = run_lib.run(FLAGS.config, FLAGS.workdir, FLAGS.mode)
  except (ConfigError, DataError, run_lib.RunError, checkpoint.CheckpointError,
          train.NonFiniteLossError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  if results:
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in results.items()))


if __name__ == "__main__":
  app.run(main)

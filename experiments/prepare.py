"""Prepares the data a config needs, before training.

    python -m experiments.prepare --config=configs/<name>.py [--config.data.data_dir=DIR ...] [--manual_dir=DIR]

* a built-in tfds set (celeb_a, cifar10, svhn_cropped, fashion_mnist, mnist, cifar100): tfds's
  `download_and_prepare` into array_record in config.data.data_dir (needs TensorFlow: pip install -e .[tf]).
  Files downloaded by hand (CelebA's, when its download fails) go in --manual_dir (default: tfds's
  <data_dir>/downloads/manual);
* the offline sets (mnist5k, digits): their builders, in seconds;
* data.dataset='folder': the folder decoded once into its cache (dsm_jax/data/folder.py);
* and the sets named in config.eval.ood_datasets, when the config has them.
Prints, for each set, where it is and how many images each split holds. Mistakes (a config that does not load,
a set that cannot be prepared) are one line on stderr and exit status 2.
"""
import os
import sys

from absl import flags
from ml_collections import config_flags

# flags of their own (not absl's global FLAGS), so this module and experiments.run can be imported together
FLAGS = flags.FlagValues()
config_flags.DEFINE_config_file("config", None, "Path to a config file in configs/.", flag_values=FLAGS,
                                lock_config=True)
flags.DEFINE_string("manual_dir", None, "tfds manual_dir: files downloaded by hand (default <data_dir>/downloads/manual).",
                    flag_values=FLAGS)
USAGE = 2


def _fail(message: str) -> None:
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
  sys.exit(USAGE)


def _tfds(name: str, data_dir, manual_dir) -> tuple[str, dict]:
  """(where, {split: n}) of a built-in tfds set, prepared here if it is not yet (dsm_jax/data/images.py)."""
  from dsm_jax.data import images  # noqa: PLC0415
  builder = images._builder(name, data_dir, manual_dir)
  return str(builder.data_dir), {s: int(info.num_examples) for s, info in builder.info.splits.items()}


def prepare(data_config, manual_dir=None, ood=()) -> list:
  """[(dataset, where, {split: n images})] for config.data's dataset and each of `ood`."""
  from dsm_jax.data import images, pipeline, toy  # noqa: PLC0415
  name = data_config.dataset
  data_dir = os.path.expanduser(data_config.data_dir) if data_config.data_dir else None
  if name not in images.IMAGE_DATASETS:
    kind = "toy" if name in toy.TOY_DATASETS else "not an image"
    raise pipeline.DataError(f"config.data.dataset={name!r} is a {kind} dataset: nothing to prepare")
  out = []
  if name == images.FOLDER:
    ds = images.ImageDataset(data_config, 0)
    n_skip = len(ds.folder_info["skipped"])
    out.append((f"folder {data_config.folder}", ds.folder_info["cache"] + (f" ({n_skip} files skipped, listed in "
                f"{ds.folder_info['cache'][:-4]}.skipped.txt)" if n_skip else ""),
                {"train": ds.num_train, "test": ds.num_test}))
  for n in ([] if name == images.FOLDER else [name]) + [o for o in ood if o != name]:
    if n in images.OFFLINE_DATASETS:
      from dsm_jax.data import builders  # noqa: PLC0415
      b = builders.prepare(n, data_dir)
      out.append((n, str(b.data_dir), {s: int(i.num_examples) for s, i in b.info.splits.items()}))
    else:
      out.append((n, *_tfds(n, data_dir, manual_dir)))
  return out


def main(argv):
  del argv
  from dsm_jax.data.pipeline import DataError  # noqa: PLC0415
  config = FLAGS.config
  try:
    config.keys()
  except Exception as e:  # noqa: BLE001 - a config file that did not load
    _fail(f"--config: {type(e).__name__}: {e}")
  ood = tuple(config.eval.get("ood_datasets", ()) or ()) if "eval" in config else ()
  try:
    done = prepare(config.data, FLAGS.manual_dir, ood)
  except DataError as e:
    _fail(str(e))
  for name, where, counts in done:
    sizes = ", ".join(f"{s} {n:,}" for s, n in counts.items())
    print(f"{name}: {sum(counts.values()):,} images ({sizes}) in {where}")


def cli(argv: list) -> int:
  """Runs the command line argv in this process and returns its exit status (for tests)."""
  FLAGS.unparse_flags()
  for name in [n for n in FLAGS if n.startswith("config.")]:
    delattr(FLAGS, name)
  saved, sys.argv = sys.argv, list(argv)
  try:
    rest = FLAGS(list(argv))
    if FLAGS["config"].value is None:
      _fail("--config is required, e.g. --config=configs/ncsn_celeba.py")
    main(rest)
  except SystemExit as e:
    return 0 if e.code is None else int(e.code)
  except flags.Error as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return USAGE
  finally:
    sys.argv = saved
  return 0


if __name__ == "__main__":
  sys.exit(cli(sys.argv))

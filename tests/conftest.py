"""Shared test settings.

* hypothesis runs are deterministic (derandomized, no example database) and small;
* XLA's backend optimisation level is lowered for the test process: these tests compile many tiny
  programs, and at level 0 compiling dominates far less (about 2x faster on 2 cores). Numerics are
  unchanged up to float rounding; an XLA_FLAGS setting of the user's own wins.
"""
import os

if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

from hypothesis import settings  # noqa: E402

settings.register_profile("dsm_jax", derandomize=True, database=None, deadline=None,
                          max_examples=15, print_blob=True)
settings.load_profile("dsm_jax")


import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def standin_tfds(monkeypatch):
  """Stand-in for the tfds datasets that cannot be downloaded here: random uint8 images of each
  dataset's native shape (with labels), passed through the real geometry code (crop, resize, pad).
  Everything from ImageDataset on is the real pipeline; the offline datasets (mnist5k, digits) are read as
  they are. Yields the number of images per split."""
  from dsm_jax.data import images

  n = {"train": 64, "test": 32}
  real = images._read_split

  def read_split(name, split, data_dir, geo):
    if name in images.OFFLINE_DATASETS:  # prepared offline: the real data
      return real(name, split, data_dir, geo)
    rng = np.random.default_rng(abs(hash((name, split))) % 2**32)
    x = rng.integers(0, 256, (n[split],) + images.NATIVE_SHAPE[name], dtype=np.uint8)
    return images._apply_geometry(x, geo), rng.integers(0, 10, n[split]).astype(np.int64)

  images.clear_cache()
  monkeypatch.setattr(images, "_read_split", read_split)
  yield n
  images.clear_cache()


@pytest.fixture(autouse=True)
def _restore_default_conv_impl():
  """The runner sets models/layers.py's default convolution form for its process (platform.apply); a test
  that runs it must not change the form later tests trace with."""
  from dsm_jax.models import layers
  before = layers.default_conv_impl()
  yield
  layers.set_default_conv_impl(before)


class MockTfds:
  """tfds.testing.mock_data (MockPolicy.USE_CODE) around the real tfds builders: `tfds.builder(name)` is the
  registered builder class with its real features, and `as_data_source` reads random examples of those features'
  shapes and dtypes through tfds's ArrayRecordDataSource. The mock leaves `is_prepared` False and the split list
  empty; `prepared` and `splits` set them (None: the mock's own answer), so a test chooses an unprepared set or
  a missing split."""

  def __init__(self, num_examples):
    self.num_examples, self.prepared, self.splits = num_examples, True, None


@pytest.fixture
def mock_tfds(monkeypatch):
  """The built-in tfds datasets (celeb_a, cifar10, svhn_cropped, fashion_mnist, mnist, ...) through tfds's own
  builder code with mock_data's random examples (see MockTfds); the offline datasets are read as they are."""
  import tensorflow_datasets as tfds
  from dsm_jax.data import images

  state = MockTfds(num_examples=24)
  real_builder = images._builder

  def builder(name, data_dir, manual_dir=None):
    b = real_builder(name, data_dir, manual_dir)
    if name in images.OFFLINE_DATASETS or state.splits is None:
      return b
    split_dict = tfds.core.SplitDict([tfds.core.SplitInfo(name=s, shard_lengths=[state.num_examples], num_bytes=0)
                                      for s in state.splits])
    b.info._splits = split_dict  # what a prepared set's dataset_info.json lists
    return b

  # mock_data's batched read (__getitems__ on its ArrayRecordDataSource stand-in) does not receive the keys; the
  # data source reads item by item through its own __getitem__ instead
  from tensorflow_datasets.core.data_sources import base as ds_base
  monkeypatch.setattr(ds_base.BaseDataSource, "__getitems__", lambda self, keys: [self[k] for k in keys])
  is_prepared = tfds.core.DatasetBuilder.is_prepared
  monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared",
                      lambda self: state.prepared if state.prepared is not None else is_prepared(self))
  monkeypatch.setattr(images, "_builder", builder)
  images.clear_cache()
  with tfds.testing.mock_data(num_examples=state.num_examples, policy=tfds.testing.MockPolicy.USE_CODE):
    yield state
  images.clear_cache()

"""Image data pipeline: the offline tfds builders (mnist5k, digits) and ImageDataset.host_batches."""
import importlib.util

import numpy as np
import pytest

from configs.default import get_default_config
from dsm_jax.data import DataError, ImageDataset, get_dataset, images


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """A tfds data_dir with both offline datasets prepared once for the whole session."""
  d = str(tmp_path_factory.mktemp("tfds"))
  for name in ("mnist5k", "digits"):
    ImageDataset(_config(name, d))
  return d


def _config(name, data_dir, **kw):
  c = get_default_config().data
  c.dataset = name
  c.data_dir = data_dir
  for k, v in kw.items():
    c[k] = v
  return c


def make(name, data_dir, seed=0, **kw):
  return get_dataset(_config(name, data_dir, **kw), seed)


@pytest.mark.parametrize("scale,lo", [("01", 0.0), ("-11", -1.0)])
@pytest.mark.parametrize("name,shape,num_train,num_test",
                         [("mnist5k", (28, 28, 1), 4000, 1000), ("digits", (8, 8, 1), 1438, 359)])
def test_shapes_dtypes_ranges(data_dir, name, shape, num_train, num_test, scale, lo):
  ds = make(name, data_dir, scale=scale)
  assert isinstance(ds, ImageDataset) and not hasattr(ds, "sample") and ds.has_density is False
  assert (ds.name, ds.shape, ds.num_train, ds.num_test) == (name, shape, num_train, num_test)
  x = ds.host_batches(np.arange(3, dtype=np.int32), 16)
  assert x.shape == (3, 16) + shape and x.dtype == np.float32
  tr, te = ds.train_images(), ds.test_images()
  assert tr.shape == (num_train,) + shape and te.shape == (num_test,) + shape
  assert tr.dtype == te.dtype == np.float32
  for a in (x, tr, te):
    assert a.min() >= lo and a.max() <= 1.0
  assert tr.min() == lo and tr.max() == 1.0  # the darkest and brightest pixels reach the ends
  unit = ds.to_unit(tr)
  np.testing.assert_allclose(unit, make(name, data_dir, scale="01").train_images(), atol=1e-6)
  np.testing.assert_allclose(ds.from_unit(unit), tr, atol=1e-6)


def test_determinism_and_chunking(data_dir):
  kw = dict(random_flip=True, dequantize=True)
  ds = make("mnist5k", data_dir, seed=3, **kw)
  steps = np.arange(28, 36, dtype=np.int32)  # B=128, N=4000: step 31 spans the epoch 0 -> 1 boundary
  x = ds.host_batches(steps, 128)
  np.testing.assert_array_equal(x, ds.host_batches(steps, 128))
  np.testing.assert_array_equal(x, make("mnist5k", data_dir, seed=3, **kw).host_batches(steps, 128))
  for i, t in enumerate(steps):
    np.testing.assert_array_equal(x[i], ds.host_batches(np.array([t], np.int32), 128)[0])
  np.testing.assert_array_equal(x[2:5], ds.host_batches(steps[2:5], 128))
  other = make("mnist5k", data_dir, seed=4, **kw).host_batches(steps, 128)
  assert not np.array_equal(x, other)


def test_epoch_covers_every_example_once(data_dir):
  ds = make("mnist5k", data_dir)
  n, bsz = ds.num_train, 128
  steps = np.arange(0, 2 * n // bsz + 2, dtype=np.int32)
  flat = ds.batch_indices(steps, bsz).reshape(-1)
  for e in range(2):
    np.testing.assert_array_equal(np.sort(flat[e * n:(e + 1) * n]), np.arange(n))
  assert not np.array_equal(flat[:n], flat[n:2 * n])  # each epoch reshuffled
  x = ds.host_batches(steps[:4], bsz)
  np.testing.assert_array_equal(x, ds.train_images()[ds.batch_indices(steps[:4], bsz)])


def test_mnist5k_split_per_class_and_disjoint(data_dir):
  ds = make("mnist5k", data_dir)
  np.testing.assert_array_equal(np.bincount(ds.train_labels(), minlength=10), [400] * 10)
  np.testing.assert_array_equal(np.bincount(ds.test_labels(), minlength=10), [100] * 10)
  to_bytes = lambda a: {r.tobytes() for r in a.reshape(len(a), -1)}
  train, test = to_bytes(ds.train_images()), to_bytes(ds.test_images())
  assert len(train) == 4000 and len(test) == 1000 and not train & test


def test_digits_split_and_values(data_dir):
  ds = make("digits", data_dir)
  tr, te = np.bincount(ds.train_labels(), minlength=10), np.bincount(ds.test_labels(), minlength=10)
  np.testing.assert_array_equal(tr, np.round(0.8 * (tr + te)).astype(int))
  assert tr.sum() + te.sum() == 1797 and ds.max_value == 16
  levels = np.unique(np.round(ds.train_images() * 16))
  np.testing.assert_array_equal(levels, np.arange(17))


def test_flips_only_when_enabled(data_dir):
  steps = np.arange(20, dtype=np.int32)
  plain = make("mnist5k", data_dir).host_batches(steps, 128)
  np.testing.assert_array_equal(plain, make("mnist5k", data_dir, random_flip=False).host_batches(steps, 128))
  flipped = make("mnist5k", data_dir, random_flip=True).host_batches(steps, 128)
  same = np.all(flipped == plain, axis=(2, 3, 4))
  mirrored = np.all(flipped == plain[:, :, :, ::-1], axis=(2, 3, 4))
  assert np.all(same | mirrored)
  frac = np.mean(~same)  # an image equal to its mirror would count as not flipped: none in MNIST
  assert 0.45 < frac < 0.55, frac


@pytest.mark.parametrize("name,scale", [("mnist5k", "01"), ("mnist5k", "-11"), ("digits", "01")])
def test_dequantization_in_range(data_dir, name, scale):
  steps = np.arange(10, dtype=np.int32)
  ds = make(name, data_dir, dequantize=True, scale=scale)
  x = ds.to_unit(ds.host_batches(steps, 128), clip=False)
  v = np.round(make(name, data_dir).host_batches(steps, 128) * ds.max_value)
  assert x.min() >= 0.0 and x.max() < 1.0
  u = x * (ds.max_value + 1) - v  # the noise: uniform on [0, 1) around each integer pixel value
  assert u.min() >= -1e-4 and u.max() < 1.0 + 1e-4
  assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.005


def test_pad_to_32(data_dir):
  ds = make("mnist5k", data_dir, pad_to=32)
  assert ds.shape == (32, 32, 1)
  x = ds.train_images()
  np.testing.assert_array_equal(x[:, 2:30, 2:30], make("mnist5k", data_dir).train_images())
  border = np.ones((32, 32), bool)
  border[2:30, 2:30] = False
  assert np.all(x[:, border] == 0.0)
  assert make("mnist5k", data_dir, pad_to=32, image_size=32, scale="-11").train_images()[:, border].max() == -1


@pytest.mark.parametrize("kw,key", [(dict(image_size=32), "config.data.image_size"),
                                    (dict(image_size=64), "config.data.image_size"),
                                    (dict(pad_to=16), "config.data.pad_to"),
                                    (dict(scale="0255"), "config.data.scale"),
                                    (dict(centre_crop=40), "config.data.centre_crop")])
def test_bad_geometry_or_scale_names_the_key(data_dir, kw, key):
  with pytest.raises(DataError, match=key.replace(".", r"\.")):
    make("mnist5k", data_dir, **kw)
  with pytest.raises(DataError, match=r"config\.data\.pad_to"):
    make("digits", data_dir, pad_to=32)


def test_celeb_a_geometry_without_data():
  geo = images.resolve_geometry("celeb_a", _config("celeb_a", ""))
  assert geo == images.Geometry(crop=140, size=32, pad=0)
  assert images.resolve_geometry("celeb_a", _config("celeb_a", "", image_size=64)).size == 64
  raw = np.random.default_rng(0).integers(0, 256, (3, 218, 178, 3), dtype=np.uint8)
  out = images._apply_geometry(raw, geo)
  assert out.shape == (3, 32, 32, 3) and out.dtype == np.uint8


def test_missing_real_dataset_one_line_error(tmp_path):
  if importlib.util.find_spec("tensorflow") is not None:
    pytest.skip("with TensorFlow installed, tfds would try to download cifar10")
  with pytest.raises(DataError) as e:
    make("cifar10", str(tmp_path))
  msg = str(e.value)
  assert "\n" not in msg
  for part in ("cifar10", "--config.data.data_dir=", "pip install -e .[tf]", "mnist5k", "digits"):
    assert part in msg, (part, msg)


def test_unknown_dataset_lists_known_ones(data_dir):
  with pytest.raises(DataError) as e:
    make("cifar11", data_dir)
  msg = str(e.value)
  assert "\n" not in msg and "cifar11" in msg
  for name in ("mnist5k", "digits", "cifar10", "celeb_a", "mixture"):
    assert name in msg


def test_cache_and_toy_unchanged(data_dir, monkeypatch):
  make("mnist5k", data_dir)

  def fail(*a, **k):
    raise AssertionError("reloaded from disk")
  monkeypatch.setattr(images, "_read_split", fail)
  ds = make("mnist5k", data_dir, scale="-11", random_flip=True)  # same arrays, other scaling
  assert ds.num_train == 4000
  toy = get_dataset(_config("mixture", data_dir))
  assert hasattr(toy, "sample") and toy.shape == (2,)

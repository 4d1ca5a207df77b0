"""The built-in tfds datasets through tfds's own builder code, offline (tests/conftest.py's `mock_tfds`:
tfds.testing.mock_data with MockPolicy.USE_CODE): the pixels ImageDataset holds are the builder's examples put
through the config's geometry, each paper geometry gives its shape, and a wrong geometry, a missing split and an
unprepared set each stop with one line. The paper configs themselves run train -> sample -> eval on these mocks
in tests/test_configs.py."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs.default import get_default_config
from dsm_jax.data import DataError, ImageDataset, images


def _data(dataset, **over):
  d = get_default_config("ncsn").data
  d.dataset, d.data_dir = dataset, "/nonexistent/tfds"  # the mock replaces the data dir
  for k, v in over.items():
    d[k] = v
  return d


def _raw(name, split, n):
  b = tfds.builder(name, data_dir="/nonexistent/tfds", file_format="array_record")
  src = b.as_data_source(split=split)
  return np.stack([np.asarray(src[i]["image"], np.uint8) for i in range(n)])


@pytest.mark.parametrize("name,over,shape,geometry", [
    ("celeb_a", {}, (32, 32, 3), images.Geometry(crop=140, size=32, pad=0)),                 # NCSN, MDSM CelebA
    ("celeb_a", {"image_size": 64}, (64, 64, 3), images.Geometry(crop=140, size=64, pad=0)),  # Denoising-EBM
    ("cifar10", {}, (32, 32, 3), images.Geometry(0, 0, 0)),
    ("svhn_cropped", {}, (32, 32, 3), images.Geometry(0, 0, 0)),
    ("fashion_mnist", {"pad_to": 32}, (32, 32, 1), images.Geometry(0, 0, 32)),               # MDSM
    ("fashion_mnist", {}, (28, 28, 1), images.Geometry(0, 0, 0)),                            # DDE
])
def test_pixels_are_the_builders_examples_after_the_geometry(mock_tfds, name, over, shape, geometry):
  ds = ImageDataset(_data(name, **over), 0)
  assert ds.shape == shape and ds.geometry == geometry and ds.num_train == mock_tfds.num_examples
  raw = _raw(name, "train", mock_tfds.num_examples)
  assert raw.shape[1:] == images.NATIVE_SHAPE[name]
  np.testing.assert_array_equal(ds.split_uint8("train"), images._apply_geometry(raw, geometry))
  if geometry.pad:
    assert (ds.split_uint8("train")[:, :2] == 0).all() and (ds.split_uint8("train")[:, -2:] == 0).all()
  if name != "celeb_a":  # celeb_a has attributes, not a class label
    assert ds.train_labels() is not None and len(ds.train_labels()) == mock_tfds.num_examples
  assert ds.num_test == mock_tfds.num_examples


def test_flip_and_dequantization_on_a_builder_set(mock_tfds):
  ds = ImageDataset(_data("cifar10", random_flip=True, dequantize=True), 3)
  x = ds.host_batches([0, 1], 12)
  u8 = ds.split_uint8("train")[ds.batch_indices([0, 1], 12)]
  flipped = np.isclose(np.floor(x * 256), u8[:, :, :, ::-1]).all(axis=(2, 3, 4))
  straight = np.isclose(np.floor(x * 256), u8).all(axis=(2, 3, 4))
  assert (flipped | straight).all() and flipped.any() and straight.any()
  assert ((x * 256 - u8 >= 0) | flipped[..., None, None, None]).all()


@pytest.mark.parametrize("name,over,says", [
    ("cifar10", {"image_size": 28}, "config.data.image_size=28: cifar10 images are 32x32"),
    ("fashion_mnist", {"image_size": 32}, "config.data.pad_to=32"),
    ("celeb_a", {"centre_crop": 200}, "config.data.centre_crop=200: celeb_a images are 218x178"),
    ("svhn_cropped", {"pad_to": 32}, "only 28x28 images can be padded"),
])
def test_wrong_geometry_is_one_line(mock_tfds, name, over, says):
  with pytest.raises(DataError) as e:
    ImageDataset(_data(name, **over), 0)
  assert says in str(e.value) and "\n" not in str(e.value)


def test_missing_split_is_one_line(mock_tfds):
  mock_tfds.splits = ["train"]
  ds = ImageDataset(_data("cifar10"), 0)  # the training split reads
  with pytest.raises(DataError) as e:
    ds.test_images()
  assert "has no split 'test' (it has ['train'])" in str(e.value) and "\n" not in str(e.value)


def test_unprepared_set_names_the_tf_extra(mock_tfds):
  mock_tfds.prepared = None  # the mock's own answer: nothing is prepared in its data dir
  with pytest.raises(DataError) as e:
    ImageDataset(_data("celeb_a"), 0)
  msg = str(e.value)
  assert "'celeb_a' is not prepared" in msg and "pip install -e .[tf]" in msg and "experiments.prepare" in msg
  assert "\n" not in msg

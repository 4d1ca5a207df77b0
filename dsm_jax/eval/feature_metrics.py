"""Download-free sample-quality metrics in the feature space of a small classifier trained here.

Inception-v3 FID needs weights from outside the project; this module needs nothing but the dataset. A
small CNN (`FeatureCNN`: three 3x3 convolutions, 32-64-128 channels, stride 2 while the feature map is
larger than 4x4, a 128-d ReLU feature layer, then logits) is trained with Adam (cosine-decayed learning
rate, random shifts of up to `shift` pixels) on the dataset's training split, in [0, 1] pixel space
(`dataset.to_unit`, so the features do not depend on config.data.scale). The feature layer's activations
play the role of Inception's pool_3. Training is deterministic given the seed (initialisation from
PRNGKey(seed), batches and shifts from numpy generators seeded by (seed, epoch)).

Cache. The parameters are stored as flax msgpack in `cache_dir` (default ~/.cache/dsm_jax/
feature_classifiers; config.eval.feature_cache_dir overrides it, see `kwargs_from_config`) under a
name `<dataset>-<H>x<W>x<C>-seed<seed>-<hash>.msgpack`, where the hash covers the classifier's
hyperparameters, this module's format version and a fingerprint of the dataset's arrays (so a different
data_dir, crop or resize never reuses parameters trained on other images). Beside it a `.json` records
the test accuracy, the training time and the msgpack's sha1. Both are written to a temporary file and
renamed (msgpack first, the json last, so the json marks a complete entry): a killed process leaves
either the old entry or the new one. An entry that cannot be read (bad json, wrong sha1, msgpack that
does not decode into the model's parameter tree) is retrained and rewritten, with a warning.

Metrics (`evaluate_samples`), on at most `max_n` finite samples (clipped to [0, 1]):
  * fid_feat, kid_feat: samples vs the whole held-out test split (dsm_jax.eval.fid);
  * fid_feat_real_baseline, kid_feat_real_baseline: the same with the samples replaced by an equally
    sized random subset of the *training* split (disjoint from the test split). The reference set and
    both sample sizes are exactly those of fid_feat, so the O(1/N) bias of FID is the same: this is the
    score of a sampler that returns real images. The classifier has seen these training images; with
    a classifier trained on part of the training split, seen and unseen images scored alike within the
    spread between random subsets (digits, 359 images: 8.1 +- 1.2 seen vs 7.3 unseen; mnist5k, 500:
    11.3 +- 1.9 seen vs 14.0 unseen). That spread is also the resolution of fid_feat at these sizes;
  * nn_dist_mean: the mean L2 distance in [0, 1] pixel space (over all H*W*C values) from each sample
    to its nearest training image: 0 for a sampler that copies its training set;
  * nn_dist_real_baseline: the same for as many held-out test images: what a sampler that generalises
    (draws new images from the data law) scores. nn_dist_mean well below it suggests memorisation;
  * feature_classifier_test_acc: the classifier's accuracy on the test split (a weak classifier gives a
    weak feature space);
  * n_nonfinite_eval: samples dropped for non-finite values. With fewer than 2 finite samples left the
    metric values are NaN (eval.json writes null);
  * class_confident_frac: the fraction of samples the classifier assigns to one class with softmax
    probability >= CONFIDENT (0.9): a direct measure of "recognisable" digits or objects;
    class_confident_frac_real_baseline: the same for as many held-out test images;
  * class_tv: the total-variation distance (1/2 L1) between the histogram of the classifier's argmax
    classes on the samples and the test split's label histogram: 0 when the samples cover the classes
    in their proportions, 1 - 1/K for a sampler stuck in one of K balanced classes (mode collapse);
    class_tv_real_baseline: the same for as many held-out test images (their classifier error plus the
    sampling error of n draws).

Usage:
  feature_fn, acc = get_classifier(dataset)            # trains once, then loads from the cache
  f = feature_fn(images_unit)                          # [N, 128] numpy
  out = evaluate_samples(samples_unit, dataset, **kwargs_from_config(config))
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from typing import Callable, Optional

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dsm_jax.eval import fid

FORMAT_VERSION = 1
CACHE_DIR = os.path.join("~", ".cache", "dsm_jax", "feature_classifiers")
WIDTHS = (32, 64, 128)
FEATURE_DIM = 128
DEFAULT_EPOCHS = 10
DEFAULT_BATCH_SIZE = 64
DEFAULT_LR = 2e-3
DEFAULT_MAX_N = 1000
FEATURE_BATCH = 256       # images per compiled feature call (the last batch is padded)
KID_SUBSETS = 20          # random subsets averaged by KID (1 when both sets fit in one subset: see _kid)
KID_SUBSET_SIZE = 1000

RESULT_KEYS = ("fid_feat", "kid_feat", "fid_feat_real_baseline", "kid_feat_real_baseline", "nn_dist_mean",
               "nn_dist_real_baseline", "feature_classifier_test_acc", "n_nonfinite_eval", "class_confident_frac",
               "class_confident_frac_real_baseline", "class_tv", "class_tv_real_baseline")
CONFIDENT = 0.9           # class_confident_frac: the classifier's top softmax probability is at least this

_EPOCH_TAG = 0xFEA7_0001  # seeds batch order and shifts: (tag, seed, epoch)
_SUBSET_TAG = 0xFEA7_0002  # seeds the real-baseline training subset: (tag, seed)


class NoLabelsError(ValueError):
  """The dataset has no class labels to train the feature classifier on."""


# ====================================================================================== the network
class FeatureCNN(nn.Module):
  """Small CNN for [N, H, W, C] images in [0, 1]: returns (features [N, feature_dim], logits)."""
  num_classes: int
  widths: tuple = WIDTHS
  feature_dim: int = FEATURE_DIM

  @nn.compact
  def __call__(self, x):
    for i, w in enumerate(self.widths):
      stride = 2 if min(x.shape[1], x.shape[2]) > 4 else 1
      x = nn.relu(nn.Conv(w, (3, 3), strides=stride, name=f"conv{i}")(x))
    while min(x.shape[1], x.shape[2]) > 4:  # images larger than 32x32: average down before flattening
      x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape(x.shape[0], -1)
    feats = nn.relu(nn.Dense(self.feature_dim, name="feature")(x))
    return feats, nn.Dense(self.num_classes, name="logits")(feats)


@dataclasses.dataclass(frozen=True)
class Hyper:
  """Everything that determines the trained parameters besides the data and the seed."""
  num_classes: int
  epochs: int = DEFAULT_EPOCHS
  batch_size: int = DEFAULT_BATCH_SIZE
  lr: float = DEFAULT_LR
  shift: int = 1
  widths: tuple = WIDTHS
  feature_dim: int = FEATURE_DIM

  def model(self) -> FeatureCNN:
    return FeatureCNN(num_classes=self.num_classes, widths=tuple(self.widths), feature_dim=self.feature_dim)


def default_shift(shape) -> int:
  """Random-shift augmentation in pixels: 1 for 8x8, 2 for 28x28 and 32x32."""
  return max(1, int(round(min(shape[0], shape[1]) / 16)))


# ====================================================================================== training
def _shift_batch(x: np.ndarray, rng: np.random.Generator, s: int) -> np.ndarray:
  """Each image translated by (dy, dx) uniform in [-s, s]^2, filled with 0."""
  if s <= 0:
    return x
  n, h, w, _ = x.shape
  xp = np.pad(x, ((0, 0), (s, s), (s, s), (0, 0)))
  dy, dx = rng.integers(0, 2 * s + 1, size=(2, n))
  rows = (dy[:, None] + np.arange(h)[None])[:, :, None]
  cols = (dx[:, None] + np.arange(w)[None])[:, None, :]
  return xp[np.arange(n)[:, None, None], rows, cols]


def train_classifier(x_train: np.ndarray, y_train: np.ndarray, hyper: Hyper, seed: int = 0):
  """Parameters of `hyper.model()` trained with Adam (cosine decay to 0) on images in [0, 1]."""
  x_train = np.asarray(x_train, np.float32)
  y_train = np.asarray(y_train, np.int32)
  n = len(x_train)
  bs = max(1, min(int(hyper.batch_size), n))
  steps_per_epoch = n // bs
  total = max(1, steps_per_epoch * int(hyper.epochs))
  model = hyper.model()
  params = model.init(jax.random.PRNGKey(seed), jnp.zeros((1,) + x_train.shape[1:], jnp.float32))["params"]
  tx = optax.adam(optax.cosine_decay_schedule(float(hyper.lr), total))
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, x, y):
    def loss_fn(p):
      _, logits = model.apply({"params": p}, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  loss = None
  for epoch in range(int(hyper.epochs)):
    rng = np.random.default_rng([_EPOCH_TAG, int(seed) % (1 << 63), epoch])
    perm = rng.permutation(n)
    for i in range(steps_per_epoch):
      idx = perm[i * bs:(i + 1) * bs]
      params, opt_state, loss = step(params, opt_state, _shift_batch(x_train[idx], rng, hyper.shift),
                                     y_train[idx])
  if loss is not None and not math.isfinite(float(loss)):
    raise FloatingPointError(f"feature classifier training diverged (final loss {float(loss)})")
  return jax.device_get(params)


# ====================================================================================== features
_APPLY: dict = {}


def _apply_fn(hyper: Hyper):
  key = (hyper.num_classes, tuple(hyper.widths), hyper.feature_dim)
  if key not in _APPLY:
    model = hyper.model()
    _APPLY[key] = jax.jit(lambda params, x: model.apply({"params": params}, x))
  return _APPLY[key]


def _batched_apply(hyper: Hyper, params, images: np.ndarray, shape) -> tuple[np.ndarray, np.ndarray]:
  """(features [N, D], logits [N, K]) as numpy, in fixed-size padded batches (one compilation)."""
  x = np.asarray(images, np.float32)
  shape = tuple(shape)
  per = int(np.prod(shape))
  if x.ndim == 0 or x.size != len(x) * per:
    raise ValueError(f"feature_fn: expected images [N, {', '.join(map(str, shape))}], got shape {x.shape}")
  x = x.reshape((len(x),) + shape)
  f = _apply_fn(hyper)
  feats = np.empty((len(x), hyper.feature_dim), np.float32)
  logits = np.empty((len(x), hyper.num_classes), np.float32)
  for lo in range(0, len(x), FEATURE_BATCH):
    chunk = x[lo:lo + FEATURE_BATCH]
    k = len(chunk)
    if k < FEATURE_BATCH:
      chunk = np.concatenate([chunk, np.zeros((FEATURE_BATCH - k,) + shape, np.float32)])
    a, b = f(params, chunk)
    feats[lo:lo + k] = np.asarray(a)[:k]
    logits[lo:lo + k] = np.asarray(b)[:k]
  return feats, logits


# ====================================================================================== cache
def resolve_cache_dir(cache_dir: Optional[str] = None) -> str:
  return os.path.abspath(os.path.expanduser(cache_dir or CACHE_DIR))


def _fingerprint(*arrays) -> str:
  h = hashlib.sha1()
  for a in arrays:
    if a is None:
      h.update(b"none")
      continue
    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(memoryview(a).cast("B"))
  return h.hexdigest()


def cache_name(name: str, shape, seed: int, hyper: Hyper, data_fingerprint: str) -> str:
  desc = json.dumps({"version": FORMAT_VERSION, "hyper": dataclasses.asdict(hyper), "data": data_fingerprint},
                    sort_keys=True)
  digest = hashlib.sha1(desc.encode()).hexdigest()[:16]
  return f"{name}-{'x'.join(str(int(s)) for s in shape)}-seed{int(seed)}-{digest}"


def _write_atomic(path: str, data: bytes) -> None:
  """Writes `data` to a temporary file beside `path`, fsyncs it and renames it over `path`."""
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix="." + os.path.basename(path) + ".",
                             suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    try:
      os.unlink(tmp)
    except OSError:
      pass
    raise


def _template(hyper: Hyper, shape):
  model = hyper.model()
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1,) + tuple(shape), jnp.float32)))[
      "params"]


def load_cached(path_base: str, hyper: Hyper, shape):
  """(params, meta) from `path_base`.{msgpack,json}; None if there is no entry; raises ValueError
  (naming the problem) for an entry that is present but unusable."""
  meta_path, params_path = path_base + ".json", path_base + ".msgpack"
  if not os.path.exists(meta_path):
    return None
  try:
    with open(meta_path, "rb") as f:
      meta = json.loads(f.read().decode())
    with open(params_path, "rb") as f:
      blob = f.read()
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"cannot read it ({type(e).__name__}: {e})") from e
  if not isinstance(meta, dict) or "test_acc" not in meta or "params_sha1" not in meta:
    raise ValueError("its json lacks test_acc / params_sha1")
  if hashlib.sha1(blob).hexdigest() != meta["params_sha1"]:
    raise ValueError("its msgpack does not match the sha1 recorded in its json (truncated or replaced)")
  template = _template(hyper, shape)
  try:
    state = flax.serialization.msgpack_restore(blob)
    params = flax.serialization.from_state_dict(jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype),
                                                                       template), state)
  except Exception as e:  # noqa: BLE001  msgpack / structure errors come in many types
    raise ValueError(f"its msgpack does not decode into the classifier's parameters ({type(e).__name__}: {e})") \
        from e
  bad = [jax.tree_util.keystr(path) for (path, t), a in
         zip(jax.tree_util.tree_leaves_with_path(template), jax.tree_util.tree_leaves(params))
         if np.shape(a) != t.shape or not np.all(np.isfinite(a))]
  if bad:
    raise ValueError(f"parameters {bad[:3]} have the wrong shape or non-finite values")
  return params, meta


def _save(path_base: str, params, meta: dict) -> None:
  blob = flax.serialization.msgpack_serialize(jax.tree_util.tree_map(np.asarray, params))
  meta = dict(meta, params_sha1=hashlib.sha1(blob).hexdigest())
  os.makedirs(os.path.dirname(path_base), exist_ok=True)
  _write_atomic(path_base + ".msgpack", blob)
  _write_atomic(path_base + ".json", json.dumps(meta, indent=1, sort_keys=True).encode())


# ====================================================================================== public API
def _unit_arrays(dataset, split: str) -> np.ndarray:
  x = dataset.train_images() if split == "train" else dataset.test_images()
  return np.asarray(dataset.to_unit(x), np.float32)


def get_classifier(dataset, cache_dir: Optional[str] = None, seed: int = 0, epochs: int = DEFAULT_EPOCHS,
                   batch_size: int = DEFAULT_BATCH_SIZE, lr: float = DEFAULT_LR
                   ) -> tuple[Callable[[np.ndarray], np.ndarray], float]:
  """(feature_fn, test accuracy) of the feature classifier of `dataset` (an ImageDataset), trained on its
  training split on first use and loaded from `cache_dir` afterwards.

  feature_fn(images_unit [N, H, W, C] in [0, 1]) -> float32 numpy [N, FEATURE_DIM] (jit, batched).
  Raises NoLabelsError for a dataset without class labels."""
  shape = tuple(int(s) for s in dataset.shape)
  y_train, y_test = dataset.train_labels(), dataset.test_labels()
  if y_train is None:
    raise NoLabelsError(f"dataset {dataset.name!r} has no class labels: no feature classifier can be trained")
  y_train = np.asarray(y_train, np.int64)
  y_test = None if y_test is None else np.asarray(y_test, np.int64)
  num_classes = int(max(y_train.max(initial=0), -1 if y_test is None else y_test.max(initial=0))) + 1
  hyper = Hyper(num_classes=num_classes, epochs=int(epochs), batch_size=int(batch_size), lr=float(lr),
                shift=default_shift(shape))
  x_train, x_test = _unit_arrays(dataset, "train"), _unit_arrays(dataset, "test")
  root = resolve_cache_dir(cache_dir)
  base = os.path.join(root, cache_name(dataset.name, shape, seed, hyper,
                                       _fingerprint(x_train, y_train, x_test, y_test)))
  loaded = None
  try:
    loaded = load_cached(base, hyper, shape)
  except ValueError as e:
    logging.warning("feature classifier cache %s.msgpack is unusable (%s); retraining it", base, e)
  if loaded is not None:
    params, meta = loaded
    test_acc = float(meta["test_acc"]) if meta["test_acc"] is not None else float("nan")
    logging.info("feature classifier for %s loaded from %s (test accuracy %.4f)", dataset.name, base, test_acc)
  else:
    logging.info("training the feature classifier for %s (%d images, %d epochs) into %s", dataset.name,
                 len(x_train), hyper.epochs, root)
    tic = time.perf_counter()
    params = train_classifier(x_train, y_train, hyper, seed)
    train_time = time.perf_counter() - tic
    test_acc = float("nan")
    if y_test is not None and len(y_test):
      _, logits = _batched_apply(hyper, params, x_test, shape)
      test_acc = float(np.mean(logits.argmax(-1) == y_test))
    logging.info("feature classifier for %s: test accuracy %.4f, trained in %.1f s", dataset.name, test_acc,
                 train_time)
    meta = {"dataset": dataset.name, "shape": list(shape), "seed": int(seed),
            "hyper": dataclasses.asdict(hyper), "format_version": FORMAT_VERSION,
            "test_acc": test_acc if math.isfinite(test_acc) else None, "train_time_s": train_time,
            "num_train": int(len(x_train)), "num_test": int(len(x_test))}
    try:
      _save(base, params, meta)
    except OSError as e:
      logging.warning("cannot write the feature classifier cache in %s (%s); it will be retrained next time",
                      root, e)

  def feature_fn(images_unit) -> np.ndarray:
    return _batched_apply(hyper, params, images_unit, shape)[0]

  feature_fn.features_and_logits = lambda images_unit: _batched_apply(hyper, params, images_unit, shape)  # type: ignore[attr-defined]
  feature_fn.hyper = hyper  # type: ignore[attr-defined]
  feature_fn.cache_path = base + ".msgpack"  # type: ignore[attr-defined]
  return feature_fn, test_acc


def nearest_distances(x_unit, ref_unit, chunk: int = 256, candidates: int = 4) -> np.ndarray:
  """[N] L2 distance from each x to its nearest row of ref (both flattened beyond the batch).
  Candidates are found with the |a|^2 - 2 a.b expansion in float32, then the exact distance of the best
  `candidates` is computed directly, so an exact copy gives exactly 0."""
  a = np.asarray(x_unit, np.float32).reshape(len(x_unit), -1)
  b = np.asarray(ref_unit, np.float32).reshape(len(ref_unit), -1)
  if len(b) == 0 or a.shape[1] != b.shape[1]:
    raise ValueError(f"nearest_distances: shapes {a.shape} and {b.shape} do not match")
  k = min(int(candidates), len(b))
  b2 = np.einsum("ij,ij->i", b, b)
  out = np.empty(len(a), np.float64)
  for lo in range(0, len(a), chunk):
    q = a[lo:lo + chunk]
    d2 = b2[None] - 2.0 * (q @ b.T)
    idx = np.argpartition(d2, k - 1, axis=1)[:, :k] if k < len(b) else np.broadcast_to(np.arange(len(b)),
                                                                                        d2.shape)
    diff = q[:, None, :].astype(np.float64) - b[idx].astype(np.float64)
    out[lo:lo + len(q)] = np.sqrt(np.min(np.einsum("nkd,nkd->nk", diff, diff), axis=1))
  return out


def _kid(f1: np.ndarray, f2: np.ndarray, seed: int) -> float:
  """fid.kid_from_features with subsets of min(KID_SUBSET_SIZE, N1, N2): KID_SUBSETS of them, or one
  when both sets are that size (every subset would then be the whole of both sets, the same number).
  Fewer subsets than Binkowski et al.'s 100 keep a CPU evaluation within seconds (0.3 s per subset of
  1000 on two cores); with N <= 1000 per side the subsets overlap heavily and more add little."""
  m = min(KID_SUBSET_SIZE, len(f1), len(f2))
  k = 1 if len(f1) == len(f2) == m else KID_SUBSETS
  return fid.kid_from_features(f1, f2, n_subsets=k, subset_size=m, seed=seed)


def class_stats(logits: np.ndarray, label_hist: np.ndarray) -> tuple[float, float]:
  """(fraction of rows whose top softmax probability is >= CONFIDENT, total-variation distance between the
  histogram of the rows' argmax classes and label_hist (a probability vector over the K classes))."""
  logits = np.asarray(logits, np.float64)
  z = logits - logits.max(-1, keepdims=True)
  top = 1.0 / np.exp(z).sum(-1)  # the top class's softmax probability: exp(0) / sum exp(z)
  hist = np.bincount(logits.argmax(-1), minlength=logits.shape[-1]) / len(logits)
  return float(np.mean(top >= CONFIDENT)), float(0.5 * np.abs(hist - np.asarray(label_hist)).sum())


def evaluate_samples(samples_unit, dataset, cache_dir: Optional[str] = None, seed: int = 0,
                     max_n: int = DEFAULT_MAX_N, epochs: int = DEFAULT_EPOCHS) -> dict:
  """Feature-space FID/KID of samples in [0, 1] ([N, H, W, C], or anything reshapeable to it) against
  the test split, the real-data baselines at the same sample sizes, the nearest-training-image distance
  and its real baseline: the keys RESULT_KEYS (see the module docstring)."""
  nan = float("nan")
  shape = tuple(int(s) for s in dataset.shape)
  x = np.asarray(samples_unit, np.float32)
  n_in = len(x) if x.ndim else 0
  if x.size != n_in * int(np.prod(shape)):
    raise ValueError(f"evaluate_samples: samples of shape {x.shape} are not [N, {', '.join(map(str, shape))}]")
  x = x.reshape((n_in,) + shape)
  finite = np.all(np.isfinite(x.reshape(n_in, -1)), axis=1)
  out = {k: nan for k in RESULT_KEYS}
  out["n_nonfinite_eval"] = int(n_in - finite.sum())
  if out["n_nonfinite_eval"]:
    logging.warning("feature metrics: dropped %d non-finite samples of %d", out["n_nonfinite_eval"], n_in)
  x = np.clip(x[finite][:max(int(max_n), 0)], 0.0, 1.0)
  n = len(x)
  feature_fn = None
  try:
    feature_fn, out["feature_classifier_test_acc"] = get_classifier(dataset, cache_dir, seed, epochs)
  except NoLabelsError as e:
    logging.warning("feature metrics: %s; fid_feat / kid_feat are NaN", e)
  if n < 2:
    logging.warning("feature metrics: %d finite samples (need 2); the metrics are NaN", n)
    return out
  train, test = _unit_arrays(dataset, "train"), _unit_arrays(dataset, "test")
  rng = np.random.default_rng([_SUBSET_TAG, int(seed) % (1 << 63)])
  n_base = min(n, len(train))
  base = train[np.sort(rng.choice(len(train), n_base, replace=False))]
  if feature_fn is not None and len(test) >= 2:
    (f_s, l_s), (f_t, l_t) = feature_fn.features_and_logits(x), feature_fn.features_and_logits(test)
    f_b = feature_fn(base)
    y_test = dataset.test_labels()
    if y_test is not None:
      label_hist = np.bincount(np.asarray(y_test, np.int64), minlength=l_t.shape[-1]) / len(y_test)
      out["class_confident_frac"], out["class_tv"] = class_stats(l_s, label_hist)
      out["class_confident_frac_real_baseline"], out["class_tv_real_baseline"] = class_stats(l_t[:n], label_hist)
    out["fid_feat"] = fid.fid_from_features(f_s, f_t)
    out["fid_feat_real_baseline"] = fid.fid_from_features(f_b, f_t)
    out["kid_feat"] = _kid(f_s, f_t, seed)
    out["kid_feat_real_baseline"] = _kid(f_b, f_t, seed)
  out["nn_dist_mean"] = float(nearest_distances(x, train).mean())
  if len(test):
    out["nn_dist_real_baseline"] = float(nearest_distances(test[:n], train).mean())
  logging.info("feature metrics on %d samples vs %d test images (baseline: %d training images): %s", n,
               len(test), n_base, {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()})
  return out


def kwargs_from_config(config) -> dict:
  """evaluate_samples keyword arguments from a config's optional eval keys: feature_cache_dir ('' =
  default), feature_epochs, feature_max_n; the seed is fixed at 0 so that feature spaces (and so the
  numbers) are comparable across runs with different config.seed."""
  e = config.eval
  get = e.get if hasattr(e, "get") else (lambda k, d: getattr(e, k, d))
  return {"cache_dir": get("feature_cache_dir", "") or None, "seed": 0,
          "epochs": int(get("feature_epochs", DEFAULT_EPOCHS)), "max_n": int(get("feature_max_n", DEFAULT_MAX_N))}

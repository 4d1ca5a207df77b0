"""The papers' sample-quality protocol: FID of `config.eval.fid_n` samples (50,000 in the papers) against the
Inception pool_3 statistics of the training split at the config's geometry, and the Inception Score when a
logits layer is supplied.

* Reference statistics (`reference_stats`): mean and covariance of the pool_3 features of
  `eval.fid_ref_split` (default 'train', as the papers) of the dataset after its crop / resize / pad, computed
  once (`python -m experiments.run --mode=fid_stats`, or on first use) and cached in `eval.fid_stats_dir`
  (default: beside the data, `<data_dir>/fid_stats/`). The file name holds the dataset, the geometry, the split,
  a fingerprint of the split's pixels and of the weights file, so another crop or another copy of the data
  never reuses them.
* Samples (`protocol_samples`): drawn with the method's compiled sampler (chains split over the local devices)
  in batches of `eval.fid_batch_size` into `OUTDIR/samples/fid_<n>/batch_<i>.npz` as uint8 (the 8-bit levels
  the Inception preprocessing rounds to anyway) with a finite mask, each written as soon as it is drawn: a
  killed run's rerun continues from the last complete batch, and the set equals an uninterrupted run's.
  Each batch's pool_3 features are stored beside it (`feat_<i>.npy`), so features resume too.
* `evaluate` returns `protocol_fid`, `protocol_n` (finite samples used), `protocol_ref_split`, `protocol_ref_n`,
  `protocol_nonfinite`, and `protocol_inception_score` (+ `_std`) from `eval.inception_logits_path`, or the
  string 'not computed: ...' without it.

Inception Score weights: an .npz with `w` [2048, K] (and optionally `b` [K]): the softmax layer of the same
TTUR/`inception-2015-12-05` graph (`softmax/logits/MatMul`'s weights, K = 1008), applied to the pool_3
features as the original Inception Score code does.
"""
from __future__ import annotations

import hashlib
import logging
import os

import chex
import jax
import numpy as np

from dsm_jax import sampling
from dsm_jax.eval import fid

FEATURE_CHUNK = 100       # reference images per feature call between progress updates
_FID_TAG = 0xF1D0_0001    # folds the sample key of the protocol set
REF_SPLITS = ("train", "test")
IS_SPLITS = 10
NOT_COMPUTED = ("not computed: no classifier logits (config.eval.inception_logits_path is empty; the FID "
                "Inception weights stop at pool_3)")


class ProtocolError(ValueError):
  """A protocol setting or file that cannot be used; one line naming the fix."""


def _rgb(x: np.ndarray) -> np.ndarray:
  return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def _sha1_file(path: str) -> str:
  h = hashlib.sha1()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def inception_weights(config) -> tuple[str, dict]:
  """(path, params) of the FID Inception weights named by config.eval.inception_path ('' counts as 'auto' here:
  the protocol is the Inception FID)."""
  from dsm_jax.eval import inception  # noqa: PLC0415
  path = config.eval.inception_path
  try:
    full = inception.find_weights("" if path in ("", "auto") else path)
  except FileNotFoundError as e:
    raise ProtocolError(str(e)) from None
  return full, inception.load_params(full)


def stats_dir(config, dataset) -> str:
  d = str(config.eval.fid_stats_dir)
  if d:
    return os.path.expanduser(d)
  from dsm_jax.data import folder  # noqa: PLC0415
  return os.path.join(folder.default_data_dir(getattr(dataset, "data_dir", None)), "fid_stats")


def _ref_split(config) -> str:
  split = str(config.eval.fid_ref_split)
  if split not in REF_SPLITS:
    raise ProtocolError(f"config.eval.fid_ref_split={split!r}: must be one of {list(REF_SPLITS)} (the papers: "
                        "train)")
  return split


def stats_path(config, dataset, weights_path: str) -> str:
  """Where the reference statistics of config's dataset, geometry and split go."""
  split = _ref_split(config)
  images = dataset.split_uint8(split)
  data_fp = hashlib.sha1(np.ascontiguousarray(images).view(np.uint8).data).hexdigest()[:12]
  g = dataset.geometry
  h, w, c = dataset.shape
  name = (f"{dataset.name}-{h}x{w}x{c}-crop{g.crop}-size{g.size}-pad{g.pad}-{split}-{data_fp}"
          f"-w{_sha1_file(weights_path)[:8]}.npz")
  return os.path.join(stats_dir(config, dataset), name)


def _features_of(params, images_u8: np.ndarray, progress: bool, desc: str) -> np.ndarray:
  from dsm_jax.eval import inception  # noqa: PLC0415
  out = np.empty((len(images_u8), inception.FEATURE_DIM), np.float32)
  bar = None
  if progress:
    from tqdm.auto import tqdm  # noqa: PLC0415
    bar = tqdm(total=len(images_u8), desc=desc, unit="image", dynamic_ncols=True, mininterval=1.0)
  for lo in range(0, len(images_u8), FEATURE_CHUNK):
    chunk = images_u8[lo:lo + FEATURE_CHUNK]
    out[lo:lo + len(chunk)] = inception.features(params, _rgb(chunk))
    if bar is not None:
      bar.update(len(chunk))
  if bar is not None:
    bar.close()
  return out


def reference_stats(config, dataset, progress: bool = True, weights=None) -> dict:
  """{'mu', 'sigma', 'n', 'split', 'path'}: the cached statistics, computed and written first if absent."""
  from dsm_jax.workdir import write_npz  # noqa: PLC0415
  weights_path, params = weights or inception_weights(config)
  path = stats_path(config, dataset, weights_path)
  split = _ref_split(config)
  if os.path.isfile(path):
    with np.load(path) as z:
      return {"mu": z["mu"], "sigma": z["sigma"], "n": int(z["n"]), "split": split, "path": path}
  images = dataset.split_uint8(split)
  if len(images) < 2:
    raise ProtocolError(f"config.eval.fid_ref_split={split!r}: {dataset.name} has {len(images)} images in that "
                        "split; need at least 2")
  feats = _features_of(params, images, progress, f"fid_stats {dataset.name}/{split}")
  mu, sigma = fid.gaussian_stats(feats)
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_npz(path, mu=mu, sigma=sigma, n=np.asarray(len(images)))
  except OSError as e:
    raise ProtocolError(f"cannot write the FID statistics to {path} ({e.strerror}); set "
                        "--config.eval.fid_stats_dir=... to a writable directory") from None
  logging.info("FID reference statistics of %d %s images written to %s", len(images), split, path)
  return {"mu": mu, "sigma": sigma, "n": len(images), "split": split, "path": path}


def batch_size(config) -> int:
  n = int(config.eval.fid_n)
  b = int(config.eval.fid_batch_size) or int(config.sampling.get("batch_size", 0) or 0) or n
  return min(b, n)


def sample_dir(outdir: str, config) -> str:
  return os.path.join(outdir, "samples", f"fid_{int(config.eval.fid_n)}")


def protocol_samples(config, method, dataset, params, key, outdir: str, step: int, progress: bool = True) -> str:
  """Draws (or completes) the eval.fid_n protocol samples into sample_dir(outdir); returns that directory."""
  n, bsz = int(config.eval.fid_n), batch_size(config)
  draw, draw_params = method.main_draw(params, key) if method.main_draw is not None else (method.draw, params)
  draw_params = sampling.replicate(draw_params)
  key = jax.random.fold_in(key, _FID_TAG)

  def draw_batch(k, m):
    x = np.asarray(dataset.to_unit(np.asarray(jax.device_get(draw(draw_params, k, m))["x"]), clip=False),
                   np.float32)
    chex.assert_shape(x, (m,) + tuple(dataset.shape))
    finite = np.all(np.isfinite(x.reshape(m, -1)), axis=1)
    u8 = np.round(np.clip(np.nan_to_num(x), 0.0, 1.0) * 255.0).astype(np.uint8)
    return {"x": u8, "finite": finite}

  out = sample_dir(outdir, config)
  meta = {"method": config.method, "seed": int(config.seed), "step": int(step), "dataset": dataset.name,
          "shape": list(dataset.shape)}
  sampling.sample_to_disk(draw_batch, key, n, bsz, out, meta, progress=progress, desc=f"fid samples (n={n})")
  return out


def sample_features(params_incep, out: str, n: int, bsz: int, progress: bool = True) -> tuple[np.ndarray, int]:
  """(pool_3 features of the finite samples, number of non-finite ones); features cached per batch."""
  from dsm_jax.eval import inception  # noqa: PLC0415
  total = sampling.n_batches(n, bsz)
  if sampling.complete_batches(out, n, bsz) < total:
    raise ProtocolError(f"{out}: the protocol sample set is incomplete; rerun --mode=sample or eval to finish it")
  feats, bad = [], 0
  bar = None
  todo = [i for i in range(total) if not os.path.isfile(os.path.join(out, f"feat_{i:06d}.npy"))]
  if progress and todo:
    from tqdm.auto import tqdm  # noqa: PLC0415
    bar = tqdm(total=total, initial=total - len(todo), desc=f"fid features (n={n})", unit="batch",
               dynamic_ncols=True, mininterval=1.0)
  for i in range(total):
    with np.load(os.path.join(out, f"batch_{i:06d}.npz")) as z:
      x, finite = z["x"], z["finite"]
    fpath = os.path.join(out, f"feat_{i:06d}.npy")
    if os.path.isfile(fpath):
      f = np.load(fpath)
    else:
      f = inception.features(params_incep, _rgb(x)) if len(x) else np.zeros((0, inception.FEATURE_DIM), np.float32)
      tmp = os.path.join(out, f".feat_{i:06d}.tmp.npy")
      np.save(tmp, f)
      os.replace(tmp, fpath)
      if bar is not None:
        bar.update(1)
    feats.append(f[finite])
    bad += int((~finite).sum())
  if bar is not None:
    bar.close()
  return np.concatenate(feats), bad


def load_logits_layer(path: str) -> tuple[np.ndarray, np.ndarray]:
  """(w [2048, K], b [K]) from an .npz with 'w' (and optionally 'b')."""
  from dsm_jax.eval import inception  # noqa: PLC0415
  full = os.path.expanduser(path)
  if not os.path.isfile(full):
    raise ProtocolError(f"config.eval.inception_logits_path={path!r}: no such file")
  try:
    with np.load(full) as z:
      w = np.asarray(z["w"], np.float64)
      b = np.asarray(z["b"], np.float64) if "b" in z.files else np.zeros(w.shape[-1])
  except Exception as e:  # noqa: BLE001
    raise ProtocolError(f"config.eval.inception_logits_path={path!r}: not an .npz with 'w' [2048, K] "
                        f"({type(e).__name__}: {e})") from None
  if w.ndim != 2 or w.shape[0] != inception.FEATURE_DIM or b.shape != (w.shape[1],):
    raise ProtocolError(f"config.eval.inception_logits_path={path!r}: 'w' must be [{inception.FEATURE_DIM}, K] "
                        f"and 'b' [K], got {w.shape} and {b.shape}")
  return w, b


def inception_score_entry(config, feats: np.ndarray, prefix: str) -> dict:
  """{prefix_inception_score, prefix_inception_score_std} from eval.inception_logits_path, or the string
  NOT_COMPUTED without one."""
  path = str(config.eval.inception_logits_path)
  if not path:
    return {f"{prefix}inception_score": NOT_COMPUTED}
  w, b = load_logits_layer(path)
  if len(feats) < IS_SPLITS:
    return {f"{prefix}inception_score": f"not computed: {len(feats)} finite samples (need {IS_SPLITS})"}
  mean, std = fid.inception_score(np.asarray(feats, np.float64) @ w + b, IS_SPLITS)
  return {f"{prefix}inception_score": mean, f"{prefix}inception_score_std": std}


def validate(config) -> None:
  """The protocol's settings and files, checked before any compute (ProtocolError, one line)."""
  e = config.eval
  for k in ("fid_n", "fid_batch_size"):
    if int(e[k]) < 0:
      raise ProtocolError(f"config.eval.{k}={e[k]}: must be >= 0")
  _ref_split(config)
  from dsm_jax.eval import inception  # noqa: PLC0415
  if str(e.inception_path) not in ("", "auto") and not os.path.isfile(os.path.expanduser(str(e.inception_path))):
    raise ProtocolError(f"config.eval.inception_path={e.inception_path!r}: no such file")
  if str(e.inception_path) in ("", "auto"):
    try:
      inception.find_weights("")
    except FileNotFoundError as err:
      raise ProtocolError(f"the FID protocol (config.eval.fid_n > 0) needs Inception weights: {err}") from None
  if str(e.inception_logits_path):
    load_logits_layer(str(e.inception_logits_path))


def evaluate(config, method, dataset, params, key, outdir: str, step: int, progress: bool = True) -> dict:
  """The protocol's eval.json entries (module docstring)."""
  weights = inception_weights(config)
  ref = reference_stats(config, dataset, progress, weights)
  out = protocol_samples(config, method, dataset, params, key, outdir, step, progress)
  feats, bad = sample_features(weights[1], out, int(config.eval.fid_n), batch_size(config), progress)
  res = {"protocol_n": int(len(feats)), "protocol_nonfinite": bad, "protocol_ref_split": ref["split"],
         "protocol_ref_n": ref["n"]}
  if len(feats) >= 2:
    mu, sigma = fid.gaussian_stats(feats)
    res["protocol_fid"] = fid.frechet_distance(mu, sigma, ref["mu"], ref["sigma"])
  else:
    res["protocol_fid"] = float("nan")
  res.update(inception_score_entry(config, feats, "protocol_"))
  return res

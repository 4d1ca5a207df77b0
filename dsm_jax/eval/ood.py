"""Out-of-distribution sets and AUROC tables for models that score images (MDSM, Denoising-EBM).

A score function maps a batch in model space to one number per image, *higher = more in-distribution*
(e.g. -E(x) for an energy). Every AUROC is "in-distribution test images are the positives":
1.0 means every test image outscores every OOD image, 0.5 is chance.

Synthetic OOD sets, built from the in-distribution test images and need no download (the sets of
Du & Mordatch 2019 / Grathwohl et al. 2020 / Zeng's Denoising-EBM paper):
  noise     i.i.d. uniform pixels over the data range
  constant  one random colour per image (uniform per channel), every pixel equal
  interp    (x_i + x_j) / 2 for random pairs of test images ("Interp.")
Real OOD datasets come by tfds name (`eval.ood_datasets`), resized to the in-distribution shape;
one that is not prepared is reported in eval.json as not computed (never invented).
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional

import jax
import numpy as np

from dsm_jax.eval import metrics

SYNTHETIC = ("noise", "constant", "interp")


def synthetic_sets(key: jax.Array, x_test: np.ndarray, lo: float, hi: float,
                   names: Iterable[str] = SYNTHETIC) -> dict[str, np.ndarray]:
  """OOD images shaped like x_test ([N, H, W, C], model space with range [lo, hi]); explicit key."""
  x_test = np.asarray(x_test, np.float32)
  if x_test.ndim != 4 or x_test.shape[0] < 2:
    raise ValueError(f"x_test must be [N >= 2, H, W, C], got shape {x_test.shape}")
  if not hi > lo:
    raise ValueError(f"need hi > lo, got lo={lo}, hi={hi}")
  n, h, w, c = x_test.shape
  k_noise, k_const, k_i, k_j = jax.random.split(key, 4)
  out = {}
  for name in names:
    if name == "noise":
      out[name] = np.asarray(jax.random.uniform(k_noise, x_test.shape, minval=lo, maxval=hi))
    elif name == "constant":
      col = np.asarray(jax.random.uniform(k_const, (n, 1, 1, c), minval=lo, maxval=hi))
      out[name] = np.broadcast_to(col, x_test.shape).astype(np.float32)
    elif name == "interp":
      i = np.asarray(jax.random.randint(k_i, (n,), 0, n))
      j = np.asarray(jax.random.randint(k_j, (n,), 0, n - 1))
      j = j + (j >= i)                       # a different image
      out[name] = 0.5 * (x_test[i] + x_test[j])
    else:
      raise ValueError(f"unknown synthetic OOD set {name!r}; choose from {SYNTHETIC}")
  return out


def batched_scores(score_fn: Callable, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
  """score_fn over x in batches (the last batch padded so one compiled shape serves every call)."""
  x = np.asarray(x, np.float32)
  n = x.shape[0]
  out = []
  for s in range(0, n, batch_size):
    b = x[s:s + batch_size]
    pad = batch_size - b.shape[0]
    if pad and n > batch_size:
      b = np.concatenate([b, np.repeat(b[-1:], pad, axis=0)])
    out.append(np.asarray(score_fn(b)).reshape(-1)[:min(batch_size, n - s)])
  return np.concatenate(out)


def auroc_table(score_fn: Callable, x_in: np.ndarray, ood: dict, batch_size: int = 256,
                prefix: str = "auroc_") -> dict:
  """{prefix + name: AUROC(in vs ood[name])}; plus mean scores, and a count of non-finite scores
  (AUROC is then computed on the finite ones, and the count says so)."""
  s_in = batched_scores(score_fn, x_in, batch_size)
  out = {"ood_score_mean_in": float(np.mean(s_in[np.isfinite(s_in)])) if np.isfinite(s_in).any() else float("nan")}
  n_bad = int((~np.isfinite(s_in)).sum())
  for name, x in ood.items():
    s = batched_scores(score_fn, x, batch_size)
    n_bad += int((~np.isfinite(s)).sum())
    a, b = s_in[np.isfinite(s_in)], s[np.isfinite(s)]
    out[f"{prefix}{name}"] = metrics.auroc(a, b) if a.size and b.size else float("nan")
    out[f"ood_score_mean_{name}"] = float(np.mean(b)) if b.size else float("nan")
  out["ood_n_nonfinite_scores"] = n_bad
  return out


def tfds_set(name: str, like, data_dir: Optional[str], n: int, seed: int = 0) -> np.ndarray:
  """Test images of tfds dataset `name`, scaled and resized like the ImageDataset `like`
  (grey <-> RGB converted by channel mean / repeat). Raises DataError when it is not available."""
  from dsm_jax.data import images as images_lib
  h, w, c = like.shape
  pad = like.geometry.pad
  geo = images_lib.resolve_geometry(name, {"image_size": 0 if pad else h, "pad_to": pad})
  x_u8, _ = images_lib.load_split(name, "test", data_dir, geo)
  if x_u8.shape[1:3] != (h, w):
    raise images_lib.DataError(f"OOD set {name}: images are {x_u8.shape[1:3]}, need {(h, w)}")
  x = x_u8.astype(np.float32) / float(images_lib.MAX_VALUE.get(name, 255))
  if x.shape[-1] != c:
    x = x.mean(-1, keepdims=True) if c == 1 else np.repeat(x[..., :1], c, axis=-1)
  rng = np.random.default_rng(seed)
  x = x[rng.permutation(x.shape[0])[:n]]
  return np.asarray(like.from_unit(x), np.float32)


def ood_eval(score_fn: Callable, dataset, key: jax.Array, n: int = 1000,
             tfds_names: Iterable[str] = (), data_dir: Optional[str] = None, batch_size: int = 256) -> dict:
  """The full OOD block of eval.json for an image dataset: synthetic sets always, tfds sets when present.
  Not-prepared tfds sets appear as `ood_<name>_not_computed: 1` (with the reason logged)."""
  import logging
  x_test = dataset.test_images()
  idx = np.asarray(jax.random.permutation(jax.random.fold_in(key, 1), x_test.shape[0]))[:n]
  x_in = x_test[idx]
  lo, hi = (-1.0, 1.0) if getattr(dataset, "scale", "01") == "-11" else (0.0, 1.0)
  sets = synthetic_sets(jax.random.fold_in(key, 2), x_in, lo, hi)
  out = {}
  for name in tfds_names:
    try:
      sets[name] = tfds_set(name, dataset, data_dir, n)
    except Exception as e:  # noqa: BLE001 - a missing dataset must not lose the rest of the evaluation
      logging.warning("OOD set %s not computed: %s", name, str(e).splitlines()[0] if str(e) else type(e).__name__)
      out[f"ood_{name}_not_computed"] = 1
  out.update(auroc_table(score_fn, x_in, sets, batch_size))
  return out

"""Inpainting evaluation shared by every image model with a score or an energy (`--mode=inpaint`).

A mask hides part of each of the held-out test images (`make_mask`: the lower half, a centre square or random
pixels; 1 = known); the method's `inpaint(params, key, known, mask)` completes the hidden part by
samplers.inpaint_langevin. `evaluate_completions` reports, with the feature classifier of
dsm_jax/eval/feature_metrics.py (trained on the training split):
  inpaint_accuracy        its accuracy on the completed digits against their true labels,
  inpaint_accuracy_blank  the same on the masked inputs with the hidden pixels left at 0 (the background),
  inpaint_accuracy_real   the same on the real digits (its test accuracy on these images),
  inpaint_mse_hidden      the mean squared error per hidden value, in [0, 1] pixel space, between completion and
                          truth (with inpaint_mse_hidden_blank: the same for the blank input, and
                          inpaint_mse_hidden_mean: for the training split's mean image in the hidden part).
`figure` writes triples masked input | completion | truth."""
from __future__ import annotations

import os
import time

import jax
import numpy as np

from dsm_jax import viz
from dsm_jax.eval import feature_metrics

MASKS = ("lower_half", "centre_square", "random_pixels")


def make_mask(name: str, shape, n: int, key, frac: float = 0.5, square: int = 14) -> np.ndarray:
  """[n, H, W, C] float32, 1 where the pixel is known: 'lower_half' hides rows H/2.., 'centre_square' a square of
  side `square` in the middle, 'random_pixels' each pixel (all channels) independently with probability frac."""
  h, w, c = (int(d) for d in shape)
  m = np.ones((n, h, w, c), np.float32)
  if name == "lower_half":
    m[:, h // 2:] = 0.0
  elif name == "centre_square":
    s = min(int(square), h, w)
    top, left = (h - s) // 2, (w - s) // 2
    m[:, top:top + s, left:left + s] = 0.0
  elif name == "random_pixels":
    hide = np.asarray(jax.random.bernoulli(key, float(frac), (n, h, w, 1)))
    m = np.broadcast_to(np.where(hide, 0.0, 1.0), (n, h, w, c)).astype(np.float32)
  else:
    raise ValueError(f"unknown inpainting mask {name!r}; use one of {list(MASKS)}")
  return m


def mask_from_config(config, dataset, n: int, key) -> np.ndarray:
  e = config.eval
  return make_mask(e.inpaint_mask, dataset.shape, n, key, float(e.inpaint_frac), int(e.inpaint_square))


def complete(inpaint_fn, params, key, known: np.ndarray, mask: np.ndarray, batch_size: int,
             progress=None) -> np.ndarray:
  """inpaint_fn(params, key_i, known_i, mask_i) over batches of batch_size (the last one padded, so one compiled
  program serves every batch); batch i uses fold_in(key, i). The parameters go in as host arrays, so the chains
  may be split over every local device (sampling.start) whatever device the checkpoint was restored to."""
  params = jax.device_get(params)
  n = len(known)
  bs = min(int(batch_size) or n, n)
  out = []
  for i, lo in enumerate(range(0, n, bs)):
    kb, mb = known[lo:lo + bs], mask[lo:lo + bs]
    k = len(kb)
    if k < bs:
      kb = np.concatenate([kb, np.repeat(kb[-1:], bs - k, 0)])
      mb = np.concatenate([mb, np.repeat(mb[-1:], bs - k, 0)])
    out.append(np.asarray(jax.device_get(inpaint_fn(params, jax.random.fold_in(key, i), kb, mb)))[:k])
    if progress is not None:
      progress(k)
  return np.concatenate(out)


def evaluate_completions(dataset, completed_unit, truth_unit, mask, labels, cache_dir=None) -> dict:
  """The inpaint_* metrics (module docstring) for images in [0, 1]."""
  completed_unit = np.clip(np.nan_to_num(np.asarray(completed_unit, np.float32)), 0.0, 1.0)
  truth_unit = np.asarray(truth_unit, np.float32)
  hidden = 1.0 - np.asarray(mask, np.float32)
  blank = truth_unit * (1.0 - hidden)
  mean_img = np.asarray(dataset.to_unit(dataset.train_images()), np.float32).mean(0)
  mean_fill = blank + hidden * mean_img[None]
  n_hidden = max(float(hidden.sum()), 1.0)
  mse = lambda x: float(np.sum(hidden * (x - truth_unit) ** 2) / n_hidden)
  out = {"inpaint_mse_hidden": mse(completed_unit), "inpaint_mse_hidden_blank": mse(blank),
         "inpaint_mse_hidden_mean": mse(mean_fill), "inpaint_n": int(len(truth_unit))}
  feature_fn, _ = feature_metrics.get_classifier(dataset, cache_dir)
  labels = np.asarray(labels)
  acc = lambda x: float(np.mean(feature_fn.features_and_logits(x)[1].argmax(-1) == labels))
  out.update({"inpaint_accuracy": acc(completed_unit), "inpaint_accuracy_blank": acc(blank),
              "inpaint_accuracy_real": acc(truth_unit)})
  return out


def figure(path: str, completed_unit, truth_unit, mask, n_rows: int = 8, n_cols: int = 4) -> str:
  """The first n_rows * n_cols test images as triples masked input (hidden pixels grey) | completion | truth,
  n_cols triples per row."""
  truth_unit = np.asarray(truth_unit, np.float32)
  mask = np.asarray(mask, np.float32)
  shown = truth_unit * mask + 0.5 * (1.0 - mask)
  k = min(n_rows * n_cols, len(truth_unit))
  cells = []
  for i in range(k):
    cells += [shown[i], np.asarray(completed_unit[i], np.float32), truth_unit[i]]
  return viz.image_grid(path, np.stack(cells), nrow=3 * n_cols)


def run(config, dataset, method, params, key, outdir: str, progress: bool = True) -> dict:
  """--mode=inpaint: complete the first eval.inpaint_n test images hidden by the config's mask; writes
  inpaint/inpaint.npz (x: completions, truth, mask, all in [0, 1]) and inpaint/inpaint.png under outdir (beside
  samples/, so --mode=eval does not read the completions as a sample set); returns the metrics."""
  from dsm_jax.validation import ConfigError  # noqa: PLC0415
  if not hasattr(dataset, "test_images") or dataset.test_labels() is None:
    raise ConfigError("data.dataset", f"--mode=inpaint needs a labelled image dataset (e.g. 'mnist5k'), got "
                                      f"{config.data.dataset!r}")
  n = min(int(config.eval.inpaint_n), int(dataset.num_test))
  x = np.asarray(dataset.test_images()[:n], np.float32)
  labels = dataset.test_labels()[:n]
  k_mask, k_fill = jax.random.split(key)
  mask = mask_from_config(config, dataset, n, k_mask)
  bar = None
  if progress:
    from tqdm import tqdm  # noqa: PLC0415
    bar = tqdm(total=n, desc="inpaint", unit="img")
  tic = time.perf_counter()
  filled = complete(method.inpaint, params, k_fill, x * mask, mask, int(config.eval.inpaint_batch_size),
                    bar.update if bar is not None else None)
  seconds = time.perf_counter() - tic
  if bar is not None:
    bar.close()
  filled_u = np.asarray(dataset.to_unit(filled), np.float32)
  truth_u = np.asarray(dataset.to_unit(x), np.float32)
  out = evaluate_completions(dataset, filled_u, truth_u, mask, labels, config.eval.feature_cache_dir or None)
  out["inpaint_time_s"] = seconds
  sample_dir = os.path.join(outdir, "inpaint")
  os.makedirs(sample_dir, exist_ok=True)
  from dsm_jax.workdir import write_npz  # noqa: PLC0415
  write_npz(os.path.join(sample_dir, "inpaint.npz"), x=filled_u, truth=truth_u, mask=mask)
  figure(os.path.join(sample_dir, "inpaint.png"), filled_u, truth_u, mask)
  return out

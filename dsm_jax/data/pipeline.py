"""Dataset dispatch from a config's `data` section."""
from __future__ import annotations

from dsm_jax.data import toy


class DataError(ValueError):
  """A dataset that cannot be loaded; the message names the fix."""


def get_dataset(data_config):
  name = data_config.dataset
  if name in toy.TOY_DATASETS:
    return toy.get_toy(name)
  raise DataError(f"config.data.dataset: unknown dataset {name!r}; toy datasets: {sorted(toy.TOY_DATASETS)}")

"""One file per paper. `build(config, dataset)` returns the `Method` the runner trains and samples."""
from __future__ import annotations

from dsm_jax.validation import ConfigError


def _registry():
  from dsm_jax.methods import mdsm, ncsn, score_matching
  return {
      "ncsn": ncsn.build,
      "dsm": score_matching.build,
      "esm": score_matching.build,
      "ssm": score_matching.build,
      "mdsm": mdsm.build,
  }


METHODS = ("ncsn", "dsm", "esm", "ssm", "mdsm")


def build(config, dataset):
  reg = _registry()
  if config.method not in reg:
    raise ConfigError("method", f"unknown method {config.method!r}; choose from {sorted(reg)}")
  return reg[config.method](config, dataset)

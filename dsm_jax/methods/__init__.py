"""One file per paper; each registers its build function and its config defaults (methods/base.py)."""
from __future__ import annotations

from dsm_jax.methods import base
from dsm_jax.methods import dde, debm, dvi, mdsm, ncsn, score_matching  # noqa: F401  (they register themselves)
from dsm_jax.methods.base import Method  # noqa: F401
from dsm_jax.validation import ConfigError


def names() -> list:
  return sorted(base.registered())


def get(name: str) -> base.Registration:
  reg = base.registered()
  if name not in reg:
    raise ConfigError("method", f"unknown method {name!r}; choose from {sorted(reg)}")
  return reg[name]


def build(config, dataset) -> Method:
  return get(config.method).build(config, dataset)


def defaults(name: str) -> dict:
  """The method's own config keys, {section: {key: value}}."""
  return get(name).defaults(name)

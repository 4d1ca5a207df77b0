"""The model registry: every network registers its builder and the config keys it reads, with their defaults.

A network's config section holds `name` and exactly the keys its builder declared (configs build it with
`section(name, **overrides)` or switch a section to another network with `set_network`). `build(section, shape,
prefix, **context)` checks the values (a ConfigError naming `<prefix>.<key>`) and returns the Flax module. The
context is what the method supplies, not the config: a noise ladder `sigmas`, `conditional`, a denoiser's
`sigma`, whether a DenseNet is a `generator`.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Callable

import ml_collections

from dsm_jax.validation import ConfigError


@dataclasses.dataclass(frozen=True)
class ModelEntry:
  builder: Callable
  defaults: dict


_MODELS: dict = {}


def register_model(name: str, **defaults):
  """Decorator: `builder(cfg, shape, prefix, **context) -> nn.Module` is model `name`; `defaults` are its keys."""
  def deco(builder):
    if name in _MODELS:
      raise ValueError(f"model {name!r} registered twice")
    _MODELS[name] = ModelEntry(builder, dict(defaults))
    return builder
  return deco


def names() -> list:
  return sorted(_MODELS)


def defaults(name: str) -> dict:
  """{'name': name, key: default, ...} for model `name`."""
  if name not in _MODELS:
    raise ConfigError("model.name", f"unknown model {name!r}; choose from {names()}")
  return {"name": name, **_MODELS[name].defaults}


def section(name: str, **overrides) -> ml_collections.ConfigDict:
  """A network's config section: model `name`'s keys at their defaults, then `overrides`."""
  out = ml_collections.ConfigDict(defaults(name))
  for k, v in overrides.items():
    if k not in out:
      raise ConfigError(f"model.{k}", f"model {name!r} has no key {k!r}; its keys: {sorted(out)}")
    with out.ignore_type():
      out[k] = v
  return out


def set_network(cfg, name: str, **overrides) -> None:
  """Turns cfg (a section holding a network and possibly a method's own keys) into network `name`: the keys of
  its current network go, `name`'s keys come in at their defaults, then `overrides`."""
  old = _MODELS.get(cfg.name) if "name" in cfg else None
  if old is not None:
    for k in old.defaults:
      if k in cfg:
        del cfg[k]
  new = section(name, **overrides)
  for k in new:
    with cfg.ignore_type():
      cfg[k] = new[k]


def build(cfg, shape, prefix: str = "model", **context):
  """The Flax module of the network in config section cfg, for examples of shape `shape`."""
  name = cfg.get("name", None) if hasattr(cfg, "get") else None
  if name not in _MODELS:
    raise ConfigError(f"{prefix}.name", f"unknown model {name!r}; choose from {names()}")
  missing = [k for k in _MODELS[name].defaults if k not in cfg]
  if missing:
    raise ConfigError(f"{prefix}.{missing[0]}", f"missing: model {name!r} reads {sorted(_MODELS[name].defaults)} "
                                                "(build its section with dsm_jax.models.section)")
  builder = _MODELS[name].builder
  takes = inspect.signature(builder).parameters
  context = {k: v for k, v in context.items() if k in takes}  # what this network needs of the method's context
  return builder(cfg, tuple(int(d) for d in shape), prefix, **context)


# ------------------------------------------------------------------------------------ checks for builders
def widths(cfg, key: str, prefix: str) -> tuple:
  v = cfg[key]
  ok = isinstance(v, (tuple, list)) and len(v) > 0 and all(
      isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in v)
  if not ok:
    raise ConfigError(f"{prefix}.{key}", f"must be a non-empty tuple of positive widths, e.g. (128, 128); got {v!r}")
  return tuple(v)


def pos_int(cfg, key: str, prefix: str) -> int:
  v = cfg[key]
  if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
    raise ConfigError(f"{prefix}.{key}", f"must be a positive integer, got {v!r}")
  return v


def choice(cfg, key: str, prefix: str, options) -> str:
  v = cfg[key]
  if v not in options:
    raise ConfigError(f"{prefix}.{key}", f"must be one of {sorted(options)}, got {v!r}")
  return v


def flag(cfg, key: str, prefix: str) -> bool:
  v = cfg[key]
  if not isinstance(v, bool):
    raise ConfigError(f"{prefix}.{key}", f"must be True or False, got {v!r}")
  return v


def number(cfg, key: str, prefix: str, positive: bool = False) -> float:
  v = cfg[key]
  if isinstance(v, bool) or not isinstance(v, (int, float)) or (positive and not v > 0):
    raise ConfigError(f"{prefix}.{key}", f"must be a{' positive' if positive else ''} number, got {v!r}")
  return float(v)


def dtype(cfg, prefix: str):
  import jax.numpy as jnp  # noqa: PLC0415
  return jnp.dtype(choice(cfg, "dtype", prefix, ("float32", "bfloat16")))


def image_shape(shape, name: str, prefix: str, multiple: int = 1) -> tuple:
  if len(shape) != 3:
    raise ConfigError(f"{prefix}.name", f"{name} takes images [H, W, C], the data has shape {tuple(shape)}")
  if shape[0] % multiple or shape[1] % multiple:
    raise ConfigError("data.image_size", f"{name} needs H and W divisible by {multiple}, got {shape[0]}x{shape[1]}")
  return shape


def vector_shape(shape, name: str, prefix: str) -> tuple:
  if len(shape) != 1:
    raise ConfigError(f"{prefix}.name", f"{name} takes flat vectors, the data has shape {tuple(shape)}")
  return shape

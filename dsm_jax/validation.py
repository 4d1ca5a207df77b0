"""Config checks that stop before any compute with one line naming the key and the fix."""
from __future__ import annotations

import math


class ConfigError(ValueError):
  """A bad config value. str(e) is one line: 'config.<key>: <what is wrong and how to fix it>'."""

  def __init__(self, key: str, message: str):
    self.key = key
    super().__init__(f"config.{key}: {message}")


def require(cond: bool, key: str, message: str) -> None:
  if not cond:
    raise ConfigError(key, message)


def get(config, key: str):
  """config.a.b by dotted name, with a ConfigError naming the key if it is missing."""
  node = config
  for part in key.split("."):
    try:
      node = node[part]
    except (KeyError, AttributeError):
      raise ConfigError(key, "missing from the config") from None
  return node


def positive(config, key: str, integer: bool = False, allow_zero: bool = False) -> None:
  v = get(config, key)
  kind = int if integer else (int, float)
  if isinstance(v, bool) or not isinstance(v, kind):
    raise ConfigError(key, f"must be {'an integer' if integer else 'a number'}, got {v!r}")
  if not math.isfinite(v):
    raise ConfigError(key, f"must be a finite number, got {v!r}")
  if v < 0 or (v == 0 and not allow_zero):
    raise ConfigError(key, f"must be {'>= 0' if allow_zero else '> 0'}, got {v!r}")


def one_of(config, key: str, choices) -> None:
  v = get(config, key)
  if v not in choices:
    raise ConfigError(key, f"must be one of {list(choices)}, got {v!r}")


def interval(config, key: str) -> None:
  """A (low, high) pair of numbers with low < high."""
  v = get(config, key)
  ok = (isinstance(v, (tuple, list)) and len(v) == 2
        and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in v) and v[0] < v[1])
  if not ok:
    raise ConfigError(key, f"must be (low, high) with low < high, got {v!r}")

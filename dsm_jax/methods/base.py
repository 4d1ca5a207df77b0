"""What a method gives the trainer and the runner."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import numpy as np


@dataclasses.dataclass
class Method:
  """One paper's algorithm, as the runner uses it.

  init_params(key) -> params
  loss_fn(params, key, batch) -> (loss, aux)     used by the default train step, or
  train_step(optimizer) -> (state, batch) -> (state, metrics)  for methods with several networks
  init_opt(optimizer, params) -> opt_state         optional; e.g. one optimizer state per network
  sample(params, key) -> {name: array}            'x' is the main sample set ([N, ...], data space)
  evaluate(params, key, samples) -> {metric: number}
  plot(samples, params, sample_dir) -> [paths]    optional pictures beyond the default
  score(params) -> score_fn(x, sigma)              optional; the model's score as its sampler uses it
  """
  name: str
  init_params: Callable[[Any], Any]
  loss_fn: Optional[Callable] = None
  train_step: Optional[Callable] = None
  init_opt: Optional[Callable] = None
  sample: Optional[Callable] = None
  evaluate: Optional[Callable] = None
  plot: Optional[Callable] = None
  score: Optional[Callable] = None


def uniform_init(key, n: int, shape, lo: float, hi: float):
  import jax
  return jax.random.uniform(key, (n,) + tuple(shape), minval=lo, maxval=hi)


def as_numpy(tree):
  import jax
  return jax.tree_util.tree_map(lambda a: np.asarray(a), jax.device_get(tree))

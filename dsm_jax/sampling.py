"""Drawing n samples from a method's sampler: in batches, with the chains of each batch split over the local
devices, every batch with its own key, parameters passed as arguments (one compiled program per batch size,
reused for every call and every set of parameters).

A method writes `draw(params, key, n) -> {name: array}` (one batch of n chains, jit-able with n static; it
starts its chains with `start(x0)`), and `sample_in_batches(draw, params, key, n_total, batch_size)` returns
numpy arrays: the per-sample sets concatenated over the batches, everything else (trajectories, strips) from
the first batch."""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import numpy as np

from dsm_jax.samplers import shard_chains

start = shard_chains  # x0 [n, ...] split over the local devices along the chain axis (inside jit)


def compile_draw(draw: Callable) -> Callable:
  """draw(params, key, n) jitted with n static: the parameters are an argument, never a constant."""
  return jax.jit(draw, static_argnums=(2,))


def sample_in_batches(draw: Callable, params, key, n_total: int, batch_size: int = 0,
                      first_only: Sequence[str] = ()) -> dict:
  """n_total samples from draw (a compile_draw'n function) in batches of batch_size (0: one batch); batch i uses
  fold_in(key, i). Every set is concatenated over the batches, except those named in first_only (trajectories,
  strips), which come from batch 0."""
  n_batch = int(batch_size) or int(n_total)
  outs = []
  for i, lo in enumerate(range(0, int(n_total), n_batch)):
    n = min(n_batch, int(n_total) - lo)
    outs.append(jax.device_get(draw(params, jax.random.fold_in(key, i), n)))
  return {name: np.asarray(value) if name in first_only else np.concatenate([np.asarray(o[name]) for o in outs])
          for name, value in outs[0].items()}

"""Drawing n samples from a method's sampler: in batches, with the chains of each batch split over the local
devices, every batch with its own key, parameters passed as arguments (one compiled program per batch size,
reused for every call and every set of parameters).

A method writes `draw(params, key, n) -> {name: array}` (one batch of n chains, jit-able with n static; it
starts its chains with `start(x0)`), and `sample_in_batches(draw, params, key, n_total, batch_size)` returns
numpy arrays: the per-sample sets concatenated over the batches, everything else (trajectories, strips) from
the first batch.

Large sets (the papers' 50,000-sample FIDs) go to disk batch by batch with `sample_to_disk`, which a rerun
continues from the last complete batch."""
from __future__ import annotations

import json
import os
from typing import Callable, Sequence

import jax
import numpy as np

from dsm_jax.samplers import shard_chains

start = shard_chains  # x0 [n, ...] split over the local devices along the chain axis (inside jit)


def replicate(tree):
  """tree's arrays replicated on every local device (a draw splits its chains over them, so parameters committed
  to one device, as a restored checkpoint's are, would not fit its sharding); unchanged on one device."""
  from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: PLC0415
  devices = jax.local_devices()
  if len(devices) < 2 or jax.process_count() > 1:
    return tree
  return jax.device_put(tree, NamedSharding(Mesh(np.array(devices), ("chains",)), PartitionSpec()))


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


class SampleSetMismatch(ValueError):
  """A sample directory holds batches of another sample set (other n, batch size or checkpoint)."""


def _batch_path(out_dir: str, i: int) -> str:
  return os.path.join(out_dir, f"batch_{i:06d}.npz")


def n_batches(n_total: int, batch_size: int) -> int:
  return -(-int(n_total) // int(batch_size))


def complete_batches(out_dir: str, n_total: int, batch_size: int) -> int:
  """How many batches 0, 1, ... of the set are on disk (each file is written whole and renamed into place, so a
  file that exists is complete)."""
  k = 0
  while k < n_batches(n_total, batch_size) and os.path.isfile(_batch_path(out_dir, k)):
    k += 1
  return k


def sample_to_disk(draw_batch: Callable, key, n_total: int, batch_size: int, out_dir: str, meta: dict,
                   progress: bool = True, desc: str = "sample") -> int:
  """Draws n_total samples in batches of batch_size into out_dir/batch_<i>.npz, resumably.

  draw_batch(key, n) -> {name: numpy array [n, ...]} draws one batch (its chains split over the local devices by
  the method's draw); batch i uses fold_in(key, i), as `sample_in_batches` does, so the set does not depend on
  where a run was interrupted. Each batch is written atomically as soon as it is drawn; a rerun finds the
  complete batches and continues after them. `meta` (JSON-able: what identifies the set, e.g. n, batch size,
  checkpoint step, seed) is stored in out_dir/meta.json; batches of a set with other meta raise
  SampleSetMismatch. Returns the number of batches drawn by this call."""
  from dsm_jax.workdir import write_json, write_npz  # noqa: PLC0415
  n_total, batch_size = int(n_total), int(batch_size)
  if n_total < 1 or batch_size < 1:
    raise ValueError(f"sample_to_disk needs n_total >= 1 and batch_size >= 1, got {n_total}, {batch_size}")
  meta = {**meta, "n_total": n_total, "batch_size": batch_size}
  os.makedirs(out_dir, exist_ok=True)
  meta_path = os.path.join(out_dir, "meta.json")
  if os.path.isfile(meta_path):
    with open(meta_path) as f:
      old = json.load(f)
    if old != json.loads(json.dumps(meta)):
      diff = ", ".join(f"{k}: {old.get(k)!r} on disk, {v!r} now" for k, v in meta.items() if old.get(k) != v)
      raise SampleSetMismatch(f"{out_dir} holds another sample set ({diff}); remove it or write elsewhere")
  else:
    write_json(meta_path, meta)
  total = n_batches(n_total, batch_size)
  done = complete_batches(out_dir, n_total, batch_size)
  bar = None
  if progress and done < total:
    from tqdm.auto import tqdm  # noqa: PLC0415
    bar = tqdm(total=n_total, initial=min(done * batch_size, n_total), desc=desc, unit="sample",
               dynamic_ncols=True, mininterval=1.0)
  try:
    for i in range(done, total):
      n = min(batch_size, n_total - i * batch_size)
      out = draw_batch(jax.random.fold_in(key, i), n)
      write_npz(_batch_path(out_dir, i), **{k: np.asarray(v) for k, v in out.items()})
      if bar is not None:
        bar.update(n)
  finally:
    if bar is not None:
      bar.close()
  return total - done


def load_batches(out_dir: str, n_total: int, batch_size: int, name: str) -> np.ndarray:
  """Array `name` of every batch of a complete set, concatenated in batch order."""
  total = n_batches(n_total, batch_size)
  if complete_batches(out_dir, n_total, batch_size) < total:
    raise FileNotFoundError(f"{out_dir}: the sample set is incomplete; draw it first (sample_to_disk)")
  parts = []
  for i in range(total):
    with np.load(_batch_path(out_dir, i)) as z:
      parts.append(z[name])
  return np.concatenate(parts)

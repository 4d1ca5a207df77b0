"""The one training loop for every method.

A method gives `init(key) -> {name: params}` and `step(nets, key, batch, t) -> (nets, metrics)`, where nets maps
each network's name to its `NetState` (dsm_jax/train/state.py; buffers, such as DDE's snapshots, are plain
arrays beside them). The loop owns everything else: one optimizer per network (training.* with the overrides
in training.nets.<name>; a schedule counts that network's own updates over n_iters x updates per step), the
step's PRNG key, the step-level NaN guard, data-parallel sharding over a 1-D 'data' mesh, chunks of
steps_per_call steps per host round trip, orbax checkpoints, metrics.jsonl, TensorBoard, the progress bar, and
preemption (SIGTERM / SIGINT: finish the step, save, exit with PREEMPTED).

Determinism and resume: the batch of step t is a pure function of (seed, t), the key of step t is
fold_in(key, t), and the metrics of a partly logged window travel in the checkpoint, so a run restored at any
saved step continues exactly as an uninterrupted one.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import math
import os
import signal
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dsm_jax import checkpoint as ckpt_lib
from dsm_jax import platform, tensorboard
from dsm_jax.train.state import INHERIT, OPTIM_KEYS, OPTIMIZERS, SCHEDULES, NetState, tree_where
from dsm_jax.validation import one_of, positive, require
from dsm_jax.workdir import write_text

STATE_FORMAT = 2   # the layout of a checkpoint's state: {'step', 'key', 'n_skipped', 'nets': {name: NetState}}
PREEMPTED = 75     # exit status of a run stopped by SIGTERM / SIGINT after saving (EX_TEMPFAIL: rerun it)


class NonFiniteLossError(RuntimeError):
  """A NaN/Inf loss or gradient stopped the run; the message names the step, the loss terms and the
  newest good checkpoint."""


class Preempted(RuntimeError):
  """SIGTERM or SIGINT stopped the run after a checkpoint at the step it had reached; the message says how to
  resume."""


# ------------------------------------------------------------------------------------ config
def _check_optimizer(config, prefix: str, section, inherits: bool = False) -> None:
  """The optimizer keys of training (prefix 'training') or of a training.nets.<name> section (inherits: a key at
  its INHERIT value takes training's)."""
  def given(k):
    return not (inherits and section[k] == INHERIT[k])
  if given("optimizer"):
    one_of(config, f"{prefix}.optimizer", OPTIMIZERS)
  if given("schedule"):
    one_of(config, f"{prefix}.schedule", SCHEDULES)
  for k in ("lr", "beta1", "beta2", "adam_eps"):
    if given(k):
      positive(config, f"{prefix}.{k}")
  for k in ("weight_decay", "lr_final_frac", "grad_clip"):
    if given(k):
      positive(config, f"{prefix}.{k}", allow_zero=True)
  if given("warmup"):
    positive(config, f"{prefix}.warmup", integer=True, allow_zero=True)
  for k in ("beta1", "beta2"):
    if given(k):
      require(section[k] < 1.0, f"{prefix}.{k}", f"must be in (0, 1), got {section[k]!r}")


def validate(config, networks=()) -> None:
  """training.* and runtime.* checks, before any compute; `networks`: the method's trained networks."""
  platform.validate(config)
  t = config.training
  for k in ("n_iters",):
    positive(config, f"training.{k}", integer=True, allow_zero=True)
  for k in ("batch_size", "log_every", "ckpt_every", "max_to_keep", "steps_per_call"):
    positive(config, f"training.{k}", integer=True)
  one_of(config, "training.nan_policy", ("stop", "skip"))
  positive(config, "training.ema_rate", allow_zero=True)
  require(t.ema_rate < 1.0, "training.ema_rate", f"must be in [0, 1), got {t.ema_rate!r}")
  _check_optimizer(config, "training", t)
  for name in t.nets:
    require(name in networks, f"training.nets.{name}",
            f"names no network of method {config.method!r}; its networks: {sorted(networks)}")
    sec = t.nets[name]
    for k in sec:
      require(k in OPTIM_KEYS, f"training.nets.{name}.{k}", f"unknown optimizer key; choose from {list(OPTIM_KEYS)}")
    for k in OPTIM_KEYS:
      require(k in sec, f"training.nets.{name}.{k}", "missing (build the section with train.net_optimizer)")
    _check_optimizer(config, f"training.nets.{name}", sec, inherits=True)
  n_dev = platform.num_devices(config)
  require(t.batch_size % n_dev == 0, "training.batch_size",
          f"{t.batch_size} is not divisible by the {n_dev} devices in use; use a multiple of {n_dev} "
          "or set config.runtime.num_devices")


def optimizer_config(config, name: str) -> dict:
  """Network `name`'s optimizer settings: training.nets.<name>.<key>, or training.<key> where that inherits."""
  t = config.training
  own = t.nets[name] if name in t.nets else INHERIT
  return {k: (t[k] if own[k] == INHERIT[k] else own[k]) for k in OPTIM_KEYS}


# ------------------------------------------------------------------------------------ state
def init_state(config, method, key) -> dict:
  """{'step', 'key', 'n_skipped', 'nets'}: a NetState per trained network (its own optimizer), buffers as
  they are."""
  k_init, k_train = jax.random.split(key)
  params = method.init(k_init)
  missing = set(method.networks) - set(params)
  if missing:
    raise ValueError(f"method {method.name!r}: init gave no parameters for {sorted(missing)}")
  nets = {}
  for name, value in params.items():
    if name not in method.networks:
      nets[name] = value
      continue
    horizon = int(math.ceil(config.training.n_iters * float(method.networks[name])))
    nets[name] = NetState.from_settings(value, optimizer_config(config, name), horizon, config.training.ema_rate,
                                        slots=method.slots.get(name))
  return {"step": jnp.asarray(0, jnp.int32), "key": k_train, "n_skipped": jnp.asarray(0, jnp.int32), "nets": nets}


def sampling_params(nets: dict) -> dict:
  """{name: EMA (or parameters) of each network, buffers as they are}: what samplers and evaluation use."""
  return {k: (v.sampling_params if isinstance(v, NetState) else v) for k, v in nets.items()}


def guarded_step(method):
  """(state, batch) -> (state, metrics): the method's step at key fold_in(key, step), kept only if its loss is
  finite and every network accepted its updates; else the whole state stays (and n_skipped counts it)."""

  def step_fn(state, batch):
    key = jax.random.fold_in(state["key"], state["step"])
    nets, metrics = method.step(state["nets"], key, batch, state["step"])
    old = state["nets"]
    ok = jnp.isfinite(metrics["loss"])
    for name, net in nets.items():
      if isinstance(net, NetState):
        ok = ok & (net.n_skipped == old[name].n_skipped)
    new_state = {"step": state["step"] + 1, "key": state["key"],
                 "n_skipped": state["n_skipped"] + (~ok).astype(jnp.int32), "nets": tree_where(ok, nets, old)}
    return new_state, {**metrics, "nonfinite": (~ok).astype(jnp.float32)}

  return step_fn


# ------------------------------------------------------------------------------------ metrics
class MetricsWriter:
  """DIR/metrics.jsonl, one object per logged step. On resume, lines past the restored step are dropped, so
  the file always matches the parameters."""

  def __init__(self, workdir: str, resume_step: int):
    self.path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(self.path):
      kept = []
      with open(self.path) as f:
        for line in f:
          try:
            row = json.loads(line)
          except json.JSONDecodeError:
            continue  # a line cut by a kill
          if row.get("step", 0) <= resume_step:
            kept.append(json.dumps(row))
      write_text(self.path, "".join(l + "\n" for l in kept))

  def write(self, row: dict) -> None:
    try:
      with open(self.path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())
    except OSError as e:
      raise ckpt_lib.WriteError(self.path, e) from None


def reduce_metrics(stacked: dict) -> dict:
  """Per-step metrics [k, ...] -> one row. Means over steps, except pairs `<name>_sum` / `<name>_count`,
  which become the pooled mean `<name>` (per-level losses); vectors expand to name_i."""
  out = {}
  for k, v in stacked.items():
    if k.endswith("_count") and k[: -len("_count")] + "_sum" in stacked:
      continue
    v = np.asarray(v, np.float64)
    if k.endswith("_sum") and k[: -len("_sum")] + "_count" in stacked:
      base = k[: -len("_sum")]
      s, c = np.sum(v, axis=0), np.sum(np.asarray(stacked[base + "_count"], np.float64), axis=0)
      v = np.where(c > 0, s / np.maximum(c, 1), np.nan)
      k = base
    else:
      v = np.mean(v, axis=0)
    if v.ndim == 0:
      out[k] = float(v)
    else:
      for i, vi in enumerate(v.ravel()):
        out[f"{k}_{i}"] = None if not np.isfinite(vi) else float(vi)
  return out


class _Window:
  """The per-step metrics of the steps since the last logged row (their timings apart). It travels in the
  checkpoint's meta, so a row is the same whether or not the run was resumed inside its window."""

  def __init__(self, saved: Optional[dict] = None):
    saved = saved or {}
    self.metrics = {k: [np.asarray(v, np.float32) for v in vs] for k, vs in saved.get("metrics", {}).items()}
    self.steps, self.seconds = int(saved.get("steps", 0)), float(saved.get("seconds", 0.0))

  def add(self, m: dict, seconds: float) -> None:
    k = len(next(iter(m.values())))
    for name, v in m.items():
      self.metrics.setdefault(name, []).extend(np.asarray(v, np.float32))
    self.steps += k
    self.seconds += seconds

  def row(self) -> dict:
    out = reduce_metrics({k: np.stack(v) for k, v in self.metrics.items()})
    out.pop("nonfinite", None)
    out.update(step_time=self.seconds / max(self.steps, 1), steps_per_sec=self.steps / max(self.seconds, 1e-12))
    return out

  def to_json(self) -> dict:
    return {"metrics": {k: [np.asarray(x).tolist() for x in v] for k, v in self.metrics.items()},
            "steps": self.steps, "seconds": self.seconds}


# ------------------------------------------------------------------------------------ preemption
class _StopSignals:
  """SIGTERM and SIGINT set a flag that the loop reads between steps; a second signal while the run saves is
  only noted (the checkpoint is finished, never cut). Installed in the main thread only."""

  def __init__(self):
    self.received = None
    self._old = {}

  def __enter__(self):
    import threading  # noqa: PLC0415
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._old[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, _frame):
    if self.received is None:
      self.received = signal.Signals(signum).name
      logging.warning("%s received: finishing the current step, then saving a checkpoint", self.received)
    else:
      logging.warning("%s received again: the checkpoint is being saved; the run stops right after",
                      signal.Signals(signum).name)

  def stop_requested(self, step: int) -> bool:
    """Whether to stop after `step`: this process got a signal, or (multi-host) any process did, agreed at
    the same step by every process."""
    local = self.received is not None
    if jax.process_count() == 1:
      return local
    from jax.experimental import multihost_utils  # noqa: PLC0415
    flags = multihost_utils.process_allgather(np.asarray([local], np.int32))
    if np.any(flags) and self.received is None:
      self.received = "SIGTERM (another process)"
    return bool(np.any(flags))

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)
    return False


# ------------------------------------------------------------------------------------ the loop
@dataclasses.dataclass
class TrainResult:
  state: dict
  restored_step: Optional[int]
  mesh: Mesh

  @property
  def params(self) -> dict:
    return sampling_params(self.state["nets"])


def model_meta(config, data_shape=None) -> dict:
  """What must match between a checkpoint and the config that resumes it."""
  return {"format": STATE_FORMAT, "method": config.method, "model": json.loads(config.model.to_json_best_effort()),
          "data_shape": None if data_shape is None else [int(d) for d in data_shape]}


def _check_meta(meta: dict, now: dict, directory: str) -> None:
  if meta.get("format") != now["format"]:
    raise ckpt_lib.CheckpointError(
        f"checkpoint in {directory} has state format {meta.get('format', 1)}, this version of dsm_jax reads "
        f"format {now['format']}; use another --workdir (or the dsm_jax version that wrote it)")
  for field in ("method", "model", "data_shape"):
    if meta.get(field) != now[field]:
      diff = _first_difference(meta.get(field), now[field], field)
      raise ckpt_lib.CheckpointError(f"checkpoint in {directory} was written with a different config ({diff}); "
                                     "use another --workdir or the original config")


class Program:
  """What the trainer compiles for (config, method, dataset): the data mesh, the initial state, and
  `run(state, steps, stop=None, next_steps=None) -> (state, metrics)` for the steps `steps` (a chunk: their batches
  are built here, the metrics come back on the host). Host-fed batches of `next_steps` are built on a background
  thread while the device runs this chunk. In 'loop' mode `stop()` is asked after each step and ends the chunk
  early when it says so. benchmarks/ time exactly this."""

  def __init__(self, config, method, dataset):
    t = config.training
    n_dev = platform.num_devices(config)
    self.multi = multi = jax.process_count() > 1
    self.mesh = mesh = Mesh(np.array((jax.devices() if multi else jax.local_devices())[:n_dev]), ("data",))
    self.repl = repl = NamedSharding(mesh, P())
    self.dataset, self.batch_size = dataset, t.batch_size
    step_fn = guarded_step(method)
    self.init = jax.jit(lambda k: init_state(config, method, k), out_shardings=repl)
    self.batch_sh = batch_sh = NamedSharding(mesh, P(None, "data"))  # [k, B, ...]: split the batch axis
    self.step_sh = NamedSharding(mesh, P("data"))
    data_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0x0DA7A)
    self.in_graph = in_graph = hasattr(dataset, "sample")

    def chunk(state, xs):
      def body(st, x):
        if in_graph:
          batch = dataset.sample(jax.random.fold_in(data_key, x), t.batch_size)
          batch = jax.lax.with_sharding_constraint(batch, NamedSharding(mesh, P("data")))
        else:
          batch = x
        return step_fn(st, batch)
      return jax.lax.scan(body, state, xs)

    self._pool = None if in_graph else concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="batches")
    self._pending = None  # (steps, future) of the prefetched chunk
    self.mode = platform.chunk_mode(config, host_fed=not in_graph)
    if self.mode == "loop":  # one compiled step per call: the same pure step function, so the same updates
      self.step_jit = jax.jit(step_fn, in_shardings=(repl, self.step_sh), out_shardings=(repl, repl),
                              donate_argnums=(0,))
    else:
      self.chunk_jit = jax.jit(chunk, in_shardings=(repl, repl if in_graph else batch_sh),
                               out_shardings=(repl, repl), donate_argnums=(0,))

  def batches(self, steps: np.ndarray):
    """The chunk's inputs: the step numbers (data drawn in the step) or the host's batches of those steps."""
    return steps if self.in_graph else self.dataset.host_batches(steps, self.batch_size)

  def _inputs(self, steps: np.ndarray):
    pending, self._pending = self._pending, None
    if pending is not None and np.array_equal(pending[0], steps):
      return pending[1].result()
    return self.batches(steps)

  def run(self, state, steps: np.ndarray, stop: Optional[Callable[[], bool]] = None,
          next_steps: Optional[np.ndarray] = None):
    xs = self._inputs(steps)
    if self._pool is not None and next_steps is not None and len(next_steps):
      self._pending = (next_steps, self._pool.submit(self.batches, next_steps))  # overlaps the device's work
    if self.mode == "scan":
      if self.multi and not self.in_graph:  # every host computes the global batch; each gives its devices' slices
        xs = jax.make_array_from_callback(xs.shape, self.batch_sh, lambda idx, a=xs: a[idx])
      state, m = self.chunk_jit(state, xs)
      return state, jax.device_get(m)
    rows = []
    for x in xs:
      if self.multi:
        x = jax.make_array_from_callback(x.shape, self.step_sh, lambda idx, a=x: a[idx])
      state, m = self.step_jit(state, x)
      rows.append(m)
      if stop is not None and not self.multi and stop():
        break
    rows = jax.device_get(rows)  # one fetch after the loop: the steps still dispatch asynchronously
    return state, jax.tree_util.tree_map(lambda *a: np.stack(a), *rows)

  def close(self) -> None:
    if self._pool is not None:
      self._pool.shutdown(wait=True, cancel_futures=True)


def train(config, workdir: str, method, dataset, progress: Optional[bool] = None) -> TrainResult:
  """Trains (or resumes) `method` on `dataset` for config.training.n_iters steps in workdir."""
  validate(config, method.networks)
  t = config.training
  os.makedirs(workdir, exist_ok=True)
  program = Program(config, method, dataset)
  state = program.init(jax.random.PRNGKey(config.seed))
  ckpt = ckpt_lib.Checkpointer(workdir, max_to_keep=t.max_to_keep)
  meta_now = model_meta(config, getattr(dataset, "shape", None))
  restored = ckpt.restore_latest(state, check_meta=lambda meta: _check_meta(meta, meta_now, ckpt.directory))
  restored_step, window = None, _Window()
  if restored is not None:
    restored_step, state, meta = restored
    state = jax.device_put(state, program.repl)
    window = _Window(meta.get("window"))
    logging.info("resumed from %s/%d", ckpt.directory, restored_step)
  start = int(state["step"])
  main = platform.is_main_process()
  writer = MetricsWriter(workdir, start) if main else None
  tb = tensorboard.maybe_writer(workdir, config) if main else tensorboard.TBWriter(workdir, False)

  total = t.n_iters
  show = config.runtime.progress if progress is None else progress
  bar = None
  if show and start < total and main:
    from tqdm.auto import tqdm
    bar = tqdm(total=total, initial=start, desc=f"train {config.method}", unit="step", dynamic_ncols=True,
               mininterval=1.0)
  last_saved = restored_step
  step = start

  def save(at: int) -> None:
    ckpt.save(at, state, {"step": at, **meta_now, "window": window.to_json()})

  try:
    def chunk_end(s: int) -> int:
      return min(total, _next_multiple(s, t.log_every), _next_multiple(s, t.ckpt_every), s + t.steps_per_call)

    with _StopSignals() as signals:
      while step < total:
        nxt = chunk_end(step)
        tic = time.perf_counter()
        state, m = program.run(state, np.arange(step, nxt, dtype=np.int32), lambda: signals.received is not None,
                               next_steps=np.arange(nxt, chunk_end(nxt), dtype=np.int32))
        dt = time.perf_counter() - tic
        k = len(m["loss"])
        bad = np.nonzero(np.asarray(m["nonfinite"]) > 0)[0]
        if len(bad) and t.nan_policy == "stop":
          i = int(bad[0])
          terms = {kk: _fmt(vv[i]) for kk, vv in m.items() if kk != "nonfinite"}
          good = f"{ckpt.directory}/{last_saved}" if last_saved is not None else "none (no checkpoint yet)"
          raise NonFiniteLossError(
              f"non-finite loss or gradient at step {step + i}: {terms}; newest good checkpoint: {good}. Lower "
              "config.training.lr, set config.training.grad_clip, or set config.training.nan_policy='skip'")
        window.add(m, dt)
        step += k
        if step % t.log_every == 0 or step == total:
          row = {"step": step, **window.row(), "n_skipped": int(state["n_skipped"])}
          window = _Window()
          if writer is not None:
            writer.write(row)
          tb.scalars(step, row)
        if bar is not None:
          bar.update(k)
          bar.set_postfix(loss=f"{float(np.mean(m['loss'])):.4g}", it_s=f"{k / dt:.1f}")
        stop = signals.stop_requested(step) if step < total else False
        if step % t.ckpt_every == 0 or step == total or stop:
          save(step)
          last_saved = step
        if stop:
          raise Preempted(f"stopped by {signals.received} at step {step} of {total}; checkpoint saved in "
                          f"{ckpt.directory}/{step}; rerun the same command to resume")
  finally:
    if bar is not None:
      bar.close()
    tb.close()
    ckpt.close()
    program.close()
  return TrainResult(state=state, restored_step=restored_step, mesh=program.mesh)


def load_latest(config, workdir: str, method, dataset=None) -> tuple[int, dict]:
  """The newest checkpoint's (step, state), for --mode=sample|eval."""
  state = jax.jit(lambda k: init_state(config, method, k))(jax.random.PRNGKey(config.seed))
  ckpt = ckpt_lib.Checkpointer(workdir, max_to_keep=config.training.max_to_keep)
  meta_now = model_meta(config, getattr(dataset, "shape", None)) if dataset is not None else None
  check = None
  if meta_now is not None:
    check = lambda meta: _check_meta(meta, meta_now, ckpt.directory)  # noqa: E731
  try:
    restored = ckpt.restore_latest(state, check_meta=check)
  finally:
    ckpt.close()
  if restored is None:
    raise ckpt_lib.CheckpointError(f"no checkpoint in {ckpt.directory}; run --mode=train first")
  step, state, _ = restored
  return step, state


def _next_multiple(step: int, every: int) -> int:
  return (step // every + 1) * every


def _fmt(v) -> Any:
  v = np.asarray(v)
  return float(v) if v.ndim == 0 else [float(a) for a in v.ravel()[:16]]


def _first_difference(a, b, path: str) -> str:
  if isinstance(a, dict) and isinstance(b, dict):
    for k in sorted(set(a) | set(b)):
      if a.get(k) != b.get(k):
        return _first_difference(a.get(k), b.get(k), f"{path}.{k}")
  return f"{path}: checkpoint has {a!r}, config has {b!r}"

"""The one training loop for every method.

A method gives `init_params(key)` and `loss_fn(params, key, batch) -> (loss, aux)` (or its own
`train_step`); this module owns everything else: optimizer, EMA, data-parallel sharding (jit with a
NamedSharding over a 1-D 'data' mesh), scanning several steps per compiled call, the NaN guard,
orbax checkpoints, metrics.jsonl and the progress bar.

Determinism and resume: the batch of step t is a pure function of (seed, t) and the noise of step t
is drawn from fold_in(key, t), so a run restored at step k continues exactly as an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dsm_jax import checkpoint as ckpt_lib
from dsm_jax import tensorboard
from dsm_jax.validation import ConfigError, one_of, positive, require


class NonFiniteLossError(RuntimeError):
  """A NaN/Inf loss or gradient stopped the run; the message names the step, the loss terms and the
  newest good checkpoint."""


# ------------------------------------------------------------------------------------ config checks
def validate_training(config) -> None:
  t = config.training
  positive(config, "training.n_iters", integer=True, allow_zero=True)
  positive(config, "training.batch_size", integer=True)
  positive(config, "training.lr")
  positive(config, "training.log_every", integer=True)
  positive(config, "training.ckpt_every", integer=True)
  positive(config, "training.max_to_keep", integer=True)
  positive(config, "training.steps_per_call", integer=True)
  if "chunk_mode" in t:
    one_of(config, "training.chunk_mode", CHUNK_MODES)
  positive(config, "training.grad_clip", allow_zero=True)
  positive(config, "training.warmup", integer=True, allow_zero=True)
  one_of(config, "training.optimizer", ("adam", "adamw", "sgd"))
  one_of(config, "training.schedule", ("constant", "cosine"))
  one_of(config, "training.nan_policy", ("stop", "skip"))
  positive(config, "training.ema_rate", allow_zero=True)
  require(t.ema_rate < 1.0, "training.ema_rate", f"must be in [0, 1), got {t.ema_rate!r}")
  n_dev = num_devices(config)
  require(t.batch_size % n_dev == 0, "training.batch_size",
          f"{t.batch_size} is not divisible by the {n_dev} devices in use; use a multiple of {n_dev} "
          "or set config.training.num_devices")


def setup_devices(config) -> None:
  """Applies config.training.cpu_devices (split a CPU host into N XLA devices). It must run before JAX
  starts its backends (experiments/run.py calls it first); later it can only warn."""
  n = int(config.training.get("cpu_devices", 0) or 0)
  if n < 0:
    raise ConfigError("training.cpu_devices", f"must be >= 0, got {n}")
  if n:
    try:
      jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:
      if jax.default_backend() == "cpu" and jax.local_device_count() != n:
        logging.warning("config.training.cpu_devices=%d ignored: JAX already started with %d CPU devices",
                        n, jax.local_device_count())


def setup_distributed(config) -> None:
  """Multi-host data parallelism: with config.training.distributed, jax.distributed.initialize joins
  this process to the others (coordinator_address / num_processes / process_id from the config, or
  auto-detected on Cloud TPU, SLURM and Open MPI when left empty). Must run before JAX starts its
  backends (experiments/run.py calls it first). Every process runs the same command; the 'data' mesh
  then spans every device of every host, each host feeds its devices' slices of the global batch,
  and process 0 writes metrics, samples and eval.json (orbax coordinates the checkpoint)."""
  t = config.training
  if not t.get("distributed", False):
    return
  n = int(t.get("num_processes", 0) or 0)
  pid = int(t.get("process_id", -1))
  if n < 0:
    raise ConfigError("training.num_processes", f"must be >= 0 (0: auto-detect), got {n}")
  if n and not 0 <= pid < n:
    raise ConfigError("training.process_id", f"must be in [0, {n}) for num_processes={n}, got {pid}")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU hosts; no effect on GPU/TPU
  jax.distributed.initialize(coordinator_address=t.get("coordinator_address", "") or None,
                             num_processes=n or None, process_id=pid if n else None)


def is_main_process() -> bool:
  return jax.process_index() == 0


def num_devices(config) -> int:
  want = config.training.get("num_devices", 0)
  have = jax.device_count() if jax.process_count() > 1 else jax.local_device_count()
  if want and want > have:
    raise ConfigError("training.num_devices", f"asks for {want} devices but only {have} are present")
  return want or have


# ------------------------------------------------------------------------------------ optimizer
def make_optimizer(config) -> optax.GradientTransformation:
  t = config.training
  if t.schedule == "cosine":
    lr = optax.warmup_cosine_decay_schedule(0.0 if t.warmup else t.lr, t.lr, max(t.warmup, 0),
                                            max(t.n_iters, t.warmup + 1), end_value=t.lr * t.get("lr_final_frac", 0.0))
  elif t.warmup:
    lr = optax.linear_schedule(0.0, t.lr, t.warmup)
  else:
    lr = t.lr
  if t.optimizer == "adam":
    opt = optax.adam(lr, b1=t.beta1, b2=t.beta2, eps=t.adam_eps)
  elif t.optimizer == "adamw":
    opt = optax.adamw(lr, b1=t.beta1, b2=t.beta2, eps=t.adam_eps, weight_decay=t.weight_decay)
  else:
    opt = optax.sgd(lr)
  if t.grad_clip > 0:
    opt = optax.chain(optax.clip_by_global_norm(t.grad_clip), opt)
  return opt


# ------------------------------------------------------------------------------------ state
def init_state(key: jax.Array, init_params: Callable, optimizer, init_opt: Optional[Callable] = None) -> dict:
  k_init, k_train = jax.random.split(key)
  params = init_params(k_init)
  return {
      "step": jnp.asarray(0, jnp.int32),
      "params": params,
      "ema_params": params,
      "opt_state": init_opt(optimizer, params) if init_opt is not None else optimizer.init(params),
      "key": k_train,
      "n_skipped": jnp.asarray(0, jnp.int32),
  }


def _tree_all_finite(tree) -> jax.Array:
  leaves = jax.tree_util.tree_leaves(tree)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(l)) for l in leaves])) if leaves else jnp.asarray(True)


def ema_update(ema, params, rate: float, count):
  """The EMA of the parameters after `count` (>= 1) updates, debiased: with decay
  d_t = rate (1 - rate^(t-1)) / (1 - rate^t) it is exactly (1 - rate) sum_s rate^(t-s) p_s / (1 - rate^t),
  the normalised average of the parameters p_1..p_t that the optimiser produced; the initial (random)
  parameters get no weight. (A plain ema <- rate ema + (1 - rate) p started at the initialisation keeps
  rate^t of it: 25% after 1,400 steps at NCSNv2's 0.999, which made short CPU runs sample from a
  quarter-random network. For long runs the two agree: d_t -> rate.)"""
  t = jnp.asarray(count, jnp.float32)
  r = jnp.asarray(rate, jnp.float32)
  decay = jnp.where(t <= 1, 0.0, r * (1.0 - r ** (t - 1.0)) / jnp.maximum(1.0 - r ** t, 1e-30))
  return jax.tree_util.tree_map(lambda e, p: (decay * e + (1.0 - decay) * p).astype(e.dtype), ema, params)


def default_train_step(loss_fn: Callable, optimizer, ema_rate: float, nan_policy: str):
  """(state, batch) -> (state, metrics) for one optimizer step on loss_fn.

  A non-finite loss or gradient never reaches the parameters: the step is skipped (and counted) and,
  under nan_policy='stop', the run halts once the host sees the flag."""

  def step_fn(state, batch):
    rng = jax.random.fold_in(state["key"], state["step"])
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], rng, batch)
    finite = jnp.isfinite(loss) & _tree_all_finite(grads)
    updates, new_opt = optimizer.update(grads, state["opt_state"], state["params"])
    new_params = optax.apply_updates(state["params"], updates)
    new_ema = ema_update(state["ema_params"], new_params, ema_rate, state["step"] + 1)
    keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new, old)
    new_state = {
        "step": state["step"] + 1,
        "params": keep(new_params, state["params"]),
        "ema_params": keep(new_ema, state["ema_params"]),
        "opt_state": keep(new_opt, state["opt_state"]),
        "key": state["key"],
        "n_skipped": state["n_skipped"] + (~finite).astype(jnp.int32),
    }
    metrics = {"loss": loss, "nonfinite": (~finite).astype(jnp.float32),
               "grad_norm": optax.tree.norm(grads)}
    metrics.update({k: v for k, v in aux.items() if k != "per_example"})
    return new_state, metrics

  return step_fn


# ------------------------------------------------------------------------------------ metrics io
class MetricsWriter:
  """DIR/metrics.jsonl, one object per logged step. On resume, lines past the restored step are dropped
  so the file always matches the parameters."""

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
      with open(self.path, "w") as f:
        f.write("".join(l + "\n" for l in kept))

  def write(self, row: dict) -> None:
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
      f.flush()
      os.fsync(f.fileno())


def reduce_metrics(stacked: dict) -> dict:
  """Chunk of per-step metrics [k, ...] -> one row. Means over steps, except pairs `<name>_sum` /
  `<name>_count` which become the pooled mean `<name>` (per-level losses); vectors expand to name_i."""
  out = {}
  host = jax.device_get(stacked)
  for k, v in host.items():
    if k.endswith("_count") and k[: -len("_count")] + "_sum" in host:
      continue
    if k.endswith("_sum") and k[: -len("_sum")] + "_count" in host:
      base = k[: -len("_sum")]
      s, c = np.sum(v, axis=0), np.sum(host[base + "_count"], axis=0)
      v = np.where(c > 0, s / np.maximum(c, 1), np.nan)
      k = base
    else:
      v = np.mean(v, axis=0)
    v = np.asarray(v)
    if v.ndim == 0:
      out[k] = float(v)
    else:
      for i, vi in enumerate(v.ravel()):
        out[f"{k}_{i}"] = None if not np.isfinite(vi) else float(vi)
  return out


# ------------------------------------------------------------------------------------ the loop
@dataclasses.dataclass
class TrainResult:
  state: dict
  restored_step: Optional[int]
  mesh: Mesh


def model_meta(config, data_shape=None) -> dict:
  """What must match between a checkpoint and the config that resumes it."""
  return {"method": config.method, "model": json.loads(config.model.to_json_best_effort()),
          "data_shape": None if data_shape is None else [int(d) for d in data_shape]}


CHUNK_MODES = ("auto", "scan", "loop")


def chunk_mode(config, in_graph: bool) -> str:
  """How training.steps_per_call steps run: 'scan' fuses them into one lax.scan (fastest for small
  networks: no per-step dispatch), 'loop' calls one compiled step per step from Python. 'auto' picks
  'loop' for host-fed (image) data on the CPU backend: XLA:CPU runs a convolution's backward pass about
  50x slower inside a while loop than outside one (benchmarks/bench_conv_in_loop.py, scan_vs_step.py), and
  'scan' otherwise. In-graph (toy) data always scans."""
  mode = config.training.get("chunk_mode", "auto")
  if mode not in CHUNK_MODES:
    raise ConfigError("training.chunk_mode", f"must be one of {list(CHUNK_MODES)}, got {mode!r}")
  if in_graph:
    return "scan"
  if mode == "auto":
    return "loop" if jax.default_backend() == "cpu" else "scan"
  return mode


def train(config, workdir: str, method, dataset, progress: Optional[bool] = None) -> TrainResult:
  """Trains (or resumes) `method` on `dataset` for config.training.n_iters steps in workdir."""
  validate_training(config)
  t = config.training
  os.makedirs(workdir, exist_ok=True)
  n_dev = num_devices(config)
  multi = jax.process_count() > 1
  mesh = Mesh(np.array((jax.devices() if multi else jax.local_devices())[:n_dev]), ("data",))
  repl = NamedSharding(mesh, P())
  optimizer = make_optimizer(config)
  step_fn = (method.train_step(optimizer) if getattr(method, "train_step", None) is not None
             else default_train_step(method.loss_fn, optimizer, t.ema_rate, t.nan_policy))

  key = jax.random.PRNGKey(config.seed)
  state = jax.jit(lambda k: init_state(k, method.init_params, optimizer, getattr(method, "init_opt", None)), out_shardings=repl)(key)
  ckpt = ckpt_lib.Checkpointer(workdir, max_to_keep=t.max_to_keep)
  meta_now = model_meta(config, getattr(dataset, "shape", None))

  def check_meta(meta):
    for field in ("method", "model", "data_shape"):
      if meta.get(field) != meta_now[field]:
        diff = _first_difference(meta.get(field), meta_now[field], field)
        raise ckpt_lib.CheckpointError(
            f"checkpoint in {ckpt.directory} was written with a different config ({diff}); "
            "use another --workdir or the original config")

  restored = ckpt.restore_latest(state, check_meta=check_meta)
  restored_step = None
  if restored is not None:
    restored_step, state, _ = restored
    state = jax.device_put(state, repl)
    logging.info("resumed from %s/%d", ckpt.directory, restored_step)
  start = int(state["step"])
  writer = MetricsWriter(workdir, start) if is_main_process() else None
  tb = tensorboard.maybe_writer(workdir, config) if is_main_process() else tensorboard.TBWriter(workdir, False)

  batch_sh = NamedSharding(mesh, P(None, "data"))  # [k, B, ...]: split the batch axis
  data_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0x0DA7A)
  in_graph = hasattr(dataset, "sample")

  def chunk(state, xs):
    def body(st, x):
      if in_graph:
        step = x
        batch = dataset.sample(jax.random.fold_in(data_key, step), t.batch_size)
        batch = jax.lax.with_sharding_constraint(batch, NamedSharding(mesh, P("data")))
      else:
        batch = x
      return step_fn(st, batch)
    return jax.lax.scan(body, state, xs)

  chunk_jit = jax.jit(chunk, in_shardings=(repl, repl if in_graph else batch_sh),
                      out_shardings=(repl, repl), donate_argnums=(0,))
  loop = chunk_mode(config, in_graph) == "loop"
  if loop:  # one compiled step per call (see chunk_mode); the same pure step function, so the same updates
    step_sh = NamedSharding(mesh, P("data"))
    step_jit = jax.jit(step_fn, in_shardings=(repl, step_sh), out_shardings=(repl, repl), donate_argnums=(0,))

  def run_chunk(state, xs):
    if not loop:
      if multi:  # every host computes the global batch; each gives its devices' slices
        xs = jax.make_array_from_callback(xs.shape, batch_sh, lambda idx, a=xs: a[idx])
      return chunk_jit(state, xs)
    rows = []
    for x in xs:
      if multi:
        x = jax.make_array_from_callback(x.shape, step_sh, lambda idx, a=x: a[idx])
      state, m = step_jit(state, x)
      rows.append(m)
    rows = jax.device_get(rows)  # one fetch after the loop: the steps still dispatch asynchronously
    return state, jax.tree_util.tree_map(lambda *a: np.stack(a), *rows)

  total = t.n_iters
  show = t.get("progress", True) if progress is None else progress
  bar = None
  if show and start < total and is_main_process():
    from tqdm.auto import tqdm
    bar = tqdm(total=total, initial=start, desc=f"train {config.method}", unit="step",
               dynamic_ncols=True, mininterval=1.0)
  last_saved = restored_step
  step = start
  try:
    while step < total:
      nxt = min(total, _next_multiple(step, t.log_every), _next_multiple(step, t.ckpt_every),
                step + t.steps_per_call)
      k = nxt - step
      steps = np.arange(step, nxt, dtype=np.int32)
      xs = steps if in_graph else dataset.host_batches(steps, t.batch_size)
      tic = time.perf_counter()
      state, m = run_chunk(state, xs) if not in_graph else chunk_jit(state, xs)
      m = jax.device_get(m)
      dt = time.perf_counter() - tic
      bad = np.nonzero(np.asarray(m["nonfinite"]) > 0)[0]
      if len(bad) and t.nan_policy == "stop":
        i = int(bad[0])
        terms = {kk: _fmt(vv[i]) for kk, vv in m.items() if kk not in ("nonfinite",)}
        good = f"{ckpt.directory}/{last_saved}" if last_saved is not None else "none (no checkpoint yet)"
        raise NonFiniteLossError(
            f"non-finite loss or gradient at step {step + i}: {terms}; newest good checkpoint: {good}. "
            "Lower config.training.lr, set config.training.grad_clip, or set "
            "config.training.nan_policy='skip'")
      step = nxt
      if step % t.log_every == 0 or step == total:
        row = {"step": step, **reduce_metrics(m), "step_time": dt / k, "steps_per_sec": k / dt,
               "n_skipped": int(state["n_skipped"])}
        if writer is not None:
          writer.write(row)
        tb.scalars(step, row)
      if bar is not None:
        bar.update(k)
        bar.set_postfix(loss=f"{float(np.mean(m['loss'])):.4g}", it_s=f"{k / dt:.1f}")
      if step % t.ckpt_every == 0 or step == total:
        ckpt.save(step, state, {"step": step, **meta_now})
        last_saved = step
  finally:
    if bar is not None:
      bar.close()
    tb.close()
    ckpt.close()
  return TrainResult(state=state, restored_step=restored_step, mesh=mesh)


def load_latest(config, workdir: str, method) -> tuple[int, dict]:
  """The newest checkpoint's (step, state), for --mode=sample|eval."""
  optimizer = make_optimizer(config)
  state = jax.jit(lambda k: init_state(k, method.init_params, optimizer, getattr(method, "init_opt", None)))(jax.random.PRNGKey(config.seed))
  ckpt = ckpt_lib.Checkpointer(workdir, max_to_keep=config.training.max_to_keep)
  try:
    restored = ckpt.restore_latest(state)
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

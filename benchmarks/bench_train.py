"""Throughput of the real NCSN trainer step and of the annealed Langevin sampler, per config.

Times exactly what dsm_jax.train.train compiles: `default_train_step(method.loss_fn, make_optimizer(config),
...)` wrapped in the trainer's lax.scan chunk, jit'd with the same NamedShardings over a 1-D 'data'
mesh (state replicated, batch split over devices, state donated). Image batches are random arrays of
the dataset's shape (speed does not depend on pixel values, and no dataset is downloaded); the toy
config samples its mixture in-graph, as the trainer does.

    python benchmarks/bench_train.py                                   # default list (CPU sized)
    python benchmarks/bench_train.py --configs=ncsn_mnist5k --ngf=16 --batch=64 --num_devices=2
    python benchmarks/bench_train.py --configs=ncsn_cifar10 --ngf=128 --batch=128 --steps_per_call=10  # GPU
    python benchmarks/bench_train.py --dtype=bfloat16 --configs=ncsn_mnist5k

--num_devices=N on CPU splits the host into N XLA devices (--xla_force_host_platform_device_count);
on GPU it uses the first N local devices. Entries of --configs may carry per-config overrides:
`ncsn_cifar10:ngf=8:batch=16`.
"""
from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time

DEFAULT_CONFIGS = "ncsn_toy,ncsn_mnist5k:ngf=16:batch=64,ncsn_cifar10:ngf=8:batch=16,ncsn_celeba:ngf=8:batch=16"
IMAGE_SHAPES = {"mnist": (28, 28, 1), "mnist5k": (28, 28, 1), "cifar10": (32, 32, 3)}


def parse_args(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--configs", default=DEFAULT_CONFIGS, help="comma list of configs/<name>.py[:key=val...]")
  ap.add_argument("--batch", default="", help="comma list of batch sizes (overrides each config's)")
  ap.add_argument("--ngf", type=int, default=0, help="RefineNet width override (0: config's / per-entry)")
  ap.add_argument("--dtype", default="", help="model.dtype override: float32 | bfloat16")
  ap.add_argument("--num_devices", type=int, default=0,
                  help="devices on the 'data' mesh; on CPU the host is split into this many (0: all/1)")
  ap.add_argument("--steps_per_call", type=int, default=0, help="0: 2 for image configs, config's for toy")
  ap.add_argument("--reps", type=int, default=3, help="timed trainer calls (median reported)")
  ap.add_argument("--chunk_mode", default="auto", help="auto (the trainer's choice) | scan | loop")
  ap.add_argument("--sample_batch", type=int, default=0, help="chains (0: 64 images, 2000 toy)")
  ap.add_argument("--sample_steps_each", type=int, default=1, help="Langevin steps per level (T)")
  ap.add_argument("--sample_reps", type=int, default=2)
  ap.add_argument("--sample_sharded", action="store_true", help="also split the chains over the mesh")
  ap.add_argument("--no_sample", action="store_true")
  ap.add_argument("--platform", default="", help="JAX_PLATFORMS (e.g. cpu); default: jax's choice")
  ap.add_argument("--markdown", default="", help="append the table to this file")
  return ap.parse_args(argv)


ARGS = parse_args()
if ARGS.platform:
  os.environ["JAX_PLATFORMS"] = ARGS.platform
if ARGS.num_devices > 1 and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  # only affects the CPU backend: harmless on GPU
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={ARGS.num_devices}").strip()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

from dsm_jax import samplers  # noqa: E402
from dsm_jax import train as train_lib  # noqa: E402
from dsm_jax.methods import ncsn  # noqa: E402
from dsm_jax.models import get_model  # noqa: E402


class _ShapeOnly:
  """Stands in for an image dataset: build() only needs the example shape."""
  has_density = False

  def __init__(self, shape):
    self.shape = tuple(shape)


def _image_shape(config):
  d = config.data
  if d.dataset in IMAGE_SHAPES:
    return IMAGE_SHAPES[d.dataset]
  size = d.get("image_size", 32)
  return (size, size, 3)


def _load_config(entry: str, batch_override):
  name, *kvs = entry.split(":")
  config = importlib.import_module(f"configs.{name}").get_config()
  over = dict(kv.split("=", 1) for kv in kvs)
  if ARGS.ngf:
    over["ngf"] = str(ARGS.ngf)
  if batch_override:
    over["batch"] = str(batch_override)
  if "ngf" in over and config.model.name == "refinenet":
    config.model.ngf = int(over["ngf"])
  if "channels" in over and config.model.name == "cond_unet":
    config.model.channels = tuple(int(c) for c in over["channels"].split("/"))
  if "batch" in over:
    config.training.batch_size = int(over["batch"])
  if ARGS.dtype and config.model.name in ("refinenet", "cond_unet"):
    config.model.dtype = ARGS.dtype
  config.training.num_devices = ARGS.num_devices or 0
  return name, config


def _median_time(fn, reps):
  ts = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    ts.append(time.perf_counter() - t0)
  return statistics.median(ts)


def bench_one(entry, batch_override):
  name, config = _load_config(entry, batch_override)
  t = config.training
  images = config.model.name in ("refinenet", "cond_unet")
  if images:
    dataset = _ShapeOnly(_image_shape(config))
  else:
    from dsm_jax.data import get_dataset
    dataset = get_dataset(config.data, config.seed)
  train_lib.validate_training(config)
  method = ncsn.build(config, dataset)

  # --- the trainer's compiled chunk (mirrors train.train)
  n_dev = train_lib.num_devices(config)
  mesh = Mesh(np.array(jax.local_devices()[:n_dev]), ("data",))
  repl = NamedSharding(mesh, P())
  optimizer = train_lib.make_optimizer(config)
  step_fn = train_lib.default_train_step(method.loss_fn, optimizer, t.ema_rate, t.nan_policy)
  key = jax.random.PRNGKey(config.seed)
  tic = time.perf_counter()
  state = jax.jit(lambda k: train_lib.init_state(k, method.init_params, optimizer), out_shardings=repl)(key)
  jax.block_until_ready(state)
  init_s = time.perf_counter() - tic
  n_params = sum(int(np.prod(l.shape)) for l in jax.tree_util.tree_leaves(state["params"]))
  batch_sh = NamedSharding(mesh, P(None, "data"))
  data_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0x0DA7A)
  in_graph = hasattr(dataset, "sample")
  k = ARGS.steps_per_call or (t.steps_per_call if not images else 2)

  def chunk(state, xs):
    def body(st, x):
      if in_graph:
        batch = dataset.sample(jax.random.fold_in(data_key, x), t.batch_size)
        batch = jax.lax.with_sharding_constraint(batch, NamedSharding(mesh, P("data")))
      else:
        batch = x
      return step_fn(st, batch)
    return jax.lax.scan(body, state, xs)

  mode = ARGS.chunk_mode if ARGS.chunk_mode != "auto" or in_graph else train_lib.chunk_mode(config, in_graph)
  if in_graph:
    mode = "scan"
  if mode == "scan":
    chunk_jit = jax.jit(chunk, in_shardings=(repl, repl if in_graph else batch_sh),
                        out_shardings=(repl, repl), donate_argnums=(0,))
  else:  # the trainer's 'loop' mode: one compiled step per step (train.chunk_mode)
    step_jit = jax.jit(step_fn, in_shardings=(repl, NamedSharding(mesh, P("data"))), out_shardings=(repl, repl),
                       donate_argnums=(0,))

    def chunk_jit(state, xs):
      ms = []
      for j in range(xs.shape[0]):
        state, m = step_jit(state, xs[j])
        ms.append(m)
      return state, jax.tree_util.tree_map(lambda *a: jnp.stack(a), *ms)
  if in_graph:
    make_xs = lambda i: np.arange(i * k, (i + 1) * k, dtype=np.int32)
  else:
    rng = np.random.default_rng(0)
    host = rng.uniform(size=(k, t.batch_size) + dataset.shape).astype(np.float32)
    make_xs = (lambda i: jax.device_put(host, batch_sh)) if mode == "scan" else (lambda i: host)
  tic = time.perf_counter()
  state, m = chunk_jit(state, make_xs(0))
  jax.block_until_ready(m)
  first_s = time.perf_counter() - tic
  times = []
  for i in range(ARGS.reps):
    xs = make_xs(i + 1)
    jax.block_until_ready(xs)
    tic = time.perf_counter()
    state, m = chunk_jit(state, xs)
    jax.device_get(m)  # the trainer fetches the metrics every call
    times.append(time.perf_counter() - tic)
  call_s = statistics.median(times)
  row = {"config": name, "backend": f"{jax.default_backend()}x{n_dev}", "mode": mode, "batch": t.batch_size,
         "ngf": config.model.get("ngf", "-") if images else "-", "dtype": config.model.get("dtype", "float32") if images else "f32",
         "params": n_params, "init_s": init_s, "first_call_s": first_s, "k": k,
         "step_ms": 1e3 * call_s / k, "steps_s": k / call_s, "img_s": k * t.batch_size / call_s,
         "loss": float(np.mean(m["loss"]))}

  # --- sampler: annealed Langevin with the model's score, as method.sample does (one jit, one device)
  if not ARGS.no_sample:
    net = get_model(config.model, dataset.shape, conditional=True)
    ladder = ncsn.ladder_from_config(config)
    s_cfg = config.sampling
    n = ARGS.sample_batch or (64 if images else 2000)
    T = ARGS.sample_steps_each
    params = state["ema_params"]

    def draw(params, key, x0):
      score = lambda x, sig: net.apply(params, x, sig)
      return samplers.annealed_langevin(score, key, x0, ladder, s_cfg.eps, T, convention=s_cfg.convention)[0]

    lo, hi = s_cfg.init_range
    x0 = jax.random.uniform(jax.random.PRNGKey(1), (n,) + tuple(dataset.shape), minval=lo, maxval=hi)
    variants = [("1dev", jax.jit(draw), x0)]
    if ARGS.sample_sharded and n_dev > 1 and n % n_dev == 0:
      sh = NamedSharding(mesh, P("data"))
      variants.append(("sharded", jax.jit(draw, in_shardings=(repl, repl, sh), out_shardings=sh),
                       jax.device_put(x0, sh)))
    n_steps = int(ladder.shape[0]) * T
    for tag, f, x in variants:
      tic = time.perf_counter()
      jax.block_until_ready(f(params, jax.random.PRNGKey(2), x))
      first = time.perf_counter() - tic
      dt = _median_time(lambda: f(params, jax.random.PRNGKey(3), x), ARGS.sample_reps)
      suffix = "" if tag == "1dev" else "_sharded"
      row[f"sample_n{suffix}"] = n
      row[f"sample_first_s{suffix}"] = first
      row[f"langevin_steps_s{suffix}"] = n_steps / dt
      row[f"langevin_ms_per_step{suffix}"] = 1e3 * dt / n_steps
  return row


def fmt_table(rows):
  cols = [("config", "config", "{}"), ("backend", "backend", "{}"), ("mode", "chunk", "{}"), ("batch", "batch", "{}"), ("ngf", "ngf", "{}"),
          ("dtype", "dtype", "{}"), ("params", "params", "{:,}"), ("init_s", "init jit s", "{:.1f}"),
          ("first_call_s", "1st call s (compile)", "{:.1f}"), ("k", "steps/call", "{}"),
          ("step_ms", "ms/step", "{:.1f}"), ("steps_s", "steps/s", "{:.2f}"), ("img_s", "examples/s", "{:.1f}"),
          ("sample_n", "sampler chains", "{}"), ("sample_first_s", "sampler 1st call s", "{:.1f}"),
          ("langevin_ms_per_step", "Langevin ms/step", "{:.1f}"), ("langevin_steps_s", "Langevin steps/s", "{:.2f}"),
          ("langevin_ms_per_step_sharded", "Langevin ms/step sharded", "{:.1f}")]
  cols = [c for c in cols if any(c[0] in r for r in rows)]
  lines = ["| " + " | ".join(c[1] for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
  for r in rows:
    lines.append("| " + " | ".join(c[2].format(r[c[0]]) if c[0] in r else "-" for c in cols) + " |")
  return "\n".join(lines)


def main():
  load0 = os.getloadavg()[0]
  rows = []
  batches = [int(b) for b in ARGS.batch.split(",") if b] or [None]
  for entry in [c for c in ARGS.configs.split(",") if c]:
    for b in batches:
      try:
        r = bench_one(entry, b)
      except Exception as e:  # keep going: one failing config should not hide the others
        r = {"config": entry, "backend": "ERROR: " + repr(e)[:200]}
      rows.append(r)
      print(r, file=sys.stderr, flush=True)
  head = (f"# jax {jax.__version__}, {jax.default_backend()} {jax.devices()[0].device_kind}, "
          f"nproc={os.cpu_count()}, load1 {load0:.2f} -> {os.getloadavg()[0]:.2f}, "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, cmd: {' '.join(sys.argv)}")
  table = fmt_table(rows)
  print(head)
  print(table)
  if ARGS.markdown:
    with open(ARGS.markdown, "a") as fh:
      fh.write(head + "\n\n" + table + "\n\n")


if __name__ == "__main__":
  main()

"""Training and sampling throughput of any config: exactly what the trainer compiles (dsm_jax.train.Program: the
method's step under the NaN guard, the trainer's scan chunk or one compiled step per call, the data mesh), the
host's time to build one batch (done on a background thread while the device runs the previous chunk), and the
method's own sampler.

Image configs train on stand-in arrays of the dataset's shape (speed does not depend on pixel values and nothing
is downloaded); toy configs draw their data in the step, as the trainer does.

    python benchmarks/bench_train.py --configs=ncsn_toy,ncsn_mnist5k,mdsm_mnist5k
    python benchmarks/bench_train.py --configs=ncsn_cifar10 --set=model.ngf=8,training.batch_size=16
    python benchmarks/bench_train.py --configs=ncsn_mnist5k --cpu_devices=2 --no_sample

--cpu_devices=N splits a CPU host into N XLA devices (runtime.cpu_devices); --set overrides config keys for
every config (a comma list of key=value, values parsed as Python literals).
"""
from __future__ import annotations

import argparse
import ast
import importlib
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--configs", default="ncsn_toy,ncsn_mnist5k,mdsm_mnist5k,dde_mnist5k,debm_mnist5k")
  ap.add_argument("--set", default="", help="comma list of config overrides key=value")
  ap.add_argument("--cpu_devices", type=int, default=0, help="runtime.cpu_devices (0: the config's)")
  ap.add_argument("--steps", type=int, default=0, help="steps per timed call (0: the config's steps_per_call)")
  ap.add_argument("--reps", type=int, default=3, help="timed calls (median reported)")
  ap.add_argument("--sample_n", type=int, default=64, help="samples for the sampler timing (image configs)")
  ap.add_argument("--no_sample", action="store_true")
  ap.add_argument("--start", type=int, default=-1,
                  help="step index of the first timed step (-1: the run's last steps, past any pre-training phase)")
  return ap.parse_args(argv)


ARGS = parse_args()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

if ARGS.cpu_devices:  # before JAX starts its backends (platform.setup's device split)
  jax.config.update("jax_num_cpu_devices", ARGS.cpu_devices)

from dsm_jax import data as data_lib  # noqa: E402
from dsm_jax import flops, methods, platform, train  # noqa: E402
from dsm_jax.models import layers  # noqa: E402


def _set(config, assignments: str) -> None:
  for item in [a for a in assignments.split(",") if a]:
    key, value = item.split("=", 1)
    node = config
    *path, leaf = key.split(".")
    for p in path:
      node = node[p]
    with node.ignore_type():
      node[leaf] = ast.literal_eval(value)


def dataset_of(config):
  from dsm_jax.data import images  # noqa: PLC0415
  if config.data.dataset in images.IMAGE_DATASETS:
    return images.StandIn(images.example_shape(config.data), config.data.scale)
  return data_lib.get_dataset(config.data, config.seed)


def matmul_peak(n: int = 2048, reps: int = 5) -> float:
  """The backend's measured float32 matrix-product rate (FLOP/s), the reference for MFU on a machine without a
  vendor peak at hand."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n))
  f = jax.jit(lambda a: a @ a)
  jax.block_until_ready(f(a))
  return 2.0 * n ** 3 / median(lambda: jax.block_until_ready(f(a)), reps)


def median(fn, reps):
  ts = []
  for _ in range(reps):
    t0 = time.perf_counter()
    fn()
    ts.append(time.perf_counter() - t0)
  return statistics.median(ts)


def model_flops(fn, *args) -> float:
  """Model FLOPs: counted with XLA's convolution form, whatever form the platform runs (the loop-safe VJP form
  computes the same gradients through extra transposed convolutions)."""
  impl = layers.default_conv_impl()
  layers.set_default_conv_impl("xla")
  try:
    return flops.count(fn, *args)
  finally:
    layers.set_default_conv_impl(impl)


def bench(name: str) -> dict:
  config = importlib.import_module(f"configs.{name}").get_config()
  _set(config, ARGS.set)
  config.runtime.cpu_devices = ARGS.cpu_devices or config.runtime.cpu_devices
  config.runtime.num_devices = min(jax.local_device_count(), max(config.runtime.cpu_devices, 1))
  dataset = dataset_of(config)
  method = methods.build(config, dataset)
  train.validate(config, method.networks)
  platform.apply(config)
  program = train.Program(config, method, dataset)
  tic = time.perf_counter()
  state = program.init(jax.random.PRNGKey(config.seed))
  jax.block_until_ready(state)
  k = ARGS.steps or config.training.steps_per_call
  # Methods that change phase with the step (Denoising-EBM's DAE pre-training, DDE's E_p pre-training) are timed
  # in their last phase, the one the FLOP count (the costliest branch) describes.
  base = ARGS.start if ARGS.start >= 0 else max(0, int(config.training.n_iters) - (2 * ARGS.reps + 4) * k)
  steps = lambda i: np.arange(base + i * k, base + (i + 1) * k, dtype=np.int32)
  state["step"] = jax.device_put(np.asarray(base, state["step"].dtype), state["step"].sharding)  # the phase's clock
  tic = time.perf_counter()
  state, m = program.run(state, steps(0))
  first = time.perf_counter() - tic
  calls = iter(range(1, 1000))

  def one(prefetch: bool):
    nonlocal state
    i = next(calls)
    state, _ = program.run(state, steps(i), next_steps=steps(i + 1) if prefetch else None)

  serial = median(lambda: one(False), ARGS.reps)  # batches built before each chunk
  one(True)  # prime the background thread with the next chunk
  dt = median(lambda: one(True), ARGS.reps)      # as the trainer runs: the next batches built during this chunk
  host = median(lambda: program.batches(np.arange(0, k, dtype=np.int32)), ARGS.reps) / k
  batch = jax.ShapeDtypeStruct(np.shape(program.batches(np.arange(1))[0]), jnp.float32) if not program.in_graph \
      else jax.ShapeDtypeStruct((config.training.batch_size,) + tuple(dataset.shape), jnp.float32)
  step_flops = model_flops(train.guarded_step(method), jax.eval_shape(lambda s: s, state), batch)
  n_params = sum(int(np.prod(l.shape)) for n in state["nets"].values() if isinstance(n, train.NetState)
                 for l in jax.tree_util.tree_leaves(n.params))
  row = {"config": name, "backend": f"{jax.default_backend()} x{len(program.mesh.devices.ravel())}",
         "dispatch": program.mode, "conv": platform.conv_impl(config), "batch": config.training.batch_size,
         "params": n_params, "first_s": first, "step_ms": 1e3 * dt / k, "steps_s": k / dt,
         "host_ms": 1e3 * host, "serial_ms": 1e3 * serial / k, "gflop_step": step_flops / 1e9, "gflops": step_flops * k / dt / 1e9,
         "mfu": step_flops * k / dt / PEAK}
  if not ARGS.no_sample:
    s = config.sampling
    if len(dataset.shape) == 3 and "n_samples" in s:
      s.n_samples = ARGS.sample_n
      if "batch_size" in s:
        s.batch_size = 0
    params = train.sampling_params(state["nets"])
    tic = time.perf_counter()
    method.sample(params, jax.random.PRNGKey(1))
    row["sample_first_s"] = time.perf_counter() - tic
    row["sample_s"] = median(lambda: method.sample(params, jax.random.PRNGKey(2)), 1)
    row["sample_n"] = s.n_samples
  return row


COLS = [("config", "config", "{}"), ("backend", "backend", "{}"), ("dispatch", "dispatch", "{}"),
        ("conv", "conv", "{}"), ("batch", "batch", "{}"), ("params", "params", "{:,}"),
        ("first_s", "1st call s", "{:.1f}"), ("step_ms", "ms/step", "{:.1f}"), ("serial_ms", "ms/step, no prefetch", "{:.1f}"), ("steps_s", "steps/s", "{:.2f}"), ("host_ms", "host ms/batch", "{:.2f}"),
        ("gflop_step", "GFLOP/step", "{:.2f}"), ("gflops", "GFLOP/s", "{:.1f}"), ("mfu", "MFU", "{:.1%}"),
        ("sample_n", "samples", "{}"), ("sample_first_s", "sampler 1st s", "{:.1f}"), ("sample_s", "sampler s", "{:.1f}")]


PEAK = 1.0


def main():
  global PEAK
  PEAK = matmul_peak()
  load0 = os.getloadavg()[0]
  rows = []
  for name in [c for c in ARGS.configs.split(",") if c]:
    rows.append(bench(name))
    print(rows[-1], file=sys.stderr, flush=True)
  print(f"# jax {jax.__version__}, {jax.default_backend()} {jax.devices()[0].device_kind}, nproc {os.cpu_count()}, "
        f"load {load0:.2f} -> {os.getloadavg()[0]:.2f}; MFU against the measured float32 matmul rate "
        f"{PEAK / 1e9:.0f} GFLOP/s; {' '.join(sys.argv[1:])}")
  cols = [c for c in COLS if any(c[0] in r for r in rows)]
  print("| " + " | ".join(c[1] for c in cols) + " |")
  print("|" + "|".join("---" for _ in cols) + "|")
  for r in rows:
    print("| " + " | ".join(c[2].format(r[c[0]]) if c[0] in r else "-" for c in cols) + " |")


if __name__ == "__main__":
  main()

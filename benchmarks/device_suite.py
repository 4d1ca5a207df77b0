"""The one prepared device check (run by benchmarks/gpu_suite.sh): every paper-value config at full width on the
first accelerator, in under 8 minutes, written to one JSON file.

Per config: compile time of the trainer's chunk, training steps/s, model FLOPs per step and MFU (against the
chip's vendor peak when known, else the measured float32 matmul rate), sampler steps/s (a few steps of the
method's sampler for a batch of chains), peak device memory; the same in bfloat16 (model.dtype) for the configs
whose networks take it. Then the MDSM / DSM step ratio (benchmarks/bench_mdsm.py's comparison) and
Denoising-EBM vs NCSN time for 64 samples at the paper's step counts (benchmarks/bench_sampling_speed.py). Each
part runs under a deadline; a part that would not fit is recorded as skipped, never guessed.

    python benchmarks/device_suite.py --out=/tmp/device_suite.json [--budget_s=450] [--tiny]

--tiny shrinks every network and batch so the script itself can be checked on a CPU (tests/test_device_suite.py).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from dsm_jax import flops, methods, platform, train  # noqa: E402
from dsm_jax.data import images  # noqa: E402

PAPER = ["ncsn_mnist", "ncsn_cifar10", "ncsn_celeba", "mdsm_fashion_mnist", "mdsm_cifar10", "mdsm_celeba",
         "dde_mnist", "dde_fashion_mnist", "debm_cifar10", "debm_svhn", "debm_celeba64"]
BF16 = ["ncsn_cifar10", "mdsm_cifar10", "debm_cifar10", "debm_celeba64"]
VENDOR_PEAK = {"H100": {"float32": 494e12, "bfloat16": 989e12}, "H200": {"float32": 494e12, "bfloat16": 989e12},
               "A100": {"float32": 156e12, "bfloat16": 312e12}}
TINY = {"model.ngf": 4, "model.nf": 4, "model.channels": (4, 8, 8), "model.hidden": 8, "model.n_layers": 2,
        "model.dde.hidden": 8, "model.dde.n_layers": 2, "model.generator.hidden": 8, "model.generator.n_layers": 2,
        "model.ch_mult": (1, 2), "model.num_res_blocks": 1, "model.latent_dim": 8, "training.batch_size": 6,
        "training.q_steps": 2, "training.n_chains": 2, "training.latent_steps": 1, "training.pixel_steps": 1}


def _set(config, key, value) -> bool:
  node = config
  *path, leaf = key.split(".")
  for p in path:
    if p not in node:
      return False
    node = node[p]
  if leaf not in node:
    return False
  with node.ignore_type():
    node[leaf] = value
  return True


def _median_time(fn, reps=3):
  ts = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    ts.append(time.perf_counter() - t0)
  return statistics.median(ts)


def _peak_memory():
  try:
    stats = jax.devices()[0].memory_stats() or {}
  except Exception:  # noqa: BLE001 - backends without memory statistics
    return None
  return stats.get("peak_bytes_in_use")


def peak_rate(dtype: str) -> tuple:
  kind = jax.devices()[0].device_kind
  for name, rates in VENDOR_PEAK.items():
    if name in kind:
      return rates[dtype], f"vendor peak of {name}"
  n = 2048
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.bfloat16 if dtype == "bfloat16" else jnp.float32)
  f = jax.jit(lambda a: a @ a)
  jax.block_until_ready(f(a))
  return 2.0 * n ** 3 / _median_time(lambda: f(a)), "measured matmul rate"


def config_row(name: str, dtype: str, tiny: bool, chunk: int) -> dict:
  config = importlib.import_module(f"configs.{name}").get_config()
  if tiny:
    for k, v in TINY.items():
      _set(config, k, v)
  if dtype == "bfloat16" and not _set(config, "model.dtype", "bfloat16"):
    return {"skipped": "no model.dtype"}
  s = config.sampling
  for k, v in (("n_steps_each", 2), ("n_flat", 2), ("n_decay", 2), ("n_cool", 2), ("latent_steps", 2),
               ("pixel_steps", 2)):
    _set(config, f"sampling.{k}", v)
  _set(config, "sampling.pixel_only", False)  # debm: time the two-stage chain alone
  config.runtime.chunk_mode = "scan"
  platform.apply(config)
  dataset = images.StandIn(images.example_shape(config.data), config.data.scale)
  method = methods.build(config, dataset)
  program = train.Program(config, method, dataset)
  state = program.init(jax.random.PRNGKey(config.seed))
  t0 = time.perf_counter()
  state, _ = program.run(state, np.arange(0, chunk, dtype=np.int32))
  compile_s = time.perf_counter() - t0
  i = iter(range(1, 100))

  def one():
    nonlocal state
    j = next(i)
    state, m = program.run(state, np.arange(j * chunk, (j + 1) * chunk, dtype=np.int32))
    return m["loss"]

  dt = _median_time(one) / chunk
  batch = jax.ShapeDtypeStruct((config.training.batch_size,) + dataset.shape, jnp.float32)
  step_flops = flops.count(train.guarded_step(method), jax.eval_shape(lambda s: s, state), batch)
  peak, peak_kind = peak_rate(dtype)
  row = {"compile_s": compile_s, "train_steps_s": 1.0 / dt, "step_flops": step_flops,
         "mfu": step_flops / dt / peak, "mfu_reference": peak_kind, "batch": config.training.batch_size}
  if method.draw is not None:
    params = train.sampling_params(state["nets"])
    n = 64 if not tiny else 4
    n_steps = (2 * int(config.model.num_scales) if config.method == "ncsn"
               else {"mdsm": 6, "debm": 4}.get(config.method, 1))  # the few sampler steps set above
    draw = jax.jit(lambda p, k: method.draw(p, k, n))
    t0 = time.perf_counter()
    jax.block_until_ready(draw(params, jax.random.PRNGKey(1)))
    row["sampler_compile_s"] = time.perf_counter() - t0
    row["sampler_steps_s"] = n_steps / _median_time(lambda: draw(params, jax.random.PRNGKey(2)))
    row["sampler_chains"] = n
  row["peak_memory_bytes"] = _peak_memory()
  return row


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--out", default="/tmp/device_suite.json")
  ap.add_argument("--budget_s", type=float, default=450.0)
  ap.add_argument("--configs", default=",".join(PAPER))
  ap.add_argument("--bf16", default=",".join(BF16))
  ap.add_argument("--chunk", type=int, default=5)
  ap.add_argument("--tiny", action="store_true")
  args = ap.parse_args()
  start = time.perf_counter()
  dev = jax.devices()[0]
  out = {"device": dev.device_kind, "backend": jax.default_backend(), "jax": jax.__version__, "configs": {},
         "tiny": args.tiny}

  def left() -> float:
    return args.budget_s - (time.perf_counter() - start)

  def write():
    with open(args.out, "w") as f:
      json.dump(out, f, indent=1, default=str)

  jobs = [(c, "float32") for c in args.configs.split(",") if c] + [(c, "bfloat16") for c in args.bf16.split(",") if c]
  for name, dtype in jobs:
    key = f"{name}/{dtype}"
    if left() < 30:
      out["configs"][key] = {"skipped": "time budget"}
      continue
    try:
      out["configs"][key] = config_row(name, dtype, args.tiny, args.chunk)
    except Exception as e:  # noqa: BLE001 - one failing config is recorded, the others still run
      out["configs"][key] = {"error": f"{type(e).__name__}: {str(e)[:300]}", "trace": traceback.format_exc()[-800:]}
    print(key, json.dumps(out["configs"][key], default=str)[:300], flush=True)
    write()
  here = os.path.dirname(os.path.abspath(__file__))
  for tag, cmd in (("mdsm_dsm_ratio", [sys.executable, f"{here}/bench_mdsm.py", "--config=mdsm_cifar10", "--chains=100"]
                    + (["--nf=4", "--batch=4", "--chains=4"] if args.tiny else [])),
                   ("debm_vs_ncsn_64_samples", [sys.executable, f"{here}/bench_sampling_speed.py", "--n=64"]
                    + (["--n=4", "--debm_nf=4", "--ncsn_ngf=4", "--ncsn_steps=1"] if args.tiny else []))):
    if left() < 60:
      out[tag] = {"skipped": "time budget"}
      continue
    try:
      r = subprocess.run(cmd, capture_output=True, text=True, timeout=max(left() - 10, 30))
      out[tag] = {"rc": r.returncode, "stdout": r.stdout[-3000:], "stderr": r.stderr[-1000:] if r.returncode else ""}
    except subprocess.TimeoutExpired:
      out[tag] = {"skipped": "time budget"}
    write()
  out["wall_s"] = time.perf_counter() - start
  write()
  print(f"wrote {args.out} in {out['wall_s']:.0f} s")


if __name__ == "__main__":
  main()

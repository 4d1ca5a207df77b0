"""Model FLOPs of every config and the time its full training run needs on an accelerator.

For each config: trained parameters, matmul + convolution FLOPs of one training step at the config's batch
(dsm_jax/flops.py: loops counted by their trip count) and of the sampler per sample over its whole schedule, and the
projected hours of the config's n_iters steps on one H100 and one TPU v5e at 40% MFU (float32 configs at the
H100's TF32 rate). Counting traces the programs on stand-in data; nothing is compiled or run.

    python benchmarks/flops_table.py                      # every config in configs/
    python benchmarks/flops_table.py --configs=ncsn_cifar10,debm_celeba64
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from dsm_jax import data as data_lib  # noqa: E402
from dsm_jax import flops, methods, train  # noqa: E402
from dsm_jax.data import images  # noqa: E402

BASES = {"__init__", "default", "ncsn_images", "mdsm_images", "dde_images", "debm_images"}


def all_configs() -> list:
  d = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
  return sorted(f[:-3] for f in os.listdir(d) if f.endswith(".py") and f[:-3] not in BASES)


def row(name: str) -> dict:
  config = importlib.import_module(f"configs.{name}").get_config()
  if config.data.dataset in images.IMAGE_DATASETS:
    dataset = images.StandIn(images.example_shape(config.data), config.data.scale)
  else:
    dataset = data_lib.get_dataset(config.data, config.seed)
  method = methods.build(config, dataset)
  state = jax.eval_shape(lambda k: train.init_state(config, method, k), jax.random.PRNGKey(0))
  n_params = sum(l.size for n in state["nets"].values() if isinstance(n, train.NetState)
                 for l in jax.tree_util.tree_leaves(n.params))
  b = config.training.batch_size
  if hasattr(dataset, "sample"):
    batch = jax.ShapeDtypeStruct((b,) + tuple(dataset.shape), jnp.float32)
  elif config.data.dataset in ("logreg2d", "linear_gaussian"):
    batch = jax.eval_shape(lambda k: dataset.sample(k, b), jax.random.PRNGKey(0))
  else:
    batch = jax.ShapeDtypeStruct((b,) + tuple(dataset.shape), jnp.float32)
  step = flops.count(train.guarded_step(method), state, batch)
  out = {"config": name, "params": n_params, "batch": b, "n_iters": config.training.n_iters, "step_flops": step}
  if method.draw is not None:
    n = 8
    params = train.sampling_params(state["nets"])
    out["sample_flops"] = flops.count(lambda p, k: method.draw(p, k, n), params, jax.random.PRNGKey(0)) / n
  dtype = str(config.model.get("dtype", "float32")) if hasattr(config.model, "get") else "float32"
  for chip in ("h100", "tpu_v5e"):
    out[f"hours_{chip}"] = flops.hours(step, config.training.n_iters, chip, dtype if dtype == "bfloat16" else "float32")
  return out


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--configs", default="")
  args = ap.parse_args()
  names = [c for c in args.configs.split(",") if c] or all_configs()
  print("| config | params | batch | FLOPs / training step | sampler FLOPs / sample | n_iters | "
        "hours on 1 H100 (40% MFU) | hours on 1 TPU v5e (40% MFU) |")
  print("|---|---|---|---|---|---|---|---|")
  for name in names:
    r = row(name)
    sf = f"{r['sample_flops']:.3g}" if "sample_flops" in r else "-"
    print(f"| {name} | {r['params']:,} | {r['batch']} | {r['step_flops']:.3g} | {sf} | {r['n_iters']:,} | "
          f"{r['hours_h100']:.2g} | {r['hours_tpu_v5e']:.2g} |", flush=True)


if __name__ == "__main__":
  main()

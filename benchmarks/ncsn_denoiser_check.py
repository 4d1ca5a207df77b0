"""Per-level check of a trained NCSN image checkpoint through its Tweedie denoiser D(x~) = x~ + sigma^2 s(x~, sigma).

For each level of the ladder, on held-out test images x with x~ = x + sigma z, prints
  * mse: the per-pixel mean of (D(x~) - x)^2 (lower is better; the identity D(x~) = x~ scores sigma^2);
  * mean_D: the mean pixel of D(x~), which for the exact denoiser equals the data's mean pixel (the law of
    total expectation), so a gap means the network is biased (e.g. darker than the data).
Optionally draws a few annealed-Langevin chains with the config's sampler and saves their grid.

  python benchmarks/ncsn_denoiser_check.py --config=configs/ncsn_mnist5k.py --workdir=runs/ncsn_mnist5k \
      --params=ema --chains=32
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from dsm_jax import run_lib, samplers, train, viz  # noqa: E402
from dsm_jax.methods.ncsn import ladder_from_config  # noqa: E402


def load_config(path: str):
  spec = importlib.util.spec_from_file_location("cfg", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--config", required=True)
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--params", choices=("ema", "raw"), default="ema")
  ap.add_argument("--n", type=int, default=256, help="held-out images per level")
  ap.add_argument("--chains", type=int, default=0, help="annealed Langevin chains to draw (0: none)")
  args = ap.parse_args()
  cfg = load_config(args.config)
  train.setup_devices(cfg)
  ds, method = run_lib.prepare(cfg, args.workdir)
  step, state = train.load_latest(cfg, args.workdir, method)
  params = state["ema_params"] if args.params == "ema" else state["params"]
  score = jax.jit(method.score(params))  # the network plus any base score, as the sampler sees it

  ladder = np.asarray(ladder_from_config(cfg))
  x = ds.test_images()[:args.n].astype(np.float32)
  key = jax.random.PRNGKey(1)
  print(f"step {step}, {args.params} parameters, data mean pixel {x.mean():.4f}")
  print("level  sigma    mse(D(x~), x)  identity mse  mean_D")
  for i, s in enumerate(ladder):
    xn = x + s * np.asarray(jax.random.normal(jax.random.fold_in(key, i), x.shape))
    d = xn + s ** 2 * np.asarray(score(xn, jnp.full((len(x),), s, jnp.float32)))
    print(f"{i:5d}  {s:.4f}  {np.mean((d - x) ** 2):.3e}      {s ** 2:.3e}     {d.mean():.4f}")
  if args.chains:
    sc = cfg.sampling
    x0 = jax.random.uniform(jax.random.PRNGKey(5), (args.chains,) + tuple(ds.shape), minval=sc.init_range[0],
                            maxval=sc.init_range[1])
    draw = jax.jit(lambda k, x0: samplers.annealed_langevin(
        score, k, x0, jnp.asarray(ladder), sc.eps, sc.n_steps_each, convention=sc.convention,
        final_denoise=sc.final_denoise)[0])
    tic = time.perf_counter()
    out = np.clip(np.asarray(ds.to_unit(draw(jax.random.PRNGKey(0), x0))), 0, 1)
    path = os.path.join(args.workdir, f"check_{args.params}.png")
    viz.image_grid(path, out)
    white = int(np.sum(out.reshape(len(out), -1).mean(1) > 0.4))
    print(f"{args.chains} chains in {time.perf_counter() - tic:.0f} s: mean pixel {out.mean():.4f}, "
          f"{white} with mean pixel > 0.4; grid {path}")


if __name__ == "__main__":
  main()

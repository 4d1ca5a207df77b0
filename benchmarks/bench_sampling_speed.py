"""Seconds for N samples (default 64): Denoising-EBM's two-stage sampler against NCSN's annealed Langevin,
same backend, same image size. The paper reports 64 CIFAR-10 samples in 8.67 s against NCSN's 120.11 s,
timed with K = 35 latent and T = 100 pixel steps, while its experimental settings (and configs/debm_cifar10.py)
use K = 20, T = 90: the default times the config's counts, --paper_timing the counts of the 8.67 s figure,
and every row names the counts it times.

* DEBM: `method.sample`'s compiled chain for configs/<debm>.py: K latent Langevin steps on U_s, decode,
  T pixel Langevin steps on U_c, the final denoising step (pixel-only comparison off). Each step is one
  U-Net pass forward and backward (plus h_gamma for the latent steps).
* NCSN: `samplers.annealed_langevin` with the RefineNet score of configs/<ncsn>.py: L levels x T steps,
  one forward pass per step.
Both use freshly initialised parameters (speed does not depend on trained weights). Times are the median
of --reps calls after one compiling call (reported separately).

    python benchmarks/bench_sampling_speed.py                                  # CIFAR-10 sizes, paper values
    python benchmarks/bench_sampling_speed.py --n=8 --debm_nf=16 --ncsn_ngf=16 --ncsn_steps=10   # CPU smoke
    python benchmarks/bench_sampling_speed.py --debm=debm_mnist5k --ncsn=ncsn_mnist5k         # the CPU configs
    python benchmarks/bench_sampling_speed.py --paper_timing                   # K = 35, T = 100 as the paper's timing
"""
from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

PAPER_TIMING_STEPS = (35, 100)  # K, T behind the paper's 64 samples in 8.67 s
SHAPES = {"cifar10": (32, 32, 3), "svhn_cropped": (32, 32, 3), "celeb_a": (32, 32, 3), "mnist5k": (28, 28, 1)}


class _ShapeOnly:
  has_density = False

  def __init__(self, shape, scale):
    self.shape, self.scale = tuple(shape), scale

  def to_unit(self, x):
    return (x + 1) / 2 if self.scale == "-11" else x


def _time(fn, reps):
  tic = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - tic
  ts = []
  for _ in range(reps):
    tic = time.perf_counter()
    jax.block_until_ready(fn())
    ts.append(time.perf_counter() - tic)
  return first, statistics.median(ts)


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--debm", default="debm_cifar10")
  ap.add_argument("--ncsn", default="ncsn_cifar10")
  ap.add_argument("--n", type=int, default=64, help="samples per call")
  ap.add_argument("--debm_nf", type=int, default=0, help="U-Net width override (0: config's)")
  ap.add_argument("--paper_timing", action="store_true",
                  help="time DEBM with K = 35, T = 100, the counts of the paper's 8.67 s figure (default: the config's)")
  ap.add_argument("--ncsn_ngf", type=int, default=0, help="RefineNet width override (0: config's)")
  ap.add_argument("--ncsn_steps", type=int, default=0, help="T per level override (0: config's)")
  ap.add_argument("--reps", type=int, default=3)
  args = ap.parse_args()

  from dsm_jax import models, samplers, sigmas
  from dsm_jax.methods import debm

  rows = []
  # --- Denoising-EBM two-stage
  c = importlib.import_module(f"configs.{args.debm}").get_config()
  if args.debm_nf:
    c.model.nf = args.debm_nf
  c.sampling.n_samples = c.sampling.batch_size = args.n
  c.sampling.pixel_only = False
  if args.paper_timing:
    c.sampling.latent_steps, c.sampling.pixel_steps = PAPER_TIMING_STEPS
  shape = SHAPES[c.data.dataset] if c.data.image_size in (0, 32) else (64, 64, 3)
  if c.data.dataset == "celeb_a" and c.data.image_size == 64:
    shape = (64, 64, 3)
  method = debm.build(c, _ShapeOnly(shape, c.data.scale))
  params = method.init(jax.random.PRNGKey(0))
  s = c.sampling
  first, dt = _time(lambda: method.sample(params, jax.random.PRNGKey(1))["x"], args.reps)
  counts = "the paper's timing" if args.paper_timing else "config"
  rows.append((f"{args.debm} two-stage (nf={c.model.nf}, K={s.latent_steps}, T={s.pixel_steps}: {counts})",
               s.latent_steps + s.pixel_steps, first, dt))

  # --- NCSN annealed Langevin
  c = importlib.import_module(f"configs.{args.ncsn}").get_config()
  if args.ncsn_ngf:
    c.model.ngf = args.ncsn_ngf
  steps = args.ncsn_steps or int(c.sampling.n_steps_each)
  shape_n = SHAPES[c.data.dataset]
  ladder = sigmas.ladder_from_config(c)
  net = models.build(c.model, shape_n, sigmas=tuple(float(v) for v in ladder))
  p_n = net.init(jax.random.PRNGKey(0), np.zeros((1,) + shape_n, np.float32), ladder[:1])

  @jax.jit
  def draw(p, key, x0):
    score = lambda x, sig: net.apply(p, x, sig)
    return samplers.annealed_langevin(score, key, x0, ladder, c.sampling.eps, steps,
                                      convention=c.sampling.convention)[0]

  lo, hi = c.sampling.init_range
  x0 = jax.random.uniform(jax.random.PRNGKey(2), (args.n,) + shape_n, minval=lo, maxval=hi)
  first, dt = _time(lambda: draw(p_n, jax.random.PRNGKey(3), x0), args.reps)
  width = f"ngf={c.model.ngf}" if "ngf" in c.model else f"{c.model.name} {tuple(c.model.channels)}"
  rows.append((f"{args.ncsn} annealed Langevin ({width}, L={len(ladder)}, T={steps})",
               int(len(ladder)) * steps, first, dt))

  print(f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind}), n = {args.n} samples")
  print("| sampler | network steps | first call s (compile + run) | s per {} samples |".format(args.n))
  print("|---|---|---|---|")
  for name, k, first, dt in rows:
    print(f"| {name} | {k} | {first:.2f} | {dt:.3f} |")
  print(f"ratio NCSN / DEBM: {rows[1][3] / rows[0][3]:.1f}x")


if __name__ == "__main__":
  main()

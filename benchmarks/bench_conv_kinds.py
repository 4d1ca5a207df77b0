"""Which convolutions are slow on XLA:CPU? Times one 3x3 conv (NHWC, SAME) at RefineNet's shapes, split
into forward, input-gradient and weight-gradient, for kernel dilations 1, 2, 4, plus the 2x2
mean pool (forward + backward) and the 5x5 stride-1 average pool of CRP.

    python benchmarks/bench_conv_kinds.py                       # ngf=16 MNIST shapes: B=64, 14x14x32
    python benchmarks/bench_conv_kinds.py --batch=64 --size=28 --chan=16 --reps=5
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import flax.linen as nn


def timeit(f, *a, reps=5):
  jax.block_until_ready(f(*a))
  ts = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(f(*a))
    ts.append(time.perf_counter() - t0)
  return 1e3 * statistics.median(ts)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--size", type=int, default=14)
  ap.add_argument("--chan", type=int, default=32)
  ap.add_argument("--dilations", default="1,2,4")
  ap.add_argument("--reps", type=int, default=5)
  ap.add_argument("--dtype", default="float32")
  args = ap.parse_args()
  dt = jnp.dtype(args.dtype)
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  x = jax.random.normal(k1, (args.batch, args.size, args.size, args.chan), dt)
  w = jax.random.normal(k2, (3, 3, args.chan, args.chan), dt) * 0.05
  g = jnp.ones_like(x)
  flops = 2 * args.batch * args.size ** 2 * args.chan ** 2 * 9
  print(f"# jax {jax.__version__} {jax.default_backend()} load1={os.getloadavg()[0]:.2f} "
        f"x={tuple(x.shape)} {args.dtype}; one conv = {flops / 1e9:.3f} GFLOP; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  print("| op | dilation | ms | GFLOP/s | HLO convolution window |")
  print("|---|---|---|---|---|")
  for d in [int(v) for v in args.dilations.split(",")]:
    conv = lambda x, w, d=d: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", rhs_dilation=(d, d),
                                                          dimension_numbers=("NHWC", "HWIO", "NHWC"))
    fwd = jax.jit(conv)
    dx = jax.jit(lambda x, w, g: jax.vjp(lambda x_: conv(x_, w), x)[1](g)[0])
    dw = jax.jit(lambda x, w, g: jax.vjp(lambda w_: conv(x, w_), w)[1](g)[0])
    for name, f, a in (("forward", fwd, (x, w)), ("input grad", dx, (x, w, g)), ("weight grad", dw, (x, w, g))):
      hlo = f.lower(*a).compile().as_text()
      win = [l.split("window={")[1].split("}")[0] for l in hlo.splitlines() if " convolution(" in l]
      ms = timeit(f, *a, reps=args.reps)
      print(f"| conv3x3 {name} | {d} | {ms:.2f} | {flops / ms / 1e6:.1f} | {'; '.join(win)[:80]} |", flush=True)
  mp = jax.jit(lambda x: nn.avg_pool(x, (2, 2), strides=(2, 2)))
  mpg = jax.jit(jax.grad(lambda x: jnp.sum(nn.avg_pool(x, (2, 2), strides=(2, 2)) ** 2)))
  ap5 = jax.jit(lambda x: nn.avg_pool(x, (5, 5), strides=(1, 1), padding=((2, 2), (2, 2)), count_include_pad=True))
  ap5g = jax.jit(jax.grad(lambda x: jnp.sum(ap5(x) ** 2)))
  # the same 5x5 box mean (zero padding counted) as two 1-D passes: 10 adds per output instead of 25
  sep = lambda x: nn.avg_pool(nn.avg_pool(x, (5, 1), strides=(1, 1), padding=((2, 2), (0, 0)), count_include_pad=True),
                              (1, 5), strides=(1, 1), padding=((0, 0), (2, 2)), count_include_pad=True)
  sep5, sep5g = jax.jit(sep), jax.jit(jax.grad(lambda x: jnp.sum(sep(x) ** 2)))
  err = float(jnp.max(jnp.abs(sep5(x) - ap5(x))))
  for name, f in (("avg_pool 2x2/2 fwd", mp), ("avg_pool 2x2/2 fwd+bwd", mpg), ("avg_pool 5x5/1 fwd", ap5),
                  ("avg_pool 5x5/1 fwd+bwd", ap5g), (f"separable 5x1+1x5 fwd (max err {err:.1e})", sep5),
                  ("separable 5x1+1x5 fwd+bwd", sep5g)):
    print(f"| {name} | - | {timeit(f, x, reps=args.reps):.2f} | - | - |", flush=True)


if __name__ == "__main__":
  main()

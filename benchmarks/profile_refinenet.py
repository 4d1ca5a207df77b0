"""Where does the RefineNet training step's time go? Times (jit, no scan) the NCSN loss forward and
value_and_grad for a config, lists the convolution shapes of the compiled gradient HLO, and (with
--per_conv) times every distinct convolution of that HLO on its own.

    python benchmarks/profile_refinenet.py --config=ncsn_mnist5k --ngf=16 --batch=64 --per_conv
"""
from __future__ import annotations

import argparse
import collections
import importlib
import os
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from dsm_jax.methods import ncsn  # noqa: E402


class _Shape:
  has_density = False

  def __init__(self, s):
    self.shape = s


def med(f, *a, reps=3):
  jax.block_until_ready(f(*a))
  ts = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(f(*a))
    ts.append(time.perf_counter() - t0)
  return statistics.median(ts)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--config", default="ncsn_mnist5k")
  ap.add_argument("--ngf", type=int, default=16)
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--dtype", default="float32")
  ap.add_argument("--reps", type=int, default=3)
  ap.add_argument("--per_conv", action="store_true")
  ap.add_argument("--dump", default="")
  args = ap.parse_args()
  config = importlib.import_module(f"configs.{args.config}").get_config()
  config.model.ngf, config.model.dtype = args.ngf, args.dtype
  shape = (28, 28, 1) if "mnist" in config.data.dataset else (32, 32, 3)
  method = ncsn.build(config, _Shape(shape))
  params = jax.jit(method.init_params)(jax.random.PRNGKey(0))
  x = jax.random.uniform(jax.random.PRNGKey(1), (args.batch,) + shape)
  key = jax.random.PRNGKey(2)
  print(f"# jax {jax.__version__} load1={os.getloadavg()[0]:.2f} {args.config} ngf={args.ngf} B={args.batch} {args.dtype}")
  fwd = jax.jit(lambda p, k, x: method.loss_fn(p, k, x)[0])
  grad = jax.jit(lambda p, k, x: jax.value_and_grad(lambda q: method.loss_fn(q, k, x)[0])(p))
  for name, f in (("loss forward", fwd), ("value_and_grad", grad)):
    t0 = time.perf_counter()
    c = f.lower(params, key, x).compile()
    tc = time.perf_counter() - t0
    print(f"{name}: compile {tc:.1f} s, run {1e3 * med(c, params, key, x, reps=args.reps):.1f} ms", flush=True)
  hlo = grad.lower(params, key, x).compile().as_text()
  if args.dump:
    open(args.dump, "w").write(hlo)
  ops = collections.Counter(re.findall(r"= \S+ ([a-z][a-z0-9-]*)\(", hlo))
  print("op counts:", dict(ops.most_common(25)))
  convs = re.findall(r"= (\w+)\[([0-9,]+)\]\{[0-9,]+\} convolution\(%[\w.]+, %[\w.]+\), (window=\{[^}]*\})?,? ?"
                     r"(dim_labels=[\w>-]+)?(, feature_group_count=\d+)?", hlo)
  # operand shapes: look them up by name
  shapes = dict(re.findall(r"%([\w.]+) = \w+\[([0-9,]*)\]", hlo))
  kinds = collections.Counter()
  for line in hlo.splitlines():
    if " convolution(" not in line:
      continue
    m = re.search(r"= (\w+)\[([0-9,]+)\]\S* convolution\(%([\w.]+), %([\w.]+)\), (window=\{[^}]*\})", line)
    if not m:
      continue
    dl = re.search(r"dim_labels=([\w>-]+)", line).group(1)
    kinds[(m.group(2), shapes.get(m.group(3)), shapes.get(m.group(4)), m.group(5), dl)] += 1
  print(f"{sum(kinds.values())} convolutions, {len(kinds)} distinct:")
  rows = []
  for (out, lhs, rhs, win, dl), n in kinds.most_common():
    t_ms = float("nan")
    if args.per_conv:
      lhs_s, rhs_s = tuple(int(v) for v in lhs.split(",")), tuple(int(v) for v in rhs.split(","))
      # rebuild the op from its HLO attributes via lax.conv_general_dilated
      w = re.search(r"size=([\dx]+)", win).group(1).split("x")
      pad = re.search(r"pad=([\d_x-]+)", win)
      pads = [tuple(int(v) for v in p.split("_")) for p in pad.group(1).split("x")] if pad else [(0, 0)] * len(w)
      st = re.search(r"stride=([\dx]+)", win)
      strides = tuple(int(v) for v in st.group(1).split("x")) if st else (1,) * len(w)
      ld = re.search(r"lhs_dilate=([\dx]+)", win)
      rd = re.search(r"rhs_dilate=([\dx]+)", win)
      lhs_spec, rest = dl.split("_")
      rhs_spec, out_spec = rest.split("->")
      cv = lambda a, b: jax.lax.conv_general_dilated(
          a, b, strides, pads, lhs_dilation=tuple(int(v) for v in ld.group(1).split("x")) if ld else None,
          rhs_dilation=tuple(int(v) for v in rd.group(1).split("x")) if rd else None,
          dimension_numbers=jax.lax.ConvDimensionNumbers(
              tuple(lhs_spec.index(c) for c in "bf01"), tuple(rhs_spec.index(c) for c in "oi01"),
              tuple(out_spec.index(c) for c in "bf01")))
      try:
        t_ms = 1e3 * med(jax.jit(cv), jnp.ones(lhs_s), jnp.ones(rhs_s), reps=args.reps)
      except Exception as e:  # noqa: BLE001
        print("  could not rebuild", win, dl, repr(e)[:100])
    rows.append((n * t_ms, n, t_ms, out, lhs, rhs, win, dl))
  for tot, n, t_ms, out, lhs, rhs, win, dl in sorted(rows, key=lambda r: -np.nan_to_num(r[0])):
    print(f"  {n:3d} x {t_ms:8.2f} ms = {tot:8.1f} ms  out[{out}] lhs[{lhs}] rhs[{rhs}] {win} {dl}")
  if args.per_conv:
    print(f"sum over convolutions: {np.nansum([r[0] for r in rows]):.0f} ms")


if __name__ == "__main__":
  main()

"""Micro-benchmark of the issue's small DSM training steps in JAX (and PyTorch, if available) on CPU.

Nets (the issue's): a 3x3 conv net 1->32->64->64 (ELU) -> 3x3 conv to 1 channel on 28x28x1 (batch 64),
and a 2-128-128-2 softplus MLP. The loss is noise-conditional DSM with one sigma per example drawn
from a 10-level geometric ladder (score = net(x~) / sigma, lambda = sigma^2), optimizer Adam(1e-3).

Every variant runs in its own subprocess, so XLA_FLAGS / thread pinning apply to it alone:

    python benchmarks/bench_conv.py                       # the default variant list
    python benchmarks/bench_conv.py --variants=base,nchw,bf16,dev2 --reps=30
    python benchmarks/bench_conv.py --list                # show the variant names
    python benchmarks/bench_conv.py --torch_python=/tmp/torchenv/bin/python   # add PyTorch rows

Modes per conv variant: 'step' (full jit'd train step: fwd + bwd + Adam), 'fwd' (loss only), 'grad'
(value_and_grad, no optimizer). The MLP variant times one lax.scan over --mlp_scan steps and reports
the per-step time.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# name -> (description, XLA_FLAGS additions, worker options, command prefix)
VARIANTS = {
    "base": ("NHWC f32, default flags", "", {}, []),
    "nchw": ("NCHW layout (lax.conv_general_dilated)", "", {"layout": "NCHW"}, []),
    "bf16": ("bfloat16 activations+weights in the net", "", {"dtype": "bfloat16"}, []),
    "donate": ("jit(donate_argnums=state)", "", {"donate": True}, []),
    "dev2": ("2 host devices, batch sharded", "--xla_force_host_platform_device_count=2", {"ndev": 2}, []),
    "dev2_bf16": ("2 host devices + bf16", "--xla_force_host_platform_device_count=2",
                  {"ndev": 2, "dtype": "bfloat16"}, []),
    "no_eigen_mt": ("--xla_cpu_multi_thread_eigen=false", "--xla_cpu_multi_thread_eigen=false", {}, []),
    "no_thunk": ("--xla_cpu_use_thunk_runtime=false", "--xla_cpu_use_thunk_runtime=false", {}, []),
    "xnnpack": ("--xla_cpu_use_xnnpack=true", "--xla_cpu_use_xnnpack=true", {}, []),
    "ynn_conv": ("YNNPACK convs (ynn_fusion_type=individual_convolution)",
                 "--xla_cpu_experimental_ynn_fusion_type=individual_convolution", {}, []),
    "onednn": ("--xla_cpu_use_onednn=true", "--xla_cpu_use_onednn=true", {}, []),
    "fast_math": ("--xla_cpu_enable_fast_math=true", "--xla_cpu_enable_fast_math=true", {}, []),
    "one_core": ("taskset -c 0 (single core)", "", {}, ["taskset", "-c", "0"]),
    "fwd": ("forward loss only (no grad)", "", {"mode": "fwd"}, []),
    "grad": ("value_and_grad (no Adam)", "", {"mode": "grad"}, []),
    "fwd_dev2": ("forward only, 2 devices", "--xla_force_host_platform_device_count=2",
                 {"mode": "fwd", "ndev": 2}, []),
    "mlp": ("MLP 2-128-128-2 in lax.scan", "", {"net": "mlp"}, []),
    "mlp_dev1_pinned": ("MLP, taskset -c 0", "", {"net": "mlp"}, ["taskset", "-c", "0"]),
}
DEFAULT = ("base,nchw,bf16,donate,dev2,dev2_bf16,no_eigen_mt,no_thunk,xnnpack,ynn_conv,onednn,one_core,"
           "fwd,grad,fwd_dev2,mlp")
TORCH_VARIANTS = {
    "torch": ("PyTorch eager, NCHW f32", {}),
    "torch_cl": ("PyTorch eager, channels_last", {"channels_last": True}),
    "torch_1thr": ("PyTorch eager, 1 thread", {"threads": 1}),
    "torch_fwd": ("PyTorch forward loss only", {"mode": "fwd"}),
    "torch_mlp": ("PyTorch MLP 2-128-128-2", {"net": "mlp"}),
}


# ------------------------------------------------------------------------------------ JAX worker
def jax_worker(opt: dict) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

  batch, net = opt.get("batch", 64 if opt.get("net", "conv") == "conv" else 128), opt.get("net", "conv")
  dtype = jnp.dtype(opt.get("dtype", "float32"))
  layout = opt.get("layout", "NHWC")
  ladder = jnp.asarray(np.geomspace(1.0, 0.01, 10), jnp.float32)
  key = jax.random.PRNGKey(0)

  def conv_init(k, cin, cout):
    bound = 1.0 / np.sqrt(cin * 9)
    return {"w": jax.random.uniform(k, (3, 3, cin, cout), jnp.float32, -bound, bound),
            "b": jnp.zeros((cout,), jnp.float32)}

  if net == "conv":
    chans = [1, 32, 64, 64, 1]
    ks = jax.random.split(key, len(chans))
    params = [conv_init(ks[i], chans[i], chans[i + 1]) for i in range(len(chans) - 1)]
    dn = ("NHWC", "HWIO", "NHWC") if layout == "NHWC" else ("NCHW", "HWIO", "NCHW")
    shape = (batch, 28, 28, 1) if layout == "NHWC" else (batch, 1, 28, 28)
    bshape = (1, 1, 1, -1) if layout == "NHWC" else (1, -1, 1, 1)

    def apply(p, x):
      h = x.astype(dtype)
      for i, l in enumerate(p):
        h = jax.lax.conv_general_dilated(h, l["w"].astype(dtype), (1, 1), "SAME", dimension_numbers=dn)
        h = h + l["b"].astype(dtype).reshape(bshape)
        if i < len(p) - 1:
          h = jax.nn.elu(h)
      return h.astype(jnp.float32)
  else:
    sizes = [2, 128, 128, 2]
    ks = jax.random.split(key, len(sizes))
    params = [{"w": jax.random.normal(ks[i], (sizes[i], sizes[i + 1])) / np.sqrt(sizes[i]),
               "b": jnp.zeros((sizes[i + 1],))} for i in range(len(sizes) - 1)]
    shape = (batch, 2)

    def apply(p, x):
      h = x
      for i, l in enumerate(p):
        h = h @ l["w"] + l["b"]
        if i < len(p) - 1:
          h = jax.nn.softplus(h)
      return h

  def loss_fn(p, k, x):
    k1, k2 = jax.random.split(k)
    sig = ladder[jax.random.randint(k1, (x.shape[0],), 0, ladder.shape[0])]
    sb = sig.reshape((-1,) + (1,) * (x.ndim - 1))
    z = jax.random.normal(k2, x.shape)
    s = apply(p, x + sb * z) / sb
    return 0.5 * jnp.mean(jnp.sum(((s + z / sb) * sb) ** 2, axis=tuple(range(1, x.ndim))))

  tx = optax.adam(1e-3)
  state = {"params": params, "opt": tx.init(params), "key": key}
  mode = opt.get("mode", "step")

  def step(st, x):
    k, knext = jax.random.split(st["key"])
    if mode == "fwd":
      return {**st, "key": knext}, loss_fn(st["params"], k, x)
    loss, g = jax.value_and_grad(loss_fn)(st["params"], k, x)
    if mode == "grad":
      return {**st, "key": knext, "params": g}, loss
    upd, o = tx.update(g, st["opt"], st["params"])
    return {"params": optax.apply_updates(st["params"], upd), "opt": o, "key": knext}, loss

  ndev = opt.get("ndev", 1)
  mesh = Mesh(np.array(jax.devices()[:ndev]), ("data",))
  repl, bsh = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  x = jax.device_put(jax.random.uniform(jax.random.PRNGKey(1), shape), bsh)
  state = jax.device_put(state, repl)
  donate = (0,) if opt.get("donate") else ()
  n_scan = opt.get("mlp_scan", 1000) if net == "mlp" else 1
  if net == "mlp":  # the setting: many steps inside one lax.scan
    def fn(st, x):
      st, losses = jax.lax.scan(lambda s, _: step(s, x), st, None, length=n_scan)
      return st, losses[-1]
  else:
    fn = step
  f = jax.jit(fn, in_shardings=(repl, bsh), out_shardings=(repl, repl), donate_argnums=donate)

  t0 = time.perf_counter()
  compiled = f.lower(state, x).compile()
  t_compile = time.perf_counter() - t0
  hlo = compiled.as_text()
  info = {"n_convolution": hlo.count(" convolution("), "n_transpose": hlo.count(" transpose("),
          "n_copy": hlo.count(" copy("), "n_fusion": hlo.count(" fusion("),
          "custom_calls": sorted(set(l.split('custom_call_target="')[1].split('"')[0]
                                     for l in hlo.splitlines() if 'custom_call_target="' in l))}
  if opt.get("dump_hlo"):
    with open(opt["dump_hlo"], "w") as fh:
      fh.write(hlo)
  for _ in range(opt.get("warmup", 3)):
    state, loss = compiled(state, x)
  jax.block_until_ready(loss)
  times = []
  for _ in range(opt.get("reps", 20)):
    t0 = time.perf_counter()
    state, loss = compiled(state, x)
    jax.block_until_ready(loss)
    times.append((time.perf_counter() - t0) / n_scan)
  return {"median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times),
          "compile_s": t_compile, "devices": f"{jax.default_backend()}x{ndev}", "loss": float(loss),
          "hlo": info}


# ------------------------------------------------------------------------------------ torch worker
def torch_worker(opt: dict) -> dict:
  import torch
  import torch.nn as tnn
  if opt.get("threads"):
    torch.set_num_threads(opt["threads"])
  torch.manual_seed(0)
  net_kind = opt.get("net", "conv")
  batch = opt.get("batch", 64 if net_kind == "conv" else 128)
  if net_kind == "conv":
    chans = [1, 32, 64, 64, 1]
    layers = []
    for i in range(4):
      layers.append(tnn.Conv2d(chans[i], chans[i + 1], 3, padding=1))
      if i < 3:
        layers.append(tnn.ELU())
    net = tnn.Sequential(*layers)
    x = torch.rand(batch, 1, 28, 28)
  else:
    net = tnn.Sequential(tnn.Linear(2, 128), tnn.Softplus(), tnn.Linear(128, 128), tnn.Softplus(),
                         tnn.Linear(128, 2))
    x = torch.rand(batch, 2)
  if opt.get("channels_last"):
    net = net.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
  ladder = torch.logspace(0, -2, 10)
  optim = torch.optim.Adam(net.parameters(), lr=1e-3)
  mode = opt.get("mode", "step")

  def step():
    sig = ladder[torch.randint(0, 10, (x.shape[0],))].view((-1,) + (1,) * (x.dim() - 1))
    z = torch.randn_like(x)
    s = net(x + sig * z) / sig
    loss = 0.5 * (((s + z / sig) * sig) ** 2).sum(dim=tuple(range(1, x.dim()))).mean()
    if mode == "fwd":
      return loss
    optim.zero_grad(set_to_none=True)
    loss.backward()
    optim.step()
    return loss

  ctx = torch.no_grad() if mode == "fwd" else torch.enable_grad()
  with ctx:
    for _ in range(opt.get("warmup", 3)):
      step()
    times = []
    for _ in range(opt.get("reps", 20) * (20 if net_kind == "mlp" else 1)):
      t0 = time.perf_counter()
      loss = step()
      times.append(time.perf_counter() - t0)
  return {"median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times), "compile_s": 0.0,
          "devices": f"torch{torch.__version__.split('+')[0]} thr={torch.get_num_threads()}",
          "loss": float(loss), "hlo": {}}


# ------------------------------------------------------------------------------------ driver
def run_variant(name, args):
  if name in TORCH_VARIANTS:
    desc, opt = TORCH_VARIANTS[name]
    flags, prefix, py = "", [], args.torch_python
  else:
    desc, flags, opt, prefix = VARIANTS[name]
    py = sys.executable
  opt = {**opt, "reps": args.reps, "warmup": args.warmup, "mlp_scan": args.mlp_scan}
  if args.batch:
    opt["batch"] = args.batch
  if args.dump_hlo_dir and name not in TORCH_VARIANTS:
    os.makedirs(args.dump_hlo_dir, exist_ok=True)
    opt["dump_hlo"] = os.path.join(args.dump_hlo_dir, f"{name}.hlo.txt")
  env = dict(os.environ)
  env["XLA_FLAGS"] = " ".join(f for f in (env.get("XLA_FLAGS", ""), flags, args.extra_flags) if f)
  env.setdefault("JAX_PLATFORMS", "cpu" if args.cpu else env.get("JAX_PLATFORMS", ""))
  if not env["JAX_PLATFORMS"]:
    env.pop("JAX_PLATFORMS")
  kind = "torch" if name in TORCH_VARIANTS else "jax"
  cmd = prefix + [py, os.path.abspath(__file__), f"--worker={kind}", "--opt=" + json.dumps(opt)]
  p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
  out = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
  if p.returncode != 0 or not out:
    return {"name": name, "desc": desc, "error": (p.stderr.strip().splitlines() or ["?"])[-1][:160],
            "flags": flags}
  return {"name": name, "desc": desc, "flags": flags, **json.loads(out[-1][7:])}


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--variants", default=DEFAULT)
  ap.add_argument("--torch_python", default="", help="python of a venv with torch: adds torch rows")
  ap.add_argument("--torch_variants", default="torch,torch_cl,torch_1thr,torch_fwd,torch_mlp")
  ap.add_argument("--reps", type=int, default=20)
  ap.add_argument("--warmup", type=int, default=3)
  ap.add_argument("--batch", type=int, default=0, help="0: 64 for the conv net, 128 for the MLP")
  ap.add_argument("--mlp_scan", type=int, default=1000, help="MLP steps per lax.scan call")
  ap.add_argument("--extra_flags", default="", help="XLA_FLAGS added to every JAX variant")
  ap.add_argument("--cpu", action="store_true", help="force JAX_PLATFORMS=cpu")
  ap.add_argument("--dump_hlo_dir", default="")
  ap.add_argument("--timeout", type=int, default=900)
  ap.add_argument("--json", default="", help="also write the rows to this file")
  ap.add_argument("--list", action="store_true")
  ap.add_argument("--worker", default="")
  ap.add_argument("--opt", default="{}")
  args = ap.parse_args()
  if args.worker:
    res = (jax_worker if args.worker == "jax" else torch_worker)(json.loads(args.opt))
    print("RESULT " + json.dumps(res), flush=True)
    return
  if args.list:
    for k, v in {**VARIANTS, **{k: (d, "", o, []) for k, (d, o) in TORCH_VARIANTS.items()}}.items():
      print(f"{k:16s} {v[0]}")
    return
  names = [v for v in args.variants.split(",") if v]
  if args.torch_python:
    names += [v for v in args.torch_variants.split(",") if v]
  load = os.getloadavg()[0]
  print(f"# nproc={os.cpu_count()} load1={load:.2f} reps={args.reps}")
  hdr = f"| {'variant':16s} | {'what':52s} | {'devices':18s} | {'median ms/step':>14s} | {'min ms':>8s} | {'compile s':>9s} | HLO conv/transpose/copy |"
  print(hdr)
  print("|" + "|".join("-" * (len(c)) for c in hdr.split("|")[1:-1]) + "|")
  rows = []
  for n in names:
    r = run_variant(n, args)
    rows.append(r)
    if "error" in r:
      print(f"| {n:16s} | {r['desc'][:52]:52s} | {'ERROR':18s} | {r['error']} |", flush=True)
      continue
    h = r["hlo"]
    hs = f"{h['n_convolution']}/{h['n_transpose']}/{h['n_copy']}" if h else "-"
    if h and h.get("custom_calls"):
      hs += " cc=" + ",".join(h["custom_calls"])[:40]
    print(f"| {n:16s} | {r['desc'][:52]:52s} | {r['devices'][:18]:18s} | {r['median_ms']:14.3f} | "
          f"{r['min_ms']:8.3f} | {r['compile_s']:9.2f} | {hs} |", flush=True)
  print(f"# load1 after={os.getloadavg()[0]:.2f}")
  if args.json:
    with open(args.json, "w") as fh:
      json.dump({"load1_before": load, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
  main()

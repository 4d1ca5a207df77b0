"""dsm_jax against PyTorch on the CPU: the same network, batch, loss and optimizer (or sampler step) in both,
each case in its own process.

Cases (networks at the sizes of the CPU configs and of the NCSN paper's MNIST network):
  mdsm_train_28   MDSM training step, ResNet-12 energy width 16 (configs/mdsm_mnist5k.py), batch 64, 28x28x1
  mdsm_train_32   the same at 32x32x1 (the reference pads MNIST to 32)
  mdsm_langevin   MDSM Langevin step on 300 chains at 28x28x1 (grad_x E only)
  ncsn_train_64   NCSN training step, CondRefineNet ngf 64 (configs/ncsn_mnist.py), batch 64, 28x28x1
  ncsn_train_128  the same at batch 128 (the paper's)
  ncsn_langevin   one annealed Langevin step (a forward pass) on 128 chains
dsm_jax runs what its trainer compiles (dsm_jax.train.Program: the guarded step with the method's loss, Adam and
the EMA, MDSM's `model.base_energy` 'none' as the reference) and its samplers (`samplers.tempered_langevin` on
-grad E, `samplers.annealed_langevin`), with the platform's choices unless --jax_variant names others. PyTorch runs
benchmarks/torch_reference.py: the same networks in NCHW and the reference repositories' steps (autograd double
backprop for MDSM, anneal_dsm_score_estimation, anneal_Langevin_dynamics), with --torch_threads threads.

Each timed call runs --steps steps (training) or --langevin_steps steps (samplers), after --warmup untimed calls;
a row is the median over --reps calls, per step. GFLOP/s divides the model FLOPs of one step (dsm_jax.flops on the
dsm_jax program, convolutions counted in XLA's form) by each side's time, so both sides use the same count.

    pip install -e .[bench]     # torch; on a CPU-only machine the CPU wheel:
    #   pip install torch --index-url https://download.pytorch.org/whl/cpu
    # or keep torch out of the project's environment (it is not a dependency of dsm_jax):
    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch numpy
    python benchmarks/bench_vs_pytorch.py --torch_python=/tmp/torchenv/bin/python
    python benchmarks/bench_vs_pytorch.py --cases=mdsm_train_32 --jax_variant=auto,xla,patches,dev2 --reps=10
    python benchmarks/bench_vs_pytorch.py --check      # same parameters in both: outputs agree (no timing)

--jax_variant is a comma list of dsm_jax settings, each '+'-joined tokens: auto (the platform's choices), xla /
vjp / patches (runtime.conv_impl), dev<N> (runtime.cpu_devices=N: the batch or the chains split over N host
devices), noynn (XLA's own convolution and dot kernels instead of its YNNPACK fusions), flags:<XLA flag> (added to
XLA_FLAGS; no commas), e.g. `xla+dev2`. --torch_python names a Python with torch (the
PyTorch rows are skipped without one unless torch is importable here).
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# name -> (kind, image side, batch or chains, width)
CASES = {
    "mdsm_train_28": ("mdsm_train", 28, 64, 16),
    "mdsm_train_32": ("mdsm_train", 32, 64, 16),
    "mdsm_langevin": ("mdsm_langevin", 28, 300, 16),
    "ncsn_train_64": ("ncsn_train", 28, 64, 64),
    "ncsn_train_128": ("ncsn_train", 28, 128, 64),
    "ncsn_langevin": ("ncsn_langevin", 28, 128, 64),
}
LABELS = {
    "mdsm_train": "MDSM train, ResNet-12 w{w}, batch {n}, {s}x{s}",
    "mdsm_langevin": "MDSM Langevin, {n} chains, {s}x{s} (grad_x only)",
    "ncsn_train": "NCSN train, CondRefineNet ngf {w}, batch {n}, {s}x{s}",
    "ncsn_langevin": "NCSN annealed-Langevin step, {n} chains, ngf {w}",
}
MDSM = {"sigma_min": 0.1, "sigma_max": 3.0, "sigma0": 0.1, "eps": 0.02, "temperature": 100.0}  # mdsm_mnist5k
NCSN = {"sigma_max": 1.0, "sigma_min": 0.01, "levels": 10, "step_lr": 2e-5}  # the paper's (configs/ncsn_images.py)


def case_label(name: str) -> str:
  kind, side, n, width = CASES[name]
  return LABELS[kind].format(w=width, n=n, s=side)


# XLA:CPU without its YNNPACK fusions: convolutions and dots by XLA's own (Eigen) kernels
NO_YNN = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution,-individual_dot"


def parse_variant(spec: str) -> dict:
  """'xla+dev2+flags:--xla_foo=1' -> {'conv_impl': 'xla', 'cpu_devices': 2, 'flags': ['--xla_foo=1']}."""
  out = {"conv_impl": "auto", "cpu_devices": 1, "flags": []}
  for tok in [t for t in spec.split("+") if t]:
    if tok in ("auto", "xla", "vjp", "patches"):
      out["conv_impl"] = tok
    elif tok.startswith("dev") and tok[3:].isdigit():
      out["cpu_devices"] = int(tok[3:])
    elif tok == "noynn":
      out["flags"].append(NO_YNN)
    elif tok.startswith("flags:"):
      out["flags"].append(tok[len("flags:"):])
    else:
      raise SystemExit(f"error: --jax_variant token {tok!r}: use auto, xla, vjp, patches, dev<N>, noynn or "
                       "flags:<flag>")
  return out


def _cpu_s() -> float:
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def _median_per_step(fn, reps: int, warmup: int, steps: int, sync) -> tuple:
  """(median, min) wall seconds per step over reps calls, and the process's CPU seconds per step (every thread):
  on a busy machine the CPU time still measures the work done, where the wall time also measures the waiting."""
  for _ in range(warmup):
    sync(fn())
  ts = []
  c0 = _cpu_s()
  for _ in range(reps):
    t0 = time.perf_counter()
    sync(fn())
    ts.append((time.perf_counter() - t0) / steps)
  return statistics.median(ts), min(ts), (_cpu_s() - c0) / (reps * steps)


# ------------------------------------------------------------------------------------ dsm_jax worker
def _shape(text: str) -> list:
  m = re.search(r"[a-z]\d+\[([\d,]*)\]", text)
  return [int(d) for d in m.group(1).split(",") if d] if m else []


def _instr_flops(opcode: str, type_: str, rest: str, types: dict) -> float:
  """2 x multiply-accumulates of one HLO convolution or dot, from its shape, its attributes and its operands'
  shapes (`types`: every instruction's and parameter's printed type, by name)."""
  if opcode not in ("convolution", "dot"):
    return 0.0
  out = _shape(type_)
  operands = [types.get(n, "") for n in re.findall(r"%([\w.\-]+)", rest.split(")")[0])]
  if opcode == "convolution" and len(operands) >= 2:
    rhs = _shape(operands[1])
    labels = re.search(r"dim_labels=\w+_(\w+)->", rest)
    window = re.search(r"size=([\dx]+)", rest)
    groups = re.search(r"feature_group_count=(\d+)", rest)
    k_in = rhs[labels.group(1).index("i")] if labels else 1
    taps = math.prod(int(v) for v in window.group(1).split("x")) if window else 1
    return 2.0 * math.prod(out) * taps * k_in / (int(groups.group(1)) if groups else 1)
  if opcode == "dot" and operands:
    lhs = _shape(operands[0])
    dims = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", rest)
    k = math.prod(lhs[int(d)] for d in dims.group(1).split(",") if d) if dims else 1
    return 2.0 * math.prod(out) * k
  return 0.0


def hlo_ops(hlo: str) -> dict:
  """{instruction: (kind, FLOPs, convolution dim_labels)} for the instructions XLA:CPU executes one by one (those of
  the entry computation and of loop bodies) in optimized HLO text; a fusion or custom call counts the convolutions
  and dots of the computations it calls, and its kind names them."""
  types = {}
  for line in hlo.splitlines():
    for name, t in re.findall(r"([\w.\-]+): ([a-z]\d+\[[\d,]*\])", line.split("->")[0] if "{" in line[-3:] else ""):
      types[name] = t
    m = re.match(r"^\s*(?:ROOT )?%([\w.\-]+) = (\S+)", line)
    if m:
      types[m.group(1)] = m.group(2)
  comps, cur = {}, None
  for line in hlo.splitlines():
    head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) \(.*\{\s*$", line)
    if head:
      cur = comps.setdefault(head.group(1), [])
      continue
    m = re.match(r"^\s*(?:ROOT )?%([\w.\-]+) = (.*?) ([a-z][\w\-]*)\((.*)$", line)
    if m and cur is not None:
      name, type_, opcode, rest = m.groups()
      labels = re.search(r"dim_labels=([\w>\-]+)", rest)
      called = re.findall(r"(?:calls|to_apply)=%?([\w.\-]+)", rest)
      cur.append((name, opcode, _instr_flops(opcode, type_, rest, types), [labels.group(1)] if labels else [], called))

  def inner(comp, seen=()):
    flops, labels, kinds = 0.0, [], set()
    for _, opcode, f, lab, called in comps.get(comp, []):
      flops, labels = flops + f, labels + lab
      if opcode in ("convolution", "dot"):
        kinds.add(opcode)
      for c in called:
        if c not in seen:
          f2, lab2, k2 = inner(c, seen + (comp,))
          flops, labels, kinds = flops + f2, labels + lab2, kinds | k2
    return flops, labels, kinds

  fused = {c for instrs in comps.values() for *_, called in instrs for c in called}
  ops = {}
  for comp, instrs in comps.items():
    if comp in fused:  # inside a fusion, a custom call or a reduction: counted with its caller
      continue
    for name, opcode, f, lab, called in instrs:
      kinds = set()
      for c in called:
        f2, lab2, k2 = inner(c)
        f, lab, kinds = f + f2, lab + lab2, kinds | k2
      kind = opcode if opcode in ("convolution", "dot") else (
          f"{opcode}({'+'.join(sorted(kinds))})" if kinds else opcode)
      ops[name] = (kind, f, lab)
  return ops


CONTROL = ("while", "conditional", "call")  # their events span the ops they run


def profile_jax(call, hlo: str, n_calls: int, steps: int) -> str:
  """Per-op times of n_calls calls from XLA:CPU's profiler events (one per executed thunk), joined with the
  ops' FLOPs from the optimized HLO: a table of the costliest ops and the time per kind of op."""
  import tempfile
  import jax
  from jax.profiler import ProfileData
  call()
  with tempfile.TemporaryDirectory() as tmp:
    jax.profiler.start_trace(tmp)
    t0 = time.perf_counter()
    for _ in range(n_calls):
      jax.block_until_ready(call())
    wall = (time.perf_counter() - t0) / (n_calls * steps)
    jax.profiler.stop_trace()
    path = sorted(glob.glob(os.path.join(tmp, "**", "*.xplane.pb"), recursive=True))[-1]
    data = ProfileData.from_file(path)
  ops = hlo_ops(hlo)
  per = {}
  for plane in data.planes:
    for line in plane.lines:
      for e in line.events:
        if e.name in ops and ops[e.name][0] not in CONTROL:
          per[e.name] = per.get(e.name, 0.0) + e.duration_ns * 1e-6 / (n_calls * steps)
  total = sum(per.values())
  kinds = {}
  for name, ms in per.items():
    kind, f, _ = ops[name]
    k = kinds.setdefault(kind, [0.0, 0.0, 0])
    k[0], k[1], k[2] = k[0] + ms, k[1] + f, k[2] + 1
  lines = [f"wall {wall * 1e3:.1f} ms per step; ops {total:.1f} ms (sum over threads); "
           f"{len(per)} ops ran",
           "| kind | ops | ms per step | share | GFLOP | GFLOP/s |", "|---|---|---|---|---|---|"]
  for kind, (ms, f, c) in sorted(kinds.items(), key=lambda kv: -kv[1][0]):
    lines.append(f"| {kind} | {c} | {ms:.1f} | {ms / total:.0%} | {f / 1e9:.3f} | "
                 f"{f / 1e6 / ms if ms else 0:.1f} |")
  groups = {}
  for name, ms in per.items():
    g = groups.setdefault(re.sub(r"\.\d+$", "", name), [0.0, 0])
    g[0], g[1] = g[0] + ms, g[1] + 1
  lines += ["", "| op name (XLA's fusion naming) | ops | ms per step | share |", "|---|---|---|---|"]
  for g, (ms, c) in sorted(groups.items(), key=lambda kv: -kv[1][0])[:12]:
    lines.append(f"| {g} | {c} | {ms:.1f} | {ms / total:.0%} |")
  lines += ["", "| op | kind | ms per step | GFLOP | GFLOP/s | convolutions (dim_labels) |", "|---|---|---|---|---|---|"]
  for name, ms in sorted(per.items(), key=lambda kv: -kv[1])[:25]:
    kind, f, labs = ops[name]
    lines.append(f"| {name} | {kind} | {ms:.2f} | {f / 1e9:.3f} | {f / 1e6 / ms if ms else 0:.1f} | "
                 f"{' '.join(sorted(set(labs)))[:60]} |")
  return "\n".join(lines)


def jax_worker(opt: dict) -> dict:
  sys.path.insert(0, ROOT)
  import jax
  kind, side, n, width = CASES[opt["case"]]
  var = parse_variant(opt["variant"])
  jax.config.update("jax_num_cpu_devices", var["cpu_devices"])  # before the backend starts

  import importlib
  import jax.numpy as jnp
  import numpy as np
  from dsm_jax import flops, fields, models, platform, samplers, sampling, sigmas, train
  from dsm_jax.data import images
  from dsm_jax.methods import mdsm, ncsn
  from dsm_jax.models import layers

  if kind.startswith("mdsm"):
    config = importlib.import_module("configs.mdsm_mnist5k").get_config()
    config.model.nf = width
    config.model.base_energy = "none"  # the reference's energy: the network alone
    config.data.pad_to = side if side != 28 else 0
  else:
    config = importlib.import_module("configs.ncsn_mnist").get_config()
    config.model.ngf = width
  config.training.batch_size = n
  config.runtime.conv_impl = var["conv_impl"]
  config.runtime.cpu_devices = var["cpu_devices"]
  config.runtime.num_devices = var["cpu_devices"]
  platform.validate(config)
  impl = platform.apply(config)
  shape = (side, side, 1)
  dataset = images.StandIn(shape, config.data.scale)
  sync = jax.block_until_ready

  def model_flops(fn, *args):
    layers.set_default_conv_impl("xla")
    try:
      return flops.count(fn, *args)
    finally:
      layers.set_default_conv_impl(impl)

  if kind.endswith("train"):
    method = (mdsm if kind == "mdsm_train" else ncsn).build(config, dataset)
    train.validate(config, method.networks)
    program = train.Program(config, method, dataset)
    state = program.init(jax.random.PRNGKey(0))
    k = opt["steps"]
    calls = iter(range(10 ** 6))

    def call():
      nonlocal state
      i = next(calls)
      state, m = program.run(state, np.arange(i * k, (i + 1) * k, dtype=np.int32))
      return m["loss"]

    t0 = time.perf_counter()
    sync(call())
    first = time.perf_counter() - t0
    med, best, cpu = _median_per_step(call, opt["reps"], opt["warmup"], k, sync)
    net_params = state["nets"][next(iter(method.networks))].params
    batch = jax.ShapeDtypeStruct((n,) + shape, jnp.float32)
    step_flops = model_flops(train.guarded_step(method), jax.eval_shape(lambda s: s, state), batch)
    dispatch = program.mode
    if opt.get("profile"):
      xs = program.batches(np.arange(k, dtype=np.int32))
      fn, arg = (program.step_jit, xs[0]) if dispatch == "loop" else (program.chunk_jit, xs)
      hlo = fn.lower(state, arg).compile().as_text()
  else:
    k = opt["langevin_steps"]
    if kind == "mdsm_langevin":
      net = models.build(config.model, shape)
      params = net.init(jax.random.PRNGKey(0), jnp.zeros((1,) + shape))
      temps = jnp.full((k,), MDSM["temperature"])

      def chain(p, key, x0):
        score = fields.score_from_energy(lambda x, _s: net.apply(p, x))
        return samplers.tempered_langevin(score, key, sampling.start(x0), MDSM["eps"], temps)[0]
    else:
      ladder = sigmas.geometric(NCSN["sigma_max"], NCSN["sigma_min"], NCSN["levels"])
      net = models.build(config.model, shape, sigmas=tuple(float(s) for s in ladder))
      params = net.init(jax.random.PRNGKey(0), jnp.zeros((1,) + shape), ladder[:1])
      per_level = max(1, k // NCSN["levels"])
      k = per_level * NCSN["levels"]

      def chain(p, key, x0):
        score = lambda x, sig: net.apply(p, x, sig)  # noqa: E731
        return samplers.annealed_langevin(score, key, sampling.start(x0), ladder, NCSN["step_lr"], per_level,
                                          convention="code")[0]
    x0 = jax.random.uniform(jax.random.PRNGKey(1), (n,) + shape)
    # counted on a fresh function before the timed one is traced: a traced function's jaxpr is cached with the
    # convolution form it was traced with
    step_flops = model_flops(lambda *a: chain(*a), params, jax.random.PRNGKey(0), x0) / k
    run = jax.jit(chain)
    keys = iter(jax.random.split(jax.random.PRNGKey(2), 10 ** 4))
    call = lambda: run(params, next(keys), x0)  # noqa: E731
    t0 = time.perf_counter()
    sync(call())
    first = time.perf_counter() - t0
    med, best, cpu = _median_per_step(call, opt["reps"], opt["warmup"], k, sync)
    net_params = params
    dispatch = "scan"
    if opt.get("profile"):
      hlo = run.lower(params, jax.random.PRNGKey(0), x0).compile().as_text()
  if opt.get("profile"):
    with open(opt["profile"], "w") as fh:
      fh.write(profile_jax(call, hlo, max(1, opt["reps"] // 2), k) + "\n")
  n_params = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(net_params))
  return {"ms": 1e3 * med, "min_ms": 1e3 * best, "cpu_ms": 1e3 * cpu, "first_s": first, "gflop": step_flops / 1e9, "params": n_params,
          "what": f"jax {jax.__version__} {impl} {dispatch} x{len(jax.devices())}"}


def jax_export(opt: dict) -> dict:
  """Parameters, an input and the output of dsm_jax's network into an npz, for the PyTorch side to load and
  compare (--check). Computed in float64 (the norms' statistics stay float32, as in training)."""
  sys.path.insert(0, ROOT)
  import jax
  jax.config.update("jax_enable_x64", True)
  import jax.numpy as jnp
  import numpy as np
  from dsm_jax import sigmas
  from dsm_jax.models import layers
  from dsm_jax.models.energy_resnet import RESNET12, EnergyResNet
  from dsm_jax.models.refinenet import CondRefineNet
  layers.set_default_conv_impl("xla")
  kind, side, n, width = CASES[opt["case"]]
  shape = (side, side, 1)
  x = jax.random.uniform(jax.random.PRNGKey(3), (4,) + shape, jnp.float64)
  if kind.startswith("mdsm"):
    net = EnergyResNet(nf=width, stage_blocks=RESNET12, dtype=jnp.float64)
    params = net.init(jax.random.PRNGKey(0), x[:1])
    out, extra = net.apply(params, x), {}
  else:
    ladder = sigmas.geometric(NCSN["sigma_max"], NCSN["sigma_min"], NCSN["levels"])
    net = CondRefineNet(sigmas=tuple(float(s) for s in ladder), ngf=width, num_channels=1, image_size=side,
                        dtype=jnp.float64)
    params = net.init(jax.random.PRNGKey(0), x[:1], ladder[:1])
    # the per-class norm parameters start nearly equal across classes: perturbed, a wrong class lookup shows
    params = jax.tree_util.tree_map_with_path(
        lambda p, v: v + 0.1 * jax.random.normal(jax.random.PRNGKey(len(str(p))), v.shape, v.dtype)
        if "embed" in str(p) else v, params)
    levels = jnp.array([0, 3, 6, 9])
    out, extra = net.apply(params, x, ladder[levels]), {"__levels": np.asarray(levels)}
  flat = {"/".join(str(getattr(k, "key", k)) for k in path[1:]): np.asarray(v)
          for path, v in jax.tree_util.tree_leaves_with_path(params)}
  np.savez(opt["npz"], __x=np.asarray(x), __out=np.asarray(out), **extra, **flat)
  return {"params": sum(v.size for v in flat.values())}


# ------------------------------------------------------------------------------------ PyTorch worker
def torch_worker(opt: dict) -> dict:
  sys.path.insert(0, HERE)
  import numpy as np
  import torch
  import torch_reference as ref
  torch.set_num_threads(opt["torch_threads"])
  torch.manual_seed(0)
  kind, side, n, width = CASES[opt["case"]]
  x = torch.rand(n, 1, side, side)
  if kind.startswith("mdsm"):
    net = ref.EnergyResNet((side, side, 1), nf=width)
  else:
    net = ref.CondRefineNet(1, ngf=width, num_classes=NCSN["levels"])
    ladder = torch.tensor(np.geomspace(NCSN["sigma_max"], NCSN["sigma_min"], NCSN["levels"]), dtype=torch.float32)
  sync = lambda v: v  # noqa: E731  (eager: every op has finished when the step returns)
  if kind.endswith("train"):
    k = opt["steps"]
    optim = torch.optim.Adam(net.parameters(), lr=1e-3)
    if kind == "mdsm_train":
      sig = torch.tensor(np.geomspace(MDSM["sigma_min"], MDSM["sigma_max"], n), dtype=torch.float32)
      one = lambda: ref.mdsm_train_step(net, optim, x, sig, MDSM["sigma0"])  # noqa: E731
    else:
      one = lambda: ref.ncsn_train_step(net, optim, x, ladder)  # noqa: E731

    def call():
      for _ in range(k):
        loss = one()
      return float(loss)
  else:
    k = opt["langevin_steps"]
    state = {"x": x}
    if kind == "mdsm_langevin":
      def call():
        for _ in range(k):
          state["x"] = ref.mdsm_langevin_step(net, state["x"], MDSM["eps"], MDSM["temperature"])
        return state["x"]
    else:
      per_level = max(1, k // NCSN["levels"])
      k = per_level * NCSN["levels"]

      def call():
        for level in range(NCSN["levels"]):
          for _ in range(per_level):
            state["x"] = ref.ncsn_langevin_step(net, state["x"], level, ladder, NCSN["step_lr"])
        return state["x"]
  t0 = time.perf_counter()
  call()
  first = time.perf_counter() - t0
  med, best, cpu = _median_per_step(call, opt["reps"], opt["warmup"], k, sync)
  if opt.get("profile"):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
      call()
    with open(opt["profile"], "w") as fh:
      fh.write(f"{k} steps\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20) + "\n")
  return {"ms": 1e3 * med, "min_ms": 1e3 * best, "cpu_ms": 1e3 * cpu, "first_s": first, "params": ref.n_params(net),
          "what": f"torch {torch.__version__.split('+')[0]} threads={torch.get_num_threads()}"}


def torch_check(opt: dict) -> dict:
  """Loads dsm_jax's exported parameters into the PyTorch network and compares the outputs (float64)."""
  sys.path.insert(0, HERE)
  import numpy as np
  import torch
  import torch_reference as ref
  kind, side, n, width = CASES[opt["case"]]
  data = dict(np.load(opt["npz"]))
  x, want = data.pop("__x"), data.pop("__out")
  levels = data.pop("__levels", None)
  net = (ref.EnergyResNet((side, side, 1), nf=width) if kind.startswith("mdsm")
         else ref.CondRefineNet(1, ngf=width, num_classes=NCSN["levels"]))
  ref.load_flax(net, data)
  net = net.double()
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2)).double()
  with torch.no_grad():
    got = net(xt) if levels is None else net(xt, torch.from_numpy(levels).long())
  got = got.numpy()
  if got.ndim == 4:
    got = got.transpose(0, 2, 3, 1)
  err = float(np.max(np.abs(got - want)) / (np.max(np.abs(want)) + 1e-30))
  return {"params": ref.n_params(net), "max_rel_err": err}


# ------------------------------------------------------------------------------------ driver
def _run(py: str, worker: str, opt: dict, env_flags, timeout: int) -> dict:
  env = dict(os.environ)
  env["XLA_FLAGS"] = " ".join(f for f in [env.get("XLA_FLAGS", "")] + list(env_flags) if f)
  env.setdefault("JAX_PLATFORMS", "cpu")
  env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH", "")) if p)
  cmd = [py, os.path.abspath(__file__), f"--worker={worker}", "--opt=" + json.dumps(opt)]
  try:
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return {"error": f"timed out after {timeout} s"}
  out = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
  if p.returncode != 0 or not out:
    return {"error": (p.stderr.strip().splitlines() or ["?"])[-1][:200]}
  return json.loads(out[-1][len("RESULT "):])


def _torch_python(args) -> str:
  if args.torch_python:
    return args.torch_python
  try:
    import torch  # noqa: F401,PLC0415
    return sys.executable
  except ImportError:
    return ""


def check(args, names) -> int:
  import tempfile  # noqa: PLC0415
  tpy = _torch_python(args)
  if not tpy:
    raise SystemExit("error: --check needs PyTorch: pass --torch_python or install the bench extra")
  bad = 0
  seen = set()
  for name in names:
    kind, side, _, width = CASES[name]
    key = (kind.split("_")[0], side, width)
    if key in seen:
      continue
    seen.add(key)
    with tempfile.TemporaryDirectory() as tmp:
      opt = {"case": name, "npz": os.path.join(tmp, "net.npz")}
      a = _run(sys.executable, "jax_export", opt, [], args.timeout)
      b = _run(tpy, "torch_check", opt, [], args.timeout) if "error" not in a else a
    ok = "error" not in b and a["params"] == b["params"] and b["max_rel_err"] < 1e-5
    bad += not ok
    print(f"{key[0]} {side}x{side} width {width}: params dsm_jax {a.get('params')} / PyTorch {b.get('params')}, "
          f"max relative output difference {b.get('max_rel_err', b.get('error'))} -> {'ok' if ok else 'MISMATCH'}",
          flush=True)
  return 1 if bad else 0


def _pool(results: list) -> dict:
  """One side's runs (one per round) as one: median of their medians, the range, the rest from the first."""
  ok = [r for r in results if "error" not in r]
  if not ok:
    return results[0] if results else {"error": "not run"}
  out = dict(ok[0])
  for key in ("ms", "cpu_ms"):
    out[key] = statistics.median(r[key] for r in ok)
  out["ms_range"] = (min(r["ms"] for r in ok), max(r["ms"] for r in ok)) if len(ok) > 1 else None
  return out


def _cell(val, fmt: str) -> str:
  return fmt.format(val) if val is not None else "-"


def _ms(r: dict) -> str:
  if "ms" not in r:
    return r.get("error", "-")
  rng = r.get("ms_range")
  return f"{r['ms']:.0f}" + (f" ({rng[0]:.0f}-{rng[1]:.0f})" if rng else "")


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--cases", default=",".join(CASES))
  ap.add_argument("--jax_variant", default="auto", help="comma list of dsm_jax settings (see above)")
  ap.add_argument("--torch_python", default="", help="a Python with torch (default: this one, if it has torch)")
  ap.add_argument("--torch_threads", type=int, default=2)
  ap.add_argument("--no_torch", action="store_true")
  ap.add_argument("--reps", type=int, default=10)
  ap.add_argument("--warmup", type=int, default=2)
  ap.add_argument("--rounds", type=int, default=1, help="runs of every side per case, alternating (A/B on a "
                  "busy machine): a row is the median of the rounds' medians, with their range")
  ap.add_argument("--steps", type=int, default=3, help="training steps per timed call")
  ap.add_argument("--langevin_steps", type=int, default=10, help="sampler steps per timed call")
  ap.add_argument("--check", action="store_true", help="compare the networks (parameters, outputs); no timing")
  ap.add_argument("--timeout", type=int, default=1800, help="seconds per case and side")
  ap.add_argument("--json", default="", help="also write the rows to this file")
  ap.add_argument("--profile", default="", help="a directory: per-op profiles of each row (XLA's ops with their "
                  "FLOPs; torch.profiler's table), printed after the table")
  ap.add_argument("--worker", default="")
  ap.add_argument("--opt", default="{}")
  args = ap.parse_args()
  if args.profile:
    os.makedirs(args.profile, exist_ok=True)
  if args.worker:
    fn = {"jax": jax_worker, "torch": torch_worker, "jax_export": jax_export, "torch_check": torch_check}
    print("RESULT " + json.dumps(fn[args.worker](json.loads(args.opt))), flush=True)
    return 0
  names = [c for c in args.cases.split(",") if c]
  for c in names:
    if c not in CASES:
      raise SystemExit(f"error: unknown case {c!r}; choose from {', '.join(CASES)}")
  if args.check:
    return check(args, names)
  variants = [v for v in args.jax_variant.split(",") if v]
  for v in variants:
    parse_variant(v)
  tpy = "" if args.no_torch else _torch_python(args)
  base = {"reps": args.reps, "warmup": args.warmup, "steps": args.steps, "langevin_steps": args.langevin_steps,
          "torch_threads": args.torch_threads}
  load0 = os.getloadavg()[0]
  print(f"# {os.cpu_count()} cores, load1 {load0:.2f}; medians of {args.reps} calls after {args.warmup} warm-up "
        f"calls, per step; training {args.steps} steps per call, samplers {args.langevin_steps}; "
        f"GFLOP: model FLOPs of one step (dsm_jax.flops)", flush=True)
  hdr = ("| case | GFLOP/step | PyTorch ms | dsm_jax variant | dsm_jax ms | dsm_jax / PyTorch | PyTorch GFLOP/s | "
         "dsm_jax GFLOP/s | CPU ms/step PyTorch / dsm_jax | params dsm_jax / PyTorch |")
  print(hdr)
  print("|---" * (hdr.count("|") - 1) + "|", flush=True)
  rows = []
  for name in names:
    prof = lambda side: {"profile": os.path.join(args.profile, f"{name}_{side}.txt")} if args.profile else {}  # noqa: E731
    runs = {"torch": []}
    runs.update({v: [] for v in variants})
    for _ in range(args.rounds):  # alternating: every side once per round
      if tpy:
        runs["torch"].append(_run(tpy, "torch", {**base, "case": name, **prof("torch")}, [], args.timeout))
      for v in variants:
        runs[v].append(_run(sys.executable, "jax", {**base, "case": name, "variant": v,
                                                    **prof("jax_" + re.sub(r"[^\w+=-]", "_", v))},
                            parse_variant(v)["flags"], args.timeout))
    t = _pool(runs["torch"]) if tpy else {"error": "no torch"}
    for v in variants:
      j = _pool(runs[v])
      rows.append({"case": name, "variant": v, "torch": t, "jax": j, "torch_runs": runs["torch"], "jax_runs": runs[v]})
      gf, tm, jm = j.get("gflop"), t.get("ms"), j.get("ms")
      print(f"| {case_label(name)} | {_cell(gf, '{:.2f}')} | {_ms(t)} | {v} | {_ms(j)} "
            f"| {_cell(jm / tm if tm and jm else None, '{:.2f}')} "
            f"| {_cell(gf * 1e3 / tm if gf and tm else None, '{:.1f}')} "
            f"| {_cell(gf * 1e3 / jm if gf and jm else None, '{:.1f}')} "
            f"| {_cell(t.get('cpu_ms'), '{:.0f}')} / {_cell(j.get('cpu_ms'), '{:.0f}')} "
            f"| {j.get('params', '-')} / {t.get('params', '-')} |", flush=True)
  print(f"# load1 after {os.getloadavg()[0]:.2f}; "
        + "; ".join(sorted({r['jax'].get('what', '') for r in rows} | {r['torch'].get('what', '') for r in rows}
                           - {''})))
  if args.profile:
    for path in sorted(glob.glob(os.path.join(args.profile, "*.txt"))):
      with open(path) as fh:
        print(f"\n## {os.path.basename(path)[:-4]}\n{fh.read()}")
  if args.json:
    with open(args.json, "w") as fh:
      json.dump({"load1_before": load0, "argv": sys.argv[1:], "rows": rows}, fh, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""Which convolution form (models/layers.py: 'xla', 'vjp', 'patches') and which trainer dispatch ('loop': one
compiled step per call; 'scan': steps_per_call steps in one lax.scan) are fastest for each image network on
this backend. dsm_jax/platform.py's CPU choices come from this table.

For each network at its mnist5k (CPU config) size, on random inputs of the right shape:
  train loop   one jitted optimizer step (Adam) per call, the median over --reps calls
  train scan   --chunk steps in one jitted lax.scan, per step
  sampler      --chunk Langevin steps in one lax.scan (grad_x of the energy for MDSM and Denoising-EBM, a
               forward pass of the score network for NCSN), per step
The networks: MDSM's ResNet-12 energy (width 16, batch 64, eq. 10's double backprop), NCSN's cond U-Net
(batch 64, the per-level DSM loss), Denoising-EBM's U-Net DAE (width 16, the DAE loss; the texture energy's
grad_x in the sampler).

    python benchmarks/bench_conv_impls.py [--nets=mdsm,ncsn,debm] [--impls=xla,vjp,patches] [--reps=5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from dsm_jax import losses, sigmas  # noqa: E402
from dsm_jax.models import layers  # noqa: E402
from dsm_jax.models.cond_unet import CondUNet  # noqa: E402
from dsm_jax.models.energy_resnet import RESNET12, EnergyResNet  # noqa: E402
from dsm_jax.models.unet_dae import UNetDAE, functions, split  # noqa: E402

SHAPE = (28, 28, 1)


def nets():
  ladder = sigmas.geometric(1.0, 0.01, 10)
  key = jax.random.PRNGKey(0)

  def mdsm():
    net = EnergyResNet(nf=16, stage_blocks=RESNET12)
    energy = lambda p, x: net.apply(p, x)
    def loss(p, k, x):
      sig = sigmas.batch_geometric(x.shape[0], 0.1, 3.0)
      return losses.mdsm(lambda v, s: energy(p, v), k, x, sig, 0.1)[0]
    score = lambda p, x: -jax.grad(lambda v: jnp.sum(energy(p, v)))(x)
    return net.init(key, jnp.zeros((1,) + SHAPE)), loss, score, 64, 300

  def ncsn():
    net = CondUNet(sigmas=tuple(float(s) for s in ladder), channels=(32, 64, 64), num_channels=1)
    def loss(p, k, x):
      return losses.ncsn(lambda v, s: net.apply(p, v, s), k, x, ladder)[0]
    score = lambda p, x: net.apply(p, x, jnp.full((x.shape[0],), ladder[-1]))
    return net.init(key, jnp.zeros((1,) + SHAPE), jnp.ones((1,))), loss, score, 64, 128

  def debm():
    net = UNetDAE(image_shape=SHAPE, nf=16, ch_mult=(1, 2, 2), num_res_blocks=1, latent_dim=32)
    def loss(p, k, x):
      return losses.dae(lambda v, s: functions(net, p).denoise(v, s), k, x, jnp.full((x.shape[0],), 0.1))[0]
    def score(p, x):
      den = functions(net, p).denoise
      u = lambda v: jnp.sum((v - den(v + 0.1 * jnp.ones_like(v), jnp.full((v.shape[0],), 0.1))) ** 2) / 0.02
      return -jax.grad(u)(x)
    return split(net.init(key, jnp.zeros((1,) + SHAPE), jnp.ones((1,)))), loss, score, 48, 250

  return {"mdsm": mdsm, "ncsn": ncsn, "debm": debm}


def median_time(fn, *args, reps: int) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(reps):
    tic = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - tic)
  return statistics.median(times)


def bench(name: str, make, impl: str, chunk: int, reps: int, parts) -> dict:
  layers.set_default_conv_impl(impl)  # before any tracing: every jit below is new
  params, loss, score, batch, chains = make()
  opt = optax.adam(1e-3)

  def step(state, k):
    p, o = state
    x = jax.random.uniform(k, (batch,) + SHAPE)
    g = jax.grad(loss)(p, k, x)
    u, o = opt.update(g, o, p)
    return (optax.apply_updates(p, u), o), None

  state = (params, opt.init(params))
  keys = jax.random.split(jax.random.PRNGKey(1), chunk)
  out = {}
  if "loop" in parts:
    one = jax.jit(step)
    out["train loop"] = median_time(lambda s, k: one(s, k)[0], state, keys[0], reps=reps)
  if "scan" in parts:
    many = jax.jit(lambda s, ks: jax.lax.scan(step, s, ks)[0])
    out["train scan"] = median_time(many, state, keys, reps=max(1, reps // 2)) / chunk
  if "sample" in parts:
    def chain(p, x, ks):
      return jax.lax.scan(lambda x, k: (x + 1e-4 * score(p, x) + 1e-2 * jax.random.normal(k, x.shape), None), x, ks)[0]
    x0 = jax.random.uniform(jax.random.PRNGKey(2), (chains,) + SHAPE)
    out["sampler"] = median_time(jax.jit(chain), params, x0, keys, reps=max(1, reps // 2)) / chunk
  return out


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--nets", default="mdsm,ncsn,debm")
  ap.add_argument("--impls", default="xla,vjp,patches")
  ap.add_argument("--parts", default="loop,scan,sample")
  ap.add_argument("--chunk", type=int, default=5)
  ap.add_argument("--reps", type=int, default=5)
  a = ap.parse_args()
  print(f"# jax {jax.__version__}, backend {jax.default_backend()}, {os.cpu_count()} cores, "
        f"{jax.local_device_count()} device(s); ms per step (median)")
  print("| network | form | train loop | train scan | sampler |")
  print("|---|---|---|---|---|")
  makers = nets()
  for name in a.nets.split(","):
    for impl in a.impls.split(","):
      parts = set(a.parts.split(","))
      r = bench(name, makers[name], impl, a.chunk, a.reps, parts)
      cell = lambda k: f"{r[k] * 1e3:.0f}" if k in r else "-"
      print(f"| {name} | {impl} | {cell('train loop')} | {cell('train scan')} | {cell('sampler')} |", flush=True)


if __name__ == "__main__":
  main()

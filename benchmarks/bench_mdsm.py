"""Cost of MDSM's double backprop: one MDSM training step against a DSM step of the same trunk with a
score head, on the same batch; and the tempered Langevin sampler's steps/s.

* MDSM step: exactly what the trainer compiles for configs/<config>.py, i.e. the guarded step
  (train.guarded_step) of method = mdsm.build(...): E(x~) by the ResNet energy, grad_x E by jax.grad inside the
  loss, the loss differentiated w.r.t. the parameters (double backprop), the network's optimizer.
* DSM step: the same `ResNetTrunk` (same nf, stage_blocks, dtype, convolution form) with a score head instead of the
  quadratic energy head (flattened features -> Dense(H*W*C) -> image shape), trained by
  `losses.dsm` on the same batch with the same per-example sigmas and the same optimizer: one
  backprop. The trunk dominates both, so the ratio is the price of a conservative (energy) model.
* Sampler: `samplers.tempered_langevin` on the energy (one grad E per step) for `--chains` chains.
Every part uses the platform's convolution form (dsm_jax/platform.py; --conv_impl forces one).

Batches are random arrays of the config's image shape (speed does not depend on pixel values, and no
dataset is read). Times are medians of `--reps` calls after one compiling call.

    python benchmarks/bench_mdsm.py                                        # configs/mdsm_mnist5k.py
    python benchmarks/bench_mdsm.py --config=mdsm_cifar10 --nf=16 --batch=32
"""
from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from dsm_jax import fields, losses, models, platform, samplers  # noqa: E402
from dsm_jax import train as train_lib  # noqa: E402
from dsm_jax.methods import mdsm  # noqa: E402
from dsm_jax.methods.base import Method, loss_step  # noqa: E402
from dsm_jax.models.energy_resnet import ResNetTrunk, kernel_init  # noqa: E402

SHAPES = {"mnist5k": (28, 28, 1), "mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "digits": (8, 8, 1),
          "cifar10": (32, 32, 3), "celeb_a": (32, 32, 3)}


class ScoreResNet(nn.Module):
  """The energy's trunk with a score head: features -> Dense(H*W*C) -> [B, H, W, C]."""
  nf: int
  stage_blocks: tuple
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, sigma=None):
    h = ResNetTrunk(self.nf, self.stage_blocks, self.dtype, name="trunk")(x)
    h = h.reshape(h.shape[0], -1).astype(jnp.float32)
    return nn.Dense(int(np.prod(x.shape[1:])), kernel_init=kernel_init, name="score")(h).reshape(x.shape)


class _ShapeOnly:
  has_density = False

  def __init__(self, shape):
    self.shape = tuple(shape)

  def train_images(self):
    """Stand-in images for model.base_energy = 'gaussian' (its cost does not depend on the values)."""
    return np.random.default_rng(1).uniform(size=(256,) + self.shape).astype(np.float32)


def _median(fn, reps):
  ts = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    ts.append(time.perf_counter() - t0)
  return statistics.median(ts)


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--config", default="mdsm_mnist5k", help="configs/<name>.py (an MDSM image config)")
  ap.add_argument("--nf", type=int, default=0, help="width override (0: the config's)")
  ap.add_argument("--blocks", default="", help="stage_blocks override, e.g. 1,1,1")
  ap.add_argument("--batch", type=int, default=0, help="batch override (0: the config's)")
  ap.add_argument("--conv_impl", default="auto", help="runtime.conv_impl: auto (the platform's), xla, vjp, patches")
  ap.add_argument("--reps", type=int, default=5)
  ap.add_argument("--chains", type=int, default=0, help="sampler chains (0: config's sampling.batch_size)")
  ap.add_argument("--sampler_steps", type=int, default=20)
  args = ap.parse_args()

  config = importlib.import_module(f"configs.{args.config}").get_config()
  m, t = config.model, config.training
  if args.nf:
    m.nf = args.nf
  if args.blocks:
    m.stage_blocks = tuple(int(b) for b in args.blocks.split(","))
  if args.batch:
    t.batch_size = args.batch
  config.runtime.conv_impl = args.conv_impl
  config.runtime.num_devices = 1
  shape = SHAPES.get(config.data.dataset, (32, 32, 3))
  if config.data.pad_to:
    shape = (config.data.pad_to, config.data.pad_to, shape[2])
  impl = platform.apply(config)
  method = mdsm.build(config, _ShapeOnly(shape))
  batch = jnp.asarray(np.random.default_rng(0).uniform(size=(t.batch_size,) + shape), jnp.float32)

  # --- DSM: same trunk, score head, same sigmas (mdsm.draw_sigmas), same optimizer
  score_net = ScoreResNet(m.nf, tuple(m.stage_blocks), jnp.dtype(m.dtype))

  def dsm_loss(params, key, x):
    k_sig, k_noise = jax.random.split(key)
    sig = mdsm.draw_sigmas(k_sig, x.shape[0], m)
    loss, _ = losses.dsm(lambda y, s: score_net.apply(params, y), k_noise, x, sig)
    return loss, {}

  dsm_method = Method(name="dsm", init=lambda k: {"score": score_net.init(k, batch[:1])},
                      step=loss_step("score", dsm_loss), networks={"score": 1}, sample=None, evaluate=None)
  steps = {}
  for name, meth in (("mdsm", method), ("dsm", dsm_method)):
    step = jax.jit(train_lib.guarded_step(meth), donate_argnums=(0,))
    state = jax.jit(lambda k, meth=meth: train_lib.init_state(config, meth, k))(jax.random.PRNGKey(0))
    steps[name] = (step, state)

  rows = {}
  for name, (step, state) in steps.items():
    holder = {"state": state}

    def call():
      holder["state"], metrics = step(holder["state"], batch)
      return metrics["loss"]

    t0 = time.perf_counter()
    jax.block_until_ready(call())
    compile_s = time.perf_counter() - t0
    n_params = sum(int(np.prod(a.shape)) for n in holder["state"]["nets"].values()
                   for a in jax.tree_util.tree_leaves(n.params))
    rows[name] = {"step_ms": 1e3 * _median(call, args.reps), "compile_s": compile_s, "params": n_params}

  # --- sampler: the energy's score -grad E, one per step, as mdsm's sample() runs it
  chains = args.chains or config.sampling.batch_size or config.sampling.n_samples
  net = models.build(m, shape)
  params = jax.jit(method.init)(jax.random.PRNGKey(1))["energy"]
  temps = jnp.ones((args.sampler_steps,))

  @jax.jit
  def run(params, key, x0):
    score_fn = fields.score_from_energy(lambda x, s: net.apply(params, x))
    return samplers.tempered_langevin(score_fn, key, x0, config.sampling.eps, temps)[0]

  x0 = 0.5 + jax.random.normal(jax.random.PRNGKey(2), (chains,) + shape)
  t0 = time.perf_counter()
  jax.block_until_ready(run(params, jax.random.PRNGKey(3), x0))
  s_compile = time.perf_counter() - t0
  dt = _median(lambda: run(params, jax.random.PRNGKey(4), x0), max(2, args.reps // 2))
  n_steps = args.sampler_steps
  total = config.sampling.n_flat + config.sampling.n_decay + config.sampling.n_cool

  print(f"# {args.config}: shape {shape}, nf {m.nf}, stage_blocks {tuple(m.stage_blocks)}, batch {t.batch_size}, "
        f"convolutions: {impl}, "
        f"jax {jax.__version__} {jax.default_backend()}, nproc {os.cpu_count()}, load1 {os.getloadavg()[0]:.2f}")
  for name in ("mdsm", "dsm"):
    r = rows[name]
    print(f"{name:5s} step: {r['step_ms']:9.1f} ms   ({r['params']:,} params, first call {r['compile_s']:.1f} s)")
  print(f"ratio mdsm/dsm: {rows['mdsm']['step_ms'] / rows['dsm']['step_ms']:.2f}  (target <= 2.5)")
  print(f"sampler: {chains} chains, {n_steps / dt:.2f} steps/s ({1e3 * dt / n_steps:.1f} ms/step, "
        f"{chains * n_steps / dt:.1f} chain-steps/s; first call {s_compile:.1f} s); the config's "
        f"{total}-step schedule: {total * dt / n_steps:.0f} s per batch of {chains}")


if __name__ == "__main__":
  main()

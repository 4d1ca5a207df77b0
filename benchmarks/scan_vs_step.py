"""Is the trainer's lax.scan chunk slower than the bare jit'd train step? (RefineNet, CPU)

    python benchmarks/scan_vs_step.py --ngf=16 --batch=64
"""
import argparse, importlib, os, statistics, sys, time
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jax, jax.numpy as jnp, numpy as np
from dsm_jax import train as T
from dsm_jax.methods import ncsn

ap = argparse.ArgumentParser()
ap.add_argument("--config", default="ncsn_mnist5k"); ap.add_argument("--ngf", type=int, default=16)
ap.add_argument("--batch", type=int, default=64); ap.add_argument("--reps", type=int, default=3)
ap.add_argument("--variants", default="step,scan1,unrolled_scan1")
a = ap.parse_args()
cfg = importlib.import_module(f"configs.{a.config}").get_config(); cfg.model.ngf = a.ngf; cfg.training.batch_size = a.batch
class S: has_density = False; shape = (28, 28, 1) if "mnist" in cfg.data.dataset else (32, 32, 3)
m = ncsn.build(cfg, S()); opt = T.make_optimizer(cfg)
step = T.default_train_step(m.loss_fn, opt, cfg.training.ema_rate, cfg.training.nan_policy)
init = jax.jit(lambda k: T.init_state(k, m.init_params, opt))
x = jax.random.uniform(jax.random.PRNGKey(1), (1, a.batch) + S.shape)
fns = {"step": (lambda st, xs: step(st, xs[0])),
       "scan1": (lambda st, xs: jax.lax.scan(step, st, xs)),
       "unrolled_scan1": (lambda st, xs: jax.lax.scan(step, st, xs, unroll=True))}
print(f"# jax {jax.__version__} load1={os.getloadavg()[0]:.2f} {a.config} ngf={a.ngf} B={a.batch}")
for name in a.variants.split(","):
  st = init(jax.random.PRNGKey(0))
  t0 = time.perf_counter(); c = jax.jit(fns[name], donate_argnums=(0,)).lower(st, x).compile(); tc = time.perf_counter() - t0
  hlo = c.as_text()
  st, mm = c(st, x); jax.block_until_ready(mm)
  ts = []
  for _ in range(a.reps):
    t0 = time.perf_counter(); st, mm = c(st, x); jax.block_until_ready(mm); ts.append(time.perf_counter() - t0)
  print(f"{name}: compile {tc:.1f} s, median {1e3*statistics.median(ts):.0f} ms/step (min {1e3*min(ts):.0f}), "
        f"while loops in HLO: {hlo.count(' while(')}, load1={os.getloadavg()[0]:.2f}", flush=True)

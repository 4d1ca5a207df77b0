"""Why a DDE generator collapses: how well the trained E_p and E_q denoise, and where the generator is pushed.

Loads a DDE image run (its latest checkpoint, raw parameters) and prints, at the DDE's sigma:
  * E_p's denoiser v + grad E_p(v) (Tweedie: the posterior mean E_p[x | v]) on held-out test digits: its MSE per
    pixel, against the noisy input (sigma^2), the data mean, and the Wiener filter of the training data's
    Gaussian fit (the best linear denoiser). A DDE worse than the Wiener filter is under-fitted.
  * the generator's per-pixel std over 500 draws, against the training data's;
  * E_q's denoiser on noisy generator samples, against the Wiener filter of the samples' own Gaussian fit;
  * the generator's descent direction at each sample, E_p[x | v] - E_q[x | v] (the negative of (E4)'s gradient
    in G(z), times sigma^2), projected on the sample's deviation from the sample mean: > 0 spreads the samples,
    < 0 contracts them (averaged over eps and -eps).

    python benchmarks/dde_denoisers.py --config=configs/dde_mnist5k.py --workdir=runs/dde_mnist5k \
        [--set model.base_energy=gaussian ...]   # the overrides the run was trained with
"""
from __future__ import annotations

import argparse
import ast
import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from dsm_jax import models, run_lib, train  # noqa: E402
from dsm_jax.methods import dde  # noqa: E402


def _set(config, assignment: str) -> None:
  key, value = assignment.split("=", 1)
  *path, leaf = key.split(".")
  node = config
  for p in path:
    node = node[p]
  try:
    value = ast.literal_eval(value)
  except (ValueError, SyntaxError):
    pass  # a bare string
  node[leaf] = value


def wiener(train_flat: np.ndarray, noisy_flat: np.ndarray, sigma: float) -> np.ndarray:
  """mu + Sigma (Sigma + sigma^2 I)^-1 (v - mu) for the Gaussian fit (mu, Sigma) of train_flat [N, D]."""
  mu = train_flat.mean(0)
  cov = np.cov(train_flat, rowvar=False)
  gain = cov @ np.linalg.inv(cov + sigma ** 2 * np.eye(cov.shape[0]))
  return mu + (noisy_flat - mu) @ gain.T


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--config", default="configs/dde_mnist5k.py")
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
  ap.add_argument("--n", type=int, default=500, help="test digits and generator samples")
  args = ap.parse_args(argv)
  name = os.path.splitext(os.path.basename(args.config))[0]
  config = importlib.import_module(f"configs.{name}").get_config()
  for a in args.set:
    _set(config, a)
  dataset, method = run_lib.prepare(config, args.workdir)
  step, state = train.load_latest(config, args.workdir, method, dataset)
  params, m = train.sampling_params(state["nets"]), config.model
  sigma, shape = float(m.sigma), tuple(dataset.shape)
  d = int(np.prod(shape))
  log_density = dde.make_log_density(config, dataset)
  g_net = models.build(m.generator, shape, "model.generator", generator=True)
  grad_of = lambda p: jax.jit(jax.grad(lambda v: jnp.sum(log_density(p, v))))  # noqa: E731
  grad_p, grad_q = grad_of(params["Ep"]), grad_of(params["Eq"])
  mse = lambda a, b: float(np.mean((np.asarray(a, np.float64).reshape(len(a), -1) - np.asarray(b, np.float64).reshape(len(b), -1)) ** 2))  # noqa: E731

  x_train = np.asarray(dataset.train_images(), np.float64).reshape(-1, d)
  x_test = jnp.asarray(dataset.test_images()[: args.n], jnp.float32)
  v = x_test + sigma * jax.random.normal(jax.random.PRNGKey(1), x_test.shape)
  out = {"step": step, "noisy": mse(v, x_test), "data_mean": mse(np.broadcast_to(x_train.mean(0), (len(v), d)), x_test),
         "wiener_p": mse(wiener(x_train, np.asarray(v, np.float64).reshape(len(v), -1), sigma), x_test),
         "E_p": mse(v + grad_p(v), x_test)}

  z = jax.random.normal(jax.random.PRNGKey(2), (args.n, int(m.latent_dim)))
  g = g_net.apply(params["G"], float(m.latent_std) * z)
  g_flat = np.asarray(g, np.float64).reshape(len(g), -1)
  eps = sigma * jax.random.normal(jax.random.PRNGKey(3), g.shape)
  vg = g + eps
  out.update({"gen_pixel_std": float(g_flat.std(0).mean()), "data_pixel_std": float(x_train.std(0).mean()),
              "E_q_on_samples": mse(vg + grad_q(vg), g), "E_p_on_samples": mse(vg + grad_p(vg), g),
              "wiener_q_on_samples": mse(wiener(g_flat, np.asarray(vg, np.float64).reshape(len(g), -1), sigma), g)})
  move = 0.0
  for e in (eps, -eps):  # E_p[x|v] - E_q[x|v] = grad E_p(v) - grad E_q(v)
    move = move + 0.5 * np.asarray(grad_p(g + e) - grad_q(g + e), np.float64).reshape(len(g), -1)
  dev = g_flat - g_flat.mean(0)
  out["spread_push"] = float(np.sum(move * dev) / max(np.sum(dev * dev), 1e-12))
  for k, val in out.items():
    print(f"{k:>22s}  {val:.4g}" if isinstance(val, float) else f"{k:>22s}  {val}")
  return out


if __name__ == "__main__":
  main()

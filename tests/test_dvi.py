"""Denoiser-guided VI (dsm_jax/methods/dvi.py): the entropy gradient from an exact Gaussian denoiser matches
the analytic dH/dL = L^-T, the generator update lowers the exact KL, the reference posteriors are right,
and the runner end to end (output contract, resume == uninterrupted, config errors)."""
import importlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dsm_jax import checkpoint, run_lib, train
from dsm_jax.data.regression import LinearGaussian, LogisticRegression2D
from dsm_jax.eval.toy import grid_kl
from dsm_jax.methods import dvi
from dsm_jax.validation import ConfigError


def _gaussian_denoiser(mu, cov, sigma):
  """The exact denoiser of q = N(mu, cov) at noise sigma: F(v) = v + sigma^2 grad log q_sigma(v)."""
  prec_s = jnp.linalg.inv(cov + sigma ** 2 * jnp.eye(cov.shape[0]))
  return lambda v, cond=None: v - sigma ** 2 * (v - mu) @ prec_s.T


def _entropy_grad_L(L, mu, sigma, n, seed=0):
  """(D4) with log p = 0: the generator gradient of -H[q] for G(z) = mu + L z, and the per-sample terms."""
  z = jax.random.normal(jax.random.PRNGKey(seed), (n, 2))
  den = _gaussian_denoiser(mu, L @ L.T, sigma)
  g_fn = lambda p: p["mu"] + z @ p["L"].T
  zero = lambda w: jnp.zeros_like(w)
  cot = lambda w: dvi.generator_cotangent(dvi.entropy_score(den, w, sigma), zero(w), zero(w))
  grad, w, g = dvi.generator_grad(g_fn, {"mu": mu, "L": L}, cot)
  per_sample = np.asarray(g)[:, :, None] * np.asarray(z)[:, None, :]  # g_i z_i^T: the L-gradient's terms
  return grad, per_sample


L0 = jnp.array([[1.2, 0.0], [0.5, 0.7]], jnp.float32)
MU0 = jnp.array([0.3, -1.0], jnp.float32)


def test_entropy_gradient_matches_analytic_dH_dL():
  """For q = N(mu, L L^T), dH/dL = L^-T; the update descends -H, so its L-gradient must be -L^-T (within
  Monte Carlo error plus the sigma_n bias, which is tiny at sigma_n = 0.01) and its mu-gradient ~0."""
  n, sigma = 200_000, 0.01
  grad, per = _entropy_grad_L(L0, MU0, sigma, n)
  target = -np.linalg.inv(np.asarray(L0)).T
  se = per.std(axis=0) / np.sqrt(n)
  smoothed = -np.linalg.inv(np.asarray(L0 @ L0.T) + sigma ** 2 * np.eye(2)) @ np.asarray(L0)
  bias = np.abs(smoothed - target)
  err = np.abs(np.asarray(grad["L"]) - target)
  assert np.all(err < 5 * se + bias + 1e-6), (np.asarray(grad["L"]), target, se)
  assert np.all(np.abs(np.asarray(grad["mu"])) < 5 * np.abs(per).mean() / np.sqrt(n) + 1e-3)
  # the test can fail: the opposite sign (ascending -H) is many standard errors away
  assert np.all(np.abs(-np.asarray(grad["L"]) - target)[np.abs(target) > 0.1] > 50 * se[np.abs(target) > 0.1])


def test_entropy_gradient_at_finite_sigma_is_the_smoothed_one():
  """At sigma_n = 0.5 the denoiser gives the gradient for q_sigma: -(L L^T + sigma^2 I)^-1 L, measurably
  different from -L^-T (the sigma_n^2 bias of (D3))."""
  n, sigma = 200_000, 0.5
  grad, per = _entropy_grad_L(L0, MU0, sigma, n, seed=1)
  se = per.std(axis=0) / np.sqrt(n)
  smoothed = -np.linalg.inv(np.asarray(L0 @ L0.T) + sigma ** 2 * np.eye(2)) @ np.asarray(L0)
  assert np.all(np.abs(np.asarray(grad["L"]) - smoothed) < 5 * se + 1e-6)
  exact = -np.linalg.inv(np.asarray(L0)).T
  assert np.max(np.abs(np.asarray(grad["L"]) - exact)) > 20 * np.max(se)


def _kl_gauss(m0, c0, m1, c1):
  return dvi.gaussian_kl(np.asarray(m0, np.float64), np.asarray(c0, np.float64), np.asarray(m1, np.float64),
                         np.asarray(c1, np.float64))


def test_generator_update_decreases_kl():
  """A Gaussian q = N(mu, L L^T) moved by (D4) toward a Gaussian target, with the exact denoiser of the
  current q: the exact KL[q || p] falls on the first step and by > 10x over 150 steps; the opposite step
  raises it."""
  m_p = jnp.array([1.0, 2.0])
  c_p = jnp.array([[1.0, 0.6], [0.6, 0.8]])
  prec_p = jnp.linalg.inv(c_p)
  log_p = lambda w: -0.5 * jnp.sum(((w - m_p) @ prec_p) * (w - m_p), -1)
  sigma, lr = 0.02, 0.05
  params = {"mu": jnp.array([-1.0, 0.0]), "L": jnp.array([[0.4, 0.0], [0.1, 0.3]])}

  def grad_at(params, k):
    z = jax.random.normal(jax.random.PRNGKey(k), (4000, 2))
    den = _gaussian_denoiser(params["mu"], params["L"] @ params["L"].T, sigma)
    cot = lambda w: dvi.generator_cotangent(dvi.entropy_score(den, w, sigma), dvi.grad_log(log_p, w),
                                            jnp.zeros_like(w))
    return dvi.generator_grad(lambda p: p["mu"] + z @ p["L"].T, params, cot)[0]

  kl = lambda p: _kl_gauss(p["mu"], p["L"] @ p["L"].T, m_p, c_p)
  step = lambda p, g, s: jax.tree_util.tree_map(lambda a, b: a - s * lr * b, p, g)
  kl0 = kl(params)
  g0 = grad_at(params, 0)
  assert kl(step(params, g0, 1.0)) < kl0 < kl(step(params, g0, -1.0))
  for i in range(150):
    params = step(params, grad_at(params, i), 1.0)
  assert kl(params) < 0.1 * kl0, (kl0, kl(params))


def test_logreg_grid_posterior_agrees_with_mala():
  ds = LogisticRegression2D(10, 2.0, (3.0, 1.0), seed=0)
  ref = ds.grid_posterior(256)
  assert abs(np.exp(ref["log_density"]).sum() * ref["cell_area"] - 1.0) < 1e-6
  from dsm_jax import samplers
  x0 = jnp.asarray(ref["mean"], jnp.float32) + 0.1 * jax.random.normal(jax.random.PRNGKey(0), (400, 2))
  xs, aux = samplers.mala(lambda w, s: ds.log_joint(w), jax.random.PRNGKey(1), x0, 0.3, 400)
  xs = np.asarray(xs, np.float64)
  se = np.sqrt(np.diag(ref["cov"]) / 400)
  assert np.all(np.abs(xs.mean(0) - ref["mean"]) < 5 * se), (xs.mean(0), ref["mean"])
  assert 0.3 < float(aux["accept_rate"]) < 1.0


def test_linear_gaussian_posterior_matches_bayes_on_a_grid():
  ds = LinearGaussian(3, 1.0, 1.0, seed=0)
  y = np.asarray(ds.sample(jax.random.PRNGKey(0), 1))
  mean, cov = ds.posterior(y)
  g = np.linspace(-5, 5, 401)
  w1, w2 = np.meshgrid(g, g, indexing="xy")
  pts = np.stack([w1.ravel(), w2.ravel()], -1)
  lj = np.asarray(ds.log_joint(jnp.asarray(pts, jnp.float32), jnp.broadcast_to(jnp.asarray(y), (len(pts), 3))),
                  np.float64)
  p = np.exp(lj - lj.max())
  p /= p.sum()
  m = p @ pts
  c = ((pts - m) * p[:, None]).T @ (pts - m)
  np.testing.assert_allclose(m, mean[0], atol=2e-3)
  np.testing.assert_allclose(c, cov, atol=2e-3)


def test_kde_kl_estimator_floor_and_sensitivity():
  """The eval's KL estimator on exact posterior draws is near 0; on draws from a shifted posterior it is
  near the true KL of the shift (a Gaussian-ish posterior shifted by d has KL ~ d^T C^-1 d / 2)."""
  ds = LogisticRegression2D(10, 2.0, (3.0, 1.0), seed=0)
  ref = ds.grid_posterior(256)
  key = jax.random.PRNGKey(3)
  exact = dvi.sample_grid(ref, key, 20000)
  lq, _ = dvi.kde_on_grid(exact, ref["w1"], ref["w2"])
  floor = grid_kl(lq, ref["log_density"], ref["cell_area"])
  d = 0.5 * np.sqrt(np.diag(ref["cov"]))
  lq2, _ = dvi.kde_on_grid(exact + d, ref["w1"], ref["w2"])
  shifted = grid_kl(lq2, ref["log_density"], ref["cell_area"])
  approx = 0.5 * d @ np.linalg.inv(ref["cov"]) @ d
  assert 0 <= floor < 0.02
  assert 0.5 * approx < shifted - floor < 2.0 * approx, (floor, shifted, approx)


# ------------------------------------------------------------------------------------ runner
def tiny(name: str, **over):
  config = importlib.import_module(f"configs.{name}").get_config()
  t = config.training
  t.n_iters, t.log_every, t.ckpt_every, t.steps_per_call, t.max_to_keep = 20, 5, 10, 5, 5
  config.runtime.progress = False
  m = config.model
  m.generator.hidden = (16, 16)
  m.denoiser.hidden = (16, 16)
  m.f_warmup = 5
  m.f_steps = 2
  config.sampling.n_samples = 300
  if name == "dvi_logreg":
    m.n_particles = 32
    config.eval.grid_n = 128
    config.eval.mala_chains = 64
    config.eval.mala_steps = 20
  else:
    t.batch_size = 16
    config.eval.n_eval_y = 5
  for k, v in over.items():
    node = config
    *path, leaf = k.split(".")
    for p in path:
      node = node[p]
    node[leaf] = v
  return config


@pytest.mark.parametrize("name,keys", [
    ("dvi_logreg", ("post_mean_err", "post_cov_err", "kl", "kl_baseline", "ref_mala_mean_err", "cov_bias_sigma_n")),
    ("dvi_amortised", ("post_mean_err", "post_mean_err_sd", "post_cov_err", "kl_gauss", "post_cov_err_baseline")),
])
def test_runner_output_contract(tmp_path, name, keys):
  wd = str(tmp_path / name)
  res = run_lib.run(tiny(name), wd)
  pngs = ("samples.png", "gradients.png") if name == "dvi_logreg" else ("amortised_posteriors.png",)
  for f in ("config.json", "metrics.jsonl", "eval.json", "samples/samples.npz") + tuple(f"samples/{p}" for p in pngs):
    assert os.path.exists(os.path.join(wd, f)), f
  x = np.load(os.path.join(wd, "samples/samples.npz"))["x"]
  assert x.shape == ((300, 2) if name == "dvi_logreg" else (5, 300, 2)) and np.all(np.isfinite(x))
  ev = json.load(open(os.path.join(wd, "eval.json")))
  for k in keys + ("step",):
    assert isinstance(ev[k], (int, float)) and np.isfinite(ev[k]), k
  rows = [json.loads(l) for l in open(os.path.join(wd, "metrics.jsonl"))]
  assert [r["step"] for r in rows] == [5, 10, 15, 20]
  assert all(np.isfinite(r["loss"]) and "neg_log_joint" in r and r["n_skipped"] == 0 for r in rows)
  assert sorted(checkpoint.Checkpointer(wd).steps()) == [10, 20]
  assert res["step"] == 20


def _leaves(workdir, config):
  _, method = run_lib.prepare(config, workdir)
  step, state = train.load_latest(config, workdir, method)
  return step, jax.tree_util.tree_leaves({k: state[k] for k in ("nets", "key")})


def test_resume_with_more_steps_equals_straight_run(tmp_path):
  """Run 10 steps, then the same workdir with n_iters = 20: bit-identical params, EMA and both Adam states
  to a straight 20-step run (the two-network step is a pure function of (state, step))."""
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  run_lib.run(tiny("dvi_logreg", **{"training.ema_rate": 0.9}), straight)
  run_lib.run(tiny("dvi_logreg", **{"training.ema_rate": 0.9, "training.n_iters": 10}), resumed)
  run_lib.run(tiny("dvi_logreg", **{"training.ema_rate": 0.9}), resumed)
  (s1, a), (s2, b) = _leaves(straight, tiny("dvi_logreg")), _leaves(resumed, tiny("dvi_logreg"))
  assert s1 == s2 == 20
  for x, y in zip(a, b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("key,value,match", [
    ("model.sigma_n", 0.0, "model.sigma_n"),
    ("model.f_steps", 0, "model.f_steps"),
    ("model.generator.hidden", (), "model.generator.hidden"),
    ("model.denoiser.act", "cosh", "model.denoiser.act"),
    ("training.batch_size", 11, "training.batch_size"),
    ("data.prior_std", -1.0, "data.prior_std"),
    ("data.w_true", (1.0,), "data.w_true"),
    ("method", "dvi_amortised", "data.dataset"),
])
def test_bad_values_stop_before_compute(tmp_path, key, value, match):
  config = tiny("dvi_logreg")
  node = config
  *path, leaf = key.split(".")
  for p in path:
    node = node[p]
  with node.ignore_type():
    node[leaf] = value
  with pytest.raises(ConfigError, match=match) as e:
    run_lib.run(config, str(tmp_path / "run"))
  assert "\n" not in str(e.value)
  assert not os.path.exists(tmp_path / "run" / "checkpoints")

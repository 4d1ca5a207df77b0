"""Score matching at one noise level, three ways, for comparison on low-dimensional data:

* 'dsm': denoising score matching (Vincent 2011, eq. 17): 1/2 E||s(x~) + (x~ - x)/sigma^2||^2.
* 'esm': exact score matching (Hyvarinen 2005, eq. 4): E[tr grad s + 1/2 ||s||^2] on draws of p_sigma.
* 'ssm': sliced score matching (Song et al. 2019, eq. 7 / SSM-VR) on draws of p_sigma.

All three target the same density p_sigma = p_data * N(0, sigma^2 I): DSM by construction, ESM and SSM
because they are fed fresh draws x + sigma n every step. So their scores are comparable against the
analytic score of p_sigma. Samples come from the temperature-annealed Langevin sampler ending at T = 1.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dsm_jax import evaluation, losses, samplers, sigmas, viz
from dsm_jax.methods.base import Method
from dsm_jax.models import get_model
from dsm_jax.validation import interval, one_of, positive, require

OBJECTIVES = ("dsm", "esm", "ssm")


def validate(config) -> None:
  positive(config, "model.sigma")
  one_of(config, "sampling.method", ("tempered_langevin",))
  positive(config, "sampling.n_samples", integer=True)
  positive(config, "sampling.eps")
  validate_temperatures(config)
  interval(config, "sampling.init_range")
  if config.method == "ssm":
    positive(config, "model.n_projections", integer=True)


def validate_temperatures(config) -> None:
  positive(config, "sampling.t_start")
  for k in ("n_flat", "n_decay", "n_cool"):
    positive(config, f"sampling.{k}", integer=True, allow_zero=True)
  positive(config, "sampling.t_end", allow_zero=True)
  one_of(config, "sampling.decay", ("geometric", "linear"))
  s = config.sampling
  require(s.n_flat + s.n_decay + s.n_cool > 0, "sampling.n_decay", "the temperature schedule has no steps")


def temperatures_from_config(s) -> np.ndarray:
  return sigmas.mdsm_temperatures(s.t_start, s.n_flat, s.n_decay, s.n_cool, s.decay, s.t_end)


def build(config, dataset) -> Method:
  validate(config)
  objective = config.method
  shape = tuple(dataset.shape)
  net = get_model(config.model, shape, conditional=False)
  sigma = float(config.model.sigma)
  s_cfg = config.sampling

  def init_params(key):
    return net.init(key, jnp.zeros((1,) + shape))

  def loss_fn(params, key, batch):
    score_fn = lambda x, sig: net.apply(params, x)
    k_noise, k_proj = jax.random.split(key)
    if objective == "dsm":
      return losses.dsm(score_fn, k_noise, batch, sigma)[0], {}
    x_noisy = batch + sigma * jax.random.normal(k_noise, batch.shape, batch.dtype)  # a draw of p_sigma
    if objective == "esm":
      return losses.esm(score_fn, x_noisy)[0], {}
    return losses.ssm(score_fn, k_proj, x_noisy, n_projections=config.model.n_projections,
                      variance_reduced=config.model.variance_reduced)[0], {}

  temps = temperatures_from_config(s_cfg)

  @jax.jit
  def draw(params, key):
    k0, k1 = jax.random.split(key)
    lo, hi = s_cfg.init_range
    x0 = jax.random.uniform(k0, (s_cfg.n_samples,) + shape, minval=lo, maxval=hi)
    return samplers.tempered_langevin(lambda x, sig: net.apply(params, x), k1, x0, s_cfg.eps, temps)[0]

  def sample(params, key):
    return {"x": np.asarray(draw(params, key))}

  def evaluate(params, key, samples):
    out = {}
    k1, k2 = jax.random.split(key)
    if getattr(dataset, "has_density", False):
      out["score_rel_mse"] = evaluation.score_error(lambda x, sig: net.apply(params, x), dataset, k1, sigma)
    out["mmd"] = evaluation.mmd_to_data(samples["x"], dataset, k2, sigma)
    if config.data.dataset == "mixture":
      from dsm_jax.data.toy import nearer_fraction
      out["weight_pos"] = nearer_fraction(samples["x"], (5.0, 5.0), (-5.0, -5.0))
    return out

  def plot(samples, params, sample_dir):
    if shape != (2,):
      return []
    ld = (lambda pts: dataset.log_prob(jnp.asarray(pts), sigma)) if getattr(dataset, "has_density", False) else None
    lim = max(abs(v) for v in s_cfg.init_range) + 1
    return [viz.scatter_2d(f"{sample_dir}/samples.png", samples["x"], ld, f"{objective.upper()} samples", lim)]

  return Method(name=objective, init_params=init_params, loss_fn=loss_fn, sample=sample,
                evaluate=evaluate, plot=plot)

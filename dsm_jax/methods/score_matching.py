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

from dsm_jax import losses, models, samplers, sampling, sigmas, viz
from dsm_jax.eval import toy as toy_eval
from dsm_jax.methods.base import Method, loss_step, register
from dsm_jax.validation import interval, one_of, positive, require

OBJECTIVES = ("dsm", "esm", "ssm")


def defaults(method: str) -> dict:
  return {
      "model": {**models.defaults("score_mlp"),
                "sigma": 0.5,               # the one noise level: every objective targets p_sigma
                "n_projections": 1,         # ssm: projections per example (paper: 1)
                "variance_reduced": True},  # ssm: SSM-VR
      "sampling": {"method": "tempered_langevin", "n_samples": 5000, "init_range": (-8.0, 8.0),
                   "eps": 0.2,              # x <- x + eps^2/2 s + eps sqrt(T) z
                   "t_start": 10.0, "n_flat": 200, "n_decay": 1000, "n_cool": 500, "decay": "geometric",
                   "t_end": 1.0},
  }


def validate(config) -> None:
  positive(config, "model.sigma")
  one_of(config, "sampling.method", ("tempered_langevin",))
  positive(config, "sampling.n_samples", integer=True)
  positive(config, "sampling.eps")
  sigmas.temperatures_from_config(config)
  interval(config, "sampling.init_range")
  positive(config, "model.n_projections", integer=True)
  require(isinstance(config.model.variance_reduced, bool), "model.variance_reduced",
          f"must be True or False, got {config.model.variance_reduced!r}")


@register(*OBJECTIVES, defaults=defaults)
def build(config, dataset) -> Method:
  validate(config)
  objective = config.method
  shape = tuple(dataset.shape)
  net = models.build(config.model, shape, conditional=False)
  sigma = float(config.model.sigma)
  s_cfg = config.sampling
  temps = sigmas.temperatures_from_config(config)

  def init(key):
    return {"score": net.init(key, jnp.zeros((1,) + shape))}

  def loss(params, key, batch):
    score_fn = lambda x, sig: net.apply(params, x)
    k_noise, k_proj = jax.random.split(key)
    if objective == "dsm":                                                        # Vincent 2011, eq. 17
      return losses.dsm(score_fn, k_noise, batch, sigma)[0], {}
    x_noisy = batch + sigma * jax.random.normal(k_noise, batch.shape, batch.dtype)  # a draw of p_sigma
    if objective == "esm":                                                        # Hyvarinen 2005, eq. 4
      return losses.esm(score_fn, x_noisy)[0], {}
    return losses.ssm(score_fn, k_proj, x_noisy, n_projections=config.model.n_projections,  # Song et al., eq. 7
                      variance_reduced=config.model.variance_reduced)[0], {}

  def draw(params, key, n):
    k0, k1 = jax.random.split(key)
    lo, hi = s_cfg.init_range
    x0 = sampling.start(jax.random.uniform(k0, (n,) + shape, minval=lo, maxval=hi))
    return {"x": samplers.tempered_langevin(lambda x, sig: net.apply(params["score"], x), k1, x0, s_cfg.eps, temps)[0]}

  draw = sampling.compile_draw(draw)

  def sample(params, key):
    return sampling.sample_in_batches(draw, params, key, s_cfg.n_samples)

  def evaluate(params, key, samples):
    out = {}
    k1, k2 = jax.random.split(key)
    if getattr(dataset, "has_density", False):
      out["score_rel_mse"] = toy_eval.score_error(lambda x, sig: net.apply(params["score"], x), dataset, k1, sigma)
    out["mmd"] = toy_eval.mmd_to_data(samples["x"], dataset, k2, sigma)
    out.update(toy_eval.mixture_metrics(samples["x"], dataset))
    return out

  def plot(samples, params, sample_dir):
    if shape != (2,):
      return []
    ld = (lambda pts: dataset.log_prob(jnp.asarray(pts), sigma)) if getattr(dataset, "has_density", False) else None
    lim = max(abs(v) for v in s_cfg.init_range) + 1
    return [viz.scatter_2d(f"{sample_dir}/samples.png", samples["x"], ld, f"{objective.upper()} samples", lim)]

  def score_of(params):
    """The learned score s(x) of p_sigma (unconditional: the sigma argument is ignored)."""
    return lambda x, sig: net.apply(params["score"], x)

  return Method(name=objective, init=init, step=loss_step("score", loss), networks={"score": 1}, loss=loss, sample=sample,
                evaluate=evaluate, plot=plot, score=score_of, draw=draw)

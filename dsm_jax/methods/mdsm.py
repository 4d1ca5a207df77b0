"""MDSM: a scalar energy trained by multi-scale denoising score matching (Li, Chen & Sommer 2019,
"Learning Energy-Based Models in High-Dimensional Spaces with Multi-scale Denoising Score Matching").

1. A network E(x) -> one number per example; p ∝ exp(-E).
2. Each example gets its own sigma in [sigma_min, sigma_max]; x~ = x + sigma n; with a fixed sigma0
   the loss is || (x - x~)/sigma0^2 + grad_x E(x~) ||^2 / sigma^2 (eq. 10, l(sigma) = 1/sigma^2). grad_x E
   is jax.grad inside the loss, so the parameter gradient is a double backprop.
3. Sampling: annealed Langevin on the energy with a temperature schedule,
   x <- x - eps^2/2 grad E(x) + eps sqrt(T_t) z, then one denoising step x - sigma0^2 grad E(x) (Sec. 4.2).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dsm_jax import evaluation, fields, losses, metrics, samplers, sigmas, viz
from dsm_jax.methods.base import Method
from dsm_jax.methods.score_matching import temperatures_from_config, validate_temperatures
from dsm_jax.models import get_model
from dsm_jax.validation import interval, one_of, positive, require


def validate(config) -> None:
  m = config.model
  positive(config, "model.sigma0")
  positive(config, "model.sigma_min")
  positive(config, "model.sigma_max")
  positive(config, "model.weight_power", allow_zero=True)
  require(m.sigma_max > m.sigma_min, "model.sigma_max",
          f"must exceed model.sigma_min ({m.sigma_min}), got {m.sigma_max}")
  one_of(config, "model.sigma_dist", ("uniform", "log_uniform", "batch_linear"))
  one_of(config, "sampling.method", ("tempered_langevin",))
  positive(config, "sampling.n_samples", integer=True)
  positive(config, "sampling.eps")
  validate_temperatures(config)
  interval(config, "sampling.init_range")


def draw_sigmas(key, n: int, m) -> jnp.ndarray:
  if m.sigma_dist == "uniform":
    return sigmas.uniform(key, (n,), m.sigma_min, m.sigma_max)
  if m.sigma_dist == "log_uniform":
    return sigmas.log_uniform(key, (n,), m.sigma_min, m.sigma_max)
  return sigmas.batch_linear(n, m.sigma_min, m.sigma_max)


def build(config, dataset) -> Method:
  validate(config)
  shape = tuple(dataset.shape)
  net = get_model(config.model, shape)
  m, s_cfg = config.model, config.sampling
  sigma0 = float(m.sigma0)

  def init_params(key):
    return net.init(key, jnp.zeros((1,) + shape))

  def energy_of(params):
    return lambda x, sig: net.apply(params, x)

  def loss_fn(params, key, batch):
    k_sig, k_noise = jax.random.split(key)
    sig = draw_sigmas(k_sig, batch.shape[0], m)
    loss, _ = losses.mdsm(energy_of(params), k_noise, batch, sig, sigma0, m.weight_power)  # eq. 10
    return loss, {}

  temps = temperatures_from_config(s_cfg)

  @jax.jit
  def draw(params, key):
    k0, k1 = jax.random.split(key)
    lo, hi = s_cfg.init_range
    x0 = jax.random.uniform(k0, (s_cfg.n_samples,) + shape, minval=lo, maxval=hi)
    score = fields.score_from_energy(energy_of(params))
    return samplers.tempered_langevin(score, k1, x0, s_cfg.eps, temps,
                                      final_denoise_sigma=sigma0 if s_cfg.final_denoise else None)[0]

  def sample(params, key):
    return {"x": np.asarray(draw(params, key))}

  def evaluate(params, key, samples):
    out = {}
    k1, k2 = jax.random.split(key)
    score = fields.score_from_energy(energy_of(params))
    if getattr(dataset, "has_density", False):
      # against the score of p_sigma0 (comparable with dsm/esm/ssm), and against the MDSM loss's own
      # minimiser (how well the network solved its objective); their gap is MDSM's pooling bias
      out["score_rel_mse"] = evaluation.score_error(score, dataset, k1, sigma0)
      x = evaluation.noisy_data(dataset, k1, 5000, sigma0)
      opt = evaluation.mdsm_optimal_score(dataset, x, sigma0, m.sigma_min, m.sigma_max, m.sigma_dist,
                                          m.weight_power)
      pred = jax.jit(score)(x, jnp.full((x.shape[0],), sigma0))
      out["score_rel_mse_to_optimum"] = metrics.score_rel_mse(pred, opt)
      out["optimum_rel_mse_to_sigma0_score"] = metrics.score_rel_mse(opt, dataset.score(x, sigma0))
    out["mmd"] = evaluation.mmd_to_data(samples["x"], dataset, k2, 0.0 if s_cfg.final_denoise else sigma0)
    if config.data.dataset == "mixture":
      from dsm_jax.data.toy import nearer_fraction
      out["weight_pos"] = nearer_fraction(samples["x"], (5.0, 5.0), (-5.0, -5.0))
    return out

  def plot(samples, params, sample_dir):
    if shape != (2,):
      return []
    lim = max(abs(v) for v in s_cfg.init_range) + 1
    has = getattr(dataset, "has_density", False)
    ld = (lambda pts: dataset.log_prob(jnp.asarray(pts), sigma0)) if has else None
    paths = [viz.scatter_2d(f"{sample_dir}/samples.png", samples["x"], ld, "MDSM samples", lim)]
    learned = lambda pts: -np.asarray(net.apply(params, jnp.asarray(pts)))
    panels = {"learned -E(x)": learned}
    if has:
      panels["true log p_sigma0(x)"] = lambda pts: np.asarray(dataset.log_prob(jnp.asarray(pts), sigma0))
    paths.append(viz.contours_2d(f"{sample_dir}/energy_contours.png", panels, lim))
    return paths

  return Method(name="mdsm", init_params=init_params, loss_fn=loss_fn, sample=sample,
                evaluate=evaluate, plot=plot)

"""NCSN: noise-conditional score networks (Song & Ermon 2019, "Generative Modeling by Estimating
Gradients of the Data Distribution").

1. A geometric ladder sigma_1 > ... > sigma_L (Sec. 4.1).
2. One network s(x, sigma) trained with the lambda(sigma)-weighted DSM objective, one level drawn per
   example (eqs. 5-6; lambda(sigma) = sigma^2).
3. Annealed Langevin dynamics (Alg. 1): T steps per level with alpha_i = eps sigma_i^2 / sigma_L^2.
   The step convention ('paper' or the reference code's 'code') is config.sampling.convention.
On the 2-D toy (Sec. 3.2) plain Langevin at the smallest sigma with the same number of score
evaluations is sampled too: it recovers the modes but not their weights, annealing recovers both.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dsm_jax import evaluation, gaussian_base, losses, samplers, sigmas, viz
from dsm_jax.methods.base import Method
from dsm_jax.models import get_model
from dsm_jax.validation import ConfigError, interval, one_of, positive, require


def ladder_from_config(config) -> jnp.ndarray:
  m = config.model
  positive(config, "model.sigma_min")
  positive(config, "model.sigma_max")
  require(m.sigma_max > m.sigma_min, "model.sigma_max",
          f"must exceed model.sigma_min ({m.sigma_min}), got {m.sigma_max}")
  positive(config, "model.num_scales", integer=True)
  require(m.num_scales >= 2, "model.num_scales", f"an annealing ladder needs >= 2 levels, got {m.num_scales}")
  return sigmas.geometric(m.sigma_max, m.sigma_min, m.num_scales)


BASE_SCORES = ("none", "gaussian")


def validate(config) -> None:
  ladder_from_config(config)
  if "base_score" in config.model:
    one_of(config, "model.base_score", BASE_SCORES)
  one_of(config, "sampling.method", ("annealed_langevin",))
  one_of(config, "sampling.convention", samplers.CONVENTIONS)
  one_of(config, "sampling.score", ("model", "analytic"))
  positive(config, "sampling.n_samples", integer=True)
  positive(config, "sampling.batch_size", integer=True, allow_zero=True)
  positive(config, "sampling.eps")
  positive(config, "sampling.n_steps_each", integer=True)
  positive(config, "sampling.langevin_eps")
  positive(config, "sampling.langevin_steps", integer=True, allow_zero=True)
  positive(config, "model.anneal_power", allow_zero=True)
  interval(config, "sampling.init_range")


def build(config, dataset) -> Method:
  validate(config)
  ladder = ladder_from_config(config)
  shape = tuple(dataset.shape)
  images = len(shape) == 3
  net = get_model(config.model, shape, conditional=True)
  base = None
  if config.model.get("base_score", "none") == "gaussian":  # s = s_G + network (dsm_jax/gaussian_base.py)
    base = gaussian_base.fit(dataset.train_images() if images else dataset.sample(
        jax.random.PRNGKey(config.seed), 10000))

  def apply(params, x, sig):
    out = net.apply(params, x, sig)
    return out if base is None else out + gaussian_base.score(base, x, sig)
  s_cfg = config.sampling
  n_batch = s_cfg.get("batch_size", 0) or s_cfg.n_samples
  n_traj = 8 if images else 2000  # chains kept in the trajectory (strip rows / scatter points)

  def init_params(key):
    return net.init(key, jnp.zeros((1,) + shape), jnp.ones((1,)))

  def loss_fn(params, key, batch):
    score_fn = lambda x, sig: apply(params, x, sig)
    loss, aux = losses.ncsn(score_fn, key, batch, ladder, config.model.anneal_power)  # eqs. 5-6
    # logged as the pooled per-level mean `level_loss_<i>` (see train.reduce_metrics)
    return loss, {"level_loss_sum": aux["level_loss_sum"], "level_loss_count": aux["level_count"]}

  def score_of(params):
    if s_cfg.score == "analytic":
      if not getattr(dataset, "has_density", False):
        raise ConfigError("sampling.score", f"'analytic' needs a dataset with a closed-form density, "
                                            f"{config.data.dataset!r} has none")
      return lambda x, sig: dataset.score(x, sig, s_cfg.analytic_form)
    return lambda x, sig: apply(params, x, sig)

  def _draw(score_fn, key, n, compare):
    k0, ka, kl = jax.random.split(key, 3)
    lo, hi = s_cfg.init_range
    x0 = jax.random.uniform(k0, (n,) + shape, minval=lo, maxval=hi)  # Alg. 1: x_0 ~ U
    x0 = samplers.shard_chains(x0)  # chains split over the local devices
    xa, aux_a = samplers.annealed_langevin(  # Alg. 1
        score_fn, ka, x0, ladder, s_cfg.eps, s_cfg.n_steps_each, convention=s_cfg.convention,
        final_denoise=s_cfg.final_denoise, return_traj=True)
    out = {"x": xa, "trajectory": aux_a["trajectory"][:, :n_traj]}
    if compare:  # plain Langevin at sigma_L with the same number of score evaluations (Sec. 3.2)
      n_plain = s_cfg.langevin_steps or int(ladder.shape[0]) * s_cfg.n_steps_each
      out["langevin"], _ = samplers.langevin(score_fn, kl, x0, s_cfg.langevin_eps, n_plain,
                                             sigma=ladder[-1], convention=s_cfg.convention)
    return out

  draw = jax.jit(_draw, static_argnums=(0, 2, 3))

  def draw_all(score_fn, key):
    """n_samples in batches of sampling.batch_size; the trajectory comes from the first batch."""
    outs = []
    for i, start in enumerate(range(0, s_cfg.n_samples, n_batch)):
      n = min(n_batch, s_cfg.n_samples - start)
      outs.append(jax.device_get(draw(score_fn, jax.random.fold_in(key, i), n, s_cfg.langevin_compare)))
    res = {k: np.concatenate([o[k] for o in outs]) for k in outs[0] if k != "trajectory"}
    res["trajectory"] = outs[0]["trajectory"]
    return res

  def sample(params, key):
    out = draw_all(score_of(params), key)
    if images:  # samples.npz holds x in [0, 1], NHWC
      out = {k: dataset.to_unit(v) for k, v in out.items()}
    return out

  def evaluate(params, key, samples):
    out = {}
    k_ref, k_mmd, k_score = jax.random.split(key, 3)
    if images:
      return evaluate_images(config, dataset, samples["x"])
    if config.data.dataset == "mixture":  # the paper's 1/5, 4/5 toy: weight of the (5, 5) mode
      out["weight_pos_annealed"] = _weight(samples["x"])
      if "langevin" in samples:
        out["weight_pos_langevin"] = _weight(samples["langevin"])
    if getattr(dataset, "has_density", False):
      # exact-score reference: the same sampler settings with the analytic smoothed score, no network
      ref = draw_all(lambda x, sig: dataset.score(x, sig, s_cfg.analytic_form), k_ref)
      if config.data.dataset == "mixture":
        out["weight_pos_annealed_exact_score"] = _weight(ref["x"])
        if "langevin" in ref:
          out["weight_pos_langevin_exact_score"] = _weight(ref["langevin"])
      net_score = lambda x, sig: apply(params, x, sig)
      errs = [evaluation.score_error(net_score, dataset, jax.random.fold_in(k_score, i), float(s))
              for i, s in enumerate(np.asarray(ladder))]
      out["score_rel_mse"] = float(np.mean(errs))
      out["score_rel_mse_sigma_min"] = errs[-1]
      for i, e in enumerate(errs):
        out[f"score_rel_mse_level_{i}"] = e
    sig_ref = 0.0 if s_cfg.final_denoise else float(ladder[-1])
    out["mmd"] = evaluation.mmd_to_data(samples["x"], dataset, k_mmd, sig_ref)
    if "langevin" in samples:
      out["mmd_langevin"] = evaluation.mmd_to_data(samples["langevin"], dataset, k_mmd, sig_ref)
    return out

  def plot(samples, params, sample_dir):
    if images:
      return [viz.image_grid(f"{sample_dir}/samples.png", samples["x"][:64]),
              viz.trajectory_strip(f"{sample_dir}/trajectory.png", samples["trajectory"])]
    if shape != (2,):
      return []
    ld = None
    if getattr(dataset, "has_density", False):
      ld = lambda pts: dataset.log_prob(jnp.asarray(pts), float(ladder[-1]))
    lim = max(abs(v) for v in s_cfg.init_range) + 2
    paths = [viz.scatter_2d(f"{sample_dir}/samples.png", samples["x"], ld, "annealed Langevin", lim),
             viz.trajectory_2d(f"{sample_dir}/trajectory.png", samples["trajectory"],
                               [f"sigma={s:.3g}" for s in np.asarray(ladder)], lim)]
    if "langevin" in samples:
      paths.append(viz.scatter_2d(f"{sample_dir}/langevin.png", samples["langevin"], ld, "plain Langevin", lim))
    return paths

  return Method(name="ncsn", init_params=init_params, loss_fn=loss_fn, sample=sample,
                evaluate=evaluate, plot=plot, score=score_of)


def evaluate_images(config, dataset, samples_unit) -> dict:
  """Download-free feature-space FID/KID, real baselines and the memorisation check; Inception-v3 FID
  only when config.eval.inception_path names a weights file (null otherwise: never invented)."""
  from dsm_jax import feature_metrics
  e = config.eval
  out = feature_metrics.evaluate_samples(samples_unit, dataset, cache_dir=e.get("feature_cache_dir", "") or None,
                                         seed=config.seed)
  out["fid_inception"] = None
  if e.get("inception_path", ""):
    from dsm_jax import fid, inception
    path = "" if e.inception_path == "auto" else e.inception_path  # auto: installed package or cache
    params = inception.load_params(inception.find_weights(path))
    n = min(len(samples_unit), e.get("inception_max_n", 1000))
    real = dataset.to_unit(dataset.test_images()[:n])
    f_s = inception.features(params, _rgb(samples_unit[:n]))
    f_r = inception.features(params, _rgb(real))
    out["fid_inception"] = fid.fid_from_features(f_s, f_r)
  out["inception_score"] = None  # the shipped FID weights have no logits layer: IS cannot be computed
  return out


def _rgb(x):
  return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def _weight(x) -> float:
  from dsm_jax.data.toy import nearer_fraction
  return nearer_fraction(x, (5.0, 5.0), (-5.0, -5.0))

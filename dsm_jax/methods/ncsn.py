"""NCSN: noise-conditional score networks (Song & Ermon 2019, "Generative Modeling by Estimating
Gradients of the Data Distribution").

1. A geometric ladder sigma_1 > ... > sigma_L (Sec. 4.1).
2. One network s(x, sigma) trained with the lambda(sigma)-weighted DSM objective, one level drawn per
   example (eqs. 5-6; lambda(sigma) = sigma^2).
3. Annealed Langevin dynamics (Alg. 1): T steps per level with alpha_i = eps sigma_i^2 / sigma_L^2.
   The step rule ('paper' or the reference code's 'code') is config.sampling.convention.
   sampling.method = 'annealed_mala' adds a Metropolis-Hastings correction to every step
   (samplers.annealed_mala: the log-density ratio is the trapezoid line integral of the score), so that each
   level samples p_{sigma_i} exactly at any step size; its acceptance rates are reported overall and per level
   (eval 'mala_accept_rate', 'mala_accept_level_<i>'; samples/mala_accept.npz: [N, L] per chain).
On the 2-D toy (Sec. 3.2.2, Fig. 3) plain Langevin at the smallest sigma with the same number of score
evaluations is sampled too: it recovers the modes but not their weights, annealing recovers both.

model.base_score = 'gaussian' (not in the paper): s = s_G + network, with s_G the closed-form score of the
training data's Gaussian fit smoothed at sigma (dsm_jax/gaussian_base.py); the network learns the rest.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dsm_jax import gaussian_base, losses, models, samplers, sampling, sigmas, viz
from dsm_jax.eval import images as image_eval
from dsm_jax.eval import toy as toy_eval
from dsm_jax.methods.base import Method, loss_step, register
from dsm_jax.validation import ConfigError, interval, one_of, positive

BASE_SCORES = ("none", "gaussian")
METHODS = ("annealed_langevin", "annealed_mala")


def defaults(method: str) -> dict:
  return {
      "model": {**models.defaults("score_mlp"),
                "sigma_max": 1.0,        # the ladder: geometric from sigma_max to sigma_min over num_scales levels
                "sigma_min": 0.01,
                "num_scales": 10,
                "anneal_power": 2.0,     # lambda(sigma) = sigma^anneal_power (paper: 2)
                "base_score": "none"},   # none | gaussian: + the data's Gaussian score (gaussian_base.py)
      "sampling": {
          "method": "annealed_langevin",  # Alg. 1 | annealed_mala: + a Metropolis-Hastings correction per step
          "score": "model",              # model | analytic: the exact score of a toy's smoothed density
          "analytic_form": "convolved",  # convolved: std sqrt(1 + sigma^2) | reference: std sigma (NCSN toy runner)
          "n_samples": 1000,
          "batch_size": 0,               # chains per compiled sampler call; 0: all at once
          "init_range": (0.0, 1.0),      # x_0 ~ U[init_range] (Alg. 1)
          "eps": 2e-5,
          "n_steps_each": 100,           # T
          "convention": "code",          # paper: x + alpha/2 s + sqrt(alpha) z | code: x + a s + sqrt(2a) z
          "final_denoise": False,        # NCSNv2: one Tweedie step x + sigma_L^2 s(x, sigma_L) at the end
          "langevin_compare": False,     # also plain Langevin at sigma_L (samples/langevin.npz)
          "langevin_eps": 2e-5,
          "langevin_steps": 0},          # 0: L * T steps, as many score evaluations as annealing
  }


def validate(config, dataset) -> None:
  sigmas.ladder_from_config(config)
  one_of(config, "model.base_score", BASE_SCORES)
  positive(config, "model.anneal_power", allow_zero=True)
  one_of(config, "sampling.method", METHODS)
  one_of(config, "sampling.convention", samplers.CONVENTIONS)
  one_of(config, "sampling.score", ("model", "analytic"))
  one_of(config, "sampling.analytic_form", ("convolved", "reference"))
  positive(config, "sampling.n_samples", integer=True)
  positive(config, "sampling.batch_size", integer=True, allow_zero=True)
  positive(config, "sampling.eps")
  positive(config, "sampling.n_steps_each", integer=True)
  positive(config, "sampling.langevin_eps")
  positive(config, "sampling.langevin_steps", integer=True, allow_zero=True)
  interval(config, "sampling.init_range")
  if config.sampling.score == "analytic" and not getattr(dataset, "has_density", False):
    raise ConfigError("sampling.score", f"'analytic' needs a dataset with a closed-form density, "
                                        f"{config.data.dataset!r} has none")


@register("ncsn", defaults=defaults)
def build(config, dataset) -> Method:
  validate(config, dataset)
  m, s_cfg = config.model, config.sampling
  shape = tuple(dataset.shape)
  images = len(shape) == 3
  ladder = sigmas.ladder_from_config(config)                                    # Sec. 4.1
  net = models.build(m, shape, sigmas=tuple(float(s) for s in ladder))
  base = gaussian_base.fit_dataset(dataset, config.seed) if m.base_score == "gaussian" else None
  n_traj = 8 if images else 2000  # chains kept in the trajectory (strip rows / scatter points)

  def score(params, x, sig):
    out = net.apply(params, x, sig)
    return out if base is None else out + gaussian_base.score(base, x, sig)

  def exact_score(x, sig):
    return dataset.score(x, sig, s_cfg.analytic_form)

  def init(key):
    return {"score": net.init(key, jnp.zeros((1,) + shape), jnp.ones((1,)))}

  def loss(params, key, batch):                                                 # eqs. 5-6
    value, aux = losses.ncsn(lambda x, sig: score(params, x, sig), key, batch, ladder, m.anneal_power)
    # logged as the pooled per-level mean `level_loss_<i>` (train/loop.py: reduce_metrics)
    return value, {"level_loss_sum": aux["level_loss_sum"], "level_loss_count": aux["level_count"]}

  def chains(score_fn, key, n):
    k0, ka, kl = jax.random.split(key, 3)
    lo, hi = s_cfg.init_range
    x0 = sampling.start(jax.random.uniform(k0, (n,) + shape, minval=lo, maxval=hi))  # Alg. 1: x_0 ~ U
    sampler = samplers.annealed_mala if s_cfg.method == "annealed_mala" else samplers.annealed_langevin
    xa, aux = sampler(score_fn, ka, x0, ladder, s_cfg.eps, s_cfg.n_steps_each,                  # Alg. 1
                      convention=s_cfg.convention, final_denoise=s_cfg.final_denoise, return_traj=True)
    out = {"x": xa, "trajectory": aux["trajectory"][:, :n_traj]}
    if "accept" in aux:
      out["mala_accept"] = aux["accept"].T  # [n, L]: each chain's acceptance rate per level
    if s_cfg.langevin_compare:  # plain Langevin at sigma_L with the same number of score evaluations (Sec. 3.2.2)
      n_plain = s_cfg.langevin_steps or int(ladder.shape[0]) * s_cfg.n_steps_each
      out["langevin"], _ = samplers.langevin(score_fn, kl, x0, s_cfg.langevin_eps, n_plain, sigma=ladder[-1],
                                             convention=s_cfg.convention)
    return out

  draw_model = sampling.compile_draw(lambda p, key, n: chains(lambda x, sig: score(p["score"], x, sig), key, n))
  draw_exact = sampling.compile_draw(lambda p, key, n: chains(exact_score, key, n))

  def draw_all(draw, params, key):
    return sampling.sample_in_batches(draw, params, key, s_cfg.n_samples, s_cfg.batch_size, first_only=("trajectory",))

  def sample(params, key):
    out = draw_all(draw_exact if s_cfg.score == "analytic" else draw_model, params, key)
    if images:  # samples.npz holds x in [0, 1], NHWC
      out = {k: v if k == "mala_accept" else np.asarray(dataset.to_unit(v)) for k, v in out.items()}
    return out

  def accept_rates(samples, suffix=""):
    if "mala_accept" not in samples:
      return {}
    acc = np.asarray(samples["mala_accept"])
    return {f"mala_accept_rate{suffix}": float(np.mean(acc)),
            **{f"mala_accept_level_{i}{suffix}": float(a) for i, a in enumerate(np.mean(acc, axis=0))}}

  def evaluate(params, key, samples):
    if images:
      return {**image_eval.evaluate(config, dataset, samples["x"]), **accept_rates(samples)}
    k_ref, k_mmd, k_score = jax.random.split(key, 3)
    out = accept_rates(samples)
    out.update(toy_eval.mixture_metrics(samples["x"], dataset, "weight_pos_annealed"))
    if "langevin" in samples:
      out.update(toy_eval.mixture_metrics(samples["langevin"], dataset, "weight_pos_langevin"))
    if getattr(dataset, "has_density", False):
      # exact-score reference: the same sampler settings with the analytic smoothed score, no network
      ref = draw_all(draw_exact, params, k_ref)
      out.update(toy_eval.mixture_metrics(ref["x"], dataset, "weight_pos_annealed_exact_score"))
      out.update(accept_rates(ref, "_exact_score"))
      if "langevin" in ref:
        out.update(toy_eval.mixture_metrics(ref["langevin"], dataset, "weight_pos_langevin_exact_score"))
      net_score = lambda x, sig: score(params["score"], x, sig)
      errs = [toy_eval.score_error(net_score, dataset, jax.random.fold_in(k_score, i), float(s))
              for i, s in enumerate(np.asarray(ladder))]
      out["score_rel_mse"] = float(np.mean(errs))
      out["score_rel_mse_sigma_min"] = errs[-1]
      out.update({f"score_rel_mse_level_{i}": e for i, e in enumerate(errs)})
    sig_ref = 0.0 if s_cfg.final_denoise else float(ladder[-1])
    out["mmd"] = toy_eval.mmd_to_data(samples["x"], dataset, k_mmd, sig_ref)
    if "langevin" in samples:
      out["mmd_langevin"] = toy_eval.mmd_to_data(samples["langevin"], dataset, k_mmd, sig_ref)
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
    paths = [viz.scatter_2d(f"{sample_dir}/samples.png", samples["x"], ld, s_cfg.method.replace("_", " "), lim),
             viz.trajectory_2d(f"{sample_dir}/trajectory.png", samples["trajectory"],
                               [f"sigma={s:.3g}" for s in np.asarray(ladder)], lim)]
    if "langevin" in samples:
      paths.append(viz.scatter_2d(f"{sample_dir}/langevin.png", samples["langevin"], ld, "plain Langevin", lim))
    return paths

  sched = samplers.annealed_schedule(np.asarray(ladder), s_cfg.eps, s_cfg.n_steps_each, s_cfg.convention)
  sigma_l = float(np.asarray(ladder)[-1])

  @jax.jit
  def inpaint(params, key, known, mask):  # --mode=inpaint: Alg. 1 with the known entries held at their noised values
    k0, k1 = jax.random.split(key)
    lo, hi = s_cfg.init_range
    x0 = sampling.start(jax.random.uniform(k0, known.shape, known.dtype, minval=lo, maxval=hi))
    x, _ = samplers.inpaint_langevin(score_of(params), k1, x0, sampling.start(known), sampling.start(mask), sched,
                                     final_denoise_sigma=sigma_l if s_cfg.final_denoise else None)
    return x

  def score_of(params):
    if s_cfg.score == "analytic":
      return exact_score
    return lambda x, sig: score(params["score"], x, sig)

  return Method(name="ncsn", init=init, step=loss_step("score", loss), networks={"score": 1}, loss=loss, sample=sample,
                evaluate=evaluate, plot=plot, score=score_of, draw=draw_model, inpaint=inpaint)

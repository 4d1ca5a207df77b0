"""MDSM: a scalar energy trained by multi-scale denoising score matching (Li, Chen & Sommer 2019,
"Learning Energy-Based Models in High-Dimensional Spaces with Multi-scale Denoising Score Matching").

1. A network E(x) -> one number per example; p ∝ exp(-E).
2. Each example gets its own sigma in [sigma_min, sigma_max]; x~ = x + sigma n; with a fixed sigma0
   the loss is || (x - x~)/sigma0^2 + grad_x E(x~) ||^2 / sigma^2 (eq. 10, l(sigma) = 1/sigma^2). grad_x E
   is jax.grad inside the loss, so the parameter gradient is a double backprop.
3. Sampling: annealed Langevin on the energy with a temperature schedule,
   x <- x - eps^2/2 grad E(x) + eps sqrt(T_t) z, then one denoising step x - sigma0^2 grad E(x) (Sec. 4.2).
Images (Sec. 5): the ResNet energy (models/energy_resnet.py), sigmas spread over the batch as the
reference code does ('batch_linear' for CIFAR-10, 'batch_geometric' for Fashion-MNIST), chains started
at x_0 = 0.5 + N(0, I) and run through the reference schedule (T = 100 for 500 steps, 2000 steps down to
T = 1, 200 steps to 0) in batches of sampling.batch_size; samples.npz holds x in [0, 1] NHWC, with an
image grid and a trajectory strip. Evaluation: the shared image metrics and the energy as an
out-of-distribution score (dsm_jax/eval/ood.py, score -E(x)); on toys, the score error against the smoothed
density and against the loss's own minimiser (`optimal_score`).

model.base_energy = 'gaussian' (not in the paper) makes E = E_G + network, with E_G the quadratic energy of the
training data's Gaussian fit that minimises eq. 10 for Gaussian data (dsm_jax/gaussian_base.py); the network
learns only the non-Gaussian part, as NCSN's base_score does for scores.
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from dsm_jax import fields, gaussian_base, likelihood, losses, models, samplers, sampling, sigmas, viz
from dsm_jax.data.images import IMAGE_DATASETS
from dsm_jax.eval import images as image_eval
from dsm_jax.eval import metrics, ood
from dsm_jax.eval import toy as toy_eval
from dsm_jax.methods.base import Method, loss_step, register
from dsm_jax.validation import ConfigError, interval, one_of, positive, require

SIGMA_DISTS = ("uniform", "log_uniform", "batch_linear", "batch_geometric")
BASE_ENERGIES = ("none", "gaussian")
INITS = ("uniform", "gaussian")
TRAJ_FRAMES = 12  # at most this many stages in the trajectory strip (plus the denoised end)


def defaults(method: str) -> dict:
  return {
      "model": {**models.defaults("energy_mlp"),
                "sigma0": 0.1,             # the fixed sigma_0 of eq. 10
                "sigma_min": 0.05,         # per-example sigma over [sigma_min, sigma_max] ...
                "sigma_max": 1.2,
                "sigma_dist": "uniform",   # ... uniform | log_uniform | batch_linear | batch_geometric
                "weight_power": 2.0,       # l(sigma) = sigma^-weight_power (eq. 10: 2)
                "base_energy": "none"},    # none | gaussian: E = E_G + network
      "sampling": {"method": "tempered_langevin", "n_samples": 1000,
                   "batch_size": 0,        # chains per compiled sampler call; 0: all at once
                   "eps": 0.02, "t_start": 100.0, "n_flat": 500, "n_decay": 2000, "n_cool": 200,
                   "decay": "geometric", "t_end": 0.0,
                   "init": "uniform",      # uniform over init_range | gaussian: init_mean + init_std N(0, I)
                   "init_range": (0.0, 1.0), "init_mean": 0.5, "init_std": 1.0,
                   "final_denoise": True},  # x - sigma0^2 grad E(x) at the end (Sec. 4.2)
      "eval": {"ood_n": 1000,              # in-distribution test images (and as many of each OOD set)
               "ood_datasets": ()},        # tfds names of real OOD sets (reported as not computed when absent)
  }


def validate(config) -> None:
  m = config.model
  positive(config, "model.sigma0")
  positive(config, "model.sigma_min")
  positive(config, "model.sigma_max")
  positive(config, "model.weight_power", allow_zero=True)
  require(m.sigma_max > m.sigma_min, "model.sigma_max",
          f"must exceed model.sigma_min ({m.sigma_min}), got {m.sigma_max}")
  one_of(config, "model.sigma_dist", SIGMA_DISTS)
  one_of(config, "model.base_energy", BASE_ENERGIES)
  one_of(config, "sampling.method", ("tempered_langevin",))
  positive(config, "sampling.n_samples", integer=True)
  positive(config, "sampling.batch_size", integer=True, allow_zero=True)
  positive(config, "sampling.eps")
  sigmas.temperatures_from_config(config)
  one_of(config, "sampling.init", INITS)
  s = config.sampling
  require(isinstance(s.init_mean, (int, float)) and not isinstance(s.init_mean, bool), "sampling.init_mean",
          f"must be a number, got {s.init_mean!r}")
  positive(config, "sampling.init_std")
  interval(config, "sampling.init_range")
  require(isinstance(s.final_denoise, bool), "sampling.final_denoise", f"must be True or False, got {s.final_denoise!r}")
  positive(config, "eval.ood_n", integer=True)
  names = config.eval.ood_datasets
  if not isinstance(names, (tuple, list)) or not all(isinstance(n, str) for n in names):
    raise ConfigError("eval.ood_datasets", f"must be a tuple of tfds names, e.g. ('mnist',); got {names!r}")
  for n in names:
    require(n in IMAGE_DATASETS, "eval.ood_datasets", f"unknown dataset {n!r}; choose from {list(IMAGE_DATASETS)}")


# ------------------------------------------------------------------------------------ the noise levels (Sec. 4)
def draw_sigmas(key, n: int, m) -> jnp.ndarray:
  """One sigma per example: drawn (uniform / log_uniform) or spread over the batch as the reference code does
  (batch_linear: its 'lin'; batch_geometric: its 'exp'). Under sharding the spread is over the global batch."""
  if m.sigma_dist == "uniform":
    return sigmas.uniform(key, (n,), m.sigma_min, m.sigma_max)
  if m.sigma_dist == "log_uniform":
    return sigmas.log_uniform(key, (n,), m.sigma_min, m.sigma_max)
  if m.sigma_dist == "batch_geometric":
    return sigmas.batch_geometric(n, m.sigma_min, m.sigma_max)
  return sigmas.batch_linear(n, m.sigma_min, m.sigma_max)


def sigma_levels(m, batch_size: int) -> np.ndarray:
  """Equally likely noise levels that stand for model.sigma_dist: the batch's own spread for batch_*, else 1,000
  quantiles of the distribution (for the Gaussian base energy's coefficients)."""
  if m.sigma_dist.startswith("batch_"):
    return np.asarray(draw_sigmas(None, batch_size, m), np.float64)
  q = (np.arange(1000) + 0.5) / 1000
  if m.sigma_dist == "uniform":
    return m.sigma_min + q * (m.sigma_max - m.sigma_min)
  return m.sigma_min * (m.sigma_max / m.sigma_min) ** q


# ------------------------------------------------------------------------------------ the sampler (Sec. 4.2)
def initial_state(key, n: int, shape, s_cfg) -> jnp.ndarray:
  """Chain starts [n, *shape]: 'gaussian' init_mean + init_std N(0, I) (reference: 0.5 + N(0, I)), or
  'uniform' over init_range."""
  if s_cfg.init == "gaussian":
    return s_cfg.init_mean + s_cfg.init_std * jax.random.normal(key, (n,) + tuple(shape))
  lo, hi = s_cfg.init_range
  return jax.random.uniform(key, (n,) + tuple(shape), minval=lo, maxval=hi)


def trajectory_thin(n_steps: int, max_frames: int = TRAJ_FRAMES) -> int:
  """The smallest divisor d of n_steps with n_steps / d <= max_frames (the sampler keeps every d-th state)."""
  return next(d for d in range(1, n_steps + 1) if n_steps % d == 0 and n_steps // d <= max_frames)


# ------------------------------------------------------------------------------------ the loss's own optimum
def optimal_score(dataset, x: jax.Array, sigma0: float, sigma_min: float, sigma_max: float,
                  sigma_dist: str = "uniform", weight_power: float = 2.0, n_grid: int = 64) -> jax.Array:
  """-grad E* for the minimiser E* of eq. 10 on a toy with a closed-form density.

  Per noise level the loss || (x - x~)/sigma0^2 + g ||^2 sigma^-p is minimised at
  g = -sigma^2 s_sigma(x~) / sigma0^2 (Tweedie), so pooling the levels at a point x~,
      -grad E*(x~) = sum_sigma q(sigma) p_sigma(x~) sigma^(2-p) s_sigma(x~) / (sigma0^2 sum_sigma q(sigma) p_sigma(x~) sigma^-p),
  with q the sigma distribution (quadrature on n_grid levels). Equals s_sigma0 only when every sigma is sigma0:
  MDSM's energy is a noise-pooled, rescaled score, not the score of one smoothed density."""
  # equal probability mass per grid point: linear grid for (batch-)linear sigmas, geometric for log-spaced ones
  log_spaced = sigma_dist in ("log_uniform", "batch_geometric")
  grid = np.geomspace(sigma_min, sigma_max, n_grid) if log_spaced else np.linspace(sigma_min, sigma_max, n_grid)
  logps = jnp.stack([dataset.log_prob(x, float(s)) for s in grid])  # [S, B]
  # normalised weights q p_sigma sigma^-p over the grid (the denominator's terms), stably in log space
  w = jax.nn.softmax(logps - weight_power * jnp.log(jnp.asarray(grid, jnp.float32))[:, None], axis=0)
  pooled = sum(w[i][:, None] * float(s) ** 2 * dataset.score(x, float(s)) for i, s in enumerate(grid))
  return pooled / sigma0 ** 2


# ------------------------------------------------------------------------------------ the method
@register("mdsm", defaults=defaults)
def build(config, dataset) -> Method:
  validate(config)
  m, s_cfg = config.model, config.sampling
  shape = tuple(dataset.shape)
  images = len(shape) == 3
  net = models.build(m, shape)
  sigma0 = float(m.sigma0)

  base, coef = None, None
  if m.base_energy == "gaussian":  # E = E_G + network (dsm_jax/gaussian_base.py)
    base = gaussian_base.fit_dataset(dataset, config.seed)
    coef = gaussian_base.mdsm_coefficients(base, sigma_levels(m, int(config.training.batch_size)), sigma0,
                                           float(m.weight_power))

  def energy(params, x):
    e = net.apply(params, x)
    return e if base is None else e + gaussian_base.quadratic_energy(base, coef, x).astype(e.dtype)

  def init(key):
    return {"energy": net.init(key, jnp.zeros((1,) + shape))}

  def loss(params, key, batch):                                                 # eq. 10
    k_sig, k_noise = jax.random.split(key)
    sig = draw_sigmas(k_sig, batch.shape[0], m)
    value, _ = losses.mdsm(lambda x, _s: energy(params, x), k_noise, batch, sig, sigma0, m.weight_power)
    return value, {}

  temps = sigmas.temperatures_from_config(config)
  thin = trajectory_thin(len(temps)) if images else 0

  def draw(params, key, n):                                                     # Sec. 4.2
    k0, k1 = jax.random.split(key)
    x0 = sampling.start(initial_state(k0, n, shape, s_cfg))
    score = fields.score_from_energy(lambda x, _s: energy(params["energy"], x))
    x, aux = samplers.tempered_langevin(score, k1, x0, s_cfg.eps, temps, thin=thin,
                                        final_denoise_sigma=sigma0 if s_cfg.final_denoise else None)
    chex.assert_shape(x, (n,) + shape)
    out = {"x": x}
    if images:  # [stages + 1, 8, H, W, C]: every thin-th state of the first 8 chains, then the final x
      out["trajectory"] = jnp.concatenate([aux["trajectory"][:, :8], x[None, :8]])
    return out

  draw = sampling.compile_draw(draw)

  def sample(params, key):
    """Images are returned in [0, 1] (dataset.to_unit)."""
    res = sampling.sample_in_batches(draw, params, key, s_cfg.n_samples, s_cfg.batch_size, first_only=("trajectory",))
    if images:
      res = {k: np.asarray(dataset.to_unit(v)) for k, v in res.items()}
    return res

  neg_energy = jax.jit(lambda p, x: -energy(p, x))  # the OOD score: higher = more in-distribution

  def evaluate(params, key, samples):
    if images:
      out = image_eval.evaluate(config, dataset, samples["x"])
      score = lambda x: neg_energy(params["energy"], x)
      out.update(ood.ood_eval(score, dataset, jax.random.fold_in(key, 0x00D), n=int(config.eval.ood_n),
                              tfds_names=tuple(config.eval.ood_datasets), data_dir=getattr(dataset, "data_dir", None)))
      return out
    out = {}
    k1, k2 = jax.random.split(key)
    score = fields.score_from_energy(lambda x, _s: energy(params["energy"], x))
    if getattr(dataset, "has_density", False):
      # against the score of p_sigma0 (comparable with dsm/esm/ssm), and against the loss's own minimiser (how
      # well the network solved its objective); their gap is MDSM's pooling bias
      out["score_rel_mse"] = toy_eval.score_error(score, dataset, k1, sigma0)
      x = toy_eval.noisy_data(dataset, k1, 5000, sigma0)
      opt = optimal_score(dataset, x, sigma0, m.sigma_min, m.sigma_max, m.sigma_dist, m.weight_power)
      pred = jax.jit(score)(x, jnp.full((x.shape[0],), sigma0))
      out["score_rel_mse_to_optimum"] = metrics.score_rel_mse(pred, opt)
      out["optimum_rel_mse_to_sigma0_score"] = metrics.score_rel_mse(opt, dataset.score(x, sigma0))
    out["mmd"] = toy_eval.mmd_to_data(samples["x"], dataset, k2, 0.0 if s_cfg.final_denoise else sigma0)
    out.update(toy_eval.mixture_metrics(samples["x"], dataset))
    return out

  def plot(samples, params, sample_dir):
    if images:
      return [viz.image_grid(f"{sample_dir}/samples.png", samples["x"][:64]),
              viz.trajectory_strip(f"{sample_dir}/trajectory.png", samples["trajectory"])]
    if shape != (2,):
      return []
    lim = max(abs(v) for v in s_cfg.init_range) + 1
    has = getattr(dataset, "has_density", False)
    ld = (lambda pts: dataset.log_prob(jnp.asarray(pts), sigma0)) if has else None
    paths = [viz.scatter_2d(f"{sample_dir}/samples.png", samples["x"], ld, "MDSM samples", lim)]
    panels = {"learned -E(x)": lambda pts: -np.asarray(energy(params["energy"], jnp.asarray(pts)))}
    if has:
      panels["true log p_sigma0(x)"] = lambda pts: np.asarray(dataset.log_prob(jnp.asarray(pts), sigma0))
    paths.append(viz.contours_2d(f"{sample_dir}/energy_contours.png", panels, lim))
    return paths

  def score_of(params):
    return fields.score_from_energy(lambda x, _s: energy(params["energy"], x))

  inpaint_sched = samplers.tempered_schedule(s_cfg.eps, temps, sigma0)

  @jax.jit
  def inpaint(params, key, known, mask):  # --mode=inpaint: Sec. 4.2's schedule with the known entries held
    k0, k1 = jax.random.split(key)
    x0 = sampling.start(initial_state(k0, known.shape[0], shape, s_cfg))
    x, _ = samplers.inpaint_langevin(score_of(params), k1, x0, sampling.start(known), sampling.start(mask),
                                     inpaint_sched, final_denoise_sigma=sigma0 if s_cfg.final_denoise else None)
    return x

  def log_likelihood(params, key):  # --mode=loglik: exp(-E) models p_sigma0
    energy_fn = lambda x: energy(params["energy"], x)
    return likelihood.evaluate_energy(config, dataset, energy_fn, sigma0, key, progress=bool(config.runtime.progress))

  return Method(name="mdsm", init=init, step=loss_step("energy", loss), networks={"energy": 1}, loss=loss, sample=sample,
                evaluate=evaluate, plot=plot, score=score_of, draw=draw, inpaint=inpaint,
                log_likelihood=log_likelihood, functions=lambda params: {"energy": lambda x: energy(params["energy"], x)})

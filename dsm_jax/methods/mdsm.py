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
image grid and a trajectory strip. Evaluation: the image pipeline's feature FID/KID (the same route as
NCSN) and the energy as an out-of-distribution score (dsm_jax.ood, score -E(x)).
model.base_energy = 'gaussian' (not in the paper) makes E = E_G + network, with E_G the quadratic energy of the
training data's Gaussian fit that minimises eq. 10 for Gaussian data (dsm_jax/gaussian_base.py); the network
learns only the non-Gaussian part, as NCSN's base_score does for scores.
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from dsm_jax import evaluation, fields, gaussian_base, losses, metrics, ood, samplers, sigmas, viz
from dsm_jax.methods.base import Method
from dsm_jax.methods.score_matching import temperatures_from_config, validate_temperatures
from dsm_jax.models import get_model
from dsm_jax.validation import ConfigError, get, interval, one_of, positive, require

SIGMA_DISTS = ("uniform", "log_uniform", "batch_linear", "batch_geometric")
BASE_ENERGIES = ("none", "gaussian")
INITS = ("uniform", "gaussian")
TRAJ_FRAMES = 12  # at most this many stages in the trajectory strip (plus the denoised end)


def validate(config) -> None:
  m = config.model
  positive(config, "model.sigma0")
  positive(config, "model.sigma_min")
  positive(config, "model.sigma_max")
  positive(config, "model.weight_power", allow_zero=True)
  require(m.sigma_max > m.sigma_min, "model.sigma_max",
          f"must exceed model.sigma_min ({m.sigma_min}), got {m.sigma_max}")
  one_of(config, "model.sigma_dist", SIGMA_DISTS)
  if "base_energy" in m:
    one_of(config, "model.base_energy", BASE_ENERGIES)
  if config.sampling.get("conv_impl", ""):  # '' = model.conv_impl
    from dsm_jax.models.energy_resnet import CONV_IMPLS  # noqa: PLC0415
    one_of(config, "sampling.conv_impl", CONV_IMPLS)
  one_of(config, "sampling.method", ("tempered_langevin",))
  positive(config, "sampling.n_samples", integer=True)
  if "batch_size" in config.sampling:
    positive(config, "sampling.batch_size", integer=True, allow_zero=True)
  positive(config, "sampling.eps")
  validate_temperatures(config)
  s = config.sampling
  if s.get("init", "uniform") == "gaussian":  # x_0 = init_mean + init_std N(0, I) (reference: 0.5 + N(0, I))
    v = get(config, "sampling.init_mean")
    require(isinstance(v, (int, float)) and not isinstance(v, bool), "sampling.init_mean",
            f"must be a number, got {v!r}")
    positive(config, "sampling.init_std")
  else:
    if "init" in s:
      one_of(config, "sampling.init", INITS)
    interval(config, "sampling.init_range")
  e = config.eval
  if "ood_n" in e:
    positive(config, "eval.ood_n", integer=True)
  if "ood_datasets" in e:
    from dsm_jax.data.images import IMAGE_DATASETS  # noqa: PLC0415
    names = e.ood_datasets
    if not isinstance(names, (tuple, list)) or not all(isinstance(n, str) for n in names):
      raise ConfigError("eval.ood_datasets", f"must be a tuple of tfds names, e.g. ('mnist',); got {names!r}")
    for n in names:
      require(n in IMAGE_DATASETS, "eval.ood_datasets", f"unknown dataset {n!r}; choose from {list(IMAGE_DATASETS)}")


def draw_sigmas(key, n: int, m) -> jnp.ndarray:
  """One sigma per example (Sec. 4): drawn (uniform / log_uniform) or spread over the batch as the reference
  code does (batch_linear: its 'lin'; batch_geometric: its 'exp'). Under sharding the spread is over the
  global batch."""
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


def initial_state(key, n: int, shape, s_cfg) -> jnp.ndarray:
  """Chain starts [n, *shape]: 'gaussian' init_mean + init_std N(0, I) (reference: 0.5 + N(0, I)), or
  'uniform' over init_range."""
  if s_cfg.get("init", "uniform") == "gaussian":
    return s_cfg.init_mean + s_cfg.init_std * jax.random.normal(key, (n,) + tuple(shape))
  lo, hi = s_cfg.init_range
  return jax.random.uniform(key, (n,) + tuple(shape), minval=lo, maxval=hi)


def trajectory_thin(n_steps: int, max_frames: int = TRAJ_FRAMES) -> int:
  """The smallest divisor d of n_steps with n_steps / d <= max_frames (the sampler keeps every d-th state)."""
  return next(d for d in range(1, n_steps + 1) if n_steps % d == 0 and n_steps // d <= max_frames)


def sampler_model_config(config):
  """config.model as the sampler builds it: conv_impl from sampling.conv_impl ('' = model.conv_impl). The same
  network and parameters; only the convolutions' compute differs (models/energy_resnet.py)."""
  m = config.model.copy_and_resolve_references()
  with m.unlocked():  # the command line locks the config; this copy gains the sampler's key
    m.conv_impl = config.sampling.get("conv_impl", "") or m.get("conv_impl", "xla")
  return m


def build(config, dataset) -> Method:
  validate(config)
  shape = tuple(dataset.shape)
  images = len(shape) == 3
  net = get_model(config.model, shape)
  m, s_cfg = config.model, config.sampling
  sample_m = sampler_model_config(config)  # sampling.conv_impl: the sampler's convolutions, same parameters
  sample_net = get_model(sample_m, shape) if images and sample_m.conv_impl != m.get("conv_impl", "xla") else net
  sigma0 = float(m.sigma0)
  n_batch = s_cfg.get("batch_size", 0) or s_cfg.n_samples

  base, coef = None, None
  if m.get("base_energy", "none") == "gaussian":  # E = E_G + network (dsm_jax/gaussian_base.py)
    base = gaussian_base.fit(dataset.train_images() if images else dataset.sample(
        jax.random.PRNGKey(config.seed), 10000))
    coef = gaussian_base.mdsm_coefficients(base, sigma_levels(m, int(config.training.batch_size)), sigma0,
                                           float(m.weight_power))

  def init_params(key):
    return net.init(key, jnp.zeros((1,) + shape))

  def energy(params, x, network=net):
    e = network.apply(params, x)
    return e if base is None else e + gaussian_base.quadratic_energy(base, coef, x).astype(e.dtype)

  def energy_of(params, network=net):
    return lambda x, sig: energy(params, x, network)

  def loss_fn(params, key, batch):
    k_sig, k_noise = jax.random.split(key)
    sig = draw_sigmas(k_sig, batch.shape[0], m)
    loss, _ = losses.mdsm(energy_of(params), k_noise, batch, sig, sigma0, m.weight_power)  # eq. 10
    return loss, {}

  temps = temperatures_from_config(s_cfg)
  thin = trajectory_thin(len(temps)) if images else 0

  def _draw(params, key, n):
    k0, k1 = jax.random.split(key)
    x0 = samplers.shard_chains(initial_state(k0, n, shape, s_cfg))  # chains split over the local devices
    score = fields.score_from_energy(energy_of(params, sample_net))
    x, aux = samplers.tempered_langevin(score, k1, x0, s_cfg.eps, temps, thin=thin,  # Sec. 4.2
                                        final_denoise_sigma=sigma0 if s_cfg.final_denoise else None)
    chex.assert_shape(x, (n,) + shape)
    out = {"x": x}
    if images:  # [stages + 1, 8, H, W, C]: every thin-th state of the first 8 chains, then the final x
      out["trajectory"] = jnp.concatenate([aux["trajectory"][:, :8], x[None, :8]])
    return out

  draw = jax.jit(_draw, static_argnums=(2,))

  def sample(params, key):
    """n_samples chains in batches of sampling.batch_size (one batch: the key itself; else fold_in(key, i));
    the trajectory comes from the first batch. Images are returned in [0, 1] (dataset.to_unit)."""
    n_total = s_cfg.n_samples
    starts = list(range(0, n_total, n_batch))
    outs = []
    for i, start in enumerate(starts):
      k = key if len(starts) == 1 else jax.random.fold_in(key, i)
      outs.append(jax.device_get(draw(params, k, min(n_batch, n_total - start))))
    res = {"x": np.concatenate([o["x"] for o in outs])}
    if images:
      res["trajectory"] = outs[0]["trajectory"]
      res = {k: np.asarray(dataset.to_unit(v)) for k, v in res.items()}
    return res

  def evaluate(params, key, samples):
    if images:
      return evaluate_images(params, key, samples)
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

  def evaluate_images(params, key, samples):
    """Feature FID/KID etc. exactly as NCSN's image evaluation, then the energy as an OOD score:
    auroc_noise / auroc_constant / auroc_interp, plus auroc_<name> for the prepared eval.ood_datasets."""
    from dsm_jax.methods.ncsn import evaluate_images as image_metrics  # noqa: PLC0415
    out = image_metrics(config, dataset, samples["x"])
    e = config.eval
    neg_energy = jax.jit(lambda x: -energy(params, x))  # higher = more in-distribution
    out.update(ood.ood_eval(neg_energy, dataset, jax.random.fold_in(key, 0x00D), n=int(e.get("ood_n", 1000)),
                            tfds_names=tuple(e.get("ood_datasets", ())), data_dir=getattr(dataset, "data_dir", None)))
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
    learned = lambda pts: -np.asarray(energy(params, jnp.asarray(pts)))
    panels = {"learned -E(x)": learned}
    if has:
      panels["true log p_sigma0(x)"] = lambda pts: np.asarray(dataset.log_prob(jnp.asarray(pts), sigma0))
    paths.append(viz.contours_2d(f"{sample_dir}/energy_contours.png", panels, lim))
    return paths

  return Method(name="mdsm", init_params=init_params, loss_fn=loss_fn, sample=sample,
                evaluate=evaluate, plot=plot)

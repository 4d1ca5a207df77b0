"""Denoising-EBM (Weili Zeng 2023, "How to Construct Energy for Images? Denoising Autoencoder Can Be
Energy Based Model", arXiv:2303.03887).

1. A noise-conditional denoising autoencoder r_phi(x~, sigma) = g_beta(f_alpha(x~, sigma)) (a U-Net,
   dsm_jax.models.unet_dae) whose bottleneck z = f_alpha(x~, sigma) is a semantic code, and a semantic
   decoder h_gamma(z) from codes back to images. S noise levels, geometric from sigma_max = 1 to
   sigma_min = 0.01 (S = 128 in the paper; model.num_scales).
2. Two energies built from the reconstruction error:
     texture energy  (eq. 7)  U_c(x, sigma) = || x - r_phi(x + eps, sigma) ||^2 / (2 sigma^2),
                              eps ~ N(0, sigma^2 I)
     semantic energy (eq. 8)  U_s(z, sigma) = || h(z) - r_phi(h(z) + eps, sigma) ||^2 / (2 sigma^2)
                                            = U_c(h_gamma(z), sigma)
3. Training, Algorithm 1, one call of the train step per iteration:
     (a) L steps (L = 3) of the DAE loss || r_phi(x~, sigma) - x ||^2 for phi and the decoder loss
         || h_gamma(f_alpha(x~, sigma)) - x ||^2 for gamma, per-example sigma from the ladder;
     (b) K steps of latent Langevin on U_s from z^0 ~ N(0, I) (step eta_1 = 0.1); x^0 = h_gamma(z^K);
         T steps of pixel Langevin on U_c from x^0 (step eta_2 = 0.01);
     (c) the contrastive (maximum-likelihood) updates
           gamma <- Adam(grad_gamma [ U_s(z_data) - U_s(z^K) ]),
           phi   <- Adam(grad_phi   [ U_c(x_data) - U_c(x^T) ]),
         all with Adam at 5e-5 (separate Adam moments for the DAE/decoder losses and the contrastive
         terms: init_opt).
4. Sampling: the same two-stage chain (latent Langevin, decode, pixel Langevin); for comparison,
   pixel-only Langevin on U_c from uniform noise with the same number of DAE evaluations (K + T);
   trajectory strips of both (the paper's Fig. 5).
5. Evaluation: feature-space FID/KID of both sample sets (dsm_jax.feature_metrics through
   ncsn.evaluate_images), and out-of-distribution AUROCs with the score -U_c(x, sigma = 0.05)
   (dsm_jax.ood: noise, constant, interpolations, tfds pairs from eval.ood_datasets).

Choices where the paper leaves room (config keys in brackets; tests/test_debm.py checks each):
  * Langevin step [sampling.noise_scale]: x <- x - eta/2 grad U(x) + noise_scale * sqrt(eta) w with
    w ~ N(0, I); noise_scale = 1 is unadjusted Langevin with step eta (the 'paper' convention of
    dsm_jax.samplers). The energy's own eps is drawn afresh at every step (a stochastic energy).
  * the latent step of the training chains [training.eta_latent, else sampling.eta_latent]: the sampler may
    take a smaller eta_1 than the chains whose samples the contrastive updates push up. On mnist5k the paper's
    eta_1 = 0.1 trains the better energy but, as the sampler's step, throws z off the decodable codes (FID 516
    vs 103 at 0.001); training with 0.001 as well gives FID 465 (docs/RESULTS.md, stop 19).
  * sigma in the chains [sampling.sigma_latent, sampling.sigma_pixel]: one fixed sigma per stage, the
    same during training and sampling, and the contrastive terms use the sigma of their chain, so each
    update is the maximum-likelihood gradient of the energy its chain samples. sigma_pixel = 0.1 keeps
    pixel Langevin with eta_2 = 0.01 stable: near the data the drift contracts by eta_2 / (2 sigma^2)
    = 0.5 per step (a sigma below sqrt(eta_2 / 2) = 0.071 would overshoot).
  * the data code in the semantic term: z_data = f_alpha(x_data + sigma_latent n, sigma_latent), the
    code of a noisy data point at the chain's sigma (the input h_gamma is trained to decode), with no
    gradient into alpha (the update is for gamma only).
  * the decoder loss trains gamma only: z = f_alpha(x~) enters h_gamma with stop_gradient.
  * DAE pre-training [training.dae_pretrain, default 0 = the paper]: the first iterations run only step (a),
    so the chains of (b) start on a DAE and a decoder that already reconstruct (make_train_step).
  * an energy regulariser [training.energy_reg, default 0 = the paper]: alpha (U_data^2 + U_sample^2)
    added to each contrastive term (contrastive_loss), which bounds the sample energy at ~1 / (2 alpha).
  * sums vs means: the contrastive terms are batch means (Adam is invariant to the constant factor);
    the data term uses the whole batch, the sample term the training.n_chains chains.
  * the L DAE minibatches of Algorithm 1 are the trainer's one batch split into L equal parts
    (training.batch_size must be divisible by training.dae_steps).
  * output: with sampling.final_denoise the last chain state is replaced by r_phi(x^T, sigma_pixel),
    the DAE's posterior mean (one extra network evaluation, as NCSNv2's final step).
  * pixel-only comparison: K + T pixel steps from U[data range] (each latent step also evaluates
    r_phi once, plus the cheaper h_gamma, which is not counted).
  * the sampler's latent start [sampling.latent_init]: 'normal' is the paper's z^0 ~ N(0, I);
    'data_gaussian' draws z^0 from the Gaussian fitted to the training data's codes
    f_alpha(x + sigma_latent n, sigma_latent) (latent_gaussian; sampling.latent_fit_n images), so the
    short latent chain starts where h_gamma was trained to decode. Training chains always use N(0, I).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dsm_jax import gaussian_base, samplers, sigmas, train, viz
from dsm_jax.methods.base import Method
from dsm_jax.models import get_model
from dsm_jax.models import unet_dae
from dsm_jax.validation import ConfigError, get, one_of, positive, require

Array = jax.Array
_LATENT_FIT_TAG = 0x1A7E
DAE_WEIGHTS = ("none", "inv_sigma2")
LATENT_INITS = ("normal", "data_gaussian")


@dataclasses.dataclass(frozen=True)
class Chains:
  """The two-stage chain: K latent steps on U_s, then T pixel steps on U_c (hashable: jit-static)."""
  latent_steps: int          # K
  pixel_steps: int           # T
  eta_latent: float = 0.1    # eta_1
  eta_pixel: float = 0.01    # eta_2
  sigma_latent: float = 0.1
  sigma_pixel: float = 0.1
  noise_scale: float = 1.0


# ====================================================================================== energies
def _sig(sigma, x: Array) -> Array:
  return jnp.broadcast_to(jnp.asarray(sigma, x.dtype), x.shape[:1])


def texture_energy(denoise_fn, key: Array, x: Array, sigma, eps: Array | None = None) -> Array:
  """Eq. 7: U_c(x, sigma) = || x - r(x + eps, sigma) ||^2 / (2 sigma^2), eps ~ N(0, sigma^2 I).

  denoise_fn(x~ [B, H, W, C], sigma [B]) -> r; sigma scalar or [B]; eps (optional) the unit noise
  [B, H, W, C] to use instead of a draw from key. Returns [B] (>= 0)."""
  chex.assert_rank(x, 4)
  sig = _sig(sigma, x)
  n = jax.random.normal(key, x.shape, x.dtype) if eps is None else eps
  chex.assert_equal_shape((n, x))
  r = denoise_fn(x + sig[:, None, None, None] * n, sig)
  chex.assert_equal_shape((r, x))
  return jnp.sum(jnp.square(x - r), axis=(1, 2, 3)) / (2.0 * sig ** 2)


def semantic_energy(denoise_fn, decode_h, key: Array, z: Array, sigma) -> Array:
  """Eq. 8: U_s(z, sigma) = || h(z) - r(h(z) + eps, sigma) ||^2 / (2 sigma^2) = U_c(h(z), sigma)."""
  chex.assert_rank(z, 2)
  return texture_energy(denoise_fn, key, decode_h(z), sigma)


def mean_texture_energy(denoise_fn, key: Array, x: Array, sigma, n_eps: int) -> Array:
  """U_c averaged over n_eps noise draws (a lower-variance OOD score); [B]."""
  keys = jax.random.split(key, n_eps)
  return jnp.mean(jax.lax.map(lambda k: texture_energy(denoise_fn, k, x, sigma), keys), axis=0)


# ====================================================================================== Langevin
def langevin(energy_fn, key: Array, x0: Array, eta: float, n_steps: int, noise_scale: float = 1.0,
             n_keep: int = 0):
  """x_{t+1} = x_t - eta/2 grad_x U(x_t) + noise_scale sqrt(eta) w_t, w_t ~ N(0, I), t < n_steps.

  energy_fn(x, key) -> [B]: the key draws the energy's own noise afresh at every step. Returns
  (x_T, traj [n_steps + 1, n_keep, ...] of the first n_keep chains including x_0, mean energy per
  step [n_steps] at the state the step started from)."""
  u_and_grad = jax.value_and_grad(lambda x, k: jnp.sum(energy_fn(x, k)))
  sqrt_eta = math.sqrt(eta) * noise_scale

  def step(x, k):
    k_e, k_w = jax.random.split(k)
    u, g = u_and_grad(x, k_e)
    x_new = x - 0.5 * eta * g + sqrt_eta * jax.random.normal(k_w, x.shape, x.dtype)
    return x_new, (x_new[:n_keep], u / x.shape[0])

  if n_steps == 0:
    return x0, x0[None, :n_keep], jnp.zeros((0,), x0.dtype)
  x, (traj, energies) = jax.lax.scan(step, x0, jax.random.split(key, n_steps))
  return x, jnp.concatenate([x0[None, :n_keep], traj]), energies


def two_stage_chain(denoise_fn, decode_h, key: Array, z0: Array, chains: Chains, n_keep: int = 0) -> dict:
  """Latent Langevin on U_s (K steps from z0), x^0 = h(z^K), pixel Langevin on U_c (T steps).
  Returns {'z': z^K, 'x0': x^0, 'x': x^T, 'z_traj', 'x_traj', 'energy_latent', 'energy_pixel'}."""
  k_lat, k_pix = jax.random.split(key)
  u_s = lambda z, k: semantic_energy(denoise_fn, decode_h, k, z, chains.sigma_latent)   # eq. 8
  z, z_traj, e_s = langevin(u_s, k_lat, z0, chains.eta_latent, chains.latent_steps, chains.noise_scale, n_keep)
  x0 = decode_h(z)
  u_c = lambda x, k: texture_energy(denoise_fn, k, x, chains.sigma_pixel)              # eq. 7
  x, x_traj, e_c = langevin(u_c, k_pix, x0, chains.eta_pixel, chains.pixel_steps, chains.noise_scale, n_keep)
  return {"z": z, "x0": x0, "x": x, "z_traj": z_traj, "x_traj": x_traj, "energy_latent": e_s,
          "energy_pixel": e_c}


def latent_gaussian(encode, key: Array, x: np.ndarray, sigma: float, batch_size: int = 250):
  """gaussian_base.fit of the codes f_alpha(x + sigma n, sigma) of the images x [N, H, W, C]."""
  codes = []
  for i, lo in enumerate(range(0, len(x), batch_size)):
    xb = jnp.asarray(x[lo:lo + batch_size])
    noisy = xb + sigma * jax.random.normal(jax.random.fold_in(key, i), xb.shape, xb.dtype)
    codes.append(np.asarray(encode(noisy, jnp.full((xb.shape[0],), sigma, xb.dtype))))
  return gaussian_base.fit(np.concatenate(codes))


def draw_latents(key: Array, n: int, latent_dim: int, base=None) -> Array:
  """z^0 [n, latent_dim]: N(0, I) (base None, the paper), else N(base.mean, base's covariance)."""
  eps = jax.random.normal(key, (n, latent_dim))
  if base is None:
    return eps
  return base.mean + (eps * jnp.sqrt(base.eigvals)) @ base.basis.T


# ====================================================================================== losses
def dae_and_decoder_loss(fns_of, params, key: Array, x: Array, ladder: Array, dae_weight: str = "none"):
  """Algorithm 1 (a), one minibatch: per-example sigma uniform over the ladder, x~ = x + sigma n;
  DAE loss || r_phi(x~, sigma) - x ||^2 (for phi; dae_weight 'inv_sigma2' divides by sigma^2) plus
  decoder loss || h_gamma(sg(f_alpha(x~, sigma))) - x ||^2 (for gamma only). Means over the batch.
  The two terms touch disjoint parameters, so one gradient of their sum gives both updates."""
  chex.assert_rank(x, 4)
  k_lvl, k_n = jax.random.split(key)
  sig = ladder[sigmas.sample_levels(k_lvl, x.shape[0], ladder.shape[0])]
  x_noisy = x + sig[:, None, None, None] * jax.random.normal(k_n, x.shape, x.dtype)
  f = fns_of(params)
  r, z = f.denoise_and_code(x_noisy, sig)
  per = jnp.sum(jnp.square(r - x), axis=(1, 2, 3))
  dae = jnp.mean(per / sig ** 2 if dae_weight == "inv_sigma2" else per)
  h = f.semantic_decode(jax.lax.stop_gradient(z))
  dec = jnp.mean(jnp.sum(jnp.square(h - x), axis=(1, 2, 3)))
  return dae + dec, {"dae_loss": dae, "decoder_loss": dec}


def contrastive_loss(fns_of, params, key: Array, x_data: Array, z_samples: Array, x_samples: Array,
                     chains: Chains, energy_reg: float = 0.0):
  """Algorithm 1 (c): [mean U_s(z_data) - mean U_s(z^K)] (gradient to gamma only: phi is held fixed
  in it) + [mean U_c(x_data) - mean U_c(x^T)] (gradient to phi; U_c has no gamma). Its gradient
  lowers the energy of data relative to the chains' samples.

  energy_reg = alpha > 0 adds alpha [mean U^2(data) + mean U^2(samples)] for each of U_s and U_c (Du &
  Mordatch 2019's energy regulariser; not in the paper). Without it nothing bounds the sample energy: the
  sample term's gradient is -1 per unit of U at every U, and short chains that never reach the data let
  it grow without limit (u_c_sample 791 -> 8.6e5 on mnist5k, RESULTS.md). With it the sample term's
  gradient vanishes at U = 1 / (2 alpha)."""
  k_code, k_s, k_c = jax.random.split(key, 3)
  sg_phi = {"phi": jax.lax.stop_gradient(params["phi"]), "gamma": params["gamma"]}
  f_sg = fns_of(sg_phi)
  den = fns_of(params).denoise
  n_d = x_data.shape[0]
  sl = _sig(chains.sigma_latent, x_data)
  x_code = x_data + sl[:, None, None, None] * jax.random.normal(k_code, x_data.shape, x_data.dtype)
  z_data = jax.lax.stop_gradient(f_sg.encode(x_code, sl))  # the data's code at the chain's sigma
  # data and samples go through the network together (one copy of it in the compiled step)
  z_all = jnp.concatenate([z_data, jax.lax.stop_gradient(z_samples)])
  us = semantic_energy(f_sg.denoise, f_sg.semantic_decode, k_s, z_all, chains.sigma_latent)                 # eq. 8
  x_all = jnp.concatenate([x_data, jax.lax.stop_gradient(x_samples)])
  uc = texture_energy(den, k_c, x_all, chains.sigma_pixel)                             # eq. 7
  us_d, us_s, uc_d, uc_s = us[:n_d], us[n_d:], uc[:n_d], uc[n_d:]
  cd_s = jnp.mean(us_d) - jnp.mean(us_s)
  cd_c = jnp.mean(uc_d) - jnp.mean(uc_s)
  reg = energy_reg * sum(jnp.mean(jnp.square(u)) for u in (us_d, us_s, uc_d, uc_s))
  aux = {"energy_reg": reg, "cd_semantic": cd_s, "cd_texture": cd_c, "u_s_data": jnp.mean(us_d), "u_s_sample": jnp.mean(us_s),
         "u_c_data": jnp.mean(uc_d), "u_c_sample": jnp.mean(uc_s)}
  return cd_s + cd_c + reg, aux


# ====================================================================================== Algorithm 1
def _tree_finite(tree) -> Array:
  leaves = jax.tree_util.tree_leaves(tree)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(l)) for l in leaves])) if leaves else jnp.asarray(True)


def init_opt(optimizer, params) -> dict:
  """One optimizer state per objective and network: {'dae', 'cd'} x {'phi' (the DAE), 'gamma' (h_gamma)}.

  The DAE/decoder losses and the contrastive terms keep separate Adam moments. With one shared state the
  contrastive gradients (~20x the DAE's in norm on mnist5k: grad_norm_cd 1.1e5 vs grad_norm 5e3 at step
  50) fill Adam's second moment and shrink every DAE step by about that factor."""
  one = lambda: {"phi": optimizer.init(params["phi"]), "gamma": optimizer.init(params["gamma"])}
  return {"dae": one(), "cd": one()}


def apply_updates(optimizer, grads, params, opt_state):
  """One optimizer update of each network with its own state: ({'phi', 'gamma'} params, states)."""
  new_p, new_o = {}, {}
  for name in ("phi", "gamma"):
    up, new_o[name] = optimizer.update(grads[name], opt_state[name], params[name])
    new_p[name] = optax.apply_updates(params[name], up)
  return new_p, new_o


def make_train_step(fns_of, ladder: Array, optimizer, chains: Chains, dae_steps: int, n_chains: int,
                    latent_dim: int, ema_rate: float, dae_weight: str = "none", energy_reg: float = 0.0,
                    dae_pretrain: int = 0):
  """(state, batch [B, H, W, C]) -> (state, metrics): one iteration of Algorithm 1, jit-able.

  dae_pretrain = P > 0: the first P iterations (state['step'] < P) run only (a), the L DAE / decoder steps;
  (b) and (c) start at iteration P (their metrics are NaN before it; metrics['algorithm1'] is 1 once they run).

  Follows train.default_train_step's guard: if any loss or gradient of the iteration is non-finite
  (including chains that diverged), params, EMA and both optimizer states stay as they were, the step
  is counted in n_skipped and metrics['nonfinite'] = 1."""
  L = int(dae_steps)
  P = int(dae_pretrain)

  def step_fn(state, batch):
    chex.assert_rank(batch, 4)
    b = batch.shape[0]
    rng = jax.random.fold_in(state["key"], state["step"])
    k_dae, k_z0, k_chain, k_cd = jax.random.split(rng, 4)
    params0, opt0 = state["params"], state["opt_state"]

    # (a) L DAE / decoder steps on the batch split into L minibatches
    mbs = batch.reshape((L, b // L) + batch.shape[1:])

    def dae_step(carry, inp):
      params, opt, ok = carry
      mb, k = inp
      (loss, aux), g = jax.value_and_grad(
          lambda p: dae_and_decoder_loss(fns_of, p, k, mb, ladder, dae_weight), has_aux=True)(params)
      params, opt = apply_updates(optimizer, g, params, opt)
      ok = ok & jnp.isfinite(loss) & _tree_finite(g)
      return (params, opt, ok), (aux, optax.tree.norm(g))

    (params, opt_dae, ok), (dae_aux, dae_gn) = jax.lax.scan(
        dae_step, (params0, opt0["dae"], jnp.asarray(True)), (mbs, jax.random.split(k_dae, L)))

    def chains_and_contrast(params):
      # (b) K latent Langevin steps on U_s from z ~ N(0, I), x^0 = h(z^K), T pixel steps on U_c
      f = fns_of(jax.lax.stop_gradient(params))
      z0 = jax.random.normal(k_z0, (n_chains, latent_dim), batch.dtype)
      ch = two_stage_chain(f.denoise, f.semantic_decode, k_chain, z0, chains)
      z_k, x_t = jax.lax.stop_gradient(ch["z"]), jax.lax.stop_gradient(ch["x"])

      # (c) contrastive updates: gamma on U_s(z_data) - U_s(z^K), phi on U_c(x_data) - U_c(x^T)
      (cd, cd_aux), g = jax.value_and_grad(
          lambda p: contrastive_loss(fns_of, p, k_cd, batch, z_k, x_t, chains, energy_reg),
          has_aux=True)(params)
      params, opt_cd = apply_updates(optimizer, g, params, opt0["cd"])  # its own Adam moments (init_opt)
      ok_cd = jnp.isfinite(cd) & _tree_finite(g)
      m = {"grad_norm_cd": optax.tree.norm(g),
           "energy_latent_start": ch["energy_latent"][0] if chains.latent_steps else jnp.asarray(jnp.nan),
           "energy_pixel_start": ch["energy_pixel"][0] if chains.pixel_steps else jnp.asarray(jnp.nan),
           "algorithm1": jnp.asarray(1.0), **cd_aux}
      return params, opt_cd, ok_cd, m

    if P > 0:  # DAE / decoder pre-training: (b) and (c) wait until iteration P
      def skip(params):
        shapes = jax.eval_shape(chains_and_contrast, params)[3]
        m = jax.tree_util.tree_map(lambda a: jnp.full(a.shape, jnp.nan, a.dtype), shapes)
        return params, opt0["cd"], jnp.asarray(True), {**m, "algorithm1": jnp.asarray(0.0)}
      params, opt_cd, ok_cd, cd_metrics = jax.lax.cond(state["step"] >= P, chains_and_contrast, skip, params)
    else:
      params, opt_cd, ok_cd, cd_metrics = chains_and_contrast(params)
    ok = ok & ok_cd
    opt = {"dae": opt_dae, "cd": opt_cd}

    new_ema = train.ema_update(state["ema_params"], params, ema_rate, state["step"] + 1)
    keep = lambda new, old: jax.tree_util.tree_map(lambda a, c: jnp.where(ok, a, c), new, old)
    new_state = {
        "step": state["step"] + 1,
        "params": keep(params, params0),
        "ema_params": keep(new_ema, state["ema_params"]),
        "opt_state": keep(opt, opt0),
        "key": state["key"],
        "n_skipped": state["n_skipped"] + (~ok).astype(jnp.int32),
    }
    metrics = {"loss": jnp.mean(dae_aux["dae_loss"]), "nonfinite": (~ok).astype(jnp.float32),
               "decoder_loss": jnp.mean(dae_aux["decoder_loss"]), "dae_loss_last": dae_aux["dae_loss"][-1],
               "grad_norm": jnp.mean(dae_gn), **cd_metrics}
    return new_state, metrics

  return step_fn


# ====================================================================================== config
def ladder_from_config(config) -> Array:
  """S noise levels, geometric from model.sigma_max to model.sigma_min: NCSN's ladder and its checks."""
  from dsm_jax.methods.ncsn import ladder_from_config as ncsn_ladder  # noqa: PLC0415
  return ncsn_ladder(config)


def _chains(config, section: str) -> Chains:
  """The chain of config[section] ('training' or 'sampling'): its own K and T; eta_1 from training.eta_latent
  for the training chains when that key is set, else (and always for sampling) from sampling.eta_latent; the
  other settings from sampling."""
  s = config.sampling
  c = config[section]
  return Chains(latent_steps=int(c.latent_steps), pixel_steps=int(c.pixel_steps),
                eta_latent=float(c.get("eta_latent", s.eta_latent)), eta_pixel=float(s.eta_pixel),
                sigma_latent=float(s.sigma_latent), sigma_pixel=float(s.sigma_pixel),
                noise_scale=float(s.noise_scale))


def validate(config, shape) -> None:
  require(len(shape) == 3, "data.dataset",
          f"debm models images [H, W, C]; {config.data.dataset!r} gives examples of shape {tuple(shape)}")
  ladder_from_config(config)
  one_of(config, "model.dae_weight", DAE_WEIGHTS)
  one_of(config, "sampling.method", ("two_stage",))
  if "latent_init" in config.sampling:
    one_of(config, "sampling.latent_init", LATENT_INITS)
    if config.sampling.latent_init == "data_gaussian":
      positive(config, "sampling.latent_fit_n", integer=True)
      require(config.sampling.latent_fit_n >= 2, "sampling.latent_fit_n",
              f"must be >= 2 to fit a Gaussian, got {config.sampling.latent_fit_n}")
  t, s, e = config.training, config.sampling, config.eval
  positive(config, "training.dae_steps", integer=True)
  positive(config, "training.batch_size", integer=True)
  require(t.batch_size % t.dae_steps == 0, "training.batch_size",
          f"{t.batch_size} is not divisible by training.dae_steps = {t.dae_steps} (the batch is split into "
          "the L DAE minibatches of Algorithm 1)")
  positive(config, "training.n_chains", integer=True, allow_zero=True)
  if "energy_reg" in t:
    positive(config, "training.energy_reg", allow_zero=True)
  if "dae_pretrain" in t:
    positive(config, "training.dae_pretrain", integer=True, allow_zero=True)
  for sec in ("training", "sampling"):
    positive(config, f"{sec}.latent_steps", integer=True, allow_zero=True)
    positive(config, f"{sec}.pixel_steps", integer=True, allow_zero=True)
  require(s.latent_steps + s.pixel_steps > 0, "sampling.pixel_steps",
          "sampling.latent_steps + sampling.pixel_steps must be > 0")
  one_of(config, "training.schedule", ("constant",))  # L + 1 optimizer updates per step (see README)
  positive(config, "training.warmup", integer=True, allow_zero=True)
  require(t.warmup == 0, "training.warmup",
          f"must be 0 for debm (each step makes training.dae_steps + 1 optimizer updates), got {t.warmup}")
  for k in ("eta_latent", "eta_pixel", "sigma_latent", "sigma_pixel"):
    positive(config, f"sampling.{k}")
  if "eta_latent" in t:
    positive(config, "training.eta_latent")
  positive(config, "sampling.noise_scale", allow_zero=True)
  positive(config, "sampling.n_samples", integer=True)
  positive(config, "sampling.batch_size", integer=True, allow_zero=True)
  positive(config, "sampling.n_traj", integer=True)
  for k in ("final_denoise", "pixel_only"):
    require(isinstance(get(config, f"sampling.{k}"), bool), f"sampling.{k}",
            f"must be True or False, got {s[k]!r}")
  positive(config, "eval.ood_sigma")
  positive(config, "eval.ood_n", integer=True)
  positive(config, "eval.ood_n_eps", integer=True)
  positive(config, "eval.ood_batch_size", integer=True)
  names = get(config, "eval.ood_datasets")
  require(isinstance(names, (tuple, list)) and all(isinstance(n, str) for n in names), "eval.ood_datasets",
          f"must be a tuple of tfds names, e.g. ('svhn_cropped',), got {names!r}")


# ====================================================================================== the method
def build(config, dataset) -> Method:
  shape = tuple(int(d) for d in dataset.shape)
  validate(config, shape)
  ladder = ladder_from_config(config)
  net = get_model(config.model, shape)
  fns_of = functools.partial(unet_dae.functions, net)
  latent_dim = int(config.model.latent_dim)
  t, s_cfg, e_cfg = config.training, config.sampling, config.eval
  train_chains, sample_chains = _chains(config, "training"), _chains(config, "sampling")
  n_chains = int(t.n_chains) or t.batch_size // t.dae_steps
  n_batch = int(s_cfg.batch_size) or int(s_cfg.n_samples)
  n_keep = int(s_cfg.n_traj)
  lo, hi = (-1.0, 1.0) if getattr(dataset, "scale", "01") == "-11" else (0.0, 1.0)

  def init_params(key):
    return unet_dae.split(net.init(key, jnp.zeros((1,) + shape), jnp.ones((1,))))

  def train_step(optimizer):
    return make_train_step(fns_of, ladder, optimizer, train_chains, t.dae_steps, n_chains, latent_dim,
                           t.ema_rate, config.model.dae_weight, float(t.get("energy_reg", 0.0)),
                           int(t.get("dae_pretrain", 0)))

  # ---------------------------------------------------------------- sampling
  latent_init = s_cfg.get("latent_init", "normal")

  def _draw(params, key, n, base=None):
    f = fns_of(params)
    den, dec_h = f.denoise, f.semantic_decode
    k_z, k_2s, k_x, k_po = jax.random.split(key, 4)
    keep = min(n_keep, n)
    z0 = samplers.shard_chains(draw_latents(k_z, n, latent_dim, base))  # chains split over the local devices
    ch = two_stage_chain(den, dec_h, k_2s, z0, sample_chains, keep)
    out = {"x": ch["x"], "semantic": ch["x0"], "z_traj": ch["z_traj"], "x_traj": ch["x_traj"]}
    if s_cfg.pixel_only:  # the same number of DAE evaluations: K + T pixel steps from noise
      x0 = samplers.shard_chains(jax.random.uniform(k_x, (n,) + shape, minval=lo, maxval=hi))
      u_c = lambda x, k: texture_energy(den, k, x, sample_chains.sigma_pixel)
      n_po = sample_chains.latent_steps + sample_chains.pixel_steps
      out["pixel_only"], out["po_traj"], _ = langevin(u_c, k_po, x0, sample_chains.eta_pixel, n_po,
                                                       sample_chains.noise_scale, keep)
    if s_cfg.final_denoise:  # r_phi(x^T, sigma_pixel): the DAE's posterior mean
      sig = jnp.full((n,), sample_chains.sigma_pixel)
      for k in ("x", "pixel_only"):
        if k in out:
          out[k + "_last"] = out[k]
          out[k] = den(out[k], sig)
    return out

  draw = jax.jit(_draw, static_argnums=(2,))
  decode_h = jax.jit(lambda p, z: fns_of(p).semantic_decode(z))

  def _columns(n_total: int, n_cols: int) -> np.ndarray:
    return np.unique(np.linspace(0, n_total, min(n_cols, n_total + 1)).round().astype(int))

  encode = jax.jit(lambda p, x, sig: fns_of(p).encode(x, sig))

  def sample(params, key):
    base = None
    if latent_init == "data_gaussian":  # z^0 from the Gaussian of the training codes (a key apart from the chains')
      x_fit = np.asarray(dataset.train_images()[:int(s_cfg.latent_fit_n)], np.float32)
      base = latent_gaussian(lambda x, sig: encode(params, x, sig), jax.random.fold_in(key, _LATENT_FIT_TAG),
                             x_fit, sample_chains.sigma_latent)
    outs = []
    for i, start in enumerate(range(0, s_cfg.n_samples, n_batch)):
      n = min(n_batch, s_cfg.n_samples - start)
      outs.append(jax.device_get(draw(params, jax.random.fold_in(key, i), n, base)))
    first = outs[0]
    res = {k: np.concatenate([o[k] for o in outs]) for k in ("x", "semantic", "pixel_only") if k in first}
    to_unit = lambda a: np.asarray(dataset.to_unit(np.asarray(a)), np.float32)
    res = {k: to_unit(v) for k, v in res.items()}
    # Fig. 5 strips: h(z) along the latent chain, then x along the pixel chain, then the output
    zc = _columns(sample_chains.latent_steps, 4)
    lat = [np.asarray(decode_h(params, first["z_traj"][j])) for j in zc]
    xc = _columns(sample_chains.pixel_steps, 7)[1:] if sample_chains.pixel_steps else []
    strip = lat + [first["x_traj"][j] for j in xc]
    if s_cfg.final_denoise:
      strip.append(first["x"][:n_keep])
    res["trajectory"] = to_unit(np.stack(strip))
    if "po_traj" in first:
      pc = _columns(sample_chains.latent_steps + sample_chains.pixel_steps, 10)
      strip = [first["po_traj"][j] for j in pc]
      if s_cfg.final_denoise:
        strip.append(first["pixel_only"][:n_keep])
      res["trajectory_pixel_only"] = to_unit(np.stack(strip))
    return res

  # ---------------------------------------------------------------- evaluation
  ood_energy = jax.jit(lambda p, k, x: mean_texture_energy(fns_of(p).denoise, k, x,
                                                           float(e_cfg.ood_sigma), int(e_cfg.ood_n_eps)))

  def evaluate(params, key, samples):
    from dsm_jax import ood
    from dsm_jax.methods.ncsn import evaluate_images
    out = dict(evaluate_images(config, dataset, samples["x"]))  # two-stage: the main set
    for name in ("pixel_only", "semantic"):
      if name in samples:
        other = evaluate_images(config, dataset, samples[name])
        for k in ("fid_feat", "kid_feat", "nn_dist_mean", "n_nonfinite_eval", "fid_inception", "class_confident_frac",
                  "class_tv"):
          out[f"{name}_{k}"] = other.get(k)
    k_eps, k_sets = jax.random.split(key)
    score = lambda x: -np.asarray(ood_energy(params, k_eps, jnp.asarray(x)))  # higher = in-distribution
    out.update(ood.ood_eval(score, dataset, k_sets, n=int(e_cfg.ood_n), tfds_names=tuple(e_cfg.ood_datasets),
                            data_dir=config.data.data_dir or None, batch_size=int(e_cfg.ood_batch_size)))
    out["ood_sigma"] = float(e_cfg.ood_sigma)
    return out

  def plot(samples, params, sample_dir):
    paths = [viz.image_grid(os.path.join(sample_dir, "samples.png"), samples["x"][:64])]
    for name in ("pixel_only", "semantic"):
      if name in samples:
        paths.append(viz.image_grid(os.path.join(sample_dir, f"{name}.png"), samples[name][:64]))
    for name in ("trajectory", "trajectory_pixel_only"):
      if name in samples:
        paths.append(viz.trajectory_strip(os.path.join(sample_dir, f"{name}.png"), samples[name], n_keep))
    return paths

  return Method(name="debm", init_params=init_params, train_step=train_step,
                init_opt=init_opt, sample=sample, evaluate=evaluate, plot=plot)

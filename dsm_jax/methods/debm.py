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
         T steps of pixel Langevin on U_c from x^0 (step eta_2 = 0.01); each step (eqs. 6, 15, 16; Alg. 1
         lines 8 and 12) is  x <- x - eta grad U(x) + sqrt(2 eta) e,  e ~ N(0, I);
     (c) the contrastive (maximum-likelihood) updates (Alg. 1 lines 14-17), each example at its own sigma_i
         from the ladder,
           gamma <- Adam(grad_gamma [ U_s(z_data, sigma_i) - U_s(z^K, sigma_i) ]),
           phi   <- Adam(grad_phi   [ U_c(x_data, sigma_i) - U_c(x^T, sigma_i) ]),
         all with Adam at 5e-5 (separate Adam moments for the DAE/decoder losses and the contrastive
         terms: the optimizer slots 'dae' and 'cd' of each network).
4. Sampling: the same two-stage chain (latent Langevin, decode, pixel Langevin); for comparison, the paper's
   pixel-only baseline (Fig. 5: pixel Langevin on U_c from N(0, I) for hundreds of steps,
   sampling.pixel_only_steps) and pixel-only Langevin at the two-stage chain's cost (K + T steps);
   trajectory strips of the two-stage and of the Fig. 5 chain.
5. Evaluation: the shared image metrics of every sample set (dsm_jax/eval/images.py), and out-of-distribution
   AUROCs with the score -U_c(x, sigma = 0.05) (dsm_jax/eval/ood.py: noise, constant, interpolations, tfds
   pairs from eval.ood_datasets), and the same AUROCs at the pixel chain's sigma (keys 'chain_sigma_*'), a
   level the contrastive terms train under either training.contrastive_sigma.

The paper's rules are the defaults; each alternative is a config value (config keys in brackets;
tests/test_debm.py checks each):
  * the Langevin step [training.step_rule, sampling.step_rule]: 'paper' is the rule above; 'half' is
    x - eta/2 grad U + sqrt(eta) e, the same dynamics at half the step (STEP_RULES). noise_scale multiplies
    the noise term (1: unadjusted Langevin). The energy's own eps is drawn afresh at every step (a
    stochastic energy).
  * the contrastive terms' noise level [training.contrastive_sigma]: 'per_example' is Alg. 1's sigma_i;
    'chain' gives every term the sigma of the chain that drew its samples (model.sigma_latent for U_s,
    model.sigma_pixel for U_c), so each update is the maximum-likelihood gradient of exactly the energy its
    chain samples.
  * the chains and the sampler have their own settings [training.latent_steps, pixel_steps, eta_latent,
    eta_pixel; the same in sampling]: the sampler may take a smaller eta_1 than the chains whose samples
    the contrastive updates push up (configs/debm_mnist5k.py measures it).
  * sigma in the chains [model.sigma_latent, model.sigma_pixel]: one fixed sigma per stage, the same in
    training and sampling. sigma_pixel = 0.1 keeps pixel Langevin with eta_2 = 0.01 stable: near the data
    the drift moves x by eta_2 / sigma^2 = 1 times its distance to r_phi(x) (to the DAE's output; a sigma
    below sqrt(eta_2 / 2) = 0.071 would more than double it and diverge).
  * the data code in the semantic term: z_data = f_alpha(x_data + sigma n, sigma), the code of a noisy data
    point at its sigma (the input h_gamma is trained to decode), with no gradient into alpha (the update is
    for gamma only).
  * the decoder loss trains gamma only: z = f_alpha(x~) enters h_gamma with stop_gradient.
  * DAE pre-training [training.dae_pretrain, default 0 = the paper]: the first iterations run only step (a),
    so the chains of (b) start on a DAE and a decoder that already reconstruct (make_step).
  * an energy regulariser [training.energy_reg, default 0 = the paper]: alpha (U_data^2 + U_sample^2)
    added to each contrastive term (contrastive_loss), which bounds the sample energy at ~1 / (2 alpha).
  * sums vs means: the contrastive terms are batch means (Adam is invariant to the constant factor);
    the data term uses the whole batch, the sample term the training.n_chains chains.
  * the L DAE minibatches of Algorithm 1 are the trainer's one batch split into L equal parts
    (training.batch_size must be divisible by training.dae_steps).
  * output: with sampling.final_denoise the last chain state is replaced by r_phi(x^T, sigma_pixel),
    the DAE's posterior mean (one extra network evaluation, as NCSNv2's final step).
  * the equal-cost pixel-only comparison: K + T pixel steps from U[data range] (each latent step also
    evaluates r_phi once, plus the cheaper h_gamma, which is not counted).
  * the sampler's latent start [sampling.latent_init]: 'normal' is the paper's z^0 ~ N(0, I);
    'data_gaussian' draws z^0 from the Gaussian fitted to the training data's codes
    f_alpha(x + sigma_latent n, sigma_latent) (latent_gaussian; sampling.latent_fit_n images), so the
    short latent chain starts where h_gamma was trained to decode. Training chains always use N(0, I).
"""
from __future__ import annotations

import dataclasses
import functools
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dsm_jax import gaussian_base, likelihood, models, samplers, sampling, sigmas, viz
from dsm_jax.eval import images as image_eval
from dsm_jax.eval import ood
from dsm_jax.methods.base import Method, register
from dsm_jax.models import unet_dae
from dsm_jax.validation import one_of, positive, require

Array = jax.Array
_LATENT_FIT_TAG = 0x1A7E
_PIXEL_ONLY_TAG = 0x9B0
DAE_WEIGHTS = ("none", "inv_sigma2")
LATENT_INITS = ("normal", "data_gaussian")
CONTRASTIVE_SIGMAS = ("per_example", "chain")
# This paper's Langevin rule and the half-step variant, as dsm_jax.samplers' conventions (named after NCSN's):
#   'paper' (eqs. 6, 15, 16; Alg. 1 lines 8 and 12): x - eta grad U + sqrt(2 eta) e = samplers' 'code' form, a = eta
#   'half': x - eta/2 grad U + sqrt(eta) e, the same rule at half the step = samplers' 'paper' form, alpha = eta
STEP_RULES = {"paper": "code", "half": "paper"}


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
  step_rule: str = "paper"   # STEP_RULES

  @property
  def convention(self) -> str:
    return STEP_RULES[self.step_rule]


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


# ====================================================================================== the two-stage chain
def two_stage_chain(denoise_fn, decode_h, key: Array, z0: Array, chains: Chains, n_keep: int = 0) -> dict:
  """Latent Langevin on U_s (K steps from z0), x^0 = h(z^K), pixel Langevin on U_c (T steps).
  Returns {'z': z^K, 'x0': x^0, 'x': x^T, 'z_traj', 'x_traj', 'energy_latent', 'energy_pixel'}."""
  k_lat, k_pix = jax.random.split(key)
  u_s = lambda z, k: semantic_energy(denoise_fn, decode_h, k, z, chains.sigma_latent)   # eq. 8
  z, aux_s = samplers.energy_langevin(u_s, k_lat, z0, chains.eta_latent, chains.latent_steps,   # eq. 15
                                      chains.convention, chains.noise_scale, n_keep)
  x0 = decode_h(z)
  u_c = lambda x, k: texture_energy(denoise_fn, k, x, chains.sigma_pixel)              # eq. 7
  x, aux_c = samplers.energy_langevin(u_c, k_pix, x0, chains.eta_pixel, chains.pixel_steps,       # eq. 16
                                      chains.convention, chains.noise_scale, n_keep)
  return {"z": z, "x0": x0, "x": x, "z_traj": aux_s["trajectory"], "x_traj": aux_c["trajectory"],
          "energy_latent": aux_s["energy"], "energy_pixel": aux_c["energy"]}


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
                     chains: Chains, energy_reg: float = 0.0, ladder=None):
  """Algorithm 1 (c), lines 14-17: [mean U_s(z_data) - mean U_s(z^K)] (gradient to gamma only: phi is held fixed
  in it) + [mean U_c(x_data) - mean U_c(x^T)] (gradient to phi; U_c has no gamma). Its gradient
  lowers the energy of data relative to the chains' samples.

  The noise level of each energy: with a `ladder`, every example (data and chain sample alike) gets its own
  sigma_i drawn uniformly from it, as in Alg. 1 (the energy is multi-scale, trained at every level); without,
  the sigma of the chain that drew the samples (chains.sigma_latent for U_s, sigma_pixel for U_c), which makes
  each update the maximum-likelihood gradient of exactly the energy its chain samples. The data's code is
  z_data = f_alpha(x_data + sigma n, sigma) at that example's sigma.

  energy_reg = alpha > 0 adds alpha [mean U^2(data) + mean U^2(samples)] for each of U_s and U_c (Du &
  Mordatch 2019's energy regulariser; not in the paper). Without it nothing bounds the sample energy: the
  sample term's gradient is -1 per unit of U at every U, and short chains that never reach the data let
  it grow without limit (u_c_sample 791 -> 8.6e5 on mnist5k). With it the sample term's gradient vanishes at
  U = 1 / (2 alpha)."""
  k_code, k_s, k_c, k_lvl = jax.random.split(key, 4)
  sg_phi = {"phi": jax.lax.stop_gradient(params["phi"]), "gamma": params["gamma"]}
  f_sg = fns_of(sg_phi)
  den = fns_of(params).denoise
  n_d, n_s = x_data.shape[0], x_samples.shape[0]
  if ladder is None:
    s_lat = jnp.full((n_d + n_s,), chains.sigma_latent, x_data.dtype)
    s_pix = jnp.full((n_d + n_s,), chains.sigma_pixel, x_data.dtype)
  else:  # sigma_i per example (Alg. 1 lines 14-17)
    k1, k2 = jax.random.split(k_lvl)
    s_lat = jnp.asarray(ladder, x_data.dtype)[sigmas.sample_levels(k1, n_d + n_s, len(ladder))]
    s_pix = jnp.asarray(ladder, x_data.dtype)[sigmas.sample_levels(k2, n_d + n_s, len(ladder))]
  sl = s_lat[:n_d]
  x_code = x_data + sl[:, None, None, None] * jax.random.normal(k_code, x_data.shape, x_data.dtype)
  z_data = jax.lax.stop_gradient(f_sg.encode(x_code, sl))  # the data's code at its sigma
  # data and samples go through the network together (one copy of it in the compiled step)
  z_all = jnp.concatenate([z_data, jax.lax.stop_gradient(z_samples)])
  us = semantic_energy(f_sg.denoise, f_sg.semantic_decode, k_s, z_all, s_lat)                          # eq. 8
  x_all = jnp.concatenate([x_data, jax.lax.stop_gradient(x_samples)])
  uc = texture_energy(den, k_c, x_all, s_pix)                                                     # eq. 7
  us_d, us_s, uc_d, uc_s = us[:n_d], us[n_d:], uc[:n_d], uc[n_d:]
  cd_s = jnp.mean(us_d) - jnp.mean(us_s)
  cd_c = jnp.mean(uc_d) - jnp.mean(uc_s)
  reg = energy_reg * sum(jnp.mean(jnp.square(u)) for u in (us_d, us_s, uc_d, uc_s))
  aux = {"energy_reg": reg, "cd_semantic": cd_s, "cd_texture": cd_c, "u_s_data": jnp.mean(us_d),
         "u_s_sample": jnp.mean(us_s), "u_c_data": jnp.mean(uc_d), "u_c_sample": jnp.mean(uc_s)}
  return cd_s + cd_c + reg, aux


# ====================================================================================== Algorithm 1
NETS = ("phi", "gamma")   # the DAE r_phi = g_beta o f_alpha, and the semantic decoder h_gamma
SLOTS = ("dae", "cd")     # separate optimizer moments for the DAE / decoder losses and the contrastive terms


def apply_updates(nets: dict, grads: dict, slot: str) -> dict:
  """One optimizer update of phi and gamma with the slot's moments.

  The DAE/decoder losses and the contrastive terms keep separate Adam moments. With one shared state the
  contrastive gradients (~20x the DAE's in norm on mnist5k: grad_norm_cd 1.1e5 vs grad_norm 5e3 at step 50) fill
  Adam's second moment and shrink every DAE step by about that factor."""
  return {**nets, **{k: nets[k].apply_gradients(grads[k], slot=slot) for k in NETS}}


def make_step(fns_of, ladder: Array, chains: Chains, dae_steps: int, n_chains: int, latent_dim: int,
              dae_weight: str = "none", energy_reg: float = 0.0, dae_pretrain: int = 0,
              contrastive_sigma: str = "per_example"):
  """(nets, key, batch [B, H, W, C], t) -> (nets, metrics): iteration t of Algorithm 1, jit-able.

  contrastive_sigma: 'per_example' (Alg. 1: every example's own sigma_i from the ladder) or 'chain' (the chains'
  fixed sigmas; contrastive_loss).

  dae_pretrain = P > 0: the first P iterations (t < P) run only (a), the L DAE / decoder steps; (b) and (c) start
  at iteration P (their metrics are NaN before it; metrics['algorithm1'] is 1 once they run)."""
  L, P = int(dae_steps), int(dae_pretrain)

  def step(nets, key, batch, t):
    chex.assert_rank(batch, 4)
    b = batch.shape[0]
    k_dae, k_z0, k_chain, k_cd = jax.random.split(key, 4)
    params_of = lambda n: {k: n[k].params for k in NETS}

    def dae_step(n, inp):  # (a) L DAE / decoder steps on the batch split into L minibatches
      mb, k = inp
      (loss, aux), g = jax.value_and_grad(
          lambda p: dae_and_decoder_loss(fns_of, p, k, mb, ladder, dae_weight), has_aux=True)(params_of(n))
      return apply_updates(n, g, "dae"), (aux, optax.tree.norm(g))

    mbs = batch.reshape((L, b // L) + batch.shape[1:])
    nets, (dae_aux, dae_gn) = jax.lax.scan(dae_step, nets, (mbs, jax.random.split(k_dae, L)))

    def chains_and_contrast(n):
      # (b) K latent Langevin steps on U_s from z ~ N(0, I), x^0 = h(z^K), T pixel steps on U_c
      f = fns_of(jax.lax.stop_gradient(params_of(n)))
      z0 = jax.random.normal(k_z0, (n_chains, latent_dim), batch.dtype)
      ch = two_stage_chain(f.denoise, f.semantic_decode, k_chain, z0, chains)
      z_k, x_t = jax.lax.stop_gradient(ch["z"]), jax.lax.stop_gradient(ch["x"])
      # (c) contrastive updates: gamma on U_s(z_data) - U_s(z^K), phi on U_c(x_data) - U_c(x^T)
      (cd, cd_aux), g = jax.value_and_grad(
          lambda p: contrastive_loss(fns_of, p, k_cd, batch, z_k, x_t, chains, energy_reg,
                                     ladder if contrastive_sigma == "per_example" else None),
          has_aux=True)(params_of(n))
      m = {"grad_norm_cd": optax.tree.norm(g),
           "energy_latent_start": ch["energy_latent"][0] if chains.latent_steps else jnp.asarray(jnp.nan),
           "energy_pixel_start": ch["energy_pixel"][0] if chains.pixel_steps else jnp.asarray(jnp.nan),
           "algorithm1": jnp.asarray(1.0), **cd_aux}
      return apply_updates(n, g, "cd"), m

    if P > 0:  # DAE / decoder pre-training: (b) and (c) wait until iteration P
      def skip(n):
        shapes = jax.eval_shape(chains_and_contrast, n)[1]
        m = jax.tree_util.tree_map(lambda a: jnp.full(a.shape, jnp.nan, a.dtype), shapes)
        return n, {**m, "algorithm1": jnp.asarray(0.0)}
      nets, cd_metrics = jax.lax.cond(t >= P, chains_and_contrast, skip, nets)
    else:
      nets, cd_metrics = chains_and_contrast(nets)
    metrics = {"loss": jnp.mean(dae_aux["dae_loss"]), "decoder_loss": jnp.mean(dae_aux["decoder_loss"]),
               "dae_loss_last": dae_aux["dae_loss"][-1], "grad_norm": jnp.mean(dae_gn), **cd_metrics}
    return nets, metrics

  return step


# ====================================================================================== config
def chains_of(config, section: str) -> Chains:
  """The chain of config.<section> ('training' or 'sampling'): its K, T, eta_1, eta_2 and noise scale, with the
  energies' sigmas (model.sigma_latent, model.sigma_pixel)."""
  c, m = config[section], config.model
  return Chains(latent_steps=int(c.latent_steps), pixel_steps=int(c.pixel_steps), eta_latent=float(c.eta_latent),
                eta_pixel=float(c.eta_pixel), sigma_latent=float(m.sigma_latent), sigma_pixel=float(m.sigma_pixel),
                noise_scale=float(c.noise_scale), step_rule=c.step_rule)


def _chain_keys(latent_steps: int, pixel_steps: int) -> dict:
  return {"latent_steps": latent_steps,  # K latent Langevin steps ...
          "pixel_steps": pixel_steps,    # ... and T pixel steps
          "eta_latent": 0.1,             # eta_1
          "eta_pixel": 0.01,             # eta_2
          "step_rule": "paper",          # paper: x - eta grad U + sqrt(2 eta) e (eqs. 6, 15, 16) | half (STEP_RULES)
          "noise_scale": 1.0}            # multiplies the noise term (1: unadjusted Langevin)


def defaults(method: str) -> dict:
  return {
      "model": {**models.defaults("unet_dae"),
                "sigma_max": 1.0, "sigma_min": 0.01, "num_scales": 128,  # the DAE's S noise levels
                "dae_weight": "none",     # none: || r - x ||^2 | inv_sigma2: / sigma^2
                "sigma_latent": 0.1,      # the sigma of U_s and of U_c in the chains and the contrastive terms
                "sigma_pixel": 0.1},
      "training": {"dae_steps": 3,        # L
                   "n_chains": 0,         # chains per iteration; 0: batch_size / L
                   "energy_reg": 0.0,     # alpha (U_data^2 + U_sample^2) in the contrastive terms
                   "dae_pretrain": 0,     # P: iterations of step (a) alone first
                   "contrastive_sigma": "per_example",  # per_example: sigma_i from the ladder (Alg. 1) | chain
                   **_chain_keys(20, 90)},
      "sampling": {"method": "two_stage", "n_samples": 1000,
                   "batch_size": 0,       # chains per compiled sampler call; 0: all at once
                   "n_traj": 8,           # chains in the trajectory strips
                   "final_denoise": True,  # output r_phi(x^T, sigma_pixel)
                   "latent_init": "normal",  # normal: z^0 ~ N(0, I) | data_gaussian: the training codes' Gaussian
                   "latent_fit_n": 2000,  # training images whose codes data_gaussian fits
                   "pixel_only": True,    # also the pixel-only baselines: Fig. 5's, and one at the two-stage cost
                   "pixel_only_steps": 500,  # Fig. 5's baseline: this many pixel steps from N(0, I) ...
                   "pixel_only_n": 0,     # ... for this many chains (0: n_samples)
                   **_chain_keys(20, 90)},
      "eval": {"ood_sigma": 0.05,         # OOD score -U_c(x, ood_sigma)
               "ood_n_eps": 1,            # noise draws averaged per OOD score
               "ood_n": 1000, "ood_batch_size": 250,
               "ood_datasets": ()},       # tfds names of real OOD sets
  }


def validate(config, shape) -> None:
  require(len(shape) == 3, "data.dataset",
          f"debm models images [H, W, C]; {config.data.dataset!r} gives examples of shape {tuple(shape)}")
  sigmas.ladder_from_config(config)
  one_of(config, "model.dae_weight", DAE_WEIGHTS)
  positive(config, "model.sigma_latent")
  positive(config, "model.sigma_pixel")
  one_of(config, "sampling.method", ("two_stage",))
  one_of(config, "sampling.latent_init", LATENT_INITS)
  positive(config, "sampling.latent_fit_n", integer=True)
  require(config.sampling.latent_fit_n >= 2, "sampling.latent_fit_n",
          f"must be >= 2 to fit a Gaussian, got {config.sampling.latent_fit_n}")
  t, s, e = config.training, config.sampling, config.eval
  positive(config, "training.dae_steps", integer=True)
  require(t.batch_size % t.dae_steps == 0, "training.batch_size",
          f"{t.batch_size} is not divisible by training.dae_steps = {t.dae_steps} (the batch is split into "
          "the L DAE minibatches of Algorithm 1)")
  positive(config, "training.n_chains", integer=True, allow_zero=True)
  positive(config, "training.energy_reg", allow_zero=True)
  positive(config, "training.dae_pretrain", integer=True, allow_zero=True)
  one_of(config, "training.contrastive_sigma", CONTRASTIVE_SIGMAS)
  positive(config, "sampling.pixel_only_steps", integer=True)
  positive(config, "sampling.pixel_only_n", integer=True, allow_zero=True)
  for sec in ("training", "sampling"):
    one_of(config, f"{sec}.step_rule", tuple(STEP_RULES))
    positive(config, f"{sec}.latent_steps", integer=True, allow_zero=True)
    positive(config, f"{sec}.pixel_steps", integer=True, allow_zero=True)
    positive(config, f"{sec}.eta_latent")
    positive(config, f"{sec}.eta_pixel")
    positive(config, f"{sec}.noise_scale", allow_zero=True)
  require(s.latent_steps + s.pixel_steps > 0, "sampling.pixel_steps",
          "sampling.latent_steps + sampling.pixel_steps must be > 0")
  positive(config, "sampling.n_samples", integer=True)
  positive(config, "sampling.batch_size", integer=True, allow_zero=True)
  positive(config, "sampling.n_traj", integer=True)
  for k in ("final_denoise", "pixel_only"):
    require(isinstance(s[k], bool), f"sampling.{k}", f"must be True or False, got {s[k]!r}")
  positive(config, "eval.ood_sigma")
  positive(config, "eval.ood_n", integer=True)
  positive(config, "eval.ood_n_eps", integer=True)
  positive(config, "eval.ood_batch_size", integer=True)
  names = e.ood_datasets
  require(isinstance(names, (tuple, list)) and all(isinstance(n, str) for n in names), "eval.ood_datasets",
          f"must be a tuple of tfds names, e.g. ('svhn_cropped',), got {names!r}")


# ====================================================================================== the method
@register("debm", defaults=defaults)
def build(config, dataset) -> Method:
  shape = tuple(int(d) for d in dataset.shape)
  validate(config, shape)
  ladder = sigmas.ladder_from_config(config)
  net = models.build(config.model, shape)
  fns_of = functools.partial(unet_dae.functions, net)
  latent_dim = int(config.model.latent_dim)
  t, s_cfg, e_cfg = config.training, config.sampling, config.eval
  train_chains, sample_chains = chains_of(config, "training"), chains_of(config, "sampling")
  n_chains = int(t.n_chains) or t.batch_size // t.dae_steps
  n_keep = int(s_cfg.n_traj)
  lo, hi = (-1.0, 1.0) if getattr(dataset, "scale", "01") == "-11" else (0.0, 1.0)

  def init(key):
    return unet_dae.split(net.init(key, jnp.zeros((1,) + shape), jnp.ones((1,))))

  step = make_step(fns_of, ladder, train_chains, t.dae_steps, n_chains, latent_dim, config.model.dae_weight,
                   float(t.energy_reg), int(t.dae_pretrain), t.contrastive_sigma)

  # ---------------------------------------------------------------- sampling
  def pixel_chain(f, key, x0, n_steps, keep):
    u_c = lambda x, k: texture_energy(f.denoise, k, x, sample_chains.sigma_pixel)                   # eq. 7
    return samplers.energy_langevin(u_c, key, x0, sample_chains.eta_pixel, n_steps, sample_chains.convention,
                                    sample_chains.noise_scale, keep)

  def denoised(f, x):  # r_phi(x^T, sigma_pixel): the DAE's posterior mean
    return f.denoise(x, jnp.full((x.shape[0],), sample_chains.sigma_pixel)) if s_cfg.final_denoise else x

  def draw(params, key, n, base):
    """The two-stage chain, and pixel-only Langevin at the same cost: K + T pixel steps from U[data range]."""
    f = fns_of(params)
    k_z, k_2s, k_x, k_po = jax.random.split(key, 4)
    keep = min(n_keep, n)
    z0 = sampling.start(draw_latents(k_z, n, latent_dim, base))
    ch = two_stage_chain(f.denoise, f.semantic_decode, k_2s, z0, sample_chains, keep)
    out = {"x": denoised(f, ch["x"]), "semantic": ch["x0"], "z_traj": ch["z_traj"], "x_traj": ch["x_traj"]}
    if s_cfg.pixel_only:  # each latent step also evaluates r_phi once (and the cheaper h_gamma, not counted)
      x0 = sampling.start(jax.random.uniform(k_x, (n,) + shape, minval=lo, maxval=hi))
      x, _ = pixel_chain(f, k_po, x0, sample_chains.latent_steps + sample_chains.pixel_steps, 0)
      out["pixel_only_equal_cost"] = denoised(f, x)
    return out

  def draw_pixel_only(params, key, n):
    """The paper's pixel-only baseline (Fig. 5): sampling.pixel_only_steps pixel steps from N(0, I)."""
    f = fns_of(params)
    k0, k1 = jax.random.split(key)
    keep = min(n_keep, n)
    x, aux = pixel_chain(f, k1, sampling.start(jax.random.normal(k0, (n,) + shape)), int(s_cfg.pixel_only_steps), keep)
    return {"pixel_only": denoised(f, x), "po_traj": aux["trajectory"]}

  draw_normal = sampling.compile_draw(lambda p, key, n: draw(p, key, n, None))
  draw_fitted = sampling.compile_draw(lambda p, key, n: draw(p["params"], key, n, p["base"]))
  draw_po = sampling.compile_draw(draw_pixel_only)
  decode_h = jax.jit(lambda p, z: fns_of(p).semantic_decode(z))
  encode = jax.jit(lambda p, x, sig: fns_of(p).encode(x, sig))

  def _columns(n_total: int, n_cols: int) -> np.ndarray:
    return np.unique(np.linspace(0, n_total, min(n_cols, n_total + 1)).round().astype(int))

  def main_draw(params, key):
    """(draw, its params) of the two-stage chains: with latent_init 'data_gaussian' the base is fitted first."""
    if s_cfg.latent_init == "data_gaussian":  # z^0 from the Gaussian of the training codes (a key apart from the chains')
      x_fit = np.asarray(dataset.train_images()[:int(s_cfg.latent_fit_n)], np.float32)
      base = latent_gaussian(lambda x, sig: encode(params, x, sig), jax.random.fold_in(key, _LATENT_FIT_TAG),
                             x_fit, sample_chains.sigma_latent)
      return draw_fitted, {"params": params, "base": base}
    return draw_normal, params

  def sample(params, key):
    traj = ("z_traj", "x_traj")
    draw_x, draw_params = main_draw(params, key)
    first = sampling.sample_in_batches(draw_x, draw_params, key, s_cfg.n_samples, s_cfg.batch_size, first_only=traj)
    if s_cfg.pixel_only:
      first.update(sampling.sample_in_batches(draw_po, params, jax.random.fold_in(key, _PIXEL_ONLY_TAG),
                                              int(s_cfg.pixel_only_n) or int(s_cfg.n_samples), s_cfg.batch_size,
                                              first_only=("po_traj",)))
    to_unit = lambda a: np.asarray(dataset.to_unit(np.asarray(a)), np.float32)
    res = {k: to_unit(first[k]) for k in ("x", "semantic", "pixel_only", "pixel_only_equal_cost") if k in first}
    # Fig. 5 strips: h(z) along the latent chain, then x along the pixel chain, then the output
    zc = _columns(sample_chains.latent_steps, 4)
    lat = [np.asarray(decode_h(params, first["z_traj"][j])) for j in zc]
    xc = _columns(sample_chains.pixel_steps, 7)[1:] if sample_chains.pixel_steps else []
    strip = lat + [first["x_traj"][j] for j in xc]
    if s_cfg.final_denoise:
      strip.append(first["x"][:n_keep])
    res["trajectory"] = to_unit(np.stack(strip))
    if "po_traj" in first:
      strip = [first["po_traj"][j] for j in _columns(int(s_cfg.pixel_only_steps), 10)]
      if s_cfg.final_denoise:
        strip.append(first["pixel_only"][:n_keep])
      res["trajectory_pixel_only"] = to_unit(np.stack(strip))
    return res

  # ---------------------------------------------------------------- evaluation
  ood_energy = jax.jit(lambda p, k, x, sigma: mean_texture_energy(fns_of(p).denoise, k, x, sigma, int(e_cfg.ood_n_eps)))

  def evaluate(params, key, samples):
    out = dict(image_eval.evaluate(config, dataset, samples["x"]))  # two-stage: the main set
    for name in ("pixel_only", "pixel_only_equal_cost", "semantic"):
      if name in samples:
        out.update(image_eval.evaluate_set(config, dataset, samples[name], name))
    k_eps, k_sets = jax.random.split(key)
    # the OOD score -U_c(x, sigma) at the paper's eval.ood_sigma, and at the pixel chain's sigma, a level the
    # contrastive term trains whichever training.contrastive_sigma (higher = in-distribution)
    for prefix, sigma in (("", float(e_cfg.ood_sigma)), ("chain_sigma_", float(config.model.sigma_pixel))):
      score = lambda x, sigma=sigma: -np.asarray(ood_energy(params, k_eps, jnp.asarray(x), sigma))
      res = ood.ood_eval(score, dataset, k_sets, n=int(e_cfg.ood_n), tfds_names=tuple(e_cfg.ood_datasets),
                         data_dir=config.data.data_dir or None, batch_size=int(e_cfg.ood_batch_size))
      out.update({f"{prefix}{k}": v for k, v in res.items()})
      out[f"{prefix}ood_sigma"] = sigma
    return out

  def plot(samples, params, sample_dir):
    paths = [viz.image_grid(os.path.join(sample_dir, "samples.png"), samples["x"][:64])]
    for name in ("pixel_only", "pixel_only_equal_cost", "semantic"):
      if name in samples:
        paths.append(viz.image_grid(os.path.join(sample_dir, f"{name}.png"), samples[name][:64]))
    for name in ("trajectory", "trajectory_pixel_only"):
      if name in samples:
        paths.append(viz.trajectory_strip(os.path.join(sample_dir, f"{name}.png"), samples[name], n_keep))
    return paths

  # ---------------------------------------------------------------- inpainting and likelihood
  inpaint_sched = samplers.constant_schedule(
      sample_chains.sigma_pixel, samplers.paper_alpha(sample_chains.eta_pixel, sample_chains.convention),
      int(s_cfg.pixel_only_steps), temperature=sample_chains.noise_scale ** 2)

  @jax.jit
  def inpaint(params, key, known, mask):
    """--mode=inpaint: pixel Langevin on U_c (eq. 7, a stochastic energy of clean images: known pixels held exactly)
    for sampling.pixel_only_steps steps from U[data range], then r_phi(x, sigma_pixel) in the hidden part."""
    f = fns_of(params)
    k0, k1 = jax.random.split(key)
    x0 = sampling.start(jax.random.uniform(k0, known.shape, known.dtype, minval=lo, maxval=hi))
    u_c = lambda x, k: texture_energy(f.denoise, k, x, sample_chains.sigma_pixel)
    score = lambda x, _sig, k: -jax.grad(lambda y: jnp.sum(u_c(y, k)))(x)
    x, _ = samplers.inpaint_langevin(score, k1, x0, sampling.start(known), sampling.start(mask), inpaint_sched,
                                     score_takes_key=True)
    return mask * known + (1.0 - mask) * denoised(f, x)

  def log_likelihood(params, key):
    """--mode=loglik: exp(-U) with U(x) = U_c(x, sigma_pixel) at one fixed noise image eps (the same for every x,
    so U is a deterministic energy of clean images), normalised by AIS."""
    f = fns_of(params)
    eps = jax.random.normal(jax.random.fold_in(key, 0xE95), (1,) + shape)
    energy_fn = lambda x: texture_energy(f.denoise, None, x, sample_chains.sigma_pixel,
                                         eps=jnp.broadcast_to(eps, x.shape))
    return likelihood.evaluate_energy(config, dataset, energy_fn, sample_chains.sigma_pixel, key, clean=True,
                                      progress=bool(config.runtime.progress))

  updates = float(t.dae_steps + 1)  # L DAE updates and one contrastive update of each network per iteration
  return Method(name="debm", init=init, step=step, networks={"phi": updates, "gamma": updates},
                slots={"phi": SLOTS, "gamma": SLOTS}, sample=sample, evaluate=evaluate, plot=plot,
                draw=draw_normal, functions=fns_of, main_draw=main_draw, inpaint=inpaint,
                log_likelihood=log_likelihood)

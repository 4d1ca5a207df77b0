"""DDE: generative models from denoising density estimators (Bigdeli, Lin, Portenier, Dunbar & Zwicker 2020,
"Learning Generative Models using Denoising Density Estimators", arXiv:2001.02728; reference code
github.com/logchan/dde, dde.py).

The equation numbers below are this file's own, (E1)-(E5): the paper's numbering was not available to check.

(E1) Smoothed densities at ONE noise level sigma: p_hat = p * N(0, sigma^2 I) (data), q_hat = q * N(0, sigma^2 I)
     (generator). Convolution with a Gaussian is injective, so q_hat = p_hat iff q = p.
(E2) A DDE is a scalar network E(x) trained by denoising score matching in the log-density convention
         argmin_E  E_{x ~ p, eps ~ N(0, sigma^2 I)} || grad_x E(x + eps) + eps ||^2,
     whose minimiser has grad E(v) = -E[eps | x + eps = v] = sigma^2 grad log p_hat(v) (Tweedie / Miyasawa), so
     E = sigma^2 log p_hat + const. (The reference code writes the same loss as || v + sigma^2 grad f(v) - x ||^2
     for f = log p_hat.) The networks here are energies u of the library's convention (p ∝ exp(-u),
     dsm_jax.fields) with a quadratic term that keeps exp(-u) normalisable; the DDE is E = -u. The loss is
     divided by sigma^2 D so that a constant E scores 1.
(E3) KL(q_hat || p_hat) = E_{v ~ q_hat}[log q_hat(v) - log p_hat(v)]
                        = E_{z, eps}[ E_q(G(z) + eps) - E_p(G(z) + eps) ] / sigma^2 + const,
     z ~ N(0, I), eps ~ N(0, sigma^2 I), with E_p the DDE of the data and E_q the DDE of the generator's samples.
(E4) Its gradient in the generator's parameters theta, reparameterised through v = G_theta(z) + eps, is
         E_{z, eps}[ (grad E_q - grad E_p)(v) / sigma^2 . dG/dtheta ]
     (the remaining term E_{q_hat}[d/dtheta log q_hat_theta(v)] at fixed v is the mean of a score: zero), i.e.
     the gradient of (E3) with E_q and E_p held FIXED. theta descends it (Adam).
(E5) The algorithm: pre-train E_p by (E2) on data, then freeze it. Each round: fit E_q by a few steps of (E2)
     on G(z) + eps (fresh z, eps each step), then a few generator steps (E4) with E_p and E_q fixed. At the fixed
     point grad E_q = grad E_p on q_hat's support, q_hat = p_hat and, by (E1), q = p.

model.base_energy = 'gaussian' (not in the paper or the reference; default 'none'): both DDEs become
E = sigma^2 log N_hat(x) + network, with N_hat = N(mu, Sigma + sigma^2 I) the smoothed Gaussian fit of the
training data (dsm_jax/gaussian_base.py). Untrained, E_p is then already the Wiener denoiser of the data, and
the network learns only the non-Gaussian part; the shared base cancels in (E3) and (E4), so the generator sees
only the difference of the two networks. On mnist5k the reference's E_p (a DenseNet, 3,000 steps) denoises worse
than that linear filter; with the base it denoises better, and the generator then collapses onto one training
digit instead of a blurry mean (docs/RESULTS.md, "DDE on mnist5k: E_p under-fits, ...";
benchmarks/dde_denoisers.py measures both DDEs as denoisers). With the base and the sigma ladder below
(configs/dde_mnist5k.py) the generator covers all ten digits (RESULTS.md, "DDE on mnist5k: annealing sigma").

model.anneal_sigmas (not in the paper; default () = one sigma throughout): the generator is trained at a decreasing
ladder of noise levels, anneal_sigmas then model.sigma, model.anneal_rounds rounds at each level before the last.
E_p is pre-trained at the first level for model.p_steps steps, then at each later level it is trained for
model.anneal_p_steps more steps (warm-started) and frozen again before that level's rounds; E_q trains beside
it as in the first pre-training. Why: at sigma = 0.5 on mnist5k the digits are ~20 sigmas apart, so p_hat is
separate bumps and KL(q_hat || p_hat) has a local minimum on each one (a point mass there gets no spreading push
from E_q); the untrained generator falls onto the nearest digit. At a large sigma p_hat is one smooth blob and
the generator spreads over it first. The reference code has the same idea as --reduce_sigma_every (E_p keeps
training there); `stage_table` lays out the steps. Evaluation and `score` use the last level, model.sigma.

One trainer step (train_step, a pure function of (state, batch)): on a pre-training step of stage_table (without
annealing: step < model.p_steps), one (E2) step of E_p on the data batch and one (E2) step of E_q on the generator
(still untrained in the first pre-training); on every other step, one round of (E5): model.q_steps E_q steps
then model.g_steps generator steps (lax.fori_loop). The branch is a lax.cond, the three networks have their own
Adam states (init_opt), and the NaN guard, EMA, checkpoints, resume and sharding are the trainer's. The reference
code instead keeps training E_p during the rounds and steps G every 10th batch.

Training snapshots: params['snapshots'] [model.n_snapshots, model.snapshot_n, *data shape] holds the raw
generator's output on one fixed set of z at rounds 0, snapshot_every, 2 snapshot_every, ... (round 0 = the
untrained generator). It is a buffer, not a trained network (no optimizer state, copied into the EMA as is),
so it is checkpointed and resumed with the rest and `plot` draws the strip of rounds from it.

Evaluation, 2-D toys: kl_grid = KL(p_hat || q_hat) on a grid, with p_hat the exact smoothed target and q_hat the
histogram of the generator's samples convolved with N(0, sigma^2 I) (kl_grid_rev = KL(q_hat || p_hat));
*_baseline is the same estimator on as many exact draws of p (its floor); mmd between generator samples and
true samples; mode_tv = total variation between the generator's mass per mixture component (nearest mean) and
the weights; ep_score_rel_mse = the relative error of grad E_p / sigma^2 against the exact score of p_hat.
Images: the feature FID/KID of dsm_jax.methods.ncsn.evaluate_images; samples.npz holds x in [0, 1].
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dsm_jax import evaluation, fields, gaussian_base, viz
from dsm_jax.methods import multinet
from dsm_jax.methods.base import Method
from dsm_jax.methods.dvi import grid_kl
from dsm_jax.models import get_model
from dsm_jax.models.mlp import ACTIVATIONS, activation
from dsm_jax.validation import ConfigError, get, one_of, positive, require

Array = jax.Array
NETS = ("Ep", "Eq", "G")  # the trained networks; 'snapshots' is a buffer
OUT_ACTS = ("sigmoid", "tanh", "none")
BASE_ENERGIES = ("none", "gaussian")
TOY_ENERGIES, TOY_GENERATORS = ("energy_mlp", "dense_net"), ("generator_mlp", "dense_net")
IMAGE_ENERGIES, IMAGE_GENERATORS = ("dense_net", "conv_energy", "energy_resnet"), ("dense_net", "conv_generator")
_SNAP_TAG = 0x5AA9  # the key of the fixed snapshot z


# ------------------------------------------------------------------------------------ the model
class DenseNet(nn.Module):
  """The reference code's fully connected 'DenseNet' (modules.py: DenseNetModule): n_layers layers, each
  h <- [act(Dense(hidden)(h)), h] (every layer sees the input and all earlier layers), then one Dense to
  prod(out_shape). As a DDE (out_shape = ()), a scalar energy u(x) (p ∝ exp(-u)) of the flattened input, with
  quadratic=True adding 1/2 softplus(c) ||x||^2; as a generator, G(z) reshaped to out_shape, then out_act."""
  out_shape: Sequence[int] = ()
  hidden: int = 256
  n_layers: int = 16
  act: str = "softplus"
  out_act: str = "none"
  quadratic: bool = True

  @nn.compact
  def __call__(self, x: Array, cond: Optional[Array] = None) -> Array:
    del cond
    f = activation(self.act)
    h = x.reshape(x.shape[0], -1)
    for _ in range(self.n_layers):
      h = jnp.concatenate([f(nn.Dense(self.hidden)(h)), h], axis=-1)
    out = nn.Dense(int(np.prod(self.out_shape)) if self.out_shape else 1)(h)
    if not self.out_shape:  # an energy
      e = out[:, 0]
      if self.quadratic:
        c = self.param("quad", nn.initializers.constant(-3.0), ())
        e = e + 0.5 * nn.softplus(c) * jnp.sum(x.reshape(x.shape[0], -1) ** 2, axis=-1)
      return e
    out = out.reshape((x.shape[0],) + tuple(self.out_shape))
    if self.out_act == "sigmoid":
      return nn.sigmoid(out)
    if self.out_act == "tanh":
      return jnp.tanh(out)
    return out


def network(cfg, shape, generator: bool):
  """The DDE energy (generator=False) or the generator named by cfg.name: dense_net here, the others from
  dsm_jax.models.get_model."""
  if cfg.name == "dense_net":
    return DenseNet(out_shape=tuple(shape) if generator else (), hidden=int(cfg.hidden), n_layers=int(cfg.n_layers),
                    act=cfg.act, out_act=cfg.get("out_act", "none"), quadratic=cfg.get("quadratic", True))
  return get_model(cfg, tuple(shape))


# ------------------------------------------------------------------------------------ (E2), (E3), (E4)
def dde_loss(log_density: Callable[[Array], Array], key, x: Array, sigma: float, antithetic: bool = False) -> Array:
  """(E2) E || grad E(x + eps) + eps ||^2 / (sigma^2 D), eps ~ N(0, sigma^2 I): 1 for a constant E. log_density:
  x [B, ...] -> E(x) [B]; grad E is per row (rows independent), so the parameter gradient is a double backprop.
  antithetic: the mean over eps and -eps (same minimiser, less variance in the gradient)."""
  chex.assert_rank(x, {2, 3, 4})
  eps = sigma * jax.random.normal(key, x.shape, x.dtype)
  grad_e = jax.grad(lambda v: jnp.sum(log_density(v)))
  axes = tuple(range(1, x.ndim))
  per = jnp.sum((grad_e(x + eps) + eps) ** 2, axis=axes)
  if antithetic:
    per = 0.5 * (per + jnp.sum((grad_e(x - eps) - eps) ** 2, axis=axes))
  chex.assert_shape(per, (x.shape[0],))
  return jnp.mean(per) / (sigma ** 2 * np.prod(x.shape[1:]))


def generator_loss(g_params, g_apply: Callable, log_q: Callable, log_p: Callable, z: Array, eps: Array,
                   sigma: float, antithetic: bool = False) -> Array:
  """(E3) mean_{z, eps}[E_q(G(z) + eps) - E_p(G(z) + eps)] / sigma^2: KL(q_hat || p_hat) up to a constant. Its
  gradient in g_params is (E4) when log_q and log_p close over fixed parameters (no gradient reaches them).
  antithetic: also evaluate at G(z) - eps and average. eps is symmetric, so the expectation is unchanged, but the
  part of (E4) that is linear in eps (in D dimensions it has norm ~ sigma sqrt(D), far above the signal) cancels
  exactly within each pair."""
  x = g_apply(g_params, z)
  chex.assert_equal_shape([x, eps])
  kl = (log_q(x + eps) - log_p(x + eps)) / sigma ** 2
  if antithetic:
    kl = 0.5 * (kl + (log_q(x - eps) - log_p(x - eps)) / sigma ** 2)
  chex.assert_shape(kl, (x.shape[0],))
  return jnp.mean(kl)


def fit_dde(apply_fn: Callable, optimizer, params, opt_state, key, draw: Callable, n_steps: int, sigma: float,
            antithetic: bool = False):
  """n_steps optimizer steps of (E2) for the DDE apply_fn(params, x) -> E(x) [B] on batches draw(key_i) [B, ...]
  (held fixed: no gradient flows into what draws them). A non-finite step is not applied. Returns (params,
  opt_state, all steps finite, mean loss)."""

  def body(i, carry):
    p, o, ok, total = carry
    kx, ke = jax.random.split(jax.random.fold_in(key, i))
    x = jax.lax.stop_gradient(draw(kx))
    loss, grads = jax.value_and_grad(lambda q: dde_loss(lambda v: apply_fn(q, v), ke, x, sigma, antithetic))(p)
    ok_i = jnp.isfinite(loss) & multinet.tree_all_finite(grads)
    new_p, new_o = multinet.optimizer_step(optimizer, grads, o, p)
    return multinet.keep_if(ok_i, new_p, p), multinet.keep_if(ok_i, new_o, o), ok & ok_i, total + loss

  p, o, ok, total = jax.lax.fori_loop(0, int(n_steps), body, (params, opt_state, jnp.asarray(True), jnp.asarray(0.0)))
  return p, o, ok, total / int(n_steps)


# ------------------------------------------------------------------------------------ config
def _check_net(config, sub: str, names, images: bool) -> None:
  m = config.model
  require(sub in m, f"model.{sub}", "missing: a section with name, hidden, act (see configs/dde_toy.py)")
  c = m[sub]
  name = c.get("name", None)
  require(name in names, f"model.{sub}.name", f"must be one of {list(names)} for {'image' if images else '2-D'} "
                                              f"data, got {name!r}")
  if name in ("energy_mlp", "generator_mlp"):
    h = c.get("hidden", None)
    require(isinstance(h, (tuple, list)) and len(h) > 0 and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in h), f"model.{sub}.hidden",
        f"must be a non-empty tuple of positive layer widths, got {h!r}")
  if name == "dense_net":
    positive(config, f"model.{sub}.hidden", integer=True)
    positive(config, f"model.{sub}.n_layers", integer=True)
    if "out_act" in c:
      require(c.out_act in OUT_ACTS, f"model.{sub}.out_act", f"must be one of {list(OUT_ACTS)}, got {c.out_act!r}")
  if name not in ("energy_resnet",):
    require(c.get("act", None) in ACTIVATIONS, f"model.{sub}.act",
            f"unknown activation {c.get('act')!r}; choose from {sorted(ACTIVATIONS)}")


def stage_table(config) -> dict:
  """The trainer's step plan for model.anneal_sigmas (module docstring), as numpy arrays over the n_iters steps:
  'sigma' (the step's noise level), 'pre' (True: an E_p/E_q pre-training step, False: a generator round) and
  'round' (generator rounds done before the step). Without annealing: sigma throughout, p_steps pre-training
  steps, then rounds."""
  m = config.model
  sigmas = [float(s) for s in m.get("anneal_sigmas", ())] + [float(m.sigma)]
  n_iters, p_first = int(config.training.n_iters), int(m.p_steps)
  sig, pre = [], []
  for i, s in enumerate(sigmas):
    n_pre = p_first if i == 0 else int(m.anneal_p_steps)
    n_rounds = int(m.anneal_rounds) if i < len(sigmas) - 1 else n_iters - len(sig) - n_pre
    sig += [s] * (n_pre + n_rounds)
    pre += [True] * n_pre + [False] * n_rounds
  pre_a = np.asarray(pre, bool)
  rounds = np.concatenate([[0], np.cumsum(~pre_a)[:-1]]).astype(np.int32)
  return {"sigma": np.asarray(sig, np.float32), "pre": pre_a, "round": rounds}


def is_image_data(dataset) -> bool:
  return hasattr(dataset, "host_batches") and len(tuple(dataset.shape)) == 3


def validate(config, dataset) -> None:
  images = is_image_data(dataset)
  toy = hasattr(dataset, "sample") and tuple(getattr(dataset, "shape", ())) == (2,)
  require(images or toy, "data.dataset", f"DDE runs on a 2-D toy (e.g. 'mixture', 'ring8') or an image dataset "
                                         f"(e.g. 'mnist5k'), got {config.data.dataset!r}")
  positive(config, "model.sigma")
  for k in ("p_steps", "q_steps", "g_steps", "latent_dim", "gen_batch_size"):
    positive(config, f"model.{k}", integer=True)
  positive(config, "model.g_lr")
  positive(config, "model.n_snapshots", integer=True, allow_zero=True)
  if config.model.n_snapshots:
    positive(config, "model.snapshot_every", integer=True)
    positive(config, "model.snapshot_n", integer=True)
  antithetic = get(config, "model.antithetic")
  require(isinstance(antithetic, bool), "model.antithetic", f"must be True or False, got {antithetic!r}")
  if "antithetic_g" in config.model:
    a_g = config.model.antithetic_g
    require(isinstance(a_g, bool), "model.antithetic_g", f"must be True or False, got {a_g!r}")
  if "latent_std" in config.model:
    positive(config, "model.latent_std")
  if "base_energy" in config.model:
    one_of(config, "model.base_energy", BASE_ENERGIES)
  anneal = tuple(config.model.get("anneal_sigmas", ()) or ())
  n_fixed = 0
  if anneal:
    require(all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in anneal),
            "model.anneal_sigmas", f"must be positive noise levels, got {anneal!r}")
    ladder = list(anneal) + [config.model.sigma]
    require(all(a > b for a, b in zip(ladder, ladder[1:])), "model.anneal_sigmas",
            f"must decrease and stay above model.sigma ({config.model.sigma}), got {anneal!r}")
    positive(config, "model.anneal_rounds", integer=True)
    positive(config, "model.anneal_p_steps", integer=True)
    n_fixed = len(anneal) * (config.model.anneal_rounds + config.model.anneal_p_steps)
  n_iters, p_steps = get(config, "training.n_iters"), config.model.p_steps
  require(isinstance(n_iters, int) and n_iters > p_steps + n_fixed, "training.n_iters",
          f"must exceed model.p_steps ({p_steps}, the E_p pre-training steps)"
          + (f" plus the {n_fixed} steps of the annealing stages" if anneal else "")
          + f" so that generator rounds run at model.sigma, got {n_iters!r}")
  _check_net(config, "dde", IMAGE_ENERGIES if images else TOY_ENERGIES, images)
  _check_net(config, "generator", IMAGE_GENERATORS if images else TOY_GENERATORS, images)
  positive(config, "sampling.n_samples", integer=True)
  if not images:
    positive(config, "eval.grid_n", integer=True)
    require(config.eval.grid_n >= 64, "eval.grid_n", f"must be >= 64 for a usable grid, got {config.eval.grid_n}")
    positive(config, "eval.grid_lim", allow_zero=True)


# ------------------------------------------------------------------------------------ the method
def make_log_density(config, dataset) -> Callable[[dict, Array], Array]:
  """(params of one DDE, x [B, ...][, level]) -> E(x) [B], the DDE in the log-density convention of (E2): E = -u
  for the network's energy u, plus level^2 log N_hat(x) (the data's Gaussian fit smoothed at level, by default
  model.sigma) with model.base_energy = 'gaussian'. E_p and E_q are this function at their own parameters."""
  m = config.model
  shape = tuple(int(d) for d in dataset.shape)
  sigma = float(m.sigma)
  e_net = network(m.dde, shape, generator=False)
  base = None
  if m.get("base_energy", "none") == "gaussian":  # the smoothed Gaussian fit of the data (module docstring)
    base = gaussian_base.fit(dataset.train_images() if is_image_data(dataset) else dataset.sample(
        jax.random.PRNGKey(config.seed), 10000))

  def log_density(p_e, x, level=sigma):
    """level: the noise level of the base term (model.sigma unless annealing, module docstring)."""
    e = -e_net.apply(p_e, x)
    if base is None:
      return e
    return e + (level ** 2 * gaussian_base.log_density(base, x, level)).astype(e.dtype)

  return log_density


def build(config, dataset) -> Method:
  validate(config, dataset)
  m, s_cfg = config.model, config.sampling
  shape = tuple(int(d) for d in dataset.shape)
  images = is_image_data(dataset)
  sigma, latent = float(m.sigma), int(m.latent_dim)  # sigma: the last (or only) noise level
  plan = {k: jnp.asarray(v) for k, v in stage_table(config).items()}
  q_steps, g_steps = int(m.q_steps), int(m.g_steps)
  n_gen, antithetic, antithetic_g = int(m.gen_batch_size), bool(m.antithetic), bool(m.get("antithetic_g", False))
  latent_std = float(m.get("latent_std", 1.0))
  n_snap = int(m.n_snapshots)
  snap_every = int(m.get("snapshot_every", 1))
  snap_n = int(m.get("snapshot_n", 1))
  e_net = network(m.dde, shape, generator=False)
  g_net = network(m.generator, shape, generator=True)
  lr_scale_g = float(m.g_lr) / float(config.training.lr)
  log_density = make_log_density(config, dataset)

  def generate(p_g, z):
    """G(z) for z ~ N(0, I): the network sees latent_std * z (1 in the reference; a larger value spreads the
    untrained generator's outputs, whose z-independent part otherwise dominates; on mnist5k that spread is
    lost again in training, docs/RESULTS.md)."""
    x = g_net.apply(p_g, latent_std * z)
    chex.assert_shape(x, (z.shape[0],) + shape)
    return x

  def init_params(key):
    kp, kq, kg = jax.random.split(key, 3)
    x0, z0 = jnp.zeros((1,) + shape), jnp.zeros((1, latent))
    params = {"Ep": e_net.init(kp, x0), "Eq": e_net.init(kq, x0), "G": g_net.init(kg, z0)}
    if n_snap:
      params["snapshots"] = jnp.zeros((n_snap, snap_n) + shape, jnp.float32)
    return params

  def draw_generated(p_g):
    return lambda k: generate(p_g, jax.random.normal(k, (n_gen, latent)))

  def train_step(optimizer):
    ema_rate = float(config.training.ema_rate)

    def pretrain(params, opt, key, batch, sig):
      """A pre-training step at noise level sig: (E2) for E_p on the data batch, and for E_q on the generator
      (untrained in the first stage)."""
      ld = lambda p_e, v: log_density(p_e, v, sig)
      kp, kq = jax.random.split(key)
      p_p, o_p, ok_p, loss_p = fit_dde(ld, optimizer, params["Ep"], opt["Ep"], kp, lambda k: batch, 1,
                                       sig, antithetic)
      p_q, o_q, ok_q, loss_q = fit_dde(ld, optimizer, params["Eq"], opt["Eq"], kq,
                                       draw_generated(params["G"]), 1, sig, antithetic)
      kz, ke = jax.random.split(jax.random.fold_in(key, 1))
      kl = generator_loss(params["G"], g_net.apply, lambda v: ld(p_q, v), lambda v: ld(p_p, v),
                          jax.random.normal(kz, (n_gen, latent)), sig * jax.random.normal(ke, (n_gen,) + shape),
                          sig)  # (E3) at the untrained generator; no generator step yet
      metrics = {"loss": loss_p, "loss_p": loss_p, "loss_q": loss_q, "kl_hat": kl, "grad_norm_g": jnp.asarray(0.0)}
      return ({**params, "Ep": p_p, "Eq": p_q}, {**opt, "Ep": o_p, "Eq": o_q}, ok_p & ok_q, metrics)

    def dde_round(params, opt, key, rnd, batch, sig):
      """(E5) one round at noise level sig: q_steps of (E2) for E_q on G(z) + eps, then g_steps of (E4) with
      E_p, E_q fixed."""
      ld = lambda p_e, v: log_density(p_e, v, sig)
      kq, kg = jax.random.split(key)
      new = dict(params)
      if n_snap:  # the generator at the start of rounds 0, snapshot_every, ... (before this round's update)
        idx = rnd // snap_every
        take = (rnd % snap_every == 0) & (idx < n_snap)
        z_snap = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(config.seed), _SNAP_TAG), (snap_n, latent))
        new["snapshots"] = jax.lax.cond(
            take, lambda s: jax.lax.dynamic_update_index_in_dim(s, generate(params["G"], z_snap), idx, 0),
            lambda s: s, params["snapshots"])
      p_q, o_q, ok_q, loss_q = fit_dde(ld, optimizer, params["Eq"], opt["Eq"], kq,
                                       draw_generated(params["G"]), q_steps, sig, antithetic)
      log_q = lambda v: ld(jax.lax.stop_gradient(p_q), v)
      log_p = lambda v: ld(jax.lax.stop_gradient(params["Ep"]), v)

      def g_body(i, carry):
        p_g, o_g, ok, kl_sum, gn_sum = carry
        kz, ke = jax.random.split(jax.random.fold_in(kg, i))
        z = jax.random.normal(kz, (n_gen, latent))
        eps = sig * jax.random.normal(ke, (n_gen,) + shape)
        kl, grads = jax.value_and_grad(generator_loss)(p_g, g_net.apply, log_q, log_p, z, eps, sig,
                                                       antithetic_g)  # (E4)
        ok_i = jnp.isfinite(kl) & multinet.tree_all_finite(grads)
        new_g, new_o = multinet.optimizer_step(optimizer, grads, o_g, p_g, lr_scale_g)
        return (multinet.keep_if(ok_i, new_g, p_g), multinet.keep_if(ok_i, new_o, o_g), ok & ok_i, kl_sum + kl,
                gn_sum + optax.tree.norm(grads))

      p_g, o_g, ok_g, kl_sum, gn_sum = jax.lax.fori_loop(
          0, g_steps, g_body, (params["G"], opt["G"], jnp.asarray(True), jnp.asarray(0.0), jnp.asarray(0.0)))
      loss_p = dde_loss(lambda v: ld(params["Ep"], v), jax.random.fold_in(key, 2), batch, sig,
                        antithetic)  # the frozen E_p's (E2) loss on the step's fresh data batch (no update)
      metrics = {"loss": loss_q, "loss_p": loss_p, "loss_q": loss_q, "kl_hat": kl_sum / g_steps,
                 "grad_norm_g": gn_sum / g_steps}
      new.update({"Eq": p_q, "G": p_g})
      return new, {**opt, "Eq": o_q, "G": o_g}, ok_q & ok_g, metrics

    def step_fn(state, batch):
      rng = jax.random.fold_in(state["key"], state["step"])
      i = jnp.minimum(state["step"], plan["pre"].shape[0] - 1)  # the step's place in stage_table
      sig, is_pre, rnd = plan["sigma"][i], plan["pre"][i], plan["round"][i]
      params, opt = state["params"], state["opt_state"]
      new_params, new_opt, ok, raw = jax.lax.cond(
          is_pre, lambda: pretrain(params, opt, rng, batch, sig), lambda: dde_round(params, opt, rng, rnd, batch, sig))
      metrics = {**raw, "sigma": sig,  # rounds done after this step:
                 "round": (rnd + jnp.where(is_pre, 0, 1)).astype(jnp.float32)}
      return multinet.finish_step(state, new_params, new_opt, ok, ema_rate, metrics, no_ema=("snapshots",))

    return step_fn

  # ---------------------------------------------------------------------------------- sampling
  n_samples = int(s_cfg.n_samples)
  draw = jax.jit(lambda p_g, key: generate(p_g, jax.random.normal(key, (n_samples, latent))))

  def sample(params, key):
    out = {"x": np.asarray(draw(params["G"], key))}
    if n_snap:
      out["snapshots"] = np.asarray(params["snapshots"])
    if images:
      out = {k: np.asarray(dataset.to_unit(v)) for k, v in out.items()}
    return out

  def snapshot_titles(k: int):
    return [f"round {i * snap_every}" for i in range(k)]

  # ---------------------------------------------------------------------------------- evaluation
  def grid_lim() -> float:
    lim = float(config.eval.get("grid_lim", 0.0) or 0.0)
    if lim > 0:
      return lim
    if hasattr(dataset, "means"):  # Gaussian mixtures: every mean plus 6 smoothed standard deviations
      s = np.sqrt(np.max(np.asarray(dataset.stds)) ** 2 + sigma ** 2)
      return float(np.max(np.abs(np.asarray(dataset.means))) + 6.0 * s)
    return 6.0 + 6.0 * sigma

  def evaluate(params, key, samples):
    if images:
      from dsm_jax.methods.ncsn import evaluate_images  # noqa: PLC0415
      return evaluate_images(config, dataset, samples["x"])
    k_mmd, k_ref, k_sc = jax.random.split(key, 3)
    x = np.asarray(samples["x"], np.float64)
    out = {"mmd": evaluation.mmd_to_data(x, dataset, k_mmd, 0.0), "sigma": sigma}
    if getattr(dataset, "has_density", False):
      ref = np.asarray(dataset.sample(k_ref, len(x)), np.float64)
      out.update(grid_kls(x, dataset, sigma, grid_lim(), int(config.eval.grid_n)))
      out.update({f"{k}_baseline": v for k, v in grid_kls(ref, dataset, sigma, grid_lim(),
                                                           int(config.eval.grid_n)).items()})
      out["ep_score_rel_mse"] = evaluation.score_error(score_of(params), dataset, k_sc, sigma)
    if hasattr(dataset, "means"):
      out["mode_tv"] = mode_tv(x, dataset)
      out["mode_tv_baseline"] = mode_tv(np.asarray(dataset.sample(k_ref, len(x))), dataset)
    if config.data.dataset == "mixture":
      from dsm_jax.data.toy import nearer_fraction  # noqa: PLC0415
      out["weight_pos"] = nearer_fraction(x, (5.0, 5.0), (-5.0, -5.0))  # target 0.8
    return out

  # ---------------------------------------------------------------------------------- pictures
  def plot(samples, params, sample_dir):
    if images:
      paths = [viz.image_grid(f"{sample_dir}/samples.png", samples["x"][:64])]
      if n_snap:  # one row per fixed z, one column per snapshot round, then the final (EMA) generator
        snaps = samples["snapshots"][:, :8]
        paths.append(viz.trajectory_strip(f"{sample_dir}/training_rounds.png", snaps))
      return paths
    lim = grid_lim()
    has = getattr(dataset, "has_density", False)
    target = (lambda pts: np.asarray(dataset.log_prob(jnp.asarray(pts), 0.0))) if has else None
    paths = [viz.scatter_2d(f"{sample_dir}/samples.png", samples["x"], target,
                            f"DDE generator samples over the target p (sigma = {sigma:g})", lim)]
    if n_snap:
      sets = list(samples["snapshots"]) + [samples["x"][:snap_n]]
      titles = snapshot_titles(n_snap) + ["final (sampled)"]
      smoothed = (lambda pts: np.asarray(dataset.log_prob(jnp.asarray(pts), sigma))) if has else None
      paths.append(viz.panels_2d(f"{sample_dir}/training_rounds.png", sets, titles, smoothed, lim))
    panels = {"E_p / sigma^2 (learned log p_hat)": lambda pts: np.asarray(log_density(params["Ep"], jnp.asarray(pts))) / sigma ** 2,
              "E_q / sigma^2 (learned log q_hat)": lambda pts: np.asarray(log_density(params["Eq"], jnp.asarray(pts))) / sigma ** 2}
    if has:
      panels["exact log p_hat"] = lambda pts: np.asarray(dataset.log_prob(jnp.asarray(pts), sigma))
    paths.append(viz.contours_2d(f"{sample_dir}/densities.png", panels, lim))
    return paths

  def score_of(params):
    """grad log p_hat = grad E_p / sigma^2 (the data DDE's smoothed score, defined at the DDE's one sigma)."""
    return fields.score_from_log_density(lambda v, s: log_density(params["Ep"], v), scale=sigma ** 2)

  return Method(name="dde", init_params=init_params, train_step=train_step, init_opt=multinet.init_opt(NETS),
                sample=sample, evaluate=evaluate, plot=plot, score=score_of)


# ------------------------------------------------------------------------------------ evaluation helpers
def smoothed_histogram(x: np.ndarray, g: np.ndarray, sigma: float) -> np.ndarray:
  """log q_hat on the square grid g x g ([len(g), len(g)], rows: 2nd coordinate): the histogram of the 2-D
  samples x on the grid's cells convolved with N(0, sigma^2 I) (exact Gaussian smoothing, (E1)), normalised on
  the grid. Samples outside the grid are dropped."""
  from scipy.ndimage import gaussian_filter  # noqa: PLC0415
  x = np.asarray(x, np.float64)
  x = x[np.all(np.isfinite(x), axis=1)]
  d = g[1] - g[0]
  edges = np.concatenate([g - d / 2, [g[-1] + d / 2]])
  hist, _, _ = np.histogram2d(x[:, 1], x[:, 0], bins=[edges, edges])
  dens = np.maximum(gaussian_filter(hist, sigma / d, mode="constant", truncate=6.0), 0.0)
  dens = dens / max(dens.sum() * d * d, 1e-300)
  return np.log(np.maximum(dens, 1e-300))


def grid_kls(x: np.ndarray, dataset, sigma: float, lim: float, n: int) -> dict:
  """kl_grid = KL(p_hat || q_hat) and kl_grid_rev = KL(q_hat || p_hat) on an n x n grid over [-lim, lim]^2,
  p_hat the exact smoothed target (normalised on the grid), q_hat the smoothed histogram of x."""
  g = np.linspace(-lim, lim, n)
  area = (g[1] - g[0]) ** 2
  w1, w2 = np.meshgrid(g, g, indexing="xy")
  pts = jnp.asarray(np.stack([w1.ravel(), w2.ravel()], -1), jnp.float32)
  lp = np.asarray(dataset.log_prob(pts, sigma), np.float64).reshape(n, n)
  lp = lp - np.log(np.sum(np.exp(lp - lp.max())) * area) - lp.max()
  lq = smoothed_histogram(x, g, sigma)
  return {"kl_grid": grid_kl(lp, lq, area), "kl_grid_rev": grid_kl(lq, lp, area)}


def mode_tv(x: np.ndarray, dataset) -> float:
  """1/2 sum_k |frac_k - w_k|: the generator's mass per mixture component (by nearest mean) against the weights."""
  x = np.asarray(x, np.float64)
  x = x[np.all(np.isfinite(x), axis=1)]
  mu, w = np.asarray(dataset.means, np.float64), np.asarray(dataset.weights, np.float64)
  k = np.argmin(((x[:, None, :] - mu[None]) ** 2).sum(-1), axis=1)
  frac = np.bincount(k, minlength=len(w)) / max(len(x), 1)
  return float(0.5 * np.abs(frac - w).sum())

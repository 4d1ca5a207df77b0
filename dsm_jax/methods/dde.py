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
     dsm_jax.fields); the DDE is E = -u. (The reference DenseNet is linear in its last layer; the option
     model.dde.quadratic adds 1/2 softplus(c) ||x||^2 to u, which keeps exp(-u) normalisable.) The loss is
     divided by sigma^2 D so that a constant E scores 1.
(E3) KL(q_hat || p_hat) = E_{v ~ q_hat}[log q_hat(v) - log p_hat(v)]
                        = E_{z, eps}[ E_q(G(z) + eps) - E_p(G(z) + eps) ] / sigma^2 + const,
     z ~ N(0, I), eps ~ N(0, sigma^2 I), with E_p the DDE of the data and E_q the DDE of the generator's samples.
(E4) Its gradient in the generator's parameters theta, reparameterised through v = G_theta(z) + eps, is
         E_{z, eps}[ (grad E_q - grad E_p)(v) / sigma^2 . dG/dtheta ]
     (the remaining term E_{q_hat}[d/dtheta log q_hat_theta(v)] at fixed v is the mean of a score: zero), i.e.
     the gradient of (E3) with E_q and E_p held FIXED. theta descends it (Adam).
(E5) The algorithm, one round per trainer step: fit E_q by a few steps of (E2) on G(z) + eps (fresh z, eps each
     step), then a few generator steps (E4) with E_p and E_q fixed. E_p learns the data by (E2), in one of two
     ways (training.ep_training): 'joint', the reference's, where E_p takes one step on each of q_steps data
     minibatches in every round, beside E_q's steps (the reference's loop: an E_p and an E_q step per batch, a
     generator step every train_gen_every = q_steps batches); or 'pretrain', where E_p is trained for
     training.p_steps steps first and then frozen, so the generator chases a fixed target. At the fixed point
     grad E_q = grad E_p on q_hat's support, q_hat = p_hat and, by (E1), q = p.

model.base_energy = 'gaussian' (not in the paper or the reference; default 'none'): both DDEs become
E = sigma^2 log N_hat(x) + network, with N_hat = N(mu, Sigma + sigma^2 I) the smoothed Gaussian fit of the
training data (dsm_jax/gaussian_base.py). Untrained, E_p is then already the Wiener denoiser of the data, and
the network learns only the non-Gaussian part; the shared base cancels in (E3) and (E4), so the generator sees
only the difference of the two networks. On mnist5k the reference's E_p (a DenseNet, 3,000 steps) denoises worse
than that linear filter; with the base it denoises better, and the generator then collapses onto one training
digit instead of a blurry mean (benchmarks/dde_denoisers.py measures both DDEs as denoisers). With the base and
the sigma ladder below (configs/dde_mnist5k.py) the generator covers all ten digits (docs/RESULTS.md, DDE).

training.anneal_sigmas (not in the paper; default () = one sigma throughout): the generator is trained at a
decreasing ladder of noise levels, anneal_sigmas then model.sigma, training.anneal_rounds rounds at each level
before the last. E_p is pre-trained at the first level for training.p_steps steps, then at each later level it is
trained for training.anneal_p_steps more steps (warm-started) and frozen again before that level's rounds; E_q trains beside
it as in the first pre-training. Why: at sigma = 0.5 on mnist5k the digits are ~20 sigmas apart, so p_hat is
separate bumps and KL(q_hat || p_hat) has a local minimum on each one (a point mass there gets no spreading push
from E_q); the untrained generator falls onto the nearest digit. At a large sigma p_hat is one smooth blob and
the generator spreads over it first. The reference code has the same idea as --reduce_sigma_every (E_p keeps
training there); `stage_table` lays out the steps. Evaluation and `score` use the last level, model.sigma.

One trainer step (`step`, a pure function of the networks, the key, the batch and the step index): on a
pre-training step of stage_table (without annealing: step < training.p_steps), one (E2) step of E_p on the data
batch and one (E2) step of E_q on the generator (still untrained in the first pre-training); on every other step,
one round of (E5): training.q_steps E_q steps (with 'joint', each beside an E_p step on one q_steps-th of the data
batch) then training.g_steps generator steps (lax.fori_loop). The branch is a lax.cond; each network has its own
optimizer (G's learning rate: training.nets.G.lr).

Training snapshots: the buffer 'snapshots' [training.n_snapshots, training.snapshot_n, *data shape] holds the raw
generator's output on one fixed set of z at rounds 0, snapshot_every, 2 snapshot_every, ... (round 0 = the
untrained generator). It is not a trained network, so it is checkpointed and resumed with the rest and `plot`
draws the strip of rounds from it.

Evaluation, 2-D toys: kl_grid = KL(p_hat || q_hat) on a grid, with p_hat the exact smoothed target and q_hat the
histogram of the generator's samples convolved with N(0, sigma^2 I) (kl_grid_rev = KL(q_hat || p_hat));
*_baseline is the same estimator on as many exact draws of p (its floor); mmd between generator samples and
true samples; mode_tv = total variation between the generator's mass per mixture component (nearest mean) and
the weights; ep_score_rel_mse = the relative error of grad E_p / sigma^2 against the exact score of p_hat.
Images: the shared image metrics (dsm_jax/eval/images.py); samples.npz holds x in [0, 1].
"""
from __future__ import annotations

from typing import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dsm_jax import fields, gaussian_base, likelihood, models, samplers, sampling, viz
from dsm_jax.eval import images as image_eval
from dsm_jax.eval import toy as toy_eval
from dsm_jax.methods.base import Method, register
from dsm_jax.train.state import NetState, net_optimizer
from dsm_jax.validation import one_of, positive, require

Array = jax.Array
NETS = ("Ep", "Eq", "G")  # the trained networks; 'snapshots' is a buffer
BASE_ENERGIES = ("none", "gaussian")
EP_TRAINING = ("joint", "pretrain")
TOY_ENERGIES, TOY_GENERATORS = ("energy_mlp", "dense_net"), ("generator_mlp", "dense_net")
IMAGE_ENERGIES, IMAGE_GENERATORS = ("dense_net", "conv_energy", "energy_resnet"), ("dense_net", "conv_generator")
_SNAP_TAG = 0x5AA9  # the key of the fixed snapshot z


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


def fit_dde_on_batches(apply_fn: Callable, net: NetState, key, batches: Array, sigma: float,
                       antithetic: bool = False) -> tuple[NetState, Array]:
  """One optimizer step of (E2) on each of batches [n, B, ...] in turn. Returns (the network's state, mean loss)."""

  def body(net, inp):
    x, k = inp
    loss, grads = jax.value_and_grad(lambda q: dde_loss(lambda v: apply_fn(q, v), k, x, sigma, antithetic))(net.params)
    return net.apply_gradients(grads), loss

  net, losses = jax.lax.scan(body, net, (batches, jax.random.split(key, batches.shape[0])))
  return net, jnp.mean(losses)


def fit_dde(apply_fn: Callable, net: NetState, key, draw: Callable, n_steps: int, sigma: float,
            antithetic: bool = False) -> tuple[NetState, Array]:
  """n_steps optimizer steps of (E2) for the DDE apply_fn(params, x) -> E(x) [B] on batches draw(key_i) [B, ...]
  (held fixed: no gradient flows into what draws them). Returns (the network's state, mean loss)."""

  def body(i, carry):
    net, total = carry
    kx, ke = jax.random.split(jax.random.fold_in(key, i))
    x = jax.lax.stop_gradient(draw(kx))
    loss, grads = jax.value_and_grad(lambda q: dde_loss(lambda v: apply_fn(q, v), ke, x, sigma, antithetic))(net.params)
    return net.apply_gradients(grads), total + loss

  net, total = jax.lax.fori_loop(0, int(n_steps), body, (net, jnp.asarray(0.0)))
  return net, total / int(n_steps)


# ------------------------------------------------------------------------------------ config
def defaults(method: str) -> dict:
  return {
      "model": {"sigma": 0.5,                # the one (or last) noise level (E1)
                "latent_dim": 16,            # z ~ N(0, I_latent_dim)
                "latent_std": 1.0,           # G sees latent_std * z (the reference: 1)
                "base_energy": "none",       # none | gaussian: + sigma^2 log N_hat(x) of the data's Gaussian fit
                "dde": models.defaults("energy_mlp"),
                "generator": models.defaults("generator_mlp")},
      "training": {"ep_training": "joint",   # joint: E_p trains in every round (reference) | pretrain: then frozen
                   "p_steps": 2000,          # pre-training steps of E_p and E_q before the first round
                   "q_steps": 10,            # E_q steps per round (E5)
                   "g_steps": 1,             # generator steps per round
                   "gen_batch_size": 100,    # z per E_q / generator step
                   "antithetic": False,      # (E2) averaged over eps and -eps
                   "antithetic_g": False,    # (E4) averaged over eps and -eps
                   "anneal_sigmas": (),      # noise levels before model.sigma, decreasing; () = one sigma
                   "anneal_rounds": 0,       # generator rounds at each of them
                   "anneal_p_steps": 0,      # E_p steps at the start of each later level
                   "n_snapshots": 8,         # training_rounds.png: the generator at rounds 0, snapshot_every, ...
                   "snapshot_every": 250,
                   "snapshot_n": 8,          # ... on snapshot_n fixed z
                   "nets": {"Ep": net_optimizer(), "Eq": net_optimizer(), "G": net_optimizer()}},
      "sampling": {"n_samples": 1000,
                   "inpaint_steps": 500,     # --mode=inpaint: Langevin steps on E_p's score at model.sigma ...
                   "inpaint_eps": 0.05},     # ... with this step (paper form: x + eps/2 s + sqrt(eps) z)
      "eval": {"grid_n": 256,                # 2-D targets: kl_grid on grid_n x grid_n cells ...
               "grid_lim": 0.0},             # ... over [-lim, lim]^2; 0: every mixture mean + 6 smoothed std
  }


def _check_net(config, sub: str, names) -> None:
  require(config.model[sub].name in names, f"model.{sub}.name",
          f"must be one of {list(names)} for this data, got {config.model[sub].name!r}")


def stage_table(config) -> dict:
  """The trainer's step plan for training.anneal_sigmas (module docstring), as numpy arrays over the n_iters steps:
  'sigma' (the step's noise level), 'pre' (True: an E_p/E_q pre-training step, False: a generator round) and
  'round' (generator rounds done before the step). Without annealing: sigma throughout, p_steps pre-training
  steps, then rounds."""
  t = config.training
  levels = [float(s) for s in t.anneal_sigmas] + [float(config.model.sigma)]
  n_iters, p_first = int(t.n_iters), int(t.p_steps)
  sig, pre = [], []
  for i, s in enumerate(levels):
    n_pre = p_first if i == 0 else int(t.anneal_p_steps)
    n_rounds = int(t.anneal_rounds) if i < len(levels) - 1 else n_iters - len(sig) - n_pre
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
  t = config.training
  positive(config, "model.sigma")
  positive(config, "model.latent_dim", integer=True)
  positive(config, "model.latent_std")
  one_of(config, "model.base_energy", BASE_ENERGIES)
  one_of(config, "training.ep_training", EP_TRAINING)
  for k in ("q_steps", "g_steps", "gen_batch_size"):
    positive(config, f"training.{k}", integer=True)
  positive(config, "training.p_steps", integer=True, allow_zero=t.ep_training == "joint")
  if t.ep_training == "joint":
    require(t.batch_size % t.q_steps == 0, "training.batch_size",
            f"{t.batch_size} is not divisible by training.q_steps = {t.q_steps} (with ep_training 'joint' each round's "
            "batch is split into the q_steps minibatches of E_p's steps)")
  positive(config, "training.n_snapshots", integer=True, allow_zero=True)
  positive(config, "training.snapshot_every", integer=True)
  positive(config, "training.snapshot_n", integer=True)
  for k in ("antithetic", "antithetic_g"):
    require(isinstance(t[k], bool), f"training.{k}", f"must be True or False, got {t[k]!r}")
  anneal = tuple(t.anneal_sigmas)
  n_fixed = 0
  if anneal:
    require(all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in anneal),
            "training.anneal_sigmas", f"must be positive noise levels, got {anneal!r}")
    ladder = list(anneal) + [config.model.sigma]
    require(all(a > b for a, b in zip(ladder, ladder[1:])), "training.anneal_sigmas",
            f"must decrease and stay above model.sigma ({config.model.sigma}), got {anneal!r}")
    positive(config, "training.anneal_rounds", integer=True)
    positive(config, "training.anneal_p_steps", integer=True)
    n_fixed = len(anneal) * (t.anneal_rounds + t.anneal_p_steps)
  require(isinstance(t.n_iters, int) and t.n_iters > t.p_steps + n_fixed, "training.n_iters",
          f"must exceed training.p_steps ({t.p_steps}, the E_p pre-training steps)"
          + (f" plus the {n_fixed} steps of the annealing stages" if anneal else "")
          + f" so that generator rounds run at model.sigma, got {t.n_iters!r}")
  _check_net(config, "dde", IMAGE_ENERGIES if images else TOY_ENERGIES)
  _check_net(config, "generator", IMAGE_GENERATORS if images else TOY_GENERATORS)
  positive(config, "sampling.n_samples", integer=True)
  positive(config, "sampling.inpaint_steps", integer=True)
  positive(config, "sampling.inpaint_eps")
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
  e_net = models.build(m.dde, shape, "model.dde")
  base = gaussian_base.fit_dataset(dataset, config.seed) if m.base_energy == "gaussian" else None

  def log_density(p_e, x, level=sigma):
    """level: the noise level of the base term (model.sigma unless annealing, module docstring)."""
    e = -e_net.apply(p_e, x)
    if base is None:
      return e
    return e + (level ** 2 * gaussian_base.log_density(base, x, level)).astype(e.dtype)

  return log_density


@register("dde", defaults=defaults)
def build(config, dataset) -> Method:
  validate(config, dataset)
  m, t, s_cfg = config.model, config.training, config.sampling
  shape = tuple(int(d) for d in dataset.shape)
  images = is_image_data(dataset)
  sigma, latent = float(m.sigma), int(m.latent_dim)  # sigma: the last (or only) noise level
  plan = {k: jnp.asarray(v) for k, v in stage_table(config).items()}
  q_steps, g_steps, n_gen = int(t.q_steps), int(t.g_steps), int(t.gen_batch_size)
  joint = t.ep_training == "joint"
  n_snap, snap_every, snap_n = int(t.n_snapshots), int(t.snapshot_every), int(t.snapshot_n)
  e_net = models.build(m.dde, shape, "model.dde")
  g_net = models.build(m.generator, shape, "model.generator", generator=True)
  log_density = make_log_density(config, dataset)

  def generate(p_g, z):
    """G(z) for z ~ N(0, I): the network sees latent_std * z (1 in the reference; a larger value spreads the
    untrained generator's outputs, whose z-independent part otherwise dominates)."""
    x = g_net.apply(p_g, m.latent_std * z)
    chex.assert_shape(x, (z.shape[0],) + shape)
    return x

  def init(key):
    kp, kq, kg = jax.random.split(key, 3)
    x0, z0 = jnp.zeros((1,) + shape), jnp.zeros((1, latent))
    params = {"Ep": e_net.init(kp, x0), "Eq": e_net.init(kq, x0), "G": g_net.init(kg, z0)}
    if n_snap:
      params["snapshots"] = jnp.zeros((n_snap, snap_n) + shape, jnp.float32)
    return params

  def draw_generated(p_g):
    return lambda k: generate(p_g, jax.random.normal(k, (n_gen, latent)))

  def pretrain(nets, key, batch, sig, rnd):
    """A pre-training step at noise level sig: (E2) for E_p on the data batch, and for E_q on the generator
    (untrained in the first stage)."""
    ld = lambda p_e, v: log_density(p_e, v, sig)
    kp, kq = jax.random.split(key)
    ep, loss_p = fit_dde(ld, nets["Ep"], kp, lambda k: batch, 1, sig, t.antithetic)
    eq, loss_q = fit_dde(ld, nets["Eq"], kq, draw_generated(nets["G"].params), 1, sig, t.antithetic)
    kz, ke = jax.random.split(jax.random.fold_in(key, 1))
    kl = generator_loss(nets["G"].params, g_net.apply, lambda v: ld(eq.params, v), lambda v: ld(ep.params, v),
                        jax.random.normal(kz, (n_gen, latent)), sig * jax.random.normal(ke, (n_gen,) + shape),
                        sig)  # (E3) at the untrained generator; no generator step yet
    metrics = {"loss": loss_p, "loss_p": loss_p, "loss_q": loss_q, "kl_hat": kl, "grad_norm_g": jnp.asarray(0.0)}
    return {**nets, "Ep": ep, "Eq": eq}, metrics

  def dde_round(nets, key, batch, sig, rnd):
    """(E5) one round at noise level sig: q_steps of (E2) for E_q on G(z) + eps, then g_steps of (E4) with
    E_p, E_q fixed."""
    ld = lambda p_e, v: log_density(p_e, v, sig)
    kq, kg = jax.random.split(key)
    new = dict(nets)
    if n_snap:  # the generator at the start of rounds 0, snapshot_every, ... (before this round's update)
      idx = rnd // snap_every
      take = (rnd % snap_every == 0) & (idx < n_snap)
      z_snap = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(config.seed), _SNAP_TAG), (snap_n, latent))
      new["snapshots"] = jax.lax.cond(
          take, lambda s: jax.lax.dynamic_update_index_in_dim(s, generate(nets["G"].params, z_snap), idx, 0),
          lambda s: s, nets["snapshots"])
    eq, loss_q = fit_dde(ld, nets["Eq"], kq, draw_generated(nets["G"].params), q_steps, sig, t.antithetic)
    if joint:  # the reference: E_p steps on the round's data, one per minibatch, beside E_q's
      ep, loss_p = fit_dde_on_batches(ld, nets["Ep"], jax.random.fold_in(key, 2),
                                      batch.reshape((q_steps, -1) + batch.shape[1:]), sig, t.antithetic)
    else:  # frozen: its (E2) loss on the step's fresh data batch (no update)
      ep = nets["Ep"]
      loss_p = dde_loss(lambda v: ld(ep.params, v), jax.random.fold_in(key, 2), batch, sig, t.antithetic)
    log_q = lambda v: ld(jax.lax.stop_gradient(eq.params), v)
    log_p = lambda v: ld(jax.lax.stop_gradient(ep.params), v)

    def g_body(i, carry):
      g, kl_sum, gn_sum = carry
      kz, ke = jax.random.split(jax.random.fold_in(kg, i))
      z = jax.random.normal(kz, (n_gen, latent))
      eps = sig * jax.random.normal(ke, (n_gen,) + shape)
      kl, grads = jax.value_and_grad(generator_loss)(g.params, g_net.apply, log_q, log_p, z, eps, sig,
                                                     t.antithetic_g)  # (E4)
      return g.apply_gradients(grads), kl_sum + kl, gn_sum + optax.tree.norm(grads)

    g, kl_sum, gn_sum = jax.lax.fori_loop(0, g_steps, g_body, (nets["G"], jnp.asarray(0.0), jnp.asarray(0.0)))
    metrics = {"loss": loss_q, "loss_p": loss_p, "loss_q": loss_q, "kl_hat": kl_sum / g_steps,
               "grad_norm_g": gn_sum / g_steps}
    new.update({"Ep": ep, "Eq": eq, "G": g})
    return new, metrics

  def step(nets, key, batch, step_index):
    i = jnp.minimum(step_index, plan["pre"].shape[0] - 1)  # the step's place in stage_table
    sig, is_pre, rnd = plan["sigma"][i], plan["pre"][i], plan["round"][i]
    new, raw = jax.lax.cond(is_pre, pretrain, dde_round, nets, key, batch, sig, rnd)
    return new, {**raw, "sigma": sig, "round": (rnd + jnp.where(is_pre, 0, 1)).astype(jnp.float32)}  # rounds done

  # ---------------------------------------------------------------------------------- sampling
  draw = sampling.compile_draw(lambda p, key, n: {"x": generate(p["G"], jax.random.normal(key, (n, latent)))})

  def sample(params, key):
    out = sampling.sample_in_batches(draw, params, key, s_cfg.n_samples)
    if n_snap:
      out["snapshots"] = np.asarray(params["snapshots"])
    if images:
      out = {k: np.asarray(dataset.to_unit(v)) for k, v in out.items()}
    return out

  def snapshot_titles(k: int):
    return [f"round {i * snap_every}" for i in range(k)]

  # ---------------------------------------------------------------------------------- evaluation
  def grid_lim() -> float:
    lim = float(config.eval.grid_lim)
    if lim > 0:
      return lim
    if hasattr(dataset, "means"):  # Gaussian mixtures: every mean plus 6 smoothed standard deviations
      s = np.sqrt(np.max(np.asarray(dataset.stds)) ** 2 + sigma ** 2)
      return float(np.max(np.abs(np.asarray(dataset.means))) + 6.0 * s)
    return 6.0 + 6.0 * sigma

  def evaluate(params, key, samples):
    if images:
      return image_eval.evaluate(config, dataset, samples["x"])
    k_mmd, k_ref, k_sc = jax.random.split(key, 3)
    x = np.asarray(samples["x"], np.float64)
    out = {"mmd": toy_eval.mmd_to_data(x, dataset, k_mmd, 0.0), "sigma": sigma}
    if getattr(dataset, "has_density", False):
      ref = np.asarray(dataset.sample(k_ref, len(x)), np.float64)
      n_grid = int(config.eval.grid_n)
      out.update(toy_eval.grid_kls(x, dataset, sigma, grid_lim(), n_grid))
      out.update({f"{k}_baseline": v for k, v in toy_eval.grid_kls(ref, dataset, sigma, grid_lim(), n_grid).items()})
      out["ep_score_rel_mse"] = toy_eval.score_error(score_of(params), dataset, k_sc, sigma)
    if hasattr(dataset, "means"):
      out["mode_tv"] = toy_eval.mode_tv(x, dataset)
      out["mode_tv_baseline"] = toy_eval.mode_tv(np.asarray(dataset.sample(k_ref, len(x))), dataset)
    out.update(toy_eval.mixture_metrics(x, dataset))  # the 1/5, 4/5 mixture: target 0.8
    return out

  # ---------------------------------------------------------------------------------- pictures
  def plot(samples, params, sample_dir):
    if images:
      paths = [viz.image_grid(f"{sample_dir}/samples.png", samples["x"][:64])]
      if n_snap:  # one row per fixed z, one column per snapshot round
        paths.append(viz.trajectory_strip(f"{sample_dir}/training_rounds.png", samples["snapshots"][:, :8]))
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
    panels = {"E_p / sigma^2 (learned log p_hat)":
              lambda pts: np.asarray(log_density(params["Ep"], jnp.asarray(pts))) / sigma ** 2,
              "E_q / sigma^2 (learned log q_hat)":
              lambda pts: np.asarray(log_density(params["Eq"], jnp.asarray(pts))) / sigma ** 2}
    if has:
      panels["exact log p_hat"] = lambda pts: np.asarray(dataset.log_prob(jnp.asarray(pts), sigma))
    paths.append(viz.contours_2d(f"{sample_dir}/densities.png", panels, lim))
    return paths

  def score_of(params):
    """grad log p_hat = grad E_p / sigma^2 (the data DDE's smoothed score, defined at the DDE's one sigma)."""
    return fields.score_from_log_density(lambda v, s: log_density(params["Ep"], v), scale=sigma ** 2)

  pre_steps = float(np.sum(stage_table(config)["pre"]))
  rounds = max(float(t.n_iters) - pre_steps, 0.0)
  per_step = {"Ep": (pre_steps + (q_steps * rounds if joint else 0.0)) / max(t.n_iters, 1), "Eq": (pre_steps + q_steps * rounds) / max(t.n_iters, 1),
              "G": g_steps * rounds / max(t.n_iters, 1)}
  inpaint_sched = samplers.annealed_schedule(np.asarray([sigma]), float(s_cfg.inpaint_eps), int(s_cfg.inpaint_steps))

  @jax.jit
  def inpaint(params, key, known, mask):  # --mode=inpaint: Langevin on p_hat's score, known entries held, then Tweedie
    k0, k1 = jax.random.split(key)
    x0 = sampling.start(jax.random.uniform(k0, known.shape, known.dtype))
    x, _ = samplers.inpaint_langevin(score_of(params), k1, x0, sampling.start(known), sampling.start(mask),
                                     inpaint_sched, final_denoise_sigma=sigma)
    return x

  def log_likelihood(params, key):  # --mode=loglik: exp(E_p / sigma^2) models p_hat, the data smoothed at sigma
    energy_fn = lambda x: -log_density(params["Ep"], x) / sigma ** 2
    return likelihood.evaluate_energy(config, dataset, energy_fn, sigma, key, progress=bool(config.runtime.progress))

  return Method(name="dde", init=init, step=step, networks=per_step, sample=sample, evaluate=evaluate, plot=plot,
                score=score_of, draw=draw, inpaint=inpaint, log_likelihood=log_likelihood)

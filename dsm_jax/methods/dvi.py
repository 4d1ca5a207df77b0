"""Denoiser-guided variational inference (Huszar 2017, "Variational Inference using Implicit Models,
Part IV: Denoisers instead of Discriminators", inference.vc; the model of Part I).

The blog numbers no equations; the steps are numbered here (D1)-(D5) and cited in the code.

(D1) An implicit variational family: w = G(z; phi), z ~ N(0, I_latent). q(w) has no density we can
     evaluate, but samples and dG/dphi are cheap.
(D2) KL[q || p(w | D)] = E_q log q(w) - E_q log p(w) - E_q log p(D | w) + log p(D). Reparameterised,
         grad_phi KL = E_z[ (grad_w log q(w) - grad_w log p(w) - grad_w log p(D | w))|_{w = G(z)} dG/dphi ]
     (the remaining term E_q[grad_phi log q_phi(w)] at fixed w is the mean of a score: zero).
(D3) The one unknown, grad_w log q, from a denoiser trained in tandem: F minimises
         E_{w ~ q, eps ~ N(0, I)} || F(w + sigma_n eps) - w ||^2,
     whose optimum is F(v) = v + sigma_n^2 grad log q_sigma(v) (Tweedie), q_sigma = q * N(0, sigma_n^2 I). So
         grad_w log q(w) ≈ (F(w) - w) / sigma_n^2,
     exact as sigma_n -> 0. For a Gaussian q = N(mu, L L^T) the estimate is -(L L^T + sigma_n^2 I)^-1 (w - mu):
     the fixed point of the update then has Cov_q = Cov_p - sigma_n^2 I, a bias of sigma_n^2 per direction.
(D4) The generator update never computes the KL: the cotangent
         g(w) = (F(w) - w) / sigma_n^2 - grad log p(w) - grad log p(D | w)      at w = G(z)
     is pulled back through G with jax.vjp, grad_phi = mean_z g(G(z))^T dG/dphi, and phi DESCENDS it (Adam).
     Signs: g is grad_w of log q(w) - log p(w, D); moving w along -g raises the entropy term (pushes
     samples apart) and the log joint. tests/test_dvi.py checks dH/dL = L^-T for G(z) = mu + L z with the
     exact Gaussian denoiser, and that the step lowers the exact KL on a Gaussian problem.
(D5) Amortised (q(w | y) = G(z, y), F(w, y)): y is drawn from the model's marginal p(y); per example the
     same cotangent with log p(y | w); the objective is E_y KL[q(w | y) || p(w | y)].

Methods: 'dvi' (Bayesian logistic regression with 2-D weights, data 'logreg2d'; reference posterior on a
fine grid, checked by a MALA chain) and 'dvi_amortised' (linear-Gaussian y = A w + noise, data
'linear_gaussian', exact posterior). One train step = model.f_steps denoiser updates on fresh G samples,
then one generator update with the new denoiser; each network has its own optimizer (G's learning rate:
training.nets.G.lr).
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy.signal import fftconvolve

from dsm_jax import models, samplers, sampling, viz
from dsm_jax.eval.toy import grid_kl
from dsm_jax.methods.base import Method, register
from dsm_jax.train.state import net_optimizer, tree_where
from dsm_jax.validation import one_of, positive, require

Array = jax.Array


# ------------------------------------------------------------------------------------ (D3), (D4): the core
def entropy_score(denoiser_fn, w: Array, sigma_n: float, cond=None) -> Array:
  """(D3) grad_w log q(w) ≈ (F(w) - w) / sigma_n^2 for a denoiser F trained at noise sigma_n on q's samples."""
  return (denoiser_fn(w, cond) - w) / sigma_n ** 2


def denoiser_loss(denoise, key, w: Array, sigma_n: float, antithetic: bool = True) -> Array:
  """(D3) E || F(w + sigma_n eps) - w ||^2 / (sigma_n^2 D): 1 for F = identity, below 1 as F learns q.

  antithetic: average the loss over eps and -eps. The minimiser is unchanged (eps is symmetric), but the
  O(1/sigma_n) noise of the score target cancels to first order in the parameter gradient: on the
  linear-Gaussian model, 4000 steps, sigma_n = 0.1, the relative squared score error of F fell from 0.019
  to 0.0024 (docs/log/)."""
  chex.assert_rank(w, 2)
  eps = jax.random.normal(key, w.shape, w.dtype)
  sq = lambda e: jnp.sum((denoise(w + sigma_n * e) - w) ** 2, axis=-1)
  per = 0.5 * (sq(eps) + sq(-eps)) if antithetic else sq(eps)
  return jnp.mean(per) / (sigma_n ** 2 * w.shape[-1])


def generator_cotangent(score_q: Array, grad_log_prior: Array, grad_log_lik: Array) -> Array:
  """(D4) g = grad log q - grad log p(w) - grad log p(D | w): grad_w of log q(w) - log p(w, D)."""
  chex.assert_equal_shape([score_q, grad_log_prior, grad_log_lik])
  return score_q - grad_log_prior - grad_log_lik


def generator_grad(g_fn, phi, cotangent_fn):
  """(D4) grad_phi KL ≈ mean_z g(G(z))^T dG/dphi by one jax.vjp through the generator.

  g_fn(phi) -> w [B, D] (the batch of z is closed over); cotangent_fn(w) -> g [B, D], treated as a
  constant (no gradient flows through the denoiser or the log joint). Returns (grad, w, g): grad has
  phi's structure and is the gradient to DESCEND."""
  w, pullback = jax.vjp(g_fn, phi)
  chex.assert_rank(w, 2)
  g = jax.lax.stop_gradient(cotangent_fn(w))
  chex.assert_equal_shape([g, w])
  (grad,) = pullback(g / w.shape[0])
  return grad, w, g


def grad_log(fn, w: Array, *args) -> Array:
  """Per-row gradient of a per-row log-density fn(w, *args) -> [B] (rows are independent)."""
  return jax.grad(lambda v: jnp.sum(fn(v, *args)))(w)


# ------------------------------------------------------------------------------------ config
def defaults(method: str) -> dict:
  amortised = method == "dvi_amortised"
  data = ({"obs_dim": 3, "prior_std": 1.0, "noise_std": 1.0} if amortised
          else {"n_points": 10, "w_true": (3.0, 1.0), "prior_std": 2.0})
  model = {"latent_dim": 4,          # z ~ N(0, I_latent)
           "sigma_n": 0.1,           # the denoiser's noise (D3)
           "f_steps": 3,             # denoiser steps per generator step
           "f_warmup": 200,          # the first steps train only the denoiser
           "antithetic": True,       # (D3) loss averaged over eps and -eps
           "generator": models.defaults("generator_mlp"),
           "denoiser": models.defaults("denoiser_mlp")}
  model.update({"z_per_y": 4} if amortised else {"n_particles": 512})
  ev = {"n_eval_y": 100} if amortised else {"grid_n": 512, "mala_chains": 2000, "mala_steps": 1000}
  return {"data": data, "model": model, "sampling": {"n_samples": 20000}, "eval": ev,
          "training": {"nets": {"G": net_optimizer(lr=2e-4), "F": net_optimizer()}}}


def validate(config, dataset) -> None:
  m = config.model
  amortised = config.method == "dvi_amortised"
  want = "linear_gaussian" if amortised else "logreg2d"
  require(config.data.dataset == want, "data.dataset",
          f"method {config.method!r} runs on the {want!r} model, got {config.data.dataset!r}")
  positive(config, "model.sigma_n")
  positive(config, "model.latent_dim", integer=True)
  positive(config, "model.f_steps", integer=True)
  positive(config, "model.f_warmup", integer=True, allow_zero=True)
  require(isinstance(m.antithetic, bool), "model.antithetic", f"must be True or False, got {m.antithetic!r}")
  one_of(config, "model.generator.name", ("generator_mlp",))
  one_of(config, "model.denoiser.name", ("denoiser_mlp",))
  positive(config, "sampling.n_samples", integer=True)
  if amortised:
    positive(config, "eval.n_eval_y", integer=True)
    positive(config, "model.z_per_y", integer=True)
  else:
    positive(config, "model.n_particles", integer=True)
    require(config.training.batch_size <= dataset.n_points, "training.batch_size",
            f"is the number of data rows per step and must be <= data.n_points ({dataset.n_points}), got "
            f"{config.training.batch_size}; use {dataset.n_points} for the exact likelihood")
    positive(config, "eval.grid_n", integer=True)
    require(config.eval.grid_n >= 64, "eval.grid_n", f"must be >= 64 for a usable reference, got {config.eval.grid_n}")
    positive(config, "eval.mala_chains", integer=True, allow_zero=True)
    positive(config, "eval.mala_steps", integer=True)


# ------------------------------------------------------------------------------------ the method
@register("dvi", "dvi_amortised", defaults=defaults)
def build(config, dataset) -> Method:
  validate(config, dataset)
  m, s_cfg = config.model, config.sampling
  amortised = config.method == "dvi_amortised"
  w_dim, latent, sigma_n = dataset.w_dim, int(m.latent_dim), float(m.sigma_n)
  cond_dim = dataset.obs_dim if amortised else 0
  g_net = models.build(m.generator, (w_dim,), "model.generator")
  f_net = models.build(m.denoiser, (w_dim,), "model.denoiser", sigma=sigma_n)
  f_steps = int(m.f_steps)

  def init(key):
    kg, kf = jax.random.split(key)
    c0 = jnp.zeros((1, cond_dim)) if amortised else None
    return {"G": g_net.init(kg, jnp.zeros((1, latent)), c0), "F": f_net.init(kf, jnp.zeros((1, w_dim)), c0)}

  def draw_w(p_g, key, n, cond=None):                                           # (D1)
    return g_net.apply(p_g, jax.random.normal(key, (n, latent)), cond)

  def score_q(p_f, w, cond=None):  # (D3): (F(w) - w) / sigma_n^2, read off the network without cancellation
    return f_net.apply(p_f, w, cond, score_only=True)

  def components(p_f, w, batch):
    """The three parts of -g (D4) at w: the direction in which each term moves a sample. batch: the data
    rows (dvi; None = all of them) or the observations y (dvi_amortised, also the denoiser's condition)."""
    return {"entropy": -score_q(p_f, w, batch if amortised else None),
            "prior": grad_log(dataset.log_prior, w),
            "likelihood": grad_log(dataset.log_likelihood, w, batch)}

  def step(nets, key, batch, t):
    k_f, k_g = jax.random.split(key)
    if amortised:  # z_per_y draws of w for every observation y in the batch (D5)
      batch = jnp.repeat(batch, int(m.z_per_y), axis=0)
    cond = batch if amortised else None
    n = batch.shape[0] if amortised else int(m.n_particles)
    G = nets["G"]

    def f_update(i, carry):  # (D3) the denoiser: f_steps optimizer steps on w + sigma_n eps, w ~ q held fixed
      F, loss_sum = carry
      kz, ke = jax.random.split(jax.random.fold_in(k_f, i))
      w = jax.lax.stop_gradient(draw_w(G.params, kz, n, cond))
      loss, grads = jax.value_and_grad(
          lambda p: denoiser_loss(lambda v: f_net.apply(p, v, cond), ke, w, sigma_n, m.antithetic))(F.params)
      return F.apply_gradients(grads), loss_sum + loss

    F, loss_f = jax.lax.fori_loop(0, f_steps, f_update, (nets["F"], jnp.asarray(0.0)))
    loss_f = loss_f / f_steps

    z = jax.random.normal(k_g, (n, latent))                                     # (D4), with the new denoiser

    def cot(w):
      c = components(F.params, w, batch)
      return generator_cotangent(-c["entropy"], c["prior"], c["likelihood"])

    grads_g, w, g = generator_grad(lambda p: g_net.apply(p, z, cond), G.params, cot)
    G = tree_where(t >= int(m.f_warmup), G.apply_gradients(grads_g), G)  # the first f_warmup steps train F alone
    c = components(F.params, w, batch)
    metrics = {"loss": loss_f, "loss_f": loss_f, "grad_norm": optax.tree.norm(grads_g),
               "neg_log_joint": -jnp.mean(dataset.log_joint(w, batch)),  # the cross-entropy part of the KL
               "entropy_score_norm": jnp.mean(jnp.linalg.norm(c["entropy"], axis=-1)),
               "cotangent_norm": jnp.mean(jnp.linalg.norm(g, axis=-1))}
    return {**nets, "G": G, "F": F}, metrics

  # ---------------------------------------------------------------------------------- sampling
  n_samples = int(s_cfg.n_samples)

  def held_out_y(key):
    return dataset.sample(jax.random.fold_in(key, 0x0E7A1), int(config.eval.n_eval_y))

  draw = sampling.compile_draw(lambda p, key, n: {"x": draw_w(p["G"], key, n)})

  @jax.jit
  def _draw_amortised(p_g, key, ys):
    keys = jax.random.split(key, ys.shape[0])
    return jax.vmap(lambda k, y: draw_w(p_g, k, n_samples, jnp.broadcast_to(y, (n_samples, y.shape[0]))))(keys, ys)

  def sample(params, key):
    if amortised:
      # held-out y: a fixed draw from p(y) (its own key, independent of the training data keys)
      ys = held_out_y(jax.random.PRNGKey(config.seed))
      return {"x": np.asarray(_draw_amortised(params["G"], key, ys)), "y": np.asarray(ys)}
    return sampling.sample_in_batches(draw, params, key, n_samples)

  # ---------------------------------------------------------------------------------- evaluation
  cache = {}

  def reference():
    if "ref" not in cache:
      cache["ref"] = dataset.grid_posterior(int(config.eval.grid_n))
    return cache["ref"]

  def evaluate(params, key, samples):
    if amortised:
      return evaluate_amortised(dataset, samples["x"], samples["y"], sigma_n, key)
    ref = reference()
    out = evaluate_logreg(samples["x"], ref, key)
    if int(config.eval.mala_chains) > 0:  # an independent check of the grid reference
      x0 = jnp.asarray(ref["mean"], jnp.float32) + 0.1 * jax.random.normal(key, (int(config.eval.mala_chains), 2))
      lj = lambda w, s: dataset.log_joint(w)
      step = 0.5 * float(np.min(np.linalg.eigvalsh(ref["cov"])))
      xs, aux = jax.jit(lambda k, x: samplers.mala(lj, k, x, step, int(config.eval.mala_steps)))(
          jax.random.fold_in(key, 7), x0)
      xs = np.asarray(xs, np.float64)
      out["ref_mala_mean_err"] = float(np.linalg.norm(xs.mean(0) - ref["mean"]) / np.linalg.norm(ref["mean"]))
      out["ref_mala_cov_err"] = float(np.linalg.norm(np.cov(xs.T) - ref["cov"]) / np.linalg.norm(ref["cov"]))
      out["ref_mala_accept"] = float(aux["accept_rate"])
    out["cov_bias_sigma_n"] = float(sigma_n ** 2 * np.sqrt(w_dim) / np.linalg.norm(ref["cov"]))
    return out

  # ---------------------------------------------------------------------------------- pictures
  def plot(samples, params, sample_dir):
    if amortised:
      ys = samples["y"][:6]
      means, cov = dataset.posterior(ys)
      import matplotlib.pyplot as plt
      fig, axes = plt.subplots(2, 3, figsize=(11, 7.5))
      for i, ax in enumerate(axes.ravel()[:len(ys)]):
        s = np.sqrt(np.diag(cov))
        g1 = np.linspace(means[i, 0] - 4 * s[0], means[i, 0] + 4 * s[0], 150)
        g2 = np.linspace(means[i, 1] - 4 * s[1], means[i, 1] + 4 * s[1], 150)
        w1, w2 = np.meshgrid(g1, g2, indexing="xy")
        d = np.stack([w1 - means[i, 0], w2 - means[i, 1]], -1)
        ld = -0.5 * np.einsum("...i,ij,...j->...", d, np.linalg.inv(cov), d)
        viz.scatter_on_grid("", samples["x"][i], g1, g2, ld, f"held-out y #{i}: q(w|y) vs exact p(w|y)", ax=ax)
      fig.tight_layout()
      path = f"{sample_dir}/amortised_posteriors.png"
      fig.savefig(path, dpi=100)
      plt.close(fig)
      return [path]
    ref = reference()
    paths = [viz.scatter_on_grid(f"{sample_dir}/samples.png", samples["x"], ref["w1"], ref["w2"],
                                 ref["log_density"], "DVI: q(w) samples over the grid posterior p(w | D)")]
    pts = jnp.asarray(samples["x"][:60])
    comp = {k: np.asarray(v) for k, v in jax.jit(lambda p, w: components(p, w, None))(params["F"], pts).items()}
    total = comp["entropy"] + comp["prior"] + comp["likelihood"]
    fields = {"entropy (denoiser): -(F(w)-w)/sigma_n^2": comp["entropy"], "prior: grad log p(w)": comp["prior"],
              "likelihood: grad log p(D|w)": comp["likelihood"], "sum (= -g, the step direction)": total}
    paths.append(viz.quiver_panels(f"{sample_dir}/gradients.png", np.asarray(pts), fields, ref["w1"], ref["w2"],
                                   ref["log_density"], "the three parts of the generator's gradient at q's samples"))
    g1, g2 = np.meshgrid(np.linspace(ref["w1"][0], ref["w1"][-1], 17)[1:-1],
                         np.linspace(ref["w2"][0], ref["w2"][-1], 17)[1:-1])  # 15 x 15 inner points
    grid = jnp.asarray(np.stack([g1.ravel(), g2.ravel()], -1), jnp.float32)
    comp = {k: np.asarray(v) for k, v in jax.jit(lambda p, w: components(p, w, None))(params["F"], grid).items()}
    fields = dict(zip(fields, (comp["entropy"], comp["prior"], comp["likelihood"],
                               comp["entropy"] + comp["prior"] + comp["likelihood"])))
    paths.append(viz.quiver_panels(f"{sample_dir}/gradients_grid.png", np.asarray(grid), fields, ref["w1"], ref["w2"],
                                   ref["log_density"], "the three parts of the generator's gradient on a grid"))
    paths.append(viz.paths_on_grid(f"{sample_dir}/denoising.png", iterated_denoising(params["F"], samples["x"][:40]),
                                   ref["w1"], ref["w2"], ref["log_density"],
                                   "the trained denoiser F, applied repeatedly (over the grid posterior p(w | D))"))
    return paths

  def iterated_denoising(p_f, w, n_up: int = 200, n_down: int = 20) -> dict:
    """The blog's picture of a denoiser: F(w) = w + sigma_n^2 grad log q_sigma(w), so w <- F(w) climbs to a mode
    of q_sigma (from q's samples spread 2.5x about their mean), and the reverse step w <- w - (F(w) - w) descends
    (from q's samples)."""
    f = jax.jit(lambda v: f_net.apply(p_f, v, None))
    w = np.asarray(w, np.float32)
    start = w.mean(0) + 2.5 * (w - w.mean(0))
    up, down = [start], [w]
    for _ in range(n_up):
      up.append(np.asarray(f(jnp.asarray(up[-1]))))
    for _ in range(n_down):
      down.append(2.0 * down[-1] - np.asarray(f(jnp.asarray(down[-1]))))
    return {f"w <- F(w), {n_up} times: climbs towards the mode": np.stack(up),
            f"w <- w - (F(w) - w), {n_down} times: descends": np.stack(down)}

  return Method(name=config.method, init=init, step=step, networks={"G": 1, "F": f_steps}, sample=sample,
                evaluate=evaluate, plot=plot, draw=draw)


# ------------------------------------------------------------------------------------ evaluation helpers
def _moments(x):
  x = np.asarray(x, np.float64)
  return x.mean(0), np.cov(x.T)


def kde_on_grid(x: np.ndarray, g1: np.ndarray, g2: np.ndarray) -> tuple[np.ndarray, float]:
  """A Gaussian KDE of 2-D samples on a regular grid, normalised there: binned (2-D histogram on the grid's
  cells) and convolved (FFT) with the Scott's-rule kernel N(0, n^(-1/3) Cov(x)). Returns the log-density
  [len(g2), len(g1)] and the fraction of samples outside the grid."""
  x = np.asarray(x, np.float64)
  x = x[np.all(np.isfinite(x), axis=1)]
  d1, d2 = g1[1] - g1[0], g2[1] - g2[0]
  e1 = np.concatenate([g1 - d1 / 2, [g1[-1] + d1 / 2]])
  e2 = np.concatenate([g2 - d2 / 2, [g2[-1] + d2 / 2]])
  hist, _, _ = np.histogram2d(x[:, 1], x[:, 0], bins=[e2, e1])  # rows: 2nd coordinate
  outside = 1.0 - hist.sum() / max(len(x), 1)
  h = len(x) ** (-1.0 / 3.0) * np.cov(x.T)  # Scott's rule, d = 2: n^(-2/(d+4)) Cov
  hinv = np.linalg.inv(h)
  r1 = min(int(np.ceil(4 * np.sqrt(h[0, 0]) / d1)), len(g1))  # a kernel wider than the grid is cut there
  r2 = min(int(np.ceil(4 * np.sqrt(h[1, 1]) / d2)), len(g2))
  o1, o2 = np.meshgrid(np.arange(-r1, r1 + 1) * d1, np.arange(-r2, r2 + 1) * d2, indexing="xy")
  off = np.stack([o1, o2], -1)
  kern = np.exp(-0.5 * np.einsum("...i,ij,...j->...", off, hinv, off))
  dens = np.maximum(fftconvolve(hist, kern / kern.sum(), mode="same"), 0.0)
  dens = dens / (dens.sum() * d1 * d2)
  return np.log(np.maximum(dens, 1e-300)), float(outside)


def sample_grid(ref: dict, key, n: int) -> np.ndarray:
  """n exact draws from the gridded posterior (a cell by its mass, then uniform within the cell)."""
  rng = np.random.default_rng(np.asarray(jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
                                          else key).astype(np.uint32))
  p = np.exp(ref["log_density"].ravel()) * ref["cell_area"]
  idx = rng.choice(p.size, n, p=p / p.sum())
  d1, d2 = ref["w1"][1] - ref["w1"][0], ref["w2"][1] - ref["w2"][0]
  pts = ref["points"][idx]
  return pts + (rng.uniform(size=(n, 2)) - 0.5) * np.array([d1, d2])


def evaluate_logreg(x: np.ndarray, ref: dict, key) -> dict:
  """post_mean_err = ||m_q - m_p|| / ||m_p||, post_cov_err = ||C_q - C_p||_F / ||C_p||_F (m_p, C_p by grid
  quadrature), kl = KL[q || p(w | D)] estimated on the grid with q's KDE (`kde_on_grid`). The *_baseline
  entries apply the same estimators to as many exact posterior draws: their values are the estimators'
  own floor (Monte Carlo noise and KDE smoothing), what a perfect q would score."""
  out = {}
  xf = np.asarray(x, np.float64)
  xf = xf[np.all(np.isfinite(xf), axis=1)]
  if len(xf) < 10:
    return {"post_mean_err": float("nan"), "post_cov_err": float("nan"), "kl": float("nan")}

  def scores(pts, tag):
    m, c = _moments(pts)
    lq, outside = kde_on_grid(pts, ref["w1"], ref["w2"])
    out[f"post_mean_err{tag}"] = float(np.linalg.norm(m - ref["mean"]) / np.linalg.norm(ref["mean"]))
    out[f"post_cov_err{tag}"] = float(np.linalg.norm(c - ref["cov"]) / np.linalg.norm(ref["cov"]))
    out[f"kl{tag}"] = grid_kl(lq, ref["log_density"], ref["cell_area"])
    out[f"q_mass_outside_grid{tag}"] = outside

  scores(xf, "")
  scores(sample_grid(ref, key, len(xf)), "_baseline")
  m, c = _moments(xf)
  out["q_mean_0"], out["q_mean_1"] = float(m[0]), float(m[1])
  out["post_mean_0"], out["post_mean_1"] = float(ref["mean"][0]), float(ref["mean"][1])
  out["q_std_0"], out["q_std_1"] = float(np.sqrt(c[0, 0])), float(np.sqrt(c[1, 1]))
  out["post_std_0"], out["post_std_1"] = float(np.sqrt(ref["cov"][0, 0])), float(np.sqrt(ref["cov"][1, 1]))
  return out


def gaussian_kl(m0, c0, m1, c1) -> float:
  """KL[N(m0, c0) || N(m1, c1)]."""
  k = len(m0)
  c1i = np.linalg.inv(c1)
  d = m1 - m0
  return float(0.5 * (np.trace(c1i @ c0) + d @ c1i @ d - k + np.log(np.linalg.det(c1) / np.linalg.det(c0))))


def evaluate_amortised(dataset, x: np.ndarray, ys: np.ndarray, sigma_n: float, key) -> dict:
  """Errors of q(w | y) against the exact posterior, averaged over the held-out y (x [n_y, M, 2]):
  post_mean_err = sum_y ||m_q(y) - mu(y)|| / sum_y ||mu(y)|| (relative), post_mean_err_sd = mean_y of the
  Mahalanobis distance sqrt((m_q - mu)^T Sigma^-1 (m_q - mu)) (in posterior standard deviations),
  post_cov_err = mean_y ||C_q(y) - Sigma||_F / ||Sigma||_F, kl_gauss = mean_y KL[N(m_q, C_q) || p(w | y)]
  (q's Gaussian fit: exact for the KL only when q is Gaussian). *_baseline: the same with M exact draws
  per y (the Monte Carlo floor); cov_bias_sigma_n = ||sigma_n^2 I||_F / ||Sigma||_F, the relative
  covariance error that a perfect denoiser at sigma_n leaves for a Gaussian q (D3)."""
  x = np.asarray(x, np.float64)
  ys = np.asarray(ys, np.float64)
  chex.assert_rank(x, 3)
  mus, cov = dataset.posterior(ys)
  n_y, n = x.shape[:2]
  ci = np.linalg.inv(cov)
  chol = np.linalg.cholesky(cov)
  rng = np.random.default_rng(np.asarray(jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
                                          else key).astype(np.uint32))
  out = {}
  for tag in ("", "_baseline"):
    num, den, sd, ce, kl, bad = 0.0, 0.0, [], [], [], 0
    for i in range(n_y):
      xi = x[i] if tag == "" else mus[i] + rng.normal(size=(n, 2)) @ chol.T
      xi = xi[np.all(np.isfinite(xi), axis=1)]
      if len(xi) < 10:
        bad += 1
        continue
      m, c = _moments(xi)
      num += np.linalg.norm(m - mus[i])
      den += np.linalg.norm(mus[i])
      sd.append(float(np.sqrt((m - mus[i]) @ ci @ (m - mus[i]))))
      ce.append(float(np.linalg.norm(c - cov) / np.linalg.norm(cov)))
      kl.append(gaussian_kl(m, c, mus[i], cov))
    ok = len(sd) > 0
    out[f"post_mean_err{tag}"] = float(num / den) if ok else float("nan")
    out[f"post_mean_err_sd{tag}"] = float(np.mean(sd)) if ok else float("nan")
    out[f"post_cov_err{tag}"] = float(np.mean(ce)) if ok else float("nan")
    out[f"kl_gauss{tag}"] = float(np.mean(kl)) if ok else float("nan")
    if tag == "":
      out["n_eval_y_nonfinite"] = bad
  out["n_eval_y"] = int(n_y)
  out["cov_bias_sigma_n"] = float(sigma_n ** 2 * np.sqrt(2) / np.linalg.norm(cov))
  out["post_std_0"], out["post_std_1"] = float(np.sqrt(cov[0, 0])), float(np.sqrt(cov[1, 1]))
  return out

"""Normalising constants and test log-likelihoods of energies by annealed importance sampling (Neal 2001).

An energy E(x) defines the unnormalised density f(x) = exp(-E(x)); log p(x) = -E(x) - log Z with Z = int f. AIS
estimates Z by moving n chains from a normalised Gaussian base q through the geometric path
    pi_b(x) ∝ q(x)^(1 - b) f(x)^b,   0 = b_0 < b_1 < ... < b_K = 1,
accumulating log w += (b_t - b_{t-1}) (log f(x) - log q(x)) before the transition at b_t. E[w] = Z, so
log Z ~ logmeanexp(log w) (consistent as n grows), and mean(log w) <= log Z (Jensen: a stochastic lower bound).
Reverse AIS (`direction='reverse'`) starts from exact draws of f / Z and runs the path from b = 1 down to 0; there
E[w] = 1 / Z, so -mean(log w) >= log Z: with exact draws (2-D targets, the tests' quadratics) the two bound
log Z from both sides (Grosse et al. 2015's bidirectional check).

The base is a Gaussian N(mu, U diag(s^2) U^T) (gaussian_base.GaussianBase, e.g. the training data's fit, smoothed
at a noise level: s^2 = lambda + sigma^2). The chains move in its whitened coordinates u (x = mu + U (s * u)),
where the base is N(0, I): the Jacobian is constant, so log f - log q is the same in either coordinates and Z is
unchanged, and HMC's one step size suits every direction of the data's covariance (in pixel space the image
directions differ in scale by orders of magnitude). Each transition is HMC with `n_leapfrog` leapfrog steps
(1: MALA) and a Metropolis test per chain, so it leaves pi_b invariant; the step size is shared by the chains
and adapted after every temperature towards an acceptance of 0.65 (x 1.1 above, x 0.9 below). The adaptation
uses the chains' past only; the figures below report the acceptance it reached.

`ais` returns log Z, its standard error (the delta method on the weights: sd(w) / (mean(w) sqrt(n))), the
effective sample size (sum w)^2 / sum w^2, mean(log w) and the mean acceptance.

Schedules: `sigmoid_betas` (Grosse et al. 2013), denser near both ends where the intermediate densities change
fastest.
"""
from __future__ import annotations

from typing import Callable, Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from dsm_jax import gaussian_base

Array = jax.Array
TARGET_ACCEPT = 0.65


def sigmoid_betas(n: int, radius: float = 4.0) -> np.ndarray:
  """n + 1 inverse temperatures from 0 to 1: a sigmoid over [-radius, radius], rescaled to end exactly at 0, 1."""
  if n < 1:
    raise ValueError(f"need at least one temperature, got {n}")
  s = 1.0 / (1.0 + np.exp(-np.linspace(-radius, radius, n + 1)))
  return ((s - s[0]) / (s[-1] - s[0])).astype(np.float64)


class WhitenedBase:
  """The Gaussian N(mu, U diag(std^2) U^T) and its whitening map, for x of shape `shape`."""

  def __init__(self, base: gaussian_base.GaussianBase, sigma: float, shape):
    self.mean = jnp.asarray(base.mean, jnp.float32)
    self.basis = jnp.asarray(base.basis, jnp.float32)
    self.std = jnp.sqrt(jnp.asarray(base.eigvals, jnp.float32) + float(sigma) ** 2)
    self.shape = tuple(int(d) for d in shape)
    self.dim = int(self.mean.shape[0])
    if float(jnp.min(self.std)) <= 0:
      raise ValueError("the base Gaussian has a zero-variance direction: smooth it with sigma > 0")
    self.log_det = float(jnp.sum(jnp.log(self.std)))  # log |dx/du|

  def to_x(self, u: Array) -> Array:
    return (self.mean + (u * self.std) @ self.basis.T).reshape((u.shape[0],) + self.shape)

  def to_u(self, x: Array) -> Array:
    return ((x.reshape(x.shape[0], -1) - self.mean) @ self.basis) / self.std

  def log_prob(self, x: Array) -> Array:
    """The normalised log N(x; mu, cov), [B]."""
    u = self.to_u(x)
    return -0.5 * jnp.sum(u ** 2, -1) - 0.5 * self.dim * np.log(2 * np.pi) - self.log_det


def _log_normal_u(u: Array) -> Array:
  return -0.5 * jnp.sum(u ** 2, -1) - 0.5 * u.shape[-1] * np.log(2 * np.pi)


def ais(energy_fn: Callable[[Array], Array], base: WhitenedBase, key: Array, n_chains: int, betas,
        step: float = 0.05, n_leapfrog: int = 1, direction: str = "forward", x_start: Optional[Array] = None) -> dict:
  """AIS from the base to exp(-energy_fn) (module docstring). energy_fn: x [B, *shape] -> [B].
  direction 'forward' starts from base draws; 'reverse' from x_start [n_chains, *shape], exact draws of the
  target, and runs the path backwards. Returns {'log_w' [n_chains], 'accept' (mean over the temperatures),
  'step' (the adapted step)}; `summarise` turns log w into log Z (for 'reverse': -mean(log w), an upper bound in
  expectation)."""
  if direction not in ("forward", "reverse"):
    raise ValueError(f"direction must be 'forward' or 'reverse', got {direction!r}")
  betas = np.asarray(betas, np.float64)
  chex.assert_rank(betas, 1)
  if not (betas[0] == 0.0 and betas[-1] == 1.0 and np.all(np.diff(betas) > 0)):
    raise ValueError("betas must increase from 0 to 1")
  seq = betas if direction == "forward" else betas[::-1]
  k0, k_run = jax.random.split(key)
  if direction == "forward":
    u0 = jax.random.normal(k0, (n_chains, base.dim))
  else:
    if x_start is None or x_start.shape[0] != n_chains:
      raise ValueError(f"reverse AIS needs x_start: {n_chains} exact draws of the target")
    u0 = base.to_u(jnp.asarray(x_start, jnp.float32))

  def neg_e_and_grad(u):  # -E(x(u)) and its gradient in u, per chain
    e, vjp = jax.vjp(lambda v: -energy_fn(base.to_x(v)), u)
    return e, vjp(jnp.ones_like(e))[0]

  def gap(u, neg_e):  # log f(x) - log q(x), the same in u and x (constant Jacobian)
    return neg_e - (_log_normal_u(u) - base.log_det)

  def transition(carry, inp):
    u, neg_e, g_e, log_w, eps, acc_sum = carry
    key, b_old, b = inp
    log_w = log_w + (b - b_old) * gap(u, neg_e)
    log_pi = lambda v, ne: (1 - b) * _log_normal_u(v) + b * ne
    grad_pi = lambda v, ge: -(1 - b) * v + b * ge
    k_p, k_a = jax.random.split(key)
    p0 = jax.random.normal(k_p, u.shape)
    v, ne, ge = u, neg_e, g_e
    p = p0 + 0.5 * eps * grad_pi(v, ge)
    for i in range(n_leapfrog):
      v = v + eps * p
      ne, ge = neg_e_and_grad(v)
      p = p + (eps if i < n_leapfrog - 1 else 0.5 * eps) * grad_pi(v, ge)
    log_ratio = log_pi(v, ne) - 0.5 * jnp.sum(p ** 2, -1) - log_pi(u, neg_e) + 0.5 * jnp.sum(p0 ** 2, -1)
    ok = jnp.log(jax.random.uniform(k_a, log_ratio.shape)) < log_ratio  # NaN: rejected
    u = jnp.where(ok[:, None], v, u)
    neg_e = jnp.where(ok, ne, neg_e)
    g_e = jnp.where(ok[:, None], ge, g_e)
    rate = jnp.mean(ok.astype(jnp.float32))
    eps = eps * jnp.where(rate > TARGET_ACCEPT, 1.1, 0.9)
    return (u, neg_e, g_e, log_w, eps, acc_sum + rate), None

  neg_e0, g0 = neg_e_and_grad(u0)
  keys = jax.random.split(k_run, len(seq) - 1)
  inp = (keys, jnp.asarray(seq[:-1], jnp.float32), jnp.asarray(seq[1:], jnp.float32))
  carry0 = (u0, neg_e0, g0, jnp.zeros((n_chains,)), jnp.asarray(step, jnp.float32), jnp.asarray(0.0))
  (u, neg_e, _, log_w, eps, acc_sum), _ = jax.lax.scan(transition, carry0, inp)
  return {"log_w": log_w, "accept": acc_sum / (len(seq) - 1), "step": eps}


def summarise(log_w: np.ndarray, direction: str = "forward") -> dict:
  """log Z, its standard error, the ESS and mean(log w) from AIS log-weights (see `ais`)."""
  lw = np.asarray(log_w, np.float64)
  lw = lw[np.isfinite(lw)]
  n = len(lw)
  if n < 2:
    return {"log_z": float("nan"), "log_z_se": float("nan"), "ess": float(n), "log_w_mean": float("nan"), "n": n}
  if direction == "reverse":
    return {"log_z": float(-lw.mean()), "log_z_se": float(lw.std(ddof=1) / np.sqrt(n)), "ess": float("nan"),
            "log_w_mean": float(lw.mean()), "n": n}
  w = np.exp(lw - lw.max())
  return {"log_z": float(np.log(w.mean()) + lw.max()), "log_z_se": float(w.std(ddof=1) / (w.mean() * np.sqrt(n))),
          "ess": float(w.sum() ** 2 / np.sum(w ** 2)), "log_w_mean": float(lw.mean()), "n": n}


def log_z(energy_fn, base: WhitenedBase, key, n_chains: int, n_temps: int, step: float = 0.05, n_leapfrog: int = 1,
          batch_size: int = 0, direction: str = "forward", x_start=None, progress: bool = False) -> dict:
  """`ais` over n_chains chains in batches of batch_size (0: one batch; batch i uses fold_in(key, i)), with
  sigmoid_betas(n_temps), summarised (`summarise`) with the mean acceptance and the final step sizes."""
  betas = sigmoid_betas(int(n_temps))
  bs = int(batch_size) or int(n_chains)
  run = jax.jit(lambda k, x0, n: ais(energy_fn, base, k, n, betas, step, n_leapfrog, direction, x0),
                static_argnums=(2,))
  lws, accs = [], []
  starts = list(range(0, int(n_chains), bs))
  it = starts
  if progress:
    from tqdm import tqdm  # noqa: PLC0415
    it = tqdm(starts, desc=f"AIS ({n_temps} temperatures)", unit="batch")
  for i, lo in enumerate(it):
    n = min(bs, int(n_chains) - lo)
    x0 = None if x_start is None else jnp.asarray(x_start[lo:lo + n])
    res = jax.device_get(run(jax.random.fold_in(key, i), x0, n))
    lws.append(np.asarray(res["log_w"]))
    accs.append(float(res["accept"]))
  out = summarise(np.concatenate(lws), direction)
  out["accept"] = float(np.mean(accs))
  return out


def heldout_log_likelihood(energy_fn, base: WhitenedBase, x_test, key, n_chains: int, n_temps: int, step: float = 0.05,
                        n_leapfrog: int = 1, batch_size: int = 0, eval_batch: int = 250, progress: bool = False,
                        prefix: str = "test_") -> dict:
  """Mean log p(x) = -E(x) - log Z over x_test (log Z by `log_z`), with the AIS standard error of log Z
  (`<prefix>loglik_se`), the standard error of the mean over the points (`<prefix>loglik_points_se`), the Gaussian
  base's own mean log-density at the same points (`<prefix>loglik_gaussian`), log Z, the ESS and the acceptance."""
  z = log_z(energy_fn, base, key, n_chains, n_temps, step, n_leapfrog, batch_size, progress=progress)
  x_test = np.asarray(x_test, np.float32)
  e_fn = jax.jit(energy_fn)
  q_fn = jax.jit(base.log_prob)
  neg_e, log_q = [], []
  for lo in range(0, len(x_test), eval_batch):
    xb = jnp.asarray(x_test[lo:lo + eval_batch])
    neg_e.append(-np.asarray(e_fn(xb), np.float64))
    log_q.append(np.asarray(q_fn(xb), np.float64))
  ll = np.concatenate(neg_e) - z["log_z"]
  lq = np.concatenate(log_q)
  return {f"{prefix}loglik": float(ll.mean()), f"{prefix}loglik_se": z["log_z_se"],
          f"{prefix}loglik_points_se": float(ll.std(ddof=1) / np.sqrt(len(ll))),
          f"{prefix}loglik_gaussian": float(lq.mean()),
          f"{prefix}loglik_gaussian_points_se": float(lq.std(ddof=1) / np.sqrt(len(lq))),
          "ais_log_z": z["log_z"], "ais_log_z_se": z["log_z_se"], "ais_ess": z["ess"],
          "ais_log_w_mean": z["log_w_mean"],
          "ais_accept": z["accept"], "ais_chains": int(n_chains), "ais_temps": int(n_temps)}


def bits_per_dim(loglik: float, dim: int, unit_scale: float) -> float:
  """Bits per dimension of a mean log-density (nats) of data in model space, where one unit of [0, 1] pixel space
  is unit_scale model units (1 for data in [0, 1], 2 for [-1, 1]): the density moved to [0, 256) pixel values,
  log p_256(x) = log p_model(x) + D log(unit_scale / 256), then -log p_256 / (D ln 2)."""
  return float(-(loglik + dim * np.log(unit_scale / 256.0)) / (dim * np.log(2.0)))


def from_config(config, energy_fn, base: WhitenedBase, x_test, key, progress: bool = True) -> dict:
  """heldout_log_likelihood with the config's eval.ais_* settings."""
  e = config.eval
  return heldout_log_likelihood(energy_fn, base, x_test, key, int(e.ais_chains), int(e.ais_temps), float(e.ais_step),
                             int(e.ais_leapfrog), int(e.ais_batch_size), progress=progress)


def evaluate_energy(config, dataset, energy_fn, sigma: float, key, clean: bool = False, progress: bool = True) -> dict:
  """--mode=loglik for an energy E(x) (x in model space, [B, ...] -> [B]) that models the data smoothed at
  sigma, p_sigma = p * N(0, sigma^2 I), or the clean data (clean=True, Denoising-EBM's texture energy).

  Test points: eval.loglik_n held-out images (test split) plus sigma n (clean: as they are), or for a 2-D toy as
  many fresh draws of p_sigma. Base and proposal: the training data's Gaussian fit smoothed at sigma
  (gaussian_base.fit_dataset), whose own log-density at the same points is reported as test_loglik_gaussian.
  Toys with a closed-form density add test_loglik_exact, the mean exact log p_sigma at the points. Images add
  test_bits_per_dim (and _gaussian, _se): the density moved to [0, 256) pixel values (`bits_per_dim`)."""
  k_x, k_ais = jax.random.split(key)
  n = int(config.eval.loglik_n)
  images = hasattr(dataset, "test_images")
  if images:
    x = np.asarray(dataset.test_images()[:n], np.float32)
    if not clean:
      x = x + sigma * np.asarray(jax.random.normal(k_x, x.shape))
  else:
    k1, k2 = jax.random.split(k_x)
    x = np.asarray(dataset.sample(k1, n), np.float32)
    x = x + sigma * np.asarray(jax.random.normal(k2, x.shape))
  base = WhitenedBase(gaussian_base.fit_dataset(dataset, config.seed), sigma, dataset.shape)
  out = from_config(config, energy_fn, base, x, k_ais, progress=progress)
  out["loglik_sigma"] = float(sigma)
  out["loglik_n"] = int(len(x))
  if not images and getattr(dataset, "has_density", False):
    out["test_loglik_exact"] = float(np.mean(np.asarray(dataset.log_prob(jnp.asarray(x), sigma), np.float64)))
  if images:
    d = int(np.prod(dataset.shape))
    unit = 2.0 if getattr(dataset, "scale", "01") == "-11" else 1.0
    out["test_bits_per_dim"] = bits_per_dim(out["test_loglik"], d, unit)
    out["test_bits_per_dim_se"] = float(out["test_loglik_se"] / (d * np.log(2.0)))
    out["test_bits_per_dim_gaussian"] = bits_per_dim(out["test_loglik_gaussian"], d, unit)
  return out

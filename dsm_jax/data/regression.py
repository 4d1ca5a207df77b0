"""Bayesian models for denoiser-guided variational inference (Huszar 2017, "Variational Inference
using Implicit Models", Parts I and IV).

| name             | latent w | observed                      | posterior                                 |
|------------------|----------|-------------------------------|-------------------------------------------|
| logreg2d         | R^2      | N labelled inputs (x_n, y_n)  | reference: a fine 2-D grid (`grid_posterior`) |
| linear_gaussian  | R^2      | y = A w + noise, y in R^obs_dim | exact Gaussian (`posterior`)             |

Both are deterministic functions of (config.data, config.seed). What the trainer draws per step
(`sample(key, n)`, inside the compiled step):
  * logreg2d: n rows (x_1, x_2, y) of the fixed data set, without replacement. With n = N every step sees
    the whole data set (the likelihood gradient is exact); with n < N it is an unbiased minibatch
    estimate, scaled by N / n (`log_likelihood(w, rows)`).
  * linear_gaussian: n observations y drawn from the model's marginal p(y) = int p(w) p(y | w) dw: the
    training distribution of an amortised q(w | y).
"""
from __future__ import annotations

import numpy as np

import jax
import jax.numpy as jnp

from dsm_jax.validation import ConfigError, positive, require

REGRESSION_DATASETS = ("logreg2d", "linear_gaussian")


def _seed_rng(seed: int, tag: int) -> np.random.Generator:
  return np.random.default_rng([int(tag), int(seed) % (1 << 63)])


class LogisticRegression2D:
  """P(y_n = 1 | x_n, w) = sigmoid(w^T x_n) (no bias; the blog's model), w in R^2, prior N(0, prior_std^2 I).

  Inputs x_n ~ N(0, I_2) and labels y_n ~ Bernoulli(sigmoid(w_true^T x_n)), drawn once from the seed.
  Few points (N = 10 by default) leave a visibly skewed, correlated posterior."""
  name = "logreg2d"
  has_density = False
  w_dim = 2
  shape = (3,)  # one row of the data set: (x_1, x_2, y)

  def __init__(self, n_points: int, prior_std: float, w_true, seed: int):
    rng = _seed_rng(seed, 0x10C_2E6)
    x = rng.normal(size=(n_points, 2))
    y = (rng.uniform(size=n_points) < 1.0 / (1.0 + np.exp(-x @ np.asarray(w_true, np.float64)))).astype(np.float64)
    self.n_points = int(n_points)
    self.prior_std = float(prior_std)
    self.w_true = tuple(float(v) for v in w_true)
    self.x = x.astype(np.float32)
    self.y = y.astype(np.float32)
    self.rows = np.concatenate([self.x, self.y[:, None]], axis=1)  # [N, 3]

  def sample(self, rng: jax.Array, n: int) -> jax.Array:
    """n rows of the data set without replacement (n <= N; n = N is the whole set, permuted)."""
    idx = jax.random.permutation(rng, self.n_points)[:n]
    return jnp.asarray(self.rows)[idx]

  def log_prior(self, w: jax.Array) -> jax.Array:
    """log N(w; 0, prior_std^2 I) up to a constant: [B, 2] -> [B]."""
    return -0.5 * jnp.sum(w ** 2, axis=-1) / self.prior_std ** 2

  def log_likelihood(self, w: jax.Array, rows=None) -> jax.Array:
    """log p(D | w): [B, 2] -> [B]. rows [n, 3]: a subset of the data, scaled by N / n (unbiased)."""
    rows = jnp.asarray(self.rows) if rows is None else rows
    x, y = rows[:, :2], rows[:, 2]
    logits = w @ x.T  # [B, n]
    ll = y * jax.nn.log_sigmoid(logits) + (1.0 - y) * jax.nn.log_sigmoid(-logits)
    return jnp.sum(ll, axis=-1) * (self.n_points / rows.shape[0])

  def log_joint(self, w: jax.Array, rows=None) -> jax.Array:
    """Unnormalised log posterior log p(w) + log p(D | w)."""
    return self.log_prior(w) + self.log_likelihood(w, rows)

  def grid_posterior(self, n: int = 512, n_std: float = 8.0) -> dict:
    """The reference posterior on a fine grid: a coarse pass over [-6 prior_std, 6 prior_std]^2 locates it,
    then an n x n grid over mean +- n_std std per axis. Returns the axes, cell area, normalised
    log-density [n, n] (rows: w_2, columns: w_1), mean [2] and covariance [2, 2] by quadrature (float64)."""
    def on_grid(g1, g2):
      w1, w2 = np.meshgrid(g1, g2, indexing="xy")
      pts = np.stack([w1.ravel(), w2.ravel()], -1)
      lj = np.asarray(jax.jit(self.log_joint)(jnp.asarray(pts, jnp.float32)), np.float64)
      da = (g1[1] - g1[0]) * (g2[1] - g2[0])
      lp = lj - lj.max()
      lp = lp - np.log(np.sum(np.exp(lp)) * da)
      p = np.exp(lp) * da
      mean = p @ pts
      d = pts - mean
      cov = (d * p[:, None]).T @ d
      return pts, lp, da, mean, cov

    lim = 6.0 * self.prior_std
    g = np.linspace(-lim, lim, 301)
    _, _, _, m0, c0 = on_grid(g, g)
    s0 = np.sqrt(np.diag(c0))
    g1 = np.linspace(m0[0] - n_std * s0[0], m0[0] + n_std * s0[0], n)
    g2 = np.linspace(m0[1] - n_std * s0[1], m0[1] + n_std * s0[1], n)
    pts, lp, da, mean, cov = on_grid(g1, g2)
    return {"w1": g1, "w2": g2, "points": pts, "log_density": lp.reshape(n, n), "cell_area": da,
            "mean": mean, "cov": cov}


class LinearGaussian:
  """y = A w + noise_std * n, w ~ N(0, prior_std^2 I_2), A [obs_dim, 2] drawn once from the seed
  (entries N(0, 1)). The posterior is Gaussian: Sigma = (I / prior_std^2 + A^T A / noise_std^2)^-1,
  mu(y) = Sigma A^T y / noise_std^2; Sigma is the same for every y."""
  name = "linear_gaussian"
  has_density = False
  w_dim = 2

  def __init__(self, obs_dim: int, prior_std: float, noise_std: float, seed: int):
    rng = _seed_rng(seed, 0x11_6A55)
    self.obs_dim = int(obs_dim)
    self.prior_std = float(prior_std)
    self.noise_std = float(noise_std)
    self.A = rng.normal(size=(obs_dim, 2)).astype(np.float32)
    self.shape = (self.obs_dim,)
    a = self.A.astype(np.float64)
    self.post_cov = np.linalg.inv(np.eye(2) / self.prior_std ** 2 + a.T @ a / self.noise_std ** 2)

  def sample(self, rng: jax.Array, n: int) -> jax.Array:
    """n draws of y from the marginal p(y) (each with its own w)."""
    kw, kn = jax.random.split(rng)
    w = self.prior_std * jax.random.normal(kw, (n, 2))
    return w @ jnp.asarray(self.A).T + self.noise_std * jax.random.normal(kn, (n, self.obs_dim))

  def log_prior(self, w: jax.Array) -> jax.Array:
    return -0.5 * jnp.sum(w ** 2, axis=-1) / self.prior_std ** 2

  def log_likelihood(self, w: jax.Array, y: jax.Array) -> jax.Array:
    """log p(y | w) up to a constant, per row: w [B, 2], y [B, obs_dim] -> [B]."""
    r = y - w @ jnp.asarray(self.A).T
    return -0.5 * jnp.sum(r ** 2, axis=-1) / self.noise_std ** 2

  def log_joint(self, w: jax.Array, y: jax.Array) -> jax.Array:
    return self.log_prior(w) + self.log_likelihood(w, y)

  def posterior(self, y) -> tuple[np.ndarray, np.ndarray]:
    """Exact posterior mean [B, 2] and covariance [2, 2] for observations y [B, obs_dim] (float64)."""
    y = np.asarray(y, np.float64)
    mean = y @ self.A.astype(np.float64) @ self.post_cov.T / self.noise_std ** 2
    return mean, self.post_cov


def get_regression(data_config, seed: int):
  """The model named by config.data.dataset, its keys checked with one-line ConfigErrors."""
  name = data_config.dataset

  class _Wrap:  # lets the validation helpers address config.data.<key>
    def __init__(self, d):
      self.data = d

    def __getitem__(self, k):
      return getattr(self, k)

  cfg = _Wrap(data_config)
  positive(cfg, "data.prior_std")
  if name == "logreg2d":
    positive(cfg, "data.n_points", integer=True)
    w = data_config.w_true
    require(isinstance(w, (tuple, list)) and len(w) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in w),
        "data.w_true", f"must be two finite numbers (w_1, w_2), got {w!r}")
    return LogisticRegression2D(data_config.n_points, data_config.prior_std, tuple(w), seed)
  if name == "linear_gaussian":
    positive(cfg, "data.obs_dim", integer=True)
    positive(cfg, "data.noise_std")
    return LinearGaussian(data_config.obs_dim, data_config.prior_std, data_config.noise_std, seed)
  raise ConfigError("data.dataset", f"unknown regression model {name!r}; choose from {REGRESSION_DATASETS}")

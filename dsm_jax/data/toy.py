"""2-D toy distributions, with exact (noise-smoothed) log-densities where they have a closed form.

| name          | density in closed form                                         |
|---------------|----------------------------------------------------------------|
| mixture       | yes: 1/5 N((-5,-5), I) + 4/5 N((5,5), I) (NCSN's toy, Sec. 3.2) |
| ring8         | yes: 8 equal Gaussians, radius 4, std 0.5                      |
| checkerboard  | yes: uniform on 8 unit squares; smoothed by Gaussian CDFs      |
| moons         | no (a noisy curve; samples only)                               |
| swiss_roll    | no (samples only)                                              |
| rings         | no (concentric noisy circles; samples only)                    |

`log_prob(x, sigma)` is the density of x + sigma n (the data convolved with N(0, sigma^2 I)),
`score(x, sigma)` its gradient. Samples are drawn with jax inside jit from an explicit key.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp, ndtr


@dataclasses.dataclass(frozen=True)
class GaussianMixture:
  """sum_k w_k N(mu_k, std_k^2 I)."""
  weights: tuple
  means: tuple
  stds: tuple
  name: str = "mixture"
  has_density: bool = True

  @property
  def dim(self) -> int:
    return len(self.means[0])

  @property
  def shape(self):
    return (self.dim,)

  def _arrays(self):
    return (jnp.asarray(self.weights, jnp.float32), jnp.asarray(self.means, jnp.float32),
            jnp.asarray(self.stds, jnp.float32))

  def sample(self, rng: jax.Array, n: int) -> jax.Array:
    w, mu, std = self._arrays()
    kc, kn = jax.random.split(rng)
    comp = jax.random.choice(kc, w.shape[0], (n,), p=w)
    return mu[comp] + std[comp, None] * jax.random.normal(kn, (n, self.dim))

  def component_stds(self, sigma, form: str = "convolved"):
    """Per-component std of the smoothed density. 'convolved': sqrt(std^2 + sigma^2), the true density
    of x + sigma n. 'reference': sigma itself, as in the NCSN reference toy runner's annealed densities."""
    _, _, std = self._arrays()
    sigma = jnp.asarray(sigma, jnp.float32)
    if form == "convolved":
      return jnp.sqrt(std ** 2 + sigma ** 2)
    if form == "reference":
      return jnp.broadcast_to(sigma, std.shape)
    raise ValueError(f"unknown smoothing form {form!r}; use convolved or reference")

  def _log_joint(self, x, sigma, form):
    """log w_k + log N(x; mu_k, s_k^2 I): [B, K]. sigma scalar or [B]."""
    w, mu, _ = self._arrays()
    sigma = jnp.asarray(sigma, jnp.float32)
    if sigma.ndim == 1:
      s = jax.vmap(lambda si: self.component_stds(si, form))(sigma)  # [B, K]
    else:
      s = self.component_stds(sigma, form)[None]
    d2 = jnp.sum((x[:, None, :] - mu[None]) ** 2, axis=-1)
    return jnp.log(w)[None] - 0.5 * d2 / s ** 2 - self.dim * jnp.log(s) - 0.5 * self.dim * jnp.log(2 * jnp.pi)

  def log_prob(self, x: jax.Array, sigma=0.0, form: str = "convolved") -> jax.Array:
    return logsumexp(self._log_joint(x, sigma, form), axis=-1)

  def score(self, x: jax.Array, sigma=0.0, form: str = "convolved") -> jax.Array:
    return jax.grad(lambda y: jnp.sum(self.log_prob(y, sigma, form)))(x)

  def posterior_mean(self, x_noisy: jax.Array, sigma) -> jax.Array:
    """E[x | x + sigma n = x_noisy], by responsibilities times per-component Gaussian posteriors
    (computed without the score, so it checks Tweedie independently)."""
    _, mu, std = self._arrays()
    resp = jax.nn.softmax(self._log_joint(x_noisy, sigma, "convolved"), axis=-1)  # [B, K]
    sig2 = jnp.asarray(sigma, jnp.float32) ** 2
    sig2 = sig2[:, None, None] if sig2.ndim == 1 else sig2  # per-example sigma [B] -> [B, 1, 1]
    shrink = std[None, :, None] ** 2 / (std[None, :, None] ** 2 + sig2)  # [B or 1, K, 1]
    comp_mean = mu[None] + shrink * (x_noisy[:, None, :] - mu[None])
    return jnp.sum(resp[..., None] * comp_mean, axis=1)


@dataclasses.dataclass(frozen=True)
class Checkerboard:
  """Uniform on the 8 dark unit squares of [-2, 2]^2 (FFJORD's checkerboard)."""
  name: str = "checkerboard"
  has_density: bool = True
  shape: tuple = (2,)

  def sample(self, rng, n):
    k1, k2, k3 = jax.random.split(rng, 3)
    x1 = jax.random.uniform(k1, (n,), minval=-2.0, maxval=2.0)
    x2 = jax.random.uniform(k2, (n,)) - 2.0 * jax.random.randint(k3, (n,), 0, 2) + jnp.floor(x1) % 2
    return jnp.stack([x1, x2], axis=-1)

  def _squares(self):
    sq = [(a, b) for a in range(-2, 2) for b in range(-2, 2) if (a + b) % 2 == 0]
    return jnp.asarray(sq, jnp.float32)  # lower-left corners [8, 2]

  def log_prob(self, x, sigma=0.0, form: str = "convolved"):
    del form
    lo = self._squares()[None]  # [1, 8, 2]
    sigma = jnp.maximum(jnp.asarray(sigma, jnp.float32), 1e-6)
    if sigma.ndim == 1:
      sigma = sigma[:, None, None]
    p = ndtr((lo + 1.0 - x[:, None, :]) / sigma) - ndtr((lo - x[:, None, :]) / sigma)
    return jnp.log(jnp.sum(jnp.prod(p, axis=-1), axis=-1) / 8.0 + 1e-30)

  def score(self, x, sigma=0.0, form: str = "convolved"):
    return jax.grad(lambda y: jnp.sum(self.log_prob(y, sigma, form)))(x)


@dataclasses.dataclass(frozen=True)
class SampleOnly:
  """A toy distribution with no closed-form density: samples only."""
  name: str
  has_density: bool = False
  shape: tuple = (2,)

  def sample(self, rng, n):
    k1, k2 = jax.random.split(rng)
    if self.name == "moons":
      t = jax.random.uniform(k1, (n,)) * jnp.pi
      upper = jax.random.bernoulli(k2, 0.5, (n,))
      x = jnp.where(upper[:, None], jnp.stack([jnp.cos(t), jnp.sin(t)], -1),
                    jnp.stack([1 - jnp.cos(t), 0.5 - jnp.sin(t)], -1))
      x = (x - jnp.array([0.5, 0.25])) * 2.0
      return x + 0.1 * jax.random.normal(jax.random.fold_in(k2, 1), x.shape)
    if self.name == "swiss_roll":
      t = 1.5 * jnp.pi * (1 + 2 * jax.random.uniform(k1, (n,)))
      x = jnp.stack([t * jnp.cos(t), t * jnp.sin(t)], -1) / 5.0
      return x + 0.1 * jax.random.normal(k2, x.shape)
    if self.name == "rings":
      radius = 1.0 + jax.random.randint(k1, (n,), 0, 4).astype(jnp.float32)
      t = jax.random.uniform(jax.random.fold_in(k1, 1), (n,)) * 2 * jnp.pi
      x = radius[:, None] * jnp.stack([jnp.cos(t), jnp.sin(t)], -1)
      return x + 0.08 * jax.random.normal(k2, x.shape)
    raise ValueError(f"unknown sample-only toy {self.name!r}")

  def log_prob(self, x, sigma=0.0, form: str = "convolved"):
    raise NotImplementedError(f"toy dataset {self.name!r} has no closed-form density")

  score = log_prob


def _ring8():
  ang = np.arange(8) * 2 * np.pi / 8
  means = tuple((float(4 * np.cos(a)), float(4 * np.sin(a))) for a in ang)
  return GaussianMixture(weights=(1 / 8,) * 8, means=means, stds=(0.5,) * 8, name="ring8")


TOY_DATASETS = {
    "mixture": lambda: GaussianMixture(weights=(0.2, 0.8), means=((-5.0, -5.0), (5.0, 5.0)),
                                       stds=(1.0, 1.0), name="mixture"),
    "ring8": _ring8,
    "checkerboard": Checkerboard,
    "moons": lambda: SampleOnly("moons"),
    "swiss_roll": lambda: SampleOnly("swiss_roll"),
    "rings": lambda: SampleOnly("rings"),
}


def get_toy(name: str):
  if name not in TOY_DATASETS:
    raise ValueError(f"unknown toy dataset {name!r}; choose from {sorted(TOY_DATASETS)}")
  return TOY_DATASETS[name]()

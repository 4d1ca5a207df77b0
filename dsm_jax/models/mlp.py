"""Small networks for low-dimensional data."""
from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dsm_jax.models.registry import choice, flag, register_model, vector_shape, widths

ACTIVATIONS = {"softplus": nn.softplus, "swish": nn.swish, "elu": nn.elu, "tanh": jnp.tanh,
               "gelu": nn.gelu, "relu": nn.relu}


def activation(name: str):
  if name not in ACTIVATIONS:
    raise ValueError(f"unknown activation {name!r}; use one of {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def sigma_features(sigma: jax.Array, n: int) -> jax.Array:
  """Fourier features of log sigma, [B] -> [B, 2n] (a smooth conditioning on the noise scale)."""
  freqs = jnp.arange(1, n + 1, dtype=jnp.float32)
  ls = jnp.log(sigma)[:, None] * freqs[None]
  return jnp.concatenate([jnp.sin(ls), jnp.cos(ls)], axis=-1)


class ScoreMLP(nn.Module):
  """Noise-conditional score network s(x, sigma) for x in R^D.

  conditional=True feeds Fourier features of log sigma; scale_by_sigma=True returns f(x, sigma)/sigma,
  the NCSNv2 parameterisation that keeps the output O(1) across a ladder spanning decades.
  A smooth activation (softplus, swish) keeps the score's Jacobian meaningful for exact/sliced SM."""
  hidden: Sequence[int] = (128, 128)
  act: str = "softplus"
  conditional: bool = True
  n_sigma_features: int = 8
  scale_by_sigma: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, sigma: Optional[jax.Array] = None) -> jax.Array:
    f = activation(self.act)
    h = x
    if self.conditional:
      if sigma is None:
        raise ValueError("ScoreMLP(conditional=True) needs sigma")
      sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), x.shape[:1])
      h = jnp.concatenate([h, sigma_features(sigma, self.n_sigma_features)], axis=-1)
    for width in self.hidden:
      h = f(nn.Dense(width)(h))
    out = nn.Dense(x.shape[-1])(h)
    if self.conditional and self.scale_by_sigma:
      out = out / sigma[:, None]
    return out


class EnergyMLP(nn.Module):
  """Scalar energy E(x) (one number per example) for x in R^D; p ∝ exp(-E).

  quadratic=True adds 1/2 ||x||^2 * softplus(c) so that exp(-E) is normalisable far from data
  (the spirit of MDSM's quadratic output form). Smooth activations keep grad_x E differentiable."""
  hidden: Sequence[int] = (128, 128)
  act: str = "softplus"
  quadratic: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, sigma: Optional[jax.Array] = None) -> jax.Array:
    del sigma  # an MDSM energy is not noise-conditional
    f = activation(self.act)
    h = x
    for width in self.hidden:
      h = f(nn.Dense(width)(h))
    e = nn.Dense(1)(h)[:, 0]
    if self.quadratic:
      c = self.param("quad", nn.initializers.constant(-3.0), ())
      e = e + 0.5 * nn.softplus(c) * jnp.sum(x ** 2, axis=-1)
    return e


class GeneratorMLP(nn.Module):
  """An implicit sampler x = G(z) (or G(z, c) with a conditioning vector c), z ~ N(0, I).

  An MLP on [z, c] plus a linear path from [z, c] (linear_skip=True), so that an untrained G is close
  to a Gaussian and the MLP adds the non-Gaussian part. out_dim: the sample's dimension. Used by DDE
  (G(z) on 2-D data) and by denoiser-guided VI (q(w) = G(z), amortised q(w | y) = G(z, y))."""
  out_dim: int
  hidden: Sequence[int] = (128, 128)
  act: str = "relu"
  linear_skip: bool = True

  @nn.compact
  def __call__(self, z: jax.Array, cond: Optional[jax.Array] = None) -> jax.Array:
    f = activation(self.act)
    h = z if cond is None else jnp.concatenate([z, cond], axis=-1)
    for width in self.hidden:
      h = f(nn.Dense(width)(h))
    out = nn.Dense(self.out_dim)(h)
    if self.linear_skip:  # a linear path from [z, c]: a linear-Gaussian posterior is in reach from the start
      out = out + nn.Dense(self.out_dim, use_bias=False)(z if cond is None else jnp.concatenate([z, cond], -1))
    return out


class DenoiserMLP(nn.Module):
  """A denoiser for noise of one fixed scale sigma: F(x[, c]) = x + sigma^2 s(x[, c]), s an MLP.

  Written through the score s (Tweedie: F(x) = x + sigma^2 grad log p_sigma(x)) so that the network's
  output stays O(1) however small sigma is; (F(x) - x) / sigma^2 = s(x) is then the score estimate,
  which `score_only=True` returns directly (no cancellation of x)."""
  sigma: float
  hidden: Sequence[int] = (128, 128)
  act: str = "softplus"

  @nn.compact
  def __call__(self, x: jax.Array, cond: Optional[jax.Array] = None, score_only: bool = False) -> jax.Array:
    f = activation(self.act)
    h = x if cond is None else jnp.concatenate([x, cond], axis=-1)
    for width in self.hidden:
      h = f(nn.Dense(width)(h))
    s = nn.Dense(x.shape[-1])(h)
    return s if score_only else x + self.sigma ** 2 * s


# ------------------------------------------------------------------------------------ registry
@register_model("score_mlp", hidden=(128, 128), act="softplus", scale_by_sigma=True)
def _score_mlp(cfg, shape, prefix, conditional: bool = True):
  vector_shape(shape, "score_mlp", prefix)
  return ScoreMLP(hidden=widths(cfg, "hidden", prefix), act=choice(cfg, "act", prefix, ACTIVATIONS),
                  conditional=conditional, scale_by_sigma=flag(cfg, "scale_by_sigma", prefix))


@register_model("energy_mlp", hidden=(128, 128), act="softplus", quadratic=True)
def _energy_mlp(cfg, shape, prefix):
  vector_shape(shape, "energy_mlp", prefix)
  return EnergyMLP(hidden=widths(cfg, "hidden", prefix), act=choice(cfg, "act", prefix, ACTIVATIONS),
                   quadratic=flag(cfg, "quadratic", prefix))


@register_model("generator_mlp", hidden=(128, 128), act="elu", linear_skip=True)
def _generator_mlp(cfg, shape, prefix):
  vector_shape(shape, "generator_mlp", prefix)
  return GeneratorMLP(out_dim=int(shape[0]), hidden=widths(cfg, "hidden", prefix),
                      act=choice(cfg, "act", prefix, ACTIVATIONS), linear_skip=flag(cfg, "linear_skip", prefix))


@register_model("denoiser_mlp", hidden=(128, 128), act="softplus")
def _denoiser_mlp(cfg, shape, prefix, sigma: float = 1.0):
  vector_shape(shape, "denoiser_mlp", prefix)
  return DenoiserMLP(sigma=float(sigma), hidden=widths(cfg, "hidden", prefix),
                     act=choice(cfg, "act", prefix, ACTIVATIONS))

"""Small convolutional networks for images [B, H, W, C] (NHWC): a scalar energy and a generator.

Used by DDE on images. The energy is differentiated twice (its input gradient enters the
loss), so its activation must be smooth (swish / softplus / elu / tanh; not relu).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dsm_jax.models import layers
from dsm_jax.models.mlp import ACTIVATIONS, activation
from dsm_jax.models.registry import choice, dtype, flag, image_shape, pos_int, register_model, widths


class ConvEnergy(nn.Module):
  """Scalar u(x) for images, p ∝ exp(-u) (dsm_jax.fields' energy convention): 3x3 convolutions with
  `features` channels (stride 2 after the first), a dense layer of `hidden` units, one output.
  quadratic=True adds 1/2 softplus(c) ||x||^2 so that exp(-u) is normalisable."""
  features: Sequence[int] = (32, 64, 64)
  hidden: int = 128
  act: str = "swish"
  quadratic: bool = True
  dtype: Any = jnp.float32  # compute dtype; parameters and the energy float32

  @nn.compact
  def __call__(self, x: jax.Array, sigma: Optional[jax.Array] = None) -> jax.Array:
    del sigma
    f = activation(self.act)
    h = x
    for i, c in enumerate(self.features):
      h = f(layers.Conv(c, 3, strides=1 if i == 0 else 2, dtype=self.dtype)(h))
    h = h.reshape(h.shape[0], -1)
    h = f(nn.Dense(self.hidden, dtype=self.dtype)(h))
    e = nn.Dense(1, dtype=self.dtype)(h)[:, 0].astype(jnp.float32)
    if self.quadratic:
      c = self.param("quad", nn.initializers.constant(-3.0), ())
      e = e + 0.5 * nn.softplus(c) * jnp.sum(x.reshape(x.shape[0], -1) ** 2, axis=-1)
    return e


class ConvGenerator(nn.Module):
  """x = G(z), z [B, latent] -> [B, H, W, C]: a dense layer to an (H/4, W/4, features[0]) map, two
  stride-2 transposed convolutions (features[1], features[2]), a 3x3 convolution to C channels and an
  output nonlinearity ('sigmoid' for data in [0, 1], 'tanh' for [-1, 1], 'none')."""
  image_shape: Sequence[int]
  features: Sequence[int] = (64, 32, 16)
  act: str = "relu"
  out_act: str = "sigmoid"
  dtype: Any = jnp.float32  # compute dtype; parameters and the images float32

  @nn.compact
  def __call__(self, z: jax.Array, cond: Optional[jax.Array] = None) -> jax.Array:
    del cond
    f = activation(self.act)
    h_img, w_img, c_img = self.image_shape
    bh, bw = h_img // 4, w_img // 4
    h = f(nn.Dense(bh * bw * self.features[0], dtype=self.dtype)(z)).reshape(z.shape[0], bh, bw, self.features[0])
    for c in self.features[1:3]:  # a transposed convolution upsamples: not the one Conv layer's op
      h = f(nn.ConvTranspose(c, (4, 4), strides=(2, 2), padding="SAME", dtype=self.dtype)(h))
    out = layers.Conv(c_img, 3, dtype=self.dtype)(h).astype(jnp.float32)
    if self.out_act == "sigmoid":
      return nn.sigmoid(out)
    if self.out_act == "tanh":
      return jnp.tanh(out)
    return out


# ------------------------------------------------------------------------------------ registry
@register_model("conv_energy", features=(32, 64, 64), hidden=128, act="swish", quadratic=True, dtype="float32")
def _conv_energy(cfg, shape, prefix):
  image_shape(shape, "conv_energy", prefix, 4)
  return ConvEnergy(features=widths(cfg, "features", prefix), hidden=pos_int(cfg, "hidden", prefix),
                    act=choice(cfg, "act", prefix, ACTIVATIONS), quadratic=flag(cfg, "quadratic", prefix),
                    dtype=dtype(cfg, prefix))


@register_model("conv_generator", features=(64, 32, 16), act="relu", out_act="sigmoid", dtype="float32")
def _conv_generator(cfg, shape, prefix):
  image_shape(shape, "conv_generator", prefix, 4)
  return ConvGenerator(image_shape=shape, features=widths(cfg, "features", prefix),
                       act=choice(cfg, "act", prefix, ACTIVATIONS),
                       out_act=choice(cfg, "out_act", prefix, ("sigmoid", "tanh", "none")), dtype=dtype(cfg, prefix))

"""Small convolutional networks for images [B, H, W, C] (NHWC): a scalar energy and a generator.

Used by DDE on images (issue 5). The energy is differentiated twice (its input gradient enters the
loss), so its activation must be smooth (swish / softplus / elu / tanh; not relu).
"""
from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dsm_jax.models.mlp import activation


class ConvEnergy(nn.Module):
  """Scalar u(x) for images, p ∝ exp(-u) (dsm_jax.fields' energy convention): 3x3 convolutions with
  `features` channels (stride 2 after the first), a dense layer of `hidden` units, one output.
  quadratic=True adds 1/2 softplus(c) ||x||^2 so that exp(-u) is normalisable."""
  features: Sequence[int] = (32, 64, 64)
  hidden: int = 128
  act: str = "swish"
  quadratic: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, sigma: Optional[jax.Array] = None) -> jax.Array:
    del sigma
    f = activation(self.act)
    h = x
    for i, c in enumerate(self.features):
      h = f(nn.Conv(c, (3, 3), strides=(1, 1) if i == 0 else (2, 2), padding="SAME")(h))
    h = h.reshape(h.shape[0], -1)
    h = f(nn.Dense(self.hidden)(h))
    e = nn.Dense(1)(h)[:, 0]
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

  @nn.compact
  def __call__(self, z: jax.Array, cond: Optional[jax.Array] = None) -> jax.Array:
    del cond
    f = activation(self.act)
    h_img, w_img, c_img = self.image_shape
    bh, bw = h_img // 4, w_img // 4
    h = f(nn.Dense(bh * bw * self.features[0])(z)).reshape(z.shape[0], bh, bw, self.features[0])
    for c in self.features[1:3]:
      h = f(nn.ConvTranspose(c, (4, 4), strides=(2, 2), padding="SAME")(h))
    out = nn.Conv(c_img, (3, 3), padding="SAME")(h)
    if self.out_act == "sigmoid":
      return nn.sigmoid(out)
    if self.out_act == "tanh":
      return jnp.tanh(out)
    return out

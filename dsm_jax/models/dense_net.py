"""The fully connected 'DenseNet' of DDE's reference code (github.com/logchan/dde, modules.py: DenseNetModule):
n_layers layers, each h <- [act(Dense(hidden)(h)), h] (every layer sees the input and all earlier layers), then
one Dense to prod(out_shape).

As a density estimator (out_shape = ()), a scalar energy u(x) (p ∝ exp(-u)) of the flattened input; with
quadratic=True it adds 1/2 softplus(c) ||x||^2, which keeps exp(-u) normalisable (not in the reference). As a
generator, G(z) reshaped to out_shape, then out_act ('sigmoid' for images in [0, 1], 'tanh', 'none'). `dtype` is the
compute dtype of the dense layers (bfloat16 on accelerators); parameters and outputs are float32.

weight_init = 'reference' initialises every layer as the reference's createLinear: Xavier-uniform weights and biases
U(-sqrt(3 / n_out), sqrt(3 / n_out)); 'flax' is Flax's default (LeCun-normal weights, zero biases)."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dsm_jax.models.mlp import ACTIVATIONS, activation
from dsm_jax.models.registry import choice, dtype, flag, pos_int, register_model

OUT_ACTS = ("sigmoid", "tanh", "none")
INITS = ("reference", "flax")


def reference_bias_init(key, shape, dtype=jnp.float32):
  """U(-sqrt(3 / n_out), sqrt(3 / n_out)) for a bias of n_out = shape[-1] entries (the reference's
  Xavier-uniform bound for an n_out x n_out matrix)."""
  bound = float(np.sqrt(3.0 / shape[-1]))
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def _dense(features: int, init: str, dtype) -> nn.Dense:
  if init == "reference":
    return nn.Dense(features, dtype=dtype, kernel_init=nn.initializers.xavier_uniform(), bias_init=reference_bias_init)
  return nn.Dense(features, dtype=dtype)


class DenseNet(nn.Module):
  out_shape: Sequence[int] = ()
  hidden: int = 256
  n_layers: int = 16
  act: str = "softplus"
  out_act: str = "none"
  quadratic: bool = False
  weight_init: str = "reference"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, cond: Optional[jax.Array] = None) -> jax.Array:
    del cond
    f = activation(self.act)
    h = x.reshape(x.shape[0], -1).astype(self.dtype)
    for _ in range(self.n_layers):
      h = jnp.concatenate([f(_dense(self.hidden, self.weight_init, self.dtype)(h)), h], axis=-1)
    out = _dense(int(np.prod(self.out_shape)) if self.out_shape else 1, self.weight_init, self.dtype)(h).astype(jnp.float32)
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


@register_model("dense_net", hidden=256, n_layers=16, act="softplus", out_act="none", quadratic=False,
                weight_init="reference", dtype="float32")
def _dense_net(cfg, shape, prefix, generator: bool = False):
  """generator=True: G(z) with the data's shape; else the scalar energy of x."""
  return DenseNet(out_shape=tuple(shape) if generator else (), hidden=pos_int(cfg, "hidden", prefix),
                  n_layers=pos_int(cfg, "n_layers", prefix), act=choice(cfg, "act", prefix, ACTIVATIONS),
                  out_act=choice(cfg, "out_act", prefix, OUT_ACTS), quadratic=flag(cfg, "quadratic", prefix),
                  weight_init=choice(cfg, "weight_init", prefix, INITS), dtype=dtype(cfg, prefix))

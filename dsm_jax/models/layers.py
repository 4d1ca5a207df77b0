"""The one convolution layer every model uses, NHWC / HWIO, 'SAME' padding.

`Conv` has nn.Conv's parameters ('kernel' [k, k, C_in, C_out], 'bias' [C_out]) and computes the same function
in one of three forms, all with the same parameters:

* 'xla': lax.conv_general_dilated, differentiated by autodiff (cuDNN on GPU, the TPU's convolution unit);
* 'vjp': the same forward convolution with a hand-written VJP whose input and kernel gradients are written as
  canonical NHWC/HWIO convolutions (explicit transposes). XLA:CPU runs autodiff's kernel-gradient convolution
  (dim_labels f01b_i01o->01bf) with a generic loop emitter when it sits inside a while loop (a trainer's
  lax.scan, a Langevin chain), 10-50x slower than outside one; the canonical forms stay fast;
* 'patches': im2col, the k*k shifted copies of the padded input concatenated on the channel axis, then one
  matmul. Matmuls and their gradients of every order are loop-safe; costs k*k times the input activations.

Which form runs is a platform choice (dsm_jax/platform.py sets it once at start-up from the backend); a model
can pin one with its `conv_impl` attribute. Strided convolutions always use 'xla'.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

CONV_IMPLS = ("xla", "vjp", "patches")
_DN = ("NHWC", "HWIO", "NHWC")
_default_impl = "xla"


def set_default_conv_impl(impl: str) -> None:
  """The form `Conv` uses when a model does not pin one. Set once, before anything is traced."""
  global _default_impl
  if impl not in CONV_IMPLS:
    raise ValueError(f"unknown convolution form {impl!r}; use one of {CONV_IMPLS}")
  _default_impl = impl


def default_conv_impl() -> str:
  return _default_impl


def _pads(k: int, d: int) -> tuple:
  """'SAME' padding of a k x k kernel at dilation d: (k - 1) d // 2 before, the rest after (as XLA)."""
  total = (k - 1) * d
  return (total // 2, total - total // 2)


def _conv(x, w, d: int):
  p = _pads(w.shape[0], d)
  return jax.lax.conv_general_dilated(x, w, (1, 1), (p, p), rhs_dilation=(d, d), dimension_numbers=_DN)


def _make_vjp_conv(d: int):
  @jax.custom_vjp
  def conv(x, w):
    return _conv(x, w, d)

  def fwd(x, w):
    return _conv(x, w, d), (x, w)

  def bwd(res, g):
    x, w = res
    k = w.shape[0]
    lo, hi = _pads(k, d)
    # input gradient: g correlated with the spatially flipped kernel, channels swapped (padding mirrored)
    dx = jax.lax.conv_general_dilated(g, jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2), (1, 1), ((hi, lo), (hi, lo)),
                                      rhs_dilation=(d, d), dimension_numbers=_DN)
    # kernel gradient: input channels as the batch, the batch as the contracted feature axis, taps d apart
    dw = jax.lax.conv_general_dilated(x.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3), (d, d), ((lo, hi), (lo, hi)),
                                      dimension_numbers=_DN)
    return dx.astype(x.dtype), dw.transpose(1, 2, 0, 3).astype(w.dtype)

  conv.defvjp(fwd, bwd)
  return conv


_VJP_CONVS = {}


def conv_vjp(x: jax.Array, w: jax.Array, dilation: int = 1) -> jax.Array:
  """Stride-1 'SAME' convolution with the hand-written, loop-safe VJP (module docstring)."""
  if dilation not in _VJP_CONVS:
    _VJP_CONVS[dilation] = _make_vjp_conv(dilation)
  return _VJP_CONVS[dilation](x, w)


def conv_patches(x: jax.Array, w: jax.Array, dilation: int = 1) -> jax.Array:
  """Stride-1 'SAME' convolution as one matmul over image patches (im2col)."""
  k, _, c, f = w.shape
  if k == 1:
    return x @ w.reshape(c, f)
  lo, hi = _pads(k, dilation)
  xp = jnp.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)))
  h, wd = x.shape[1], x.shape[2]
  cols = jnp.concatenate([xp[:, i * dilation:i * dilation + h, j * dilation:j * dilation + wd]
                          for i in range(k) for j in range(k)], axis=-1)
  return cols @ w.reshape(k * k * c, f)


class Conv(nn.Module):
  """k x k 'SAME' convolution (stride, dilation), optional bias; compute in `dtype`, parameters float32."""
  features: int
  kernel_size: int = 3
  strides: int = 1
  dilation: int = 1
  use_bias: bool = True
  dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros
  conv_impl: Optional[str] = None  # None: the platform's form (set_default_conv_impl)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    w = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features), jnp.float32)
    x = x.astype(self.dtype)
    w = w.astype(self.dtype)
    impl = self.conv_impl or _default_impl
    if impl not in CONV_IMPLS:
      raise ValueError(f"unknown convolution form {impl!r}; use one of {CONV_IMPLS}")
    if self.strides != 1 or impl == "xla":
      s, p = self.strides, _pads(k, self.dilation)
      y = jax.lax.conv_general_dilated(x, w, (s, s), (p, p) if s == 1 else "SAME",
                                       rhs_dilation=(self.dilation, self.dilation), dimension_numbers=_DN)
    elif impl == "vjp":
      y = conv_vjp(x, w, self.dilation)
    else:
      y = conv_patches(x, w, self.dilation)
    if self.use_bias:
      y = y + self.param("bias", self.bias_init, (self.features,), jnp.float32).astype(self.dtype)
    return y

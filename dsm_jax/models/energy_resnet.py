"""MDSM's ResNet energy E(x) -> one scalar per image (Li, Chen & Sommer 2019, Sec. 5 / Appendix), NHWC.

Structure follows the public reference (zengyi-li/MDSM, models/ResNet.py: Res12/Res18/Res34_Quadratic,
normalize=False, AF=ELU):

* a 3x3 conv from the image channels to `nf` features;
* stages i = 0, 1, ..., each at width nf * 2^(i+1): one 'down' residual block (halves the resolution),
  then `stage_blocks[i] - 1` blocks at constant resolution. ResNet-12: (2, 2, 2) (28/32-pixel grey
  images), ResNet-18: (3, 3, 3) (CIFAR-10), ResNet-34: (3, 4, 6, 3) (the deeper one, CelebA);
* a residual block is ELU -> conv3x3 (C_in -> C_in, no bias) -> ELU -> conv3x3 (C_in -> C_out), plus a
  1x1-conv shortcut; in a down block the main path is mean-pooled after its second conv and the
  shortcut pools before its 1x1 conv (the reference's ConvMeanPool / MeanPoolConv). No normalisation;
  the reference's constant-resolution blocks also use a learned 1x1 shortcut (its identity test compares
  the resample string with None and never passes), and so do these;
* the quadratic output of the flattened features h (the paper's quadratic form; reference forward):
      E(x) = (w1.h + b1)(w2.h + b2) + wq.(h * h) + bq.

Deliberate differences from the reference: kernels use PyTorch's default fan-in uniform scale
(variance 1/(3 fan_in), as the reference, which never applies its `weights_init`) but biases start at
zero; an odd feature map (28 -> 14 -> 7) is mean-pooled with ceil (the last row/column averaged over
what exists), where the reference only runs 32-pixel inputs. `dtype` sets the convolutions' compute
dtype (parameters stay float32); the flattened features and the quadratic head are float32 (float64
when dtype is float64, for finite-difference tests under x64). Every convolution is models/layers.py's
`Conv`, whose form (XLA, hand-written VJP or im2col; the same parameters) the platform picks.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from dsm_jax.models import layers
from dsm_jax.models.registry import dtype, image_shape, pos_int, register_model, widths
from dsm_jax.validation import ConfigError

# PyTorch's default Conv2d / Linear weight scale (kaiming_uniform with a=sqrt(5)): U(+-1/sqrt(fan_in)).
kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

RESNET6 = (1, 1, 1)         # reference Res6_Quadratic: '3 block resnet for small MNIST experiment'
RESNET12 = (2, 2, 2)        # reference Res12_Quadratic: Fashion-MNIST / MNIST at 32x32
RESNET18 = (3, 3, 3)        # reference Res18_Quadratic: CIFAR-10
RESNET34 = (3, 4, 6, 3)     # reference Res34_Quadratic: the deeper network


def conv(features: int, k: int, bias: bool, dtype, impl: Optional[str], name: str) -> nn.Module:
  """A stride-1 'SAME' k x k convolution (layers.Conv) with the reference's weight scale."""
  return layers.Conv(features, k, use_bias=bias, dtype=dtype, kernel_init=kernel_init, conv_impl=impl, name=name)


def mean_pool(x: jax.Array) -> jax.Array:
  """2x2 mean pooling, stride 2; an odd side is pooled with ceil (edge windows average what exists)."""
  pad = ((0, x.shape[1] % 2), (0, x.shape[2] % 2))
  return nn.avg_pool(x, (2, 2), strides=(2, 2), padding=pad, count_include_pad=False)


def min_side(stage_blocks: Sequence[int]) -> int:
  """The smallest image side the network accepts: every down block halves a side of >= 2 pixels."""
  return 2 ** len(stage_blocks)


class EnergyResBlock(nn.Module):
  """Pre-activation residual block without normalisation (reference ResidualBlock, normalize=False)."""
  features: int
  down: bool = False
  dtype: Any = jnp.float32
  conv_impl: Optional[str] = None  # None: the platform's form (models/layers.py)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c_in = x.shape[-1]
    cv = lambda f, k, bias, name: conv(f, k, bias, self.dtype, self.conv_impl, name)  # noqa: E731
    h = cv(c_in, 3, False, "conv1")(nn.elu(x))
    h = cv(self.features, 3, True, "conv2")(nn.elu(h))
    if self.down:
      return cv(self.features, 1, True, "shortcut")(mean_pool(x)) + mean_pool(h)
    return cv(self.features, 1, True, "shortcut")(x) + h


class ResNetTrunk(nn.Module):
  """conv_in, then the stages of residual blocks: images [B, H, W, C] -> features [B, H', W', nf 2^L]."""
  nf: int = 64
  stage_blocks: Sequence[int] = RESNET12
  dtype: Any = jnp.float32
  conv_impl: Optional[str] = None  # None: the platform's form (models/layers.py)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    chex.assert_rank(x, 4)
    if min(x.shape[1], x.shape[2]) < min_side(self.stage_blocks):
      raise ValueError(f"EnergyResNet with {len(self.stage_blocks)} down blocks needs images of side >= "
                       f"{min_side(self.stage_blocks)}, got {x.shape[1]}x{x.shape[2]}")
    h = conv(self.nf, 3, True, self.dtype, self.conv_impl, "conv_in")(x)
    for i, n_blocks in enumerate(self.stage_blocks):
      width = self.nf * 2 ** (i + 1)
      for j in range(n_blocks):
        h = EnergyResBlock(width, down=(j == 0), dtype=self.dtype, conv_impl=self.conv_impl,
                           name=f"stage{i}_block{j}")(h)
    return h


class EnergyResNet(nn.Module):
  """E(x) for images x [B, H, W, C] -> [B] (p ∝ exp(-E)); float32 for float32/bfloat16 compute (float64
  under x64 with dtype float64). sigma is accepted and ignored: an MDSM energy is not noise-conditional,
  it models p at the fixed scale sigma0."""
  nf: int = 64
  stage_blocks: Sequence[int] = RESNET12
  dtype: Any = jnp.float32
  conv_impl: Optional[str] = None  # None: the platform's form (models/layers.py)

  @nn.compact
  def __call__(self, x: jax.Array, sigma: Optional[jax.Array] = None) -> jax.Array:
    del sigma
    h = ResNetTrunk(self.nf, tuple(self.stage_blocks), self.dtype, self.conv_impl, name="trunk")(x)
    out_dtype = jnp.promote_types(self.dtype, jnp.float32)
    h = h.reshape(h.shape[0], -1).astype(out_dtype)
    dense = lambda name: nn.Dense(1, dtype=out_dtype, kernel_init=kernel_init, name=name)  # noqa: E731
    e = dense("lin1")(h) * dense("lin2")(h) + dense("quad")(h * h)  # the quadratic output form
    e = e[:, 0]
    chex.assert_shape(e, (x.shape[0],))
    return e


@register_model("energy_resnet", nf=64, stage_blocks=RESNET12, dtype="float32")
def _energy_resnet(cfg, shape, prefix):
  """MDSM's ResNet energy; width and depth from nf and stage_blocks."""
  h, w, _ = image_shape(shape, "energy_resnet", prefix)
  nf = pos_int(cfg, "nf", prefix)
  blocks = widths(cfg, "stage_blocks", prefix)
  if min(h, w) < min_side(blocks):
    raise ConfigError(f"{prefix}.stage_blocks", f"{len(blocks)} down-sampling stages need images of side >= "
                                               f"{min_side(blocks)}, the data is {h}x{w}; use fewer stages")
  return EnergyResNet(nf=nf, stage_blocks=blocks, dtype=dtype(cfg, prefix))

"""NCSN's noise-conditional RefineNet (Song & Ermon 2019, Appendix A.3), NHWC.

Structure follows the public reference (ermongroup/ncsn, models/cond_refinenet_dilated.py):

* CondInstanceNorm++ everywhere (per-class gamma, alpha, beta; gamma, alpha ~ N(1, 0.02), beta = 0);
* ELU activations, pre-activation conditional residual blocks;
* 28 and 32 pixels (`CondRefineNetDilated`): res1 (ngf), res2 (2ngf, conv + 2x2 mean pool),
  res3 (2ngf, dilation 2), res4 (2ngf, dilation 4). The reference's 'down' blocks with a dilation do
  not change the resolution (the dilation stands in for the stride), so the feature maps are
  H, H/2, H/2, H/2 (28 -> 28, 14, 14, 14; its 28-pixel `adjust_padding` only acts in non-dilated
  down blocks, so 28 and 32 are the same network);
* 64 pixels (`CondRefineNetDeeperDilated`): res1 (ngf), res2 (2ngf, down), res3 (2ngf, down),
  res4 (4ngf, dilation 2), res5 (4ngf, dilation 4): H, H/2, H/4, H/4, H/4;
* RefineNet cascade from the coarsest level up: adaptive RCUs (2 blocks x 2 stages per input),
  multi-resolution fusion (norm -> conv3x3 -> bilinear upsampling with align_corners=True -> sum),
  chained residual pooling (2 stages of norm -> 5x5 average pool -> conv3x3), output RCU
  (3 blocks in the last refine block, else 1);
* final CondInstanceNorm++ -> ELU -> conv3x3 to the image channels.

Deliberate differences from the reference: convolution kernels use PyTorch's default fan-in uniform
scale (variance 1/(3 fan_in)) but biases start at zero; the deeper (64-pixel) variant also uses
CondInstanceNorm++ (the reference's deeper class uses plain conditional instance norm); the noise level
enters as sigma and the class index is recovered as argmin_j |log sigma - log sigma_j|.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dsm_jax.models import layers
from dsm_jax.models.registry import dtype, flag, image_shape, pos_int, register_model
from dsm_jax.validation import ConfigError

SUPPORTED_SIZES = (28, 32, 64)

# PyTorch's default Conv2d weight scale (kaiming_uniform with a=sqrt(5)): U(+-1/sqrt(fan_in)).
conv_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def sigma_to_index(sigma: jax.Array, sigmas: Sequence[float]) -> jax.Array:
  """Ladder index of each sigma: argmin_j |log sigma - log sigmas[j]| ([B] -> [B] int32)."""
  log_ladder = jnp.log(jnp.asarray(sigmas, jnp.float32))
  log_sigma = jnp.log(jnp.asarray(sigma, jnp.float32))
  return jnp.argmin(jnp.abs(log_sigma[..., None] - log_ladder), axis=-1).astype(jnp.int32)


def _cin_plus_init(num_features: int):
  def init(key, shape, dtype=jnp.float32):
    ga = 1.0 + 0.02 * jax.random.normal(key, (shape[0], 2 * num_features), dtype)
    return jnp.concatenate([ga, jnp.zeros((shape[0], num_features), dtype)], axis=-1)
  return init


class CondInstanceNormPlus(nn.Module):
  """Conditional instance normalisation++ (NCSN Appendix A.1), NHWC.

  z = gamma[y] * (IN(x) + alpha[y] * (mu - mean_c(mu)) / std_c(mu)) + beta[y], where mu are the
  per-channel spatial means of x; IN uses the biased variance, std_c the unbiased one across channels
  (as torch.var in the reference), eps = 1e-5. Statistics are computed in float32."""
  num_classes: int
  dtype: Any = jnp.float32
  eps: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
    c = x.shape[-1]
    embed = self.param("embed", _cin_plus_init(c), (self.num_classes, 3 * c), jnp.float32)
    gamma, alpha, beta = jnp.split(embed[y], 3, axis=-1)  # [B, C] each
    xf = x.astype(jnp.float32)
    mu = jnp.mean(xf, axis=(1, 2))  # [B, C]
    var = jnp.var(xf, axis=(1, 2))
    h = (xf - mu[:, None, None, :]) * jax.lax.rsqrt(var[:, None, None, :] + self.eps)
    m = jnp.mean(mu, axis=-1, keepdims=True)
    v = jnp.var(mu, axis=-1, keepdims=True, ddof=1 if c > 1 else 0)
    mu_n = (mu - m) * jax.lax.rsqrt(v + self.eps)
    h = h + (mu_n * alpha)[:, None, None, :]
    out = gamma[:, None, None, :] * h + beta[:, None, None, :]
    return out.astype(self.dtype)


def _conv(features: int, dtype, kernel: int = 3, dilation: int = 1, bias: bool = True, name=None):
  return layers.Conv(features, kernel, dilation=dilation, use_bias=bias, dtype=dtype, kernel_init=conv_init, name=name)


def _mean_pool(x: jax.Array) -> jax.Array:
  """2x2 average pooling with stride 2 (the reference's ConvMeanPool)."""
  return nn.avg_pool(x, (2, 2), strides=(2, 2))


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
  """[n_out, n_in] linear interpolation weights with align_corners=True (F.interpolate)."""
  m = np.zeros((n_out, n_in), np.float32)
  src = np.zeros(n_out) if n_out == 1 else np.arange(n_out) * (n_in - 1) / (n_out - 1)
  i0 = np.clip(np.floor(src).astype(int), 0, n_in - 1)
  i1 = np.minimum(i0 + 1, n_in - 1)
  w = (src - i0).astype(np.float32)
  m[np.arange(n_out), i0] += 1.0 - w
  m[np.arange(n_out), i1] += w
  return m


def resize_bilinear_aligned(x: jax.Array, shape: Tuple[int, int]) -> jax.Array:
  """Bilinear resize of NHWC x to spatial `shape`, corners aligned (as the reference)."""
  if tuple(x.shape[1:3]) == tuple(shape):
    return x
  mh = jnp.asarray(_interp_matrix(shape[0], x.shape[1]), x.dtype)
  mw = jnp.asarray(_interp_matrix(shape[1], x.shape[2]), x.dtype)
  x = jnp.einsum("oh,bhwc->bowc", mh, x)
  return jnp.einsum("pw,bowc->bopc", mw, x)


class CondResBlock(nn.Module):
  """Pre-activation conditional residual block: norm -> ELU -> conv -> norm -> ELU -> conv, + shortcut.

  down=True without a dilation halves the resolution (conv then 2x2 mean pool; 1x1 conv + pool
  shortcut); down=True with a dilation keeps it (dilated convs, dilated 3x3 conv shortcut), both as
  the reference."""
  features: int
  num_classes: int
  down: bool = False
  dilation: Optional[int] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, y):
    c_in = x.shape[-1]
    d = self.dilation or 1
    norm = lambda name: CondInstanceNormPlus(self.num_classes, dtype=self.dtype, name=name)  # noqa: E731
    h = nn.elu(norm("norm1")(x, y))
    if self.down:
      h = _conv(c_in, self.dtype, dilation=d, name="conv1")(h)
      h = nn.elu(norm("norm2")(h, y))
      h = _conv(self.features, self.dtype, dilation=d, name="conv2")(h)
      if self.dilation is None:
        h = _mean_pool(h)
        shortcut = _mean_pool(_conv(self.features, self.dtype, kernel=1, name="shortcut")(x))
      else:
        shortcut = _conv(self.features, self.dtype, dilation=d, name="shortcut")(x)
    else:
      h = _conv(self.features, self.dtype, dilation=d, name="conv1")(h)
      h = nn.elu(norm("norm2")(h, y))
      h = _conv(self.features, self.dtype, dilation=d, name="conv2")(h)
      if self.features == c_in:
        shortcut = x
      else:  # not used by the reference architectures
        shortcut = _conv(self.features, self.dtype, kernel=1, name="shortcut")(x)
    return shortcut + h


class CondRCU(nn.Module):
  """Conditional residual conv unit: n_blocks x (n_stages x (norm -> ELU -> conv3x3 no bias) + skip)."""
  num_classes: int
  n_blocks: int
  n_stages: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, y):
    c = x.shape[-1]
    for i in range(self.n_blocks):
      residual = x
      for j in range(self.n_stages):
        x = CondInstanceNormPlus(self.num_classes, dtype=self.dtype, name=f"norm_{i}_{j}")(x, y)
        x = _conv(c, self.dtype, bias=False, name=f"conv_{i}_{j}")(nn.elu(x))
      x = x + residual
    return x


class CondMSF(nn.Module):
  """Multi-resolution fusion: per input norm -> conv3x3 (bias) -> bilinear resize -> sum."""
  features: int
  num_classes: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, xs, y, shape):
    out = 0.0
    for i, x in enumerate(xs):
      h = CondInstanceNormPlus(self.num_classes, dtype=self.dtype, name=f"norm_{i}")(x, y)
      h = _conv(self.features, self.dtype, name=f"conv_{i}")(h)
      out = out + resize_bilinear_aligned(h, shape)
    return out


class CondCRP(nn.Module):
  """Chained residual pooling: ELU, then n_stages of norm -> 5x5 avg pool -> conv3x3, each summed in."""
  num_classes: int
  n_stages: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, y):
    c = x.shape[-1]
    x = nn.elu(x)
    path = x
    for i in range(self.n_stages):
      path = CondInstanceNormPlus(self.num_classes, dtype=self.dtype, name=f"norm_{i}")(path, y)
      # torch AvgPool2d(5, 1, padding=2) counts the zero padding: a plain sum / 25.
      path = nn.avg_pool(path, (5, 5), strides=(1, 1), padding=((2, 2), (2, 2)), count_include_pad=True)
      path = _conv(c, self.dtype, bias=False, name=f"conv_{i}")(path)
      x = path + x
    return x


class CondRefineBlock(nn.Module):
  """RefineNet block: adaptive RCUs per input, fusion (if several inputs), CRP, output RCU."""
  features: int
  num_classes: int
  end: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, xs, y, shape):
    hs = [CondRCU(self.num_classes, n_blocks=2, dtype=self.dtype, name=f"adapt_{i}")(x, y)
          for i, x in enumerate(xs)]
    if len(hs) > 1:
      h = CondMSF(self.features, self.num_classes, dtype=self.dtype, name="msf")(hs, y, shape)
    else:
      h = hs[0]
    h = CondCRP(self.num_classes, dtype=self.dtype, name="crp")(h, y)
    return CondRCU(self.num_classes, n_blocks=3 if self.end else 1, dtype=self.dtype, name="output")(h, y)


class CondRefineNet(nn.Module):
  """NCSN score network s(x, sigma) for images x [B, H, W, C] (NHWC), H = W in (28, 32, 64).

  sigma [B] (or a scalar) is mapped to its ladder index; scale_by_sigma=True returns f/sigma (NCSNv2),
  False the raw network output (NCSN v1). centered_input=True feeds 2x - 1 (data in [0, 1])."""
  sigmas: tuple
  ngf: int = 64
  num_channels: int = 1
  image_size: int = 32
  scale_by_sigma: bool = False
  centered_input: bool = True
  dtype: Any = jnp.float32

  def _levels(self):
    """(features, down, dilation) of each residual stage, two blocks per stage."""
    g = self.ngf
    if self.image_size in (28, 32):
      return [(g, False, None), (2 * g, True, None), (2 * g, True, 2), (2 * g, True, 4)]
    if self.image_size == 64:
      return [(g, False, None), (2 * g, True, None), (2 * g, True, None), (4 * g, True, 2),
              (4 * g, True, 4)]
    raise ValueError(f"CondRefineNet supports image sizes {SUPPORTED_SIZES}, got {self.image_size}")

  @nn.compact
  def __call__(self, x: jax.Array, sigma: jax.Array) -> jax.Array:
    levels = self._levels()
    if x.ndim != 4 or x.shape[1] != self.image_size or x.shape[2] != self.image_size:
      raise ValueError(f"expected x of shape [B, {self.image_size}, {self.image_size}, {self.num_channels}], "
                       f"got {x.shape}")
    if x.shape[-1] != self.num_channels:
      raise ValueError(f"expected {self.num_channels} channels, got x of shape {x.shape}")
    num_classes = len(self.sigmas)
    sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), x.shape[:1])
    y = sigma_to_index(sigma, self.sigmas)

    h = 2.0 * x - 1.0 if self.centered_input else x
    h = _conv(self.ngf, self.dtype, name="begin_conv")(h.astype(self.dtype))

    feats = []
    for k, (features, down, dilation) in enumerate(levels):
      h = CondResBlock(features, num_classes, down=down, dilation=dilation, dtype=self.dtype,
                       name=f"res{k + 1}_0")(h, y)
      h = CondResBlock(features, num_classes, dilation=dilation, dtype=self.dtype,
                       name=f"res{k + 1}_1")(h, y)
      feats.append(h)

    # Refine from the coarsest level up; each block outputs the width of the next finer level.
    n = len(feats)
    ref = None
    for i in range(n):
      level = feats[n - 1 - i]
      out_features = feats[n - 2 - i].shape[-1] if i < n - 1 else self.ngf
      xs = [level] if ref is None else [level, ref]
      ref = CondRefineBlock(out_features if i > 0 else level.shape[-1], num_classes, end=(i == n - 1),
                            dtype=self.dtype, name=f"refine{i + 1}")(xs, y, level.shape[1:3])

    h = nn.elu(CondInstanceNormPlus(num_classes, dtype=self.dtype, name="normalizer")(ref, y))
    out = _conv(self.num_channels, self.dtype, name="end_conv")(h).astype(x.dtype)
    if self.scale_by_sigma:
      out = out / sigma.astype(out.dtype)[:, None, None, None]
    return out


@register_model("refinenet", ngf=64, scale_by_sigma=False, dtype="float32")
def _refinenet(cfg, shape, prefix, sigmas=()):
  """NCSN's CondRefineNetDilated for square images of side 28, 32 or 64, conditioned on the ladder `sigmas`."""
  h, w, c = image_shape(shape, "refinenet", prefix)
  if h != w or h not in SUPPORTED_SIZES:
    raise ConfigError("data.image_size", f"refinenet supports square images of size {SUPPORTED_SIZES}, got {h}x{w}")
  if not sigmas:
    raise ConfigError(f"{prefix}.name", "refinenet is noise-conditional (NCSN); use it with a sigma ladder")
  return CondRefineNet(sigmas=tuple(float(s) for s in sigmas), ngf=pos_int(cfg, "ngf", prefix), num_channels=c,
                       image_size=h, scale_by_sigma=flag(cfg, "scale_by_sigma", prefix), dtype=dtype(cfg, prefix))

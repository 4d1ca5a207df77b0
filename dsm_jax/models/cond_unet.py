"""A small noise-conditional U-Net score network s(x, sigma) for CPU-sized image runs.

NCSN's RefineNet (models/refinenet.py) spends most of a CPU step in its full-resolution residual
stages and 5x5 chained-residual pooling (benchmarks/bench_conv_kinds.py); at
28x28 on 2 cores it manages ~1 step/s at width 16, too slow for a 30-minute run. This net keeps
NCSN's ingredients (CondInstanceNorm++ on the ladder index, ELU pre-activation residual blocks,
mean-pool downsampling) and replaces the dilated stages and RefineNet blocks with a plain U-Net:

  H x W:      begin conv -> res(c1)                        ----skip----+
  H/2 x W/2:  res_down(c2) -> res(c2)                       --skip--+   |
  H/4 x W/4:  res_down(c3) -> res(c3) -> res(c3)                    |   |
  up x2, concat, res(c2) <------------------------------------------+   |
  up x2, concat, res(c1) <----------------------------------------------+
  norm -> ELU -> conv -> C channels  (/ sigma if scale_by_sigma, NCSNv2's technique 3)

gaussian_skip=True adds the score of a Gaussian model of the image's mean brightness. Every residual
block starts with an instance norm and the output passes CondInstanceNorm++, which removes each channel's
spatial mean, so the network hardly sees the absolute brightness of its input and cannot push a too-bright
image back: without the skip, 69% of annealed mnist5k chains drifted to white (docs/log/). With
mean(x) the mean over all N = H W C values, and the data's image means ~ N(m, tau^2) (skip_mean, skip_std),
mean(x~) ~ N(m, tau^2 + sigma^2 / N) under the noise, whose score along the constant image is

  s(x, sigma) = F(x, sigma) / sigma - (mean(x) - m) / (N tau^2 + sigma^2)      (the same value at every pixel)

It acts on the one direction the network is blind to and nowhere else. (A per-pixel Gaussian term
-(x - m) / (sigma^2 + sd^2) would have to be cancelled by the network pixel by pixel at small sigma; after 1,400
steps it is not, and strokes come out grey and eroded: docs/log/.)

H and W must be divisible by 4 (28, 32, 64; the 8x8 digits too).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dsm_jax.models.refinenet import CondInstanceNormPlus, CondResBlock, _conv, sigma_to_index
from dsm_jax.models.registry import dtype, flag, image_shape, number, register_model, widths
from dsm_jax.validation import ConfigError


def _upsample2(x: jax.Array) -> jax.Array:
  b, h, w, c = x.shape
  return jax.image.resize(x, (b, 2 * h, 2 * w, c), method="nearest")


class CondUNet(nn.Module):
  sigmas: tuple
  channels: Sequence[int] = (32, 64, 64)
  num_channels: int = 1
  scale_by_sigma: bool = True
  centered_input: bool = True
  gaussian_skip: bool = False
  skip_mean: float = 0.5   # m: the data's mean image brightness
  skip_std: float = 0.05   # tau: the standard deviation of the data's image means
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, sigma: jax.Array) -> jax.Array:
    if x.ndim != 4 or x.shape[-1] != self.num_channels:
      raise ValueError(f"expected x of shape [B, H, W, {self.num_channels}], got {x.shape}")
    if x.shape[1] % 4 or x.shape[2] % 4:
      raise ValueError(f"CondUNet needs H and W divisible by 4, got {x.shape[1:3]}")
    c1, c2, c3 = self.channels
    nc = len(self.sigmas)
    sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), x.shape[:1])
    y = sigma_to_index(sigma, self.sigmas)
    res = lambda f, name, down=False: CondResBlock(f, nc, down=down, dtype=self.dtype, name=name)  # noqa: E731

    h = 2.0 * x - 1.0 if self.centered_input else x
    h = _conv(c1, self.dtype, name="begin_conv")(h.astype(self.dtype))
    s1 = res(c1, "enc1")(h, y)                                  # H
    h = res(c2, "down2", down=True)(s1, y)                      # H/2
    s2 = res(c2, "enc2")(h, y)
    h = res(c3, "down3", down=True)(s2, y)                      # H/4
    h = res(c3, "mid1")(h, y)
    h = res(c3, "mid2")(h, y)
    h = jnp.concatenate([_upsample2(h), s2], axis=-1)           # H/2
    h = res(c2, "dec2")(h, y)
    h = jnp.concatenate([_upsample2(h), s1], axis=-1)           # H
    h = res(c1, "dec1")(h, y)
    h = nn.elu(CondInstanceNormPlus(nc, dtype=self.dtype, name="normalizer")(h, y))
    out = _conv(self.num_channels, self.dtype, name="end_conv")(h).astype(x.dtype)
    sig = sigma.astype(out.dtype)[:, None, None, None]
    if self.scale_by_sigma or self.gaussian_skip:
      out = out / sig
    if self.gaussian_skip:  # the Gaussian score of the image mean, broadcast over the pixels
      n = x.shape[1] * x.shape[2] * x.shape[3]
      mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True).astype(out.dtype)
      out = out - (mean - self.skip_mean) / (n * self.skip_std ** 2 + sig ** 2)
    return out


@register_model("cond_unet", channels=(32, 64, 64), scale_by_sigma=True, gaussian_skip=False, skip_mean=0.5,
                skip_std=0.05, dtype="float32")
def _cond_unet(cfg, shape, prefix, sigmas=()):
  _, _, c = image_shape(shape, "cond_unet", prefix, 4)
  ch = widths(cfg, "channels", prefix)
  if len(ch) != 3:
    raise ConfigError(f"{prefix}.channels", f"must be three positive widths (c1, c2, c3), got {ch!r}")
  if not sigmas:
    raise ConfigError(f"{prefix}.name", "cond_unet is noise-conditional; use it with a sigma ladder")
  return CondUNet(sigmas=tuple(float(s) for s in sigmas), channels=ch, num_channels=c,
                  scale_by_sigma=flag(cfg, "scale_by_sigma", prefix), gaussian_skip=flag(cfg, "gaussian_skip", prefix),
                  skip_mean=number(cfg, "skip_mean", prefix), skip_std=number(cfg, "skip_std", prefix, positive=True),
                  dtype=dtype(cfg, prefix))

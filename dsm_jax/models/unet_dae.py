"""Denoising-EBM's networks (Zeng 2023, "How to Construct Energy for Images? Denoising Autoencoder Can
Be Energy Based Model", Sec. 4.1), NHWC.

* `UNetDAE`: the noise-conditional denoising autoencoder r_phi(x~, sigma) = g_beta(f_alpha(x~, sigma)),
  phi = (alpha, beta), and the semantic decoder h_gamma(z), in one Flax module whose methods give
  each piece (use `apply(variables, ..., method=...)` or the functions below):

    encode(x~, sigma)          -> (z, skips)      f_alpha: z [B, latent_dim] is the semantic code
    decode(z, skips, x~, sigma) -> r              g_beta (needs f_alpha's skip connections)
    denoise(x~, sigma)         -> r               r_phi = g_beta o f_alpha
    semantic_decode(z)         -> image           h_gamma (no skips, no sigma: latent -> image)

  The parameter tree is {'embed', 'encoder', 'decoder'} (phi) plus {'semantic'} (gamma); `split` and
  `merge` move between that tree and the {'phi', 'gamma'} pair the method trains with two optimizer
  states.

Architecture (the paper gives a U-Net with ResNet blocks and skip connections; the widths and depth
here come from the config):
  * noise conditioning: Fourier features of log sigma -> Dense -> SiLU -> Dense, added to every ResNet
    block of f and g (as in DDPM's time embedding);
  * ResNet block: GroupNorm -> SiLU -> conv3x3 (+ sigma embedding) -> GroupNorm -> SiLU -> conv3x3,
    plus the input (1x1 conv when the width changes);
  * f_alpha: conv3x3 to nf channels, then per resolution level `num_res_blocks` blocks of width
    nf * ch_mult[i] and a stride-2 conv between levels; at the coarsest level a block, GroupNorm, SiLU,
    flatten and Dense to `latent_dim`, then (latent_norm) a LayerNorm without scale or offset, so each
    code has mean 0 and variance 1 over its entries, like the z ~ N(0, I) that starts latent Langevin;
  * g_beta: Dense from z back to the coarsest feature map, then the levels in reverse with the encoder's
    activations of every *finer* level concatenated in (no skip at the coarsest level: global content
    reaches g only through z), nearest-neighbour x2 upsampling + conv3x3 between levels;
  * output parameterisation (a choice; the paper only writes r_phi): the network input is
    x~ / sqrt(sigma_data^2 + sigma^2) and r = x~ - sigma * F(...), i.e. F predicts the unit noise.
    With F = 0 (the zero-initialised last conv) r is the identity;
  * h_gamma: Dense to the coarsest feature map, the same ResNet levels upward with no skips and no
    sigma, conv3x3 to the image channels (linear output: latent Langevin differentiates through it).

Image side must be divisible by 2^(len(ch_mult) - 1): 28 -> 14 -> 7 with ch_mult of length 3,
32 -> 4 and 64 -> 4 with lengths 4 and 5 (the configs' defaults).
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Sequence, Tuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from dsm_jax.models import layers
from dsm_jax.models.registry import dtype, flag, image_shape, number, pos_int, register_model, widths
from dsm_jax.validation import ConfigError

SUPPORTED_SIZES = (28, 32, 64)
PHI_KEYS = ("embed", "encoder", "decoder")
GAMMA_KEY = "semantic"


def Conv(features: int, kernel: int = 3, kernel_init: Callable = nn.initializers.lecun_normal(),
         dtype: Any = jnp.float32) -> nn.Module:
  """k x k stride-1 'SAME' convolution with bias (lecun-normal kernel, zero bias): models/layers.py's Conv."""
  return layers.Conv(features, kernel, kernel_init=kernel_init, dtype=dtype)


def _downsample(x):
  """2x2 mean pooling (a reshape and a mean)."""
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def _groups(c: int) -> int:
  return math.gcd(c, 8)


def sigma_fourier(sigma: jax.Array, n: int) -> jax.Array:
  """[B] -> [B, 2n]: sin/cos of log(sigma) at frequencies 1..n."""
  ls = jnp.log(sigma)[:, None] * jnp.arange(1, n + 1, dtype=jnp.float32)[None]
  return jnp.concatenate([jnp.sin(ls), jnp.cos(ls)], axis=-1)


class GroupNorm(nn.Module):
  """Group normalisation over (H, W, channels of a group), eps 1e-5, per-channel scale and offset.
  Written out because flax's general GroupNorm lowers to ~3x as many HLO ops, and XLA:CPU compile time
  (minutes for Algorithm 1's step, which holds several copies of the network) scales with them."""
  num_groups: int
  eps: float = 1e-5

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    g = self.num_groups
    dtype = x.dtype
    xg = x.astype(jnp.float32).reshape(b, h, w, g, c // g)  # statistics in float32 whatever the compute dtype
    mean = jnp.mean(xg, axis=(1, 2, 4), keepdims=True)
    var = jnp.mean(jnp.square(xg - mean), axis=(1, 2, 4), keepdims=True)
    xg = (xg - mean) * jax.lax.rsqrt(var + self.eps)
    scale = self.param("scale", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    return (xg.reshape(b, h, w, c) * scale + bias).astype(dtype)


class SigmaEmbed(nn.Module):
  dim: int
  n_freq: int = 16
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, sigma):
    h = nn.Dense(self.dim, dtype=self.dtype)(sigma_fourier(sigma, self.n_freq))
    return nn.Dense(self.dim, dtype=self.dtype)(nn.silu(h))


class ResBlock(nn.Module):
  out_ch: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, emb: Optional[jax.Array] = None):
    h = nn.silu(GroupNorm(num_groups=_groups(x.shape[-1]))(x))
    h = Conv(self.out_ch, dtype=self.dtype)(h)
    if emb is not None:
      h = h + nn.Dense(self.out_ch, dtype=self.dtype)(nn.silu(emb))[:, None, None, :]
    h = nn.silu(GroupNorm(num_groups=_groups(self.out_ch))(h))
    h = Conv(self.out_ch, dtype=self.dtype)(h)
    if x.shape[-1] != self.out_ch:
      x = Conv(self.out_ch, kernel=1, dtype=self.dtype)(x)
    return x.astype(self.dtype) + h


def _upsample(x):
  """Nearest-neighbour x2 (a broadcast and a reshape: cheaper to compile than jax.image.resize)."""
  b, h, w, c = x.shape
  return jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c)).reshape(b, 2 * h, 2 * w, c)


class Encoder(nn.Module):
  """f_alpha(x~, sigma) -> (z [B, latent_dim], skips: activations of every level but the coarsest)."""
  nf: int
  ch_mult: Tuple[int, ...]
  num_res_blocks: int
  latent_dim: int
  latent_norm: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, emb):
    h = Conv(self.nf, dtype=self.dtype)(x)
    n_levels = len(self.ch_mult)
    skips = [h] if n_levels > 1 else []
    for i, mult in enumerate(self.ch_mult):
      for _ in range(self.num_res_blocks):
        h = ResBlock(self.nf * mult, self.dtype)(h, emb)
        if i < n_levels - 1:
          skips.append(h)
      if i < n_levels - 1:
        h = Conv(h.shape[-1], dtype=self.dtype)(_downsample(h))
    h = ResBlock(h.shape[-1], self.dtype)(h, emb)
    h = nn.silu(GroupNorm(num_groups=_groups(h.shape[-1]))(h))
    z = nn.Dense(self.latent_dim, dtype=self.dtype)(h.reshape(h.shape[0], -1)).astype(jnp.float32)
    if self.latent_norm:
      z = (z - jnp.mean(z, -1, keepdims=True)) * jax.lax.rsqrt(jnp.var(z, -1, keepdims=True) + 1e-6)
    return z, tuple(skips)


class Decoder(nn.Module):
  """g_beta(z, skips, sigma) -> F [B, H, W, C] (the unit-noise prediction; see UNetDAE.decode)."""
  nf: int
  ch_mult: Tuple[int, ...]
  num_res_blocks: int
  image_shape: Tuple[int, int, int]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z, skips, emb):
    n_levels = len(self.ch_mult)
    f = 2 ** (n_levels - 1)
    hh, ww, c_img = self.image_shape[0] // f, self.image_shape[1] // f, self.image_shape[2]
    c_low = self.nf * self.ch_mult[-1]
    h = nn.Dense(hh * ww * c_low, dtype=self.dtype)(z).reshape(z.shape[0], hh, ww, c_low)
    h = ResBlock(c_low, self.dtype)(h, emb)
    skips = list(skips)
    for i in reversed(range(n_levels)):
      if i < n_levels - 1:  # finer levels: skips from f_alpha (num_res_blocks per level, plus conv_in)
        for _ in range(self.num_res_blocks + (1 if i == 0 else 0)):
          h = ResBlock(self.nf * self.ch_mult[i], self.dtype)(jnp.concatenate([h, skips.pop()], axis=-1), emb)
      else:
        for _ in range(self.num_res_blocks):
          h = ResBlock(self.nf * self.ch_mult[i], self.dtype)(h, emb)
      if i > 0:
        h = Conv(h.shape[-1], dtype=self.dtype)(_upsample(h))
    assert not skips, "every skip connection is used"
    h = nn.silu(GroupNorm(num_groups=_groups(h.shape[-1]))(h))
    return Conv(c_img, kernel_init=nn.initializers.zeros, dtype=self.dtype)(h).astype(jnp.float32)


class SemanticDecoder(nn.Module):
  """h_gamma(z) -> image [B, H, W, C]: latent code to image, no skips, no sigma."""
  nf: int
  ch_mult: Tuple[int, ...]
  num_res_blocks: int
  image_shape: Tuple[int, int, int]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z):
    n_levels = len(self.ch_mult)
    f = 2 ** (n_levels - 1)
    hh, ww, c_img = self.image_shape[0] // f, self.image_shape[1] // f, self.image_shape[2]
    c_low = self.nf * self.ch_mult[-1]
    h = nn.Dense(hh * ww * c_low, dtype=self.dtype)(z).reshape(z.shape[0], hh, ww, c_low)
    for i in reversed(range(n_levels)):
      for _ in range(self.num_res_blocks):
        h = ResBlock(self.nf * self.ch_mult[i], self.dtype)(h)
      if i > 0:
        h = Conv(h.shape[-1], dtype=self.dtype)(_upsample(h))
    h = nn.silu(GroupNorm(num_groups=_groups(h.shape[-1]))(h))
    return Conv(c_img, dtype=self.dtype)(h).astype(jnp.float32)


class UNetDAE(nn.Module):
  """r_phi(x~, sigma) = g_beta(f_alpha(x~, sigma)) and h_gamma(z); see the module docstring."""
  image_shape: Tuple[int, int, int]
  nf: int = 32
  ch_mult: Tuple[int, ...] = (1, 2, 2)
  num_res_blocks: int = 1
  latent_dim: int = 128
  latent_norm: bool = True
  sigma_data: float = 0.5
  dtype: Any = jnp.float32  # compute dtype (bfloat16 on accelerators); parameters, norms and outputs float32

  def setup(self):
    h, w, _ = self.image_shape
    f = 2 ** (len(self.ch_mult) - 1)
    if h % f or w % f:
      raise ValueError(f"image {h}x{w} is not divisible by 2^(len(ch_mult) - 1) = {f}")
    ch_mult = tuple(self.ch_mult)
    self.embed = SigmaEmbed(4 * self.nf, dtype=self.dtype)
    self.encoder = Encoder(self.nf, ch_mult, self.num_res_blocks, self.latent_dim, self.latent_norm, self.dtype)
    self.decoder = Decoder(self.nf, ch_mult, self.num_res_blocks, tuple(self.image_shape), self.dtype)
    self.semantic = SemanticDecoder(self.nf, ch_mult, self.num_res_blocks, tuple(self.image_shape), self.dtype)

  def _check(self, x, sigma):
    chex.assert_rank(x, 4)
    chex.assert_shape(x, (None,) + tuple(self.image_shape))
    chex.assert_shape(sigma, (x.shape[0],))

  def _c_in(self, sigma):
    return jax.lax.rsqrt(self.sigma_data ** 2 + sigma ** 2)[:, None, None, None]

  def encode(self, x_noisy, sigma) -> tuple:
    """f_alpha: (z [B, latent_dim], skips)."""
    self._check(x_noisy, sigma)
    return self.encoder(x_noisy * self._c_in(sigma), self.embed(sigma))

  def decode(self, z, skips, x_noisy, sigma):
    """g_beta: r = x~ - sigma * F(z, skips, sigma)."""
    chex.assert_shape(z, (x_noisy.shape[0], self.latent_dim))
    out = self.decoder(z, skips, self.embed(sigma))
    return x_noisy - sigma[:, None, None, None] * out

  def denoise(self, x_noisy, sigma):
    """r_phi(x~, sigma) = g_beta(f_alpha(x~, sigma))."""
    z, skips = self.encode(x_noisy, sigma)
    return self.decode(z, skips, x_noisy, sigma)

  def semantic_decode(self, z):
    """h_gamma(z)."""
    chex.assert_shape(z, (None, self.latent_dim))
    return self.semantic(z)

  def __call__(self, x_noisy, sigma):
    """(r_phi(x~, sigma), h_gamma(f_alpha(x~, sigma))): touches every parameter (for init)."""
    z, skips = self.encode(x_noisy, sigma)
    return self.decode(z, skips, x_noisy, sigma), self.semantic_decode(z)


# ---------------------------------------------------------------------------------- parameter trees
def split(variables) -> dict:
  """Flax variables {'params': {...}} -> {'phi': {...}, 'gamma': {...}} (the DAE and h_gamma)."""
  p = variables["params"]
  return {"phi": {k: p[k] for k in PHI_KEYS}, "gamma": p[GAMMA_KEY]}


def merge(params) -> dict:
  """{'phi', 'gamma'} -> Flax variables."""
  return {"params": {**params["phi"], GAMMA_KEY: params["gamma"]}}


class DAEFunctions(NamedTuple):
  """What Denoising-EBM needs of its networks, as pure callables (dsm_jax.methods.debm takes any
  params -> DAEFunctions map, so its losses and samplers are tested with small closed-form models)."""
  denoise: Callable            # r_phi(x~ [B, H, W, C], sigma [B]) -> [B, H, W, C]
  encode: Callable             # f_alpha(x~, sigma) -> z [B, latent_dim]
  denoise_and_code: Callable   # (x~, sigma) -> (r_phi(x~, sigma), z): one pass of f_alpha for both
  semantic_decode: Callable    # h_gamma(z) -> [B, H, W, C]


def functions(net: UNetDAE, params) -> DAEFunctions:
  """The UNetDAE's pieces as callables of the {'phi', 'gamma'} parameters."""
  v = merge(params)

  def denoise_and_code(x, s):
    z, skips = net.apply(v, x, s, method=UNetDAE.encode)
    return net.apply(v, z, skips, x, s, method=UNetDAE.decode), z

  return DAEFunctions(
      denoise=lambda x, s: net.apply(v, x, s, method=UNetDAE.denoise),
      encode=lambda x, s: net.apply(v, x, s, method=UNetDAE.encode)[0],
      denoise_and_code=denoise_and_code,
      semantic_decode=lambda z: net.apply(v, z, method=UNetDAE.semantic_decode))


def max_levels(image_shape: Sequence[int]) -> int:
  """The most resolution levels an image allows: 1 + how often both sides can be halved exactly."""
  h, w, n = int(image_shape[0]), int(image_shape[1]), 1
  while h % 2 == 0 and w % 2 == 0 and min(h, w) > 2:
    h, w, n = h // 2, w // 2, n + 1
  return n


@register_model("unet_dae", nf=64, ch_mult=(1, 2, 2, 2), num_res_blocks=2, latent_dim=128, latent_norm=True,
                sigma_data=0.5, dtype="float32")
def _unet_dae(cfg, shape, prefix):
  """Denoising-EBM's U-Net DAE r_phi = g_beta o f_alpha with the semantic decoder h_gamma."""
  image_shape(shape, "unet_dae", prefix)
  for key in ("nf", "num_res_blocks", "latent_dim"):
    pos_int(cfg, key, prefix)
  cm = widths(cfg, "ch_mult", prefix)
  if len(cm) < 2:
    raise ConfigError(f"{prefix}.ch_mult", f"must be a tuple of >= 2 positive width multipliers, e.g. (1, 2, 2), got {cm!r}")
  if len(cm) > max_levels(shape):
    raise ConfigError(f"{prefix}.ch_mult", f"{len(cm)} levels need {len(cm) - 1} exact halvings; a "
                                           f"{shape[0]}x{shape[1]} image allows at most {max_levels(shape)} levels")
  return UNetDAE(image_shape=shape, nf=cfg.nf, ch_mult=cm, num_res_blocks=cfg.num_res_blocks,
                 latent_dim=cfg.latent_dim, latent_norm=flag(cfg, "latent_norm", prefix),
                 sigma_data=number(cfg, "sigma_data", prefix, positive=True), dtype=dtype(cfg, prefix))

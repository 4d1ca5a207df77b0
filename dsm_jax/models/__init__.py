"""Flax modules. Every network maps (x [B, ...], sigma [B] or None) to a score, a denoised x or an energy."""
from __future__ import annotations

from dsm_jax.models.mlp import EnergyMLP, ScoreMLP  # noqa: F401
from dsm_jax.validation import ConfigError

SCORE_MODELS = ("score_mlp", "refinenet", "cond_unet")
ENERGY_MODELS = ("energy_mlp", "energy_resnet")
GENERATOR_MODELS = ("generator_mlp", "denoiser_mlp", "conv_generator")  # DDE / denoiser-guided VI (issue 5)


def _check_hidden(model_config) -> None:
  h = model_config.hidden
  ok = isinstance(h, (tuple, list)) and len(h) > 0 and all(
      isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in h)
  if not ok:
    raise ConfigError("model.hidden", f"must be a non-empty tuple of positive layer widths, e.g. (128, 128); got {h!r}")


def get_model(model_config, data_shape, conditional: bool = True):
  """The flax module named by config.model.name, for examples of shape data_shape."""
  name = model_config.name
  if name in ("score_mlp", "energy_mlp"):
    _check_hidden(model_config)
    from dsm_jax.models.mlp import ACTIVATIONS
    if model_config.act not in ACTIVATIONS:
      raise ConfigError("model.act", f"unknown activation {model_config.act!r}; choose from {sorted(ACTIVATIONS)}")
  if name == "score_mlp":
    if len(data_shape) != 1:
      raise ConfigError("model.name", f"score_mlp takes flat vectors, the data has shape {data_shape}")
    return ScoreMLP(hidden=tuple(model_config.hidden), act=model_config.act, conditional=conditional,
                    scale_by_sigma=model_config.get("scale_by_sigma", True))
  if name == "energy_mlp":
    if len(data_shape) != 1:
      raise ConfigError("model.name", f"energy_mlp takes flat vectors, the data has shape {data_shape}")
    return EnergyMLP(hidden=tuple(model_config.hidden), act=model_config.act,
                     quadratic=model_config.get("quadratic", True))
  if name == "refinenet":
    import jax.numpy as jnp  # noqa: PLC0415
    from dsm_jax import sigmas as sigmas_lib  # noqa: PLC0415
    from dsm_jax.models.refinenet import SUPPORTED_SIZES, CondRefineNet  # noqa: PLC0415
    if len(data_shape) != 3:
      raise ConfigError("model.name", f"refinenet takes images [H, W, C], the data has shape {tuple(data_shape)}")
    h, w, c = data_shape
    if h != w or h not in SUPPORTED_SIZES:
      raise ConfigError("data.image_size", f"refinenet supports square images of size {SUPPORTED_SIZES}, got {h}x{w}")
    if not conditional:
      raise ConfigError("model.name", "refinenet is noise-conditional (NCSN); use it with a sigma ladder")
    dtype = model_config.get("dtype", "float32")
    if dtype not in ("float32", "bfloat16"):
      raise ConfigError("model.dtype", f"must be 'float32' or 'bfloat16', got {dtype!r}")
    ladder = sigmas_lib.geometric(model_config.sigma_max, model_config.sigma_min, model_config.num_scales)
    return CondRefineNet(sigmas=tuple(float(s) for s in ladder), ngf=model_config.ngf, num_channels=c,
                         image_size=h, scale_by_sigma=model_config.get("scale_by_sigma", False),
                         dtype=jnp.dtype(dtype))
  if name == "energy_resnet":
    return _energy_resnet(model_config, data_shape)
  if name == "unet_dae":  # Denoising-EBM (issue 6)
    return _unet_dae(model_config, data_shape)
  if name == "cond_unet":
    import jax.numpy as jnp  # noqa: PLC0415
    from dsm_jax import sigmas as sigmas_lib  # noqa: PLC0415
    from dsm_jax.models.cond_unet import CondUNet  # noqa: PLC0415
    if len(data_shape) != 3:
      raise ConfigError("model.name", f"cond_unet takes images [H, W, C], the data has shape {tuple(data_shape)}")
    h, w, c = data_shape
    if h % 4 or w % 4:
      raise ConfigError("data.image_size", f"cond_unet needs H and W divisible by 4, got {h}x{w}")
    ch = model_config.get("channels", (32, 64, 64))
    if not (isinstance(ch, (tuple, list)) and len(ch) == 3 and all(isinstance(v, int) and v > 0 for v in ch)):
      raise ConfigError("model.channels", f"must be three positive widths (c1, c2, c3), got {ch!r}")
    if not conditional:
      raise ConfigError("model.name", "cond_unet is noise-conditional; use it with a sigma ladder")
    dtype = model_config.get("dtype", "float32")
    if dtype not in ("float32", "bfloat16"):
      raise ConfigError("model.dtype", f"must be 'float32' or 'bfloat16', got {dtype!r}")
    skip = model_config.get("gaussian_skip", False)
    if not isinstance(skip, bool):
      raise ConfigError("model.gaussian_skip", f"must be True or False, got {skip!r}")
    skip_mean = model_config.get("skip_mean", 0.5)
    if not (isinstance(skip_mean, (int, float)) and not isinstance(skip_mean, bool)):
      raise ConfigError("model.skip_mean", f"must be a number (the data's mean image brightness), got {skip_mean!r}")
    skip_std = model_config.get("skip_std", 0.05)
    if not (isinstance(skip_std, (int, float)) and skip_std > 0):
      raise ConfigError("model.skip_std", f"must be a positive number, got {skip_std!r}")
    ladder = sigmas_lib.geometric(model_config.sigma_max, model_config.sigma_min, model_config.num_scales)
    return CondUNet(sigmas=tuple(float(s) for s in ladder), channels=tuple(ch), num_channels=c,
                    scale_by_sigma=model_config.get("scale_by_sigma", True), gaussian_skip=skip,
                    skip_mean=float(skip_mean), skip_std=float(skip_std),
                    dtype=jnp.dtype(dtype))
  if name in GENERATOR_MODELS + ("conv_energy",):
    return _generator_or_conv(model_config, data_shape)
  raise ConfigError("model.name", f"unknown model {name!r}; choose from {SCORE_MODELS + ENERGY_MODELS + GENERATOR_MODELS + ('conv_energy',)}")


def _dtype(model_config):
  import jax.numpy as jnp  # noqa: PLC0415
  dtype = model_config.get("dtype", "float32")
  if dtype not in ("float32", "bfloat16"):
    raise ConfigError("model.dtype", f"must be 'float32' or 'bfloat16', got {dtype!r}")
  return jnp.dtype(dtype)


def _energy_resnet(model_config, data_shape):
  """MDSM's ResNet energy (models/energy_resnet.py); widths and depth from config.model.nf / stage_blocks."""
  from dsm_jax.models.energy_resnet import CONV_IMPLS, EnergyResNet, min_side  # noqa: PLC0415
  if len(data_shape) != 3:
    raise ConfigError("model.name", f"energy_resnet takes images [H, W, C], the data has shape {tuple(data_shape)}")
  nf = model_config.get("nf", None)
  if isinstance(nf, bool) or not isinstance(nf, int) or nf <= 0:
    raise ConfigError("model.nf", f"must be a positive integer (first-stage width), got {nf!r}")
  blocks = model_config.get("stage_blocks", None)
  ok = isinstance(blocks, (tuple, list)) and len(blocks) > 0 and all(
      isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in blocks)
  if not ok:
    raise ConfigError("model.stage_blocks", f"must be a non-empty tuple of positive block counts per stage, "
                                            f"e.g. (2, 2, 2) for ResNet-12; got {blocks!r}")
  h, w, _ = data_shape
  if min(h, w) < min_side(blocks):
    raise ConfigError("model.stage_blocks", f"{len(blocks)} down-sampling stages need images of side >= "
                                            f"{min_side(blocks)}, the data is {h}x{w}; use fewer stages")
  impl = model_config.get("conv_impl", "xla")
  if impl not in CONV_IMPLS:
    raise ConfigError("model.conv_impl", f"must be one of {list(CONV_IMPLS)} ('patches' is the fast form on CPU), "
                                         f"got {impl!r}")
  return EnergyResNet(nf=nf, stage_blocks=tuple(blocks), dtype=_dtype(model_config), conv_impl=impl)


def _generator_or_conv(model_config, data_shape):
  """Issue 5's networks: generator_mlp (G(z) or G(z, c) for flat data), denoiser_mlp (F(x) = x + sigma^2 s(x),
  model_config.sigma), conv_generator and conv_energy (images). Widths are checked by the method first."""
  from dsm_jax.models.conv import ConvEnergy, ConvGenerator  # noqa: PLC0415
  from dsm_jax.models.mlp import ACTIVATIONS, DenoiserMLP, GeneratorMLP  # noqa: PLC0415
  name = model_config.name
  if model_config.get("act", "relu") not in ACTIVATIONS:
    raise ConfigError("model.act", f"unknown activation {model_config.act!r}; choose from {sorted(ACTIVATIONS)}")
  if name in ("generator_mlp", "denoiser_mlp"):
    _check_hidden(model_config)
    if len(data_shape) != 1:
      raise ConfigError("model.name", f"{name} takes flat vectors, the data has shape {tuple(data_shape)}")
    if name == "generator_mlp":
      return GeneratorMLP(out_dim=int(data_shape[0]), hidden=tuple(model_config.hidden), act=model_config.act,
                          linear_skip=model_config.get("linear_skip", True))
    return DenoiserMLP(sigma=float(model_config.sigma), hidden=tuple(model_config.hidden), act=model_config.act)
  if len(data_shape) != 3 or data_shape[0] % 4 or data_shape[1] % 4:
    raise ConfigError("model.name", f"{name} takes images [H, W, C] with H, W divisible by 4, the data has shape "
                                    f"{tuple(data_shape)}")
  if name == "conv_energy":
    return ConvEnergy(features=tuple(model_config.features), hidden=int(model_config.hidden), act=model_config.act,
                      quadratic=model_config.get("quadratic", True))
  return ConvGenerator(image_shape=tuple(int(d) for d in data_shape), features=tuple(model_config.features),
                       act=model_config.act, out_act=model_config.get("out_act", "sigmoid"))


def _unet_dae(model_config, data_shape):
  """Denoising-EBM's U-Net DAE r_phi = g_beta o f_alpha with the semantic decoder h_gamma (issue 6)."""
  from dsm_jax.models.unet_dae import UNetDAE, max_levels  # noqa: PLC0415
  if len(data_shape) != 3:
    raise ConfigError("model.name", f"unet_dae takes images [H, W, C], the data has shape {tuple(data_shape)}")
  for key in ("nf", "num_res_blocks", "latent_dim"):
    v = model_config.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
      raise ConfigError(f"model.{key}", f"must be a positive integer, got {v!r}")
  cm = model_config.get("ch_mult")
  if not (isinstance(cm, (tuple, list)) and len(cm) >= 2
          and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in cm)):
    raise ConfigError("model.ch_mult", f"must be a tuple of >= 2 positive width multipliers, e.g. (1, 2, 2), got {cm!r}")
  if len(cm) > max_levels(data_shape):
    raise ConfigError("model.ch_mult", f"{len(cm)} levels need {len(cm) - 1} exact halvings; a "
                                       f"{data_shape[0]}x{data_shape[1]} image allows at most {max_levels(data_shape)} levels")
  if not isinstance(model_config.get("latent_norm", True), bool):
    raise ConfigError("model.latent_norm", f"must be True or False, got {model_config.latent_norm!r}")
  return UNetDAE(image_shape=tuple(int(d) for d in data_shape), nf=model_config.nf, ch_mult=tuple(cm),
                 num_res_blocks=model_config.num_res_blocks, latent_dim=model_config.latent_dim,
                 latent_norm=model_config.get("latent_norm", True),
                 sigma_data=float(model_config.get("sigma_data", 0.5)))

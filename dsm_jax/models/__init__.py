"""Flax modules. Every network maps (x [B, ...], sigma [B] or None) to a score, a denoised x or an energy."""
from __future__ import annotations

from dsm_jax.models.mlp import EnergyMLP, ScoreMLP  # noqa: F401
from dsm_jax.validation import ConfigError

SCORE_MODELS = ("score_mlp", "refinenet")
ENERGY_MODELS = ("energy_mlp",)


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
  raise ConfigError("model.name", f"unknown model {name!r}; choose from {SCORE_MODELS + ENERGY_MODELS}")

"""Flax modules. Every network maps (x [B, ...], sigma [B] or None) to a score, a denoised x or an energy."""
from __future__ import annotations

from dsm_jax.models.mlp import EnergyMLP, ScoreMLP  # noqa: F401
from dsm_jax.validation import ConfigError

SCORE_MODELS = ("score_mlp",)
ENERGY_MODELS = ("energy_mlp",)


def get_model(model_config, data_shape, conditional: bool = True):
  """The flax module named by config.model.name, for examples of shape data_shape."""
  name = model_config.name
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
  raise ConfigError("model.name", f"unknown model {name!r}; choose from {SCORE_MODELS + ENERGY_MODELS}")

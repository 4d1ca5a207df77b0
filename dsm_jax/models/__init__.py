"""Flax modules. Every network maps (x [B, ...], sigma [B] or None) to a score, a denoised x or an energy (or, for
generators, z to a sample). Each registers itself (models/registry.py) with the config keys it reads; the
methods build them with `build(section, shape, prefix, **context)`. Every convolution is `layers.Conv`."""
from __future__ import annotations

from dsm_jax.models import cond_unet, conv, dense_net, energy_resnet, mlp, refinenet, unet_dae  # noqa: F401  (register)
from dsm_jax.models.mlp import EnergyMLP, ScoreMLP  # noqa: F401
from dsm_jax.models.registry import build, defaults, names, register_model, section, set_network  # noqa: F401

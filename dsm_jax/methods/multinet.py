"""Shared pieces of a train step that updates several networks (DDE, denoiser-guided VI).

Such a method keeps params = {network name: params, ...} and opt_state = {network name: optax state}
(`init_opt`: one optimizer state per trained network) and writes its own `train_step(optimizer)`.
`finish_step` then applies the trainer's rules (dsm_jax.train.default_train_step) to the whole state:
a step whose losses or gradients are not all finite leaves params, EMA and optimizer states unchanged
and is counted in n_skipped (metrics['nonfinite'] = 1, which makes the trainer stop under
nan_policy='stop'); the EMA follows params at config.training.ema_rate.
"""
from __future__ import annotations

from typing import Iterable

import jax
import jax.numpy as jnp
import optax

from dsm_jax import train


def tree_all_finite(tree) -> jax.Array:
  leaves = jax.tree_util.tree_leaves(tree)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(l)) for l in leaves])) if leaves else jnp.asarray(True)


def init_opt(trained: Iterable[str]):
  """init_opt(optimizer, params) -> {name: optimizer.init(params[name])} for the trained networks."""
  names = tuple(trained)

  def fn(optimizer, params):
    return {k: optimizer.init(params[k]) for k in names}
  return fn


def optimizer_step(optimizer, grads, opt_state, params, lr_scale: float = 1.0):
  """One optax step on one network. lr_scale multiplies the update: for adam, adamw and sgd (with or
  without clipping and schedules) the update is linear in the learning rate, so this is the same
  optimizer at learning rate lr_scale * config.training.lr with its own moment estimates."""
  updates, new_opt = optimizer.update(grads, opt_state, params)
  if lr_scale != 1.0:
    updates = jax.tree_util.tree_map(lambda u: lr_scale * u, updates)
  return optax.apply_updates(params, updates), new_opt


def keep_if(cond, new, old):
  """new where cond (a scalar bool) else old, leaf by leaf."""
  return jax.tree_util.tree_map(lambda a, b: jnp.where(cond, a, b), new, old)


def finish_step(state: dict, new_params: dict, new_opt: dict, finite, ema_rate: float, metrics: dict,
                no_ema: Iterable[str] = ()) -> tuple[dict, dict]:
  """The next trainer state from a multi-network update, with the NaN guard and the EMA.
  no_ema: params entries copied into ema_params as they are (e.g. non-trained buffers)."""
  ema = {}
  for k, v in new_params.items():
    if k in no_ema:
      ema[k] = v
    else:
      ema[k] = train.ema_update(state["ema_params"][k], v, ema_rate, state["step"] + 1)
  params = keep_if(finite, new_params, state["params"])
  opt = keep_if(finite, new_opt, state["opt_state"])
  ema = keep_if(finite, ema, state["ema_params"])
  new_state = {
      "step": state["step"] + 1,
      "params": params,
      "ema_params": ema,
      "opt_state": opt,
      "key": state["key"],
      "n_skipped": state["n_skipped"] + (~finite).astype(jnp.int32),
  }
  metrics = dict(metrics)
  metrics["nonfinite"] = (~finite).astype(jnp.float32)
  return new_state, metrics

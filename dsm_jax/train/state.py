"""One network's training state, and the one rule that updates it.

`NetState` holds a network's parameters, their EMA, its optimizer state(s) and its own update count. Its
`apply_gradients` is the only place in dsm_jax where parameters change: the optimizer update at this
network's learning rate (its schedule counts this network's own updates), the guard that refuses a
non-finite gradient (the state is left as it was and `n_skipped` counts the refusal), and the debiased EMA.

A network trained by several objectives with separate optimizer moments (Denoising-EBM's DAE loss and its
contrastive term) has one optimizer state per objective, `slots`; the update count and the learning-rate
schedule are shared.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import struct

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine")
OPTIM_KEYS = ("optimizer", "lr", "beta1", "beta2", "adam_eps", "weight_decay", "schedule", "lr_final_frac",
              "warmup", "grad_clip")
# A network's section training.nets.<name> declares every optimizer key; these values mean "training.<key>".
INHERIT = {"optimizer": "", "schedule": "", "lr": -1.0, "beta1": -1.0, "beta2": -1.0, "adam_eps": -1.0,
           "weight_decay": -1.0, "lr_final_frac": -1.0, "grad_clip": -1.0, "warmup": -1}


def net_optimizer(**own) -> dict:
  """A training.nets.<name> section: `own` settings for this network, every other key inherits training.<key>."""
  unknown = set(own) - set(OPTIM_KEYS)
  if unknown:
    raise ValueError(f"unknown optimizer keys {sorted(unknown)}; choose from {list(OPTIM_KEYS)}")
  return {**INHERIT, **own}


def tree_all_finite(tree) -> jax.Array:
  leaves = jax.tree_util.tree_leaves(tree)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(l)) for l in leaves])) if leaves else jnp.asarray(True)


def tree_where(cond, new, old):
  """new where the scalar bool cond holds, else old, leaf by leaf."""
  return jax.tree_util.tree_map(lambda a, b: jnp.where(cond, a, b), new, old)


def ema_update(ema, params, rate: float, count):
  """The EMA of the parameters after `count` (>= 1) updates, debiased: with decay
  d_t = rate (1 - rate^(t-1)) / (1 - rate^t) it is exactly (1 - rate) sum_s rate^(t-s) p_s / (1 - rate^t),
  the normalised average of the parameters p_1..p_t the optimiser produced; the initial (random) parameters
  get no weight. A plain ema <- rate ema + (1 - rate) p started at the initialisation keeps rate^t of it (25%
  after 1,400 updates at 0.999); for long runs the two agree (d_t -> rate)."""
  t = jnp.asarray(count, jnp.float32)
  r = jnp.asarray(rate, jnp.float32)
  decay = jnp.where(t <= 1, 0.0, r * (1.0 - r ** (t - 1.0)) / jnp.maximum(1.0 - r ** t, 1e-30))
  return jax.tree_util.tree_map(lambda e, p: (decay * e + (1.0 - decay) * p).astype(e.dtype), ema, params)


DEFAULTS = {"optimizer": "adam", "lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "adam_eps": 1e-8, "weight_decay": 0.0,
            "schedule": "constant", "lr_final_frac": 0.0, "warmup": 0, "grad_clip": 0.0}


def learning_rate(cfg, horizon: int) -> Callable:
  """count -> learning rate for the optimizer settings cfg (a mapping of OPTIM_KEYS) over `horizon` updates:
  constant, linear warm-up, or warm-up then cosine decay to lr * lr_final_frac at `horizon`."""
  lr, warmup = float(cfg["lr"]), int(cfg["warmup"])
  if cfg["schedule"] == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0 if warmup else lr, lr, warmup, max(horizon, warmup + 1),
                                              end_value=lr * float(cfg["lr_final_frac"]))
  if warmup:
    return optax.linear_schedule(0.0, lr, warmup)
  return lambda count: jnp.asarray(lr, jnp.float32)


def direction(cfg) -> optax.GradientTransformation:
  """The optimizer without its learning rate: clipping, then Adam's (or AdamW's) scaling; SGD is the gradient."""
  parts = []
  if float(cfg["grad_clip"]) > 0:
    parts.append(optax.clip_by_global_norm(float(cfg["grad_clip"])))
  if cfg["optimizer"] in ("adam", "adamw"):
    parts.append(optax.scale_by_adam(b1=float(cfg["beta1"]), b2=float(cfg["beta2"]), eps=float(cfg["adam_eps"])))
  if cfg["optimizer"] == "adamw":
    parts.append(optax.add_decayed_weights(float(cfg["weight_decay"])))
  return optax.chain(*parts) if parts else optax.identity()


class NetState(struct.PyTreeNode):
  params: Any
  ema: Any
  opt_state: Any            # optax state, or {slot: optax state}
  count: jax.Array          # this network's updates so far: its schedule's clock and the EMA's t
  n_skipped: jax.Array      # updates refused for a non-finite gradient
  tx: optax.GradientTransformation = struct.field(pytree_node=False)
  lr: Callable = struct.field(pytree_node=False)
  ema_rate: float = struct.field(pytree_node=False, default=0.0)

  @classmethod
  def create(cls, params, tx: optax.GradientTransformation, lr: Callable, ema_rate: float = 0.0,
             slots: Optional[Sequence[str]] = None) -> "NetState":
    opt = {s: tx.init(params) for s in slots} if slots else tx.init(params)
    return cls(params=params, ema=params, opt_state=opt, count=jnp.asarray(0, jnp.int32),
               n_skipped=jnp.asarray(0, jnp.int32), tx=tx, lr=lr, ema_rate=float(ema_rate))

  @classmethod
  def from_settings(cls, params, settings: Optional[dict] = None, horizon: int = 1, ema_rate: float = 0.0,
                    slots: Optional[Sequence[str]] = None) -> "NetState":
    """A state for params with the optimizer `settings` (OPTIM_KEYS; missing ones from DEFAULTS) whose schedule
    runs over `horizon` updates."""
    cfg = {**DEFAULTS, **(settings or {})}
    return cls.create(params, direction(cfg), learning_rate(cfg, horizon), ema_rate, slots)

  def apply_gradients(self, grads, slot: Optional[str] = None) -> "NetState":
    """One optimizer step on grads (with the slot's moments), or no change at all if grads are not finite."""
    opt = self.opt_state if slot is None else self.opt_state[slot]
    updates, new_opt = self.tx.update(grads, opt, self.params)
    lr = self.lr(self.count)
    updates = jax.tree_util.tree_map(lambda u: (-lr).astype(u.dtype) * u, updates)
    params = optax.apply_updates(self.params, updates)
    count = self.count + 1
    new = self.replace(params=params, ema=ema_update(self.ema, params, self.ema_rate, count),
                       opt_state=new_opt if slot is None else {**self.opt_state, slot: new_opt}, count=count)
    return tree_where(tree_all_finite(grads), new, self.replace(n_skipped=self.n_skipped + 1))

  @property
  def sampling_params(self):
    """What samplers and evaluation use: the EMA when one is kept, else the parameters."""
    return self.ema if self.ema_rate > 0 else self.params

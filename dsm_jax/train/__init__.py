"""Training: one state per network (`state.NetState`: parameters, EMA, optimizer state, its own update count,
and `apply_gradients`, the one rule that changes parameters) and the one loop (`loop.train`) that advances
{name: NetState} through a method's step function."""
from dsm_jax.train.loop import (PREEMPTED, NonFiniteLossError, Preempted, Program, TrainResult, guarded_step,  # noqa: F401
                                init_state, load_latest, model_meta, optimizer_config, reduce_metrics,
                                sampling_params, train, validate)
from dsm_jax.train.state import NetState, ema_update, net_optimizer  # noqa: F401

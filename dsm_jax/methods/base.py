"""What a method gives the trainer and the runner, and the method registry.

A method file (`methods/<paper>.py`) registers a build function and its config defaults:

    @register("mdsm", defaults=defaults)
    def build(config, dataset) -> Method: ...

`defaults()` returns the method's own keys, per section ({'model': {...}, 'training': {...}, ...}); with
configs/default.py's shared keys they are every key the method reads, so `DIR/config.json` is the whole config
as run.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import optax


@dataclasses.dataclass
class Method:
  """One paper's algorithm, as the trainer and the runner use it.

  init(key) -> {name: params}              the networks' initial parameters (and buffers)
  step(nets, key, batch, t) -> (nets, metrics)  training step t (0-based): nets maps each name to its NetState
                                           (buffers as arrays); update a network with
                                           nets[name].apply_gradients(grads). metrics must have 'loss'.
  networks: {name: updates per step}       the trained networks (every other init entry is a buffer) and how many
                                           optimizer updates each makes per trainer step (its schedule's horizon)
  slots: {name: (slot, ...)}               networks with separate optimizer moments per objective
  sample(params, key) -> {name: array}      'x' is the main sample set ([N, ...], data space)
  evaluate(params, key, samples) -> {metric: number}
  plot(samples, params, sample_dir) -> [paths]   pictures beyond the default
  score(params) -> score_fn(x, sigma)       the model's score as its sampler uses it
  loss(params, key, batch) -> (loss, aux)    a one-network method's objective (its step is loss_step of it)
  draw(params, key, n) -> {set: array}       the compiled sampler of one batch of n chains (sampling.compile_draw)
  functions(params) -> record               the trained networks as named plain callables, for looking at a model
                                           (mdsm: {'energy': x -> E(x) [B]}; debm: unet_dae.DAEFunctions)
  main_draw(params, key) -> (draw, draw_params)  the compiled sampler of the main set 'x' and its first argument,
                                           where that is not (draw, params) (e.g. a base fitted first); the
                                           FID protocol draws its large set with it
  inpaint(params, key, known, mask) -> x     completes the entries where mask is 0 (samplers.inpaint_langevin);
                                           known, mask, x [B, ...] in model space (--mode=inpaint)
  log_likelihood(params, key) -> {metric: number}  test log-likelihoods by AIS (dsm_jax/likelihood.py; --mode=loglik)
  params: {name: EMA (or raw) parameters}, as the trainer hands them over.
  """
  name: str
  init: Callable[[Any], dict]
  step: Callable
  networks: dict
  sample: Callable
  evaluate: Callable
  plot: Optional[Callable] = None
  score: Optional[Callable] = None
  loss: Optional[Callable] = None
  draw: Optional[Callable] = None
  functions: Optional[Callable] = None
  main_draw: Optional[Callable] = None
  inpaint: Optional[Callable] = None
  log_likelihood: Optional[Callable] = None
  slots: dict = dataclasses.field(default_factory=dict)


def loss_step(name: str, loss_fn: Callable) -> Callable:
  """The step of a one-network method: loss_fn(params, key, batch) -> (loss, aux), one update of `name`."""

  def step(nets, key, batch, t):
    del t
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(nets[name].params, key, batch)
    return {**nets, name: nets[name].apply_gradients(grads)}, {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}

  return step


# ------------------------------------------------------------------------------------ the registry
@dataclasses.dataclass(frozen=True)
class Registration:
  build: Callable
  defaults: Callable  # defaults(method name) -> {section: {key: value}}


_METHODS: dict = {}


def register(*names: str, defaults: Callable):
  """Decorator: build(config, dataset) -> Method is the method of each of `names`; defaults() its own keys."""
  def deco(build):
    for n in names:
      if n in _METHODS:
        raise ValueError(f"method {n!r} registered twice")
      _METHODS[n] = Registration(build, defaults)
    return build
  return deco


def registered() -> dict:
  return dict(_METHODS)

"""Every paper-value config lowers for the accelerators its users run, checked on the CPU with jax.export for
'cuda' and 'tpu' at full width on stand-in data of the right shape: the training step, the trainer's scan chunk
and a few steps of the sampler. A lowered program must not contain a host callback or a CPU-only custom call,
and must not carry the parameters as constants (its serialized size stays far below the parameters' bytes)."""
import importlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dsm_jax import methods, train
from dsm_jax.data import images
from dsm_jax.models import layers

PAPER = ["ncsn_mnist", "ncsn_cifar10", "ncsn_celeba", "mdsm_fashion_mnist", "mdsm_cifar10", "mdsm_celeba",
         "dde_mnist", "dde_fashion_mnist", "debm_cifar10", "debm_svhn", "debm_celeba64"]
PLATFORMS = ("cuda", "tpu")
FORBIDDEN = re.compile(r"callback|cpu|host", re.IGNORECASE)


def _few_sampler_steps(config) -> None:
  """The sampler's structure with few steps (lowering does not depend on the step count)."""
  s = config.sampling
  if config.method == "ncsn":
    s.n_steps_each = 2
  elif config.method == "mdsm":
    s.n_flat, s.n_decay, s.n_cool = 2, 2, 2
  elif config.method == "debm":
    s.latent_steps, s.pixel_steps = 2, 2


def _check(exported, param_bytes: int, what: str) -> None:
  text = exported.mlir_module()
  targets = set(re.findall(r'custom_call_target\s*=\s*"([^"]+)"', text)) | set(
      re.findall(r"stablehlo\.custom_call @([\w.]+)", text))
  bad = sorted(t for t in targets if FORBIDDEN.search(t))
  assert not bad, f"{what}: host or CPU custom calls {bad}"
  size = len(exported.mlir_module_serialized)
  assert size < max(4e6, 0.25 * param_bytes), f"{what}: {size:,} bytes of program for {param_bytes:,} bytes of parameters"
  assert tuple(exported.platforms) == PLATFORMS


# debm_cifar10 and debm_svhn build debm_celeba64's program at a smaller size: slow only.
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in ("debm_cifar10", "debm_svhn") else n
                                  for n in PAPER])
def test_paper_config_lowers_for_gpu_and_tpu(name):
  config = importlib.import_module(f"configs.{name}").get_config()
  _few_sampler_steps(config)
  config.runtime.chunk_mode = "scan"  # the accelerators' dispatch: the trainer's lax.scan chunk
  dataset = images.StandIn(images.example_shape(config.data), config.data.scale)
  layers.set_default_conv_impl("xla")  # the platform's form on GPU and TPU
  method = methods.build(config, dataset)
  program = train.Program(config, method, dataset)
  state = jax.eval_shape(program.init, jax.random.PRNGKey(0))
  params = train.sampling_params(state["nets"])
  param_bytes = sum(l.size * l.dtype.itemsize for l in jax.tree_util.tree_leaves(params))
  assert param_bytes > 1e5, "a full-width network"
  b = config.training.batch_size
  batch = jax.ShapeDtypeStruct((b,) + dataset.shape, jnp.float32)
  chunk = jax.ShapeDtypeStruct((2, b) + dataset.shape, jnp.float32)
  export = lambda f, *args: jax.export.export(f, platforms=PLATFORMS)(*args)  # noqa: E731
  _check(export(jax.jit(train.guarded_step(method)), state, batch), param_bytes, f"{name} training step")
  _check(export(program.chunk_jit, state, chunk), param_bytes, f"{name} trainer chunk")
  n = 4
  draw = jax.jit(lambda p, k: method.draw(p, k, n))
  _check(export(draw, params, jax.ShapeDtypeStruct((2,), jnp.uint32)), param_bytes, f"{name} sampler")


def test_a_program_that_bakes_in_its_parameters_is_caught():
  """The size check of _check fails on a sampler that closes over its parameters."""
  w = jnp.asarray(np.random.default_rng(0).normal(size=(2048, 2048)), jnp.float32)  # 16 MB
  exported = jax.export.export(jax.jit(lambda x: x @ w), platforms=PLATFORMS)(
      jax.ShapeDtypeStruct((4, 2048), jnp.float32))
  with pytest.raises(AssertionError, match="bytes of program"):
    _check(exported, w.size * 4, "baked")
  passed = jax.export.export(jax.jit(lambda w, x: x @ w), platforms=PLATFORMS)(
      jax.ShapeDtypeStruct(w.shape, jnp.float32), jax.ShapeDtypeStruct((4, 2048), jnp.float32))
  _check(passed, w.size * 4, "passed")  # the same program with the weights as an argument

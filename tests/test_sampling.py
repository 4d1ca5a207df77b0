"""dsm_jax/sampling.py: samples in batches with parameters passed as arguments. For every method, a second
sample() call with other parameters compiles nothing (no parameters baked into a compiled program), and the
batched draw equals its batches drawn one by one."""
import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dsm_jax import sampling
from tests.test_configs import tiny_overrides


@contextlib.contextmanager
def count_compiles():
  """Counts XLA backend compilations while the block runs."""
  seen = []

  def listener(event, duration, **kwargs):
    if "backend_compile" in event:
      seen.append(event)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield seen
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def _method(name, tmp_path):
  import importlib  # noqa: PLC0415
  from dsm_jax import data as data_lib, methods  # noqa: PLC0415
  config = importlib.import_module(f"configs.{name}").get_config()
  for k, v in tiny_overrides(name, str(tmp_path / "fc")).items():
    node = config
    *path, leaf = k.split(".")
    for p in path:
      node = node[p]
    node[leaf] = v
  if name == "debm_mnist5k":
    config.data.dataset = "digits"
  dataset = data_lib.get_dataset(config.data, config.seed)
  return methods.build(config, dataset)


@pytest.mark.parametrize("name", ["ncsn_toy", "dsm_toy", "mdsm_toy", "dde_toy", "dvi_logreg", "dvi_amortised",
                                  "debm_mnist5k"])
def test_a_second_sample_call_with_new_parameters_compiles_nothing(name, tmp_path):
  method = _method(name, tmp_path)
  params = method.init(jax.random.PRNGKey(0))
  method.sample(params, jax.random.PRNGKey(1))
  other = jax.tree_util.tree_map(lambda a: a * 1.01 if jnp.issubdtype(a.dtype, jnp.floating) else a, params)
  with count_compiles() as compiles:
    out = method.sample(other, jax.random.PRNGKey(2))
  assert compiles == [], f"{name}: {len(compiles)} compilations on the second call"
  assert all(np.all(np.isfinite(np.asarray(v))) for v in out.values())


def test_batches_are_the_draws_of_their_keys():
  def draw(p, key, n):
    return {"x": p["w"] * jax.random.normal(key, (n, 2)), "trajectory": jnp.ones((3, n))}
  draw = sampling.compile_draw(draw)
  params, key = {"w": jnp.asarray(2.0)}, jax.random.PRNGKey(0)
  out = sampling.sample_in_batches(draw, params, key, 10, 4, first_only=("trajectory",))
  want = np.concatenate([np.asarray(draw(params, jax.random.fold_in(key, i), n)["x"])
                         for i, n in enumerate((4, 4, 2))])
  np.testing.assert_array_equal(out["x"], want)
  assert out["trajectory"].shape == (3, 4)  # from the first batch only
  one = sampling.sample_in_batches(draw, params, key, 10)  # batch_size 0: one batch of 10
  assert one["x"].shape == (10, 2) and one["trajectory"].shape == (3, 10)

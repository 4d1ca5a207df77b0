"""benchmarks/bench_vs_pytorch.py's own arithmetic: the FLOPs it reads from XLA's optimized HLO for the per-op
profile agree with dsm_jax.flops on the traced program, and its variant names parse to the settings they name."""
import os
import sys

import jax
import jax.numpy as jnp
import pytest

from dsm_jax import flops

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import bench_vs_pytorch as bench  # noqa: E402


def test_hlo_flops_match_the_traced_count():
  """The training gradient of a small convolution stack (3x3, dilated 3x3 and 1x1 kernels, a matrix product): the
  FLOPs summed over the ops XLA executes equal the matmul and convolution FLOPs of the traced program."""
  dn = ("NHWC", "HWIO", "NHWC")

  def loss(ws, x):
    h = jax.nn.elu(jax.lax.conv_general_dilated(x, ws[0], (1, 1), "SAME", dimension_numbers=dn))
    h = jax.nn.elu(jax.lax.conv_general_dilated(h, ws[1], (1, 1), "SAME", rhs_dilation=(2, 2), dimension_numbers=dn))
    h = jax.lax.conv_general_dilated(h, ws[2], (1, 1), "SAME", dimension_numbers=dn)
    return jnp.sum((h.reshape(h.shape[0], -1) @ ws[3]) ** 2)

  keys = jax.random.split(jax.random.PRNGKey(0), 5)
  ws = [jax.random.normal(k, s) for k, s in zip(keys, [(3, 3, 2, 4), (3, 3, 4, 8), (1, 1, 8, 6), (6 * 64, 5)])]
  x = jax.random.normal(keys[4], (8, 8, 8, 2))
  grad = jax.grad(loss)
  ops = bench.hlo_ops(jax.jit(grad).lower(ws, x).compile().as_text())
  assert sum(f for _, f, _ in ops.values()) == flops.count(grad, ws, x)
  assert sum("convolution" in kind for kind, _, _ in ops.values()) >= 5  # forward 3, and their gradients


def test_variants_parse_to_their_settings():
  assert bench.parse_variant("auto") == {"conv_impl": "auto", "cpu_devices": 1, "flags": []}
  assert bench.parse_variant("xla+dev2") == {"conv_impl": "xla", "cpu_devices": 2, "flags": []}
  v = bench.parse_variant("patches+noynn+flags:--xla_cpu_enable_fast_math=true")
  assert v == {"conv_impl": "patches", "cpu_devices": 1,
               "flags": [bench.NO_YNN, "--xla_cpu_enable_fast_math=true"]}
  with pytest.raises(SystemExit):
    bench.parse_variant("xla+dev")

"""dsm_jax/flops.py: matmul and convolution FLOPs on known shapes, loops counted by their trip count, and XLA's
own cost analysis on a loop-free network's training step."""
import jax
import jax.numpy as jnp
import pytest

from dsm_jax import flops, losses
from dsm_jax.models.energy_resnet import EnergyResNet


def test_known_shapes_and_loops():
  x, w = jnp.ones((4, 8)), jnp.ones((8, 16))
  assert flops.count(lambda a, b: a @ b, x, w) == 2 * 4 * 16 * 8
  img, k = jnp.ones((2, 10, 10, 3)), jnp.ones((3, 3, 3, 5))
  conv = lambda a, b: jax.lax.conv_general_dilated(a, b, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  assert flops.count(conv, img, k) == 2 * (2 * 10 * 10 * 5) * 3 * 9
  scanned = lambda a, b: jax.lax.scan(lambda c, _: (c @ b[:, :8], None), a, None, length=7)[0]
  assert flops.count(scanned, x, w) == 7 * 2 * 4 * 8 * 8
  looped = lambda a, b: jax.lax.fori_loop(0, 3, lambda i, c: c @ b[:, :8], a)
  assert flops.count(looped, x, w) == 3 * 2 * 4 * 8 * 8
  assert flops.count(jax.grad(lambda b: jnp.sum(x @ b)), w) == 2 * (2 * 4 * 16 * 8)  # forward + weight gradient


def test_agrees_with_xla_on_a_loop_free_training_step():
  """MDSM's double backprop through a ResNet energy: the matmul/convolution FLOPs of the traced program are
  within 25% of XLA's count of the optimised one (XLA also counts element-wise work, and merges work the
  trace repeats, e.g. a forward pass both gradients use)."""
  net = EnergyResNet(nf=8, stage_blocks=(1, 1), conv_impl="xla")  # the VJP form adds transposes by design
  x = jnp.ones((16, 16, 16, 1))
  p = net.init(jax.random.PRNGKey(0), x[:1])
  loss = jax.grad(lambda p, k, x: losses.mdsm(lambda v, s: net.apply(p, v), k, x, jnp.full((16,), 0.3), 0.1)[0])
  ours = flops.count(loss, p, jax.random.PRNGKey(1), x)
  cost = jax.jit(loss).lower(p, jax.random.PRNGKey(1), x).compile().cost_analysis()
  xla = (cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"]
  assert 0.75 * xla < ours < 1.25 * xla, (ours, xla)


def test_projected_hours():
  assert flops.hours(1e14, 100_000, "h100") == pytest.approx(1e19 / (0.4 * 494e12) / 3600)

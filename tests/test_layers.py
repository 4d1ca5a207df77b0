"""The one convolution layer: its three forms compute the same function and the same gradients (first and
second order), with the same parameters as flax's nn.Conv."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dsm_jax.models import layers


@pytest.mark.parametrize("k,d", [(1, 1), (3, 1), (5, 1), (3, 2), (3, 4)])
def test_forms_agree_with_nn_conv_in_value_and_gradients(k, d):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 7, 3))
  ref = nn.Conv(4, (k, k), padding="SAME", kernel_dilation=(d, d))
  params = ref.init(jax.random.PRNGKey(1), x)
  y_ref = ref.apply(params, x)

  def loss(p, x, impl):  # an energy's input gradient inside the loss: MDSM's double backprop
    f = lambda v: jnp.sum(jnp.tanh(layers.Conv(4, k, dilation=d, conv_impl=impl).apply(p, v)) ** 2)
    return jnp.sum(jax.grad(f)(x) ** 2) + f(x)

  grads = {}
  for impl in layers.CONV_IMPLS:
    y = layers.Conv(4, k, dilation=d, conv_impl=impl).apply(params, x)
    np.testing.assert_allclose(y, y_ref, atol=1e-5, rtol=1e-5)
    grads[impl] = jax.grad(loss, argnums=(0, 1))(params, x, impl)
  for impl in ("vjp", "patches"):
    for a, b in zip(jax.tree_util.tree_leaves(grads[impl]), jax.tree_util.tree_leaves(grads["xla"])):
      np.testing.assert_allclose(a, b, atol=2e-4, rtol=2e-4)


def test_inside_scan_equals_outside():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
  conv = layers.Conv(3, 3, conv_impl="vjp")
  p = conv.init(jax.random.PRNGKey(1), x)
  g = lambda p, x: jax.grad(lambda q: jnp.sum(conv.apply(q, x) ** 2))(p)
  _, scanned = jax.lax.scan(lambda c, _: (c, g(p, x)), 0, None, length=2)
  for a, b in zip(jax.tree_util.tree_leaves(scanned), jax.tree_util.tree_leaves(g(p, x))):
    np.testing.assert_allclose(a[0], b, atol=1e-5, rtol=1e-5)


def test_strided_and_default_form():
  x = jnp.ones((1, 8, 8, 2))
  conv = layers.Conv(3, 3, strides=2, conv_impl="patches")  # strided: always XLA's convolution
  assert conv.apply(conv.init(jax.random.PRNGKey(0), x), x).shape == (1, 4, 4, 3)
  assert layers.default_conv_impl() in layers.CONV_IMPLS
  with pytest.raises(ValueError, match="unknown convolution form"):
    layers.set_default_conv_impl("fft")

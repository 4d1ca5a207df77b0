"""Every image model computes in bfloat16 with model.dtype = 'bfloat16' (parameters stay float32): five optimizer
steps from the same parameters on the same batches give losses within 5% of the float32 run's at every step."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dsm_jax import losses, models, sigmas
from dsm_jax.methods import dde
from dsm_jax.models import unet_dae
from dsm_jax.train import NetState

LADDER = tuple(float(s) for s in sigmas.geometric(1.0, 0.01, 10))
SHAPE = (16, 16, 1)
TOL = 0.05


def _loss_of(name, net):
  """The loss the image model is trained with, as (params, key, x) -> scalar."""
  if name in ("refinenet", "cond_unet"):
    return lambda p, k, x: losses.ncsn(lambda v, s: net.apply(p, v, s), k, x, jnp.asarray(LADDER))[0]
  if name == "energy_resnet":
    return lambda p, k, x: losses.mdsm(lambda v, s: net.apply(p, v), k, x, jnp.full((x.shape[0],), 0.3), 0.1)[0]
  if name in ("dense_net", "conv_energy"):
    return lambda p, k, x: dde.dde_loss(lambda v: -net.apply(p, v), k, x, 0.5)
  if name == "unet_dae":
    return lambda p, k, x: losses.dae(lambda v, s: unet_dae.functions(net, p).denoise(v, s), k, x,
                                      jnp.full((x.shape[0],), 0.3))[0]
  # conv_generator: G(z) towards a fixed image batch
  return lambda p, k, x: jnp.mean((net.apply(p, jax.random.normal(k, (x.shape[0], 8))) - x) ** 2)


CASES = {"refinenet": {"ngf": 4}, "cond_unet": {"channels": (4, 8, 8)}, "energy_resnet": {"nf": 4},
         "dense_net": {"hidden": 16, "n_layers": 2}, "conv_energy": {"features": (4, 8, 8), "hidden": 16},
         "conv_generator": {"features": (8, 8, 4)},
         "unet_dae": {"nf": 8, "ch_mult": (1, 2), "num_res_blocks": 1, "latent_dim": 8}}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bfloat16_tracks_float32(name):
  shape = (32, 32, 1) if name == "refinenet" else SHAPE
  nets, params = {}, None
  for dt in ("float32", "bfloat16"):
    nets[dt] = models.build(models.section(name, dtype=dt, **CASES[name]), shape, sigmas=LADDER)
  x = jax.random.uniform(jax.random.PRNGKey(0), (8,) + shape)
  if name == "conv_generator":
    params = nets["float32"].init(jax.random.PRNGKey(1), jnp.zeros((1, 8)))
  elif name == "unet_dae":
    params = unet_dae.split(nets["float32"].init(jax.random.PRNGKey(1), x[:1], jnp.ones((1,))))
  elif name in ("refinenet", "cond_unet"):
    params = nets["float32"].init(jax.random.PRNGKey(1), x[:1], jnp.ones((1,)))
  else:
    params = nets["float32"].init(jax.random.PRNGKey(1), x[:1])
  assert all(l.dtype == jnp.float32 for l in jax.tree_util.tree_leaves(params))  # parameters stay float32
  traj = {}
  for dt, net in nets.items():
    loss = jax.jit(jax.value_and_grad(_loss_of(name, net)))
    state, seen = NetState.from_settings(params, {"lr": 1e-3}), []
    for i in range(5):
      value, grads = loss(state.params, jax.random.PRNGKey(10 + i), x)
      assert all(g.dtype == jnp.float32 for g in jax.tree_util.tree_leaves(grads))
      state = state.apply_gradients(grads)
      seen.append(float(value))
    traj[dt] = np.asarray(seen)
  assert np.all(np.isfinite(traj["bfloat16"]))
  np.testing.assert_allclose(traj["bfloat16"], traj["float32"], rtol=TOL)

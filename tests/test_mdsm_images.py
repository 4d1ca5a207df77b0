"""MDSM on images: the ResNet energy, the loss (finite differences, the Gaussian optimum, the
method's wiring of eq. 10), the tempered sampler's stationary variance, config checks, and the paper
configs end to end at tiny widths on stand-in data (with the OOD block of eval.json)."""
import importlib
import json
import os

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from dsm_jax import losses, models, run_lib, samplers, sigmas
from dsm_jax.methods import mdsm
from dsm_jax.models import layers
from dsm_jax.models.energy_resnet import RESNET6, RESNET12, RESNET18, RESNET34, EnergyResNet, mean_pool
from dsm_jax.validation import ConfigError

PAPER = {"mdsm_fashion_mnist": ("fashion_mnist", (32, 32, 1)), "mdsm_cifar10": ("cifar10", (32, 32, 3)),
         "mdsm_celeba": ("celeb_a", (32, 32, 3))}


def _np_init(model, x, seed=0, scale=1.0):
  """model.init's parameter tree filled by numpy: kernels U(+-scale/sqrt(fan_in)) (the module's own
  initialiser at scale 1), biases U(+-0.1) so that they matter in the tests. Flax's init compiles one
  threefry stream per parameter, slow on this CPU; the initialiser itself is tested separately."""
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    if "kernel" in jax.tree_util.keystr(path):
      bound = scale / np.sqrt(np.prod(leaf.shape[:-1]))
      return jnp.asarray(rng.uniform(-bound, bound, leaf.shape), leaf.dtype)
    return jnp.asarray(rng.uniform(-0.1, 0.1, leaf.shape), leaf.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


# ============================================================================================ model
@pytest.mark.parametrize("size,c,blocks,impl", [(28, 1, RESNET12, "xla"), (32, 3, RESNET18, "patches"),
                                                (64, 3, RESNET34, "xla")], ids=["28-res12", "32-res18", "64-res34"])
def test_energy_resnet_shapes_scalar_output_and_dtype(size, c, blocks, impl):
  net = EnergyResNet(nf=2, stage_blocks=blocks, conv_impl=impl)
  x = jax.random.uniform(jax.random.PRNGKey(size), (3, size, size, c))
  params = _np_init(net, x)
  e = jax.jit(net.apply)(params, x)
  chex.assert_shape(e, (3,))
  assert e.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(e)))
  assert np.unique(np.asarray(e)).size == 3  # one number per image, not a broadcast constant
  # feature maps: one down block per stage (ceil pooling), widths nf * 2^(i+1)
  _, inter = jax.eval_shape(lambda p: net.apply(p, x, capture_intermediates=True), params)
  got = [inter["intermediates"]["trunk"][f"stage{i}_block0"]["__call__"][0].shape[1:] for i in range(len(blocks))]
  side, want = size, []
  for i in range(len(blocks)):
    side = -(-side // 2)
    want.append((side, side, 2 * 2 ** (i + 1)))
  assert got == want
  n_blocks = sum(1 for k in params["params"]["trunk"] if k.startswith("stage"))
  assert n_blocks == sum(blocks)


def test_bfloat16_energy_close_to_float32_and_params_float32():
  x = jax.random.uniform(jax.random.PRNGKey(0), (4, 28, 28, 1))
  f32 = EnergyResNet(nf=4, stage_blocks=RESNET6)
  bf = EnergyResNet(nf=4, stage_blocks=RESNET6, dtype=jnp.bfloat16)
  params = _np_init(f32, x)
  e32, ebf = np.asarray(jax.jit(f32.apply)(params, x)), np.asarray(jax.jit(bf.apply)(params, x))
  assert ebf.dtype == np.float32
  assert np.abs(ebf - e32).max() < 0.05 * np.abs(e32).max() + 1e-3
  shapes = jax.eval_shape(bf.init, jax.random.PRNGKey(0), x)
  assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(shapes)} == {jnp.dtype(jnp.float32)}


def _reference_param_count(c, nf, blocks, side):
  """Parameters of the reference's Res*_Quadratic layer list, written out independently."""
  conv = lambda ci, co, k, bias=True: ci * co * k * k + (co if bias else 0)  # noqa: E731
  n, ci = conv(c, nf, 3), nf
  for i, nb in enumerate(blocks):
    w = nf * 2 ** (i + 1)
    n += conv(ci, ci, 3, False) + conv(ci, w, 3) + conv(ci, w, 1)          # down block
    n += (nb - 1) * (conv(w, w, 3, False) + conv(w, w, 3) + conv(w, w, 1))  # constant-resolution blocks
    ci, side = w, side // 2
  feats = side * side * ci
  return n + 3 * (feats + 1)  # ln1, ln2, lq


@pytest.mark.parametrize("c,nf,blocks,side", [(1, 64, RESNET12, 32), (3, 128, RESNET18, 32), (3, 128, RESNET34, 32)])
def test_parameter_count_matches_reference_layer_list(c, nf, blocks, side):
  shapes = jax.eval_shape(EnergyResNet(nf=nf, stage_blocks=blocks).init, jax.random.PRNGKey(0),
                          jnp.zeros((1, side, side, c)))
  n = sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(shapes))
  assert n == _reference_param_count(c, nf, blocks, side)


def test_quadratic_output_form():
  """With the trunk fixed, E = (w1.h + b1)(w2.h + b2) + wq.(h*h) + bq in the flattened features h."""
  net = EnergyResNet(nf=2, stage_blocks=(1,))
  x = jax.random.uniform(jax.random.PRNGKey(1), (3, 4, 4, 1))
  params = _np_init(net, x)
  _, inter = net.apply(params, x, capture_intermediates=True)
  h = np.asarray(inter["intermediates"]["trunk"]["__call__"][0]).reshape(3, -1)
  p = jax.tree_util.tree_map(np.asarray, params["params"])
  lin = lambda name, v: v @ p[name]["kernel"][:, 0] + p[name]["bias"][0]  # noqa: E731
  expect = lin("lin1", h) * lin("lin2", h) + lin("quad", h * h)
  np.testing.assert_allclose(np.asarray(net.apply(params, x)), expect, rtol=1e-5, atol=1e-6)


def test_patches_and_xla_energies_and_gradients_agree():
  x = jax.random.uniform(jax.random.PRNGKey(2), (3, 28, 28, 1))
  xla, patches = EnergyResNet(nf=2, stage_blocks=RESNET12), EnergyResNet(nf=2, stage_blocks=RESNET12, conv_impl="patches")
  params = _np_init(xla, x)
  grad = lambda net: jax.jit(jax.grad(lambda y: jnp.sum(net.apply(params, y))))(x)  # noqa: E731
  np.testing.assert_allclose(patches.apply(params, x), xla.apply(params, x), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(grad(patches), grad(xla), rtol=1e-3, atol=1e-5)


def test_mean_pool_ceil_and_no_batch_mixing():
  x = jnp.arange(49.0).reshape(1, 7, 7, 1)
  out = np.asarray(mean_pool(x))[0, :, :, 0]
  assert out.shape == (4, 4)
  assert out[0, 0] == np.mean([0, 1, 7, 8]) and out[3, 3] == 48.0 and out[0, 3] == np.mean([6, 13])
  net = EnergyResNet(nf=2, stage_blocks=RESNET6)
  xb = jax.random.uniform(jax.random.PRNGKey(3), (4, 28, 28, 1))
  params = _np_init(net, xb)
  base = np.asarray(net.apply(params, xb))
  other = np.asarray(net.apply(params, xb.at[1:].set(0.0)))
  assert other[0] == pytest.approx(base[0], rel=1e-6) and not np.allclose(other[1:], base[1:])


def test_initialiser_is_pytorch_fan_in_uniform():
  from dsm_jax.models.energy_resnet import kernel_init
  k = np.asarray(kernel_init(jax.random.PRNGKey(0), (3, 3, 32, 64)))
  bound = 1.0 / np.sqrt(9 * 32)
  assert np.abs(k).max() <= bound and np.abs(k).max() > 0.95 * bound


@pytest.mark.parametrize("over,shape,key", [
    ({"nf": 0}, (28, 28, 1), "model.nf"),
    ({"stage_blocks": ()}, (28, 28, 1), "model.stage_blocks"),
    ({"stage_blocks": (1, 0)}, (28, 28, 1), "model.stage_blocks"),
    ({"stage_blocks": RESNET34}, (8, 8, 1), "model.stage_blocks"),
    ({}, (784,), "model.name"),
    ({"dtype": "float16"}, (28, 28, 1), "model.dtype"),
])
def test_get_model_errors_name_the_key(over, shape, key):
  m = models.section("energy_resnet", nf=4, stage_blocks=RESNET12)
  with m.ignore_type():
    m.update(over)
  with pytest.raises(ConfigError) as err:
    models.build(m, shape)
  assert err.value.key == key and "\n" not in str(err.value)


# ============================================================================================= loss
def _fd_check(loss_fn, params, directions, h=1e-5, rtol=1e-5):
  flat, unravel = ravel_pytree(params)
  assert flat.dtype == jnp.float64
  grad = ravel_pytree(jax.jit(jax.grad(loss_fn))(params))[0]
  assert float(jnp.linalg.norm(grad)) > 1e-3
  lf = jax.jit(lambda f: loss_fn(unravel(f)))
  for v in directions:
    fd = (lf(flat + h * v) - lf(flat - h * v)) / (2 * h)
    np.testing.assert_allclose(grad @ v, fd, rtol=rtol, atol=rtol * float(jnp.linalg.norm(grad)))


@pytest.mark.parametrize("impl", ["xla", "patches"])
def test_mdsm_parameter_gradient_matches_finite_differences(impl):
  """d/dtheta of || (x - x~)/sigma0^2 + grad_x E(x~) ||^2 / sigma^2 (double backprop through the ResNet
  energy, ELU, mean pools, quadratic head) against central differences in float64."""
  with jax.enable_x64(True):
    net = EnergyResNet(nf=2, stage_blocks=(1, 1), dtype=jnp.float64, conv_impl=impl)
    x = jax.random.uniform(jax.random.PRNGKey(4), (6, 4, 4, 1), jnp.float64)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), _np_init(net, x, scale=2.0))
    sig = sigmas.batch_geometric(6, 0.1, 1.0).astype(jnp.float64)
    key = jax.random.PRNGKey(5)

    def loss_fn(p):
      return losses.mdsm(lambda y, s0: net.apply(p, y), key, x, sig, 0.1)[0]

    assert jax.eval_shape(loss_fn, params).dtype == jnp.float64
    n = ravel_pytree(params)[0].size
    dirs = jax.random.normal(jax.random.PRNGKey(6), (4, n), jnp.float64)
    _fd_check(loss_fn, params, list(dirs / jnp.linalg.norm(dirs, axis=1, keepdims=True)))


class _Shape:
  has_density = False

  def __init__(self, shape):
    self.shape = tuple(shape)


def _method_config(**over):
  c = importlib.import_module("configs.mdsm_mnist5k").get_config()
  c.model.nf, c.model.stage_blocks = 2, (1,)
  c.model.base_energy = "none"  # eq. 10 of the network alone (the base energy: tests/test_gaussian_base.py)
  for k, v in over.items():
    node = c
    *path, leaf = k.split(".")
    for p in path:
      node = node[p]
    node[leaf] = v
  return c


@pytest.mark.parametrize("dist", ["batch_linear", "batch_geometric"])
def test_method_loss_is_eq10_with_the_batch_spread(dist):
  """mdsm.build(...).loss = mean_i || (x_i - x~_i)/sigma0^2 + grad E(x~_i) ||^2 / sigma_i^2 with the
  sigmas spread over the batch from sigma_min to sigma_max (the reference's lin / exp)."""
  c = _method_config(**{"model.sigma_dist": dist, "model.sigma_min": 0.05, "model.sigma_max": 1.2})
  method = mdsm.build(c, _Shape((4, 4, 1)))
  net = models.build(c.model, (4, 4, 1))
  x = jax.random.uniform(jax.random.PRNGKey(7), (8, 4, 4, 1))
  params = _np_init(net, x)
  key = jax.random.PRNGKey(8)
  got = float(method.loss(params, key, x)[0])
  _, k_noise = jax.random.split(key)
  spread = np.linspace if dist == "batch_linear" else np.geomspace
  sig = spread(0.05, 1.2, 8)
  xt = x + sig[:, None, None, None] * jax.random.normal(k_noise, x.shape)
  g = jax.grad(lambda y: jnp.sum(net.apply(params, y)))(xt)
  r = (x - xt) / 0.1 ** 2 + g
  want = float(np.mean(np.sum(np.asarray(r).reshape(8, -1) ** 2, -1) / sig ** 2))
  assert got == pytest.approx(want, rel=1e-4)


TAU, S0, D = 0.3, 0.1, 16  # data std, sigma0, pixels per image (4x4x1)


@jax.jit
def _quadratic_losses(key, coefs, sig):
  """MDSM losses of E_a(x) = a/2 |x|^2 for each a in coefs, on the same data and noise (common random
  numbers): data N(0, TAU^2) per pixel, one sigma per example."""
  kx, kn = jax.random.split(key)
  x = TAU * jax.random.normal(kx, (sig.shape[0], 4, 4, 1))
  return jnp.stack([losses.mdsm(lambda y, s0, a=a: 0.5 * a * jnp.sum(y ** 2, (1, 2, 3)), kn, x, sig, S0)[0]
                    for a in coefs])


def _expected_loss(a, sig):
  """E[loss] of E_a: per pixel and sigma, E[((x - x~)/s0^2 + a x~)^2] = s^2/s0^4 - 2a s^2/s0^2 + a^2 (tau^2 + s^2)."""
  s2 = sig ** 2
  return D * np.mean((s2 / S0 ** 4 - 2 * a * s2 / S0 ** 2 + a ** 2 * (TAU ** 2 + s2)) / s2)


@pytest.mark.parametrize("single", [True, False], ids=["one_sigma", "batch_linear"])
def test_loss_is_minimised_by_the_analytic_energy_of_gaussian_data(single):
  """For N(0, tau^2 I) data and quadratic energies a/2 |x|^2 the expected loss is a parabola in a with
  minimiser a* = sum_s 1/s0^2 / sum_s (tau^2 + s^2)/s^2 (over the batch's sigmas); with one sigma,
  a* = s^2 / (s0^2 (tau^2 + s^2)), i.e. -grad E* = Tweedie's score of the smoothed data times s^2/s0^2
  (eq. 10's optimum). Monte Carlo over 200 x 256 images: the loss at a* matches its expectation, the
  excess at a* (1 +- 0.2) matches the parabola, and a non-quadratic perturbation of E* costs more."""
  sig = np.full(256, 0.5) if single else np.linspace(0.05, 1.2, 256)
  a_star = np.sum(1 / S0 ** 2 + 0 * sig) / np.sum((TAU ** 2 + sig ** 2) / sig ** 2)
  if single:
    assert a_star == pytest.approx(0.25 / (S0 ** 2 * (TAU ** 2 + 0.25)))
  coefs = (a_star, 0.8 * a_star, 1.2 * a_star)
  runs = np.stack([np.asarray(_quadratic_losses(jax.random.PRNGKey(i), coefs, jnp.asarray(sig)))
                   for i in range(200)])  # [200, 3]
  mean, se = runs.mean(0), runs.std(0) / np.sqrt(len(runs))
  assert abs(mean[0] - _expected_loss(a_star, sig)) < 4 * se[0] + 1e-6 * mean[0]
  for j, a in ((1, coefs[1]), (2, coefs[2])):
    excess = runs[:, j] - runs[:, 0]  # common random numbers: a precise difference
    want = _expected_loss(a, sig) - _expected_loss(a_star, sig)
    assert want > 0 and excess.mean() > 0
    assert abs(excess.mean() - want) < 4 * excess.std() / np.sqrt(len(excess)) + 0.02 * want


def test_perturbed_energy_has_higher_loss():
  """E* + 0.1 sum cos(6 x): not in the quadratic family, so it must lose against E* (same draws). For Gaussian data
  E* is the optimum over all energies at one sigma, so the expected excess is E[|grad of the perturbation|^2] /
  sigma^2 ~ 0.18 * 16 / 0.25 = 11.5 per example; the batch is large enough that 40 draws see it at > 10 SE."""
  sig = jnp.full((2048,), 0.5)
  a = 0.25 / (S0 ** 2 * (TAU ** 2 + 0.25))

  @jax.jit
  def both(key):
    kx, kn = jax.random.split(key)
    x = TAU * jax.random.normal(kx, (2048, 4, 4, 1))
    e_star = lambda y, s0: 0.5 * a * jnp.sum(y ** 2, (1, 2, 3))  # noqa: E731
    e_pert = lambda y, s0: e_star(y, s0) + 0.1 * jnp.sum(jnp.cos(6 * y), (1, 2, 3))  # noqa: E731
    return losses.mdsm(e_star, kn, x, sig, S0)[0], losses.mdsm(e_pert, kn, x, sig, S0)[0]

  diffs = np.array([np.subtract(*map(float, both(jax.random.PRNGKey(100 + i))))[()] for i in range(40)])
  assert np.mean(-diffs) > 5 * np.std(diffs) / np.sqrt(len(diffs))  # perturbed - optimal > 0, clearly


# ========================================================================================== sampler
def test_tempered_sampler_reaches_the_right_variance_at_t1():
  """E(x) = |x - m|^2 / (2 v) on image-shaped chains started at 0.5 + N(0, I) (mdsm.initial_state),
  through the reference's schedule shape (flat T = 100, geometric decay to 1) and then held at T = 1:
  the chains end at mean m and at the exact stationary variance of the discretised Langevin step,
  T eps^2 / (1 - (1 - h)^2) with h = eps^2 / (2 v) (-> T v as eps -> 0); at the end of the flat phase
  the variance is 100 times that."""
  m, v, eps = 0.3, 0.04, 0.05
  score = lambda x, s: -(x - m) / v  # noqa: E731
  s_cfg = ml_collections.ConfigDict({"init": "gaussian", "init_mean": 0.5, "init_std": 1.0})
  x0 = mdsm.initial_state(jax.random.PRNGKey(9), 4000, (4, 4, 1), s_cfg)
  temps = sigmas.mdsm_temperatures(t_start=100.0, n_flat=100, n_decay=200, n_cool=300, t_end=1.0)
  x, aux = jax.jit(lambda k, x: samplers.tempered_langevin(score, k, x, eps, temps, thin=100))(
      jax.random.PRNGKey(10), x0)
  h = eps ** 2 / (2 * v)
  var_ula = eps ** 2 / (1 - (1 - h) ** 2)
  assert abs(float(x.mean()) - m) < 0.005
  assert float(x.var()) == pytest.approx(var_ula, rel=0.03)
  assert var_ula == pytest.approx(v, rel=0.02)
  end_flat = np.asarray(aux["trajectory"][0])  # the state after step 100
  assert end_flat.var() == pytest.approx(100 * var_ula, rel=0.1)
  # cooling to T = 0 instead contracts the chains far below the T = 1 variance
  cold = sigmas.mdsm_temperatures(t_start=100.0, n_flat=100, n_decay=200, n_cool=300, t_end=0.0)
  xc, _ = jax.jit(lambda k, x: samplers.tempered_langevin(score, k, x, eps, cold))(jax.random.PRNGKey(10), x0)
  assert float(xc.var()) < 0.2 * var_ula


def test_the_platforms_convolution_form_changes_the_compute_not_the_samples(monkeypatch):
  """Whichever convolution form the platform picks (dsm_jax/platform.py: XLA's, the VJP form, im2col), the sampler
  draws the same chains from the same parameters: one network, one parameter tree; the Gaussian base energy is part
  of every one."""
  shape = (8, 8, 1)
  over = {"model.base_energy": "gaussian", "sampling.n_samples": 6,
          "sampling.batch_size": 3, "sampling.n_flat": 3, "sampling.n_decay": 5, "sampling.n_cool": 2,
          "sampling.t_end": 0.0}

  class _Data(_Shape):
    def train_images(self):
      return np.random.default_rng(0).uniform(0, 1, (64,) + shape).astype(np.float32)

    def to_unit(self, x):
      return x

  traced, patches = [], layers.conv_patches
  monkeypatch.setattr(layers, "conv_patches", lambda *a: traced.append(1) or patches(*a))
  params = {"energy": _np_init(models.build(_method_config(**over).model, shape), jnp.zeros((1,) + shape))}
  got = {}
  try:
    for impl in layers.CONV_IMPLS:
      traced.clear()
      layers.set_default_conv_impl(impl)
      got[impl] = mdsm.build(_method_config(**over), _Data(shape)).sample(params, jax.random.PRNGKey(3))
      assert bool(traced) == (impl == "patches")  # the sampler traced im2col only in that form
  finally:
    layers.set_default_conv_impl("xla")
  assert got["xla"]["x"].shape == (6,) + shape and np.std(got["xla"]["x"]) > 0.1
  for impl in ("vjp", "patches"):
    np.testing.assert_allclose(got[impl]["x"], got["xla"]["x"], atol=2e-4)
    np.testing.assert_allclose(got[impl]["trajectory"], got["xla"]["trajectory"], atol=2e-4)


def test_trajectory_thin_and_initial_state():
  assert mdsm.trajectory_thin(2700) == 225 and mdsm.trajectory_thin(8) == 1 and mdsm.trajectory_thin(450) == 45
  u = mdsm.initial_state(jax.random.PRNGKey(0), 500, (3,),
                         ml_collections.ConfigDict({"init": "uniform", "init_range": (-2.0, 1.0)}))
  assert u.shape == (500, 3) and float(u.min()) >= -2.0 and float(u.max()) <= 1.0 and float(u.min()) < -1.9


# ============================================================================================ configs
def _paper_values(name):
  c = importlib.import_module(f"configs.{name}").get_config()
  assert c.method == "mdsm" and c.data.dataset == PAPER[name][0] and c.model.name == "energy_resnet"
  m, t, s = c.model, c.training, c.sampling
  assert (m.sigma0, m.weight_power, c.data.scale) == (0.1, 2.0, "01")
  assert (t.optimizer, t.beta1, t.beta2, t.schedule, t.batch_size) == ("adam", 0.9, 0.95, "cosine", 128)
  assert t.lr * t.lr_final_frac == pytest.approx(1e-6)  # CosineAnnealingLR eta_min
  assert (s.eps, s.init, s.init_mean, s.init_std, s.final_denoise) == (0.02, "gaussian", 0.5, 1.0, True)
  temps = sigmas.temperatures_from_config(c)
  assert len(temps) == 2700 and np.all(temps[:500] == 100.0) and temps[2499] == pytest.approx(1.0)
  assert temps[-1] == 0.0 and np.all(np.diff(temps[500:]) <= 0)
  return c


def test_paper_values():
  f = _paper_values("mdsm_fashion_mnist")
  assert (f.model.nf, tuple(f.model.stage_blocks), f.data.pad_to) == (64, RESNET12, 32)
  assert (f.model.sigma_min, f.model.sigma_max, f.model.sigma_dist) == (0.1, 3.0, "batch_geometric")
  assert (f.training.lr, f.training.n_iters) == (1e-4, 100000) and f.eval.ood_datasets == ("mnist",)
  c = _paper_values("mdsm_cifar10")
  assert (c.model.nf, tuple(c.model.stage_blocks), c.data.random_flip) == (128, RESNET18, False)
  assert (c.model.sigma_min, c.model.sigma_max, c.model.sigma_dist) == (0.05, 1.2, "batch_linear")
  assert (c.training.lr, c.training.n_iters) == (5e-5, 300000)
  assert set(c.eval.ood_datasets) == {"svhn_cropped", "cifar100", "celeb_a"}
  a = _paper_values("mdsm_celeba")
  assert (tuple(a.model.stage_blocks), a.data.centre_crop, a.data.image_size, a.data.random_flip) == (
      RESNET34, 140, 32, True)


@pytest.mark.parametrize("key,value", [("sampling.init", "normal"), ("sampling.init_std", 0.0),
                                       ("eval.ood_datasets", ("imagenet",)), ("eval.ood_n", 0),
                                       ("model.sigma_dist", "exp"), ("sampling.batch_size", -1),
                                       ("sampling.t_start", 0.0)])
def test_bad_values_name_the_key(key, value):
  with pytest.raises(ConfigError) as err:
    mdsm.build(_method_config(**{key: value}), _Shape((28, 28, 1)))
  assert err.value.key == key and "\n" not in str(err.value)


def _tiny(name, **over):
  c = importlib.import_module(f"configs.{name}").get_config()
  c.model.nf = 2
  t = c.training
  t.n_iters, t.batch_size, t.log_every, t.ckpt_every, t.steps_per_call = 2, 4, 1, 2, 1
  c.runtime.progress = False
  s = c.sampling
  s.n_samples, s.batch_size, s.n_flat, s.n_decay, s.n_cool = 4, 2, 2, 4, 2
  c.eval.enabled = False
  for k, v in over.items():
    node = c
    *path, leaf = k.split(".")
    for p in path:
      node = node[p]
    node[leaf] = v
  return c


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_config_trains_and_samples(name, standin_tfds, tmp_path):
  """Each paper config at width 2 on stand-in tfds images (the real geometry: Fashion-MNIST padded to
  32, CelebA cropped and resized to 32): 2 steps, then 4 samples in 2 batches through the whole
  schedule. The Fashion-MNIST run also evaluates: feature FID/KID and the OOD block, with MNIST (a
  stand-in here) as the real OOD pair."""
  evaluate = name == "mdsm_fashion_mnist"
  c = _tiny(name, **{"eval.enabled": evaluate, "eval.feature_cache_dir": str(tmp_path / "fc"), "eval.ood_n": 16,
                     "eval.fid_n": 0})  # the 50,000-sample protocol: tests/test_protocol.py
  wd = str(tmp_path / name)
  res = run_lib.run(c, wd)
  shape = PAPER[name][1]
  x = np.load(f"{wd}/samples/samples.npz")["x"]
  chex.assert_shape(x, (4,) + shape)
  assert np.all(np.isfinite(x)) and x.min() >= 0.0 and x.max() <= 1.0
  assert not np.allclose(x[:2], x[2:])  # the two batches are different chains
  traj = np.load(f"{wd}/samples/trajectory.npz")["x"]
  chex.assert_shape(traj, (8 + 1, 2) + shape)  # every state of the 8-step schedule, then the denoised end
  np.testing.assert_allclose(traj[-1], x[:2], atol=1e-6)
  rows = [json.loads(line) for line in open(f"{wd}/metrics.jsonl")]
  assert [r["step"] for r in rows] == [1, 2] and all(np.isfinite(r["loss"]) for r in rows)
  for png in ("samples.png", "trajectory.png"):
    assert os.path.getsize(f"{wd}/samples/{png}") > 0
  if evaluate:
    ev = json.load(open(f"{wd}/eval.json"))
    assert ev == pytest.approx(res, nan_ok=True)
    for k in ("auroc_noise", "auroc_constant", "auroc_interp", "auroc_mnist"):
      assert 0.0 <= ev[k] <= 1.0, k
    for k in ("fid_feat", "kid_feat", "fid_feat_real_baseline", "ood_score_mean_in", "ood_n_nonfinite_scores"):
      assert k in ev, k
    assert "ood_mnist_not_computed" not in ev

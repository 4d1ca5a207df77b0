"""NCSN's conditional RefineNet (dsm_jax.models.refinenet)."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dsm_jax import sigmas as sigmas_lib
from dsm_jax import models
from dsm_jax.models.refinenet import (CondInstanceNormPlus, CondRefineNet, resize_bilinear_aligned,
                                      sigma_to_index)
from dsm_jax.validation import ConfigError

LADDER = tuple(float(s) for s in sigmas_lib.geometric(1.0, 0.01, 10))
NGF = 8


def _count(tree) -> int:
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree)))


def _fast_init(model, x, sigma, seed=0):
  """model.init's parameter tree, filled by numpy with the module's initial distributions.

  Flax's init draws ~170 separate threefry streams whose XLA compilation takes ~30 s on this CPU,
  so the network-level tests use this; the initialisers themselves are tested on their own below."""
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, sigma)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if "embed" in name:
      n, c = leaf.shape[0], leaf.shape[1] // 3
      v = np.concatenate([1.0 + 0.02 * rng.standard_normal((n, 2 * c)), np.zeros((n, c))], axis=-1)
    elif "kernel" in name:
      bound = 1.0 / np.sqrt(np.prod(leaf.shape[:-1]))
      v = rng.uniform(-bound, bound, leaf.shape)
    else:
      v = np.zeros(leaf.shape)
    return jnp.asarray(v, leaf.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


_NETS = {}


def _net(size, channels):
  """(model, params, x [4, size, size, channels], sigma [4], jitted apply), built once per module.

  One jitted apply per network, so that tests with the same shapes share its compilation."""
  if (size, channels) not in _NETS:
    model = CondRefineNet(LADDER, ngf=NGF, num_channels=channels, image_size=size)
    x = jax.random.uniform(jax.random.PRNGKey(size), (4, size, size, channels))
    sigma = jnp.asarray(LADDER)[np.array([0, 3, 9, 3])]
    _NETS[size, channels] = (model, _fast_init(model, x, sigma), x, sigma, jax.jit(model.apply))
  return _NETS[size, channels]


@pytest.fixture(params=[(28, 1), (32, 3), (64, 3)], ids=["28x28x1", "32x32x3", "64x64x3"])
def net(request):
  return _net(*request.param)


# --------------------------------------------------------------------------------------------- shapes
def test_output_shape_matches_input(net):
  model, params, x, sigma, apply = net
  out = apply(params, x, sigma)
  assert out.shape == x.shape
  assert out.dtype == x.dtype
  assert np.all(np.isfinite(np.asarray(out)))


def test_feature_map_resolutions(net):
  """Stage outputs: 28/32 -> H, H/2, H/2, H/2 (2ngf from stage 2); 64 -> H, H/2, H/4, H/4, H/4."""
  model, params, x, sigma, _ = net
  _, state = jax.eval_shape(lambda p: model.apply(p, x, sigma, capture_intermediates=True), params)
  inter = state["intermediates"]
  h, g = model.image_size, NGF
  if h == 64:
    expected = [(h, g), (h // 2, 2 * g), (h // 4, 2 * g), (h // 4, 4 * g), (h // 4, 4 * g)]
  else:
    expected = [(h, g), (h // 2, 2 * g), (h // 2, 2 * g), (h // 2, 2 * g)]
  got = []
  for k in range(1, len(expected) + 1):
    shape = inter[f"res{k}_1"]["__call__"][0].shape
    got.append((shape[1], shape[3]))
  assert got == expected
  assert f"res{len(expected) + 1}_0" not in inter
  for k in range(1, len(expected) + 1):  # refine block k works at the resolution of stage L+1-k
    assert inter[f"refine{k}"]["__call__"][0].shape[1] == expected[len(expected) - k][0]


def test_bad_input_shape_raises():
  model = CondRefineNet(LADDER, ngf=NGF, num_channels=1, image_size=28)
  with pytest.raises(ValueError, match="28"):
    jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 1)), jnp.ones((1,)))
  with pytest.raises(ValueError, match="channels"):
    jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 3)), jnp.ones((1,)))
  with pytest.raises(ValueError, match="image sizes"):
    model = CondRefineNet(LADDER, ngf=NGF, num_channels=1, image_size=48)
    jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 48, 48, 1)), jnp.ones((1,)))


# ------------------------------------------------------------------------------------- conditioning
def test_sigma_to_index_nearest_in_log():
  ladder = np.asarray(LADDER)
  np.testing.assert_array_equal(sigma_to_index(jnp.asarray(ladder), LADDER), np.arange(10))
  # geometric midpoints in log space, nudged either way, snap to the nearer level
  mid = np.sqrt(ladder[:-1] * ladder[1:])
  np.testing.assert_array_equal(sigma_to_index(jnp.asarray(mid * 1.01), LADDER), np.arange(9))
  np.testing.assert_array_equal(sigma_to_index(jnp.asarray(mid * 0.99), LADDER), np.arange(1, 10))
  # out-of-range values clamp to the end levels; works under jit
  idx = jax.jit(lambda s: sigma_to_index(s, LADDER))(jnp.asarray([50.0, 1e-5]))
  np.testing.assert_array_equal(idx, [0, 9])


@pytest.fixture
def small_net():
  model, params, x, _, apply = _net(28, 1)
  return model, params, x, apply


def test_conditioning_on_level(small_net):
  model, params, x, apply = small_net
  levels = np.array([0, 3, 9, 3])
  x_same = jnp.repeat(x[:1], 4, axis=0)
  out = np.asarray(apply(params, x_same, jnp.asarray(LADDER)[levels]))
  # same image, different levels -> different scores; same level -> same score
  assert np.abs(out[0] - out[1]).max() > 1e-3
  assert np.abs(out[1] - out[2]).max() > 1e-3
  np.testing.assert_allclose(out[1], out[3], atol=1e-5)
  # each example only sees its own image and level (instance norm: no mixing across the batch)
  perm = np.array([2, 0, 3, 1])
  sig = jnp.asarray(LADDER)[levels]
  base = np.asarray(apply(params, x, sig))
  np.testing.assert_allclose(np.asarray(apply(params, x[perm], sig[perm])), base[perm], atol=1e-5)
  other = np.asarray(apply(params, x.at[1:].set(0.5), sig))
  np.testing.assert_allclose(other[0], base[0], atol=1e-5)
  # a sigma near a level gives that level's output (the index is snapped, scale_by_sigma=False)
  np.testing.assert_allclose(np.asarray(apply(params, x, sig * 1.05)), base, atol=1e-5)


def test_scale_by_sigma_divides(small_net):
  model, params, x, apply = small_net
  scaled = CondRefineNet(LADDER, ngf=NGF, num_channels=1, image_size=28, scale_by_sigma=True)
  sigma = jnp.asarray(LADDER)[np.array([0, 4, 6, 9])]
  np.testing.assert_allclose(jax.jit(scaled.apply)(params, x, sigma),
                             apply(params, x, sigma) / sigma[:, None, None, None], rtol=1e-4, atol=1e-6)


def test_level_embeddings_matter(small_net):
  """Overwriting one level's norm parameters changes that level's outputs only."""
  model, params, x, apply = small_net
  new = jax.tree_util.tree_map_with_path(
      lambda p, v: v.at[5].set(jnp.zeros_like(v[5]).at[: v.shape[1] // 3].set(2.0))
      if "embed" in jax.tree_util.keystr(p) else v, params)
  sigma = jnp.asarray(LADDER)[np.array([5, 6, 5, 0])]
  a, b = np.asarray(apply(params, x, sigma)), np.asarray(apply(new, x, sigma))
  assert [np.abs(a[i] - b[i]).max() < 1e-5 for i in range(4)] == [False, True, False, True]


# ------------------------------------------------------------------------------------ CondInstanceNorm++
def _cin_plus_numpy(x, embed, y, eps=1e-5):
  x = np.asarray(x, np.float64)
  c = x.shape[-1]
  gamma, alpha, beta = embed[y, :c], embed[y, c:2 * c], embed[y, 2 * c:]
  mu = x.mean(axis=(1, 2))
  h = (x - mu[:, None, None]) / np.sqrt(x.var(axis=(1, 2))[:, None, None] + eps)
  mu_n = (mu - mu.mean(-1, keepdims=True)) / np.sqrt(mu.var(-1, ddof=1, keepdims=True) + eps)
  h = h + (alpha * mu_n)[:, None, None]
  return gamma[:, None, None] * h + beta[:, None, None]


def test_cin_plus_identity_params_instance_normalises():
  x = 3.0 + 2.0 * jax.random.normal(jax.random.PRNGKey(0), (3, 8, 8, 4))
  x = x * jnp.arange(1, 5) + jnp.arange(4) * 10.0  # channel-dependent scale and offset
  norm = CondInstanceNormPlus(num_classes=5)
  params = norm.init(jax.random.PRNGKey(1), x, jnp.zeros((3,), jnp.int32))
  assert params["params"]["embed"].shape == (5, 12)
  c = 4
  embed = jnp.concatenate([jnp.ones((5, c)), jnp.zeros((5, 2 * c))], axis=-1)  # gamma 1, alpha 0, beta 0
  out = np.asarray(norm.apply({"params": {"embed": embed}}, x, jnp.asarray([0, 2, 4])))
  np.testing.assert_allclose(out.mean(axis=(1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(out.var(axis=(1, 2)), 1.0, atol=1e-3)
  # alpha = 1 puts the normalised channel means back: mean 0, unbiased std 1 across channels
  embed_a = embed.at[:, c:2 * c].set(1.0)
  out_a = np.asarray(norm.apply({"params": {"embed": embed_a}}, x, jnp.asarray([0, 2, 4])))
  m = out_a.mean(axis=(1, 2))
  np.testing.assert_allclose(m.mean(-1), 0.0, atol=1e-5)
  np.testing.assert_allclose(m.std(-1, ddof=1), 1.0, atol=1e-3)
  np.testing.assert_allclose(out_a.var(axis=(1, 2)), 1.0, atol=1e-3)


def test_cin_plus_per_class_parameters():
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 6, 6, 3)) + jnp.arange(3)
  embed = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (4, 9)))
  y = np.array([0, 1, 2, 1])
  norm = CondInstanceNormPlus(num_classes=4)
  out = np.asarray(norm.apply({"params": {"embed": jnp.asarray(embed)}}, x, jnp.asarray(y)))
  np.testing.assert_allclose(out, _cin_plus_numpy(x, embed, y), rtol=1e-4, atol=1e-4)
  # same input, different class -> different output
  x_same = jnp.repeat(x[:1], 2, axis=0)
  out2 = np.asarray(norm.apply({"params": {"embed": jnp.asarray(embed)}}, x_same, jnp.asarray([0, 3])))
  assert not np.allclose(out2[0], out2[1], atol=1e-3)


def test_cin_plus_init_matches_reference():
  """gamma, alpha ~ N(1, 0.02), beta = 0."""
  x = jnp.zeros((1, 4, 4, 64))
  embed = np.asarray(CondInstanceNormPlus(10).init(jax.random.PRNGKey(0), x, jnp.zeros((1,), jnp.int32))
                     ["params"]["embed"])
  assert abs(embed[:, :128].mean() - 1.0) < 0.01 and abs(embed[:, :128].std() - 0.02) < 0.005
  np.testing.assert_array_equal(embed[:, 128:], 0.0)


def test_resize_bilinear_align_corners():
  x = jnp.arange(3.0)[None, :, None, None] * jnp.ones((1, 3, 3, 1))
  out = np.asarray(resize_bilinear_aligned(x, (5, 5)))[0, :, 0, 0]
  np.testing.assert_allclose(out, [0.0, 0.5, 1.0, 1.5, 2.0])  # corners kept, linear in between
  assert resize_bilinear_aligned(x, (3, 3)) is x


# ---------------------------------------------------------------------------------- jit and dtypes
class JitTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_jit_matches_eager(self):
    model, params, x, sigma, apply = _net(32, 3)
    out = self.variant(model.apply)(params, x[:2], sigma[:2])
    ref = apply(params, x, sigma)[:2]
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_bfloat16_close_to_float32(small_net):
  model, params, x, apply = small_net
  sigma = jnp.asarray(LADDER)[np.array([0, 3, 6, 9])]
  bf = CondRefineNet(LADDER, ngf=NGF, num_channels=1, image_size=28, dtype=jnp.bfloat16)
  out_bf = np.asarray(jax.jit(bf.apply)(params, x, sigma))
  out32 = np.asarray(apply(params, x, sigma))
  assert out_bf.dtype == np.float32 and np.all(np.isfinite(out_bf))
  rel = np.linalg.norm(out_bf - out32) / np.linalg.norm(out32)
  assert rel < 0.1, rel
  # parameters stay float32 under a bf16 compute dtype
  shapes = jax.eval_shape(bf.init, jax.random.PRNGKey(0), x, sigma)
  assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(shapes)} == {jnp.dtype(jnp.float32)}


def test_initialisers():
  """Conv kernels: PyTorch's default fan-in uniform scale; CondInstanceNorm++ as tested below."""
  from dsm_jax.models.refinenet import conv_init
  k = np.asarray(conv_init(jax.random.PRNGKey(0), (3, 3, 64, 64)))
  bound = 1.0 / np.sqrt(9 * 64)
  assert np.abs(k).max() <= bound and np.abs(k).max() > 0.95 * bound


# -------------------------------------------------------------------------------- parameter counts
def _reference_param_count(ngf, ch, num_classes, deeper=False):
  """Parameter count of the reference's layer list (ermongroup/ncsn CondRefineNet(Deeper)Dilated),
  written out independently of the flax module; CondInstanceNorm++ (3C per class) throughout."""
  def conv(ci, co, k=3, bias=True):
    return ci * co * k * k + (co if bias else 0)

  def norm(c):
    return num_classes * 3 * c

  def res(ci, co, down=False, dil=False):
    n = norm(ci)
    if down:
      return n + conv(ci, ci) + norm(ci) + conv(ci, co) + conv(ci, co, 3 if dil else 1)
    return n + conv(ci, co) + norm(co) + conv(co, co)

  def rcu(c, blocks):
    return blocks * 2 * (norm(c) + conv(c, c, bias=False))

  def refine(ins, f, start=False, end=False):
    n = sum(rcu(c, 2) for c in ins) + 2 * (norm(f) + conv(f, f, bias=False)) + rcu(f, 3 if end else 1)
    if not start:
      n += sum(norm(c) + conv(c, f) for c in ins)
    return n

  g = ngf
  total = conv(ch, g) + norm(g) + conv(g, ch)
  total += 2 * res(g, g) + res(g, 2 * g, down=True) + res(2 * g, 2 * g)
  if not deeper:
    total += res(2 * g, 2 * g, True, True) + res(2 * g, 2 * g) + res(2 * g, 2 * g, True, True) + res(2 * g, 2 * g)
    total += (refine([2 * g], 2 * g, start=True) + refine([2 * g, 2 * g], 2 * g)
              + refine([2 * g, 2 * g], g) + refine([g, g], g, end=True))
  else:
    total += res(2 * g, 2 * g, down=True) + res(2 * g, 2 * g)
    total += res(2 * g, 4 * g, True, True) + res(4 * g, 4 * g) + res(4 * g, 4 * g, True, True) + res(4 * g, 4 * g)
    total += (refine([4 * g], 4 * g, start=True) + refine([4 * g, 4 * g], 2 * g) + refine([2 * g, 2 * g], 2 * g)
              + refine([2 * g, 2 * g], g) + refine([g, g], g, end=True))
  return total


@pytest.mark.parametrize("size,channels,ngf", [(28, 1, 64), (32, 3, 64), (64, 3, 64), (32, 3, 128)])
def test_parameter_count(size, channels, ngf, capsys):
  model = CondRefineNet(LADDER, ngf=ngf, num_channels=channels, image_size=size)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, size, size, channels)),
                          jnp.ones((1,)))
  n = _count(shapes)
  assert n == _reference_param_count(ngf, channels, len(LADDER), deeper=size == 64)
  with capsys.disabled():
    print(f"\nCondRefineNet {size}x{size}x{channels} ngf={ngf} L={len(LADDER)}: {n:,} parameters")


# ------------------------------------------------------------------------------------------ get_model
def _model_config(**kw):
  return models.section("refinenet", ngf=NGF, **kw)


def get_model(cfg, shape):
  return models.build(cfg, shape, sigmas=LADDER)


def test_get_model_builds_refinenet():
  model = get_model(_model_config(scale_by_sigma=True, dtype="bfloat16"), (32, 32, 3))
  assert isinstance(model, CondRefineNet)
  assert (model.image_size, model.num_channels, model.ngf) == (32, 3, NGF)
  assert model.scale_by_sigma and model.dtype == jnp.bfloat16
  np.testing.assert_allclose(model.sigmas, LADDER, rtol=1e-6)
  default = get_model(_model_config(), (28, 28, 1))
  assert not default.scale_by_sigma and default.dtype == jnp.float32


@pytest.mark.parametrize("shape,key", [((48, 48, 3), "data.image_size"), ((32, 28, 1), "data.image_size"),
                                       ((784,), "model.name")])
def test_get_model_rejects_bad_shapes(shape, key):
  with pytest.raises(ConfigError) as err:
    get_model(_model_config(), shape)
  assert err.value.key == key and "\n" not in str(err.value)

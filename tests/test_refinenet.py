"""NCSN's conditional RefineNet (dsm_jax.models.refinenet)."""
import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dsm_jax import sigmas as sigmas_lib
from dsm_jax.models import get_model
from dsm_jax.models.refinenet import (CondInstanceNormPlus, CondRefineNet, resize_bilinear_aligned,
                                      sigma_to_index)
from dsm_jax.validation import ConfigError

LADDER = tuple(float(s) for s in sigmas_lib.geometric(1.0, 0.01, 10))
NGF = 8


def _init_apply(model, x, sigma, seed=0):
  params = model.init(jax.random.PRNGKey(seed), x, sigma)
  return params, model.apply(params, x, sigma)


def _count(tree) -> int:
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree)))


# --------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3), (64, 3)])
def test_output_shape_matches_input(size, channels):
  model = CondRefineNet(LADDER, ngf=NGF, num_channels=channels, image_size=size)
  x = jax.random.uniform(jax.random.PRNGKey(1), (2, size, size, channels))
  sigma = jnp.asarray([LADDER[0], LADDER[-1]])
  _, out = jax.jit(_init_apply, static_argnums=0)(model, x, sigma)
  assert out.shape == x.shape
  assert out.dtype == x.dtype
  assert np.all(np.isfinite(np.asarray(out)))


def test_bad_input_shape_raises():
  model = CondRefineNet(LADDER, ngf=NGF, num_channels=1, image_size=28)
  with pytest.raises(ValueError, match="28"):
    jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 1)), jnp.ones((1,)))
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


@pytest.fixture(scope="module")
def small_net():
  model = CondRefineNet(LADDER, ngf=NGF, num_channels=1, image_size=28)
  x1 = jax.random.uniform(jax.random.PRNGKey(2), (1, 28, 28, 1))
  params = model.init(jax.random.PRNGKey(0), x1, jnp.ones((1,)))
  return model, params, x1, jax.jit(model.apply)


def test_conditioning_on_level(small_net):
  model, params, x1, apply = small_net
  levels = np.array([0, 3, 9, 3])
  x = jnp.repeat(x1, 4, axis=0)
  out = np.asarray(apply(params, x, jnp.asarray(LADDER)[levels]))
  # same image, different levels -> different scores; same level -> same score
  assert not np.allclose(out[0], out[1], atol=1e-5)
  assert not np.allclose(out[1], out[2], atol=1e-5)
  np.testing.assert_allclose(out[1], out[3], atol=1e-6)
  # each example only sees its own level (instance norm: no mixing across the batch)
  for i, lev in enumerate(levels[:3]):
    single = np.asarray(apply(params, x1, jnp.asarray([LADDER[lev]])))
    np.testing.assert_allclose(out[i], single[0], atol=1e-5)
  # a sigma near a level gives that level's output (the index is snapped, scale_by_sigma=False)
  near = np.asarray(apply(params, x[:3], jnp.asarray(LADDER)[levels[:3]] * 1.05))
  np.testing.assert_allclose(near, out[:3], atol=1e-6)


def test_scale_by_sigma_divides(small_net):
  model, params, x1, apply = small_net
  scaled = CondRefineNet(LADDER, ngf=NGF, num_channels=1, image_size=28, scale_by_sigma=True)
  sigma = jnp.asarray([LADDER[4]])
  np.testing.assert_allclose(scaled.apply(params, x1, sigma), apply(params, x1, sigma) / LADDER[4],
                             rtol=1e-5, atol=1e-6)


def test_level_embeddings_matter(small_net):
  """Overwriting one level's norm parameters changes that level's output only."""
  model, params, x1, apply = small_net
  new = jax.tree_util.tree_map_with_path(
      lambda p, v: v.at[5].set(jnp.zeros_like(v[5]).at[: v.shape[1] // 3].set(2.0))
      if "embed" in jax.tree_util.keystr(p) else v, params)
  for lev, changed in [(5, True), (6, False)]:
    a = np.asarray(apply(params, x1, jnp.asarray([LADDER[lev]])))
    b = np.asarray(apply(new, x1, jnp.asarray([LADDER[lev]])))
    assert np.allclose(a, b, atol=1e-6) != changed


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
    model = CondRefineNet(LADDER, ngf=NGF, num_channels=3, image_size=32)
    x = jax.random.uniform(jax.random.PRNGKey(3), (2, 32, 32, 3))
    sigma = jnp.asarray([LADDER[1], LADDER[7]])
    params = jax.jit(model.init)(jax.random.PRNGKey(0), x, sigma)
    out = self.variant(model.apply)(params, x, sigma)
    ref = jax.jit(model.apply)(params, x, sigma)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_bfloat16_close_to_float32(small_net):
  model, params, x1, apply = small_net
  x = jnp.concatenate([x1, jax.random.uniform(jax.random.PRNGKey(5), x1.shape)])
  sigma = jnp.asarray([LADDER[0], LADDER[8]])
  bf = CondRefineNet(LADDER, ngf=NGF, num_channels=1, image_size=28, dtype=jnp.bfloat16)
  out_bf = np.asarray(jax.jit(bf.apply)(params, x, sigma))
  out32 = np.asarray(apply(params, x, sigma))
  assert out_bf.dtype == np.float32 and np.all(np.isfinite(out_bf))
  assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda v: v.dtype == jnp.float32,
                                                       bf.init(jax.random.PRNGKey(0), x, sigma)))
  rel = np.linalg.norm(out_bf - out32) / np.linalg.norm(out32)
  assert rel < 0.1, rel


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
  cfg = dict(name="refinenet", ngf=NGF, sigma_max=1.0, sigma_min=0.01, num_scales=10)
  cfg.update(kw)
  return ml_collections.ConfigDict(cfg)


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

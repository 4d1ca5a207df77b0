"""dsm_jax.eval.ood: the synthetic OOD sets, batched scoring, the AUROC table and the tfds pairs."""
import jax
import numpy as np
import pytest

from dsm_jax.eval import metrics, ood
from dsm_jax.data import images


class _Images:
  """The part of an ImageDataset that ood_eval uses: test images in model space, scale and geometry."""

  def __init__(self, x, scale="01"):
    self._x = np.asarray(x, np.float32)
    self.shape = self._x.shape[1:]
    self.scale = scale
    self.geometry = images.Geometry(crop=0, size=0, pad=0)

  def test_images(self):
    return self._x

  def from_unit(self, u):
    return u * 2.0 - 1.0 if self.scale == "-11" else u


def _test_set(n=40, shape=(6, 6, 2), lo=0.0, hi=1.0, seed=0):
  return np.random.default_rng(seed).uniform(lo, hi, (n,) + shape).astype(np.float32)


# ------------------------------------------------------------------------------------- synthetic sets
@pytest.mark.parametrize("lo,hi", [(0.0, 1.0), (-1.0, 1.0)])
def test_synthetic_sets_shapes_and_ranges(lo, hi):
  x = _test_set(lo=lo, hi=hi)
  sets = ood.synthetic_sets(jax.random.PRNGKey(0), x, lo, hi)
  assert sorted(sets) == sorted(ood.SYNTHETIC)
  for name, s in sets.items():
    assert s.shape == x.shape and s.dtype == np.float32, name
    assert s.min() >= lo and s.max() <= hi, name
  # noise: i.i.d. over the whole range (not the data): mean near the middle, spread of a uniform
  noise = sets["noise"]
  assert abs(noise.mean() - (lo + hi) / 2) < 0.02 * (hi - lo)
  assert abs(noise.std() - (hi - lo) / np.sqrt(12)) < 0.02 * (hi - lo)
  # constant: every pixel of an image equal per channel, colours differ between images and channels
  const = sets["constant"]
  np.testing.assert_array_equal(const, np.broadcast_to(const[:, :1, :1, :], const.shape))
  assert np.unique(const[:, 0, 0, 0]).size == len(x) and not np.allclose(const[..., 0], const[..., 1])


def test_interp_is_the_mean_of_two_distinct_test_images():
  x = _test_set(n=25)
  interp = ood.synthetic_sets(jax.random.PRNGKey(3), x, 0.0, 1.0, names=("interp",))["interp"]
  flat, xf = interp.reshape(len(interp), -1), x.reshape(len(x), -1)
  pair_means = 0.5 * (xf[:, None, :] + xf[None, :, :])  # [i, j, D]
  for k in range(len(flat)):
    d = np.abs(pair_means - flat[k]).max(-1)
    i, j = np.unravel_index(np.argmin(d), d.shape)
    assert d[i, j] < 1e-6 and i != j, (k, i, j)           # (x_i + x_j) / 2 with i != j
  assert np.min(np.abs(flat[:, None, :] - xf[None]).max(-1)) > 1e-3  # never a test image itself


def test_synthetic_sets_depend_on_the_key_only():
  x = _test_set()
  a = ood.synthetic_sets(jax.random.PRNGKey(1), x, 0.0, 1.0)
  b = ood.synthetic_sets(jax.random.PRNGKey(1), x, 0.0, 1.0)
  c = ood.synthetic_sets(jax.random.PRNGKey(2), x, 0.0, 1.0)
  for name in ood.SYNTHETIC:
    np.testing.assert_array_equal(a[name], b[name])
    assert not np.allclose(a[name], c[name]), name


@pytest.mark.parametrize("x,lo,hi,names", [
    (np.zeros((1, 4, 4, 1)), 0.0, 1.0, ood.SYNTHETIC),   # N < 2: no pairs
    (np.zeros((5, 4, 4)), 0.0, 1.0, ood.SYNTHETIC),      # not [N, H, W, C]
    (np.zeros((5, 4, 4, 1)), 1.0, 1.0, ood.SYNTHETIC),   # empty range
    (np.zeros((5, 4, 4, 1)), 0.0, 1.0, ("blur",)),       # unknown set
])
def test_synthetic_sets_reject_bad_input(x, lo, hi, names):
  with pytest.raises(ValueError):
    ood.synthetic_sets(jax.random.PRNGKey(0), x, lo, hi, names)


# ------------------------------------------------------------------------------------------- scoring
def test_batched_scores_match_one_call_with_one_compiled_shape():
  x = _test_set(n=23)
  shapes = []

  def score(b):
    shapes.append(b.shape)
    return b.reshape(len(b), -1).sum(-1)

  got = ood.batched_scores(score, x, batch_size=8)
  np.testing.assert_allclose(got, x.reshape(23, -1).sum(-1), rtol=1e-6)
  assert set(shapes) == {(8,) + x.shape[1:]}  # the last batch (7 images) is padded to 8


def test_auroc_function_known_cases():
  assert metrics.auroc([3.0, 1.0], [2.0, 0.0]) == 0.75               # 3 of 4 pairs ordered
  assert metrics.auroc([1.0, 1.0], [1.0, 0.0]) == 0.75               # ties count 1/2
  assert metrics.auroc([5.0], [1.0, 2.0, 3.0]) == 1.0
  assert metrics.auroc([0.0], [1.0, 2.0]) == 0.0


def test_auroc_table_perfect_reversed_and_uninformative():
  rng = np.random.default_rng(0)
  x_in = rng.uniform(0.6, 1.0, (500, 4, 4, 1)).astype(np.float32)
  sets = {"dark": rng.uniform(0.0, 0.4, (500, 4, 4, 1)).astype(np.float32),
          "bright_copy": x_in.copy()}
  mean = lambda b: b.reshape(len(b), -1).mean(-1)  # noqa: E731
  t = ood.auroc_table(mean, x_in, sets, batch_size=128)
  assert t["auroc_dark"] == 1.0                     # a perfect separator
  assert t["auroc_bright_copy"] == 0.5              # the same images: every pair tied
  assert t["ood_score_mean_in"] > t["ood_score_mean_dark"]
  rev = ood.auroc_table(lambda b: -mean(b), x_in, sets, batch_size=128)
  assert rev["auroc_dark"] == 0.0
  noise_rng = np.random.default_rng(1)
  coin = ood.auroc_table(lambda b: noise_rng.normal(size=len(b)), x_in, sets, batch_size=128)
  assert abs(coin["auroc_dark"] - 0.5) < 0.06       # ~4 standard errors at 500 vs 500
  assert coin["ood_n_nonfinite_scores"] == 0


def test_auroc_table_counts_and_drops_nonfinite_scores():
  x_in = np.full((10, 2, 2, 1), 0.9, np.float32)
  ood_set = np.full((10, 2, 2, 1), 0.1, np.float32)
  ood_set[:3] = np.nan
  score = lambda b: b.reshape(len(b), -1).mean(-1)  # noqa: E731
  t = ood.auroc_table(score, x_in, {"s": ood_set}, batch_size=4)
  assert t["ood_n_nonfinite_scores"] == 3 and t["auroc_s"] == 1.0


# ------------------------------------------------------------------------------------------ ood_eval
def test_ood_eval_keys_and_missing_tfds_set_reported_not_computed(tmp_path):
  ds = _Images(_test_set(n=30, shape=(28, 28, 1)))
  score = lambda b: -np.abs(b - 0.5).reshape(len(b), -1).mean(-1)  # noqa: E731
  out = ood.ood_eval(score, ds, jax.random.PRNGKey(0), n=20, tfds_names=("fashion_mnist",),
                     data_dir=str(tmp_path / "empty"), batch_size=8)
  assert out["ood_fashion_mnist_not_computed"] == 1
  assert "auroc_fashion_mnist" not in out
  for name in ood.SYNTHETIC:
    assert 0.0 <= out[f"auroc_{name}"] <= 1.0, name
  # this score prefers pixels near 0.5: averages of two uniform images are nearer 0.5 than the test
  # images themselves, so the "OOD" interpolations outscore them
  assert out["auroc_interp"] < 0.1


def test_ood_eval_prepared_tfds_set_is_scored(standin_tfds):
  """A tfds set that is available is loaded in the in-distribution geometry and scored; one whose
  images cannot take the in-distribution shape (cifar10 is 32x32) is reported as not computed."""
  ds = _Images(_test_set(n=30, shape=(28, 28, 1)))
  brightness = lambda b: -b.reshape(len(b), -1).mean(-1)  # noqa: E731  (in-dist ~0.5, stand-in ~0.5 too)
  out = ood.ood_eval(brightness, ds, jax.random.PRNGKey(0), n=20, tfds_names=("mnist", "cifar10"), batch_size=8)
  assert 0.0 <= out["auroc_mnist"] <= 1.0 and np.isfinite(out["ood_score_mean_mnist"])
  assert out["ood_cifar10_not_computed"] == 1 and "auroc_cifar10" not in out
  x_mnist = ood.tfds_set("mnist", ds, None, 7)
  assert x_mnist.shape == (7, 28, 28, 1) and 0.0 <= x_mnist.min() and x_mnist.max() <= 1.0

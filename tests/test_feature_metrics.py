"""Feature-space FID/KID with the project's own classifier (dsm_jax.eval.feature_metrics), on offline digits.

The classifier is trained once for the module (about 10 s on two cores) and once more by the
corrupt-cache test, which also checks that training is deterministic; every other test loads it.
"""
import json
import logging
import os
import shutil

import numpy as np
import pytest

from configs.default import get_default_config
from dsm_jax.eval import feature_metrics as fm
from dsm_jax.data.pipeline import get_dataset


def _dataset(name, data_dir):
  c = get_default_config().data
  c.dataset = name
  c.data_dir = data_dir
  return get_dataset(c, 0)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
  return _dataset("digits", str(tmp_path_factory.mktemp("tfds")))


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
  """(cache_dir, feature_fn, test accuracy) of the digits classifier, trained into a fresh cache."""
  cache = str(tmp_path_factory.mktemp("feature_cache"))
  feature_fn, acc = fm.get_classifier(digits, cache_dir=cache)
  return cache, feature_fn, acc


def _unit(ds, split):
  return ds.to_unit(ds.train_images() if split == "train" else ds.test_images())


def _no_training(monkeypatch):
  def fail(*a, **k):
    raise AssertionError("the classifier was retrained instead of loaded from the cache")
  monkeypatch.setattr(fm, "train_classifier", fail)


def _count_training(monkeypatch):
  calls, real = [], fm.train_classifier

  def counted(*a, **k):
    calls.append(1)
    return real(*a, **k)
  monkeypatch.setattr(fm, "train_classifier", counted)
  return calls


# ------------------------------------------------------------------------------- classifier + cache
def test_classifier_accuracy_features_and_cache_files(trained, digits):
  cache, feature_fn, acc = trained
  assert acc > 0.9
  f = feature_fn(_unit(digits, "test"))
  assert f.shape == (digits.num_test, fm.FEATURE_DIM) and f.dtype == np.float32
  assert np.all(np.isfinite(f)) and f.std(0).max() > 0
  assert feature_fn(np.zeros((0,) + digits.shape, np.float32)).shape == (0, fm.FEATURE_DIM)
  # batching does not change the features
  np.testing.assert_allclose(feature_fn(_unit(digits, "test")[:7]), f[:7], rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="expected images"):
    feature_fn(np.zeros((3, 9, 9, 1), np.float32))
  files = sorted(os.listdir(cache))
  assert [os.path.splitext(n)[1] for n in files] == [".json", ".msgpack"], files  # no temporary files left
  assert files[0].startswith("digits-8x8x1-seed0-")
  with open(os.path.join(cache, files[0])) as fh:
    meta = json.load(fh)
  assert meta["test_acc"] == acc and meta["dataset"] == "digits" and meta["train_time_s"] > 0


def test_cache_hit_loads_the_same_classifier(trained, digits, monkeypatch):
  cache, feature_fn, acc = trained
  _no_training(monkeypatch)
  feature_fn2, acc2 = fm.get_classifier(digits, cache_dir=cache)
  assert acc2 == acc
  x = _unit(digits, "test")
  np.testing.assert_array_equal(feature_fn2(x), feature_fn(x))


def test_corrupt_cache_is_retrained_with_warning_and_training_is_deterministic(trained, digits, tmp_path,
                                                                                 monkeypatch, caplog):
  cache, feature_fn, acc = trained
  copy = str(tmp_path / "cache")
  shutil.copytree(cache, copy)
  path = os.path.join(copy, os.path.basename(feature_fn.cache_path))
  with open(path, "rb") as fh:
    blob = fh.read()
  with open(path, "wb") as fh:  # a write cut short
    fh.write(blob[:len(blob) // 2])
  calls = _count_training(monkeypatch)
  with caplog.at_level(logging.WARNING):
    feature_fn2, acc2 = fm.get_classifier(digits, cache_dir=copy)
  assert len(calls) == 1
  assert any("unusable" in r.getMessage() and "retraining" in r.getMessage() for r in caplog.records)
  # same seed, same data: the same parameters again
  x = _unit(digits, "test")
  assert acc2 == acc
  np.testing.assert_allclose(feature_fn2(x), feature_fn(x), rtol=1e-4, atol=1e-4)
  # the rewritten entry is whole: loaded next time
  _no_training(monkeypatch)
  np.testing.assert_array_equal(fm.get_classifier(digits, cache_dir=copy)[0](x), feature_fn2(x))


@pytest.mark.parametrize("damage", ["garbage_json", "json_without_acc", "missing_msgpack", "other_bytes",
                                    "wrong_tree"])
def test_unusable_entries_are_detected(trained, digits, tmp_path, damage):
  cache, feature_fn, _ = trained
  shutil.copytree(cache, tmp_path / "c")
  base = str(tmp_path / "c" / os.path.basename(feature_fn.cache_path)[:-len(".msgpack")])
  hyper = feature_fn.hyper
  assert fm.load_cached(base, hyper, digits.shape) is not None
  if damage == "garbage_json":
    open(base + ".json", "wb").write(b"\x00{not json")
  elif damage == "json_without_acc":
    open(base + ".json", "w").write("{}")
  elif damage == "missing_msgpack":
    os.remove(base + ".msgpack")
  elif damage == "other_bytes":  # a whole msgpack, but not the one the json describes
    open(base + ".msgpack", "wb").write(b"\x80")
  else:  # sha1 matches, but the parameters are of another network
    import flax.serialization
    blob = flax.serialization.msgpack_serialize({"conv0": {"kernel": np.zeros((3, 3, 1, 5), np.float32)}})
    meta = json.load(open(base + ".json"))
    meta["params_sha1"] = __import__("hashlib").sha1(blob).hexdigest()
    open(base + ".msgpack", "wb").write(blob)
    open(base + ".json", "w").write(json.dumps(meta))
  with pytest.raises(ValueError):
    fm.load_cached(base, hyper, digits.shape)
  os.remove(base + ".json")
  assert fm.load_cached(base, hyper, digits.shape) is None  # no entry at all: train


def test_cache_key_separates_seed_hyperparameters_and_data():
  h = fm.Hyper(num_classes=10)
  base = fm.cache_name("digits", (8, 8, 1), 0, h, "abc")
  assert base == fm.cache_name("digits", (8, 8, 1), 0, fm.Hyper(num_classes=10), "abc")
  others = [fm.cache_name("digits", (8, 8, 1), 1, h, "abc"),
            fm.cache_name("digits", (8, 8, 1), 0, fm.Hyper(num_classes=10, epochs=3), "abc"),
            fm.cache_name("digits", (8, 8, 1), 0, fm.Hyper(num_classes=10, lr=1e-3), "abc"),
            fm.cache_name("digits", (8, 8, 1), 0, h, "abd"),
            fm.cache_name("digits", (32, 32, 1), 0, h, "abc"),
            fm.cache_name("mnist5k", (8, 8, 1), 0, h, "abc")]
  assert len({base, *others}) == 7


def test_default_cache_dir_and_config_kwargs(tmp_path):
  assert fm.resolve_cache_dir(None) == os.path.expanduser("~/.cache/dsm_jax/feature_classifiers")
  assert fm.resolve_cache_dir("") == fm.resolve_cache_dir(None)
  config = get_default_config()
  kw = fm.kwargs_from_config(config)
  assert kw == {"cache_dir": None, "seed": 0, "epochs": fm.DEFAULT_EPOCHS, "max_n": fm.DEFAULT_MAX_N}
  config.eval.feature_cache_dir = str(tmp_path)
  assert fm.kwargs_from_config(config)["cache_dir"] == str(tmp_path)


def test_network_shapes_for_every_image_size():
  import jax
  import jax.numpy as jnp
  for shape in [(8, 8, 1), (28, 28, 1), (32, 32, 1), (32, 32, 3), (64, 48, 3)]:
    model = fm.Hyper(num_classes=10).model()
    out = jax.eval_shape(lambda: model.apply(model.init(jax.random.PRNGKey(0), jnp.zeros((1,) + shape)),
                                             jnp.zeros((5,) + shape)))
    assert out[0].shape == (5, fm.FEATURE_DIM) and out[1].shape == (5, 10), shape


def test_shift_augmentation():
  x = np.arange(2 * 5 * 5, dtype=np.float32).reshape(2, 5, 5, 1) + 1
  y = fm._shift_batch(x, np.random.default_rng(0), 1)
  assert y.shape == x.shape
  for a, b in zip(x, y):  # each output is the input translated by at most one pixel, zero filled
    assert any(np.array_equal(b, np.roll(np.pad(a, ((1, 1), (1, 1), (0, 0))), (dy, dx), (0, 1))[1:-1, 1:-1])
               for dy in (-1, 0, 1) for dx in (-1, 0, 1))
  assert fm._shift_batch(x, np.random.default_rng(0), 0) is x


# ------------------------------------------------------------------------------- metrics
def test_real_images_score_near_the_baseline_and_far_below_noise(trained, digits):
  cache, _, acc = trained
  train = _unit(digits, "train")
  n = digits.num_test
  rng = np.random.default_rng(123)
  real = train[rng.choice(len(train), n, replace=False)]
  noise = rng.uniform(size=(n,) + digits.shape).astype(np.float32)
  const = np.full((n,) + digits.shape, 0.5, np.float32)
  out = {k: fm.evaluate_samples(v, digits, cache_dir=cache)
         for k, v in [("real", real), ("noise", noise), ("const", const)]}
  for r in out.values():
    assert tuple(r) == fm.RESULT_KEYS
    assert r["n_nonfinite_eval"] == 0 and r["feature_classifier_test_acc"] == acc
    assert all(np.isfinite(v) for v in r.values())
  # the baseline depends only on (dataset, seed, number of samples)
  assert len({r["fid_feat_real_baseline"] for r in out.values()}) == 1
  base = out["real"]["fid_feat_real_baseline"]
  assert 0 < base < 50
  assert out["real"]["fid_feat"] < 2 * base
  for bad in ("noise", "const"):
    assert out[bad]["fid_feat"] > 10 * base and out[bad]["fid_feat"] > 10 * out["real"]["fid_feat"]
    assert out[bad]["kid_feat"] > 10 * abs(out["real"]["kid_feat"]) + 10 * abs(out["real"]["kid_feat_real_baseline"])
  # recognisable: real digits are classified confidently and in the test split's class proportions;
  # noise and a constant image are not, and each constant image falls into a single class
  real_r = out["real"]
  assert real_r["class_confident_frac"] > 0.6 and real_r["class_confident_frac_real_baseline"] > 0.6
  assert real_r["class_tv"] < 0.15 and real_r["class_tv_real_baseline"] < 0.15
  assert out["const"]["class_tv"] > 0.85  # one class of ten: 1 - 0.1 up to the label histogram
  assert out["noise"]["class_tv"] > 0.4
  assert out["noise"]["class_confident_frac"] < 0.5 * real_r["class_confident_frac"]
  assert out["const"]["class_confident_frac"] < 0.5 * real_r["class_confident_frac"]
  assert len({r["class_confident_frac_real_baseline"] for r in out.values()}) == 1
  # deterministic
  assert fm.evaluate_samples(real, digits, cache_dir=cache) == out["real"]


def test_class_stats_against_hand_computed_values():
  # rows: confident class 0, unsure between 1 and 2, confident class 2, just below the threshold for 1
  below = fm.CONFIDENT - 0.01
  logits = np.log(np.array([[0.95, 0.03, 0.02], [0.1, 0.45, 0.45], [0.0, 0.05, 0.95],
                            [(1 - below) / 2, below, (1 - below) / 2]]) + 1e-300)
  frac, tv = fm.class_stats(logits, np.array([0.5, 0.25, 0.25]))
  assert frac == 0.5  # the two rows at 0.95
  # argmax classes 0, 1 (first of the tie), 2, 1 -> histogram (0.25, 0.5, 0.25): TV = (0.25 + 0.25) / 2
  assert tv == pytest.approx(0.25)
  assert fm.class_stats(logits[[0, 0]], np.array([1.0, 0.0, 0.0])) == (1.0, 0.0)
  # shifting the logits changes nothing
  assert fm.class_stats(logits + 1e3, np.array([0.5, 0.25, 0.25])) == pytest.approx((frac, tv))


def test_nn_dist_is_zero_for_training_images_and_positive_for_held_out(trained, digits):
  cache = trained[0]
  train, test = _unit(digits, "train"), _unit(digits, "test")
  r = fm.evaluate_samples(train[:200], digits, cache_dir=cache)
  assert r["nn_dist_mean"] == 0.0
  r_test = fm.evaluate_samples(test[:200], digits, cache_dir=cache)
  assert r_test["nn_dist_mean"] > 0.1
  assert r_test["nn_dist_mean"] == r["nn_dist_real_baseline"] == r_test["nn_dist_real_baseline"]


def test_nearest_distances_match_brute_force():
  rng = np.random.default_rng(0)
  x, ref = rng.uniform(size=(37, 4, 4, 2)), rng.uniform(size=(300, 4, 4, 2))
  want = np.sqrt(((x.reshape(37, 1, -1) - ref.reshape(1, 300, -1)) ** 2).sum(-1)).min(1)
  np.testing.assert_allclose(fm.nearest_distances(x, ref, chunk=16), want, rtol=1e-5)
  np.testing.assert_array_equal(fm.nearest_distances(ref[::7], ref), 0.0)
  np.testing.assert_allclose(fm.nearest_distances(x, ref[:2]), np.sqrt(
      ((x.reshape(37, 1, -1) - ref[:2].reshape(1, 2, -1)) ** 2).sum(-1)).min(1), rtol=1e-5)


def test_non_finite_samples_are_dropped_and_counted(trained, digits):
  cache, _, acc = trained
  x = _unit(digits, "train")[:60].copy()
  x[3, 0, 0, 0], x[10, 2, 5, 0], x[40] = np.nan, np.inf, -np.inf
  r = fm.evaluate_samples(x, digits, cache_dir=cache)
  assert r["n_nonfinite_eval"] == 3
  assert r == fm.evaluate_samples(np.delete(x, [3, 10, 40], axis=0), digits, cache_dir=cache) | {
      "n_nonfinite_eval": 3}
  # samples outside [0, 1] are clipped, flat samples reshaped
  assert fm.evaluate_samples(x.reshape(60, -1) * 2 - 0.5, digits, cache_dir=cache)["n_nonfinite_eval"] == 3
  for keep in (0, 1):
    y = np.full((5,) + digits.shape, np.nan, np.float32)
    y[:keep] = 0.5
    r = fm.evaluate_samples(y, digits, cache_dir=cache)
    assert r["n_nonfinite_eval"] == 5 - keep and r["feature_classifier_test_acc"] == acc
    assert all(np.isnan(r[k]) for k in fm.RESULT_KEYS[:6])
  with pytest.raises(ValueError, match="not"):
    fm.evaluate_samples(np.zeros((4, 7, 7, 1)), digits, cache_dir=cache)


def test_max_n_caps_the_samples(trained, digits):
  cache = trained[0]
  x = _unit(digits, "train")[::3][:150]
  assert fm.evaluate_samples(x, digits, cache_dir=cache, max_n=100) == fm.evaluate_samples(
      x[:100], digits, cache_dir=cache)


def test_dataset_without_labels_gives_nan_fid_but_nn_dist(digits, tmp_path):
  class Unlabelled:
    name, shape = "unlabelled", digits.shape
    train_images, test_images, to_unit = digits.train_images, digits.test_images, digits.to_unit
    num_test = digits.num_test

    def train_labels(self):
      return None

    test_labels = train_labels

  with pytest.raises(fm.NoLabelsError):
    fm.get_classifier(Unlabelled(), cache_dir=str(tmp_path))
  r = fm.evaluate_samples(_unit(digits, "train")[:20], Unlabelled(), cache_dir=str(tmp_path))
  assert np.isnan(r["fid_feat"]) and np.isnan(r["feature_classifier_test_acc"])
  assert r["nn_dist_mean"] == 0.0 and r["nn_dist_real_baseline"] > 0


@pytest.mark.slow
def test_mnist5k_classifier_and_metrics(tmp_path):
  ds = _dataset("mnist5k", str(tmp_path / "tfds"))
  cache = str(tmp_path / "cache")
  _, acc = fm.get_classifier(ds, cache_dir=cache)
  assert acc > 0.95
  train = _unit(ds, "train")
  rng = np.random.default_rng(0)
  real = fm.evaluate_samples(train[rng.choice(len(train), 500, replace=False)], ds, cache_dir=cache)
  noise = fm.evaluate_samples(rng.uniform(size=(500,) + ds.shape), ds, cache_dir=cache)
  assert real["fid_feat"] < 2 * real["fid_feat_real_baseline"] < noise["fid_feat"] / 10

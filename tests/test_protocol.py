"""The papers' evaluation protocol (dsm_jax/eval/protocol.py): the Inception Score formula on logits with known
answers, the resumable on-disk sampler (an interrupted or killed run continues at the next batch and ends with
the set an uninterrupted run draws), and the runner's protocol path (reference statistics cached once, FID of
the protocol set equal to the Frechet distance of its features, IS only with a logits file, eval figures in
TensorBoard at the evaluated step). The runner test replaces the Inception network by a fixed random projection
(the real network on CPU takes ~0.5 s per image; docs/RESULTS.md records the protocol with the real weights)."""
import importlib
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from dsm_jax import run_lib, sampling, tensorboard
from dsm_jax.eval import fid, inception, protocol

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------------- Inception Score
def test_inception_score_known_answers():
  k = 7
  same = np.tile(np.random.default_rng(0).normal(size=(1, k)), (70, 1))
  assert fid.inception_score(same, 10) == pytest.approx((1.0, 0.0), abs=1e-9)
  onehot = 60.0 * np.eye(k)[np.arange(70) % k]  # every split of 7 rows covers the 7 classes once
  mean, std = fid.inception_score(onehot, 10)
  assert mean == pytest.approx(k, rel=1e-6) and std == pytest.approx(0.0, abs=1e-6)
  half = 60.0 * np.eye(k)[np.arange(80) % 2]  # two classes, equally often in every split: IS 2
  assert fid.inception_score(half, 10)[0] == pytest.approx(2.0, rel=1e-6)


def test_inception_score_is_exp_mean_kl():
  z = np.random.default_rng(1).normal(size=(40, 5)) * 2
  p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
  py = p.mean(0)
  want = np.exp(np.mean(np.sum(p * np.log(p / py), axis=1)))
  assert fid.inception_score(z, 1) == pytest.approx((want, 0.0), rel=1e-10)
  with pytest.raises(ValueError, match="n_splits"):
    fid.inception_score(z[:3], 10)


# ------------------------------------------------------------------------------- resumable sampling
def _draw(calls):
  def draw_batch(key, n):
    calls.append(n)
    return {"x": np.asarray(jax.random.normal(key, (n, 3))), "i": np.full(n, len(calls))}
  return draw_batch


def test_sample_to_disk_resumes_after_an_interruption(tmp_path):
  key = jax.random.PRNGKey(3)
  whole = str(tmp_path / "whole")
  sampling.sample_to_disk(_draw([]), key, 10, 3, whole, {"step": 1}, progress=False)
  want = sampling.load_batches(whole, 10, 3, "x")
  ref = sampling.sample_in_batches(lambda p, k, n: {"x": jax.random.normal(k, (n, 3))}, None, key, 10, 3)["x"]
  np.testing.assert_array_equal(want, ref)  # the batch keys of sample_in_batches

  calls = []
  draw = _draw(calls)

  def dies_at_batch_2(k, n):
    if len(calls) == 2:
      raise KeyboardInterrupt
    return draw(k, n)

  part = str(tmp_path / "part")
  with pytest.raises(KeyboardInterrupt):
    sampling.sample_to_disk(dies_at_batch_2, key, 10, 3, part, {"step": 1}, progress=False)
  assert sampling.complete_batches(part, 10, 3) == 2
  calls.clear()
  assert sampling.sample_to_disk(draw, key, 10, 3, part, {"step": 1}, progress=False) == 2  # batches 2 and 3
  assert calls == [3, 1]
  np.testing.assert_array_equal(sampling.load_batches(part, 10, 3, "x"), want)
  assert sampling.sample_to_disk(draw, key, 10, 3, part, {"step": 1}, progress=False) == 0  # complete: nothing


def test_sample_set_of_another_run_is_named(tmp_path):
  out = str(tmp_path / "s")
  sampling.sample_to_disk(_draw([]), jax.random.PRNGKey(0), 4, 2, out, {"step": 1}, progress=False)
  with pytest.raises(sampling.SampleSetMismatch, match="step: 1 on disk, 2 now"):
    sampling.sample_to_disk(_draw([]), jax.random.PRNGKey(0), 4, 2, out, {"step": 2}, progress=False)


_KILLED = """
import sys, time, jax, numpy as np
from dsm_jax import sampling
def draw(key, n):
  time.sleep(float(sys.argv[2]))
  return {"x": np.asarray(jax.random.normal(key, (n, 3)))}
sampling.sample_to_disk(draw, jax.random.PRNGKey(5), 12, 2, sys.argv[1], {"step": 0}, progress=False)
"""


def test_sample_to_disk_resumes_after_sigkill(tmp_path):
  """A process killed (SIGKILL: no cleanup) after k >= 2 complete batches: the rerun draws only batches k.., and
  the set equals an uninterrupted run's."""
  out = str(tmp_path / "killed")
  env = {**os.environ, "PYTHONPATH": REPO}
  p = subprocess.Popen([sys.executable, "-c", _KILLED, out, "0.4"], env=env, cwd=REPO)
  deadline = time.time() + 120
  while sampling.complete_batches(out, 12, 2) < 2 and time.time() < deadline and p.poll() is None:
    time.sleep(0.05)
  p.send_signal(signal.SIGKILL)
  p.wait()
  k = sampling.complete_batches(out, 12, 2)
  assert 2 <= k < 6, k
  calls = []
  drawn = sampling.sample_to_disk(_draw(calls), jax.random.PRNGKey(5), 12, 2, out, {"step": 0}, progress=False)
  assert drawn == 6 - k and len(calls) == 6 - k
  whole = str(tmp_path / "whole")
  sampling.sample_to_disk(_draw([]), jax.random.PRNGKey(5), 12, 2, whole, {"step": 0}, progress=False)
  np.testing.assert_array_equal(sampling.load_batches(out, 12, 2, "x"), sampling.load_batches(whole, 12, 2, "x"))


# -------------------------------------------------------------------------------- the runner's path
FAKE_DIM = 16


@pytest.fixture
def fake_inception(monkeypatch, tmp_path):
  """Inception replaced by a fixed random projection of the 8-bit pixels to FAKE_DIM features; counts images."""
  weights = tmp_path / "weights.pt"
  weights.write_bytes(b"fake weights")
  seen = []

  def features(params, images, batch_size=50, quantize=True):
    x = np.asarray(images)
    assert x.dtype == np.uint8 and x.shape[-1] == 3
    seen.append(len(x))
    proj = np.random.default_rng(0).normal(size=(int(np.prod(x.shape[1:])), FAKE_DIM))
    return (x.reshape(len(x), -1) / 255.0 @ proj).astype(np.float32)

  monkeypatch.setattr(inception, "FEATURE_DIM", FAKE_DIM)
  monkeypatch.setattr(inception, "features", features)
  monkeypatch.setattr(protocol, "inception_weights", lambda config: (str(weights), None))
  return seen


def _tiny(tmp_path, **over):
  c = importlib.import_module("configs.ncsn_mnist5k").get_config()
  c.data.dataset, c.data.data_dir = "digits", str(tmp_path / "tfds")
  c.model.channels = (4, 8, 8)
  t = c.training
  t.n_iters, t.batch_size, t.log_every, t.ckpt_every, t.steps_per_call = 2, 4, 1, 2, 1
  c.runtime.progress, c.runtime.cpu_devices = False, 0
  s = c.sampling
  s.n_samples, s.batch_size, s.n_steps_each = 4, 4, 1
  c.eval.feature_cache_dir = str(tmp_path / "features")
  c.eval.fid_n, c.eval.fid_batch_size, c.eval.fid_stats_dir = 10, 4, str(tmp_path / "stats")
  for k, v in over.items():
    node = c
    *path, leaf = k.split(".")
    for p in path:
      node = node[p]
    node[leaf] = v
  return c


def test_protocol_evaluate_caches_statistics_and_features(tmp_path, fake_inception):
  """protocol.evaluate with a stand-in sampler on the real digits data: the reference statistics are computed once
  and cached, the FID is the Frechet distance between the features of the set on disk and of the training split,
  a rerun reuses the per-batch features, and the IS comes only from a logits file."""
  from types import SimpleNamespace
  from configs.default import get_default_config
  from dsm_jax.data import ImageDataset
  c = get_default_config("ncsn")
  c.data.dataset, c.data.data_dir = "digits", str(tmp_path / "tfds")
  c.eval.fid_n, c.eval.fid_batch_size, c.eval.fid_stats_dir = 10, 4, str(tmp_path / "stats")
  ds = ImageDataset(c.data, 0)
  draw = jax.jit(lambda p, k, n: {"x": jax.random.uniform(k, (n, 8, 8, 1)) * p}, static_argnums=2)
  method = SimpleNamespace(draw=draw, main_draw=None)
  res = protocol.evaluate(c, method, ds, 1.0, jax.random.PRNGKey(0), str(tmp_path / "out"), 3, progress=False)
  assert fake_inception == [100] * 14 + [38, 4, 4, 2]  # the training split in chunks, then the 3 sample batches
  x = sampling.load_batches(str(tmp_path / "out" / "samples" / "fid_10"), 10, 4, "x")
  feats = lambda a: inception.features(None, np.repeat(a, 3, -1))
  want = fid.fid_from_features(feats(x), feats(ds.split_uint8("train")))
  assert res["protocol_fid"] == pytest.approx(want, rel=1e-9)
  assert (res["protocol_n"], res["protocol_ref_n"], res["protocol_ref_split"]) == (10, 1438, "train")
  assert res["protocol_inception_score"] == protocol.NOT_COMPUTED
  w = np.random.default_rng(2).normal(size=(FAKE_DIM, 5))
  np.savez(tmp_path / "logits.npz", w=w)
  c.eval.inception_logits_path = str(tmp_path / "logits.npz")
  fake_inception.clear()
  res2 = protocol.evaluate(c, method, ds, 1.0, jax.random.PRNGKey(0), str(tmp_path / "out"), 3, progress=False)
  assert fake_inception == [] and res2["protocol_fid"] == res["protocol_fid"]
  assert res2["protocol_inception_score"] == pytest.approx(fid.inception_score(feats(x) @ w, 10)[0], rel=1e-9)
  with pytest.raises(sampling.SampleSetMismatch, match="step: 3 on disk, 4 now"):  # another checkpoint's set
    protocol.evaluate(c, method, ds, 1.0, jax.random.PRNGKey(0), str(tmp_path / "out"), 4, progress=False)


def test_eval_figures_go_to_tensorboard_at_the_evaluated_step(tmp_path):
  test_runner = importlib.import_module("tests.test_runner")
  wd = str(tmp_path / "toy")
  res = run_lib.run(test_runner.tiny("ncsn_toy", **{"data.dataset": "moons", "sampling.langevin_compare": False}), wd)
  tags = tensorboard.read_scalars(os.path.join(wd, "tensorboard"))
  numbers = {k: v for k, v in res.items() if k != "step" and isinstance(v, (int, float)) and np.isfinite(v)}
  assert numbers and all(tags[f"eval/{k}"] == [(20, pytest.approx(v, rel=1e-6))] for k, v in numbers.items())


@pytest.mark.slow  # trains, samples and evaluates a tiny NCSN on digits (about a minute on 2 cores)
def test_runner_protocol_fid_stats_cache_and_tensorboard(tmp_path, fake_inception):
  c = _tiny(tmp_path)
  st = run_lib.run(c, "", mode="fid_stats")
  assert st["fid_stats_split"] == "train" and st["fid_stats_n"] == 1438  # digits' training split
  assert os.path.dirname(st["fid_stats_path"]) == str(tmp_path / "stats") and "digits-8x8x1" in st["fid_stats_path"]
  assert fake_inception == [100] * 14 + [38]
  fake_inception.clear()
  wd = str(tmp_path / "run")
  res = run_lib.run(c, wd)
  assert sum(fake_inception) == 10  # the statistics come from the cache; the 10 protocol samples are new
  d = os.path.join(wd, "samples", "fid_10")
  assert sorted(f for f in os.listdir(d) if f.startswith("batch_")) == [f"batch_{i:06d}.npz" for i in range(3)]
  x = sampling.load_batches(d, 10, 4, "x")
  assert x.shape == (10, 8, 8, 1) and x.dtype == np.uint8
  ds = run_lib.data_lib.get_dataset(c.data, c.seed)
  feats = lambda a: inception.features(None, np.repeat(a, 3, -1))
  want = fid.fid_from_features(feats(x), feats(ds.split_uint8("train")))
  assert res["protocol_fid"] == pytest.approx(want, rel=1e-6)
  assert (res["protocol_n"], res["protocol_ref_n"], res["protocol_ref_split"]) == (10, 1438, "train")
  assert res["protocol_inception_score"] == res["inception_score"] == protocol.NOT_COMPUTED
  ev = json.load(open(os.path.join(wd, "eval.json")))
  assert ev["protocol_fid"] == pytest.approx(want, rel=1e-6) and "fid_feat" in ev
  tags = tensorboard.read_scalars(os.path.join(wd, "tensorboard"))
  assert tags["eval/protocol_fid"] == [(2, pytest.approx(want, rel=1e-5))]
  assert tags["eval/fid_feat"][0][0] == 2 and "eval/protocol_inception_score" not in tags

  # eval again with an Inception softmax layer: features come from the per-batch cache, IS from the logits
  w = np.random.default_rng(2).normal(size=(FAKE_DIM, 5))
  np.savez(tmp_path / "logits.npz", w=w)
  fake_inception.clear()
  res2 = run_lib.run(_tiny(tmp_path, **{"eval.inception_logits_path": str(tmp_path / "logits.npz")}), wd, mode="eval",
                     outdir=wd)
  assert fake_inception == []
  assert res2["protocol_fid"] == pytest.approx(want, rel=1e-9)
  assert res2["protocol_inception_score"] == pytest.approx(fid.inception_score(feats(x) @ w, 10)[0], rel=1e-6)


def test_protocol_mistakes_are_one_line(tmp_path, fake_inception):
  with pytest.raises(run_lib.RunError, match="fid_ref_split='val'"):
    run_lib.run(_tiny(tmp_path, **{"eval.fid_ref_split": "val"}), "", mode="fid_stats")
  (tmp_path / "bad.npz").write_bytes(b"not an npz")
  c = _tiny(tmp_path, **{"eval.inception_logits_path": str(tmp_path / "bad.npz"), "eval.fid_n": 2,
                         "eval.fid_batch_size": 2})
  with pytest.raises(run_lib.RunError, match="inception_logits_path=.*not an .npz"):
    run_lib.run(c, str(tmp_path / "r"))

"""NCSN on images: the paper configs (values, and that each starts, trains and samples at tiny widths
on stand-in data), the CPU U-Net, TensorBoard logs, and the CPU device split."""
import importlib
import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dsm_jax import models, platform, run_lib, sigmas as sigmas_lib, tensorboard, train
from dsm_jax.models.cond_unet import CondUNet
from dsm_jax.validation import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER = {"ncsn_mnist": ("mnist", (28, 28, 1)), "ncsn_cifar10": ("cifar10", (32, 32, 3)),
         "ncsn_celeba": ("celeb_a", (32, 32, 3))}
LADDER = tuple(float(s) for s in sigmas_lib.geometric(1.0, 0.01, 10))


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_values(name):
  c = importlib.import_module(f"configs.{name}").get_config()
  assert c.method == "ncsn" and c.data.dataset == PAPER[name][0]
  m, t, s = c.model, c.training, c.sampling
  assert (m.sigma_max, m.sigma_min, m.num_scales, m.anneal_power) == (1.0, 0.01, 10, 2.0)
  assert (t.batch_size, t.lr, t.n_iters, t.optimizer) == (128, 1e-3, 200000, "adam")
  assert (s.eps, s.n_steps_each, s.convention, s.init_range) == (2e-5, 100, "code", (0.0, 1.0))
  assert m.name == "refinenet" and c.data.scale == "01"
  assert c.data.dequantize  # the reference trains and tests on X / 256 * 255 + U / 256
  assert s.method == "annealed_langevin"  # Alg. 1; annealed_mala is the option


def tiny(name, **over):
  c = importlib.import_module(f"configs.{name}").get_config()
  if c.model.name == "refinenet":
    c.model.ngf = 4
  else:
    c.model.channels = (4, 8, 8)
  t = c.training
  t.n_iters, t.batch_size, t.log_every, t.ckpt_every, t.steps_per_call = 2, 4, 1, 2, 1
  c.runtime.progress = False
  s = c.sampling
  s.n_samples, s.batch_size, s.n_steps_each = 4, 4, 1
  c.eval.enabled = False
  for k, v in over.items():
    node = c
    *path, leaf = k.split(".")
    for p in path:
      node = node[p]
    node[leaf] = v
  return c


@pytest.mark.slow  # tests/test_configs.py runs these configs through the CLI in every CI run
@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_config_trains_and_samples(name, standin_tfds, tmp_path):
  c = tiny(name)
  wd = str(tmp_path / name)
  run_lib.run(c, wd)
  x = np.load(f"{wd}/samples/samples.npz")["x"]
  chex.assert_shape(x, (4,) + PAPER[name][1])
  assert np.all(np.isfinite(x)) and x.min() >= 0.0 and x.max() <= 1.0
  rows = [json.loads(l) for l in open(f"{wd}/metrics.jsonl")]
  assert [r["step"] for r in rows] == [1, 2] and all(np.isfinite(r["loss"]) for r in rows)
  pngs = [f for f in os.listdir(f"{wd}/samples") if f.endswith(".png")]
  assert pngs, "no sample grid written"


def test_annealed_mala_on_images_reports_acceptance(tmp_path, monkeypatch):
  """sampling.method = 'annealed_mala' samples images in [0, 1] and reports its acceptance per chain and level
  (samples/mala_accept.npz [N, L]) and in eval.json (overall and per level) beside the image metrics."""
  from dsm_jax.eval import images as image_eval
  monkeypatch.setattr(image_eval, "evaluate", lambda config, dataset, x: {"n_images": float(len(x))})
  c = tiny("ncsn_mnist5k", **{"sampling.method": "annealed_mala", "eval.enabled": True})
  wd = str(tmp_path / "mala")
  res = run_lib.run(c, wd)
  x = np.load(f"{wd}/samples/samples.npz")["x"]
  acc = np.load(f"{wd}/samples/mala_accept.npz")["x"]
  assert x.shape == (4, 28, 28, 1) and x.min() >= 0.0 and x.max() <= 1.0
  assert acc.shape == (4, 10) and np.all((acc >= 0) & (acc <= 1))
  assert res["mala_accept_rate"] == pytest.approx(float(acc.mean()), rel=1e-6) and res["n_images"] == 4
  assert [res[f"mala_accept_level_{i}"] for i in range(10)] == pytest.approx(acc.mean(0).tolist(), rel=1e-6)
  with pytest.raises(ConfigError, match="sampling.method"):
    run_lib.prepare(tiny("ncsn_mnist5k", **{"sampling.method": "mala"}), str(tmp_path / "bad"))


@pytest.mark.parametrize("size,c", [(28, 1), (32, 3), (64, 3), (8, 1)])
def test_cond_unet_shapes_and_conditioning(size, c):
  net = CondUNet(sigmas=LADDER, channels=(4, 8, 8), num_channels=c)
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, size, size, c))
  params = net.init(jax.random.PRNGKey(1), x, jnp.full((2,), 0.1))
  out_hi = net.apply(params, x, jnp.full((2,), LADDER[0]))
  out_lo = net.apply(params, x, jnp.full((2,), LADDER[-1]))
  chex.assert_shape(out_hi, x.shape)
  chex.assert_tree_all_finite((out_hi, out_lo))
  # output / sigma (NCSNv2): a 100x smaller sigma gives a much larger score
  assert float(jnp.abs(out_lo).mean()) > 10 * float(jnp.abs(out_hi).mean())
  raw = CondUNet(sigmas=LADDER, channels=(4, 8, 8), num_channels=c, scale_by_sigma=False)
  r1, r2 = raw.apply(params, x, jnp.full((2,), LADDER[0])), raw.apply(params, x, jnp.full((2,), LADDER[3]))
  assert not np.allclose(r1, r2), "the noise level must change the output (CondInstanceNorm++ per level)"


def test_cond_unet_gaussian_skip_is_the_score_of_the_image_mean():
  """With the network's own output zeroed, gaussian_skip leaves exactly the score of
  mean(x~) ~ N(m, tau^2 + sigma^2 / N) along the constant image, at every pixel; with the network on,
  the skip adds that term and nothing else (the rest is F / sigma)."""
  m_, tau = 0.13, 0.04
  skip = CondUNet(sigmas=LADDER, channels=(4, 8, 8), num_channels=1, gaussian_skip=True, skip_mean=m_, skip_std=tau)
  plain = CondUNet(sigmas=LADDER, channels=(4, 8, 8), num_channels=1, scale_by_sigma=True)
  x = jax.random.uniform(jax.random.PRNGKey(0), (3, 8, 8, 1)) * jnp.array([0.2, 0.6, 1.0])[:, None, None, None]
  sig = jnp.array([1.0, 0.1, 0.01])
  params = skip.init(jax.random.PRNGKey(1), x, sig)
  zero = jax.tree_util.tree_map_with_path(
      lambda p, v: jnp.zeros_like(v) if "end_conv" in jax.tree_util.keystr(p) else v, params)
  n = 8 * 8
  # the Gaussian's score, by autodiff of its log-density in the mean
  logp = lambda v, s: -0.5 * (jnp.mean(v) - m_) ** 2 / (tau ** 2 + s ** 2 / n)  # noqa: E731
  want = jnp.stack([jax.grad(logp)(x[i], sig[i]) for i in range(3)])
  np.testing.assert_allclose(skip.apply(zero, x, sig), want, rtol=1e-5, atol=1e-6)
  # a brighter-than-data image is pulled darker, a darker one brighter
  assert float(want[2].mean()) < 0 and float(jnp.mean(x[2])) > m_
  np.testing.assert_allclose(skip.apply(params, x, sig) - plain.apply(params, x, sig), want, rtol=1e-4, atol=1e-4)


def test_cond_unet_rejects_bad_input():
  net = CondUNet(sigmas=LADDER, channels=(4, 8, 8), num_channels=1)
  with pytest.raises(ValueError, match="divisible by 4"):
    net.init(jax.random.PRNGKey(0), jnp.zeros((1, 30, 30, 1)), jnp.ones((1,)))
  with pytest.raises(ValueError, match="channels|shape"):
    net.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 3)), jnp.ones((1,)))


@pytest.mark.parametrize("over,shape,key", [
    ({"channels": (4, 8)}, (28, 28, 1), "model.channels"),
    ({"channels": (4, 0, 8)}, (28, 28, 1), "model.channels"),
    ({}, (30, 30, 1), "data.image_size"),
    ({}, (2,), "model.name"),
    ({"dtype": "float16"}, (28, 28, 1), "model.dtype"),
    ({"gaussian_skip": 1}, (28, 28, 1), "model.gaussian_skip"),
    ({"skip_std": 0.0}, (28, 28, 1), "model.skip_std"),
    ({"skip_mean": "dark"}, (28, 28, 1), "model.skip_mean"),
])
def test_get_model_cond_unet_errors_name_the_key(over, shape, key):
  m = models.section("cond_unet", channels=(4, 8, 8))
  with m.ignore_type():
    m.update(over)
  with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
    models.build(m, shape, sigmas=LADDER)


def test_mnist5k_cpu_config_is_the_paper_recipe_on_a_unet():
  c = importlib.import_module("configs.ncsn_mnist5k").get_config()
  assert c.data.dataset == "mnist5k" and c.model.name == "cond_unet"
  assert (c.model.sigma_max, c.model.sigma_min, c.model.num_scales) == (1.0, 0.01, 10)
  assert (c.sampling.eps, c.sampling.n_steps_each, c.sampling.convention) == (1e-5, 100, "code")  # half the paper's step
  assert c.training.batch_size % max(c.runtime.cpu_devices, 1) == 0


def test_tensorboard_scalars_and_images(tmp_path):
  c = tiny("ncsn_mnist5k", **{"training.n_iters": 4, "training.log_every": 2})
  wd = str(tmp_path / "tb")
  run_lib.run(c, wd)
  tags = tensorboard.read_scalars(f"{wd}/tensorboard")
  rows = [json.loads(l) for l in open(f"{wd}/metrics.jsonl")]
  assert [s for s, _ in tags["loss"]] == [r["step"] for r in rows] == [2, 4]
  np.testing.assert_allclose([v for _, v in tags["loss"]], [r["loss"] for r in rows], rtol=1e-6)
  assert any(t.startswith("samples/") for t in tags), sorted(tags)
  off = tiny("ncsn_mnist5k", **{"runtime.tensorboard": False})
  run_lib.run(off, str(tmp_path / "off"))
  assert not os.path.exists(tmp_path / "off" / "tensorboard")


def test_cpu_devices_splits_the_host(tmp_path):
  code = ("import jax; from configs.default import get_default_config; from dsm_jax import platform; "
          "c = get_default_config(); c.runtime.cpu_devices = 3; platform.setup(c); print(jax.local_device_count())")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
  assert out.stdout.strip().splitlines()[-1] == "3"
  from configs.default import get_default_config
  c = get_default_config()
  c.runtime.cpu_devices = -1
  with pytest.raises(ConfigError, match="runtime.cpu_devices"):
    platform.setup(c)


IMAGE_SHARDED_SCRIPT = r"""
import os, sys, json
import jax, numpy as np
sys.path.insert(0, {repo!r})
import importlib
from dsm_jax import platform, run_lib, train
assert jax.local_device_count() == 8, jax.local_device_count()
out = {{}}
for n, mode in ((1, "loop"), (8, "loop"), (1, "scan"), (8, "auto")):
  cfg = importlib.import_module("configs.ncsn_mnist5k").get_config()
  cfg.data.dataset = "digits"
  cfg.model.channels = (4, 8, 8)
  t = cfg.training
  t.n_iters, t.batch_size, t.steps_per_call, t.log_every, t.ckpt_every = 6, 16, 3, 3, 6
  r = cfg.runtime
  r.num_devices, r.cpu_devices, r.chunk_mode, r.progress, r.tensorboard = n, 0, mode, False, False
  wd = os.path.join({tmp!r}, f"d{{n}}_{{mode}}")
  ds, m = run_lib.prepare(cfg, wd)
  res = train.train(cfg, wd, m, ds, progress=False)
  key = f"{{n}}_{{mode}}"
  out[key] = [np.asarray(l) for l in jax.tree_util.tree_leaves(res.params)]
  out["loss" + key] = [json.loads(l)["loss"] for l in open(os.path.join(wd, "metrics.jsonl"))]
  out["mode" + key] = platform.chunk_mode(cfg, host_fed=True)
ref = out["1_loop"]
diff = {{k: max(float(np.max(np.abs(a - b))) for a, b in zip(ref, out[k])) for k in ("8_loop", "1_scan", "8_auto")}}
print(json.dumps({{"diff": diff, "losses": {{k: v for k, v in out.items() if k.startswith("loss")}},
                   "auto": out["mode8_auto"]}}))
"""


def test_image_training_sharded_and_chunk_modes_agree(tmp_path):
  """The conv U-Net on 8x8 digits: 8 simulated devices == 1 device, and one compiled step per call ('loop',
  the CPU default for images) == steps fused in a lax.scan ('scan'), for the same global batch and keys."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-c", IMAGE_SHARDED_SCRIPT.format(repo=REPO, tmp=str(tmp_path))],
                     cwd=REPO, capture_output=True, text=True, env=env, timeout=900)
  assert r.returncode == 0, r.stderr[-3000:]
  res = json.loads(r.stdout.strip().splitlines()[-1])
  assert res["auto"] == "loop"
  for k, d in res["diff"].items():
    assert d < 1e-4, (k, res)
  l = res["losses"]
  for k in ("loss8_loop", "loss1_scan", "loss8_auto"):
    np.testing.assert_allclose(l["loss1_loop"], l[k], rtol=1e-4)
  assert len(l["loss1_loop"]) == 2


def test_chunk_mode_is_validated():
  cfg = importlib.import_module("configs.ncsn_mnist5k").get_config()
  cfg.runtime.chunk_mode = "unrolled"
  with pytest.raises(ConfigError, match="runtime.chunk_mode"):
    platform.validate(cfg)
  cfg.runtime.chunk_mode = "loop"
  assert platform.chunk_mode(cfg, host_fed=False) == "scan"  # data drawn in the step (toys) always scans
  assert platform.chunk_mode(cfg, host_fed=True) == "loop"


def _digits_unet(n_iters):
  cfg = importlib.import_module("configs.ncsn_mnist5k").get_config()
  cfg.data.dataset = "digits"
  cfg.model.channels = (4, 8, 8)
  t = cfg.training
  t.n_iters, t.batch_size, t.steps_per_call, t.log_every, t.ckpt_every = n_iters, 8, 2, 2, 2
  cfg.runtime.cpu_devices, cfg.runtime.progress, cfg.runtime.tensorboard = 0, False, False
  t.schedule = "constant"  # the config's cosine decay depends on n_iters, which this test changes
  cfg.sampling.n_samples, cfg.sampling.batch_size, cfg.sampling.n_steps_each = 4, 4, 1
  cfg.eval.enabled = False
  return cfg


def test_image_resume_in_loop_mode_equals_straight_run(tmp_path):
  """chunk_mode 'loop' (the CPU default for images): 4 steps, then the same workdir to 6, is bit-identical
  (params, EMA, Adam state, key) to a straight 6-step run, and metrics.jsonl has the same rows."""
  assert platform.chunk_mode(_digits_unet(6), host_fed=True) == "loop"
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  run_lib.run(_digits_unet(6), straight)
  run_lib.run(_digits_unet(4), resumed)
  run_lib.run(_digits_unet(6), resumed)
  leaves = []
  for wd in (straight, resumed):
    _, method = run_lib.prepare(_digits_unet(6), wd)
    step, state = train.load_latest(_digits_unet(6), wd, method)
    assert step == 6
    leaves.append(jax.tree_util.tree_leaves({k: state[k] for k in ("nets", "key")}))
  for a, b in zip(*leaves):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  rows = [[json.loads(l)["loss"] for l in open(os.path.join(wd, "metrics.jsonl"))] for wd in (straight, resumed)]
  assert rows[0] == rows[1] and len(rows[0]) == 3

"""Every experiment config in configs/ runs the way the command line runs it: `experiments.run` parses the
file into the locked ConfigDict, applies --config.* overrides that shrink it (widths, steps, samples), then
trains, samples and evaluates. tfds datasets, which cannot be downloaded here, are read through the real tfds
builders (celeb_a, cifar10, svhn_cropped, fashion_mnist, mnist) with tfds.testing.mock_data's random examples
and put through each config's geometry (tests/conftest.py's `mock_tfds`)."""
import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dsm_jax.data.images import IMAGE_DATASETS, example_shape
from experiments import run as cli_module

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO, "configs")
# files in configs/ that only hold shared settings for the experiment configs (no get_config)
BASES = {"__init__", "default", "ncsn_images", "mdsm_images", "dde_images", "debm_images"}


# (dataset, image_size, pad_to) of the image configs -> the shape the model sees: CelebA centre-cropped to 140 and
# resized (NCSN, MDSM: 32; Denoising-EBM: 64), 28x28 sets padded to 32 by MDSM, native otherwise
GEOMETRY = {("celeb_a", 32, 0): (32, 32, 3), ("celeb_a", 64, 0): (64, 64, 3), ("cifar10", 0, 0): (32, 32, 3),
            ("svhn_cropped", 0, 0): (32, 32, 3), ("fashion_mnist", 0, 32): (32, 32, 1),
            ("fashion_mnist", 0, 0): (28, 28, 1), ("mnist", 0, 0): (28, 28, 1), ("mnist5k", 0, 0): (28, 28, 1),
            ("mnist", 0, 32): (32, 32, 1), ("mnist5k", 0, 32): (32, 32, 1)}


def experiment_configs() -> list:
  names = sorted(f[:-3] for f in os.listdir(CONFIG_DIR) if f.endswith(".py"))
  return [n for n in names if n not in BASES]


def test_every_config_file_is_an_experiment_or_a_known_base():
  for name in experiment_configs():
    assert hasattr(importlib.import_module(f"configs.{name}"), "get_config"), name
  for name in BASES - {"__init__"}:
    assert not hasattr(importlib.import_module(f"configs.{name}"), "get_config"), name


def _toy_sampler(s) -> dict:
  if "n_steps_each" in s:  # annealed Langevin
    return {"sampling.n_steps_each": 1}
  return {"sampling.n_flat": 1, "sampling.n_decay": 2, "sampling.n_cool": 1}


def tiny_overrides(name: str, cache_dir: str) -> dict:
  """--config.* overrides that make `name` run in seconds: small widths, 2-4 steps, a few samples."""
  c = importlib.import_module(f"configs.{name}").get_config()
  m, t, s, e = c.model, c.training, c.sampling, c.eval
  o = {"training.log_every": 1, "training.ckpt_every": 2, "training.steps_per_call": 1,
       "runtime.progress": False, "training.n_iters": 2, "eval.feature_cache_dir": cache_dir,
       "eval.fid_n": 0}  # the protocol's Inception pass is tested in tests/test_protocol.py
  method = c.method
  if method in ("ncsn", "dsm", "esm", "ssm", "mdsm"):
    o["training.batch_size"] = 8
    o["sampling.n_samples"] = 8
    if "batch_size" in s:
      o["sampling.batch_size"] = 4 if s.batch_size else 0
    o.update(_toy_sampler(s))
    if "hidden" in m:
      o["model.hidden"] = (8, 8)
    if m.name == "refinenet":
      o["model.ngf"] = 4
    elif m.name == "cond_unet":
      o["model.channels"] = (4, 8, 8)
    elif m.name == "energy_resnet":
      o["model.nf"] = 2
    if "ood_n" in e:
      o["eval.ood_n"] = 16
  elif method == "dde":
    images = m.dde.name == "dense_net"
    for net in ("dde", "generator"):
      o[f"model.{net}.hidden"] = 8 if images else (8, 8)
      if images:
        o[f"model.{net}.n_layers"] = 2
    o.update({"training.p_steps": 1, "training.q_steps": 1, "training.gen_batch_size": 8,
              "training.snapshot_every": 1, "training.snapshot_n": 4, "training.n_snapshots": 2,
              "training.batch_size": 8, "sampling.n_samples": 16, "sampling.inpaint_steps": 2})
    n_fixed = 0
    if t.anneal_sigmas:
      o["training.anneal_rounds"] = o["training.anneal_p_steps"] = 1
      n_fixed = 2 * len(t.anneal_sigmas)
    o["training.n_iters"] = 1 + n_fixed + 2
    if not images:
      o["eval.grid_n"] = 64
  elif method in ("dvi", "dvi_amortised"):
    o.update({"model.generator.hidden": (8, 8), "model.denoiser.hidden": (8, 8), "model.f_steps": 1,
              "model.f_warmup": 1, "training.n_iters": 3})
    if method == "dvi":
      o.update({"model.n_particles": 16, "sampling.n_samples": 64, "eval.grid_n": 64, "eval.mala_chains": 4,
                "eval.mala_steps": 2})
    else:
      o.update({"model.z_per_y": 2, "training.batch_size": 4, "sampling.n_samples": 16, "eval.n_eval_y": 3})
  elif method == "debm":
    o.update({"model.nf": 4, "model.ch_mult": (1, 2), "model.num_res_blocks": 1, "model.latent_dim": 8,
              "model.num_scales": 16, "training.batch_size": 6, "training.n_chains": 2,
              "training.latent_steps": 1, "training.pixel_steps": 1, "training.dae_pretrain": 1,
              "training.n_iters": 2, "sampling.n_samples": 4, "sampling.batch_size": 4, "sampling.latent_steps": 1,
              "sampling.pixel_steps": 1, "sampling.n_traj": 2, "sampling.latent_fit_n": 8, "sampling.pixel_only_steps": 2,
              "eval.ood_n": 16,
              "eval.ood_batch_size": 16})
  else:
    raise AssertionError(f"no tiny settings for method {method!r} ({name}): add them here")
  return o


def _flags(overrides: dict) -> list:
  return [f"--config.{k}={v}" for k, v in overrides.items()]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("feature_classifiers"))


@pytest.mark.parametrize("name", experiment_configs())
def test_config_runs_through_the_cli(name, mock_tfds, tmp_path, cache_dir, capsys):
  """experiments.run on the locked config: train -> sample -> eval, exit status 0, the output contract; image
  samples have the shape of the config's geometry (crop, resize, pad)."""
  wd = str(tmp_path / name)
  over = tiny_overrides(name, cache_dir)
  argv = ["run", f"--config={CONFIG_DIR}/{name}.py", f"--workdir={wd}", "--restarts=0", *_flags(over)]
  rc = cli_module.cli(argv)
  err = capsys.readouterr().err
  assert rc == 0, err[-3000:]
  ev = json.load(open(os.path.join(wd, "eval.json")))
  assert ev["step"] == over["training.n_iters"]
  rows = [json.loads(l) for l in open(os.path.join(wd, "metrics.jsonl"))]
  assert rows[-1]["step"] == over["training.n_iters"] and all(np.isfinite(r["loss"]) for r in rows)
  x = np.load(os.path.join(wd, "samples", "samples.npz"))["x"]
  assert len(x) > 0 and np.all(np.isfinite(x))
  c = importlib.import_module(f"configs.{name}").get_config()
  if c.data.dataset in IMAGE_DATASETS:
    assert x.shape[1:] == example_shape(c.data) == GEOMETRY[c.data.dataset, c.data.image_size, c.data.pad_to], name
  config = json.load(open(os.path.join(wd, "config.json")))
  assert config["training"]["n_iters"] == over["training.n_iters"]


def test_mdsm_toy_through_the_real_command_line(tmp_path):
  """The command as the README writes it, in its own process (the locked config, absl's parsing)."""
  wd = str(tmp_path / "mdsm_toy")
  over = tiny_overrides("mdsm_toy", str(tmp_path / "fc"))
  out = subprocess.run([sys.executable, "-m", "experiments.run", "--config=configs/mdsm_toy.py", f"--workdir={wd}",
                        *_flags(over)], cwd=REPO, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert json.load(open(os.path.join(wd, "eval.json")))["step"] == over["training.n_iters"]


def _paths(node, prefix=""):
  out = set()
  for k in node.keys():
    v = node[k]
    p = f"{prefix}{k}"
    if hasattr(v, "keys") and not (isinstance(v, dict) and not v):
      out |= _paths(v, p + ".")
    else:
      out.add(p)
  return out


@pytest.mark.parametrize("name", experiment_configs())
def test_every_key_is_declared(name):
  """A config holds exactly the keys its method and networks declare (configs/default.py, the method's
  `defaults`, the networks' registered keys), nothing else: DIR/config.json is the whole config as run, and no
  key is silently ignored."""
  from configs.default import get_default_config
  from dsm_jax import models
  c = importlib.import_module(f"configs.{name}").get_config()
  declared = _paths(get_default_config(c.method))
  got = _paths(c)

  def network_sections(node, prefix):  # sections that hold a network: their keys are the network's
    if "name" in node and node.name in models.names():
      yield prefix, node.name
    for k in node.keys():
      if hasattr(node[k], "keys"):
        yield from network_sections(node[k], f"{prefix}.{k}")

  for prefix, net in network_sections(c.model, "model"):
    for k in models.defaults(net):
      declared.add(f"{prefix}.{k}")
    default = get_default_config(c.method)
    node = default
    for part in prefix.split("."):
      node = node[part]
    stale = set(models.defaults(node.name)) - set(models.defaults(net))  # the default network's own keys
    declared -= {f"{prefix}.{k}" for k in stale}
  assert got <= declared, sorted(got - declared)
  assert declared <= got, sorted(declared - got)

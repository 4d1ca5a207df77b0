"""config -> data -> method -> train | sample | eval, with the fixed output contract:

    DIR/config.json               the config as run
    DIR/checkpoints/<step>/       orbax checkpoints (resume from the newest complete one)
    DIR/metrics.jsonl             one JSON object per logged step
    DIR/samples/samples.npz       key 'x': the main samples [N, ...] in data space; other sets beside it
    DIR/samples/*.png             pictures
    DIR/eval.json                 flat {metric name: number}
"""
from __future__ import annotations

import json
import logging
import math
import os
import time

import jax
import numpy as np

from dsm_jax import data as data_lib
from dsm_jax import methods, tensorboard, train
from dsm_jax.validation import ConfigError, require

SECTIONS = ("seed", "method", "data", "model", "training", "sampling", "eval")
MODES = ("train", "sample", "eval")


class RunError(RuntimeError):
  """A run that cannot go on; str(e) is one line naming the cause and the fix."""


def validate_common(config) -> None:
  for s in SECTIONS:
    require(s in config, s, f"missing section; every config has {SECTIONS} (see configs/default.py)")
  require(isinstance(config.seed, int) and not isinstance(config.seed, bool), "seed",
          f"must be an integer, got {config.seed!r}")
  require(config.method in methods.METHODS, "method",
          f"unknown method {config.method!r}; choose from {list(methods.METHODS)}")


def check_workdir(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, ".write_test")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise RunError(f"--workdir={workdir} is not writable ({e.strerror}); choose another directory") from None


def prepare(config, workdir: str):
  """Every check that can fail before compute: config, data, method, workdir."""
  validate_common(config)
  dataset = data_lib.get_dataset(config.data, config.seed)
  method = methods.build(config, dataset)
  train.validate_training(config)
  check_workdir(workdir)
  return dataset, method


def save_samples(samples: dict, sample_dir: str) -> dict:
  """Writes each set to sample_dir/<name>.npz (key 'x'; the main set 'x' to samples.npz) and returns
  {name: number of non-finite samples}."""
  os.makedirs(sample_dir, exist_ok=True)
  bad = {}
  for name, arr in samples.items():
    arr = np.asarray(arr)
    fname = "samples.npz" if name == "x" else f"{name}.npz"
    tmp = os.path.join(sample_dir, f".{fname}.tmp.npz")
    np.savez(tmp, x=arr)
    os.replace(tmp, os.path.join(sample_dir, fname))
    flat = arr.reshape(arr.shape[0], -1) if arr.ndim > 1 else arr[:, None]
    n_bad = int(np.sum(~np.all(np.isfinite(flat), axis=1)))
    if n_bad:
      logging.warning("sample set %r has %d non-finite samples of %d", name, n_bad, arr.shape[0])
    bad[name] = n_bad
  return bad


def load_samples(sample_dir: str) -> dict:
  out = {}
  if not os.path.isdir(sample_dir):
    raise RunError(f"no samples in {sample_dir}; run --mode=sample (or train) first")
  for f in sorted(os.listdir(sample_dir)):
    if f.endswith(".npz") and not f.startswith("."):
      name = "x" if f == "samples.npz" else f[:-4]
      out[name] = np.load(os.path.join(sample_dir, f))["x"]
  if "x" not in out:
    raise RunError(f"no samples.npz in {sample_dir}; run --mode=sample (or train) first")
  return out


def write_json_atomic(path: str, obj) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1, sort_keys=True)
  os.replace(tmp, path)


def run(config, workdir: str, mode: str = "train", progress=None) -> dict:
  """Runs one experiment; returns the eval dict (empty for mode='sample')."""
  require(mode in MODES, "mode", f"unknown --mode={mode!r}; use one of {MODES}")
  dataset, method = prepare(config, workdir)
  main = train.is_main_process()  # multi-host: process 0 writes the files, every process computes
  if main:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=1))
  timings = {}
  if mode == "train":
    tic = time.perf_counter()
    result = train.train(config, workdir, method, dataset, progress=progress)
    timings["train_time_s"] = time.perf_counter() - tic
    state, step = result.state, int(result.state["step"])
  else:
    step, state = train.load_latest(config, workdir, method)
  params = state["ema_params"] if config.training.ema_rate > 0 else state["params"]
  k_sample, k_eval = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(config.seed), 0x5A3D))
  sample_dir = os.path.join(workdir, "samples")

  nonfinite = {}
  if mode in ("train", "sample") and method.sample is not None:
    tic = time.perf_counter()
    samples = method.sample(params, k_sample)
    timings["sample_time_s"] = time.perf_counter() - tic
    nonfinite = save_samples(samples, sample_dir) if main else {}
    if main and method.plot is not None:
      paths = method.plot(samples, params, sample_dir) or []
      tb = tensorboard.maybe_writer(workdir, config)
      tb.images(step, paths)
      tb.close()
  if mode == "sample":
    return {}
  if mode == "eval":
    samples = load_samples(sample_dir)
    nonfinite = {k: int(np.sum(~np.all(np.isfinite(np.reshape(v, (v.shape[0], -1))), axis=1)))
                 for k, v in samples.items()}
  results = {"step": step}
  if config.eval.enabled and method.evaluate is not None:
    tic = time.perf_counter()
    results.update(method.evaluate(params, k_eval, samples))
    timings["eval_time_s"] = time.perf_counter() - tic
  results.update({f"nonfinite_{k}": v for k, v in nonfinite.items()})
  results.update(timings)
  results = {k: (None if (isinstance(v, float) and not math.isfinite(v)) else v) for k, v in results.items()}
  if not main:
    return results
  write_json_atomic(os.path.join(workdir, "eval.json"), results)
  tb = tensorboard.maybe_writer(workdir, config)
  tb.scalars(step, {f"eval/{k}": v for k, v in results.items() if k != "step" and v is not None})
  tb.close()
  return results

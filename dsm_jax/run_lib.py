"""config -> data -> method -> train | sample | eval, with the fixed output contract:

    DIR/config.json               the config as run (every key)
    DIR/checkpoints/<step>/       orbax checkpoints (resume from the newest complete one)
    DIR/metrics.jsonl             one JSON object per logged step
    DIR/samples/samples.npz       key 'x': the main samples [N, ...] in data space; other sets beside it
    DIR/samples/*.png             pictures
    DIR/eval.json                 flat {metric name: number}
    DIR/.lock                     who is writing DIR (dsm_jax/workdir.py)

`sample` and `eval` read the checkpoints of DIR and write into `outdir` (default DIR); beside a running `train`
on DIR they must write elsewhere (--outdir), since DIR's lock is taken. `inpaint` (dsm_jax/eval/inpaint.py: the
method's conditional sampler on masked test images, outdir/inpaint/) and `loglik` (dsm_jax/likelihood.py: test
log-likelihoods of an energy by annealed importance sampling) read the checkpoints the same way and add their
metrics to outdir/eval.json (keeping the keys already there).

With config.eval.fid_n > 0 (an image dataset) `train` and `sample` also draw the papers' protocol set into
DIR/samples/fid_<n>/ (resumable, dsm_jax/eval/protocol.py) and evaluation adds its `protocol_*` figures; `fid_stats`
computes the protocol's reference Inception statistics (cached beside the data) and touches no run directory.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
import uuid

import jax
import numpy as np

from dsm_jax import data as data_lib
from dsm_jax import methods, platform, tensorboard, train
from dsm_jax.validation import ConfigError, one_of, positive, require
from dsm_jax.workdir import WorkdirLock, check_held_by, write_json, write_npz, write_text

SECTIONS = ("seed", "method", "data", "model", "training", "sampling", "eval", "runtime")
MODES = ("train", "sample", "eval", "fid_stats", "inpaint", "loglik")


class RunError(RuntimeError):
  """A run that cannot go on; str(e) is one line naming the cause and the fix."""


def validate_common(config) -> None:
  for s in SECTIONS:
    require(s in config, s, f"missing section; every config has {SECTIONS} (see configs/default.py)")
  require(isinstance(config.seed, int) and not isinstance(config.seed, bool), "seed",
          f"must be an integer, got {config.seed!r}")
  require(config.method in methods.names(), "method",
          f"unknown method {config.method!r}; choose from {methods.names()}")
  if "inpaint_mask" in config.eval:  # the shared --mode=inpaint / loglik keys (configs/default.py)
    from dsm_jax.eval.inpaint import MASKS  # noqa: PLC0415
    one_of(config, "eval.inpaint_mask", MASKS)
    for k in ("inpaint_n", "inpaint_square", "ais_chains", "ais_temps", "ais_leapfrog", "loglik_n"):
      positive(config, f"eval.{k}", integer=True)
    for k in ("inpaint_batch_size", "ais_batch_size"):
      positive(config, f"eval.{k}", integer=True, allow_zero=True)
    positive(config, "eval.ais_step")
    require(isinstance(config.eval.inpaint_frac, float) and 0.0 < config.eval.inpaint_frac < 1.0,
            "eval.inpaint_frac", f"must be a share in (0, 1), got {config.eval.inpaint_frac!r}")


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
  platform.validate(config)
  dataset = data_lib.get_dataset(config.data, config.seed)
  method = methods.build(config, dataset)
  train.validate(config, method.networks)
  check_workdir(workdir)
  return dataset, method


def save_samples(samples: dict, sample_dir: str) -> dict:
  """Writes each set to sample_dir/<name>.npz (key 'x'; the main set 'x' to samples.npz) and returns
  {name: number of non-finite samples}."""
  try:
    os.makedirs(sample_dir, exist_ok=True)
  except OSError as e:
    raise RunError(f"cannot create {sample_dir} ({e.strerror})") from None
  bad = {}
  for name, arr in samples.items():
    arr = np.asarray(arr)
    write_npz(os.path.join(sample_dir, "samples.npz" if name == "x" else f"{name}.npz"), x=arr)
    bad[name] = _n_nonfinite(arr)
    if bad[name]:
      logging.warning("sample set %r has %d non-finite samples of %d", name, bad[name], arr.shape[0])
  return bad


def _n_nonfinite(arr: np.ndarray) -> int:
  flat = arr.reshape(arr.shape[0], -1) if arr.ndim > 1 else arr[:, None]
  return int(np.sum(~np.all(np.isfinite(flat), axis=1)))


def load_samples(sample_dir: str) -> dict:
  out = {}
  if not os.path.isdir(sample_dir):
    raise RunError(f"no samples in {sample_dir}; run --mode=sample (or train) first")
  for f in sorted(os.listdir(sample_dir)):
    if f.endswith(".npz") and not f.startswith("."):
      out["x" if f == "samples.npz" else f[:-4]] = np.load(os.path.join(sample_dir, f))["x"]
  if "x" not in out:
    raise RunError(f"no samples.npz in {sample_dir}; run --mode=sample (or train) first")
  return out


def _finite_or_none(results: dict) -> dict:
  return {k: (None if (isinstance(v, float) and not math.isfinite(v)) else v) for k, v in results.items()}


def run(config, workdir: str, mode: str = "train", progress=None, outdir: str | None = None) -> dict:
  """Runs one experiment; returns the eval dict (empty for mode='sample'). outdir: where sample/eval write
  (default workdir)."""
  require(mode in MODES, "mode", f"unknown --mode={mode!r}; use one of {MODES}")
  if mode == "fid_stats":
    return fid_stats(config, progress)
  outdir = outdir or workdir
  if mode == "train" and os.path.abspath(outdir) != os.path.abspath(workdir):
    raise ConfigError("outdir", "--outdir is for --mode=sample or eval; training writes into --workdir")
  dataset, method = prepare(config, workdir)
  _protocol_on(config, dataset)  # its settings and files, before compute
  platform.apply(config)  # the convolution form, before anything is traced
  if outdir != workdir:
    check_workdir(outdir)
  main = platform.is_main_process()  # multi-host: process 0 writes the files, every process computes
  run_id = _run_id()
  lock = WorkdirLock(outdir, run_id) if main else None
  if lock is not None:
    lock.acquire()
  try:
    if not main:
      check_held_by(outdir, run_id)
    return _run_locked(config, workdir, outdir, mode, dataset, method, main, progress)
  finally:
    if lock is not None:
      lock.release()


def run_keys(config) -> tuple:
  """(sampling key, evaluation key) of a run: `run` samples with the first and evaluates with the second."""
  return tuple(jax.random.split(jax.random.fold_in(jax.random.PRNGKey(config.seed), 0x5A3D)))


@dataclasses.dataclass
class TrainedRun:
  """A trained run, ready to use: its dataset, its method (sample / evaluate / plot / score ...) and the
  parameters the runner samples with (the EMA where the config keeps one) at checkpoint `step`."""
  config: object
  dataset: object
  method: methods.Method
  params: dict
  step: int


def load(config, workdir: str) -> TrainedRun:
  """The newest checkpoint in `workdir` of a run of `config`, e.g. to look at a model after `run(config, workdir)`
  in a notebook: `r = load(config, workdir); r.method.sample(r.params, run_keys(config)[0])` draws the samples
  the run drew. Raises checkpoint.CheckpointError when workdir has no checkpoint, or one of another model."""
  dataset, method = prepare(config, workdir)
  platform.apply(config)
  step, state = train.load_latest(config, workdir, method, dataset)
  return TrainedRun(config, dataset, method, train.sampling_params(state["nets"]), int(step))


def _protocol_on(config, dataset) -> bool:
  """Whether this run draws and scores the protocol set: eval.fid_n > 0 and evaluation on."""
  on = int(config.eval.fid_n) > 0 and bool(config.eval.enabled)
  if on and len(getattr(dataset, "shape", ())) != 3:
    raise ConfigError("eval.fid_n", f"the FID protocol is for image datasets; {config.data.dataset!r} is not one "
                      "(use 0)")
  if on and jax.process_count() > 1:
    raise ConfigError("eval.fid_n", "the FID protocol set is drawn by one host; run it without runtime.distributed")
  if on:
    from dsm_jax.eval import protocol  # noqa: PLC0415
    _protocol(protocol.validate, config)
  return on


def _show(config, progress) -> bool:
  return bool(config.runtime.progress if progress is None else progress)


def fid_stats(config, progress=None) -> dict:
  """--mode=fid_stats: the protocol's reference statistics of config's dataset, split and geometry (cached)."""
  from dsm_jax.eval import protocol  # noqa: PLC0415
  validate_common(config)
  platform.validate(config)
  dataset = data_lib.get_dataset(config.data, config.seed)
  if len(getattr(dataset, "shape", ())) != 3:
    raise ConfigError("data.dataset", f"--mode=fid_stats is for image datasets; {config.data.dataset!r} is not one")
  try:
    protocol.validate(config)
    ref = protocol.reference_stats(config, dataset, _show(config, progress))
  except protocol.ProtocolError as e:
    raise RunError(str(e)) from None
  return {"fid_stats_path": ref["path"], "fid_stats_n": ref["n"], "fid_stats_split": ref["split"]}


def _protocol(fn, *args, **kwargs):
  from dsm_jax import sampling  # noqa: PLC0415
  from dsm_jax.eval import protocol  # noqa: PLC0415
  try:
    return fn(*args, **kwargs)
  except (protocol.ProtocolError, sampling.SampleSetMismatch) as e:
    raise RunError(str(e)) from None


def _run_id() -> str:
  """The same id on every process of a job (process 0's, broadcast), for the lock check."""
  token = uuid.uuid4().int & 0x7FFFFFFF
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # noqa: PLC0415
    token = int(multihost_utils.broadcast_one_to_all(np.asarray(token, np.int32)))
  return f"{token:08x}"


def _run_locked(config, workdir, outdir, mode, dataset, method, main, progress) -> dict:
  timings = {}
  if mode in ("inpaint", "loglik"):
    return _run_extra(config, workdir, outdir, mode, dataset, method, main)
  if mode == "train":
    if main:
      write_text(os.path.join(outdir, "config.json"), config.to_json_best_effort(indent=1))
    tic = time.perf_counter()
    result = train.train(config, workdir, method, dataset, progress=progress)
    timings["train_time_s"] = time.perf_counter() - tic
    state = result.state
  else:
    _, state = train.load_latest(config, workdir, method, dataset)
    if main:
      write_text(os.path.join(outdir, "config.json"), config.to_json_best_effort(indent=1))
  step = int(state["step"])
  params = train.sampling_params(state["nets"])
  k_sample, k_eval = run_keys(config)
  sample_dir = os.path.join(outdir, "samples")

  from dsm_jax.eval import protocol  # noqa: PLC0415
  protocol_on = _protocol_on(config, dataset)
  show = _show(config, progress)
  nonfinite = {}
  if mode in ("train", "sample"):
    tic = time.perf_counter()
    samples = method.sample(params, k_sample)
    timings["sample_time_s"] = time.perf_counter() - tic
    nonfinite = save_samples(samples, sample_dir) if main else {}
    if main and method.plot is not None:
      paths = method.plot(samples, params, sample_dir) or []
      tb = tensorboard.maybe_writer(outdir, config)
      tb.images(step, paths)
      tb.close()
    if protocol_on and main:
      tic = time.perf_counter()
      _protocol(protocol.protocol_samples, config, method, dataset, params, k_sample, outdir, step, show)
      timings["protocol_sample_time_s"] = time.perf_counter() - tic
  if mode == "sample":
    return {}
  if mode == "eval":
    samples = load_samples(sample_dir)
    nonfinite = {k: _n_nonfinite(np.asarray(v)) for k, v in samples.items()}
  results = {"step": step}
  if config.eval.enabled:
    tic = time.perf_counter()
    results.update(method.evaluate(params, k_eval, samples))
    timings["eval_time_s"] = time.perf_counter() - tic
    if protocol_on and main:
      tic = time.perf_counter()
      results.update(_protocol(protocol.evaluate, config, method, dataset, params, k_sample, outdir, step, show))
      timings["protocol_time_s"] = time.perf_counter() - tic
  results.update({f"nonfinite_{k}": v for k, v in nonfinite.items()})
  results.update(timings)
  results = _finite_or_none(results)
  if not main:
    return results
  write_json(os.path.join(outdir, "eval.json"), results)
  tb = tensorboard.maybe_writer(outdir, config)
  tb.scalars(step, {f"eval/{k}": v for k, v in results.items() if k != "step" and isinstance(v, (int, float))})
  tb.close()
  return results


def _run_extra(config, workdir, outdir, mode, dataset, method, main) -> dict:
  """--mode=inpaint | loglik on the newest checkpoint: the metrics join outdir/eval.json."""
  hook = method.inpaint if mode == "inpaint" else method.log_likelihood
  if hook is None:
    raise ConfigError("method", f"--mode={mode}: method {method.name!r} on {config.data.dataset!r} has no "
                                f"{'inpainting sampler' if mode == 'inpaint' else 'energy to normalise'}")
  _, state = train.load_latest(config, workdir, method, dataset)
  params = train.sampling_params(state["nets"])
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0x1A9 if mode == "inpaint" else 0xA15)
  tic = time.perf_counter()
  if mode == "inpaint":
    from dsm_jax.eval import inpaint as inpaint_eval  # noqa: PLC0415
    results = inpaint_eval.run(config, dataset, method, params, key, outdir, progress=bool(config.runtime.progress))
  else:
    results = method.log_likelihood(params, key)
  results[f"{mode}_time_s"] = time.perf_counter() - tic
  results = _finite_or_none(results)
  if not main:
    return results
  path = os.path.join(outdir, "eval.json")
  merged = {}
  if os.path.exists(path):
    with open(path) as f:
      merged = json.load(f)
  merged.update({"step": int(state["step"]), **results})
  write_text(os.path.join(outdir, f"config_{mode}.json"), config.to_json_best_effort(indent=1))
  write_json(path, merged)
  return results

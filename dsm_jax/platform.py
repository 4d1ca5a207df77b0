"""Every choice that depends on the machine rather than on the algorithm, made here once from the backend and
the config's `runtime` section. Algorithm files, model files and paper configs never name a backend.

* Devices (`setup`, before JAX starts its backends): runtime.cpu_devices splits a CPU host into N XLA devices
  (XLA:CPU runs one convolution on about one core, so two devices use both cores of a 2-core machine);
  runtime.distributed joins this process to a multi-host job (jax.distributed.initialize).
* The convolution form (`conv_impl`, applied by `apply`): models/layers.py's one Conv layer computes with
  XLA's convolution, a hand-written loop-safe VJP, or im2col matmuls. On GPU and TPU: XLA's (cuDNN, the MXU).
  On CPU: the VJP form, the fastest or within 5% of it for every network in training and sampling
  (benchmarks/bench_conv_impls.py; docs/RESULTS.md, "Platform choices"): XLA:CPU runs autodiff's kernel-gradient
  convolution 10-50x slower inside a loop (a Langevin chain's lax.scan, Denoising-EBM's L DAE steps), and the VJP
  form writes it canonically.
* The trainer's dispatch (`chunk_mode`): steps_per_call steps fused into one lax.scan ('scan'), or one compiled
  step per call ('loop'). On CPU host-fed (image) data trains in 'loop': MDSM's double backprop inside a scan is
  23x slower even with the VJP form (second-order convolutions), and only im2col scans it fast, at 18% more per
  step than the VJP form in 'loop'. Everything else scans.
* The supervisor (`supervised`, `supervise`): XLA's in-process CPU all-reduce has stalled and aborted long runs on a
  host split into several CPU devices ('Termination timeout for all reduce'), so such training runs in a child
  process that is rerun, resuming from its newest checkpoint, when it dies of SIGABRT.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys

import jax

from dsm_jax.models import layers
from dsm_jax.validation import ConfigError, one_of, positive, require

CHUNK_MODES = ("auto", "scan", "loop")
CONV_CHOICES = ("auto",) + layers.CONV_IMPLS
CPU_CONV = "vjp"  # benchmarks/bench_conv_impls.py (docs/RESULTS.md, "Platform choices")


def validate(config) -> None:
  r = config.runtime
  positive(config, "runtime.num_devices", integer=True, allow_zero=True)
  positive(config, "runtime.cpu_devices", integer=True, allow_zero=True)
  positive(config, "runtime.num_processes", integer=True, allow_zero=True)
  one_of(config, "runtime.chunk_mode", CHUNK_MODES)
  one_of(config, "runtime.conv_impl", CONV_CHOICES)
  for k in ("distributed", "progress", "tensorboard"):
    require(isinstance(r[k], bool), f"runtime.{k}", f"must be True or False, got {r[k]!r}")
  require(isinstance(r.process_id, int) and r.process_id >= -1, "runtime.process_id",
          f"must be an integer >= -1 (-1: auto-detect), got {r.process_id!r}")


# ------------------------------------------------------------------------------------ start-up
def setup(config) -> None:
  """Device splitting and multi-host start; must run before JAX starts its backends (experiments/run.py calls
  it first). Later, a device split can only be warned about."""
  validate(config)
  r = config.runtime
  if r.cpu_devices:
    try:
      jax.config.update("jax_num_cpu_devices", int(r.cpu_devices))
    except RuntimeError:
      if jax.default_backend() == "cpu" and jax.local_device_count() != r.cpu_devices:
        logging.warning("config.runtime.cpu_devices=%d ignored: JAX already started with %d CPU devices",
                        r.cpu_devices, jax.local_device_count())
  if r.distributed:
    n, pid = int(r.num_processes), int(r.process_id)
    if n and not 0 <= pid < n:
      raise ConfigError("runtime.process_id", f"must be in [0, {n}) for num_processes={n}, got {pid}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU hosts; no effect on GPU/TPU
    jax.distributed.initialize(coordinator_address=r.coordinator_address or None, num_processes=n or None,
                               process_id=pid if n else None)


def conv_impl(config) -> str:
  """The convolution form: runtime.conv_impl, or, when 'auto', the backend's (module docstring)."""
  choice = config.runtime.conv_impl
  if choice != "auto":
    return choice
  return CPU_CONV if jax.default_backend() == "cpu" else "xla"


def apply(config) -> str:
  """Makes the platform's convolution form the default of models/layers.py's Conv (after the backends start,
  before anything is traced); returns it."""
  impl = conv_impl(config)
  layers.set_default_conv_impl(impl)
  return impl


def chunk_mode(config, host_fed: bool) -> str:
  """'scan' or 'loop' for the trainer (module docstring). Data drawn inside the compiled step always scans."""
  mode = config.runtime.chunk_mode
  if not host_fed:
    return "scan"
  if mode == "auto":
    return "loop" if jax.default_backend() == "cpu" else "scan"
  return mode


def num_devices(config) -> int:
  """The devices the trainer's data mesh spans: runtime.num_devices, or every device (every process's in a
  multi-host job)."""
  want = config.runtime.num_devices
  have = jax.device_count() if jax.process_count() > 1 else jax.local_device_count()
  if want and want > have:
    raise ConfigError("runtime.num_devices", f"asks for {want} devices but only {have} are present")
  return want or have


def is_main_process() -> bool:
  return jax.process_index() == 0


# ------------------------------------------------------------------------------------ the supervisor
SUPERVISED_CHILD_ENV = "DSM_JAX_SUPERVISED_CHILD"


def supervised(config, mode: str, restarts: int) -> bool:
  """Whether this command should run its training in a supervised child process (module docstring)."""
  r = config.runtime
  return (mode == "train" and restarts > 0 and os.environ.get(SUPERVISED_CHILD_ENV) != "1"
          and r.cpu_devices > 1 and not r.distributed)


def _die_with_parent() -> None:
  """In the child, before exec: its own process group (a terminal's Ctrl-C reaches only the supervisor, which
  passes it on once), and Linux's PR_SET_PDEATHSIG, so a killed supervisor does not leave it running."""
  os.setpgid(0, 0)
  try:
    import ctypes  # noqa: PLC0415
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass


def supervise(cmd: list, restarts: int, env: dict | None = None) -> int:
  """Runs cmd; while it dies of SIGABRT and restarts remain, runs it again. SIGINT and SIGTERM sent to this
  process are passed on to the child. Returns the last exit status (negative: killed by that signal)."""
  for attempt in range(restarts + 1):
    child = subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent)
    forward = lambda sig, _frame: child.send_signal(sig)  # noqa: E731
    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
      rc = child.wait()
    finally:
      for sig, handler in old.items():
        signal.signal(sig, handler)
    if rc != -signal.SIGABRT or attempt == restarts:
      return rc
    print(f"warning: the training process aborted (SIGABRT); rerunning the command, which resumes from the "
          f"newest checkpoint (restart {attempt + 1} of {restarts})", file=sys.stderr, flush=True)
  return rc

"""One writer per run directory, and the run's file writes.

`WorkdirLock` is DIR/.lock, taken before any compute by every command that writes into DIR: an exclusive
flock held for the life of the process (the kernel drops it when the process dies, however it dies) and, in
the file, who holds it (process id, host, start time, command). A second command on the same DIR stops with
one line naming the holder. A lock file whose holder has gone (no flock on it) is taken over with a warning.
In a multi-host job, process 0 holds the lock; the other processes check that it names their job.

Writes of samples and eval.json go through a temporary file and a rename (a reader never sees half a file),
and a failed write is one line naming the path and the cause (dsm_jax.checkpoint.WriteError).
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from typing import Optional

import numpy as np

from dsm_jax.checkpoint import WriteError

LOCK_NAME = ".lock"


class LockError(RuntimeError):
  """Another command holds the run directory; the message names it."""


def _describe(info: dict) -> str:
  if not info:
    return "an unknown process (the lock file is empty)"
  started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("start_time", 0)))
  return (f"process {info.get('pid')} on {info.get('host')} since {started} "
          f"({' '.join(info.get('command', []))[:160]})")


def _read(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


class WorkdirLock:
  """Exclusive ownership of a run directory for one process (module docstring). Use as a context manager."""

  def __init__(self, workdir: str, run_id: str = "", command: Optional[list] = None):
    self.path = os.path.join(workdir, LOCK_NAME)
    self.run_id = run_id
    self.command = list(sys.argv if command is None else command)
    self._fd = None

  def acquire(self) -> "WorkdirLock":
    try:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise WriteError(self.path, e) from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      os.close(fd)
      if e.errno in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
        raise LockError(f"{os.path.dirname(self.path)} is in use by {_describe(_read(self.path))}; wait for it to "
                        "finish, or use another --workdir (sample/eval beside a running run: --outdir)") from None
      raise WriteError(self.path, e) from None
    previous = _read(self.path)
    if previous:
      logging.warning("taking over the lock of %s: %s is no longer running", os.path.dirname(self.path),
                      _describe(previous))
    info = {"pid": os.getpid(), "host": socket.gethostname(), "start_time": time.time(), "command": self.command,
            "run_id": self.run_id}
    data = json.dumps(info).encode()
    try:
      os.ftruncate(fd, 0)
      os.pwrite(fd, data, 0)
      os.fsync(fd)
    except OSError as e:
      os.close(fd)
      raise WriteError(self.path, e) from None
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is None:
      return
    try:
      os.ftruncate(self._fd, 0)  # an empty file: nobody holds it (the file stays, so a waiting flock stays valid)
    except OSError:
      pass
    fcntl.flock(self._fd, fcntl.LOCK_UN)
    os.close(self._fd)
    self._fd = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
    return False


def check_held_by(workdir: str, run_id: str) -> None:
  """For processes other than 0 of a multi-host job: the lock (when this host sees the directory) must name
  this job. A directory this host cannot see is process 0's to guard."""
  path = os.path.join(workdir, LOCK_NAME)
  if not os.path.exists(path):
    return
  info = _read(path)
  if info.get("run_id") != run_id:
    raise LockError(f"{workdir} is in use by {_describe(info)}, not by this job's process 0")


# ------------------------------------------------------------------------------------ writes
def write_json(path: str, obj) -> None:
  """obj as JSON at path, atomically."""
  tmp = path + ".tmp"
  try:
    with open(tmp, "w") as f:
      json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
  except OSError as e:
    raise WriteError(path, e) from None


def write_text(path: str, text: str) -> None:
  tmp = path + ".tmp"
  try:
    with open(tmp, "w") as f:
      f.write(text)
    os.replace(tmp, path)
  except OSError as e:
    raise WriteError(path, e) from None


def write_npz(path: str, **arrays) -> None:
  """A .npz at path, atomically (np.savez appends .npz to a name without it, so the temporary name has one)."""
  tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp.npz")
  try:
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
  except OSError as e:
    raise WriteError(path, e) from None

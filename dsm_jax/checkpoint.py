"""Orbax checkpoints: atomic saves, pruning to max_to_keep, and restore with fallback.

Layout: DIR/checkpoints/<step>/{state, meta}. `state` is the whole train-state pytree (step, params,
optimizer state, EMA, PRNG key: everything a resumed run needs to continue bit-for-bit); `meta` is JSON
(step, the model config) so a mismatched config is named instead of failing deep inside orbax.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be used or written; the message says which and why."""


class WriteError(RuntimeError):
  """A file of the run could not be written (disk full, permission lost, ...); one line naming the path and the
  cause."""

  def __init__(self, path: str, err: BaseException):
    super().__init__(f"cannot write {path}: {_cause(err)}; free space or fix the permissions, then rerun the same "
                     "command (it resumes from the newest complete checkpoint)")


def _cause(err: BaseException) -> str:
  """The innermost OSError's text (orbax wraps the operating system's error), else the error's first line."""
  seen, e = set(), err
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.strerror:
      return f"{e.strerror} (errno {e.errno})"
    e = e.__cause__ or e.__context__
  return f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"


class Checkpointer:

  def __init__(self, workdir: str, max_to_keep: int = 3):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True,
        enable_async_checkpointing=False)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def steps(self) -> list[int]:
    self.manager.reload()
    return sorted(self.manager.all_steps())

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Saves atomically (orbax writes a temporary directory, then renames it): a save that fails or is killed
    leaves the previous checkpoints as they were. A failure is one line naming the directory and the cause."""
    try:
      self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                      meta=ocp.args.JsonSave(meta)), force=True)
      self.manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001 - any failure to write is reported the same way
      kept = [s for s in self._listed_steps() if s != step]
      prev = f"{self.directory}/{max(kept)}" if kept else "none"
      raise CheckpointError(f"saving the checkpoint of step {step} in {self.directory} failed: {_cause(e)}; the "
                            f"newest complete checkpoint ({prev}) is intact; free space or fix the permissions, "
                            "then rerun the same command to resume") from None

  def _listed_steps(self) -> list:
    try:
      return sorted(int(d) for d in os.listdir(self.directory) if d.isdigit())
    except OSError:
      return []

  def _restore_meta(self, step: int) -> dict:
    out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return out["meta"]

  def _restore(self, step: int, target: Any) -> tuple[Any, dict]:
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    return out["state"], out["meta"]

  def restore_latest(self, target: Any, check_meta=None) -> Optional[tuple[int, Any, dict]]:
    """Restores the newest usable checkpoint into the structure of `target`.

    A damaged checkpoint (missing or truncated files) is reported and the previous one tried (the
    damaged one is moved to DIR/checkpoints.damaged/); if every checkpoint is damaged this raises rather
    than silently starting over. `check_meta(meta)` may raise
    CheckpointError for an incompatible config, which is never papered over by a fallback."""
    steps = self.steps()
    if not steps:
      return None
    damaged = []
    for step in reversed(steps):
      try:
        meta = self._restore_meta(step)
      except Exception as e:  # noqa: BLE001 - any read failure means this checkpoint is unusable
        damaged.append((step, e))
        logging.warning("checkpoint %s/%d is damaged (%s: %s); trying the previous one",
                        self.directory, step, type(e).__name__, str(e).splitlines()[0][:200])
        continue
      if check_meta is not None:
        check_meta(meta)
      try:
        state, meta = self._restore(step, target)
      except Exception as e:  # noqa: BLE001
        damaged.append((step, e))
        logging.warning("checkpoint %s/%d is damaged (%s: %s); trying the previous one",
                        self.directory, step, type(e).__name__, str(e).splitlines()[0][:200])
        continue
      self._set_aside([s for s, _ in damaged])
      return step, state, meta
    names = ", ".join(str(s) for s, _ in damaged)
    raise CheckpointError(
        f"every checkpoint in {self.directory} is damaged (steps {names}); move the directory away to "
        "start over")

  def _set_aside(self, steps) -> None:
    """Moves damaged checkpoints to DIR/checkpoints.damaged/ (kept for inspection, out of the way of
    the steps the resumed run will save again)."""
    if not steps:
      return
    aside = self.directory + ".damaged"
    os.makedirs(aside, exist_ok=True)
    for step in steps:
      src = os.path.join(self.directory, str(step))
      dst = os.path.join(aside, f"{step}.{int(time.time())}")
      if os.path.exists(src):
        shutil.move(src, dst)
        logging.warning("moved damaged checkpoint %s to %s", src, dst)
    self.manager.reload()

  def close(self):
    self.manager.close()

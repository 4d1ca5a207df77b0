"""TensorBoard logs in DIR/tensorboard: the scalars of metrics.jsonl and the sample pictures.

    tensorboard --logdir DIR/tensorboard

metrics.jsonl stays the source of truth (it is truncated on resume to match the checkpoint); event
files are append-only, so after a resume TensorBoard shows the re-run steps twice and plots the newer
values. Written with tensorboardX (pure Python: no TensorFlow needed).
"""
from __future__ import annotations

import logging
import os
import uuid
from typing import Iterable

import numpy as np


class TBWriter:
  def __init__(self, workdir: str, enabled: bool = True):
    self._w = None
    if not enabled:
      return
    try:
      from tensorboardX import SummaryWriter
    except ImportError:  # a declared dependency; a broken install must not stop training
      logging.warning("tensorboardX is not installed: no TensorBoard logs (pip install tensorboardX)")
      return
    self.logdir = os.path.join(workdir, "tensorboard")
    # a unique suffix: writers opened within the same second (train, then samples, then eval) would
    # otherwise share one file name and the later would overwrite the earlier
    self._w = SummaryWriter(self.logdir, flush_secs=30, filename_suffix=f".{uuid.uuid4().hex[:8]}")

  def scalars(self, step: int, row: dict) -> None:
    if self._w is None:
      return
    for k, v in row.items():
      if k != "step" and isinstance(v, (int, float, np.floating, np.integer)) and np.isfinite(v):
        self._w.add_scalar(k, float(v), int(step))

  def images(self, step: int, paths: Iterable[str], prefix: str = "samples") -> None:
    """PNG files (sample grids, scatter plots, trajectory strips) as TensorBoard images."""
    if self._w is None:
      return
    import matplotlib.image as mpimg
    for p in paths:
      if not (isinstance(p, str) and p.endswith(".png") and os.path.exists(p)):
        continue
      img = np.asarray(mpimg.imread(p), np.float32)
      if img.ndim == 2:
        img = img[..., None]
      if img.shape[-1] == 4:
        img = img[..., :3]
      name = f"{prefix}/{os.path.splitext(os.path.basename(p))[0]}"
      self._w.add_image(name, np.clip(img, 0.0, 1.0), int(step), dataformats="HWC")

  def flush(self) -> None:
    if self._w is not None:
      self._w.flush()

  def close(self) -> None:
    if self._w is not None:
      self._w.close()
      self._w = None


def read_scalars(logdir: str) -> dict:
  """{tag: [(step, value), ...]} from the event files in logdir (for tests and notebooks)."""
  from tensorboardX.proto import event_pb2
  import struct
  out: dict = {}
  for f in sorted(os.listdir(logdir)):
    if "tfevents" not in f:
      continue
    with open(os.path.join(logdir, f), "rb") as fh:
      data = fh.read()
    pos = 0
    while pos + 12 <= len(data):
      (n,) = struct.unpack("<Q", data[pos:pos + 8])
      rec = data[pos + 12:pos + 12 + n]
      pos += 12 + n + 4
      ev = event_pb2.Event()
      ev.ParseFromString(rec)
      for v in ev.summary.value:
        if v.HasField("simple_value"):
          out.setdefault(v.tag, []).append((int(ev.step), float(v.simple_value)))
        elif v.HasField("image"):
          out.setdefault(v.tag, []).append((int(ev.step), None))
  return out


def maybe_writer(workdir: str, config) -> TBWriter:
  """A writer, or a no-op one when config.runtime.tensorboard is False."""
  return TBWriter(workdir, bool(config.runtime.tensorboard))

"""Pictures: 2-D scatter and density plots, image grids, trajectory strips. Headless (Agg)."""
from __future__ import annotations

import os
from typing import Callable, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _grid(lim: float, n: int = 200):
  g = np.linspace(-lim, lim, n)
  xx, yy = np.meshgrid(g, g)
  return xx, yy, np.stack([xx.ravel(), yy.ravel()], -1).astype(np.float32)


def scatter_2d(path: str, x: np.ndarray, log_density: Optional[Callable] = None, title: str = "",
               lim: Optional[float] = None, max_points: int = 5000) -> str:
  """Samples over the contours of a log-density (if given)."""
  x = np.asarray(x)[:max_points]
  finite = np.all(np.isfinite(x), axis=1)
  x = x[finite]
  if lim is None:
    lim = float(np.ceil(np.percentile(np.abs(x), 99.5))) + 1.0 if len(x) else 1.0
  fig, ax = plt.subplots(figsize=(5, 5))
  if log_density is not None:
    xx, yy, pts = _grid(lim)
    ld = np.asarray(log_density(pts)).reshape(xx.shape)
    ax.contourf(xx, yy, np.exp(ld - ld.max()), levels=20, cmap="Blues")
  ax.scatter(x[:, 0], x[:, 1], s=2, c="k", alpha=0.4)
  ax.set_xlim(-lim, lim)
  ax.set_ylim(-lim, lim)
  ax.set_aspect("equal")
  ax.set_title(title)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def contours_2d(path: str, fields: dict, lim: float, n: int = 150) -> str:
  """Side-by-side filled contours of several log-density functions over [-lim, lim]^2."""
  xx, yy, pts = _grid(lim, n)
  fig, axes = plt.subplots(1, len(fields), figsize=(4.5 * len(fields), 4.5), squeeze=False)
  for ax, (name, fn) in zip(axes[0], fields.items()):
    ld = np.asarray(fn(pts)).reshape(xx.shape)
    ax.contourf(xx, yy, ld - ld.max(), levels=30, cmap="viridis")
    ax.set_title(name)
    ax.set_aspect("equal")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def trajectory_2d(path: str, traj: np.ndarray, titles, lim: float = 10.0, max_points: int = 2000) -> str:
  """One panel per stage of a 2-D chain (traj [S, N, 2])."""
  traj = np.asarray(traj)
  s = traj.shape[0]
  fig, axes = plt.subplots(1, s, figsize=(2.2 * s, 2.4), squeeze=False)
  for i, ax in enumerate(axes[0]):
    pts = traj[i, :max_points]
    ax.scatter(pts[:, 0], pts[:, 1], s=1, c="k", alpha=0.3)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(titles[i], fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path

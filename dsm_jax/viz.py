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


def image_grid(path: str, images: np.ndarray, nrow: int = 0, pad: int = 2) -> str:
  """Saves images [N, H, W, C] in [0, 1] as one PNG grid (nrow per row; 0 = square-ish)."""
  images = np.clip(np.nan_to_num(np.asarray(images, np.float32)), 0.0, 1.0)
  n, h, w, c = images.shape
  nrow = nrow or int(np.ceil(np.sqrt(n)))
  ncol = int(np.ceil(n / nrow))
  grid = np.ones((ncol * (h + pad) + pad, nrow * (w + pad) + pad, c), np.float32)
  for i in range(n):
    r, q = divmod(i, nrow)
    grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = images[i]
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  plt.imsave(path, grid[..., 0] if c == 1 else grid, cmap="gray" if c == 1 else None, vmin=0.0, vmax=1.0)
  return path


def trajectory_strip(path: str, traj: np.ndarray, n_show: int = 8) -> str:
  """NCSN's intermediate-samples figure: traj [S, N, H, W, C] in [0, 1] (S stages, e.g. the end of
  every noise level) -> one row per sample (the first n_show), one column per stage."""
  traj = np.asarray(traj)[:, :n_show]
  s, n = traj.shape[:2]
  rows = np.transpose(traj, (1, 0, 2, 3, 4)).reshape((n * s,) + traj.shape[2:])
  return image_grid(path, rows, nrow=s)


def scatter_on_grid(path: str, x: np.ndarray, g1: np.ndarray, g2: np.ndarray, log_density: np.ndarray,
                    title: str = "", max_points: int = 3000, ax=None) -> str:
  """Samples x [N, 2] over a density given on a grid: log_density [len(g2), len(g1)] (rows: 2nd coord).
  Filled contours of exp(log_density - max) and line contours at 1, 2, 3 'sigma' levels."""
  x = np.asarray(x)[:max_points]
  x = x[np.all(np.isfinite(x), axis=1)]
  own = ax is None
  if own:
    fig, ax = plt.subplots(figsize=(5, 5))
  d = np.exp(np.asarray(log_density) - np.max(log_density))
  ax.contourf(g1, g2, d, levels=20, cmap="Blues")
  ax.contour(g1, g2, d, levels=[np.exp(-4.5), np.exp(-2.0), np.exp(-0.5)], colors="C0", linewidths=0.8)
  ax.scatter(x[:, 0], x[:, 1], s=2, c="k", alpha=0.35)
  ax.set_xlim(g1[0], g1[-1])
  ax.set_ylim(g2[0], g2[-1])
  ax.set_title(title, fontsize=9)
  if own:
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
  return path


def quiver_panels(path: str, points: np.ndarray, vectors: dict, g1=None, g2=None, log_density=None,
                  suptitle: str = "") -> str:
  """One panel per named vector field [N, 2] drawn at points [N, 2] (each panel autoscaled), over the
  contours of a gridded log-density when given."""
  points = np.asarray(points)
  n = len(vectors)
  fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.4), squeeze=False)
  for ax, (name, v) in zip(axes[0], vectors.items()):
    v = np.asarray(v)
    if log_density is not None:
      d = np.exp(np.asarray(log_density) - np.max(log_density))
      ax.contour(g1, g2, d, levels=[np.exp(-4.5), np.exp(-2.0), np.exp(-0.5)], colors="C0", linewidths=0.8)
    ax.scatter(points[:, 0], points[:, 1], s=4, c="k")
    ax.quiver(points[:, 0], points[:, 1], v[:, 0], v[:, 1], color="C3", angles="xy")
    ax.set_title(f"{name}\nmean |v| = {np.mean(np.linalg.norm(v, axis=1)):.3g}", fontsize=9)
    if g1 is not None:
      ax.set_xlim(g1[0], g1[-1])
      ax.set_ylim(g2[0], g2[-1])
    ax.set_aspect("equal")
  if suptitle:
    fig.suptitle(suptitle, fontsize=10)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def panels_2d(path: str, sets, titles, log_density: Optional[Callable] = None, lim: float = 10.0,
              max_points: int = 2000, ncol: int = 0) -> str:
  """One scatter panel per sample set [N, 2] over the same density background (log_density(pts) ->
  [P]), e.g. a generator's samples every few rounds of training."""
  s = len(sets)
  ncol = ncol or min(s, 5)
  nrow = int(np.ceil(s / ncol))
  fig, axes = plt.subplots(nrow, ncol, figsize=(2.6 * ncol, 2.8 * nrow), squeeze=False)
  bg = None
  if log_density is not None:
    xx, yy, pts = _grid(lim, 120)
    ld = np.asarray(log_density(pts)).reshape(xx.shape)
    bg = (xx, yy, np.exp(ld - ld.max()))
  for i, ax in enumerate(axes.ravel()):
    ax.set_xticks([])
    ax.set_yticks([])
    if i >= s:
      ax.axis("off")
      continue
    if bg is not None:
      ax.contourf(*bg, levels=15, cmap="Blues")
    pts = np.asarray(sets[i])[:max_points]
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    ax.scatter(pts[:, 0], pts[:, 1], s=1, c="k", alpha=0.35)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(titles[i], fontsize=8)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def paths_on_grid(path: str, panels: dict, g1: np.ndarray, g2: np.ndarray, log_density: np.ndarray,
                  suptitle: str = "") -> str:
  """One panel per named set of 2-D paths traj [S, N, 2] (S points along each of N paths): each path a line from
  its start (open circle) to its end (dot), over line contours of a gridded log-density [len(g2), len(g1)]."""
  n = len(panels)
  fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 4.6), squeeze=False)
  d = np.exp(np.asarray(log_density) - np.max(log_density))
  for ax, (name, traj) in zip(axes[0], panels.items()):
    traj = np.asarray(traj)
    ax.contourf(g1, g2, d, levels=20, cmap="Blues", alpha=0.6)
    for i in range(traj.shape[1]):
      ax.plot(traj[:, i, 0], traj[:, i, 1], color="C3", lw=0.7, alpha=0.8)
    ax.scatter(traj[0, :, 0], traj[0, :, 1], s=10, facecolors="none", edgecolors="k", linewidths=0.6)
    ax.scatter(traj[-1, :, 0], traj[-1, :, 1], s=6, c="k")
    ax.set_xlim(g1[0], g1[-1])
    ax.set_ylim(g2[0], g2[-1])
    ax.set_aspect("equal")
    ax.set_title(name, fontsize=9)
  if suptitle:
    fig.suptitle(suptitle, fontsize=10)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path

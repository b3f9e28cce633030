"""Figures shared by the evaluators: image grids and metric curves over training (PNG)."""
from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np


def pyplot():
  """matplotlib.pyplot on the Agg backend, imported on first use (it takes about a second, which
  a run would otherwise spend before its first iteration)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def warm_up() -> None:
  """Import pyplot and draw a small figure off-screen (loads the fonts): what a run's first
  figure would otherwise pay for."""
  from matplotlib.backends import backend_agg  # pylint: disable=import-outside-toplevel
  from matplotlib import figure  # pylint: disable=import-outside-toplevel
  pyplot()
  fig = figure.Figure(figsize=(1, 1))
  fig.add_subplot().set_title('warm-up')
  backend_agg.FigureCanvasAgg(fig).draw()


def image_grid(images: np.ndarray, ncol: int | None = None, pad: int = 2) -> np.ndarray:
  """(N, H, W, C) images in [-1, 1] -> one uint8 (rows*(H+pad)+pad, ncol*(W+pad)+pad, C) tile
  image: x -> round((x + 1) * 127.5), clipped; grey (C = 1) is returned with C = 1."""
  images = np.asarray(images, np.float32)
  if images.ndim != 4:
    raise ValueError(f'images must be (N, H, W, C), got shape {images.shape}.')
  n, h, w, c = images.shape
  ncol = ncol or int(math.ceil(math.sqrt(n)))
  nrow = int(math.ceil(n / ncol))
  grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), 255, np.uint8)
  pixels = np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
  for i in range(n):
    r, col = divmod(i, ncol)
    y, x = pad + r * (h + pad), pad + col * (w + pad)
    grid[y:y + h, x:x + w] = pixels[i]
  return grid


def save_image_grid(path: str, images: np.ndarray, ncol: int | None = None,
                    title: str | None = None) -> None:
  """Write `image_grid(images, ncol)` to `path` (PNG), with an optional title above it."""
  plt = pyplot()
  grid = image_grid(images, ncol)
  h, w = grid.shape[:2]
  scale = max(1.0, 512 / max(h, w))
  fig = plt.figure(figsize=(w * scale / 100, h * scale / 100 + (0.4 if title else 0.0)), dpi=100)
  ax = fig.add_axes([0, 0, 1, 1 if not title else h * scale / (h * scale + 40)])
  ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap='gray' if grid.shape[-1] == 1
            else None, interpolation='nearest')
  ax.axis('off')
  if title:
    fig.suptitle(title, fontsize=9, y=0.995)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path)
  plt.close(fig)


def save_image_grids(path: str, grids: Sequence[np.ndarray], titles: Sequence[str]) -> None:
  """Several image grids (one per seed) side by side, each with its title, in one PNG."""
  plt = pyplot()
  if len(grids) == 1:
    save_image_grid(path, grids[0], title=titles[0])
    return
  tiles = [image_grid(g) for g in grids]
  fig, axes = plt.subplots(1, len(tiles), figsize=(4.5 * len(tiles), 4.9), squeeze=False)
  for ax, tile, title in zip(axes[0], tiles, titles):
    ax.imshow(tile[..., 0] if tile.shape[-1] == 1 else tile,
              cmap='gray' if tile.shape[-1] == 1 else None, interpolation='nearest')
    ax.axis('off')
    ax.set_title(title, fontsize=8)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_history(history: Sequence[dict], keys: Sequence[str], path: str,
                 title: str = '', seeds: Sequence[int] = (0,)) -> None:
  """One panel per key of `history` (a list of {'step': ..., key: value}) against the step:
  the value (the mean over the seeds), and each seed's (`key/seed_<s>`) when there are several."""
  plt = pyplot()
  keys = [k for k in keys if any(k in h for h in history)]
  if not keys:
    return
  fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
  for ax, key in zip(axes[0], keys):
    pts = [(h['step'], h[key]) for h in history if key in h]
    line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker='o', ms=3)
    for seed in seeds if len(seeds) > 1 else ():
      pts = [(h['step'], h[f'{key}/seed_{seed}']) for h in history if f'{key}/seed_{seed}' in h]
      ax.plot([p[0] for p in pts], [p[1] for p in pts], color=line.get_color(), lw=0.6,
              alpha=0.5)
    ax.set_xlabel('iteration')
    ax.set_title(key)
    ax.grid(alpha=0.3)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)

"""Figures shared by the evaluators: image grids and metric curves over training (PNG)."""
from __future__ import annotations

import math
import os
from typing import Sequence

import matplotlib
import numpy as np

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402


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


def plot_history(history: Sequence[dict], keys: Sequence[str], path: str,
                 title: str = '') -> None:
  """One panel per key of `history` (a list of {'step': ..., key: value}) against the step."""
  keys = [k for k in keys if any(k in h for h in history)]
  if not keys:
    return
  fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
  for ax, key in zip(axes[0], keys):
    pts = [(h['step'], h[key]) for h in history if key in h]
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker='o', ms=3)
    ax.set_xlabel('iteration')
    ax.set_title(key)
    ax.grid(alpha=0.3)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)

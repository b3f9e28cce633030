"""A small CNN digit classifier, used only to count StackedMNIST modes (docs/experiments.md,
"StackedMNIST").

Input (B, 28, 28, 1) in [-1, 1], output logits (B, 10). Two conv blocks (3x3 conv + ReLU, 2x2 max
pool) and a two-layer head; no BatchNorm or dropout, so `apply` needs only the params.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class MNISTClassifier(nn.Module):
  """28x28x1 -> conv(16) -> pool -> conv(32) -> pool -> dense(128) -> dense(10) logits."""
  features: Sequence[int] = (16, 32)
  hidden: int = 128
  num_classes: int = 10

  @nn.compact
  def __call__(self, x):
    if x.ndim == 3:
      x = x[..., None]
    for width in self.features:
      x = nn.relu(nn.Conv(width, (3, 3), padding='SAME')(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = jnp.reshape(x, (x.shape[0], -1))
    x = nn.relu(nn.Dense(self.hidden)(x))
    return nn.Dense(self.num_classes)(x)

"""Toy 2-D networks from the authors' code (DESIGN.md section 7).

Every energy maps a batch x (B, ...) to energies (B,) and treats samples independently (the
bounds rely on it); every generator maps z (B, d) to samples (B, ...) and takes `train` for its
BatchNorm. Any energy/generator pair with these signatures plugs into `bibound_jax.train`.
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

# PyTorch's nn.PReLU() starts its slope at 0.25; the authors' networks use it.
PRELU_INIT = 0.25


class MLPEnergy(nn.Module):
  """E(x) = scale * f(x): PReLU MLP with a learnable scalar output scale (init 1)."""
  hidden: Sequence[int] = (100, 100)

  @nn.compact
  def __call__(self, x):
    h = jnp.reshape(x, (x.shape[0], -1))
    for width in self.hidden:
      h = nn.PReLU(negative_slope_init=PRELU_INIT)(nn.Dense(width)(h))
    out = nn.Dense(1)(h)[:, 0]
    return self.param('scale', nn.initializers.ones, ()) * out


class MLPGenerator(nn.Module):
  """G(z): Linear -> BatchNorm -> PReLU blocks, then a linear map to `data_shape`."""
  latent_dim: int = 2
  data_shape: Sequence[int] = (2,)
  hidden: Sequence[int] = (100, 100)
  output_activation: str = 'none'   # 'none' or 'tanh'

  @nn.compact
  def __call__(self, z, train: bool = True):
    h = z
    for width in self.hidden:
      h = nn.Dense(width)(h)
      # momentum 0.9 in Flax == momentum 0.1 in PyTorch.
      h = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(h)
      h = nn.PReLU(negative_slope_init=PRELU_INIT)(h)
    out = nn.Dense(math.prod(self.data_shape))(h)
    if self.output_activation == 'tanh':
      out = jnp.tanh(out)
    return jnp.reshape(out, (z.shape[0],) + tuple(self.data_shape))

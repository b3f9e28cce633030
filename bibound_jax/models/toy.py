"""Toy 2-D networks from the authors' code (docs/experiments.md, "Toys").

Every energy maps a batch x (B, ...) to energies (B,) and treats samples independently (the
bounds rely on it); every generator maps z (B, d) to samples (B, ...) and takes `train` for its
BatchNorm. Any energy/generator pair with these signatures plugs into `bibound_jax.train`.
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# PyTorch's nn.PReLU() starts its slope at 0.25; the authors' networks use it.
PRELU_INIT = 0.25


class SNDense(nn.Module):
  """Dense layer with a spectrally normalised kernel, W / sigma(W) (Miyato et al., 2018).

  Stateless: sigma = u^T W v from `power_iters` power iterations started at a fixed vector,
  with u and v held fixed in the backward pass (as PyTorch's spectral_norm does). The authors'
  toy energies use spectral norm on every layer.
  """
  features: int
  power_iters: int = 10

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    w = jax.lax.stop_gradient(kernel)
    v = jnp.ones((self.features,), kernel.dtype) / math.sqrt(self.features)
    for _ in range(self.power_iters):
      u = w @ v
      u = u / (jnp.linalg.norm(u) + 1e-12)
      v = w.T @ u
      v = v / (jnp.linalg.norm(v) + 1e-12)
    sigma = u @ kernel @ v
    return x @ (kernel / sigma) + bias


class MLPEnergy(nn.Module):
  """E(x) = scale * f(x): PReLU MLP with a learnable scalar output scale (init 1); optionally
  spectrally normalised layers (then `scale` alone sets the energy's Lipschitz bound)."""
  hidden: Sequence[int] = (100, 100)
  spectral_norm: bool = False

  @nn.compact
  def __call__(self, x):
    dense = SNDense if self.spectral_norm else nn.Dense
    h = jnp.reshape(x, (x.shape[0], -1))
    for width in self.hidden:
      h = nn.PReLU(negative_slope_init=PRELU_INIT)(dense(width)(h))
    out = dense(1)(h)[:, 0]
    return self.param('scale', nn.initializers.ones, ()) * out


class MLPGenerator(nn.Module):
  """G(z): Linear -> PReLU -> BatchNorm blocks (the authors' order), then a linear map to
  `data_shape` (optionally tanh)."""
  latent_dim: int = 2
  data_shape: Sequence[int] = (2,)
  hidden: Sequence[int] = (100, 100)
  output_activation: str = 'none'   # 'none' or 'tanh'

  @nn.compact
  def __call__(self, z, train: bool = True):
    h = z
    for width in self.hidden:
      h = nn.PReLU(negative_slope_init=PRELU_INIT)(nn.Dense(width)(h))
      # momentum 0.9 in Flax == momentum 0.1 in PyTorch.
      h = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(h)
    out = nn.Dense(math.prod(self.data_shape))(h)
    if self.output_activation == 'tanh':
      out = jnp.tanh(out)
    return jnp.reshape(out, (z.shape[0],) + tuple(self.data_shape))

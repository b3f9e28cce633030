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
  toy energies use spectral norm on every layer. The iterations run in a `lax.fori_loop`: the
  same arithmetic as the unrolled loop (bit for bit in the optimised build), a graph a tenth
  of the size (the toy step: 4,445 -> 2,669 equations; a faster compile).
  """
  features: int
  power_iters: int = 10

  @nn.compact
  def __call__(self, x):
    if self.power_iters < 1:
      raise ValueError(f'power_iters must be >= 1, got {self.power_iters}.')
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    w = jax.lax.stop_gradient(kernel)

    def power_iteration(_, uv):
      u = w @ uv[1]
      u = u / (jnp.linalg.norm(u) + 1e-12)
      v = w.T @ u
      return u, v / (jnp.linalg.norm(v) + 1e-12)

    v0 = jnp.ones((self.features,), kernel.dtype) / math.sqrt(self.features)
    u, v = jax.lax.fori_loop(0, self.power_iters, power_iteration,
                             (jnp.zeros((w.shape[0],), w.dtype), v0))
    sigma = u @ kernel @ v
    return x @ (kernel / sigma) + bias


SCALE_PARAMS = ('linear', 'exp')


def output_scale(module: nn.Module, parametrisation: str) -> jax.Array:
  """The energy's learnable scalar output scale c, 1 at init.

  'linear': c is the parameter `scale` (the authors' choice). Adam moves a parameter by about
  one learning rate per step whatever its size, so c grows at most linearly: about
  1 + lr * steps. 'exp': c = exp(`log_scale`), which Adam moves by about a learning rate per
  step in log space: c can grow geometrically, as fast as the data's scale demands
  (docs/studies/toy.md, "What limits how sharp the energy gets").
  """
  if parametrisation == 'linear':
    return module.param('scale', nn.initializers.ones, ())
  if parametrisation == 'exp':
    return jnp.exp(module.param('log_scale', nn.initializers.zeros, ()))
  raise ValueError(f'Unknown energy scale parametrisation {parametrisation!r}; valid: '
                   f'{", ".join(SCALE_PARAMS)}.')


def confinement(x: jax.Array, strength: float, radius: float) -> jax.Array:
  """strength * relu(||x|| - radius)^2 per sample (0 when strength is 0).

  A piecewise-linear energy is linear far from the data, and where it descends outwards
  exp(-E) is not normalisable on R^n. Adding this term (0 inside the ball that holds the data,
  growing outside) makes exp(-E) normalisable for every f, and leaves E unchanged where the
  data and the generator live. It still lets an f that falls outwards at slope s dig a band
  of depth s^2 / (4 strength) just outside the radius (docs/studies/toy.md).
  """
  if not strength:
    return jnp.zeros(x.shape[:1], x.dtype)
  norm = jnp.sqrt(jnp.sum(jnp.reshape(x, (x.shape[0], -1)) ** 2, axis=-1) + 1e-12)
  return strength * jax.nn.relu(norm - radius) ** 2


class MLPEnergy(nn.Module):
  """E(x) = c * (f(x) + confinement(x)): PReLU MLP f with a learnable scalar output scale c
  (init 1, `scale_param`: see `output_scale`); optionally spectrally normalised layers (then
  c and the PReLU slopes set f's Lipschitz bound) and a confining term outside radius
  `confine_radius` (`confine` > 0; see `confinement`)."""
  hidden: Sequence[int] = (100, 100)
  spectral_norm: bool = False
  scale_param: str = 'linear'
  confine: float = 0.0
  confine_radius: float = 2.5

  @nn.compact
  def __call__(self, x):
    dense = SNDense if self.spectral_norm else nn.Dense
    h = jnp.reshape(x, (x.shape[0], -1))
    for i, width in enumerate(self.hidden):
      h = nn.PReLU(negative_slope_init=PRELU_INIT, name=f'PReLU_{i}')(dense(width)(h))
    out = dense(1)(h)[:, 0] + confinement(x, self.confine, self.confine_radius)
    return output_scale(self, self.scale_param) * out


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

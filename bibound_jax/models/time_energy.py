"""Time-conditioned energies E(x, t) for the diffusion upper bound (docs/bounds.md, "The diffusion
upper bound").

Every module maps x (B, ...) and t (B,) (or a scalar, or None) to energies (B,), treating samples
independently. t = None means t = 0, and E(x, 0) is the EBM used everywhere else, so
`module.apply(variables, x)` is a drop-in energy for the train step while
`module.apply(variables, x, t)` is what the diffusion bound differentiates.
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from bibound_jax.models.toy import PRELU_INIT
from bibound_jax.models.toy import SNDense
from bibound_jax.models.toy import confinement
from bibound_jax.models.toy import output_scale

Array = jax.Array


def sinusoidal_embedding(t: Array, dim: int, scale: float = 1000.0,
                         max_period: float = 10000.0) -> Array:
  """Transformer-style embedding of times t (B,) -> (B, dim): [sin(s t w_k), cos(s t w_k)].

  w_k = max_period^(-k / half), k = 0..half-1, half = dim // 2; a zero column pads odd dim. Times
  are scaled by `scale` (default 1000: t in [0, 1] then spans the range of DDPM step indices, so
  the lowest frequency turns slowly and the highest resolves steps of 1e-3). Pass scale = 1000 / T
  for another horizon T. At t = 0 the embedding is [0, ..., 0, 1, ..., 1].
  """
  t = jnp.asarray(t)
  dtype = t.dtype if jnp.issubdtype(t.dtype, jnp.floating) else jnp.float32
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=dtype) / half)
  args = scale * t.astype(dtype)[..., None] * freqs
  emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
  if dim % 2:
    emb = jnp.concatenate([emb, jnp.zeros_like(emb[..., :1])], axis=-1)
  return emb


def _times(t, x):
  """t as a (B,) array in x's dtype; None -> zeros, a scalar -> broadcast."""
  b = x.shape[0]
  if t is None:
    return jnp.zeros((b,), x.dtype)
  return jnp.broadcast_to(jnp.asarray(t, x.dtype), (b,))


class TimeEmbedding(nn.Module):
  """t (B,) -> (B, features): sinusoidal_embedding(t, freq_dim, scale), Dense, swish, Dense."""
  features: int = 64
  freq_dim: int = 32
  scale: float = 1000.0

  @nn.compact
  def __call__(self, t):
    emb = sinusoidal_embedding(t, self.freq_dim, self.scale)
    return nn.Dense(self.features)(nn.swish(nn.Dense(self.features)(emb)))


class TimeMLPEnergy(nn.Module):
  """E(x, t) = scale * f(x, t): the toy PReLU MLP (2-100-100-1) with FiLM time conditioning.

  Hidden layer l is PReLU(Dense(h) * (1 + gamma_l(t)) + beta_l(t)), [gamma_l, beta_l] a linear
  map of the time embedding. Time must act multiplicatively: the network is piecewise linear in
  x, so grad_x E -- all that DSM sees -- depends on additive (bias-like) terms only through the
  activation pattern, and their DSM gradient is zero almost everywhere; gamma_l(t) rescales
  grad_x E smoothly. At a fixed t, gamma and beta are constants absorbed by the Dense layer, so
  E(., 0) spans the same family as `bibound_jax.models.toy.MLPEnergy`. Learnable scalar output
  scale (init 1) and confinement as in MLPEnergy (`scale_param`, `confine`). With
  `spectral_norm` the x-path layers are spectrally normalised (as in MLPEnergy) and the time
  modulation is bounded, 1 + gamma in (0, 2) (gamma = tanh of a linear map), so
  ||grad_x E(., t)|| <= |scale| 2^L (times the PReLU slopes) at every t: the energy grows its
  slope through the scalar and the slopes, not by inflating every weight.
  """
  hidden: Sequence[int] = (100, 100)
  time_features: int = 64
  freq_dim: int = 32
  time_scale: float = 1000.0
  spectral_norm: bool = False
  scale_param: str = 'linear'     # toy.output_scale
  confine: float = 0.0            # toy.confinement
  confine_radius: float = 2.5

  @nn.compact
  def __call__(self, x, t=None):
    h = jnp.reshape(x, (x.shape[0], -1))
    times = _times(t, x)
    temb = TimeEmbedding(self.time_features, self.freq_dim, self.time_scale)(times)
    dense = SNDense if self.spectral_norm else nn.Dense
    for i, width in enumerate(self.hidden):
      gamma, beta = jnp.split(nn.Dense(2 * width)(temb), 2, axis=-1)
      if self.spectral_norm:
        gamma = jnp.tanh(gamma)
      h = dense(width)(h) * (1.0 + gamma) + beta
      h = nn.PReLU(negative_slope_init=PRELU_INIT, name=f'PReLU_{i}')(h)
    out = dense(1)(h)[:, 0] + confinement(x, self.confine, self.confine_radius)
    return output_scale(self, self.scale_param) * out

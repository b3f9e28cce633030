"""SNGAN/BigGAN-style ResNet energy and generator for 64x64x3 (CelebA).

Conventions as in `bibound_jax.models.toy`: the energy maps x (B, H, W, 3) to (B,), treating
samples independently (no BatchNorm); the generator maps z (B, latent_dim) to (B, H, W, 3) in
[-1, 1] and takes `train` for its BatchNorm. Layout of the SNGAN ResNet for 64x64 (Miyato et al.,
2018; Mimicry's SNGAN-64), channels in units of `width` (64 by default):

  G: z -> Dense -> 4x4x16w; GBlock up to 8w (8x8), 4w (16x16), 2w (32x32), w (64x64);
     BN -> ReLU -> conv3x3 to 3 -> tanh.
     GBlock(c): BN -> ReLU -> upsample(nearest x2) -> conv3x3(c) -> BN -> ReLU -> conv3x3(c),
     plus shortcut upsample -> conv1x1(c).
  E: OptimizedDBlock to w (32x32); DBlock down to 2w (16), 4w (8), 8w (4), 16w (2x2);
     ReLU -> global sum pool -> Dense(1).
     OptimizedDBlock(c): conv3x3(c) -> ReLU -> conv3x3(c) -> avgpool2, plus avgpool2 -> conv1x1(c).
     DBlock(c): ReLU -> conv3x3(c) -> ReLU -> conv3x3(c) -> avgpool2, plus conv1x1(c) -> avgpool2.

`channel_multipliers` changes the depth: the generator upsamples len - 1 times from 4x4 (so
H = 4 * 2^(len-1)), the energy downsamples once per multiplier. Spectral norm (`SNConv`,
`SNDense`) is optional in both networks: SNGAN puts it on the energy only, BigGAN on both.
`TimeResNetEnergy` is the time-conditioned E(x, t) for the diffusion upper bound.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from bibound_jax.models.dcgan import _BN, _check_shape, conv_layer, dense_layer, film
from bibound_jax.models.time_energy import TimeEmbedding, _times

ENERGY_MULTIPLIERS = (1, 2, 4, 8, 16)
GENERATOR_MULTIPLIERS = (16, 8, 4, 2, 1)


def _avg_pool(h):
  return nn.avg_pool(h, (2, 2), (2, 2))


def _upsample(h):
  return jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)


class GBlock(nn.Module):
  """Generator residual block with 2x nearest-neighbour upsampling (see the module docstring)."""
  features: int
  spectral_norm: bool = False
  sn_mode: str = 'kernel'
  power_iters: int = 10

  @nn.compact
  def __call__(self, x, train: bool = True):
    conv = conv_layer(self.spectral_norm, self.sn_mode, self.power_iters)
    h = nn.relu(nn.BatchNorm(use_running_average=not train, **_BN)(x))
    h = conv(self.features, (3, 3), name='conv1')(_upsample(h))
    h = nn.relu(nn.BatchNorm(use_running_average=not train, **_BN)(h))
    h = conv(self.features, (3, 3), name='conv2')(h)
    return h + conv(self.features, (1, 1), name='shortcut')(_upsample(x))


class DBlock(nn.Module):
  """Energy residual block, optionally 2x average-pool downsampling, no normalisation.

  optimized=True is SNGAN's first block (no pre-activation on the raw image, pool before the
  shortcut conv). With `temb`, FiLM h * (1 + gamma(t)) + beta(t) after the first conv.
  """
  features: int
  downsample: bool = True
  optimized: bool = False
  spectral_norm: bool = False
  sn_mode: str = 'kernel'
  power_iters: int = 10

  @nn.compact
  def __call__(self, x, temb=None):
    conv = conv_layer(self.spectral_norm, self.sn_mode, self.power_iters)
    h = x if self.optimized else nn.relu(x)
    h = conv(self.features, (3, 3), name='conv1')(h)
    if temb is not None:
      h = film(h, temb, name='film')
    h = conv(self.features, (3, 3), name='conv2')(nn.relu(h))
    if self.downsample:
      h = _avg_pool(h)
    sc = x
    if self.optimized:
      sc = conv(self.features, (1, 1), name='shortcut')(_avg_pool(x) if self.downsample else x)
    elif self.downsample or x.shape[-1] != self.features:
      sc = conv(self.features, (1, 1), name='shortcut')(x)
      sc = _avg_pool(sc) if self.downsample else sc
    return h + sc


def _resnet_energy(cfg, x, temb=None):
  """Shared body of ResNetEnergy and TimeResNetEnergy, built in the caller's compact scope."""
  h = x
  for i, mult in enumerate(cfg.channel_multipliers):
    h = DBlock(cfg.width * mult, downsample=True, optimized=(i == 0),
               spectral_norm=cfg.spectral_norm, sn_mode=cfg.sn_mode,
               power_iters=cfg.power_iters, name=f'block{i}')(h, temb)
  h = jnp.sum(nn.relu(h), axis=(1, 2))   # Global sum pooling (SNGAN).
  return dense_layer(cfg.spectral_norm, cfg.power_iters)(1, name='head')(h)[:, 0]


class ResNetEnergy(nn.Module):
  """E(x): SNGAN ResNet discriminator (module docstring). x (B, H, W, C) -> (B,).

  H and W must be divisible by 2^len(channel_multipliers) (64 -> 2x2 before the sum pool).
  """
  data_shape: Sequence[int] = (64, 64, 3)
  width: int = 64
  channel_multipliers: Sequence[int] = ENERGY_MULTIPLIERS
  spectral_norm: bool = False
  sn_mode: str = 'kernel'
  power_iters: int = 10

  @nn.compact
  def __call__(self, x):
    _check_shape(self, x)
    return _resnet_energy(self, x)


class ResNetGenerator(nn.Module):
  """G(z): SNGAN ResNet generator (module docstring). z (B, d) -> (B, H, W, C) in [-1, 1]."""
  latent_dim: int = 128
  data_shape: Sequence[int] = (64, 64, 3)
  width: int = 64
  channel_multipliers: Sequence[int] = GENERATOR_MULTIPLIERS
  spectral_norm: bool = False
  sn_mode: str = 'kernel'
  power_iters: int = 10

  @nn.compact
  def __call__(self, z, train: bool = True):
    mults = tuple(self.channel_multipliers)
    scale = 2 ** (len(mults) - 1)
    h0, w0 = self.data_shape[0] // scale, self.data_shape[1] // scale
    if (h0 * scale, w0 * scale) != tuple(self.data_shape[:2]):
      raise ValueError(f'data_shape {tuple(self.data_shape)} is not divisible by {scale} '
                       f'({len(mults) - 1} upsamplings).')
    dense = dense_layer(self.spectral_norm, self.power_iters)
    conv = conv_layer(self.spectral_norm, self.sn_mode, self.power_iters)
    h = dense(h0 * w0 * self.width * mults[0], name='project')(z)
    h = jnp.reshape(h, (z.shape[0], h0, w0, self.width * mults[0]))
    for i, mult in enumerate(mults[1:]):
      h = GBlock(self.width * mult, self.spectral_norm, self.sn_mode, self.power_iters,
                 name=f'block{i}')(h, train)
    h = nn.relu(nn.BatchNorm(use_running_average=not train, **_BN)(h))
    return jnp.tanh(conv(self.data_shape[2], (3, 3), name='out')(h))


class TimeResNetEnergy(nn.Module):
  """E(x, t): `ResNetEnergy` with FiLM time conditioning in every residual block.

  t (B,), a scalar or None (= 0) -> `TimeEmbedding`; in each block, after the first conv,
  h * (1 + gamma_l(t)) + beta_l(t) with [gamma_l, beta_l] a Dense of the embedding (per
  channel). The scale gamma is what lets denoising score matching train the conditioning: the
  net is piecewise linear in x, so additive terms reach grad_x E only through the activation
  pattern (see `bibound_jax.models.dcgan.TimeDCGANEnergy`). At fixed t the FiLM constants are
  absorbed by the convs, so E(., 0) spans the `ResNetEnergy` family. Spectral norm does not
  cover gamma.
  """
  data_shape: Sequence[int] = (64, 64, 3)
  width: int = 64
  channel_multipliers: Sequence[int] = ENERGY_MULTIPLIERS
  spectral_norm: bool = False
  sn_mode: str = 'kernel'
  power_iters: int = 10
  time_features: int = 128
  freq_dim: int = 64
  time_scale: float = 1000.0

  @nn.compact
  def __call__(self, x, t=None):
    _check_shape(self, x)
    temb = TimeEmbedding(self.time_features, self.freq_dim, self.time_scale)(_times(t, x))
    return _resnet_energy(self, x, temb)

"""DCGAN energies and generators for 32x32x3 (CIFAR-10, ImageNet32) and 28x28x3 (StackedMNIST).

docs/experiments.md, "Images". Conventions as in `bibound_jax.models.toy`: an energy maps
x (B, H, W, 3) to (B,) and treats samples independently (no BatchNorm); a generator maps
z (B, latent_dim) to (B, H, W, 3) in [-1, 1] and takes `train` for its BatchNorm (running
averages when train=False, which makes it per-sample too). Both carry `data_shape`; generators carry `latent_dim`.

* `DCGANEnergy` / `DCGANGenerator`: the "standard CNN" of the SNGAN paper (Miyato et al., 2018,
  Table 3), which is also the DCGAN of the authors' code. E: conv3x3 64, conv4x4/2 64, conv3x3 128,
  conv4x4/2 128, conv3x3 256, conv4x4/2 256, conv3x3 512 (padding 1), LeakyReLU(0.1) after each,
  linear head on the flattened 4x4x512 map. G: linear to 4x4x512 (+BN+ReLU), three
  ConvTranspose(4x4, stride 2)+BN+ReLU to 256, 128, 64 channels, conv3x3 to 3, tanh.
* `DCGAN28Energy` / `DCGAN28Generator`: the StackedMNIST CNN variant, DCGAN-style 5x5 stride-2
  convs. E: conv5x5/2 64 (28->14), 128 (->7), 256 (->4), LeakyReLU, linear head. G: linear to
  7x7x256 (+BN+ReLU), two ConvTranspose(5x5, stride 2)+BN+ReLU to 128 (14x14) and 64 (28x28),
  conv3x3 to 3, tanh.
* `TimeDCGANEnergy`: E(x, t) for the diffusion upper bound (see its docstring).
* `SNConv`: the stateless spectrally normalised convolution used when `spectral_norm=True`.

Every convolution runs through `bibound_jax.models.conv`: lax's on accelerators, the same maths
as matrix products on CPU (whose convolution gradients, and a gradient penalty's double backward,
otherwise hit slow paths: `benchmarks/conv_impl.py`). Parameters are those of `nn.Conv` /
`nn.ConvTranspose`.

Channel counts scale with `width` (64 above). Spectral norm, when on, wraps every conv and the
dense head of the energies; generators never use it (as in SNGAN).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bibound_jax.models import conv as conv_lib
from bibound_jax.models.time_energy import TimeEmbedding, _times
from bibound_jax.models.toy import SNDense

SN_MODES = ('kernel', 'operator')
# PyTorch BatchNorm2d defaults: momentum 0.1 there == 0.9 in Flax.
_BN = dict(momentum=0.9, epsilon=1e-5)


def _normalize(v):
  return v / (jnp.linalg.norm(v) + 1e-12)


class SNConv(nn.Module):
  """2-D convolution (NHWC, kernel HWIO) with a spectrally normalised kernel, W / sigma(W).

  Stateless like `bibound_jax.models.toy.SNDense`: sigma comes from `power_iters` power
  iterations started at a fixed vector, with the singular vectors u and v held fixed in the
  backward pass (stop_gradient) and sigma = u^T W v differentiable in W (as PyTorch's
  spectral_norm). Parameters are named like `nn.Conv`'s ('kernel', 'bias').

  mode:
    'kernel' (default; SNGAN, Miyato et al. 2018, and the authors' code): sigma is the largest
      singular value of the kernel reshaped to a (kh * kw * c_in, c_out) matrix, started from
      v = ones(c_out) / sqrt(c_out). Cheap, but it does *not* bound the convolution's operator
      norm by 1: the conv's norm is at most sqrt(kh * kw) * sigma (equality for a kernel with
      identical taps); measured at random initialisation: 1.3-1.5 * sigma for the 64..512
      channel layers, 2.5 * sigma for the 3-channel input conv.
    'operator': sigma is the operator norm of the convolution itself (stride and zero padding
      included) on inputs of this call's spatial size, by power iteration on the linear map
      (the transpose by `jax.linear_transpose`) started from a fixed N(0, I) vector (NumPy seed 0).
      The normalised layer is then 1-Lipschitz up to the power iteration's under-estimate of
      sigma. Costs 2 * power_iters single-image convolutions per call.

  A fixed start converges only as far as `power_iters` allows (no persistent u as in PyTorch):
  measured at initialisation, 10 iterations under-estimate sigma by ~3-5% in both modes (so the
  normalised norm is ~1.04), 30 iterations by ~1-2%.
  """
  features: int
  kernel_size: Sequence[int] = (3, 3)
  strides: Sequence[int] = (1, 1)
  padding: Any = 'SAME'
  use_bias: bool = True
  power_iters: int = 10   # >= 1; run in a lax.fori_loop (a small graph: fast compiles).
  mode: str = 'kernel'

  def _conv(self, x, kernel):
    padding = self.padding if isinstance(self.padding, str) else tuple(
        tuple(p) for p in self.padding)
    return conv_lib.conv_general_dilated(
        x, kernel, window_strides=tuple(self.strides), padding=padding,
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))

  def sigma(self, kernel, spatial_shape):
    """The spectral norm estimate (differentiable in `kernel`; u and v held fixed)."""
    if self.power_iters < 1:
      raise ValueError(f'power_iters must be >= 1, got {self.power_iters}.')
    w = jax.lax.stop_gradient(kernel)
    if self.mode == 'kernel':
      mat, full = w.reshape(-1, self.features), kernel.reshape(-1, self.features)
      v = jnp.ones((self.features,), kernel.dtype) / math.sqrt(self.features)
      v = jax.lax.fori_loop(0, self.power_iters - 1,
                            lambda _, v: _normalize(mat.T @ _normalize(mat @ v)), v)
      u = _normalize(mat @ v)
      v = _normalize(mat.T @ u)
      return u @ full @ v
    if self.mode == 'operator':
      shape = (1,) + tuple(spatial_shape) + (kernel.shape[2],)
      conv = lambda v: self._conv(v, w)
      conv_t = jax.linear_transpose(conv, jax.ShapeDtypeStruct(shape, kernel.dtype))
      # Fixed start: N(0, I) from NumPy at trace time (a constant; no PRNG in the graph).
      v0 = np.random.default_rng(0).standard_normal(shape)
      v = jnp.asarray(v0 / np.linalg.norm(v0), kernel.dtype)
      v = jax.lax.fori_loop(0, self.power_iters - 1,
                            lambda _, v: _normalize(conv_t(_normalize(conv(v)))[0]), v)
      u = _normalize(conv(v))
      v = _normalize(conv_t(u)[0])
      return jnp.vdot(u, self._conv(v, kernel))
    raise ValueError(f'SNConv mode must be one of {SN_MODES}, got {self.mode!r}.')

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (kh, kw, x.shape[-1], self.features))
    y = self._conv(x, kernel / self.sigma(kernel, x.shape[1:3]))
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (self.features,))
    return y


def conv_layer(spectral_norm: bool, sn_mode: str = 'kernel', power_iters: int = 10):
  """A constructor conv(features, kernel_size, strides, padding) -> nn.Conv or SNConv."""
  if sn_mode not in SN_MODES:
    raise ValueError(f'sn_mode must be one of {SN_MODES}, got {sn_mode!r}.')
  def make(features, kernel_size, strides=(1, 1), padding='SAME', name=None):
    if spectral_norm:
      return SNConv(features, kernel_size, strides, padding, power_iters=power_iters,
                    mode=sn_mode, name=name)
    return nn.Conv(features, kernel_size, strides, padding=padding, name=name,
                   conv_general_dilated=conv_lib.conv_general_dilated)
  return make


def dense_layer(spectral_norm: bool, power_iters: int = 10):
  """A constructor dense(features) -> nn.Dense or SNDense (a dense map's operator norm is its
  matrix norm, so both SN modes agree here)."""
  def make(features, name=None):
    if spectral_norm:
      return SNDense(features, power_iters=power_iters, name=name)
    return nn.Dense(features, name=name)
  return make


def _check_shape(module, x):
  if tuple(x.shape[1:]) != tuple(module.data_shape):
    raise ValueError(f'{type(module).__name__} expects inputs (B, *{tuple(module.data_shape)}), '
                     f'got {x.shape}.')


# ---------------------------------------------------------------------------------------------
# 32x32 (SNGAN standard CNN).
# ---------------------------------------------------------------------------------------------

# (kernel, stride, channel multiplier of `width`) of the SNGAN standard CNN discriminator.
DCGAN_ENERGY_LAYERS = ((3, 1, 1), (4, 2, 1), (3, 1, 2), (4, 2, 2), (3, 1, 4), (4, 2, 4),
                       (3, 1, 8))


def _dcgan_trunk(cfg, x, temb=None, film_all=False):
  """The energy's conv trunk -> (B, H/8, W/8, 8 * width), its layers created in the calling
  module's compact scope; with `temb`, FiLM after the first conv (after every conv if film_all).
  `cfg` supplies width, negative_slope, spectral_norm, sn_mode, power_iters."""
  conv = conv_layer(cfg.spectral_norm, cfg.sn_mode, cfg.power_iters)
  h = x
  for i, (k, s, mult) in enumerate(DCGAN_ENERGY_LAYERS):
    h = conv(cfg.width * mult, (k, k), (s, s), padding=((1, 1), (1, 1)), name=f'conv{i}')(h)
    if temb is not None and (i == 0 or film_all):
      h = film(h, temb, name=f'film{i}')
    h = nn.leaky_relu(h, cfg.negative_slope)
  return h


class DCGANEnergy(nn.Module):
  """E(x): the SNGAN standard CNN (see the module docstring); x (B, H, W, C) -> (B,).

  Padding 1 on every conv (PyTorch's padding=1: 3x3 keeps the size, 4x4/2 halves it), so H and W
  must be divisible by 8 (32 -> 4x4x512 before the head).
  """
  data_shape: Sequence[int] = (32, 32, 3)
  width: int = 64
  negative_slope: float = 0.1
  spectral_norm: bool = False
  sn_mode: str = 'kernel'
  power_iters: int = 10

  @nn.compact
  def __call__(self, x):
    _check_shape(self, x)
    h = _dcgan_trunk(self, x)
    h = jnp.reshape(h, (x.shape[0], -1))
    return dense_layer(self.spectral_norm, self.power_iters)(1, name='head')(h)[:, 0]


class DCGANGenerator(nn.Module):
  """G(z): linear to (H/8)x(W/8)x(8 width) + BN + ReLU, three ConvTranspose(4x4, stride 2) +
  BN + ReLU (4w, 2w, w channels), conv3x3 to C channels, tanh. z (B, d) -> (B, H, W, C).

  The BN + ReLU after the linear layer is in the SNGAN code (chainer `DCGANGenerator`) and its
  PyTorch ports, though not in the paper's table. ConvTranspose padding ((2, 2), (2, 2)) with
  `transpose_kernel=True` is exactly PyTorch's ConvTranspose2d(4, stride=2, padding=1).
  """
  latent_dim: int = 128
  data_shape: Sequence[int] = (32, 32, 3)
  width: int = 64

  @nn.compact
  def __call__(self, z, train: bool = True):
    h0, w0 = self.data_shape[0] // 8, self.data_shape[1] // 8
    h = nn.Dense(h0 * w0 * 8 * self.width)(z)
    h = jnp.reshape(h, (z.shape[0], h0, w0, 8 * self.width))
    h = nn.relu(nn.BatchNorm(use_running_average=not train, **_BN)(h))
    for mult in (4, 2, 1):
      h = conv_lib.ConvTranspose(mult * self.width, (4, 4), (2, 2),
                                 padding=((2, 2), (2, 2)), transpose_kernel=True)(h)
      h = nn.relu(nn.BatchNorm(use_running_average=not train, **_BN)(h))
    h = nn.Conv(self.data_shape[2], (3, 3), padding=((1, 1), (1, 1)),
                conv_general_dilated=conv_lib.conv_general_dilated)(h)
    return jnp.tanh(h)


# ---------------------------------------------------------------------------------------------
# 28x28 (StackedMNIST CNN).
# ---------------------------------------------------------------------------------------------

class DCGAN28Energy(nn.Module):
  """E(x): conv5x5/2 to w, 2w, 4w channels ('SAME': 28 -> 14 -> 7 -> 4), LeakyReLU after each,
  linear head on the flattened 4x4x4w map. x (B, 28, 28, C) -> (B,)."""
  data_shape: Sequence[int] = (28, 28, 3)
  width: int = 64
  negative_slope: float = 0.1
  spectral_norm: bool = False
  sn_mode: str = 'kernel'
  power_iters: int = 10

  @nn.compact
  def __call__(self, x):
    _check_shape(self, x)
    conv = conv_layer(self.spectral_norm, self.sn_mode, self.power_iters)
    h = x
    for i, mult in enumerate((1, 2, 4)):
      h = conv(self.width * mult, (5, 5), (2, 2), padding='SAME', name=f'conv{i}')(h)
      h = nn.leaky_relu(h, self.negative_slope)
    h = jnp.reshape(h, (x.shape[0], -1))
    return dense_layer(self.spectral_norm, self.power_iters)(1, name='head')(h)[:, 0]


class DCGAN28Generator(nn.Module):
  """G(z): linear to 7x7x4w + BN + ReLU, two ConvTranspose(5x5, stride 2, 'SAME') + BN + ReLU
  (2w channels at 14x14, w at 28x28), conv3x3 to C channels, tanh. z (B, d) -> (B, 28, 28, C)."""
  latent_dim: int = 100
  data_shape: Sequence[int] = (28, 28, 3)
  width: int = 64

  @nn.compact
  def __call__(self, z, train: bool = True):
    h0, w0 = self.data_shape[0] // 4, self.data_shape[1] // 4
    h = nn.Dense(h0 * w0 * 4 * self.width)(z)
    h = jnp.reshape(h, (z.shape[0], h0, w0, 4 * self.width))
    h = nn.relu(nn.BatchNorm(use_running_average=not train, **_BN)(h))
    for mult in (2, 1):
      h = conv_lib.ConvTranspose(mult * self.width, (5, 5), (2, 2), padding='SAME')(h)
      h = nn.relu(nn.BatchNorm(use_running_average=not train, **_BN)(h))
    h = nn.Conv(self.data_shape[2], (3, 3), padding=((1, 1), (1, 1)),
                conv_general_dilated=conv_lib.conv_general_dilated)(h)
    return jnp.tanh(h)


# ---------------------------------------------------------------------------------------------
# Time-conditioned energy for the diffusion bound.
# ---------------------------------------------------------------------------------------------

def film(h, temb, name=None):
  """h * (1 + gamma(t)) + beta(t), [gamma, beta] = Dense(2 C)(temb) per channel."""
  gamma, beta = jnp.split(nn.Dense(2 * h.shape[-1], name=name)(temb), 2, axis=-1)
  return h * (1.0 + gamma[:, None, None, :]) + beta[:, None, None, :]


class TimeDCGANEnergy(nn.Module):
  """E(x, t): `DCGANEnergy` with the time embedding injected after the first conv.

  t (B,), a scalar or None (= 0) -> `TimeEmbedding` (sinusoidal(t * time_scale) -> Dense ->
  swish -> Dense, `time_features` wide). A Dense on the embedding gives, per channel of the
  first conv, a bias beta(t) *and* a scale gamma(t): h1 = conv1(x) * (1 + gamma(t)) + beta(t).
  The scale is needed because the network is piecewise linear in x: a bias alone changes
  grad_x E -- all that denoising score matching sees -- only through the activation pattern, so
  its DSM gradient is zero almost everywhere (see `bibound_jax.models.time_energy`); gamma(t)
  rescales grad_x E smoothly. `film_every_layer=True` conditions every conv the same way.
  At a fixed t, gamma and beta are constants absorbed by the first conv, so E(., 0) spans the
  same family as `DCGANEnergy`. With spectral_norm the convs are normalised but gamma is not,
  so the Lipschitz constant of E(., t) is scaled by max |1 + gamma(t)|.
  """
  data_shape: Sequence[int] = (32, 32, 3)
  width: int = 64
  negative_slope: float = 0.1
  spectral_norm: bool = False
  sn_mode: str = 'kernel'
  power_iters: int = 10
  time_features: int = 128
  freq_dim: int = 64
  time_scale: float = 1000.0
  film_every_layer: bool = False

  @nn.compact
  def __call__(self, x, t=None):
    _check_shape(self, x)
    temb = TimeEmbedding(self.time_features, self.freq_dim, self.time_scale)(_times(t, x))
    h = _dcgan_trunk(self, x, temb, self.film_every_layer)
    h = jnp.reshape(h, (x.shape[0], -1))
    return dense_layer(self.spectral_norm, self.power_iters)(1, name='head')(h)[:, 0]


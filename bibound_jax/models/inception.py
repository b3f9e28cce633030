"""Inception-v3 as used for FID and Inception Score (docs/experiments.md, "Images").

This is the 2015 TensorFlow graph (`inception-2015-12-05`, the network of the original FID and IS
code) in the form pytorch-fid ported it: torchvision's Inception-v3 layout with 1008 output classes,
no auxiliary head, and pytorch-fid's `FIDInceptionA/C/E_1/E_2` patches:

  * Mixed_5b-d (A), Mixed_6b-e (C), Mixed_7b (E_1): the pool branch is a 3x3/1 *average* pool with
    padding 1 that does NOT count the padded zeros (TF's average pool; `count_include_pad=False`);
  * Mixed_7c (E_2): the pool branch is a 3x3/1 *max* pool with padding 1 (a quirk of the 2015
    graph; the paper and torchvision use an average pool there).

Every convolution is bias-free and followed by BatchNorm (inference mode only: running statistics,
eps = 1e-3) and ReLU. Module and parameter names follow the PyTorch module tree
(`Mixed_5b/branch5x5_2/conv/kernel`, `.../bn/scale`, batch_stats `.../bn/mean`, `.../bn/var`,
`fc/kernel`, `fc/bias`) so `bibound_jax.metrics.inception_weights` maps pytorch-fid's state dict
one to one.

Input: images (B, H, W, 3) NHWC in [-1, 1] (a single channel is repeated to RGB). They are resized
to 299 x 299 with bilinear interpolation, half-pixel centres and no antialiasing, i.e.
`F.interpolate(..., mode='bilinear', align_corners=False)` as in pytorch-fid (the 2015 TF graph
resized differently, so pytorch-fid's FID, and ours, can differ slightly from TF numbers).
pytorch-fid takes [0, 1] and maps 2x - 1 after resizing; resizing is affine-invariant, so mapping
first is the same. Use `uint8_to_inception` for uint8 images.

Output `(pool3, logits)`:
  pool3:  (B, 2048) float32, the global average of Mixed_7c: the FID features.
  logits: (B, 1008). The 2015 graph has 1008 classes (1000 ImageNet classes plus 8 unused). The
    reference Inception Score (Salimans et al. 2016; also torch-fidelity's `logits_unbiased`)
    uses softmax over all 1008 of `pool3 @ W` WITHOUT the bias, and that is what this module
    returns by default (`logits_bias=False`). `logits_bias=True` adds `fc/bias`: the classifier's
    own logits. `metrics.fid.inception_score(logits)` follows the reference (all 1008 columns);
    `num_classes=1000` there restricts the softmax to the first 1000 instead.

Random weights (`init_variables`) only exercise the plumbing; real FID/IS numbers need the
converted pytorch-fid weights (`bibound_jax.metrics.inception_weights`).
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

INPUT_SIZE = 299
MIN_INPUT_SIZE = 75        # the smallest input for which every VALID conv/pool is non-empty
NUM_FEATURES = 2048
NUM_CLASSES = 1008
BN_EPSILON = 1e-3

_he_normal = nn.initializers.variance_scaling(2.0, 'fan_in', 'truncated_normal')


class BasicConv2d(nn.Module):
  """Conv (no bias) -> BatchNorm (running statistics, eps 1e-3) -> ReLU."""
  features: int
  kernel_size: Sequence[int]
  strides: int = 1
  padding: Sequence[int] = (0, 0)   # symmetric (rows, cols) padding, as torch's `padding`

  @nn.compact
  def __call__(self, x: Array) -> Array:
    ph, pw = self.padding
    x = nn.Conv(self.features, tuple(self.kernel_size), strides=(self.strides, self.strides),
                padding=((ph, ph), (pw, pw)), use_bias=False, kernel_init=_he_normal,
                name='conv')(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name='bn')(x)
    return nn.relu(x)


def _avg_pool_3x3(x: Array) -> Array:
  """3x3/1 average pool, padding 1, padded zeros not counted (TF's average pool)."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=False)


def _max_pool_3x3(x: Array) -> Array:
  """3x3/1 max pool, padding 1 (the pool branch of Mixed_7c in the FID graph)."""
  return nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))


def _max_pool_3x3_s2(x: Array) -> Array:
  """3x3/2 max pool without padding (torch's MaxPool2d(3, stride=2))."""
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding='VALID')


class FIDInceptionA(nn.Module):
  """Mixed_5b-d: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool(no pad count)-1x1."""
  pool_features: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b1 = BasicConv2d(64, (1, 1), name='branch1x1')(x)
    b5 = BasicConv2d(48, (1, 1), name='branch5x5_1')(x)
    b5 = BasicConv2d(64, (5, 5), padding=(2, 2), name='branch5x5_2')(b5)
    b3 = BasicConv2d(64, (1, 1), name='branch3x3dbl_1')(x)
    b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(b3)
    b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name='branch3x3dbl_3')(b3)
    bp = BasicConv2d(self.pool_features, (1, 1), name='branch_pool')(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Mixed_6a (grid reduction 35 -> 17): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b3 = BasicConv2d(384, (3, 3), strides=2, name='branch3x3')(x)
    bd = BasicConv2d(64, (1, 1), name='branch3x3dbl_1')(x)
    bd = BasicConv2d(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
    bd = BasicConv2d(96, (3, 3), strides=2, name='branch3x3dbl_3')(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class FIDInceptionC(nn.Module):
  """Mixed_6b-e: factorised 7x7 convolutions; avgpool(no pad count)-1x1 pool branch."""
  channels_7x7: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c7 = self.channels_7x7
    b1 = BasicConv2d(192, (1, 1), name='branch1x1')(x)
    b7 = BasicConv2d(c7, (1, 1), name='branch7x7_1')(x)
    b7 = BasicConv2d(c7, (1, 7), padding=(0, 3), name='branch7x7_2')(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name='branch7x7_3')(b7)
    bd = BasicConv2d(c7, (1, 1), name='branch7x7dbl_1')(x)
    bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_2')(bd)
    bd = BasicConv2d(c7, (1, 7), padding=(0, 3), name='branch7x7dbl_3')(bd)
    bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_4')(bd)
    bd = BasicConv2d(192, (1, 7), padding=(0, 3), name='branch7x7dbl_5')(bd)
    bp = BasicConv2d(192, (1, 1), name='branch_pool')(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Mixed_7a (grid reduction 17 -> 8): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b3 = BasicConv2d(192, (1, 1), name='branch3x3_1')(x)
    b3 = BasicConv2d(320, (3, 3), strides=2, name='branch3x3_2')(b3)
    b7 = BasicConv2d(192, (1, 1), name='branch7x7x3_1')(x)
    b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name='branch7x7x3_2')(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name='branch7x7x3_3')(b7)
    b7 = BasicConv2d(192, (3, 3), strides=2, name='branch7x7x3_4')(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class FIDInceptionE(nn.Module):
  """Mixed_7b (`pool='avg'`, FIDInceptionE_1) and Mixed_7c (`pool='max'`, FIDInceptionE_2)."""
  pool: str = 'avg'

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b1 = BasicConv2d(320, (1, 1), name='branch1x1')(x)
    b3 = BasicConv2d(384, (1, 1), name='branch3x3_1')(x)
    b3 = jnp.concatenate([
        BasicConv2d(384, (1, 3), padding=(0, 1), name='branch3x3_2a')(b3),
        BasicConv2d(384, (3, 1), padding=(1, 0), name='branch3x3_2b')(b3)], axis=-1)
    bd = BasicConv2d(448, (1, 1), name='branch3x3dbl_1')(x)
    bd = BasicConv2d(384, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
    bd = jnp.concatenate([
        BasicConv2d(384, (1, 3), padding=(0, 1), name='branch3x3dbl_3a')(bd),
        BasicConv2d(384, (3, 1), padding=(1, 0), name='branch3x3dbl_3b')(bd)], axis=-1)
    if self.pool == 'avg':
      pooled = _avg_pool_3x3(x)
    elif self.pool == 'max':
      pooled = _max_pool_3x3(x)
    else:
      raise ValueError(f"pool must be 'avg' or 'max', got {self.pool!r}.")
    bp = BasicConv2d(192, (1, 1), name='branch_pool')(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


def resize_bilinear(x: Array, size: int = INPUT_SIZE) -> Array:
  """(B, H, W, C) -> (B, size, size, C), bilinear, half-pixel centres, no antialiasing.

  Matches torch's `F.interpolate(mode='bilinear', align_corners=False)` (edge samples clamp).
  """
  if x.shape[1] == size and x.shape[2] == size:
    return x
  return jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), method='bilinear',
                          antialias=False)


def uint8_to_inception(images) -> Array:
  """uint8 images in {0..255} -> float32 in [-1, 1]: x / 127.5 - 1."""
  return jnp.asarray(images, jnp.float32) / 127.5 - 1.0


class InceptionV3(nn.Module):
  """The FID Inception-v3: images in [-1, 1] -> (pool3 (B, 2048), logits (B, 1008)).

  resize_input: resize to 299 x 299 first (pytorch-fid's default). With False the network runs
    at the given size (>= 75); parameter shapes do not depend on it.
  logits_bias: add `fc/bias` to the logits (False: the reference-IS logits, see module docstring).
  """
  resize_input: bool = True
  logits_bias: bool = False

  @nn.compact
  def __call__(self, x: Array) -> tuple[Array, Array]:
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
      raise ValueError(f'Expected images (B, H, W, 3) or (B, H, W, 1), got shape {x.shape}.')
    x = jnp.asarray(x, jnp.float32)
    if x.shape[-1] == 1:
      x = jnp.repeat(x, 3, axis=-1)
    if self.resize_input:
      x = resize_bilinear(x)
    if min(x.shape[1], x.shape[2]) < MIN_INPUT_SIZE:
      raise ValueError(f'Inception-v3 needs inputs of at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}'
                       f'; got {x.shape[1]}x{x.shape[2]} (set resize_input=True).')
    x = BasicConv2d(32, (3, 3), strides=2, name='Conv2d_1a_3x3')(x)          # 149
    x = BasicConv2d(32, (3, 3), name='Conv2d_2a_3x3')(x)                     # 147
    x = BasicConv2d(64, (3, 3), padding=(1, 1), name='Conv2d_2b_3x3')(x)     # 147
    x = _max_pool_3x3_s2(x)                                                  # 73
    x = BasicConv2d(80, (1, 1), name='Conv2d_3b_1x1')(x)                     # 73
    x = BasicConv2d(192, (3, 3), name='Conv2d_4a_3x3')(x)                    # 71
    x = _max_pool_3x3_s2(x)                                                  # 35
    x = FIDInceptionA(32, name='Mixed_5b')(x)                                # 35 x 256
    x = FIDInceptionA(64, name='Mixed_5c')(x)                                # 35 x 288
    x = FIDInceptionA(64, name='Mixed_5d')(x)                                # 35 x 288
    x = InceptionB(name='Mixed_6a')(x)                                       # 17 x 768
    x = FIDInceptionC(128, name='Mixed_6b')(x)
    x = FIDInceptionC(160, name='Mixed_6c')(x)
    x = FIDInceptionC(160, name='Mixed_6d')(x)
    x = FIDInceptionC(192, name='Mixed_6e')(x)                               # 17 x 768
    x = InceptionD(name='Mixed_7a')(x)                                       # 8 x 1280
    x = FIDInceptionE('avg', name='Mixed_7b')(x)                             # 8 x 2048
    x = FIDInceptionE('max', name='Mixed_7c')(x)                             # 8 x 2048
    pool3 = jnp.mean(x, axis=(1, 2))
    fc = _Logits(NUM_CLASSES, name='fc')
    return pool3, fc(pool3, self.logits_bias)


class _Logits(nn.Module):
  """The 1008-way softmax layer with a bias that can be left out (the reference IS leaves it out)."""
  features: int

  @nn.compact
  def __call__(self, x: Array, use_bias: bool) -> Array:
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,))
    y = x @ kernel
    return y + bias if use_bias else y


def _init_input() -> Array:
  return jnp.zeros((1, MIN_INPUT_SIZE, MIN_INPUT_SIZE, 3), jnp.float32)


@functools.cache
def abstract_variables() -> dict:
  """The variable tree {'params', 'batch_stats'} as `jax.ShapeDtypeStruct`s (no computation)."""
  return jax.eval_shape(InceptionV3(resize_input=False).init, jax.random.key(0), _init_input())


def init_variables(key: Array) -> dict:
  """Random variables {'params', 'batch_stats'}: He-normal conv kernels, LeCun-normal `fc/kernel`,
  zero biases, BN scale 1 / bias 0 / mean 0 / var 1.

  The shapes come from `abstract_variables()`; the values from ONE Gaussian draw of NumPy's
  generator seeded with the key's data, split over the kernels. (`InceptionV3().init` gives the
  same kind of weights, but its ~95 separate RNG calls take about a minute to compile on CPU.)
  """
  flat = flax.traverse_util.flatten_dict(abstract_variables())
  kernels = [k for k in flat if k[-1] == 'kernel']
  total = sum(math.prod(flat[k].shape) for k in kernels)
  rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().astype(np.uint64))
  draws = rng.standard_normal(total, np.float32)
  out, offset = {}, 0
  for path, leaf in flat.items():
    if path[-1] == 'kernel':
      size = math.prod(leaf.shape)
      fan_in = math.prod(leaf.shape[:-1])
      gain = 1.0 if path[-2] == 'fc' else 2.0
      value = draws[offset:offset + size].reshape(leaf.shape) * np.sqrt(gain / fan_in)
      offset += size
    elif path[-1] in ('scale', 'var'):
      value = np.ones(leaf.shape, leaf.dtype)
    else:
      value = np.zeros(leaf.shape, leaf.dtype)
    out[path] = np.asarray(value, leaf.dtype)
  return flax.traverse_util.unflatten_dict(jax.device_put(out))

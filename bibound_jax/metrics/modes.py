"""StackedMNIST mode metrics (docs/experiments.md, "StackedMNIST").

Each sample's three channels are classified by an MNIST classifier; its mode is
m = 100 * digit_ch0 + 10 * digit_ch1 + digit_ch2 in {0, ..., 999}. Over N samples (the paper:
26,000) report the number of distinct modes and

    KL(p || U) = sum_m p_m log(p_m / (1 / M)) = sum_m p_m log(p_m * M),   0 log 0 = 0,

where p_m is the fraction of samples in mode m and M = 1000. KL = 0 iff the histogram is exactly
uniform; a single mode gives log M.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

NUM_MODES = 1000


def _as_modes(modes, num_modes: int | None) -> np.ndarray:
  modes = np.asarray(modes).reshape(-1)
  if modes.size and not np.issubdtype(modes.dtype, np.integer):
    raise TypeError(f'modes must be integers, got {modes.dtype}.')
  modes = modes.astype(np.int64)
  if modes.size and (modes.min() < 0 or (num_modes is not None and modes.max() >= num_modes)):
    raise ValueError(f'modes must lie in [0, {num_modes}), got range [{modes.min()}, '
                     f'{modes.max()}].')
  return modes


def mode_histogram(modes, num_modes: int = NUM_MODES) -> np.ndarray:
  """int64 (num_modes,): how many samples fall in each mode."""
  return np.bincount(_as_modes(modes, num_modes), minlength=num_modes)


def count_modes(modes) -> int:
  """Number of distinct modes among the samples."""
  return int(np.unique(_as_modes(modes, None)).size)


def kl_to_uniform(modes, num_modes: int = NUM_MODES) -> float:
  """KL(sample mode histogram || uniform over num_modes) = sum_m p_m log(p_m * num_modes), nats."""
  counts = mode_histogram(modes, num_modes)
  total = counts.sum()
  if total == 0:
    raise ValueError('kl_to_uniform needs at least one sample.')
  p = counts[counts > 0] / total
  return float(max(np.sum(p * np.log(p * num_modes)), 0.0))   # Clip float round-off below 0.


def mode_digits(modes) -> np.ndarray:
  """int64 (..., 3) channel digits (d0, d1, d2) of modes 100 d0 + 10 d1 + d2."""
  modes = np.asarray(modes)
  return np.stack([modes // 100, modes // 10 % 10, modes % 10], axis=-1)


def kl_decomposition(modes) -> dict:
  """Where KL(p || U) comes from. With p_c the digit histogram of channel c (U_10 uniform),

      KL(p || U_1000) = sum_c KL(p_c || U_10) + TC(p),   TC = sum_c H(p_c) - H(p) >= 0,

  (plug-in estimates; the identity holds exactly for the empirical histograms). The marginal
  terms say which digits a channel over- or under-produces; the total correlation TC says how
  far the channels are from independent. `plugin_bias` = (M - 1) / (2 N) is the first-order
  bias of the plug-in KL for N samples of the exactly uniform p: the real-data floor."""
  modes = _as_modes(modes, NUM_MODES)
  digits = mode_digits(modes)

  def entropy(values, k):
    p = np.bincount(values, minlength=k) / values.size
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))
  marginal = [math.log(10) - entropy(digits[:, c], 10) for c in range(3)]
  joint = entropy(modes, NUM_MODES)
  return {'kl': math.log(NUM_MODES) - joint, 'kl_channels': marginal,
          'total_correlation': sum(math.log(10) - m for m in marginal) - joint,
          'plugin_bias': (NUM_MODES - 1) / (2 * modes.size)}


def pixel_statistics(images) -> dict:
  """Two numbers that tell digit-like images from pixel noise (uint8 (N, H, W, C), 0..255):

      neighbour_correlation  Pearson correlation of horizontally adjacent pixels x[h, w] and
                             x[h, w + 1] over all images and channels (i.i.d. noise: 0;
                             strokes and background: near 1);
      saturated_fraction     share of pixels within 2% of either end of the range, |x| > 0.98
                             on the [-1, 1] scale (MNIST: most pixels are background or ink).
  """
  x = np.asarray(images)
  if x.ndim != 4 or x.dtype != np.uint8:
    raise ValueError(f'pixel_statistics takes uint8 images (N, H, W, C), got {x.dtype} '
                     f'{x.shape}: pass the `images` array of an eval/samples_<step>.npz row.')
  x = x.astype(np.float64) / 127.5 - 1.0
  left, right = x[:, :, :-1, :].ravel(), x[:, :, 1:, :].ravel()
  return {'neighbour_correlation': float(np.corrcoef(left, right)[0, 1]),
          'saturated_fraction': float(np.mean(np.abs(x) > 0.98))}


@functools.partial(jax.jit, static_argnums=0)
def _channel_digits(classifier_apply, params, x):
  """(B, 28, 28, 3) -> int32 (B, 3): argmax digit of each channel, classified separately."""
  b = x.shape[0]
  channels = jnp.moveaxis(x, -1, 1).reshape(b * 3, 28, 28, 1)   # Sample-major: (b, c) -> 3b + c.
  digits = jnp.argmax(classifier_apply(params, channels), axis=-1)
  return digits.reshape(b, 3).astype(jnp.int32)


def classify_stacked(classifier_apply: Callable[[Any, jax.Array], jax.Array], params,
                     x, batch_size: int = 1000) -> np.ndarray:
  """Modes of StackedMNIST samples: each channel classified on its own, in jitted batches.

  Args:
    classifier_apply: `(params, images (B, 28, 28, 1) in [-1, 1]) -> logits (B, 10)`, e.g.
      `bibound_jax.metrics.mnist_classifier.classifier_apply`. Pass the same function object on
      every call: it is a static jit argument, so a fresh lambda recompiles.
    params: the classifier's parameters.
    x: (N, 28, 28, 3) samples in [-1, 1] (NumPy or JAX array).
    batch_size: samples per jitted call; the last batch is padded, so one compilation serves all.

  Returns:
    int32 (N,) modes 100 * d0 + 10 * d1 + d2.
  """
  n = x.shape[0]
  if x.ndim != 4 or x.shape[1:] != (28, 28, 3):
    raise ValueError(f'x must be (N, 28, 28, 3), got {x.shape}.')
  batch_size = max(1, min(batch_size, n))
  out = []
  for start in range(0, n, batch_size):
    chunk = jnp.asarray(x[start:start + batch_size], jnp.float32)
    pad = batch_size - chunk.shape[0]
    if pad:
      chunk = jnp.pad(chunk, ((0, pad), (0, 0), (0, 0), (0, 0)))
    out.append(np.asarray(_channel_digits(classifier_apply, params, chunk))[:batch_size - pad])
  digits = np.concatenate(out) if out else np.zeros((0, 3), np.int32)
  return (100 * digits[:, 0] + 10 * digits[:, 1] + digits[:, 2]).astype(np.int32)

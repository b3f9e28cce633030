"""Convolutions as matrix products, for XLA:CPU (same maths as `jax.lax`, fast derivatives).

XLA:CPU runs some of the convolutions that autodiff derives from a conv on a slow generic path:
the kernel gradient of a transposed (input-dilated) convolution, and, in a gradient penalty's
double backward, the kernel gradient of every conv's input gradient, strided or not. Measured on
one core of the dev machine (batch 64, DCGAN-32 layers; `python -m benchmarks.conv_impl`):
forward passes 30-150 ms, those gradients 1.3-16 s. Written as slices and one matrix product,
every derivative of any order is again slices, pads and matrix products.

* Conv, strided or not (`_patches`, im2col): y[m] = sum_a xpad[s m + a] K[a] (per spatial
  axis) = cols[m] @ K.reshape(-1, O), cols stacking the k^n strided slices of xpad.
* Input-dilated (transposed) conv (`_dilated`), y[o] = sum_a xd[o + a] K[a] with xd the padded
  s-dilated input: output phase r (o = s m + r) sees only the taps a = a0 + s j with
  a0 = (lo - r) mod s, on input index m + e0 + j, e0 = (r + a0 - lo) / s. So each of the s^n
  phases is a stride-1 conv with the sub-kernel K[a0::s], and y interleaves the phases. The
  FLOPs are those of the transposed conv itself (no multiplications by inserted zeros).

`conv_general_dilated` is a drop-in for `jax.lax.conv_general_dilated` (and `nn.Conv`'s
`conv_general_dilated` field); `conv_transpose` mirrors `jax.lax.conv_transpose`;
`ConvTranspose` is `flax.linen.ConvTranspose` (same parameters and initialisers, so checkpoints
are interchangeable) on top of it. impl='auto' takes the matrix-product route on the CPU backend
only (accelerators' conv kernels have no such slow paths) and for channels-last convs without
feature groups or kernel dilation; anything else goes to lax. Results equal lax's up to
floating-point summation order (tests/test_conv.py: 1e-12 in float64, values and derivatives).
"""
from __future__ import annotations

import contextlib
import itertools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def _channels_last(ndim: int):
  spatial = 'HWDXYZ'[:ndim - 2]
  return ('N' + spatial + 'C', spatial + 'IO', 'N' + spatial + 'C')


def _is_channels_last(lhs_shape, rhs_shape, dimension_numbers) -> bool:
  ndim = len(lhs_shape)
  if dimension_numbers is None or ndim < 3:
    return False
  want = lax.conv_dimension_numbers(lhs_shape, rhs_shape, _channels_last(ndim))
  return lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers) == want


def _patches(x, kernel, strides, pads, precision=None, preferred_element_type=None):
  """Conv (channels-last, explicit pads that may be negative) as one matrix product:
  y[m] = sum_a xpad[s m + a] K[a] = cols[m] @ K.reshape(-1, O), where cols stacks the k^n
  strided slices xpad[a : a + s (M - 1) + 1 : s] along the channel axis (im2col)."""
  n = x.ndim - 2
  ks = kernel.shape[:n]
  config = [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in pads] + [(0, 0, 0)]
  x = lax.pad(x, jnp.zeros((), x.dtype), config)
  out = [max(0, (l - k) // s + 1) for l, k, s in zip(x.shape[1:-1], ks, strides)]
  if min(out) == 0:
    return jnp.zeros((x.shape[0], *out, kernel.shape[-1]), preferred_element_type or x.dtype)
  cols = [x[(slice(None),) + tuple(slice(a, a + s * (m - 1) + 1, s) for a, s, m in
                                   zip(taps, strides, out))]
          for taps in itertools.product(*(range(k) for k in ks))]
  cols = jnp.concatenate(cols, axis=-1) if len(cols) > 1 else cols[0]
  return jnp.einsum('...i,io->...o', cols, kernel.reshape(-1, kernel.shape[-1]),
                    precision=precision, preferred_element_type=preferred_element_type)


def _dilated(x, kernel, dilation, pads, precision, preferred_element_type):
  """Input-dilated conv (explicit pads) as one stride-1 conv per output phase."""
  n = x.ndim - 2
  ks = kernel.shape[:n]
  lengths = x.shape[1:-1]
  out = [(l - 1) * s + 1 + lo + hi - k + 1 for l, s, (lo, hi), k in
         zip(lengths, dilation, pads, ks)]
  if min(out) <= 0:
    return None
  per_phase = [-(-o // s) for o, s in zip(out, dilation)]    # M = ceil(out / s) outputs
  # Per axis and phase r: first tap a0, number of taps, first input offset e0.
  axes = []
  for k, s, (lo, _) in zip(ks, dilation, pads):
    phases = []
    for r in range(s):
      a0 = (lo - r) % s
      phases.append((a0, max(0, -(-(k - a0) // s)), (r + a0 - lo) // s))
    axes.append(phases)
  left = [max(0, -min(p[2] for p in ph)) for ph in axes]
  right = [max(0, max(p[2] + m + p[1] - 1 for p in ph) - l) for ph, m, l in
           zip(axes, per_phase, lengths)]
  xp = jnp.pad(x, [(0, 0)] + list(zip(left, right)) + [(0, 0)])
  b, co = x.shape[0], kernel.shape[-1]
  ys = []
  for phase in itertools.product(*axes):
    if any(t == 0 for _, t, _ in phase):
      ys.append(jnp.zeros((b, *per_phase, co), x.dtype if preferred_element_type is None
                          else preferred_element_type))
      continue
    window = tuple(slice(e0 + lft, e0 + lft + m + t - 1)
                   for (_, t, e0), lft, m in zip(phase, left, per_phase))
    sub = kernel[tuple(slice(a0, None, s) for (a0, _, _), s in zip(phase, dilation))]
    ys.append(_patches(xp[(slice(None),) + window], sub, (1,) * n, [(0, 0)] * n, precision,
                       preferred_element_type))
  # Interleave: y[s m + r] = y_r[m] on every axis, then crop to the output size.
  y = jnp.stack(ys, axis=1).reshape((b,) + tuple(dilation) + tuple(per_phase) + (co,))
  perm = (0,) + sum(((1 + n + i, 1 + i) for i in range(n)), ()) + (2 * n + 1,)
  y = y.transpose(perm).reshape((b,) + tuple(m * s for m, s in zip(per_phase, dilation))
                                + (co,))
  return y[(slice(None),) + tuple(slice(0, o) for o in out)]


IMPLS = ('auto', 'lax', 'patches')
_scope = ['auto']   # what impl='auto' means inside `impl_scope`


@contextlib.contextmanager
def impl_scope(impl: str):
  """Inside the block, impl='auto' (what the models use) means `impl`; it acts when a function
  is traced, so jit-compile inside it. For comparisons such as benchmarks/conv_impl.py."""
  _resolve(impl)
  _scope.append(impl)
  try:
    yield
  finally:
    _scope.pop()


def _resolve(impl: str) -> str:
  if impl not in IMPLS:
    raise ValueError(f'conv impl must be one of {IMPLS}, got {impl!r}.')
  if impl == 'auto':
    impl = _scope[-1]
  if impl == 'auto':
    return 'patches' if jax.default_backend() == 'cpu' else 'lax'
  return impl


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None,
                         impl: str = 'auto'):
  """`jax.lax.conv_general_dilated`, computed as matrix products when `impl` is 'patches'
  ('auto': on the CPU backend) for channels-last convs without groups or kernel dilation:
  strided ones by `_patches`, input-dilated (transposed) ones phase by phase (`_dilated`)."""
  n = lhs.ndim - 2
  strides = tuple(window_strides)
  lhs_d = tuple(lhs_dilation) if lhs_dilation is not None else (1,) * n
  rhs_d = tuple(rhs_dilation) if rhs_dilation is not None else (1,) * n
  fallback = lambda: lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
      feature_group_count, batch_group_count, precision, preferred_element_type)
  plain = (feature_group_count == 1 and batch_group_count == 1 and set(rhs_d) <= {1}
           and _is_channels_last(lhs.shape, rhs.shape, dimension_numbers))
  strided, dilated = set(strides) != {1}, set(lhs_d) != {1}
  if _resolve(impl) == 'lax' or not plain or (strided and dilated):
    return fallback()
  if isinstance(padding, str):
    in_shape = [(l - 1) * d + 1 for l, d in zip(lhs.shape[1:-1], lhs_d)]
    pads = lax.padtype_to_pads(in_shape, rhs.shape[:n], strides, padding)
  else:
    pads = [tuple(p) for p in padding]
  if not dilated:
    return _patches(lhs, rhs, strides, pads, precision, preferred_element_type)
  y = _dilated(lhs, rhs, lhs_d, pads, precision, preferred_element_type)
  return fallback() if y is None else y


def conv_transpose(lhs, rhs, strides: Sequence[int], padding, transpose_kernel: bool = False,
                   precision=None, preferred_element_type=None, impl: str = 'auto'):
  """`jax.lax.conv_transpose` (channels-last, no kernel dilation) through
  `conv_general_dilated` above: 'SAME'/'VALID' are the forward conv's padding, explicit pairs
  the padding of the dilated input, as in lax."""
  n = lhs.ndim - 2
  ks = rhs.shape[:n]
  if isinstance(padding, str):
    if padding not in ('SAME', 'VALID'):
      raise ValueError(f"padding must be 'SAME', 'VALID' or explicit pairs, got {padding!r}.")
    pads = []
    for k, s in zip(ks, strides):
      if padding == 'SAME':
        total, before = k + s - 2, (k - 1 if s > k - 1 else int(np.ceil((k + s - 2) / 2)))
      else:
        total, before = k + s - 2 + max(k - s, 0), k - 1
      pads.append((before, total - before))
  else:
    pads = [tuple(p) for p in padding]
  if transpose_kernel:
    rhs = jnp.flip(rhs, axis=tuple(range(n))).swapaxes(-1, -2)
  return conv_general_dilated(lhs, rhs, (1,) * n, pads, lhs_dilation=tuple(strides),
                              dimension_numbers=_channels_last(lhs.ndim), precision=precision,
                              preferred_element_type=preferred_element_type, impl=impl)


class ConvTranspose(nn.Module):
  """`flax.linen.ConvTranspose` (channels-last, no kernel dilation, no circular padding) on
  `conv_transpose`: same parameter names, shapes and initialisers."""
  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] | None = None
  padding: Any = 'SAME'
  use_bias: bool = True
  transpose_kernel: bool = False
  kernel_init: Any = nn.linear.default_kernel_init
  bias_init: Any = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x):
    n = len(self.kernel_size)
    strides = tuple(self.strides) if self.strides is not None else (1,) * n
    c = x.shape[-1]
    shape = tuple(self.kernel_size) + ((self.features, c) if self.transpose_kernel
                                       else (c, self.features))
    kernel = self.param('kernel', self.kernel_init, shape, jnp.float32)
    dtype = jnp.promote_types(x.dtype, kernel.dtype)   # as flax's promote_dtype
    padding = self.padding if isinstance(self.padding, str) else tuple(
        tuple(p) for p in self.padding)
    y = conv_transpose(x.astype(dtype), kernel.astype(dtype), strides, padding,
                       self.transpose_kernel)
    if self.use_bias:
      y = y + self.param('bias', self.bias_init, (self.features,), jnp.float32).astype(dtype)
    return y

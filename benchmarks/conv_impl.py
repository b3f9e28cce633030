"""Convolutions: `jax.lax` against the matrix-product route of `bibound_jax.models.conv`.

    python -m benchmarks.conv_impl [--batch=64] [--repeats=3]

For the layers of the CIFAR-10 DCGAN (generator: three ConvTranspose 4x4/2; energy: the three
conv 4x4/2 and a conv 3x3/1), in one process and after compilation, times what training computes:
  forward            y = layer(x)
  grad kernel        d/dK sum(y^2)                       (every training step)
  grad input         d/dx sum(y^2)                       (vjp of the generator, GP term)
  GP grad kernel     d/dK ||d/dx sum(tanh(layer(x)))||^2  (gradient-penalty double backward)
and prints the median time of each route and the ratio lax / patches (above 1: patches is faster),
plus the largest relative difference of the results (same maths, other summation order).

Then, unless --steps is empty, whole DCGAN-32 training iterations of the listed presets
(default wgan_gp) compiled once with each route (`conv.impl_scope`) and timed alternately.
"""
from __future__ import annotations

import functools
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bibound_jax.models import conv

FLAGS = flags.FLAGS
flags.DEFINE_integer('batch', 64, 'Batch size.')
flags.DEFINE_integer('repeats', 3, 'Timed calls per entry (median).')
flags.DEFINE_integer('width', 64, 'DCGAN width (channels of the widest layer / 8).')
flags.DEFINE_list('steps', ['wgan_gp'], 'Presets whose whole CIFAR-10 DCGAN training iteration '
                  'is timed with both routes (empty: none).')
flags.DEFINE_integer('step_rounds', 3, 'Alternating timed iterations per route.')

DN = ('NHWC', 'HWIO', 'NHWC')


def _transposed(impl, x, k):
  pads = ((2, 2), (2, 2))          # PyTorch ConvTranspose2d(4, stride=2, padding=1)
  if impl == 'lax':
    return lax.conv_transpose(x, k, (2, 2), pads, dimension_numbers=DN, transpose_kernel=True)
  return conv.conv_transpose(x, k, (2, 2), pads, transpose_kernel=True, impl='patches')


def _strided(impl, x, k):
  if impl == 'lax':
    return lax.conv_general_dilated(x, k, (2, 2), ((1, 1), (1, 1)), dimension_numbers=DN)
  return conv.conv_general_dilated(x, k, (2, 2), ((1, 1), (1, 1)), dimension_numbers=DN,
                                   impl='patches')


def _same3x3(impl, x, k):
  if impl == 'lax':
    return lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=DN)
  return conv.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=DN,
                                   impl='patches')


def _layers(width):
  """(label, input shape, layer(impl, x, k), kernel shape) of the DCGAN's strided layers."""
  out = []
  for size, cin, cout in ((4, 8 * width, 4 * width), (8, 4 * width, 2 * width),
                          (16, 2 * width, width)):
    out.append((f'G ConvTranspose {size}x{size}x{cin} -> {2 * size}x{2 * size}x{cout}',
                (size, size, cin), _transposed, (4, 4, cout, cin)))
  for size, cin, cout in ((32, width, width), (16, 2 * width, 2 * width),
                          (8, 4 * width, 4 * width)):
    out.append((f'E conv 4x4/2 {size}x{size}x{cin} -> {size // 2}x{size // 2}x{cout}',
                (size, size, cin), _strided, (4, 4, cin, cout)))
  out.append((f'E conv 3x3/1 16x16x{2 * width} -> 16x16x{2 * width}', (16, 16, 2 * width),
              _same3x3, (3, 3, 2 * width, 2 * width)))
  return out


def _quantities(f):
  sq = lambda x, k: jnp.sum(f(x, k) ** 2)
  def gp(x, k):
    gx = jax.grad(lambda xx: jnp.sum(jnp.tanh(f(xx, k))))(x)
    return jnp.sum(gx ** 2)
  return {'forward': jax.jit(f),
          'grad kernel': jax.jit(jax.grad(sq, argnums=1)),
          'grad input': jax.jit(jax.grad(sq, argnums=0)),
          'GP grad kernel': jax.jit(jax.grad(gp, argnums=1))}


def _time(fn, *args):
  out = jax.block_until_ready(fn(*args))
  times = []
  for _ in range(FLAGS.repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return float(np.median(times)), out


def main(argv):
  del argv
  print(f'{jax.devices()[0].device_kind} x {jax.device_count()}, batch {FLAGS.batch}, '
        f'float32, median of {FLAGS.repeats}\n')
  print('| layer | quantity | lax (ms) | patches (ms) | lax / patches | max rel. diff |')
  print('| --- | --- | --- | --- | --- | --- |')
  totals = np.zeros(2)
  for label, shape, layer, kshape in _layers(FLAGS.width):
    kx, kk = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (FLAGS.batch, *shape))
    k = 0.05 * jax.random.normal(kk, kshape)
    q_lax = _quantities(functools.partial(layer, 'lax'))
    q_conv = _quantities(functools.partial(layer, 'patches'))
    for name in q_lax:
      t_lax, a = _time(q_lax[name], x, k)
      t_conv, b = _time(q_conv[name], x, k)
      totals += (t_lax, t_conv)
      diff = float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a)))
      print(f'| {label} | {name} | {1e3 * t_lax:.1f} | {1e3 * t_conv:.1f} | '
            f'{t_lax / t_conv:.2f} | {diff:.1e} |', flush=True)
  print(f'| all | sum | {1e3 * totals[0]:.1f} | {1e3 * totals[1]:.1f} | '
        f'{totals[0] / totals[1]:.2f} | |')
  if FLAGS.steps:
    time_steps()


def time_steps():
  """Whole training iterations of the CIFAR-10 DCGAN pair with each route."""
  from benchmarks.networks import get_config
  from bibound_jax import assemble, train
  print(f'\nCIFAR-10 DCGAN training iteration (batch 64), median of {FLAGS.step_rounds}\n')
  print('| preset | lax (s) | patches (s) | lax / patches | lax compile + 1st (s) | '
        'patches compile + 1st (s) |')
  print('| --- | --- | --- | --- | --- | --- |')
  for preset in FLAGS.steps:
    runs = {}
    for impl in ('lax', 'patches'):
      cfg = get_config('dcgan32', preset)
      _, state, rng = assemble.initial_state(cfg)
      batch = jax.random.uniform(jax.random.key(1), (1, cfg.optim.energy_steps,
                                                     cfg.train.batch_size,
                                                     *cfg.data.shape), minval=-1, maxval=1)
      step = train.make_train_step(cfg, donate=False)
      t = time.perf_counter()
      with conv.impl_scope(impl):           # the route is fixed when the step is traced
        jax.block_until_ready(step(state, batch, rng))
      runs[impl] = [step, state, batch, time.perf_counter() - t, []]
    for _ in range(FLAGS.step_rounds):
      for impl, run in runs.items():
        step, state, batch, _, times = run
        t = time.perf_counter()
        jax.block_until_ready(step(state, batch, rng))
        times.append(time.perf_counter() - t)
        assert step._cache_size() == 1
    med = {impl: float(np.median(run[4])) for impl, run in runs.items()}
    print(f"| {preset} | {med['lax']:.2f} | {med['patches']:.2f} | "
          f"{med['lax'] / med['patches']:.2f} | {runs['lax'][3]:.0f} | "
          f"{runs['patches'][3]:.0f} |", flush=True)


if __name__ == '__main__':
  app.run(main)

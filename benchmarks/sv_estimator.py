"""Accuracy vs time of the SV entropy estimators on a random generator.

    python -m benchmarks.sv_estimator                     # d=32, StackedMNIST-FC-sized generator
    python -m benchmarks.sv_estimator --latent_dim=100 --batch=64

For a randomly initialised BN+PReLU MLP generator z (d) -> 500 -> 1000 -> 2000 -> 28x28x3 (tanh),
the DESIGN.md section 7 StackedMNIST-FC network, prints for each estimator and iteration count:
the mean relative error of s_1 against `exact_smin` (positive = over-estimate = the entropy
bound is violated), the mean absolute error of the entropy term d log s_1 (nats per sample),
the mean reported residual, and the time per batched call relative to `exact_smin` (same
process, after compilation, median of repeats).
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags

from bibound_jax import train
from bibound_jax.bounds import entropy
from bibound_jax.models.toy import MLPGenerator

flags.DEFINE_integer('latent_dim', 32, 'Latent dimension d.')
flags.DEFINE_integer('batch', 16, 'Latents per batched call.')
flags.DEFINE_integer('repeats', 5, 'Timed repeats per estimator (median reported).')
flags.DEFINE_string('iters', '2,5,10,20', 'Iteration counts for the iterative estimators.')
FLAGS = flags.FLAGS


def _timed(fn, *args):
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(FLAGS.repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def main(argv):
  del argv
  d = FLAGS.latent_dim
  gen = MLPGenerator(latent_dim=d, data_shape=(28, 28, 3), hidden=(500, 1000, 2000),
                     output_activation='tanh')
  variables = gen.init(jax.random.key(0), jnp.zeros((2, d)), train=False)
  state = train.TrainState(step=0, apply_fn=gen.apply, params=variables['params'], tx=None,
                           opt_state=None, batch_stats=variables['batch_stats'])
  fn = train.inference_generator_fn(state)
  z = jax.random.normal(jax.random.key(1), (FLAGS.batch, d))

  def runner(est):
    return jax.jit(lambda p, zz, k: entropy.batched_log_volume(est, fn, p, zz, k))

  ref_fn = runner(entropy.exact_smin)
  ref = ref_fn(state.params, z, jax.random.key(2))
  t_ref = _timed(ref_fn, state.params, z, jax.random.key(2))
  s_ref = np.asarray(ref.smin)
  ld_fn = runner(entropy.exact_logdet)
  t_ld = _timed(ld_fn, state.params, z, jax.random.key(2))
  print(f'\nrandom StackedMNIST-FC generator, d={d}, D=2352, batch {FLAGS.batch}, '
        f'{jax.devices()[0].device_kind}; exact_smin: {1e3 * t_ref:.1f} ms/call\n')
  print('| estimator | iterations | rel. error s_1 | |error| of d log s_1 (nats) | residual '
        '| time / exact_smin |')
  print('| --- | --- | --- | --- | --- | --- |')
  print(f'| exact_logdet | - | - | - | - | {t_ld / t_ref:.2f} |')
  configs = [('lobpcg', dict(block_size=1)), ('lobpcg', dict(block_size=4)),
             ('inverse_cg', dict(cg_iters=10))]
  for name, kw in configs:
    for it in [int(i) for i in FLAGS.iters.split(',')]:
      f = runner(entropy.get_estimator(name, num_iters=it, **kw))
      out = f(state.params, z, jax.random.key(3))
      rel = np.asarray(out.smin) / s_ref - 1.0
      ent_err = d * np.abs(np.log(np.asarray(out.smin)) - np.log(s_ref))
      t = _timed(f, state.params, z, jax.random.key(3))
      label = f"{name} (block {kw['block_size']})" if 'block_size' in kw else \
          f"{name} (cg {kw['cg_iters']})"
      print(f'| {label} | {it} | {np.mean(rel):+.2%} | {np.mean(ent_err):.3f} | '
            f'{float(np.mean(out.residual)):.2e} | {t / t_ref:.2f} |')


if __name__ == '__main__':
  app.run(main)

"""Speed of the energy-as-a-model evaluation on one checkpoint: AIS log Z and p_theta samples.

    python -m benchmarks.model_eval --config=configs/stackedmnist.py:cpu,mi+diff \
        --workdir=DIR [--step=N] [--runs=3] [--num_samples=26000] [--one_core]

On seed 0 of checkpoint N (default: the latest) of the run in DIR (its config, overrides as
`python -m experiments.evaluate` takes them):
  1. the plain energy gradient, batched 2,000 at a time: the throughput every other row is a
     ratio to (gradients per second, measured in this process);
  2. `--runs` independent AIS runs of log Z at the final temperature count of the evaluation's
     convergence check (sample.ais_temps x 2^sample.ais_doublings), each timed, and whether
     they agree within 1 nat;
  3. AIS with twice the chains and twice the temperatures: how the time scales;
  4. `--num_samples` p_theta samples for mode counting (sample.num_steps MCMC steps from
     G's samples, eval.batch_size chains per compiled call).
Energy gradients per second count every gradient the kernels evaluate (AIS: (L + 1) per chain
and temperature with L leapfrog steps; MALA: 1 per chain and step, plus one at the start).
--one_core runs XLA:CPU on one thread (set before JAX starts). Numbers: docs/performance.md.
"""
from __future__ import annotations

import os
import sys

if '--one_core' in sys.argv:
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_cpu_multi_thread_eigen='
                             'false intra_op_parallelism_threads=1').strip()

import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'The run directory holding checkpoints/.')
flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
flags.DEFINE_integer('runs', 3, 'Independent AIS runs.')
flags.DEFINE_integer('num_samples', 26_000, 'p_theta samples to draw (0: none).')
flags.DEFINE_bool('one_core', False, 'One XLA:CPU thread.')
config_flags.DEFINE_config_file('config', None, 'The run\'s configuration file.',
                                lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def _timed(fn):
  start = time.perf_counter()
  out = jax.block_until_ready(fn())
  return out, time.perf_counter() - start


def main(argv):
  del argv
  from bibound_jax import assemble  # pylint: disable=import-outside-toplevel
  from bibound_jax import likelihood  # pylint: disable=import-outside-toplevel
  from experiments import checkpoints  # pylint: disable=import-outside-toplevel
  from experiments import model_eval  # pylint: disable=import-outside-toplevel
  from experiments import tasks  # pylint: disable=import-outside-toplevel

  config = FLAGS.config
  task = tasks.validate(config)
  nets, state, rng = assemble.initial_state(config)
  manager = checkpoints.open_manager(FLAGS.workdir, read_only=True)
  step = checkpoints.choose_step(manager, FLAGS.step)
  state, _ = checkpoints.restore(manager, state, rng, step=step, config=config)
  manager.close()
  seed_state = assemble.seed_slice(jax.device_get(state), 0)
  params = seed_state.energy.params
  model = model_eval.EnergyModel(config, nets.energy)
  s = config.sample
  support = s.support
  evaluator = task.evaluator(config, nets)
  print(f'{FLAGS.workdir} step {step}, seed {config.seed}: support {support}, AIS {s.ais_kernel} '
        f'({s.num_leapfrog} leapfrog) x {s.ais_chains} chains, chains {s.kernel}; '
        f'{jax.device_count()} device(s){", one core" if FLAGS.one_core else ""}.')

  # 1. The baseline: batched energy gradients.
  x = np.asarray(jax.random.uniform(jax.random.key(0), (2000,) + tuple(config.data.shape),
                                    minval=-1.0, maxval=1.0))
  grad = jax.jit(jax.grad(lambda xx: jnp.sum(model._energy(params, xx))))  # pylint: disable=protected-access
  _timed(lambda: grad(x))
  _, t = _timed(lambda: [grad(x) for _ in range(5)])
  base_rate = 5 * len(x) / t
  print(f'energy gradients, batch 2000: {base_rate:,.0f} per second (the baseline)')

  # 2. AIS runs at the final temperature count of the convergence check.
  std = model.standardiser(np.asarray(evaluator.held_out(config.seed))
                           if hasattr(evaluator, 'held_out') else x, support)
  temps = s.ais_temps * 2 ** s.ais_doublings

  def ais(chains, num_temps, key):
    fn = jax.jit(lambda k: likelihood.ais(
        model.log_density(params, support, std), model.dim, k, num_chains=chains,
        num_temps=num_temps, kernel_name=s.ais_kernel, num_leapfrog=s.num_leapfrog,
        step_size=s.step_size, base=model.base(support)))
    _, compile_s = _timed(lambda: fn.lower(key).compile())
    run, run_s = _timed(lambda: fn(key))
    grads = chains * num_temps * ((s.num_leapfrog if s.ais_kernel == 'hmc' else 1) + 1)
    return run, run_s, compile_s, grads

  estimates, times = [], []
  print(f'\nAIS, {s.ais_chains} chains x {temps} temperatures:')
  for i in range(FLAGS.runs):
    run, run_s, compile_s, grads = ais(s.ais_chains, temps, jax.random.key(100 + i))
    estimates.append(float(run.log_z))
    times.append(run_s)
    print(f'  run {i}: log Z >= {float(run.log_z):.2f} +- {float(run.stderr):.2f} (ESS '
          f'{float(run.ess):.1f}), {run_s:.1f} s + {compile_s:.1f} s compile, '
          f'{grads / run_s:,.0f} gradients/s ({grads / run_s / base_rate:.2f}x the baseline)')
  spread = max(estimates) - min(estimates)
  print(f'  {FLAGS.runs} runs within {spread:.2f} nats ({"<=" if spread <= 1 else ">"} 1 nat); '
        f'{sum(times) / len(times):.1f} s per run')

  print('\nScaling (one run each, time against the first run above):')
  for label, chains, num_temps in (('2x chains', 2 * s.ais_chains, temps),
                                   ('2x temperatures', s.ais_chains, 2 * temps)):
    run, run_s, _, grads = ais(chains, num_temps, jax.random.key(200))
    print(f'  {label}: {run_s:.1f} s ({run_s / times[0]:.2f}x), log Z >= {float(run.log_z):.2f} '
          f'+- {float(run.stderr):.2f} (ESS {float(run.ess):.1f}), {grads / run_s:,.0f} '
          'gradients/s')

  # 4. p_theta samples.
  if FLAGS.num_samples:
    n = FLAGS.num_samples
    start = np.resize(np.asarray(evaluator.samples(
        seed_state.generator, jax.random.normal(jax.random.key(1), (
            min(n, config.eval.batch_size), config.model.generator.latent_dim)),
        config.eval.batch_size)), (n,) + tuple(config.data.shape))
    chunk = config.eval.batch_size
    model.sample(params, start[:chunk], jax.random.key(2), std, chunk=chunk)   # compile
    samples, t = _timed(lambda: model.sample(params, start, jax.random.key(3), std,
                                             chunk=chunk))
    grads = n * (s.num_steps + 1)
    print(f'\np_theta samples: {n} chains x {s.num_steps} {s.kernel} steps in {t:.1f} s '
          f'({t / 60:.1f} min), {grads / t:,.0f} gradients/s ({grads / t / base_rate:.2f}x the '
          f'baseline), acceptance {samples.acceptance:.2f}')


if __name__ == '__main__':
  app.run(main)

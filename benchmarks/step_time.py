"""Steady-state time per training iteration of every bound pairing, as ratios to wgan_gp.

    python -m benchmarks.step_time --config=configs/toy.py:authors     # the authors' toy networks
    python -m benchmarks.step_time --config=configs/stackedmnist.py:cpu --iters=5
    python -m benchmarks.step_time --config=configs/toy.py:authors --num_seeds=1,2,4,8,16 \
        --pairings='sv+gp exact_smin'
    python -m benchmarks.step_time --config=configs/toy.py --program_size
    python -m benchmarks.step_time --config=configs/cifar10.py \
        --config.bounds.jacobian.latent_chunk=8

`--config` is the configuration as `python -m experiments.main` takes it, one per call: a file
and its argument (configs/toy.py:authors the authors' toy pair, configs/toy.py the default toy
pair, configs/stackedmnist.py the paper's StackedMNIST FC pair and :cpu its CPU-sized variant,
configs/stackedmnist.py:cnn the DCGAN-style pair, configs/cifar10.py the CIFAR-10 DCGAN pair),
then `--config.KEY=VALUE` overrides. Each pairing's config is that one with the pairing's preset
and estimator settings (PAIRINGS below), then the overrides again, so that a key the command
line names has its value in every pairing (experiments/cli.py); `train.num_seeds`
comes from --num_seeds. The 28 x 28 DCGAN energy has no time-conditioned form: its mi+diff row
times the FC energy (benchmarks/networks.py, `fc_energy_for_diffusion`).

Each pairing's jit-compiled step is compiled first, then all pairings are timed in interleaved
rounds (so machine noise hits them alike); the table gives the median ms per iteration over
rounds and its ratio to the wgan_gp step measured in the same process. With several
--num_seeds, each pairing also runs that many seeds in one compiled step (train.num_seeds), and
the table gives the time per seed-iteration and its ratio to the first seed count. Iterations run
`train.steps_per_call` per compiled call as in the run loop (the toy: 10);
--config.train.steps_per_call=1 times one call per iteration. For the CIFAR-10 DCGAN on CPU add
--config.bounds.jacobian.latent_chunk=8: the exact estimators' 128-column Jacobians of 64 latents
do not fit in memory at once.

--program_size times nothing: it prints each pairing's compiled step as a program (StableHLO
operations, seconds to trace and lower, seconds for XLA to compile) with ratios to wgan_gp,
which says where a cold start's compile time comes from (docs/performance.md, "Start-up").
"""
from __future__ import annotations

import collections
import os
import platform
import re
import sys
import time

import jax
import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags

from benchmarks import networks
from bibound_jax import assemble
from bibound_jax import train
from experiments import cli

config_flags.DEFINE_config_file('config', None, 'The configuration to time, configs/NAME.py[:ARG] '
                                '(then --config.KEY=VALUE overrides, for every pairing).',
                                lock_config=True)
flags.DEFINE_integer('rounds', 7, 'Interleaved timing rounds.')
flags.DEFINE_integer('iters', 100, 'Iterations per pairing per round.')
flags.DEFINE_string('pairings', '', 'Only these pairing labels, separated by ";" (default: '
                    'all; wgan_gp always runs).')
flags.DEFINE_list('num_seeds', ['1'], 'Seed counts (train.num_seeds) to time, e.g. 1,4,8,16; '
                  'the per-seed ratios are to the first.')
flags.DEFINE_integer('warmup', 3, 'Untimed iterations per pairing after compilation.')
flags.DEFINE_bool('program_size', False, 'Print the size and compile time of every pairing\'s '
                  'step instead of timing it.')
flags.mark_flags_as_required(['config'])
FLAGS = flags.FLAGS

# (label, preset, the pairing's changes to the config)
PAIRINGS = [
    ('wgan_gp', 'wgan_gp', {}),
    ('r1', 'r1', {}),
    ('none (lower only)', 'none', {}),
    ('sv+gp exact_logdet', 'sv+gp', {'bounds.jacobian.estimator': 'exact_logdet'}),
    ('sv+gp exact_smin', 'sv+gp', {'bounds.jacobian.estimator': 'exact_smin'}),
    ('sv+gp exact_smin, unshared', 'sv+gp', {'bounds.jacobian.estimator': 'exact_smin',
                                             'bounds.sv.share_vectors': False}),
    ('sv+gp exact_smin, num_latents 16', 'sv+gp', {'bounds.jacobian.estimator': 'exact_smin',
                                                   'bounds.jacobian.num_latents': 16}),
    ('sv+gp lobpcg (2 it)', 'sv+gp', {'bounds.jacobian.estimator': 'lobpcg',
                                      'bounds.jacobian.num_iters': 2}),
    ('sv+gp lobpcg (2 it), unshared', 'sv+gp', {'bounds.jacobian.estimator': 'lobpcg',
                                                'bounds.jacobian.num_iters': 2,
                                                'bounds.sv.share_vectors': False}),
    ('sv+gp lobpcg (block 4, 10 it)', 'sv+gp', {'bounds.jacobian.estimator': 'lobpcg',
                                                'bounds.jacobian.num_iters': 10,
                                                'bounds.jacobian.block_size': 4}),
    ('sv+gp inverse_cg (5x10)', 'sv+gp', {'bounds.jacobian.estimator': 'inverse_cg',
                                          'bounds.jacobian.num_iters': 5}),
    ('mi+diff (ba)', 'mi+diff', {}),
]


def pairing_config(preset, changes, num_seeds=1):
  """(config, iterations per compiled call) of one pairing: --config with the pairing's preset
  and changes, then the command line's overrides, then `num_seeds` seeds."""
  cfg = cli.derive(FLAGS.config, config_flags.get_override_values(FLAGS['config']),
                         preset, changes)
  networks.fc_energy_for_diffusion(cfg)
  cfg.train.num_seeds = num_seeds
  return cfg, cfg.train.steps_per_call


def given() -> str:
  """The config as the command line named it."""
  return cli.describe(config_flags.get_config_filename(FLAGS['config']),
                            config_flags.get_override_values(FLAGS['config']))


def program_size(preset, changes) -> tuple[collections.Counter, float, float]:
  """(StableHLO operation counts, trace + lower seconds, compile seconds) of the step the run
  loop compiles (train.steps_per_call iterations per call), from abstract shapes only."""
  cfg, k = pairing_config(preset, changes)
  _, state, rng = assemble.abstract_state(cfg)
  batch = jax.ShapeDtypeStruct((1, 1, cfg.train.batch_size, *cfg.data.shape), np.float32)
  step = train.make_train_steps(cfg, k) if k > 1 else train.make_train_step(cfg)
  t0 = time.perf_counter()
  lowered = step.lower(state, (batch,) * k if k > 1 else batch, rng)
  t1 = time.perf_counter()
  lowered.compile()
  t2 = time.perf_counter()
  ops = collections.Counter(re.findall(r'= "?([a-z]+\.[a-z_]+)', lowered.as_text()))
  return ops, t1 - t0, t2 - t1


def size_pairings(pairings) -> None:
  """The --program_size table."""
  rows = [(label, *program_size(preset, ch)) for label, preset, ch in pairings]
  base = next(r for r in rows if r[0] == 'wgan_gp')
  print(f'\n{given()} ({machine()}), the step as the run loop compiles it\n')
  print('| pairing | StableHLO ops | ratio to wgan_gp | commonest ops | trace + lower (s) '
        '| compile (s) | compile, ratio to wgan_gp |')
  print('| --- | --- | --- | --- | --- | --- | --- |')
  for label, ops, lower, comp in rows:
    common = ', '.join(f'{name.split(".")[1]} {n}' for name, n in ops.most_common(3))
    print(f'| {label} | {sum(ops.values())} | {sum(ops.values()) / sum(base[1].values()):.2f} '
          f'| {common} | {lower:.1f} | {comp:.1f} | {comp / base[3]:.2f} |', flush=True)


def make_runner(preset, changes, num_seeds=1):
  """run(n): n training iterations (a multiple of steps_per_call) of `num_seeds` seeds at once
  on a fixed batch."""
  cfg, k = pairing_config(preset, changes, num_seeds)
  # On the mesh, as the run loop places it: a fresh host state would make the second call
  # compile again (its outputs are committed replicated arrays), inside the timed iterations.
  _, state, _ = assemble.initial_state(cfg)
  batch = jax.random.uniform(jax.random.key(1),
                             (num_seeds, 1, cfg.train.batch_size, *cfg.data.shape),
                             minval=-1.0, maxval=1.0)
  if k > 1:
    step, batch = train.make_train_steps(cfg, k), (batch,) * k
  else:
    step = train.make_train_step(cfg)
  rng = jax.random.split(jax.random.key(2), num_seeds)
  t = time.perf_counter()
  holder = {'state': jax.block_until_ready(step(state, batch, rng)[0])}
  # XLA's own count of the compiled call's floating-point operations, per iteration.
  cost = step.lower(holder['state'], batch, rng).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float((cost or {}).get('flops', float('nan'))) / k
  print(f'  {preset} {changes}, {num_seeds} seed(s): compiled and ran once in '
        f'{time.perf_counter() - t:.1f} s', file=sys.stderr, flush=True)

  def run(n):
    s = holder['state']
    for _ in range(max(1, n // k)):
      s, _ = step(s, batch, rng)
    jax.block_until_ready(s)
    holder['state'] = s
    assert step._cache_size() == 1, f'{preset} {changes}: the step compiled again'
  if FLAGS.warmup > 0:
    run(FLAGS.warmup)
  return run, k, flops


def matmul_gflops(batch: int, width: int, reps: int = 200) -> float:
  """This core's throughput on the toy's typical kernel, a (batch x width) @ (width x width)
  product chained `reps` times in one compiled call: the ceiling for a step made of them."""
  a = jax.random.normal(jax.random.key(0), (batch, width))
  w = jax.random.normal(jax.random.key(1), (width, width)) / width ** 0.5
  f = jax.jit(lambda a: jax.lax.fori_loop(0, reps, lambda _, h: jax.numpy.tanh(h @ w), a))
  jax.block_until_ready(f(a))
  ts = []
  for _ in range(5):
    t = time.perf_counter()
    jax.block_until_ready(f(a))
    ts.append(time.perf_counter() - t)
  return 2 * batch * width * width * reps / float(np.median(ts)) / 1e9


def machine() -> str:
  """CPU model and the cores this process may use."""
  model = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      model = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
  except (OSError, StopIteration):
    pass
  return f'{model}, {len(os.sched_getaffinity(0))} usable cores'


def time_pairings() -> None:
  """Compile every pairing for every seed count, time them in interleaved rounds, print the
  table: ms per iteration of all seeds, per seed-iteration, and the ratios to one seed and to
  wgan_gp (same seed count)."""
  wanted = [w.strip() for w in FLAGS.pairings.split(';') if w.strip()]
  unknown = set(wanted) - {p[0] for p in PAIRINGS}
  if unknown:
    raise app.UsageError(f'Unknown --pairings {sorted(unknown)}; valid: '
                         f'{"; ".join(p[0] for p in PAIRINGS)}.')
  seed_counts = [int(n) for n in FLAGS.num_seeds]
  pairings = [p for p in PAIRINGS if p[0] == 'wgan_gp' or not wanted or p[0] in wanted]
  if FLAGS.program_size:
    size_pairings(pairings)
    return
  runners = [((label, n), *make_runner(preset, ch, n))
             for label, preset, ch in pairings for n in seed_counts]
  times = {key: [] for key, _, _, _ in runners}
  for _ in range(FLAGS.rounds):
    for key, run, k, _ in runners:
      iters = max(k, FLAGS.iters - FLAGS.iters % k)
      t = time.perf_counter()
      run(iters)
      times[key].append((time.perf_counter() - t) / iters)
      print(f'  round {len(times[key])}: {key[0]}, {key[1]} seed(s): '
            f'{1e3 * times[key][-1]:.2f} ms', file=sys.stderr, flush=True)
  med = {k: float(np.median(v)) for k, v in times.items()}
  per_call = sorted({k for _, _, k, _ in runners})
  print(f'\n{given()}, {jax.device_count()} x {jax.devices()[0].device_kind} '
        f'({machine()}), median of {FLAGS.rounds} rounds of {FLAGS.iters} iterations, '
        f'{"/".join(map(str, per_call))} per compiled call\n')
  print('| pairing | seeds | ms / iteration | ms / seed-iteration | per seed, ratio to 1 seed '
        '| ratio to wgan_gp | MFLOP / iteration | GFLOP/s |')
  print('| --- | --- | --- | --- | --- | --- | --- | --- |')
  for (label, n), _, _, flops in runners:
    t = med[(label, n)]
    one = med[(label, seed_counts[0])] / seed_counts[0]
    print(f'| {label} | {n} | {1e3 * t:.3f} | {1e3 * t / n:.3f} | {t / n / one:.2f} | '
          f"{t / med[('wgan_gp', n)]:.2f} | {flops / 1e6:.1f} | {flops / t / 1e9:.1f} |",
          flush=True)
  if tuple(FLAGS.config.data.shape) == (2,):   # a toy
    # A step whose GFLOP/s is near this ceiling is bound by arithmetic, not by per-kernel
    # overhead: running more seeds per call cannot make a seed cheaper.
    print(f'\nmatmul ceiling (200 x 100 @ 100 x 100, chained): {matmul_gflops(200, 100):.1f} '
          'GFLOP/s', flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected command-line arguments: {argv[1:]}')
  time_pairings()


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)

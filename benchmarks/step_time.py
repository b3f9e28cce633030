"""Steady-state time per training iteration of every bound pairing, as ratios to wgan_gp.

    python -m benchmarks.step_time                 # toy networks (2-100-100, batch 200)

Each pairing's jit-compiled step is compiled first, then all pairings are timed in interleaved
rounds (so machine noise hits them alike); the table gives the median ms per iteration over
rounds and its ratio to the wgan_gp step measured in the same process.
"""
from __future__ import annotations

import time

import jax
import numpy as np
from absl import app
from absl import flags

from bibound_jax import models
from bibound_jax import train

flags.DEFINE_integer('rounds', 7, 'Interleaved timing rounds.')
flags.DEFINE_integer('iters', 100, 'Iterations per pairing per round.')
FLAGS = flags.FLAGS

# (label, preset, bounds overrides)
PAIRINGS = [
    ('wgan_gp', 'wgan_gp', {}),
    ('r1', 'r1', {'estimator': 'exact_logdet'}),
    ('none (lower only)', 'none', {'estimator': 'exact_logdet'}),
    ('sv+gp exact_logdet', 'sv+gp', {'estimator': 'exact_logdet'}),
    ('sv+gp exact_smin', 'sv+gp', {'estimator': 'exact_smin'}),
    ('sv+gp lobpcg (2 it)', 'sv+gp', {'estimator': 'lobpcg', 'num_iters': 2}),
    ('sv+gp inverse_cg (5x10)', 'sv+gp', {'estimator': 'inverse_cg', 'num_iters': 5}),
    ('mi+diff (ba)', 'mi+diff', {}),
]


def toy_runner(preset, overrides):
  from configs import toy
  cfg = toy.get_config(preset)
  cfg.bounds.update(overrides)
  energy, gen = models.create_models(cfg.model, cfg.data.shape)
  state = train.create_state(cfg, energy, gen, jax.random.key(0), cfg.data.shape)
  step = train.make_train_step(cfg)
  batch = jax.random.normal(jax.random.key(1), (1, cfg.train.batch_size, 2))
  rng = jax.random.key(2)
  holder = {'state': step(state, batch, rng)[0]}

  def run(n):
    s = holder['state']
    for _ in range(n):
      s, _ = step(s, batch, rng)
    jax.block_until_ready(s)
    holder['state'] = s
  run(3)
  return run


def main(argv):
  del argv
  runners = [(label, toy_runner(preset, ov)) for label, preset, ov in PAIRINGS]
  times = {label: [] for label, _ in runners}
  for _ in range(FLAGS.rounds):
    for label, run in runners:
      t = time.perf_counter()
      run(FLAGS.iters)
      times[label].append((time.perf_counter() - t) / FLAGS.iters)
  med = {k: float(np.median(v)) for k, v in times.items()}
  base = med['wgan_gp']
  print(f'\ntoy networks (E 2-100-100-1, G 2-100-100-2, batch 200), {jax.device_count()} x '
        f'{jax.devices()[0].device_kind}\n')
  print('| pairing | ms / iteration | ratio to wgan_gp |')
  print('| --- | --- | --- |')
  for label, _ in runners:
    print(f'| {label} | {1e3 * med[label]:.3f} | {med[label] / base:.2f} |')


if __name__ == '__main__':
  app.run(main)

"""Bidirectional bounds vs the baselines on a 2-D toy: the table behind the README.

    python -m benchmarks.toy --steps=30000 --workdir=workdirs/bench_toy
    python -m benchmarks.toy --presets=sv+gp,none --dataset=swiss_roll --steps=150000

Trains each preset (configs/toy.py) for the same number of iterations with the same seed, then
prints one row per preset: the final evaluation (modes covered, high-quality fraction,
KL(data || model) on the grid, NLL by quadrature, KL(p_g || p_theta) = NLL - L_lo) and the
divergence record over training (largest |E| and largest E(fake) - E(real) seen at any log
step), plus the time per iteration. It also writes `divergence.png`: E(fake), E(real) and
their gap over training for every preset. The lower-bound-only preset `none` is expected to
diverge; sv+gp should stay bounded.
"""
from __future__ import annotations

import json
import os
import time

from absl import app
from absl import flags
from absl import logging

flags.DEFINE_string('workdir', 'workdirs/bench_toy', 'Where each preset gets a sub-directory.')
flags.DEFINE_string('presets', 'sv+gp,none,r1,wgan_gp', 'Comma-separated presets.')
flags.DEFINE_string('dataset', '25gaussians', 'Toy data set.')
flags.DEFINE_integer('steps', 30_000, 'Training iterations per preset.')
flags.DEFINE_integer('seed', 0, 'Seed shared by all presets.')
FLAGS = flags.FLAGS


def _records(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def run_preset(preset: str, workdir: str) -> dict:
  from configs import toy
  from experiments import run

  cfg = toy.get_config(f'{FLAGS.dataset},{preset}')
  cfg.seed = FLAGS.seed
  cfg.train.num_steps = FLAGS.steps
  cfg.train.eval_every = max(FLAGS.steps // 5, 1)
  cfg.train.checkpoint_every = FLAGS.steps
  start = time.perf_counter()
  run.train_and_evaluate(cfg, workdir)
  seconds = time.perf_counter() - start
  train_log = _records(os.path.join(workdir, 'metrics.jsonl'))
  with open(os.path.join(workdir, 'eval', 'history.json')) as f:
    final = json.load(f)[-1]
  return {
      'preset': preset, 'final': final, 'log': train_log,
      'max_abs_energy': max(max(abs(r['energy_real']), abs(r['energy_fake'])) for r in train_log),
      'max_gap': max(r['energy_fake'] - r['energy_real'] for r in train_log),
      'ms_per_step': 1e3 * seconds / FLAGS.steps,
  }


def plot(results, path):
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(12, 4))
  for r in results:
    steps = [x['step'] for x in r['log']]
    axes[0].plot(steps, [x['energy_fake'] for x in r['log']], label=f"{r['preset']} E(fake)")
    axes[1].plot(steps, [x['energy_fake'] - x['energy_real'] for x in r['log']], label=r['preset'])
  axes[0].set_yscale('symlog')
  axes[0].set_title('energy of generator samples')
  axes[1].set_yscale('symlog')
  axes[1].set_title('E(fake) - E(real)')
  for ax in axes:
    ax.set_xlabel('iteration')
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  results = [run_preset(p, os.path.join(FLAGS.workdir, p.replace('+', '_')))
             for p in FLAGS.presets.split(',')]
  plot(results, os.path.join(FLAGS.workdir, 'divergence.png'))
  header = (f'| preset | modes | hq | KL(data||model) | NLL | KL(p_g||p_theta) | max abs E | '
            f'max E(fake)-E(real) | ms/step |')
  print(f'\n{FLAGS.dataset}, {FLAGS.steps} iterations, seed {FLAGS.seed}\n')
  print(header)
  print('|' + ' --- |' * 9)
  for r in results:
    f = r['final']
    modes = f"{f['modes_covered']}/25" if 'modes_covered' in f else '-'
    hq = f"{f['hq_fraction']:.3f}" if 'hq_fraction' in f else '-'
    print(f"| {r['preset']} | {modes} | {hq} | {f['kl_data_model']:.3f} | {f['nll']:.3f} | "
          f"{f['kl_gen_model']:.3f} | {r['max_abs_energy']:.1f} | {r['max_gap']:.2f} | "
          f"{r['ms_per_step']:.2f} |")
  print(f"\ndivergence plot: {os.path.join(FLAGS.workdir, 'divergence.png')}")


if __name__ == '__main__':
  app.run(main)

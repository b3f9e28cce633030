"""StackedMNIST mode coverage over iterations and wall time, over seeds: the docs/results.md table.

    python -m benchmarks.stackedmnist --presets=sv+gp,wgan_gp --steps=20000 --num_seeds=2
    python -m benchmarks.stackedmnist --report_only          # the table and figure of the runs
    python -m benchmarks.stackedmnist --report_only --runs=sv+gp=DIR_A+DIR_B,wgan_gp=DIR_C
        # the same for runs made elsewhere (one or several seeds each; a preset's seeds are
        # the union of its directories' seeds, matched by evaluation step)

Each preset trains `configs/stackedmnist.py:<variant>,<preset>` (variant `cpu` by default, plus
--set overrides) for `--num_seeds` seeds in one run (train.num_seeds) in `workdir/<preset>`,
evaluating every `--eval_every` iterations on `--num_samples` generated samples (26,000 as in
the paper); rerunning resumes an interrupted run. Presets can run as separate processes (one
per CPU core): every process prints the table of all presets found in the workdir. The table
gives, per preset and evaluation, the modes hit (of 1,000) and KL(modes || uniform) as mean +-
std over the seeds, the largest mode's share and the wall time (training and evaluations,
across resumptions); `modes.png` draws modes and KL against iteration and against wall time,
all presets on the same axes (mean over seeds, each seed thin).
"""
from __future__ import annotations

import os

import numpy as np
from absl import app
from absl import flags
from absl import logging

from benchmarks import networks

flags.DEFINE_string('workdir', 'workdirs/bench_stackedmnist', 'Runs go to <workdir>/<preset>.')
flags.DEFINE_list('presets', ['sv+gp', 'wgan_gp', 'r1', 'mi+diff', 'none'], 'Bound presets.')
flags.DEFINE_string('variant', 'cpu', 'configs/stackedmnist.py argument besides the preset.')
flags.DEFINE_integer('steps', 20_000, 'Training iterations per preset.')
flags.DEFINE_integer('num_seeds', 2, 'Seeds per preset (config.seed + k), trained together.')
flags.DEFINE_integer('seed', 0, 'The first seed.')
flags.DEFINE_integer('eval_every', 2_000, 'Iterations between evaluations.')
flags.DEFINE_integer('num_samples', 26_000, 'Generated samples per evaluation.')
flags.DEFINE_multi_string('set', [], 'KEY=VALUE config overrides for every preset (repeatable).')
flags.DEFINE_bool('report_only', False, 'Only print the table and draw the figure.')
flags.DEFINE_list('runs', [], 'PRESET=DIR[+DIR...] per preset: report these workdirs (their '
                  'seeds pooled) instead of <workdir>/<preset>.')
FLAGS = flags.FLAGS


def config_for(preset: str):
  from configs import stackedmnist
  cfg = stackedmnist.get_config(','.join(a for a in (FLAGS.variant, preset) if a))
  cfg.seed = FLAGS.seed
  cfg.train.num_seeds = FLAGS.num_seeds
  cfg.train.num_steps = FLAGS.steps
  cfg.train.eval_every = cfg.train.checkpoint_every = FLAGS.eval_every
  cfg.eval.num_samples = FLAGS.num_samples
  # One classifier for every preset: the same labels for every count.
  cfg.eval.classifier_path = os.path.join(FLAGS.workdir, 'mnist_classifier.msgpack')
  networks.apply_overrides(cfg, FLAGS.set)
  return cfg


def run_preset(preset: str, workdir: str) -> None:
  from experiments import checkpoints
  from experiments import run
  try:
    run.train_and_evaluate(config_for(preset), workdir)
  except checkpoints.NonFiniteError as e:   # the lower-bound-only baseline may blow up
    print(f'{preset}: stopped: {e}', flush=True)
    with open(os.path.join(workdir, 'diverged.txt'), 'w') as f:
      f.write(str(e))


def _stat(record: dict, key: str) -> tuple[float, float, list[float]]:
  from experiments import history
  values = history.per_seed(record, key)
  return float(np.mean(values)), float(np.std(values)), values


def print_table(histories: dict) -> None:
  print(f'\nStackedMNIST {FLAGS.variant or "paper"} variant, {FLAGS.num_samples} samples per '
        f'evaluation: mean +- std over seeds\n')
  print('| preset | seeds | iteration | wall (min) | modes (of 1000) | KL(modes \\|\\| U) | '
        'largest mode | E(fake) - E(real) |')
  print('| --- | --- | --- | --- | --- | --- | --- | --- |')
  floor = None
  for preset, (hist, note) in histories.items():
    for h in hist:
      modes, kl, largest = (_stat(h, k) for k in ('modes', 'kl', 'max_mode_fraction'))
      e = np.asarray(_stat(h, 'energy_fake')[2]) - np.asarray(_stat(h, 'energy_real')[2])
      print(f"| {preset} | {len(modes[2])} | {h['step']} | "
            f"{h.get('wall_s', float('nan')) / 60:.1f} | "
            f'{modes[0]:.1f} +- {modes[1]:.1f} | {kl[0]:.3f} +- {kl[1]:.3f} | '
            f'{largest[0]:.3f} | {e.mean():.2f} |')
      floor = floor or (_stat(h, 'data_modes')[0], _stat(h, 'data_kl')[0])
    if note:
      print(f'| {preset} | | | | diverged: {note[:80]} | | | |')
  if floor:
    print(f'\nReal StackedMNIST samples, as many: {floor[0]:.0f} modes, KL {floor[1]:.3f} (the '
          'sampling-noise floor).')


def plot(histories: dict, path: str) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(2, 2, figsize=(11, 7))
  for preset, (hist, _) in histories.items():
    if not hist:
      continue
    for col, x_of in enumerate((lambda h: h['step'], lambda h: h.get('wall_s', 0.0) / 60)):
      for row, key in enumerate(('modes', 'kl')):
        ax = axes[row, col]
        x = [x_of(h) for h in hist]
        line, = ax.plot(x, [_stat(h, key)[0] for h in hist], marker='o', ms=3,
                        label=preset)
        for k in range(len(_stat(hist[0], key)[2])):
          ax.plot(x, [_stat(h, key)[2][k] for h in hist], color=line.get_color(),
                  lw=0.5, alpha=0.5)
  for row, key in enumerate(('modes (of 1000)', 'KL(modes || U)')):
    for col, xlabel in enumerate(('iteration', 'wall time (min)')):
      axes[row, col].set_xlabel(xlabel)
      axes[row, col].set_ylabel(key)
      axes[row, col].grid(alpha=0.3)
  axes[1, 0].set_yscale('log')
  axes[1, 1].set_yscale('log')
  axes[0, 0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def main(argv):
  del argv
  from experiments import history
  logging.set_verbosity(logging.WARNING)
  if not FLAGS.report_only:
    for preset in FLAGS.presets:
      run_preset(preset, os.path.join(FLAGS.workdir, preset.replace('+', '_')))
  histories = {}
  runs = dict(r.split('=', 1) for r in FLAGS.runs)
  for preset in (runs or FLAGS.presets):
    dirs = runs[preset].split('+') if runs else [
        os.path.join(FLAGS.workdir, preset.replace('+', '_'))]
    note = ''
    for workdir in dirs:
      if os.path.exists(os.path.join(workdir, 'diverged.txt')):
        with open(os.path.join(workdir, 'diverged.txt')) as f:
          note = f.read()
    histories[preset] = (history.pool([history.load(d) for d in dirs]), note)
  print_table(histories)
  os.makedirs(FLAGS.workdir, exist_ok=True)
  plot(histories, os.path.join(FLAGS.workdir, 'modes.png'))
  print(f"\nfigure: {os.path.join(FLAGS.workdir, 'modes.png')}")


if __name__ == '__main__':
  app.run(main)

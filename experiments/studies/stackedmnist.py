"""StackedMNIST mode coverage over iterations and wall time, over seeds: the StackedMNIST table
of docs/results.md and the tables of docs/studies/stackedmnist.md, stackedmnist_sv_gp_kl.md
and stackedmnist_mi_diff.md.

    python -m experiments.studies.stackedmnist --config=configs/stackedmnist.py:cpu \
        --config.train.num_steps=20000 --config.train.eval_every=2000 \
        --config.train.checkpoint_every=2000 --config.eval.num_samples=26000 \
        --presets=sv+gp,wgan_gp
    python -m experiments.studies.stackedmnist --report_only   # the table and figure of the runs
    python -m experiments.studies.stackedmnist --report_only --runs=sv+gp=DIR_A+DIR_B,wgan_gp=DIR_C
        # the same for runs made elsewhere (one or several seeds each; a preset's seeds are
        # the union of its directories' seeds, matched by evaluation step)

`--config` is the base configuration as `python -m experiments.main` takes it (a file and its
argument, then `--config.KEY=VALUE` overrides); it is needed to train, not to report. Each
preset of `--presets` is applied on top of it (configs/common.py, `apply_preset`), then the
study's changes, 2 seeds (`train.num_seeds = 2`) and one mode-counting classifier for every
preset (`eval.classifier_path = <workdir>/mnist_classifier.msgpack`: the same labels for every
count), then the overrides again, so that a key the command line names keeps its value in every
preset's run (experiments/cli.py). Iterations, evaluations and the samples per
evaluation are the config's: the first command above is the protocol of docs/results.md (20,000
iterations, an evaluation of 26,000 samples, as in the paper, every 2,000).

Each preset trains all its seeds in one run in `workdir/<preset>`; rerunning resumes an
interrupted run. Presets can run as separate processes (one per CPU core): every process prints
the table of all presets found in the workdir. The table gives, per preset and evaluation, the
modes hit (of 1,000) and KL(modes || uniform) as mean +- std over the seeds, the largest mode's
share and the wall time (training and evaluations, across resumptions); `modes.png` draws modes
and KL against iteration and against wall time, all presets on the same axes (mean over seeds,
each seed thin).
"""
from __future__ import annotations

import os

import numpy as np
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments import cli

config_flags.DEFINE_config_file('config', None, 'The base configuration, '
                                'configs/stackedmnist.py[:ARG] (then --config.KEY=VALUE '
                                'overrides); each preset is applied on top of it. Needed to '
                                'train.', lock_config=True)
flags.DEFINE_string('workdir', 'workdirs/bench_stackedmnist', 'Runs go to <workdir>/<preset>.')
flags.DEFINE_list('presets', ['sv+gp', 'wgan_gp', 'r1', 'mi+diff', 'none'], 'Bound presets.')
flags.DEFINE_bool('report_only', False, 'Only print the table and draw the figure.')
flags.DEFINE_list('runs', [], 'PRESET=DIR[+DIR...] per preset: report these workdirs (their '
                  'seeds pooled) instead of <workdir>/<preset>.')
FLAGS = flags.FLAGS


def config_for(preset: str):
  study = {'train.num_seeds': 2,
           'eval.classifier_path': os.path.join(FLAGS.workdir, 'mnist_classifier.msgpack')}
  return cli.derive(FLAGS.config, config_flags.get_override_values(FLAGS['config']),
                          preset, study)


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
  given = '' if FLAGS.config is None else ', ' + cli.describe(
      config_flags.get_config_filename(FLAGS['config']),
      config_flags.get_override_values(FLAGS['config']))
  print(f'\nStackedMNIST{given}: mean +- std over seeds\n')
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
    if FLAGS.config is None:
      raise app.UsageError('Training needs --config=configs/stackedmnist.py[:ARG] (e.g. :cpu); '
                           '--report_only does not.')
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
  app.run(main, flags_parser=cli.parse_flags)

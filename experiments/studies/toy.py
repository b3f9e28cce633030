"""Bound presets on a 2-D toy over seeds: the toy table of docs/results.md ("The 2-D toys") and
the run tables of docs/studies/toy.md, toy_datasets.md, toy_mi_diff.md and toy_baselines.md.

    python -m experiments.studies.toy --config=configs/toy.py
    python -m experiments.studies.toy --config=configs/toy.py --presets=sv+gp \
        --config.train.num_steps=60000 --config.bounds.gp.weight=2.0 --workdir=DIR
    python -m experiments.studies.toy --config=configs/toy.py:swiss_roll --presets=sv+gp,none
    python -m experiments.studies.toy --config=configs/toy.py --report_only  # the table and
                                                                             # figure of the runs

`--config` is the base configuration as `python -m experiments.main` takes it: a file and its
argument (a data set, `authors`, ...) and `--config.KEY=VALUE` overrides, which must follow it.
Each preset of `--presets` is applied on top of it (configs/common.py, `apply_preset`), then the
study's one change, 3 seeds (`train.num_seeds = 3`), then the overrides again, so that a key the
command line names (`--config.train.num_seeds=9`, even `--config.bounds.upper=diff`) keeps its
value in every preset's run (experiments/cli.py). Iterations and evaluations are
the config's (configs/toy.py: 30,000 iterations, an evaluation and a checkpoint every 5,000).

Each preset trains all its seeds in one run (one compiled step) in `workdir/<data>/<preset>`;
a finished run is not repeated and an interrupted one resumes. The table gives, per preset, the
final evaluation as mean +- std [min, max] over the seeds: modes covered and high-quality
fraction (25 Gaussians), KL(data || exp(-E)/Z) on the grid, the NLL by quadrature,
KL(p_g || p_theta) = NLL - L_lo and the folded fraction of the generator; how many seeds keep
the sandwich L_lo <= NLL <= L_up at every evaluation from `--sandwich_from` on (and, below the
table, every seed-evaluation where it fails, with the margin); the largest |E| and
E(fake) - E(real) of any log step; and the training time per iteration. `comparison.png`
shows, one row per seed and two panels per preset, the generator's samples over the data and
the model density exp(-E)/Z. `--report_only` reads the runs of the same command.
"""
from __future__ import annotations

import os
import time

import numpy as np
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments import cli

config_flags.DEFINE_config_file('config', None, 'The base configuration, configs/toy.py[:ARG] '
                                '(then --config.KEY=VALUE overrides); each preset is applied '
                                'on top of it.', lock_config=True)
flags.DEFINE_list('presets', ['sv+gp', 'mi+diff', 'none', 'r1', 'wgan_gp'], 'Bound presets.')
flags.DEFINE_string('workdir', 'workdirs/bench_toy', 'Runs go to <workdir>/<data>/<preset>.')
flags.DEFINE_integer('sandwich_from', 10_000, 'The sandwich must hold from this iteration on.')
flags.DEFINE_bool('report_only', False, 'Only print the table and draw the figure.')
flags.mark_flags_as_required(['config'])
FLAGS = flags.FLAGS

# The study's change to every preset's config (before the command line's overrides).
STUDY = {'train.num_seeds': 3}


def config_for(preset: str):
  return cli.derive(FLAGS.config, config_flags.get_override_values(FLAGS['config']),
                          preset, STUDY)


def _seeds(cfg) -> list[int]:
  return [cfg.seed + k for k in range(cfg.train.num_seeds)]


def run_preset(preset: str, workdir: str) -> None:
  from experiments import run
  cfg = config_for(preset)
  start = time.time()
  run.train_and_evaluate(cfg, workdir)
  print(f'{preset}: {time.time() - start:.0f} s', flush=True)


def _summary(values) -> str:
  v = np.asarray(values, np.float64)
  if len(v) == 1:
    return f'{v[0]:.3f}'
  return f'{v.mean():.3f} +- {v.std():.3f} [{v.min():.3f}, {v.max():.3f}]'


def results(preset: str, workdir: str) -> dict | None:
  """Per-seed values of the table's columns, from the run's records (None if not run)."""
  from experiments import history
  from experiments import toy_eval
  records, evals = history.read_metrics(workdir), history.load(workdir)
  if not evals:
    return None
  cfg = config_for(preset)
  seeds = _seeds(cfg)
  final = evals[-1]
  per_seed = lambda record, key: history.seed_values(record, key, seeds)
  out = {'step': final['step'], 'wall_s': final.get('wall_s', float('nan'))}
  for key in ('modes_covered', 'hq_fraction', 'kl_data_model', 'nll', 'kl_gen_model',
              'folded_fraction', 'mode_depth_spread'):
    if key in final:
      out[key] = per_seed(final, key)
  late = [h for h in evals if h['step'] >= FLAGS.sandwich_from]
  # The toy evaluation checks L_up <= NLL only where the upper bound bounds the NLL (not for r1
  # or wgan_gp); elsewhere the sandwich is L_lo <= NLL alone.
  found = [f for h in late for f in toy_eval.sandwich_failures(h, seeds)]
  out['failures'] = [line for _, line in found]
  out['seed_evaluations'] = len(late) * len(seeds)
  held = len(seeds) - len({seed for seed, _ in found})
  upper_checked = all('upper_bound_fails' in h for h in late)
  out['sandwich_holds'] = f'{held}/{len(seeds)}' + ('' if upper_checked else ' (L_lo <= NLL only)')
  gaps = np.asarray([[r[f'energy_fake{s}'] - r[f'energy_real{s}'] for s in _suffixes(seeds)]
                     for r in records])
  sizes = np.asarray([[max(abs(r[f'energy_fake{s}']), abs(r[f'energy_real{s}']))
                       for s in _suffixes(seeds)] for r in records])
  out['max_gap'], out['max_abs_energy'] = list(gaps.max(0)), list(sizes.max(0))
  out['ms_per_iteration'] = 1e3 * out['wall_s'] / max(final['step'], 1)
  return out


def _suffixes(seeds):
  return [''] if len(seeds) == 1 else [f'/seed_{s}' for s in seeds]


def print_table(rows: dict, cfg) -> None:
  """The table of `rows` (preset -> `results`); `cfg` gives the data set, iterations and seeds."""
  cols = [('modes_covered', 'modes (of 25)'), ('hq_fraction', 'high-quality'),
          ('kl_data_model', 'KL(data \\|\\| model)'), ('nll', 'NLL'),
          ('kl_gen_model', 'KL(p_g \\|\\| p_theta)'), ('folded_fraction', 'folded'),
          ('mode_depth_spread', 'E spread over the modes'),
          ('max_abs_energy', 'max abs E'), ('max_gap', 'max E(fake)-E(real)')]
  cols = [(k, name) for k, name in cols if any(k in r for r in rows.values() if r)]
  seeds = _seeds(cfg)
  print(f'\n{cfg.data.name}, {cfg.train.num_steps} iterations, seeds {seeds[0]}..{seeds[-1]}: '
        'final evaluation, mean +- std [min, max] over seeds; sandwich L_lo <= NLL <= L_up at '
        f'every evaluation from {FLAGS.sandwich_from}\n')
  print('| preset | ' + ' | '.join(name for _, name in cols)
        + ' | sandwich holds | ms / iteration (with evaluations) |')
  print('|' + ' --- |' * (len(cols) + 3))
  for preset, r in rows.items():
    if r is None:
      print(f'| {preset} | not run |')
      continue
    cells = [_summary(r[k]) if k in r else '-' for k, _ in cols]
    # A run stopped early is reported at its last evaluation, and says so.
    label = (preset if r['step'] == cfg.train.num_steps
             else f"{preset} (stopped: evaluation {r['step']})")
    print(f'| {label} | ' + ' | '.join(cells)
          + f" | {r['sandwich_holds']} | {r['ms_per_iteration']:.2f} |")
  for preset, r in rows.items():
    if r and r['failures']:
      print(f"\n{preset}: the sandwich fails at {len(r['failures'])} of "
            f"{r['seed_evaluations']} seed-evaluations from {FLAGS.sandwich_from} on:")
      print('\n'.join(f'  {line}' for line in r['failures']))


def plot(presets, cfg, workdir: str, path: str) -> None:
  """comparison.png: per preset, the samples over data and exp(-E)/Z, one row per seed."""
  import jax
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  from bibound_jax.data import toy as toy_data
  runs = [(p, os.path.join(workdir, p.replace('+', '_'), 'eval', 'toy_eval.npz'))
          for p in presets]
  runs = [(p, np.load(f)) for p, f in runs if os.path.exists(f)]
  if not runs:
    return
  n = cfg.train.num_seeds
  fig, axes = plt.subplots(n, 2 * len(runs), figsize=(5 * len(runs), 2.5 * n), squeeze=False)
  data = np.asarray(toy_data.sample(cfg.data.name, jax.random.key(0), 5000))
  for j, (preset, a) in enumerate(runs):
    grid = a['grid']
    m = int(round(np.sqrt(len(grid))))
    half = float(grid.max())
    for i in range(min(n, len(a['samples']))):
      ax = axes[i, 2 * j]
      ax.scatter(data[:, 0], data[:, 1], s=0.5, alpha=0.2, c='tab:blue')
      ax.scatter(a['samples'][i][:, 0], a['samples'][i][:, 1], s=0.5, alpha=0.2, c='tab:red')
      ax.set_xlim(-half, half)
      ax.set_ylim(-half, half)
      ax.set_aspect('equal')
      ax.set_xticks([])
      ax.set_yticks([])
      e = a['energy'][i].reshape(m, m).T
      axes[i, 2 * j + 1].imshow(np.exp(-(e - e.min())), origin='lower',
                                extent=(-half, half, -half, half), cmap='viridis')
      axes[i, 2 * j + 1].set_xticks([])
      axes[i, 2 * j + 1].set_yticks([])
      if i == 0:
        ax.set_title(f'{preset}: samples')
        axes[i, 2 * j + 1].set_title(f'{preset}: exp(-E)/Z')
      if j == 0:
        ax.set_ylabel(f'seed {int(a["seeds"][i])}')
  fig.tight_layout()
  fig.savefig(path, dpi=70)
  plt.close(fig)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  cfg = config_for('')   # the data set, iterations and seeds every preset shares
  root = os.path.join(FLAGS.workdir, cfg.data.name)
  if not FLAGS.report_only:
    for preset in FLAGS.presets:
      run_preset(preset, os.path.join(root, preset.replace('+', '_')))
  rows = {p: results(p, os.path.join(root, p.replace('+', '_'))) for p in FLAGS.presets}
  print_table(rows, cfg)
  plot(FLAGS.presets, cfg, root, os.path.join(root, 'comparison.png'))
  print(f"\ncomparison figure: {os.path.join(root, 'comparison.png')}")


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)

"""The energy as a model on StackedMNIST: the table of docs/results.md, "p_theta: samples and
likelihood", from evaluations that `python -m experiments.evaluate` wrote.

    python -m experiments.studies.stackedmnist_model --runs=sv+gp=DIR@2000,DIR@10000 \
        --runs=mi+diff=DIR2@2000

Each DIR@STEP is a workdir whose eval/metrics_STEP.json holds the full evaluation of that step
(docs/sampling.md): G's modes and KL, p_theta's after MCMC from G's samples, the NLL of
held-out digits on the pixels' box with its AIS error and convergence, the verdict on R^D, and
L_lo, L_up at the step. Every number is the mean +- std over the run's seeds.
"""
from __future__ import annotations

import json
import os

import numpy as np
from absl import app
from absl import flags

from experiments import history

FLAGS = flags.FLAGS
flags.DEFINE_multi_string('runs', [], 'PRESET=DIR@STEP[,DIR@STEP...] (repeatable).')

COLUMNS = (
    ('modes', 'G: modes', '{:.1f}'), ('kl', 'G: KL', '{:.3f}'),
    ('model_modes', 'p_theta: modes', '{:.1f}'), ('model_kl', 'p_theta: KL', '{:.3f}'),
    ('nll_bpd', 'NLL on the box (bits/dim)', '{:.3f}'), ('log_z_error', 'log Z error (nats)', '{:.2f}'),
    ('lower_bound', 'L_lo (nats)', '{:.0f}'), ('upper_bound', 'L_up (nats)', '{:.0f}'),
)


def _cell(record: dict, key: str, fmt: str) -> str:
  values = history.per_seed(record, key) if key in record else []
  if not values:
    return '-'
  mean, std = float(np.mean(values)), float(np.std(values))
  return f'{fmt.format(mean)} +- {fmt.format(std)}'


def row(preset: str, workdir: str, step: int) -> str:
  """One markdown row: the preset and step, each column's mean +- std, the AIS verdict and the
  normalisability on R^D."""
  with open(os.path.join(workdir, 'eval', f'metrics_{step}.json')) as f:
    record = json.load(f)
  converged = history.per_seed(record, 'log_z_converged')
  normalisable = history.per_seed(record, 'normalisable_real')
  cells = [_cell(record, key, fmt) for key, _, fmt in COLUMNS]
  if 'upper_term' in record and not any(history.per_seed(record, 'upper_term')):
    cells[-1] = '(no upper term)'   # upper bound 'none': its "L_up" is L_lo + 0
  ais = f'{int(sum(converged))}/{len(converged)} converged'
  real = 'yes' if all(normalisable) else f'no ({len(normalisable) - int(sum(normalisable))}' \
      f'/{len(normalisable)} seeds)'
  return f'| {preset} | {step} | ' + ' | '.join(cells) + f' | {ais} | {real} |'


def main(argv):
  del argv
  print('| preset | iteration | ' + ' | '.join(title for _, title, _ in COLUMNS)
        + ' | AIS | exp(-E) a density on R^D |')
  print('| --- | --- | ' + ' | '.join('---' for _ in COLUMNS) + ' | --- | --- |')
  for spec in FLAGS.runs:
    preset, _, runs = spec.partition('=')
    for run in runs.split(','):
      workdir, _, step = run.rpartition('@')
      print(row(preset, workdir, int(step)))


if __name__ == '__main__':
  app.run(main)

"""StackedMNIST mode coverage over wall time: SV+GP against the baselines, CPU-sized.

    python -m benchmarks.stackedmnist                         # sv+gp, r1, none; 4,000 iterations
    python -m benchmarks.stackedmnist --presets=mi+diff --steps=3000 --segment=500
    python -m benchmarks.stackedmnist --report_only           # print the table of finished runs

Each preset trains `configs/stackedmnist.py:cpu,<preset>` in `workdir/<preset>` in segments of
`--segment` iterations (each segment resumes the previous checkpoint and ends with the full
mode-count evaluation), and records after every segment the cumulative wall time (training,
evaluation and each segment's start-up), the number of modes hit out of 1,000, KL(modes || U),
the largest mode's share of the samples and E(fake) - E(real). Rows go to
`workdir/<preset>/bench.json`; the table is printed at the end (and by --report_only), so
presets can run as separate processes, e.g. one per CPU core.
"""
from __future__ import annotations

import json
import os
import time

from absl import app
from absl import flags

flags.DEFINE_string('workdir', 'workdirs/bench_stackedmnist', 'Each preset gets a sub-directory.')
flags.DEFINE_list('presets', ['sv+gp', 'r1', 'none'], 'Bound presets (configs/common.py).')
flags.DEFINE_integer('steps', 4_000, 'Training iterations per preset.')
flags.DEFINE_integer('segment', 1_000, 'Iterations between evaluations.')
flags.DEFINE_integer('seed', 0, 'Seed shared by all presets.')
flags.DEFINE_bool('report_only', False, 'Only print the table of the runs in --workdir.')
FLAGS = flags.FLAGS


def run_preset(preset: str, workdir: str) -> list[dict]:
  """Train in segments; returns (and saves) one row per evaluation."""
  from configs import stackedmnist
  from experiments import run

  path = os.path.join(workdir, 'bench.json')
  rows = []
  if os.path.exists(path):
    with open(path) as f:
      rows = json.load(f)
  wall = rows[-1]['wall_s'] if rows else 0.0
  done = rows[-1]['step'] if rows else 0
  for end in range(done + FLAGS.segment, FLAGS.steps + 1, FLAGS.segment):
    cfg = stackedmnist.get_config(f'cpu,{preset}')
    cfg.seed = FLAGS.seed
    cfg.train.num_steps = end
    cfg.train.eval_every = FLAGS.segment
    cfg.train.checkpoint_every = FLAGS.segment
    start = time.perf_counter()
    try:
      run.train_and_evaluate(cfg, workdir)
    except run.NonFiniteError as e:   # the lower-bound-only baseline may blow up
      print(f'{preset}: stopped before iteration {end}: {e}', flush=True)
      rows.append({'preset': preset, 'step': end, 'diverged': str(e)[:200]})
      break
    wall += time.perf_counter() - start
    with open(os.path.join(workdir, 'eval', f'metrics_{end}.json')) as f:
      m = json.load(f)
    rows.append({'preset': preset, 'step': end, 'wall_s': wall, **m})
    with open(path, 'w') as f:
      json.dump(rows, f, indent=1)
    print(f'{preset} {end}: {m["modes"]} modes, KL {m["kl"]:.3f}, {wall / 60:.1f} min',
          flush=True)
  return rows


def print_table(all_rows: list[list[dict]]) -> None:
  print('\n| preset | iteration | wall (min) | modes (of 1000) | KL(modes \\|\\| U) | '
        'largest mode | E(fake) - E(real) |')
  print('| --- | --- | --- | --- | --- | --- | --- |')
  for rows in all_rows:
    for r in rows:
      if 'diverged' in r:
        print(f'| {r["preset"]} | {r["step"]} | | non-finite: {r["diverged"][:60]} | | | |')
        continue
      print(f'| {r["preset"]} | {r["step"]} | {r["wall_s"] / 60:.1f} | {r["modes"]} | '
            f'{r["kl"]:.3f} | {r["max_mode_fraction"]:.3f} | '
            f'{r["energy_fake"] - r["energy_real"]:.2f} |')
  if all_rows and all_rows[0]:
    r = all_rows[0][0]
    print(f'\nReal StackedMNIST samples, same count: {r["data_modes"]} modes, KL '
          f'{r["data_kl"]:.3f} (the sampling-noise floor).')


def main(argv):
  del argv
  all_rows = []
  for preset in FLAGS.presets:
    workdir = os.path.join(FLAGS.workdir, preset)
    if FLAGS.report_only:
      path = os.path.join(workdir, 'bench.json')
      if os.path.exists(path):
        with open(path) as f:
          all_rows.append(json.load(f))
      continue
    all_rows.append(run_preset(preset, workdir))
  print_table(all_rows)


if __name__ == '__main__':
  app.run(main)

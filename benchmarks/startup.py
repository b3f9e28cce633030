"""Where a short run's wall time goes: start-up, compilation, training, evaluation; cold and warm.

    python -m benchmarks.startup                       # toy (2,000 iterations), StackedMNIST :cpu
    python -m benchmarks.startup --runs=toy --repeats=3
    python -m benchmarks.startup --runs=toy_authors --warm_up=on,off    # the evaluation warm-up

Each measurement runs `python -m experiments.main` as a new process in a fresh workdir, as a
user would, and reads the times of the run's own log lines (absl's timestamps on stderr, which
the run writes anyway; experiments/run.py and experiments/progress.py):
  - the line that starts training (its description, logged just before the first call of the
    train step);
  - "The first call of the train step ... took": the first call returned (compiled and run);
  - "Evaluation at iteration I took S s": each evaluation's duration;
  - "Stopped at iteration ...": the end of training, after the last checkpoint.
Printed: start-up (process launch to the first call: imports, config, networks, data), the
first call (compilation and one call of `train.steps_per_call` iterations), the remaining
training (the end less the first call's return and the evaluations), the evaluations (the
final one included) and the whole process. "cold" starts with an empty compilation cache
(`--compilation_cache`), "warm" reruns with the cache the cold run filled. Prints the median
over `--repeats` of each. `--warm_up=on,off` runs each toy run with the evaluation compiled in
the background (`eval.warm_up`, the toy's default) and without, interleaved, for a paired
comparison.
"""
from __future__ import annotations

import datetime
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app
from absl import flags

FLAGS = flags.FLAGS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# absl's prefix: severity, MMDD HH:MM:SS.micros, thread id, file:line] message.
LOG_LINE = re.compile(r'^[IWEF](\d\d)(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{6})\s+\d+ [^\]]*\] (.*)$')
STARTS = re.compile(r'^\S+: (seed \d+|\d+ seeds from \d+), bounds .* iteration\(s\) to \d+')
FIRST_CALL = re.compile(r'^The first call of the train step .* took ([\d.]+) s\.')
EVALUATION = re.compile(r'^Evaluation at iteration \d+ took ([\d.]+) s\.')
STOPPED = re.compile(r'^Stopped at iteration \d+ of \d+')


def define_flags() -> None:
  """The benchmark's flags (defined when it runs, so that tests can import it)."""
  flags.DEFINE_list('runs', ['toy', 'stackedmnist'],
                    "Which short runs: toy (the default toy), toy_authors (the authors' "
                    'networks), stackedmnist.')
  flags.DEFINE_integer('repeats', 1, 'Cold/warm pairs per run (medians printed).')
  flags.DEFINE_integer('toy_steps', 2000, 'Toy iterations.')
  flags.DEFINE_integer('stackedmnist_steps', 200, 'StackedMNIST :cpu iterations.')
  flags.DEFINE_list('warm_up', ['on'], "Toy runs: eval.warm_up 'on' (the default), 'off', or "
                    'both, interleaved.')


def command(run: str, workdir: str, cache: str, warm_up: str = 'on') -> list[str]:
  common = [sys.executable, '-m', 'experiments.main', f'--workdir={workdir}',
            f'--compilation_cache={cache}']
  if run in ('toy', 'toy_authors'):
    arg = ':authors' if run == 'toy_authors' else ''
    return common + [f'--config=configs/toy.py{arg}',
                     f'--config.train.num_steps={FLAGS.toy_steps}',
                     f'--config.train.eval_every={FLAGS.toy_steps}',
                     f'--config.eval.warm_up={warm_up == "on"}']
  steps = FLAGS.stackedmnist_steps
  return common + ['--config=configs/stackedmnist.py:cpu', f'--config.train.num_steps={steps}',
                   '--config.eval.num_samples=2000',
                   f'--config.eval.classifier_path={os.path.join(cache, "classifier.msgpack")}']


def log_lines(stderr: str, launched: float) -> list[tuple[float, str]]:
  """(Unix time, message) of each absl log line in `stderr` of a process launched at
  `launched` (absl writes local month, day and time; the year is the launch's)."""
  year = datetime.datetime.fromtimestamp(launched).year
  out = []
  for line in stderr.splitlines():
    match = LOG_LINE.match(line)
    if match:
      month, day, hour, minute, second, micros = map(int, match.groups()[:6])
      t = datetime.datetime(year, month, day, hour, minute, second, micros).timestamp()
      out.append((t, match.group(7)))
  return out


def phases(lines: list[tuple[float, str]], launched: float, ended: float) -> dict:
  """Seconds of each phase of a run (module docstring) from its log lines."""
  def first(pattern):
    found = [(t, m) for t, m in lines if pattern.match(m)]
    if not found:
      raise ValueError(f'no log line matches {pattern.pattern!r}')
    return found[0][0]
  starts, first_call, stopped = first(STARTS), first(FIRST_CALL), first(STOPPED)
  evaluations = sum(float(EVALUATION.match(m).group(1)) for _, m in lines
                    if EVALUATION.match(m))
  return {
      'start-up': starts - launched,
      'first call (compile + run)': first_call - starts,
      'training (rest)': stopped - first_call - evaluations,
      'evaluations': evaluations,
      'whole process': ended - launched,
  }


def measure(run: str, cache: str, warm_up: str = 'on') -> dict:
  with tempfile.TemporaryDirectory() as workdir:
    launched = time.time()
    proc = subprocess.run(command(run, workdir, cache, warm_up), cwd=REPO, capture_output=True,
                          text=True)
    ended = time.time()
  if proc.returncode:
    raise RuntimeError(f'{run} failed:\n{proc.stderr[-3000:]}')
  return phases(log_lines(proc.stderr, launched), launched, ended)


def main(argv):
  del argv
  bad = set(FLAGS.warm_up) - {'on', 'off'}
  if bad:
    raise app.UsageError(f'--warm_up takes on and/or off, got {sorted(bad)}.')
  rows = {}
  for run in FLAGS.runs:
    settings = FLAGS.warm_up if run.startswith('toy') else ['on']
    for _ in range(FLAGS.repeats):
      for warm_up in settings:
        name = run if len(settings) == 1 else f'{run}, warm-up {warm_up}'
        with tempfile.TemporaryDirectory() as cache:
          for phase in ('cold', 'warm'):
            rows.setdefault((name, phase), []).append(measure(run, cache, warm_up))
            print(f'{name} {phase}: {rows[(name, phase)][-1]}', file=sys.stderr, flush=True)
  keys = list(next(iter(rows.values()))[0])
  print(f'\nSeconds, median of {FLAGS.repeats}; toy {FLAGS.toy_steps} iterations, StackedMNIST '
        f':cpu {FLAGS.stackedmnist_steps} iterations with a 2,000-sample evaluation\n')
  print('| run | cache | ' + ' | '.join(keys) + ' |')
  print('|' + ' --- |' * (len(keys) + 2))
  for (run, phase), values in rows.items():
    cells = [f'{np.median([v[k] for v in values]):.1f}' for k in keys]
    print(f'| {run} | {phase} | ' + ' | '.join(cells) + ' |')


if __name__ == '__main__':
  define_flags()
  app.run(main)

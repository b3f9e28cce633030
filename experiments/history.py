"""The records of a run, written and read here only:

  workdir/metrics.jsonl          the training scalars of every log step (one JSON line each);
  workdir/eval/metrics_<step>.json, workdir/eval/history.json
                                 every evaluation (one record per evaluated step).

A run of several seeds (`train.num_seeds`) records, for every quantity `q`, the mean over the
seeds as `q`, their standard deviation as `q/std` and each seed's value as `q/seed_<s>` (s the
seed itself, config.seed + k): `over_seeds`. In TensorBoard the three group under `q`; a
regex such as `seed_3` shows one seed's curves. A one-seed run records `q` alone.

When a run resumes from an earlier checkpoint, `truncate` forgets what was written after it.
"""
from __future__ import annotations

import contextlib
import json
import os

import numpy as np

HISTORY = 'history.json'
METRICS_LOG = 'metrics.jsonl'


def eval_dir(workdir: str) -> str:
  """workdir/eval, created if missing."""
  path = os.path.join(workdir, 'eval')
  os.makedirs(path, exist_ok=True)
  return path


def over_seeds(per_seed: list[dict], seeds) -> dict:
  """One record from the values of each seed (see the module docstring)."""
  if len(per_seed) == 1:
    return {k: float(v) for k, v in per_seed[0].items()}
  out = {}
  for key in per_seed[0]:
    values = np.asarray([float(m[key]) for m in per_seed], np.float64)
    out[key] = float(np.mean(values))
    out[f'{key}/std'] = float(np.std(values))
    out.update({f'{key}/seed_{s}': float(v) for s, v in zip(seeds, values)})
  return out


def seed_values(record: dict, key: str, seeds) -> list[float]:
  """Each seed's value of `key` in a record written by `over_seeds`."""
  if len(seeds) == 1:
    return [record[key]]
  return [record[f'{key}/seed_{s}'] for s in seeds]


STACKEDMNIST_KEYS = ('modes', 'kl', 'max_mode_fraction', 'data_modes', 'data_kl',
                     'energy_fake', 'energy_real')


def per_seed(record: dict, key: str) -> list[float]:
  """A record's value of `key` for each seed it holds (one, or key/seed_<s> for several)."""
  seeded = sorted((int(k.rsplit('_', 1)[1]), v) for k, v in record.items()
                  if k.startswith(f'{key}/seed_'))
  return [v for _, v in seeded] if seeded else [record[key]]


def pool(histories: list[list[dict]], keys=STACKEDMNIST_KEYS) -> list[dict]:
  """The evaluations of several runs of one preset as one history with seeds 0..n-1 (the
  steps every run reached); `wall_s` is the longest of those the runs recorded."""
  steps = sorted(set.intersection(*({h['step'] for h in hist} for hist in histories)))
  out = []
  for step in steps:
    records = [next(h for h in hist if h['step'] == step) for hist in histories]
    walls = [r['wall_s'] for r in records if 'wall_s' in r]
    merged = {'step': step, 'wall_s': max(walls) if walls else float('nan')}
    for key in keys:
      values = [v for r in records for v in per_seed(r, key)]
      merged.update({f'{key}/seed_{j}': v for j, v in enumerate(values)})
    out.append(merged)
  return out


# -- evaluations

@contextlib.contextmanager
def atomic_open(path: str, mode: str = 'w'):
  """open(path, mode) for writing through a temporary file that replaces `path` only once the
  block has finished: a run killed mid-write leaves the previous file (or none), never a
  truncated one."""
  tmp = f'{path}.tmp{os.getpid()}'
  try:
    with open(tmp, mode) as f:
      yield f
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def load(workdir: str) -> list[dict]:
  """The evaluations recorded so far ([] when there are none)."""
  path = os.path.join(workdir, 'eval', HISTORY)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return json.load(f)


def _write(workdir: str, history: list[dict]) -> None:
  with atomic_open(os.path.join(eval_dir(workdir), HISTORY)) as f:
    json.dump(history, f, indent=1)


def record(workdir: str, step: int, metrics: dict) -> list[dict]:
  """Write metrics_<step>.json, replace any record at or after `step`; returns the history."""
  entry = dict(step=step, **metrics)
  with atomic_open(os.path.join(eval_dir(workdir), f'metrics_{step}.json')) as f:
    json.dump(entry, f, indent=1)
  history = [h for h in load(workdir) if h['step'] < step] + [entry]
  _write(workdir, history)
  return history


# -- training scalars

def metrics_path(workdir: str) -> str:
  return os.path.join(workdir, METRICS_LOG)


def append_metrics(workdir: str, step: int, scalars: dict) -> None:
  """Append one log step's scalars to workdir/metrics.jsonl."""
  with open(metrics_path(workdir), 'a') as f:
    f.write(json.dumps(dict(step=step, **scalars)) + '\n')


def read_metrics(workdir: str) -> list[dict]:
  """The records of workdir/metrics.jsonl ([] when it is missing)."""
  path = metrics_path(workdir)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


# -- resuming

def truncate(workdir: str, max_step: int) -> None:
  """Forget training scalars and evaluations after `max_step` (the restored checkpoint does
  not hold that work)."""
  if os.path.exists(metrics_path(workdir)):
    records = [r for r in read_metrics(workdir) if r['step'] <= max_step]
    with atomic_open(metrics_path(workdir)) as f:
      f.writelines(json.dumps(r) + '\n' for r in records)
  if os.path.isdir(os.path.join(workdir, 'eval')):
    _write(workdir, [h for h in load(workdir) if h['step'] <= max_step])

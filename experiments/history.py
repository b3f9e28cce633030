"""The evaluation record shared by every task: workdir/eval/metrics_<step>.json and history.json.

`record(workdir, step, metrics)` writes both and returns the history (evaluations up to `step`);
`truncate(workdir, step)` forgets evaluations after `step` when a run resumes from an earlier
checkpoint.
"""
from __future__ import annotations

import json
import os

HISTORY = 'history.json'


def eval_dir(workdir: str) -> str:
  """workdir/eval, created if missing."""
  path = os.path.join(workdir, 'eval')
  os.makedirs(path, exist_ok=True)
  return path


def load(workdir: str) -> list[dict]:
  """The evaluations recorded so far ([] when there are none)."""
  path = os.path.join(workdir, 'eval', HISTORY)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return json.load(f)


def _write(workdir: str, history: list[dict]) -> None:
  with open(os.path.join(eval_dir(workdir), HISTORY), 'w') as f:
    json.dump(history, f, indent=1)


def truncate(workdir: str, max_step: int) -> None:
  """Forget evaluations after `max_step` (the restored checkpoint does not hold them)."""
  if os.path.isdir(os.path.join(workdir, 'eval')):
    _write(workdir, [h for h in load(workdir) if h['step'] <= max_step])


def record(workdir: str, step: int, metrics: dict) -> list[dict]:
  """Write metrics_<step>.json, replace any record at or after `step`; returns the history."""
  entry = dict(step=step, **metrics)
  with open(os.path.join(eval_dir(workdir), f'metrics_{step}.json'), 'w') as f:
    json.dump(entry, f, indent=1)
  history = [h for h in load(workdir) if h['step'] < step] + [entry]
  _write(workdir, history)
  return history


def read_jsonl(path: str) -> list[dict]:
  """The records of a JSON-lines file such as workdir/metrics.jsonl ([] when it is missing)."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]

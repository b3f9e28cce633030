"""The train step's metrics between two log steps, and the NaN/Inf check over them.

Each call of the train step returns its metrics on the device; reading them at every call
would stall the loop on it. The buffer keeps them there until a log step, an evaluation or a
checkpoint reads them: the non-finite check then sees every iteration before anything is
written, evaluated or saved, and a log step writes each seed's means over the iterations.
"""
from __future__ import annotations

import jax
import numpy as np

from experiments import checkpoints


def unstack(n: int, metrics: dict) -> list[dict[str, np.ndarray]]:
  """One call's host metrics as one dict per iteration, each value an array over the seeds:
  n = 1 for one iteration's metrics (seeds,), n > 1 for a chunk's (seeds, n)."""
  if n == 1:
    return [metrics]
  return [{k: v[:, i] for k, v in metrics.items()} for i in range(n)]


def first_nonfinite(records: list[dict], first_step: int, seeds) -> str | None:
  """'iteration I[ of seed S]: names = values' of the first iteration and seed whose metrics
  hold a NaN/Inf or whose step flagged a non-finite gradient ('nonfinite' > 0); None when
  there is none. `records` are iterations first_step, first_step + 1, ..."""
  for i, metrics in enumerate(records):
    for k, seed in enumerate(seeds):
      if metrics['nonfinite'][k] == 0.0 and all(np.isfinite(v[k]) for v in metrics.values()):
        continue
      bad = sorted(name for name, v in metrics.items() if not np.isfinite(v[k]))
      what = (f'{", ".join(bad)} = {[float(metrics[name][k]) for name in bad]}' if bad
              else 'a gradient')
      which = f' of seed {seed}' if len(seeds) > 1 else ''
      return f'iteration {first_step + i}{which}: {what}'
  return None


class MetricBuffer:
  """The metrics of iterations `first_step`, `first_step` + 1, ... since the last `take`."""

  def __init__(self, seeds, first_step: int):
    self.seeds = list(seeds)
    self.first_step = first_step
    self._device = []    # (n, metrics) of calls not yet read
    self._records = []   # host dicts, one per iteration

  def add(self, n: int, metrics: dict) -> None:
    """One call's metrics: n iterations (train.steps_per_call), left on the device."""
    self._device.append((n, metrics))

  def records(self) -> list[dict[str, np.ndarray]]:
    """One host dict per buffered iteration, each value an array over the seeds."""
    for n, metrics in jax.device_get(self._device):
      self._records.extend(unstack(n, metrics))
    self._device = []
    return self._records

  def check_finite(self, manager) -> None:
    """NonFiniteError naming the first iteration, seed and metric that is NaN/Inf, and the
    last good checkpoint of `manager`."""
    found = first_nonfinite(self.records(), self.first_step, self.seeds)
    if found is None:
      return
    last = manager.latest_step()
    where = (f'the last good checkpoint is {checkpoints.step_dir(manager, last)} (rerun to '
             'resume from it)' if last is not None else 'no checkpoint was written yet')
    raise checkpoints.NonFiniteError(
        f'Non-finite values at {found}. The state is not checkpointed; {where}. Lower the '
        "learning rates, set optim.grad_clip, or set train.nonfinite='skip' to drop such "
        'updates.')

  def take(self) -> list[dict[str, float]]:
    """Each seed's metrics averaged over the buffered iterations; empties the buffer."""
    records = self.records()
    means = [{name: float(np.mean([r[name][k] for r in records])) for name in records[0]}
             for k in range(len(self.seeds))]
    self.first_step += len(records)
    self._records = []
    return means

"""The metric buffer: per-iteration records from single calls and chunks, per-seed means, the
NaN/Inf check naming the iteration, seed, metric and last good checkpoint."""
import os

import numpy as np
import pytest

from experiments import checkpoints
from experiments import metric_buffer


class _Manager:
  """The two things the check reads of an orbax CheckpointManager."""

  def __init__(self, latest):
    self.directory, self._latest = '/runs/a/checkpoints', latest

  def latest_step(self):
    return self._latest


def _call(n, **values):
  """One call's metrics of one seed: (1,) for n = 1, (1, n) for a chunk."""
  shape = (1,) if n == 1 else (1, n)
  out = {k: np.broadcast_to(np.asarray(v, np.float32), shape) for k, v in values.items()}
  out.setdefault('nonfinite', np.zeros(shape, np.float32))
  return out


def test_records_unstack_chunks_and_take_averages_each_seed():
  buffer = metric_buffer.MetricBuffer([3, 4], first_step=11)
  buffer.add(1, {'loss': np.array([1.0, 10.0]), 'nonfinite': np.zeros(2)})
  buffer.add(2, {'loss': np.array([[2.0, 3.0], [20.0, 30.0]]), 'nonfinite': np.zeros((2, 2))})
  records = buffer.records()
  assert [list(r['loss']) for r in records] == [[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]]
  assert buffer.take() == [{'loss': 2.0, 'nonfinite': 0.0}, {'loss': 20.0, 'nonfinite': 0.0}]
  # The next records are iterations 14, 15, ...
  assert buffer.first_step == 14 and buffer.records() == []
  buffer.add(1, {'loss': np.array([np.nan, 0.0]), 'nonfinite': np.zeros(2)})
  assert metric_buffer.first_nonfinite(buffer.records(), buffer.first_step,
                                       [3, 4]).startswith('iteration 14 of seed 3: loss')


def test_nonfinite_inside_a_chunk_names_its_iteration_and_the_last_checkpoint():
  buffer = metric_buffer.MetricBuffer([0], first_step=10)
  buffer.add(1, _call(1, energy_real=0.0))
  buffer.add(3, {'energy_real': np.array([[0.1, np.nan, 0.3]], np.float32),
                 'nonfinite': np.zeros((1, 3), np.float32)})
  with pytest.raises(checkpoints.NonFiniteError,
                     match=r'iteration 12: energy_real = \[nan\]\. The state is not') as err:
    buffer.check_finite(_Manager(latest=10))
  assert f'last good checkpoint is {os.path.join("/runs/a/checkpoints", "10")}' in str(err.value)
  assert "train.nonfinite='skip'" in str(err.value)
  with pytest.raises(checkpoints.NonFiniteError, match='no checkpoint was written yet'):
    buffer.check_finite(_Manager(latest=None))


def test_a_flagged_gradient_is_named_with_finite_metrics_and_a_clean_buffer_passes():
  buffer = metric_buffer.MetricBuffer([0, 1], first_step=1)
  buffer.add(1, {'loss': np.zeros(2), 'nonfinite': np.array([0.0, 1.0])})
  assert metric_buffer.first_nonfinite(buffer.records(), 1, [0, 1]) == (
      'iteration 1 of seed 1: a gradient')
  clean = metric_buffer.MetricBuffer([0], first_step=1)
  clean.add(2, _call(2, loss=1.0))
  clean.check_finite(_Manager(latest=None))   # no error

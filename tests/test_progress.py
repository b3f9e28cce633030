"""Progress lines: the first call's time, the expected time once, the timed parts, the last
line; and benchmarks/startup.py reading a run's phases from them."""
import datetime

import jax.numpy as jnp
import pytest

from benchmarks import startup
from configs import toy
from experiments import progress
from experiments import run


class _Clock:
  def __init__(self):
    self.t = 1000.0

  def __call__(self):
    return self.t


@pytest.fixture(name='lines')
def _lines(monkeypatch):
  """(clock time, message) of every line progress.py logs."""
  logged = []
  clock = _Clock()
  monkeypatch.setattr(progress.logging, 'info',
                      lambda msg, *args: logged.append((clock.t, msg % args)))
  return logged, clock


def _config(num_steps=2000, eval_every=1000):
  cfg = toy.get_config('authors')
  cfg.train.update(num_steps=num_steps, eval_every=eval_every)
  return cfg


def test_durations_and_the_expected_time_line():
  assert progress.duration(90) == '1.5 min' and progress.duration(7500) == '2 h 5 min'
  assert progress.expected_time(0.01, 500, _config()) == (
      'Measured 0.01 s per iteration after compilation: the remaining 1500 iterations will '
      'take about 0.2 min, plus 2 evaluation(s).')
  assert progress.expected_time(0.01, 500, _config(eval_every=0)).endswith(
      'plus 0 evaluation(s).')


def test_first_call_then_the_expected_time_once(lines):
  logged, clock = lines
  report = progress.Progress(_config(), writer=None, chief=False, clock=clock)
  state = jnp.zeros(3)
  report.start(0)
  clock.t += 12.0                      # compilation and the first chunk of 10
  report(10, state)
  assert logged[-1][1] == ('The first call of the train step (compilation and 10 '
                           'iteration(s)) took 12.00 s.')
  clock.t += 1.0
  report(50, state)                    # 40 iterations in 1 s: not yet measured
  assert len(logged) == 1
  clock.t += 1.5
  report(110, state)                   # 100 iterations in 2.5 s
  assert logged[-1][1].startswith('Measured 0.025 s per iteration after compilation: the '
                                  'remaining 1890 iterations')
  clock.t += 10.0
  report(500, state)
  assert len(logged) == 2              # logged once
  # The seconds rule: 20 iterations in 5 s are enough.
  logged.clear()
  report = progress.Progress(_config(), writer=None, chief=False, clock=clock)
  report.start(0)
  report(1, state)
  clock.t += 5.5
  report(21, state)
  assert logged[-1][1].startswith('Measured 0.275 s per iteration')


def test_timed_parts_and_the_last_line(lines):
  logged, clock = lines
  report = progress.Progress(_config(), writer=None, chief=False, clock=clock)
  report.start(500)
  with report.timed('evaluation', 1000):
    clock.t += 2.0
  assert logged[-1][1] == 'Evaluation at iteration 1000 took 2.00 s.'
  clock.t += 88.0
  report.finish(2000)
  assert logged[-1][1] == ('Stopped at iteration 2000 of 2000: iterations 500 to 2000 took '
                           '1.5 min in this session.')
  done = progress.Progress(_config(), writer=None, chief=False, clock=clock)
  done.start(2000)   # a rerun of a complete run
  done.finish(2000)
  assert logged[-1][1] == 'Stopped at iteration 2000 of 2000: nothing to train in this session.'


def test_the_chief_reports_steps_per_second_to_the_writer():
  written = []

  class Writer:
    def write_scalars(self, step, scalars):
      written.append((step, sorted(scalars)))
  report = progress.Progress(_config(num_steps=20), Writer(), chief=True)
  report.start(0)
  for step in (10, 20):
    report(step, jnp.zeros(()))
  assert written == [(20, ['steps_per_sec']), (20, ['uptime'])]   # at the last iteration
  off_chief = progress.Progress(_config(num_steps=20), Writer(), chief=False)
  off_chief(10, jnp.zeros(()))
  off_chief(20, jnp.zeros(()))
  assert len(written) == 2


def test_the_startup_benchmark_reads_the_phases_from_these_lines(lines):
  logged, clock = lines
  launched = clock.t - 4.0             # 4 s of imports, config, networks and data
  cfg = _config(eval_every=2000)
  report = progress.Progress(cfg, writer=None, chief=False, clock=clock)
  logged.append((clock.t, run._describe(cfg, [0], 0, '/tmp/w')))   # the run's first line
  report.start(0)
  clock.t += 12.0
  report(10, jnp.zeros(()))
  clock.t += 7.0
  with report.timed('evaluation', 2000):
    clock.t += 3.0
  clock.t += 0.5
  report.finish(2000)
  times = startup.phases(logged, launched, ended=clock.t + 1.0)
  assert times == pytest.approx({'start-up': 4.0, 'first call (compile + run)': 12.0,
                                 'training (rest)': 7.5, 'evaluations': 3.0,
                                 'whole process': 27.5})
  # absl's prefix (local time) read back to Unix time.
  stamp = 'I0102 03:04:05.250000 140245 progress.py:80] Stopped at iteration 5 of 5: ...'
  t = datetime.datetime(2024, 1, 2, 3, 4, 5, 250000).timestamp()
  assert startup.log_lines('noise\n' + stamp, launched=t - 10) == [
      (t, 'Stopped at iteration 5 of 5: ...')]
  with pytest.raises(ValueError, match='no log line matches'):
    startup.phases(logged[1:], launched, clock.t)   # the run's first line missing

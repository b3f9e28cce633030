"""How far a run is and how long the rest will take, in its log.

`Progress` is called after each call of the train step. It logs
  - the first call's duration, compilation included ("The first call of the train step ...");
  - once 5 s of compiled calls (or 100 iterations) have run, the time per iteration and the
    expected wall time of the rest of the run ("Measured ... s per iteration after
    compilation: the remaining N iterations will take about ...");
  - the duration of each evaluation and checkpoint (`timed`);
  - on the chief, clu's `ReportProgress`: steps/s, the ETA and the share of time spent in
    evaluations and checkpoints, every minute and at the last iteration.
benchmarks/startup.py reads the times of these lines.
"""
from __future__ import annotations

import contextlib
import time

import jax
from absl import logging

from experiments import writers

# The expected-time line waits for this many iterations or seconds of compiled calls.
MEASURE_ITERATIONS = 100
MEASURE_SECONDS = 5.0


def duration(seconds: float) -> str:
  """'12.5 min' below an hour, '2 h 5 min' above."""
  minutes = int(round(seconds / 60))
  return f'{minutes // 60} h {minutes % 60} min' if minutes >= 60 else f'{seconds / 60:.1f} min'


def expected_time(per_iteration: float, step: int, config) -> str:
  """The expected-time line after `step` iterations at `per_iteration` seconds each."""
  remaining = config.train.num_steps - step
  every = config.train.eval_every
  evaluations = remaining // every + 1 if every else 0
  return (f'Measured {per_iteration:.3g} s per iteration after compilation: the remaining '
          f'{remaining} iterations will take about {duration(per_iteration * remaining)}, '
          f'plus {evaluations} evaluation(s).')


class Progress:
  """The run's progress lines (module docstring); `chief`: also clu's ReportProgress, which
  writes steps_per_sec and uptime to `writer`."""

  def __init__(self, config, writer, chief: bool, clock=time.time):
    self.config = config
    self._clock = clock
    self._start = None        # (iteration, time) before the first call
    self._measured = None     # (iteration, time) after it, until the expected time is logged
    self._done = False        # the expected time is logged
    _, periodic_actions = writers.import_clu()
    self._report = periodic_actions.ReportProgress(
        num_train_steps=config.train.num_steps, writer=writer)
    self._chief = chief

  def start(self, step: int) -> None:
    """Training starts after `step` iterations (before the first call)."""
    self._start = (step, self._clock())

  def __call__(self, step: int, state) -> None:
    """After a call of the train step: `step` iterations done, `state` its output."""
    if self._measured is None:
      self._first_call(step, state)
    elif not self._done:
      self._expected_time(step, state)
    if self._chief:
      self._report(step)

  def _first_call(self, step: int, state) -> None:
    """Log the first call's duration (compilation and its iterations) once it has run."""
    jax.block_until_ready(state)
    now = self._clock()
    start_step, start_time = self._start or (step, now)
    logging.info('The first call of the train step (compilation and %d iteration(s)) took '
                 '%.2f s.', step - start_step, now - start_time)
    self._measured = (step, now)

  def _expected_time(self, step: int, state) -> None:
    """Log the expected time once MEASURE_ITERATIONS or MEASURE_SECONDS of compiled calls
    have run since the first."""
    from_step, from_time = self._measured
    if (step - from_step < MEASURE_ITERATIONS
        and self._clock() - from_time < MEASURE_SECONDS):
      return
    jax.block_until_ready(state)
    logging.info(expected_time((self._clock() - from_time) / (step - from_step), step,
                               self.config))
    self._done = True

  @contextlib.contextmanager
  def timed(self, name: str, step: int):
    """Time a part of the loop ('evaluation', 'checkpoint') at iteration `step`: its share in
    the progress report, and a line with its duration."""
    start = self._clock()
    with self._report.timed(name):
      yield
    logging.info('%s at iteration %d took %.2f s.', name.capitalize(), step,
                 self._clock() - start)

  def finish(self, step: int) -> None:
    """The session's last line: where it stopped and how long its training and evaluations
    took."""
    start_step, start_time = self._start or (step, self._clock())
    seconds = self._clock() - start_time
    if step == start_step:
      logging.info('Stopped at iteration %d of %d: nothing to train in this session.', step,
                   self.config.train.num_steps)
      return
    logging.info('Stopped at iteration %d of %d: iterations %d to %d took %s in this session.',
                 step, self.config.train.num_steps, start_step, step,
                 f'{seconds:.1f} s' if seconds < 60 else duration(seconds))

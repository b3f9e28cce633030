"""Preemption: SIGTERM/SIGINT become a flag the run loop reads after each call.

The loop then saves a checkpoint at the current iteration and returns (the process exits 0);
rerunning the same command resumes from it.
"""
from __future__ import annotations

import signal

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preemption:
  """Within: SIGTERM/SIGINT set `signal` (the signal's name) instead of stopping the process;
  the previous handlers come back on exit. Off the main thread signals are left alone."""

  def __init__(self):
    self.signal = None
    self._previous = {}

  def __enter__(self):
    for sig in SIGNALS:
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    self.signal = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

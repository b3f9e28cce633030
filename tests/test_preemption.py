"""Preemption: SIGTERM/SIGINT set a flag inside the context, the old handlers come back after."""
import os
import signal
import threading

from experiments import preemption


def test_signals_set_the_flag_and_the_handlers_come_back():
  before = {sig: signal.getsignal(sig) for sig in preemption.SIGNALS}
  with preemption.Preemption() as preempted:
    assert preempted.signal is None
    os.kill(os.getpid(), signal.SIGTERM)   # handled: the process goes on
    assert preempted.signal == 'SIGTERM'
    os.kill(os.getpid(), signal.SIGINT)    # no KeyboardInterrupt
    assert preempted.signal == 'SIGINT'
  assert {sig: signal.getsignal(sig) for sig in preemption.SIGNALS} == before


def test_off_the_main_thread_signals_are_left_alone():
  before = signal.getsignal(signal.SIGTERM)
  seen = []

  def enter():
    with preemption.Preemption() as preempted:
      seen.append(signal.getsignal(signal.SIGTERM))
      seen.append(preempted.signal)
  thread = threading.Thread(target=enter)
  thread.start()
  thread.join()
  assert seen == [before, None]

"""Reliability: exact resume after kill -9, preemption, NaN guards, clear errors for bad input."""
import os
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import startup
from bibound_jax import train
from bibound_jax.data import toy as toy_data
from experiments import checkpoints
from experiments import divergence
from experiments import history
from experiments import run
from test_run import REPO, _params, small_config

FAST_EVAL = ['--config.eval.num_samples=500', '--config.eval.grid_spacing=0.05',
             '--config.eval.bound_samples=100', '--config.train.batch_size=64',
             '--config.train.steps_per_call=1']


def _start(workdir, *overrides):
  return subprocess.Popen(
      [sys.executable, '-m', 'experiments.main', '--config=configs/toy.py:authors',
       f'--workdir={workdir}', *FAST_EVAL, *overrides],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path, proc, timeout=240):
  deadline = time.time() + timeout
  while not os.path.exists(path):
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    assert time.time() < deadline, f'{path} did not appear'
    time.sleep(0.05)


def test_kill_minus_9_then_resume_is_bit_identical(tmp_path):
  args = ['--config.train.num_steps=300', '--config.train.checkpoint_every=50',
          '--config.train.log_every=50', '--config.train.eval_every=0']
  proc = _start(tmp_path / 'a', *args)
  _wait_for(tmp_path / 'a' / 'checkpoints' / '100', proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  steps = sorted(int(s) for s in os.listdir(tmp_path / 'a' / 'checkpoints') if s.isdigit())
  assert 100 <= steps[-1] < 300
  launched = time.time()
  resumed = _start(tmp_path / 'a', *args)
  _, err = resumed.communicate(timeout=600)
  ended = time.time()
  assert resumed.returncode == 0, err[-3000:]
  assert f'Resumed from' in err
  # The expected wall time of the rest, from the iterations measured after compilation.
  assert re.search(r'Measured \S+ s per iteration after compilation: the remaining \d+ '
                   r'iterations will take about [\d.]+ (min|h)', err), err[-2000:]
  # benchmarks/startup.py finds its phases in the log of a real run, in order.
  times = startup.phases(startup.log_lines(err, launched), launched, ended)
  assert times['evaluations'] == 0.0, times
  assert all(times[k] > 0 for k in ('start-up', 'first call (compile + run)', 'whole process'))
  assert times['training (rest)'] >= 0.0
  assert sum(v for k, v in times.items() if k != 'whole process') <= times['whole process']
  cfg = small_config(num_steps=300, checkpoint_every=50, log_every=50)
  straight = run.train_and_evaluate(cfg, str(tmp_path / 'b'))
  manager = checkpoints.open_manager(str(tmp_path / 'a'), read_only=True)
  restored, _ = checkpoints.restore(manager, straight, jax.random.split(jax.random.key(0), 1))
  assert train.iteration(restored) == 300
  jax.tree.map(np.testing.assert_array_equal, _params(restored), _params(straight))


def test_sigterm_saves_the_current_step_and_exits_zero(tmp_path):
  proc = _start(tmp_path, '--config.train.num_steps=1000000', '--config.train.log_every=50',
                '--config.train.checkpoint_every=1000000', '--config.train.eval_every=0')
  _wait_for(tmp_path / 'metrics.jsonl', proc)  # training is under way
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-3000:]
  match = re.search(r'SIGTERM received: saved checkpoint \S+ at iteration (\d+)', err)
  assert match, err[-3000:]
  assert f'Stopped at iteration {match.group(1)} of 1000000' in err
  steps = sorted(int(s) for s in os.listdir(tmp_path / 'checkpoints') if s.isdigit())
  assert steps == [int(match.group(1))] and steps[0] >= 50


def test_sigterm_during_logging_still_saves_before_stopping(tmp_path, monkeypatch):
  # The signal lands after the iteration decided not to checkpoint (while it logs): the run
  # must not stop there without a checkpoint; it saves after the next iteration.
  real = history.append_metrics

  def append_then_signal(workdir, step, scalars):
    real(workdir, step, scalars)
    if step == 10:
      os.kill(os.getpid(), signal.SIGTERM)
  monkeypatch.setattr(history, 'append_metrics', append_then_signal)
  cfg = small_config(num_steps=40, checkpoint_every=1000)
  state = run.train_and_evaluate(cfg, str(tmp_path))
  steps = sorted(int(s) for s in os.listdir(tmp_path / 'checkpoints') if s.isdigit())
  assert train.iteration(state) == 11 and steps == [11]


def test_partial_checkpoint_is_never_picked_as_latest(tmp_path):
  cfg = small_config(num_steps=10)
  state = run.train_and_evaluate(cfg, str(tmp_path))
  # A save killed half way leaves orbax's temporary directory behind.
  os.makedirs(tmp_path / 'checkpoints' / '50.orbax-checkpoint-tmp-1234' / 'train')
  manager = checkpoints.open_manager(str(tmp_path), read_only=True)
  assert manager.latest_step() == 10
  restored, _ = checkpoints.restore(manager, state, jax.random.split(jax.random.key(0), 1),
                                    config=cfg)
  assert train.iteration(restored) == 10


def _nan_at(step_to_break):
  real = toy_data.batch_fn

  def batch_fn(*args):
    batch_at = real(*args)
    return lambda step: jnp.where(step == step_to_break, jnp.nan, batch_at(step))
  return batch_fn


def test_nan_stops_the_run_naming_step_metric_and_checkpoint(tmp_path, monkeypatch):
  monkeypatch.setattr(toy_data, 'batch_fn', _nan_at(16))  # iteration 17 sees NaN data
  cfg = small_config(num_steps=30, checkpoint_every=10)
  with pytest.raises(run.NonFiniteError, match=r'iteration 17: .*energy_real') as err:
    run.train_and_evaluate(cfg, str(tmp_path))
  assert os.path.join('checkpoints', '10') in str(err.value)
  steps = sorted(int(s) for s in os.listdir(tmp_path / 'checkpoints') if s.isdigit())
  assert steps == [10]


def test_nan_skip_mode_drops_the_update_and_counts_it(tmp_path, monkeypatch):
  monkeypatch.setattr(toy_data, 'batch_fn', _nan_at(16))
  cfg = small_config(num_steps=30)
  cfg.train.nonfinite = 'skip'
  state = run.train_and_evaluate(cfg, str(tmp_path))
  assert int(state.skipped[0]) == 1 and train.iteration(state) == 30
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(_params(state)))


def test_non_finite_state_is_never_checkpointed(tmp_path):
  cfg = small_config(num_steps=10)
  state = run.train_and_evaluate(cfg, str(tmp_path))
  bad = state.replace(step=state.step + 5, energy=state.energy.replace(
      params=jax.tree.map(lambda x: x * jnp.nan, state.energy.params)))
  manager = checkpoints.open_manager(str(tmp_path))
  with pytest.raises(run.NonFiniteError, match='Refusing to checkpoint iteration 15'):
    checkpoints.save(manager, bad, jax.random.split(jax.random.key(0), 1), cfg)
  assert manager.all_steps() == [10]


def test_divergence_detector(monkeypatch):
  cfg = small_config()
  assert divergence.DivergenceMonitor(cfg)({'energy_fake': 80.0, 'energy_real': 10.0}, 5)
  assert divergence.DivergenceMonitor(cfg)({'energy_fake': 2e3, 'energy_real': 2e3}, 5)
  assert not divergence.DivergenceMonitor(cfg)({'energy_fake': 3.0, 'energy_real': 1.0}, 5)
  # In the loop it warns once per doubling of the excess, not at every log step.
  logged = []
  monkeypatch.setattr(divergence.logging, 'warning', lambda *a: logged.append(a))
  monitor = divergence.DivergenceMonitor(cfg)
  for gap in (60.0, 70.0, 90.0, 130.0, 210.0):
    assert monitor({'energy_fake': gap, 'energy_real': 0.0}, 5)
  assert len(logged) == 2  # at 60 (first) and at 130 (> 2 x 60)
  # Each seed of a run of several has its own doublings and is named.
  logged.clear()
  monitor = divergence.DivergenceMonitor(cfg)
  calm, wild = {'energy_fake': 1.0, 'energy_real': 0.0}, {'energy_fake': 80.0, 'energy_real': 0.0}
  assert monitor.check(5, [calm, wild], [3, 4]) == [4]
  assert monitor.check(10, [wild, wild], [3, 4]) == [3, 4]
  assert [a[2] for a in logged] == [' (seed 4)', ' (seed 3)']
  assert divergence.DivergenceMonitor(cfg).check(5, [wild], [0]) == [0]
  assert logged[-1][2] == ''   # one seed: not named


def test_workdir_of_an_incompatible_config_names_the_keys(tmp_path):
  run.train_and_evaluate(small_config(num_steps=10), str(tmp_path))
  cfg = small_config(num_steps=20)
  cfg.bounds.upper = 'r1'
  cfg.optim.lr_energy = 1e-3
  with pytest.raises(run.CheckpointError, match=r'bounds.upper: .gp. in the checkpoint, .r1. '
                     r'now(.|\n)*optim.lr_energy'):
    run.train_and_evaluate(cfg, str(tmp_path))
  # Changing only the length of the run resumes fine.
  resumed = run.train_and_evaluate(small_config(num_steps=20), str(tmp_path))
  assert train.iteration(resumed) == 20


def test_a_longer_run_is_refused_where_a_schedule_spans_the_run(tmp_path):
  cfg = small_config(num_steps=10)
  cfg.optim.lr_schedule = 'cosine'
  run.train_and_evaluate(cfg, str(tmp_path))
  longer = small_config(num_steps=20)
  longer.optim.lr_schedule = 'cosine'
  # The cosine decays over train.num_steps: resuming at 20 would send the learning rates from
  # their final value back up to the middle of a 20-iteration decay.
  with pytest.raises(run.CheckpointError, match=r"train.num_steps: 10 in the checkpoint, 20 now"
                     r"(.|\n)*cosine(.|\n)*--config.train.num_steps=10(.|\n)*init_from"):
    run.train_and_evaluate(longer, str(tmp_path))
  # A constant learning rate spans nothing: the longer run resumes.
  longer.optim.lr_schedule = 'constant'
  assert checkpoints.schedule_differences({'train': {'num_steps': 10}}, longer) == []
  # The same length resumes (the run is complete: nothing to train).
  assert train.iteration(run.train_and_evaluate(cfg, str(tmp_path))) == 10


def test_a_key_added_since_the_checkpoint_matches_only_its_old_behaviour():
  # bounds.diff.energy_l2 was added later: 0.0 is the old behaviour (the bound's ADDED).
  saved = {'bounds': {'diff': {'weight': 1.0}}, 'model': {'energy': {'confine': 10.0}}}
  now = {'bounds': {'diff': {'weight': 1.0, 'energy_l2': 0.0}},
         'model': {'energy': {'confine': 10.0}}}
  assert checkpoints.config_differences(saved, now) == []
  now['bounds']['diff']['energy_l2'] = 0.1
  assert checkpoints.config_differences(saved, now) == [
      "bounds.diff.energy_l2: '<missing>' in the checkpoint, 0.1 now"]
  # Any other new key is a difference.
  now = {'bounds': {'diff': {'weight': 1.0, 'depth': 0}}, 'model': {'energy': {'confine': 10.0}}}
  assert checkpoints.config_differences(saved, now) == [
      "bounds.diff.depth: '<missing>' in the checkpoint, 0 now"]
  # (tests/test_config_lib.py: moved and removed keys, and a whole old config.)


def test_corrupt_checkpoint_names_the_file_and_the_previous_one(tmp_path):
  cfg = small_config(num_steps=20)
  run.train_and_evaluate(cfg, str(tmp_path))
  latest = tmp_path / 'checkpoints' / '20' / 'train'
  for root, _, files in os.walk(latest):
    for name in files:
      with open(os.path.join(root, name), 'wb') as f:
        f.write(b'\x00garbage')
  with pytest.raises(run.CheckpointError,
                     match=r'checkpoints/20 is corrupt(.|\n)*previous checkpoint is step 10'):
    run.train_and_evaluate(small_config(num_steps=30), str(tmp_path))


def test_records_are_replaced_whole_or_not_at_all(tmp_path):
  path = str(tmp_path / 'history.json')
  with history.atomic_open(path) as f:
    f.write('[1]')
  # A writer that dies mid-file (a kill during an evaluation's write) leaves the old file.
  with pytest.raises(KeyboardInterrupt):
    with history.atomic_open(path) as f:
      f.write('[1, 2')
      raise KeyboardInterrupt
  assert open(path).read() == '[1]' and os.listdir(tmp_path) == ['history.json']
  with history.atomic_open(path, 'wb') as f:
    np.savez_compressed(f, a=np.arange(3))
  np.testing.assert_array_equal(np.load(path)['a'], np.arange(3))

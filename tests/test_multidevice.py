"""Data parallelism: 4 devices == 1 device; 2 processes == 1 process; checkpoints move between
device counts. Runs JAX in subprocesses with fake CPU devices / a localhost cluster."""
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from bibound_jax import train
from bibound_jax import assemble
from experiments import checkpoints
from experiments import run
from test_run import REPO
import multidevice_worker as worker

WORKER = os.path.join(REPO, 'tests', 'multidevice_worker.py')


def _env(devices, steps=10):
  env = dict(os.environ, MD_STEPS=str(steps))
  env['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                      f' --xla_force_host_platform_device_count={devices}').strip()
  env['JAX_PLATFORMS'] = 'cpu'
  return env


def _run(args, devices, timeout=600, **env):
  proc = subprocess.run([sys.executable, WORKER, *args], cwd=REPO, env={**_env(devices), **env},
                        capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-4000:]


def _assert_close(a, b, atol=3e-4):
  """Equal up to float32 rounding amplified over a few steps. The reduction order differs with
  the device count, and the entropy gradient (through 1/s of small singular values of J) blows
  such rounding up 10-100x per step at this initialisation (multidevice_worker.py): two steps
  keep it near 1e-4, while a real error (per-device BatchNorm statistics, unaveraged gradients,
  repeated latents, mixed-up seeds) moves parameters by O(lr) = 1e-2 in these configs."""
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_allclose(a[k], b[k], rtol=1e-3, atol=atol, err_msg=k)


def test_four_devices_give_the_parameters_of_one_device(tmp_path):
  """One seed over 4 devices (data parallel), 2 seeds over 2 x 2 (with the SV vectors shared
  between the updates) and 4 seeds one per device (the seeds mesh axis) give the parameters of
  one device."""
  _run(['compare', str(tmp_path / 'p.npz')], devices=4)
  p = np.load(tmp_path / 'p.npz')
  for suffix in ('', '_2seeds_shared', '_4seeds'):
    four = {k.split('/', 1)[1]: p[k] for k in p if k.startswith(f'four{suffix}/')}
    one = {k.split('/', 1)[1]: p[k] for k in p if k.startswith(f'one{suffix}/')}
    assert len(four) > 5
    _assert_close(four, one)


def test_checkpoint_saved_on_four_devices_restores_on_one(tmp_path):
  # Parameters only: the evaluation on several devices is the two-process test's.
  _run(['train', str(tmp_path / 'w4'), str(tmp_path / 'p4.npz')], devices=4, MD_EVAL='0')
  saved = dict(np.load(tmp_path / 'p4.npz'))
  # This process has one device: the checkpoint restores exactly onto it ...
  cfg = worker.small_config(20)
  cfg.train.eval_every = 0
  _, template, rng = assemble.abstract_state(cfg)
  manager = checkpoints.open_manager(str(tmp_path / 'w4'), read_only=True)
  restored, _ = checkpoints.restore(manager, template, rng, config=cfg)
  manager.close()
  assert train.iteration(restored) == 10 and len(jax.devices()) == 1
  restored_params = worker.flat_params(restored)
  for k in saved:
    np.testing.assert_array_equal(restored_params[k], saved[k], err_msg=k)
  # ... and training continues from it.
  resumed = run.train_and_evaluate(cfg, str(tmp_path / 'w4'))
  assert train.iteration(resumed) == 20


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path):
  """One step, so the tolerance can be float32 rounding (measured: 2.8e-6); after two steps the
  entropy gradient has amplified it to ~5e-4 (see _assert_close)."""
  address = f'localhost:{_free_port()}'
  procs = [subprocess.Popen(
      [sys.executable, WORKER, 'train', str(tmp_path / 'w'), str(tmp_path / f'p{i}.npz'),
       address, '2', str(i)], cwd=REPO, env=_env(2, steps=1), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-4000:]
  p0, p1 = (dict(np.load(tmp_path / f'p{i}.npz')) for i in range(2))
  for k in p0:
    np.testing.assert_array_equal(p0[k], p1[k], err_msg=k)
  single_cfg = worker.small_config(1)
  single_cfg.train.eval_every = 0   # parameters only
  single = run.train_and_evaluate(single_cfg, str(tmp_path / 'single'))
  _assert_close(p0, worker.flat_params(single), atol=2e-5)
  # Only process 0 wrote metrics and figures.
  assert os.path.exists(tmp_path / 'w' / 'eval' / 'samples.png')


def test_global_batch_must_divide_over_devices():
  from bibound_jax import sharding
  mesh = sharding.make_mesh(jax.devices() * 1)
  assert sharding.per_device_batch(64, mesh) == 64 // len(jax.devices())
  fake = type('M', (), {'shape': {'data': 3}})()
  with pytest.raises(ValueError, match=r'batch_size = 64 is the GLOBAL batch.*3 devices of '
                     r"the mesh's data axis.*--config.train.batch_size=63"):
    sharding.per_device_batch(64, fake)

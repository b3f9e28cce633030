"""The StackedMNIST task: on-device batches, the config, a short run with mode-count evaluation,
the standalone evaluation command, and the Jacobian-subset option."""
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bibound_jax import train
from bibound_jax import config_lib
from bibound_jax.bounds import entropy
from bibound_jax.data import mnist as mnist_data
from configs import stackedmnist
from experiments import evaluate
from experiments import run
from experiments import tasks


def test_stacked_batch_channels_are_the_indexed_digits():
  images, labels = mnist_data.load_embedded('train')
  x, index = mnist_data.stacked_batch(jnp.asarray(images), jax.random.key(0), 32)
  x, index = np.asarray(x), np.asarray(index)
  assert x.shape == (32, 28, 28, 3) and x.min() >= -1.0 and x.max() <= 1.0
  for c in range(3):
    np.testing.assert_allclose(x[..., c], mnist_data.to_unit_range(images[index[:, c]]),
                               atol=1e-6)
  modes = mnist_data.stacked_modes(labels[index])
  assert np.all(modes == 100 * labels[index[:, 0]] + 10 * labels[index[:, 1]]
                + labels[index[:, 2]])


def tiny_config(tmp_path, **train_overrides):
  cfg = stackedmnist.get_config('cpu')
  cfg.data.source = 'embedded'
  cfg.model.energy.hidden = (64, 32)
  cfg.model.generator.hidden = (32, 64)
  cfg.model.generator.latent_dim = 4
  cfg.bounds.jacobian.num_latents = 4
  cfg.train.batch_size = 16
  cfg.train.update(dict(num_steps=4, log_every=2, eval_every=4, checkpoint_every=4))
  cfg.train.update(train_overrides)
  cfg.eval.num_samples = 300
  cfg.eval.batch_size = 100
  cfg.eval.num_data = 100
  cfg.eval.grid_samples = 16
  cfg.eval.classifier_steps = 40
  cfg.eval.classifier_path = str(tmp_path / 'classifier.msgpack')
  cfg.eval.bound_batches = 2
  cfg.sample.update(num_steps=6, num_warmup=3, ais_chains=8, ais_temps=20, ais_doublings=0)
  return cfg


def test_data_fn_is_a_pure_function_of_seed_and_step(tmp_path):
  cfg = tiny_config(tmp_path)
  cfg.optim.energy_steps = 2
  batch_at = tasks.get_task(cfg).batches(cfg, None, 0)
  a, b = np.asarray(batch_at(3)), np.asarray(batch_at(3))
  assert a.shape == (1, 2, 16, 28, 28, 3)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, np.asarray(batch_at(4)))
  # Every pixel is a pixel of some real digit: the values are k / 127.5 - 1.
  np.testing.assert_allclose((a + 1.0) * 127.5, np.round((a + 1.0) * 127.5), atol=1e-4)


def test_short_run_evaluates_modes_and_the_standalone_command_agrees(tmp_path):
  workdir = str(tmp_path / 'run')
  cfg = tiny_config(tmp_path)
  state = run.train_and_evaluate(cfg, workdir)
  assert train.iteration(state) == 4
  out = os.path.join(workdir, 'eval')
  for name in ('samples.png', 'samples_4.png', 'metrics_4.json', 'history.json', 'modes.png'):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  with open(os.path.join(out, 'metrics_4.json')) as f:
    m = json.load(f)
  assert 1 <= m['modes'] <= 300 and 0.0 <= m['kl'] <= math.log(1000) + 1e-9
  # 300 real samples: nearly all distinct modes (an untrained generator is far from it).
  assert m['data_modes'] > 200 and m['data_modes'] > m['modes']
  assert os.path.exists(cfg.eval.classifier_path)   # trained once, cached for the next call
  again = evaluate.evaluate_checkpoint(cfg, workdir)
  assert again['step'] == 4
  for key in ('modes', 'kl', 'data_modes', 'energy_real', 'energy_fake'):
    assert again[key] == pytest.approx(m[key], rel=1e-5), key
  # ... and evaluates the energy as a model: p_theta's samples after MCMC from G's, the NLL of
  # held-out digits on the box by AIS (in bits/dim too), the verdict on R^D and the bounds.
  for key in ('model_modes', 'model_kl', 'log_z', 'log_z_error', 'nll', 'nll_bpd',
              'lower_bound', 'upper_bound', 'normalisable_real'):
    assert np.isfinite(again[key]), key
  assert again['nll'] == pytest.approx(again['energy_test'] + again['log_z'])
  assert 'lower_bound_fails' not in again   # d = 4 < D: L_lo bounds no NLL on R^D
  for name in ('model_samples.png', 'model_samples_4.png', 'sandwich.png'):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  # Resuming continues from the saved step.
  cfg.train.num_steps = 6
  assert train.iteration(run.train_and_evaluate(cfg, workdir)) == 6


def test_evaluate_without_checkpoint_names_the_fix(tmp_path):
  with pytest.raises(run.CheckpointError, match='No checkpoint .* train first'):
    evaluate.evaluate_checkpoint(tiny_config(tmp_path), str(tmp_path / 'empty'))


def test_config_variants_and_errors():
  default, cpu, cnn = (stackedmnist.get_config(a) for a in (None, 'cpu', 'cnn,r1'))
  assert default.train.batch_size == 64 and default.optim.lr_energy == 2e-4
  assert default.model.energy.hidden == (2000, 1000, 500, 250, 250)
  assert default.model.generator.hidden == (500, 1000, 2000)
  assert cpu.train.num_steps < default.train.num_steps and cpu.bounds.jacobian.num_latents == 16
  assert cnn.model.energy.name == 'dcgan' and cnn.bounds.upper == 'r1'
  assert stackedmnist.get_config('cpu,cnn').model.energy.name == 'dcgan'
  with pytest.raises(ValueError, match="unknown argument 'gpu'.*cpu, cnn"):
    stackedmnist.get_config('gpu')
  bad = stackedmnist.get_config()
  bad.bounds.jacobian.num_latents = 24
  with pytest.raises(config_lib.ConfigError, match='num_latents = 24 must be 0 .* divisor of'):
    config_lib.validate_config(bad, ('stackedmnist',))
  bad = stackedmnist.get_config()
  bad.data.source = 'internet'
  with pytest.raises(config_lib.ConfigError, match="data.source = 'internet'.*auto, tfds"):
    tasks.validate(bad)


def test_jacobian_latents_are_a_strided_subset():
  z = jnp.arange(64.0)[:, None]
  cfg = stackedmnist.get_config().bounds.jacobian
  assert entropy.JacobianTerms(cfg).latents(z).shape == (64, 1)          # num_latents 0: all
  cfg.num_latents = 16
  np.testing.assert_array_equal(entropy.JacobianTerms(cfg).latents(z)[:, 0],
                                np.arange(0, 64, 4))


def test_report_pools_the_seeds_of_separate_runs():
  """experiments/studies/stackedmnist.py --runs (history.pool): a 1-seed and a 2-seed run of a preset -> 3 seeds, at
  the evaluation steps both reached."""
  from experiments import history
  keys = history.STACKEDMNIST_KEYS
  one = [{'step': s, **{k: float(s) for k in keys}} for s in (2, 4, 6)]   # no wall_s
  two = [{'step': s, 'wall_s': 30.0 * s,
          **{f'{k}/seed_{j}': float(s + 10 * (j + 1)) for k in keys for j in (3, 4)},
          **{k: 0.0 for k in keys}} for s in (2, 4)]
  pooled = history.pool([one, two])
  assert [h['step'] for h in pooled] == [2, 4]
  assert history.per_seed(pooled[1], 'modes') == [4.0, 44.0, 54.0]
  assert history.per_seed(pooled[0], 'kl') == [2.0, 42.0, 52.0]
  assert pooled[1]['wall_s'] == 120.0   # the runs that recorded it

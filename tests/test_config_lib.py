"""A checkpoint's saved config against today's: the sections' declarations of resumable,
added, moved and removed keys (bibound_jax/config_lib.py)."""
import pytest

from bibound_jax import config_lib
from configs import stackedmnist
from configs import toy
from experiments import checkpoints


def _old_stackedmnist_config() -> dict:
  """A saved StackedMNIST :cpu config as the code before e83a7b6's successor wrote it: the
  Jacobian settings in bounds.sv, and keys since removed."""
  saved = stackedmnist.get_config('cpu').to_dict()
  jac = saved['bounds'].pop('jacobian')
  saved['bounds']['sv'].update({k: jac[k] for k in ('estimator', 'num_iters', 'block_size',
                                                    'cg_iters', 'num_latents', 'latent_chunk')},
                               jacobian_bn=jac['batch_norm'], generator_log_det=False)
  saved['bounds']['mi'].update(lr=1e-3, noise_data=False)
  saved['bounds']['diff']['uniform_fraction'] = 0.0
  saved['bounds']['gp']['decay_horizon'] = 0
  del saved['sample']                                    # evaluation settings: resumable
  return saved


def test_an_old_checkpoint_matches_the_config_that_reproduces_it():
  current = stackedmnist.get_config('cpu')
  saved = _old_stackedmnist_config()
  assert checkpoints.config_differences(saved, current.to_dict()) == []
  # A value that changes what the state means is still a difference, at its new key ...
  current.bounds.jacobian.num_latents = 32
  assert checkpoints.config_differences(saved, current.to_dict()) == [
      'bounds.jacobian.num_latents: 16 in the checkpoint, 32 now']
  # A key added since the save matches at the value that reproduces the old code (0.0 for
  # bounds.diff.energy_l2), not at another.
  del saved['bounds']['diff']['energy_l2']
  current = stackedmnist.get_config('cpu')
  current.bounds.diff.energy_l2 = 0.0
  assert checkpoints.config_differences(saved, current.to_dict()) == []
  current.bounds.diff.energy_l2 = 0.1
  assert checkpoints.config_differences(saved, current.to_dict()) == [
      "bounds.diff.energy_l2: '<missing>' in the checkpoint, 0.1 now"]


def test_a_removed_key_at_another_value_names_the_commit_that_had_it():
  saved = _old_stackedmnist_config()
  saved['bounds']['mi']['noise_data'] = True
  saved['bounds']['mi']['lr'] = 5e-5           # never read: any value matches
  diffs = checkpoints.config_differences(saved, stackedmnist.get_config('cpu').to_dict())
  assert len(diffs) == 1
  assert diffs[0].startswith('bounds.mi.noise_data: True in the checkpoint; the key is gone')
  assert 'commit e83a7b6' in diffs[0]


def test_resumable_keys_and_the_schedules_that_span_the_run():
  saved = toy.get_config().to_dict()
  current = toy.get_config()
  current.train.update(num_steps=60_000, log_every=7, keep_checkpoints=9)
  current.sample.num_steps = 7
  current.eval.num_samples = 5
  assert checkpoints.config_differences(saved, current.to_dict()) == []
  # The toy's cosine learning rates span train.num_steps: resuming longer is refused.
  spans = checkpoints.schedule_differences(saved, current)
  assert len(spans) == 1 and "optim.lr_schedule = 'cosine'" in spans[0]
  current.optim.lr_schedule = 'constant'
  assert checkpoints.schedule_differences(saved, current) == []


def test_upgrade_reads_a_saved_config_at_todays_keys():
  upgraded = config_lib.upgrade(_old_stackedmnist_config(), checkpoints.sections())
  assert upgraded['bounds']['jacobian']['num_latents'] == 16
  assert 'jacobian_bn' not in upgraded['bounds']['sv']
  assert upgraded['bounds']['jacobian']['batch_norm'] == 'batch'
  assert 'noise_data' not in upgraded['bounds']['mi'] and 'lr' not in upgraded['bounds']['mi']
  assert set(upgraded['bounds']['sv']) == {'share_vectors'}


def test_moved_keys_follow_every_rename():
  assert config_lib.moved_key('bounds.jacobian_bn') == 'bounds.jacobian.batch_norm'
  assert config_lib.moved_key('config.bounds.sv_batch') == 'bounds.jacobian.num_latents'
  assert config_lib.moved_key('optim.n_critic') == 'optim.energy_steps'
  assert config_lib.moved_key('model.generator.bound') == 'model.generator.spline_range'
  assert config_lib.moved_key('bounds.gp.weight') is None

"""experiments/studies/cli.py: the command line's --config overrides in derived configs."""
import pytest

from configs import toy
from experiments import cli


def _locked(arg=''):
  config = toy.get_config(arg)
  config.lock()   # as config_flags leaves --config (lock_config=True)
  return config


def test_a_derived_config_takes_the_preset_then_the_changes_then_the_overrides():
  base = _locked('authors')
  given = {'train.num_steps': 60_000, 'model.energy.hidden': (256, 256)}
  cfg = cli.derive(base, given, 'r1', {'train.num_seeds': 3, 'train.num_steps': 10})
  assert (cfg.bounds.lower, cfg.bounds.upper) == ('sv', 'r1')
  assert cfg.train.num_seeds == 3
  assert cfg.train.num_steps == 60_000 and tuple(cfg.model.energy.hidden) == (256, 256)
  assert cfg.model.generator.name == 'mlp'   # the file's argument (authors) stays
  # The base is not touched; no preset keeps the file's.
  assert (base.bounds.upper, base.train.num_steps, base.train.num_seeds) == ('gp', 150_000, 1)
  assert cli.derive(base, {}).bounds.upper == 'gp'


def test_an_override_of_a_preset_key_wins_over_every_preset():
  # The SV lower bound with the diffusion upper bound: --presets=sv+gp --config.bounds.upper=diff.
  for preset in ('sv+gp', 'mi+diff', 'wgan_gp'):
    cfg = cli.derive(_locked(), {'bounds.upper': 'diff'}, preset)
    assert cfg.bounds.upper == 'diff'


def test_a_key_the_config_lacks_or_an_unknown_preset_is_refused():
  with pytest.raises(KeyError, match='wieght'):
    cli.derive(_locked(), {}, 'sv+gp', {'bounds.gp.wieght': 1.0})
  with pytest.raises(ValueError, match="Unknown preset 'sv\\+diff'"):
    cli.derive(_locked(), {}, 'sv+diff')


def test_the_unknown_key_message_names_the_override():
  argv = ['toy', '--config=configs/toy.py', '--config.train.num_steps=5',
          '--config.bounds.gp.wieght=1']
  message = cli.unknown_key_message(argv, AttributeError("'wieght'"))
  assert message.startswith("--config.bounds.gp.wieght: config.bounds.gp has no key 'wieght'; "
                            'its keys are: energy_l2, margin, schedule, weight.')
  # A key that moved says where to.
  argv[-1] = '--config.bounds.sv.estimator=exact_smin'
  assert cli.unknown_key_message(argv, AttributeError("'estimator'")) == (
      '--config.bounds.sv.estimator: this key moved to config.bounds.jacobian.estimator; pass '
      '--config.bounds.jacobian.estimator=... instead.')
  assert cli.describe('configs/toy.py:authors', {'train.num_steps': 5}) == (
      '--config=configs/toy.py:authors --config.train.num_steps=5')


def test_the_model_table_row_reads_a_full_evaluation(tmp_path):
  import json
  from experiments.studies import stackedmnist_model
  record = {'step': 10}
  for key, _, _ in stackedmnist_model.COLUMNS:
    record.update({f'{key}/seed_0': 1.0, f'{key}/seed_1': 3.0, key: 2.0, f'{key}/std': 1.0})
  record.update({'log_z_converged/seed_0': 1.0, 'log_z_converged/seed_1': 0.0,
                 'normalisable_real/seed_0': 0.0, 'normalisable_real/seed_1': 0.0})
  (tmp_path / 'eval').mkdir()
  (tmp_path / 'eval' / 'metrics_10.json').write_text(json.dumps(record))
  line = stackedmnist_model.row('mi+diff', str(tmp_path), 10)
  assert line.startswith('| mi+diff | 10 | 2.0 +- 1.0 | 2.000 +- 1.000 |')
  assert line.endswith('| 2 +- 1 | 2 +- 1 | 1/2 converged | no (2/2 seeds) |')
  # upper bound 'none' (an upper term of exactly 0 on every seed): no L_up to print
  record.update({'upper_term': 0.0, 'upper_term/seed_0': 0.0, 'upper_term/seed_1': 0.0})
  (tmp_path / 'eval' / 'metrics_10.json').write_text(json.dumps(record))
  assert stackedmnist_model.row('none', str(tmp_path), 10).endswith(
      '| 2 +- 1 | (no upper term) | 1/2 converged | no (2/2 seeds) |')

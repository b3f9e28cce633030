"""The bound registry: every bound owns its section and checks; a new bound is one class and
one registry entry (the worked example of docs/bounds.md, "Adding a bound")."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bibound_jax import assemble
from bibound_jax import bounds
from bibound_jax import config_checks
from bibound_jax import config_lib
from bibound_jax import train
from bibound_jax.bounds import base
from configs import toy


class EnergyL2(base.UpperBound):
  """The example of docs/bounds.md: w mean(E(x_data)^2 + E(x_fake)^2)."""
  name = 'energy_l2'
  DEFAULTS = dict(weight=0.1)

  @classmethod
  def validate(cls, config):
    config_checks.positive(config, 'bounds.energy_l2.weight', allow_zero=True)

  def term(self, inputs: base.EnergyInputs):
    e = jnp.concatenate([inputs.energy_fn(inputs.x_data), inputs.energy_fn(inputs.x_fake)])
    value = self.section.weight * jnp.mean(e ** 2)
    return value, {'energy_l2': value}, None


def test_a_new_bound_is_one_class_and_one_registry_entry(monkeypatch):
  monkeypatch.setitem(bounds.UPPER, EnergyL2.name, EnergyL2)
  cfg = toy.get_config('authors')
  assert cfg.bounds.energy_l2.weight == 0.1            # its section, from its defaults
  cfg.bounds.upper = 'energy_l2'
  cfg.train.batch_size = 32
  config_lib.validate_config(cfg, ('25gaussians',))
  _, state, rng = assemble.initial_state(cfg)
  batch = jax.random.normal(jax.random.key(0), (1, 1, 32, 2))
  _, metrics = train.make_train_step(cfg, donate=False)(state, batch, rng)
  metrics = assemble.seed_slice(metrics, 0)
  assert float(metrics['energy_l2']) > 0
  np.testing.assert_allclose(metrics['upper_term'], metrics['energy_l2'])
  np.testing.assert_allclose(metrics['upper_bound'] - metrics['lower_bound'],
                             metrics['energy_l2'], atol=1e-6)
  cfg.bounds.energy_l2.weight = -1.0
  with pytest.raises(config_checks.ConfigError, match='bounds.energy_l2.weight = -1.0'):
    config_lib.validate_config(cfg, ('25gaussians',))


def test_names_come_from_the_registry():
  assert tuple(bounds.LOWER) == ('sv', 'mi', 'none')
  assert tuple(bounds.UPPER) == ('gp', 'diff', 'none', 'r1', 'wgan_gp')
  cfg = toy.get_config('authors')
  cfg.bounds.lower = 'svd'
  with pytest.raises(config_checks.ConfigError, match="bounds.lower = 'svd'.*sv, mi, none"):
    bounds.validate(cfg)


def test_only_the_chosen_bounds_sections_are_checked():
  """A bad value in an unused bound's section does not stop a run; in a used one it does.
  The GP uses the SV settings for its score, so it checks them too."""
  cfg = toy.get_config('authors,wgan_gp')
  cfg.bounds.mi.sigma = -1.0
  cfg.bounds.sv.estimator = 'power'
  bounds.validate(cfg)
  cfg.bounds.lower = 'mi'
  with pytest.raises(config_checks.ConfigError, match='bounds.mi.sigma = -1.0'):
    bounds.validate(cfg)
  cfg = toy.get_config('authors,mi+diff')
  cfg.bounds.upper = 'gp'
  cfg.bounds.sv.estimator = 'power'
  with pytest.raises(config_checks.ConfigError, match='bounds.sv.estimator'):
    bounds.validate(cfg)
  # A decay horizon without the decaying schedule would silently do nothing.
  cfg = toy.get_config('authors')
  cfg.bounds.gp.update(schedule='constant', decay_horizon=30_000)
  with pytest.raises(config_checks.ConfigError, match="decay_horizon = 30000.*'constant'"):
    bounds.validate(cfg)
  # The diffusion bound's uniform share of t draws: a fraction, and only with the proposal.
  cfg = toy.get_config('authors,mi+diff')
  cfg.bounds.diff.uniform_fraction = 0.5
  bounds.validate(cfg)
  cfg.bounds.diff.uniform_fraction = 1.5
  with pytest.raises(config_checks.ConfigError, match=r'uniform_fraction = 1.5.*\[0, 1\]'):
    bounds.validate(cfg)
  cfg.bounds.diff.update(uniform_fraction=0.5, importance_sampling=False)
  with pytest.raises(config_checks.ConfigError, match='set importance_sampling=True or '
                     'uniform_fraction=0'):
    bounds.validate(cfg)


def test_network_options_ask_for_what_each_bound_needs():
  assert bounds.network_options(toy.get_config('authors,sv+gp')) == {}
  opts = bounds.network_options(toy.get_config('authors,mi+diff'))
  assert opts['time_conditioned'] and opts['mi_net'] == {'kind': 'ba', 'hidden': (100, 100)}
  assert opts['output_noise'] is None
  cfg = toy.get_config('authors,mi+diff')
  cfg.bounds.mi.learn_sigma = True
  assert bounds.network_options(cfg)['output_noise'] == (0.05, 0.01)

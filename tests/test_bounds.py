"""The bound registry: every bound owns its section and checks; a new bound is one class and
one registry entry (the worked example of docs/bounds.md, "Adding a bound")."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bibound_jax import assemble
from bibound_jax import bounds
from bibound_jax import config_schema
from bibound_jax import config_lib
from bibound_jax import train
from bibound_jax.bounds import base
from configs import common
from configs import toy


class EnergyL2(base.UpperBound):
  """The example of docs/bounds.md: w mean(E(x_data)^2 + E(x_fake)^2)."""
  name = 'energy_l2'
  DEFAULTS = dict(weight=0.1)

  @classmethod
  def validate(cls, config):
    config_schema.positive(config, 'bounds.energy_l2.weight', allow_zero=True)

  def term(self, inputs: base.EnergyInputs):
    e = jnp.concatenate([inputs.energy_fn(inputs.x_data), inputs.energy_fn(inputs.x_fake)])
    value = self.section.weight * jnp.mean(e ** 2)
    return value, {'mean_e2': value}, None


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
  assert float(metrics['mean_e2']) > 0
  np.testing.assert_allclose(metrics['upper_term'], metrics['mean_e2'])
  np.testing.assert_allclose(metrics['upper_bound'] - metrics['lower_bound'],
                             metrics['mean_e2'], atol=1e-6)
  cfg.bounds.energy_l2.weight = -1.0
  with pytest.raises(config_schema.ConfigError, match='bounds.energy_l2.weight = -1.0'):
    config_lib.validate_config(cfg, ('25gaussians',))


def test_names_come_from_the_registry():
  assert tuple(bounds.LOWER) == ('sv', 'mi', 'none')
  assert tuple(bounds.UPPER) == ('gp', 'diff', 'none', 'r1', 'wgan_gp')
  cfg = toy.get_config('authors')
  cfg.bounds.lower = 'svd'
  with pytest.raises(config_schema.ConfigError, match="bounds.lower = 'svd'.*sv, mi, none"):
    config_lib.validate_config(cfg, ('25gaussians',))


def test_only_the_chosen_bounds_sections_are_checked():
  """A bad value in an unused bound's section does not stop a run; in a used one it does.
  The GP uses the Jacobian settings for its score, so they are checked with it."""
  validate = lambda cfg: config_lib.validate_config(cfg, ('25gaussians',))
  cfg = toy.get_config('authors,wgan_gp')
  cfg.bounds.mi.sigma = -1.0
  cfg.bounds.jacobian.estimator = 'power'
  validate(cfg)
  cfg.bounds.lower = 'mi'
  with pytest.raises(config_schema.ConfigError, match='bounds.mi.sigma = -1.0'):
    validate(cfg)
  cfg = toy.get_config('authors,mi+diff')
  cfg.bounds.upper = 'gp'
  cfg.bounds.jacobian.estimator = 'power'
  with pytest.raises(config_schema.ConfigError, match='bounds.jacobian.estimator'):
    validate(cfg)


def test_each_section_is_declared_once_by_its_component():
  """The config is the declarations' defaults; the keys checkpoints may see change, and the
  keys that moved, come from the declarations (no table elsewhere)."""
  sections = config_lib.library_sections()
  paths = [s.path for s in sections]
  assert len(paths) == len(set(paths))
  cfg = common.base_config()
  for s in sections:
    if not s.defaults:   # data, model.*: the experiment's config sets them
      continue
    node = cfg
    for part in s.path.split('.'):
      node = node[part]
    assert {k: node[k] for k in s.defaults} == dict(s.defaults), s.path
  assert config_lib.moved_key('bounds.sv.jacobian_bn') == 'bounds.jacobian.batch_norm'
  assert config_lib.moved_key('config.bounds.estimator') == 'bounds.jacobian.estimator'
  assert config_lib.moved_key('bounds.gp.weight') is None


def test_network_options_ask_for_what_each_bound_needs():
  assert bounds.network_options(toy.get_config('authors,sv+gp')) == {}
  opts = bounds.network_options(toy.get_config('authors,mi+diff'))
  assert opts['time_conditioned'] and opts['mi_net'] == {'kind': 'ba', 'hidden': (100, 100)}
  assert opts['output_noise'] is None
  cfg = toy.get_config('authors,mi+diff')
  cfg.bounds.mi.learn_sigma = True
  assert bounds.network_options(cfg)['output_noise'] == (0.05, 0.01)


def test_which_bounds_bound_the_nll_on_r_d():
  """docs/bounds.md, "What the bounds bound in D dimensions": the SV and GP bounds only when
  the generator's density lives on R^D (d = D); the MI and diffusion bounds always; the
  baselines never."""
  cfg = toy.get_config('authors')
  lower, upper = {}, {}
  for name, cls in bounds.LOWER.items():
    lower[name] = (cls(cfg).bounds_nll(2, 2), cls(cfg).bounds_nll(2352, 32))
  for name, cls in bounds.UPPER.items():
    upper[name] = (cls(cfg).bounds_nll(2, 2), cls(cfg).bounds_nll(2352, 32))
  assert lower == {'sv': (True, False), 'mi': (True, True), 'none': (False, False)}
  assert upper == {'gp': (True, False), 'diff': (True, True), 'none': (False, False),
                   'r1': (False, False), 'wgan_gp': (False, False)}


def test_an_energy_penalty_is_in_the_loss_but_not_in_the_bound():
  """bounds.gp.energy_l2 = a adds a (mean E(x_data)^2 + mean E(x_fake)^2) to the energy's loss;
  the reported upper term (hence L_up and the sandwich's verdict) stays the GP term alone."""
  cfg = toy.get_config()
  cfg.train.batch_size = 32
  _, state, _ = assemble.initial_state(cfg)
  state = assemble.seed_slice(state, 0)
  x = jax.random.normal(jax.random.key(0), (32, 2))
  z = jax.random.normal(jax.random.key(1), (32, 2))
  lower, _ = bounds.from_config(cfg)

  def loss(a):
    cfg.bounds.gp.energy_l2 = a
    _, upper = bounds.from_config(cfg)
    return train.energy_loss(state.energy.params, state, x, z, jax.random.key(2), lower, upper)

  plain, (m0, _) = loss(0.0)
  penalised, (m1, _) = loss(0.3)
  assert 'energy_l2' not in m0
  np.testing.assert_allclose(penalised - plain, m1['energy_l2'], rtol=1e-5)
  # its data half exactly, its fake half at least 0.3 mean(E(fake))^2 (Jensen)
  e_data = state.energy.apply_fn({'params': state.energy.params}, x)
  fake_half = float(m1['energy_l2']) - 0.3 * float(jnp.mean(e_data ** 2))
  assert fake_half >= 0.3 * float(m1['energy_fake']) ** 2 * (1 - 1e-5)
  np.testing.assert_allclose(m1['upper_term'], m0['upper_term'], rtol=1e-6)

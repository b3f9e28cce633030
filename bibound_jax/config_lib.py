"""Config validation: every bad value gets an error that names the key and the valid choices.

Unknown keys and ill-typed overrides on the command line are rejected by `ml_collections`
itself (the config is locked and typed); this module checks the *values*.
"""
from __future__ import annotations

from typing import Iterable

from bibound_jax import models
from bibound_jax.bounds import entropy
from bibound_jax.bounds import mutual_info
from bibound_jax.train import LOWER_BOUNDS, UPPER_BOUNDS


class ConfigError(ValueError):
  """A config value is invalid; the message names the key and the fix."""


def _choice(config, key: str, valid: Iterable[str]) -> None:
  value = _get(config, key)
  valid = tuple(valid)
  if value not in valid:
    raise ConfigError(f'config.{key} = {value!r} is not valid; choose one of: '
                      f'{", ".join(valid)}.')


def _positive(config, key: str, allow_zero: bool = False) -> None:
  value = _get(config, key)
  if not isinstance(value, (int, float)) or value < 0 or (value == 0 and not allow_zero):
    bound = '>= 0' if allow_zero else '> 0'
    raise ConfigError(f'config.{key} = {value!r}; it must be a number {bound}.')


def _get(config, key: str):
  node = config
  for part in key.split('.'):
    if part not in node:
      raise ConfigError(f'config.{key} is missing; the config file must define it.')
    node = node[part]
  return node


def validate_config(config, datasets: Iterable[str], extra_positive: Iterable[str] = ()) -> None:
  """Check names and ranges of a training config; raise ConfigError naming the key.

  `extra_positive` lists the task's own keys (e.g. the toy's eval.grid_spacing) that must be
  numbers > 0."""
  _choice(config, 'data.name', datasets)
  _choice(config, 'bounds.lower', LOWER_BOUNDS)
  _choice(config, 'bounds.upper', UPPER_BOUNDS)
  _choice(config, 'bounds.estimator', entropy.ESTIMATORS)
  _choice(config, 'bounds.gp_weight_schedule', ('constant', 'decay'))
  _choice(config, 'train.nonfinite', ('stop', 'skip'))
  if 'jacobian_bn' in config.bounds:
    _choice(config, 'bounds.jacobian_bn', ('batch', 'running'))
  _choice(config, 'bounds.mi_estimator', mutual_info.MI_KINDS)
  if config.bounds.upper == 'diff' and config.model.energy.name not in models.TIME_ENERGIES:
    raise ConfigError(
        f"config.bounds.upper = 'diff' needs a time-conditioned energy E(x, t); "
        f'config.model.energy.name = {config.model.energy.name!r} is not one. Choose one of: '
        f'{", ".join(models.TIME_ENERGIES)}.')
  if config.bounds.mi_learn_sigma and not config.bounds.mi_sigma > config.bounds.mi_sigma_floor:
    raise ConfigError('config.bounds.mi_sigma must exceed config.bounds.mi_sigma_floor.')
  for key in ('bounds.num_iters', 'bounds.block_size', 'bounds.cg_iters', 'optim.n_critic',
              'train.batch_size', 'train.num_steps', 'train.log_every', 'train.eval_every',
              'train.checkpoint_every', 'train.keep_checkpoints', 'optim.lr_energy',
              'train.steps_per_call',
              'eval.num_samples', 'train.divergence_gap', 'train.divergence_energy',
              'optim.lr_generator', 'model.generator.latent_dim', *extra_positive):
    _positive(config, key)
  for key in ('bounds.mi_sigma', 'bounds.diff_weight', 'bounds.diff_t_min', 'optim.lr_critic',
              'bounds.diff_beta_min', 'bounds.diff_beta_max'):
    _positive(config, key)
  for key in ('bounds.lambda_h', 'bounds.gp_weight', 'bounds.gp_margin', 'bounds.r1_weight',
              'bounds.wgan_gp_weight', 'optim.grad_clip', 'optim.b1', 'optim.b2', 'optim.eps'):
    _positive(config, key, allow_zero=True)
  sv_batch = config.bounds.get('sv_batch', 0)
  if sv_batch and (sv_batch < 0 or config.train.batch_size % sv_batch):
    raise ConfigError(f'config.bounds.sv_batch = {sv_batch} must be 0 (the whole batch) or a '
                      f'divisor of config.train.batch_size = {config.train.batch_size}.')
  if config.bounds.get('latent_chunk', 0) < 0:
    raise ConfigError(f'config.bounds.latent_chunk = {config.bounds.latent_chunk} must be >= 0 '
                      '(0: all Jacobian latents in one vmapped call).')
  if not (0 <= config.optim.b1 < 1 and 0 <= config.optim.b2 < 1):
    raise ConfigError('config.optim.b1 and config.optim.b2 must lie in [0, 1).')

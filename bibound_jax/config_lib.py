"""Validation of a training config: every bad value gets an error naming the key and the fix.

Unknown keys and ill-typed overrides on the command line are rejected by `ml_collections`
itself (the config is locked and typed; experiments/main.py names the key, and for a key that
moved, its new place: `moved_key`); this module checks the *values*. Each bound checks its own
section (bibound_jax/bounds/), the networks their keys (bibound_jax/models/registry.py).
"""
from __future__ import annotations

from typing import Iterable

from bibound_jax import assemble
from bibound_jax import bounds
from bibound_jax import models
from bibound_jax import sampling
from bibound_jax.config_checks import ConfigError, choice, positive  # noqa: F401 (re-exported)

# Keys of the flat `config.bounds` section and of renamed settings before bounds had their own
# sections: old key -> its place now.
MOVED_KEYS = {
    'bounds.estimator': 'bounds.sv.estimator',
    'bounds.num_iters': 'bounds.sv.num_iters',
    'bounds.block_size': 'bounds.sv.block_size',
    'bounds.cg_iters': 'bounds.sv.cg_iters',
    'bounds.sv_batch': 'bounds.sv.num_latents',
    'bounds.latent_chunk': 'bounds.sv.latent_chunk',
    'bounds.jacobian_bn': 'bounds.sv.jacobian_bn',
    'bounds.share_sv': 'bounds.sv.share_vectors',
    'bounds.gp_weight': 'bounds.gp.weight',
    'bounds.gp_weight_schedule': 'bounds.gp.schedule',
    'bounds.gp_margin': 'bounds.gp.margin',
    'bounds.r1_weight': 'bounds.r1.weight',
    'bounds.wgan_gp_weight': 'bounds.wgan_gp.weight',
    'bounds.mi_estimator': 'bounds.mi.estimator',
    'bounds.mi_hidden': 'bounds.mi.hidden',
    'bounds.mi_sigma': 'bounds.mi.sigma',
    'bounds.mi_learn_sigma': 'bounds.mi.learn_sigma',
    'bounds.mi_sigma_floor': 'bounds.mi.sigma_floor',
    'bounds.diff_weight': 'bounds.diff.weight',
    'bounds.diff_beta_min': 'bounds.diff.beta_min',
    'bounds.diff_beta_max': 'bounds.diff.beta_max',
    'bounds.diff_t_min': 'bounds.diff.t_min',
    'bounds.diff_likelihood_weighting': 'bounds.diff.likelihood_weighting',
    'bounds.diff_importance_sampling': 'bounds.diff.importance_sampling',
    'optim.n_critic': 'optim.energy_steps',
    'optim.lr_critic': 'optim.lr_mi_net',
}


def moved_key(key: str) -> str | None:
  """The new place of an old config key (without the 'config.' prefix), or None."""
  return MOVED_KEYS.get(key[len('config.'):] if key.startswith('config.') else key)


def validate_config(config, datasets: Iterable[str], extra_positive: Iterable[str] = ()) -> None:
  """Check names and ranges of a training config; raise ConfigError naming the key.

  `datasets` are the valid data.name values; `extra_positive` lists the task's own keys (e.g.
  the toy's eval.grid_spacing) that must be numbers > 0."""
  choice(config, 'data.name', datasets)
  choice(config, 'train.nonfinite', ('stop', 'skip'))
  choice(config, 'optim.lr_schedule', ('constant', 'cosine'))
  bounds.validate(config)
  sampling.validate(config)
  choice(config, 'model.energy.name', models.ENERGIES)
  choice(config, 'model.generator.name', models.GENERATORS)
  positive(config, 'optim.energy_steps', 'train.num_seeds', 'train.batch_size',
           'train.num_steps', 'train.log_every', 'train.checkpoint_every',
           'train.keep_checkpoints', 'train.steps_per_call', 'train.divergence_gap',
           'train.divergence_energy', 'optim.lr_energy', 'optim.lr_generator',
           'optim.lr_mi_net', 'model.generator.latent_dim', 'eval.num_samples',
           *extra_positive)
  positive(config, 'train.eval_every', 'bounds.lambda_h', 'optim.grad_clip', 'optim.b1',
           'optim.b2', 'optim.eps', allow_zero=True)
  if not (0 <= config.optim.b1 < 1 and 0 <= config.optim.b2 < 1):
    raise ConfigError('config.optim.b1 and config.optim.b2 must lie in [0, 1).')
  positive(config, 'optim.lr_final_fraction')
  if config.optim.lr_final_fraction > 1:
    raise ConfigError(f'config.optim.lr_final_fraction = {config.optim.lr_final_fraction}; the '
                      'cosine schedule decays to this fraction of the learning rate: use (0, 1].')
  try:   # the networks' own keys, and a time-conditioned energy where a bound needs one
    assemble.networks(config)
  except ValueError as e:
    raise ConfigError(str(e)) from None

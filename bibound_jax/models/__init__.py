"""Energy and generator networks, chosen by name from a config."""
from __future__ import annotations

from bibound_jax.models.time_energy import TimeMLPEnergy
from bibound_jax.models.toy import MLPEnergy, MLPGenerator

ENERGIES = ('mlp', 'time_mlp')
GENERATORS = ('mlp',)
# Energies that take a time input E(x, t) (needed by the diffusion upper bound).
TIME_ENERGIES = ('time_mlp',)


def create_models(model_config, data_shape):
  """(energy, generator) Flax modules from `config.model`."""
  e_cfg, g_cfg = model_config.energy, model_config.generator
  if e_cfg.name == 'mlp':
    energy = MLPEnergy(hidden=tuple(e_cfg.hidden),
                       spectral_norm=e_cfg.get('spectral_norm', False))
  elif e_cfg.name == 'time_mlp':
    energy = TimeMLPEnergy(hidden=tuple(e_cfg.hidden))
  else:
    raise ValueError(f'Unknown energy network {e_cfg.name!r}; valid: {", ".join(ENERGIES)}.')
  if g_cfg.name == 'mlp':
    generator = MLPGenerator(latent_dim=g_cfg.latent_dim, data_shape=tuple(data_shape),
                             hidden=tuple(g_cfg.hidden),
                             output_activation=g_cfg.get('output_activation', 'none'))
  else:
    raise ValueError(f'Unknown generator network {g_cfg.name!r}; valid: {", ".join(GENERATORS)}.')
  return energy, generator

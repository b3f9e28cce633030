"""Energy and generator networks, chosen by name from a config.

Toy networks (`mlp`, `time_mlp`) live in models/toy.py and models/time_energy.py; image
networks (`dcgan`, `resnet` and their `time_*` energies; `mlp` at image sizes is the
StackedMNIST FC pair) in models/dcgan.py, models/resnet.py, models/fc.py, routed through
models/registry.py. Every energy maps x (B, ...) -> (B,) per sample; every generator maps
z (B, d) -> (B, *data_shape) and takes `train` for its BatchNorm.
"""
from __future__ import annotations

from bibound_jax.models import registry
from bibound_jax.models.time_energy import TimeMLPEnergy
from bibound_jax.models.toy import MLPEnergy, MLPGenerator

ENERGIES = ('mlp', 'time_mlp') + tuple(
    n for n in registry.IMAGE_ENERGIES + registry.TIME_IMAGE_ENERGIES if n not in ('mlp',
                                                                                  'time_mlp'))
GENERATORS = ('mlp',) + tuple(n for n in registry.IMAGE_GENERATORS if n != 'mlp')
# Energies that take a time input E(x, t) (needed by the diffusion upper bound).
TIME_ENERGIES = ('time_mlp',) + tuple(n for n in registry.TIME_IMAGE_ENERGIES if n != 'time_mlp')


def _is_toy(data_shape) -> bool:
  return len(tuple(data_shape)) == 1


def create_models(model_config, data_shape):
  """(energy, generator) Flax modules from `config.model` for data of shape `data_shape`."""
  e_cfg, g_cfg = model_config.energy, model_config.generator
  if e_cfg.name not in ENERGIES:
    raise ValueError(f'Unknown energy network {e_cfg.name!r}; valid: {", ".join(ENERGIES)}.')
  if g_cfg.name not in GENERATORS:
    raise ValueError(f'Unknown generator network {g_cfg.name!r}; valid: {", ".join(GENERATORS)}.')
  if not _is_toy(data_shape):
    return registry.create_image_models(model_config, data_shape)
  if e_cfg.name == 'mlp':
    energy = MLPEnergy(hidden=tuple(e_cfg.hidden),
                       spectral_norm=e_cfg.get('spectral_norm', False))
  elif e_cfg.name == 'time_mlp':
    energy = TimeMLPEnergy(hidden=tuple(e_cfg.hidden),
                           spectral_norm=e_cfg.get('spectral_norm', False),
                           time_scale=float(e_cfg.get('time_scale', 1000.0)))
  else:
    raise ValueError(f'Energy {e_cfg.name!r} is for images; 2-D data needs mlp or time_mlp.')
  if g_cfg.name != 'mlp':
    raise ValueError(f'Generator {g_cfg.name!r} is for images; 2-D data needs mlp.')
  generator = MLPGenerator(latent_dim=g_cfg.latent_dim, data_shape=tuple(data_shape),
                           hidden=tuple(g_cfg.hidden),
                           output_activation=g_cfg.get('output_activation', 'none'))
  return energy, generator

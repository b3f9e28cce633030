"""Image energy/generator pairs chosen by name from `config.model`.

`create_image_models(model_config, data_shape)` -> (energy, generator) Flax modules.

Config keys (`model_config` is a ConfigDict or dict with `energy` and `generator` sub-dicts;
everything but the names and `generator.latent_dim` is optional):

  energy.name              'mlp' | 'dcgan' | 'resnet', or 'time_mlp' | 'time_dcgan' |
                           'time_resnet' (= the base name with time_conditioned=True; the
                           repo's convention, `bibound_jax.models.TIME_ENERGIES`)
  energy.hidden            mlp: hidden widths (default the StackedMNIST FC 2000-1000-500-250-250)
  energy.width             dcgan/resnet: base channel count (default 64)
  energy.channel_multipliers  resnet: per-block multipliers of width (default 1, 2, 4, 8, 16)
  energy.negative_slope    dcgan: LeakyReLU slope (default 0.1)
  energy.spectral_norm     bool (default False): SN on every conv/dense of the energy
  energy.sn_mode           'kernel' (default; SNGAN, reshaped kernel) | 'operator' (the conv's
                           true operator norm); see `bibound_jax.models.dcgan.SNConv`
  energy.power_iters       power iterations per SN layer and call (default 10)
  energy.time_conditioned  bool (default False): E(x, t) for the diffusion bound
                           (TimeMLPEnergy / TimeDCGANEnergy / TimeResNetEnergy)
  energy.time_features     width of the time embedding (default 64 for mlp, 128 otherwise)
  energy.time_scale        sinusoidal embedding scale (default 1000: t in [0, 1])
  energy.film_every_layer  dcgan: FiLM after every conv, not just the first (default False)

  generator.name           'mlp' | 'dcgan' | 'resnet'
  generator.latent_dim     int (required)
  generator.hidden         mlp: hidden widths (default the StackedMNIST FC 500-1000-2000)
  generator.output_activation  mlp: 'tanh' (default here, images in [-1, 1]) | 'none'
  generator.width          dcgan/resnet: base channel count (default 64)
  generator.channel_multipliers  resnet (default 16, 8, 4, 2, 1)
  generator.spectral_norm  resnet only (BigGAN-style; default False); with sn_mode, power_iters

'dcgan' means `DCGAN28Energy`/`DCGAN28Generator` (5x5 stride-2 convs) when data_shape is
28x28xC (StackedMNIST) and the SNGAN standard CNN `DCGANEnergy`/`DCGANGenerator` otherwise
(H, W divisible by 8; 32x32 for CIFAR-10 / ImageNet32).
"""
from __future__ import annotations

from typing import Sequence

from bibound_jax.models import dcgan, fc, resnet
from bibound_jax.models.time_energy import TimeMLPEnergy
from bibound_jax.models.toy import MLPGenerator

IMAGE_ENERGIES = ('mlp', 'dcgan', 'resnet')
IMAGE_GENERATORS = ('mlp', 'dcgan', 'resnet')
# Time-conditioned E(x, t) energies, by name (energy.time_conditioned=True does the same).
TIME_IMAGE_ENERGIES = tuple(f'time_{n}' for n in IMAGE_ENERGIES)


def _get(cfg, key, default):
  value = cfg.get(key, default) if hasattr(cfg, 'get') else getattr(cfg, key, default)
  return default if value is None else value


def _is_28(data_shape):
  return tuple(data_shape[:2]) == (28, 28)


def _sn_kwargs(cfg):
  return dict(spectral_norm=bool(_get(cfg, 'spectral_norm', False)),
              sn_mode=_get(cfg, 'sn_mode', 'kernel'),
              power_iters=int(_get(cfg, 'power_iters', 10)))


def create_image_energy(cfg, data_shape: Sequence[int]):
  """The energy module named by `cfg.name` (keys: see the module docstring)."""
  data_shape = tuple(data_shape)
  name = _get(cfg, 'name', None)
  timed = bool(_get(cfg, 'time_conditioned', False))
  if name in TIME_IMAGE_ENERGIES:
    name, timed = name[len('time_'):], True
  sn = _sn_kwargs(cfg)
  time_kw = dict(time_features=int(_get(cfg, 'time_features', 128)),
                 time_scale=float(_get(cfg, 'time_scale', 1000.0)))
  if sn['sn_mode'] not in dcgan.SN_MODES:
    raise ValueError(f'energy.sn_mode must be one of {dcgan.SN_MODES}, got {sn["sn_mode"]!r}.')
  if name == 'mlp':
    hidden = tuple(_get(cfg, 'hidden', fc.FC_ENERGY_HIDDEN))
    if timed:
      return TimeMLPEnergy(hidden=hidden, time_features=int(_get(cfg, 'time_features', 64)),
                           time_scale=time_kw['time_scale'],
                           spectral_norm=sn['spectral_norm'])
    return fc.fc_energy(hidden, spectral_norm=sn['spectral_norm'])
  if name == 'dcgan':
    width = int(_get(cfg, 'width', 64))
    slope = float(_get(cfg, 'negative_slope', 0.1))
    if _is_28(data_shape):
      if timed:
        raise ValueError('No time-conditioned 28x28 dcgan energy; use mlp or 32x32 dcgan.')
      return dcgan.DCGAN28Energy(data_shape, width, slope, **sn)
    if timed:
      return dcgan.TimeDCGANEnergy(data_shape, width, slope, **sn, **time_kw,
                                   film_every_layer=bool(_get(cfg, 'film_every_layer', False)))
    return dcgan.DCGANEnergy(data_shape, width, slope, **sn)
  if name == 'resnet':
    width = int(_get(cfg, 'width', 64))
    mults = tuple(_get(cfg, 'channel_multipliers', resnet.ENERGY_MULTIPLIERS))
    if timed:
      return resnet.TimeResNetEnergy(data_shape, width, mults, **sn, **time_kw)
    return resnet.ResNetEnergy(data_shape, width, mults, **sn)
  raise ValueError(f'Unknown energy network {name!r}; valid: {", ".join(IMAGE_ENERGIES)} '
                   f'(time-conditioned: {", ".join(TIME_IMAGE_ENERGIES)}).')


def create_image_generator(cfg, data_shape: Sequence[int]):
  """The generator module named by `cfg.name` (keys: see the module docstring)."""
  data_shape = tuple(data_shape)
  name = _get(cfg, 'name', None)
  if name in IMAGE_GENERATORS:
    latent_dim = _get(cfg, 'latent_dim', None)
    if latent_dim is None:
      raise ValueError('model.generator.latent_dim is required.')
    latent_dim = int(latent_dim)
  if name == 'mlp':
    return MLPGenerator(latent_dim=latent_dim, data_shape=data_shape,
                        hidden=tuple(_get(cfg, 'hidden', fc.FC_GENERATOR_HIDDEN)),
                        output_activation=_get(cfg, 'output_activation', 'tanh'))
  if name == 'dcgan':
    width = int(_get(cfg, 'width', 64))
    if _is_28(data_shape):
      return dcgan.DCGAN28Generator(latent_dim, data_shape, width)
    return dcgan.DCGANGenerator(latent_dim, data_shape, width)
  if name == 'resnet':
    return resnet.ResNetGenerator(
        latent_dim, data_shape, int(_get(cfg, 'width', 64)),
        tuple(_get(cfg, 'channel_multipliers', resnet.GENERATOR_MULTIPLIERS)), **_sn_kwargs(cfg))
  raise ValueError(f'Unknown generator network {name!r}; valid: {", ".join(IMAGE_GENERATORS)}.')


def create_image_models(model_config, data_shape: Sequence[int]):
  """(energy, generator) Flax modules from `config.model` for images of shape `data_shape`."""
  e_cfg = _get(model_config, 'energy', None)
  g_cfg = _get(model_config, 'generator', None)
  if e_cfg is None or g_cfg is None:
    raise ValueError('model_config needs `energy` and `generator` entries.')
  return create_image_energy(e_cfg, data_shape), create_image_generator(g_cfg, data_shape)

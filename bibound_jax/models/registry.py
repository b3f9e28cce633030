"""Networks by name: `config.model.energy` / `config.model.generator` -> Flax modules.

A section is {'name': ..., **hyperparameters}; the hyperparameters are the fields of the
module the name selects for the data shape, and their defaults are the module's own (defined
once, in the module). Unknown keys are an error that lists the valid ones.

  energy     mlp      MLPEnergy (toy.py; the StackedMNIST FC energy at image sizes), or
                      TimeMLPEnergy (time_energy.py) when the upper bound needs E(x, t)
             dcgan    DCGANEnergy / TimeDCGANEnergy (dcgan.py; H, W divisible by 8), or
                      DCGAN28Energy for 28x28 (StackedMNIST; no time-conditioned variant)
             resnet   ResNetEnergy / TimeResNetEnergy (resnet.py)
  generator  mlp      MLPGenerator (toy.py)
             flow     SplineFlowGenerator (flow.py): injective, latent_dim = data dimension
             flow_mixture  FlowMixtureGenerator (flow.py): K such flows, latent_dim = data
                      dimension + 1 (the last coordinate picks the component)
             dcgan    DCGANGenerator, DCGAN28Generator for 28x28
             resnet   ResNetGenerator

Keys of the time-conditioned variant (time_features, time_scale, ...) may stay in a section
whose run does not condition on time; they are used when it does.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from bibound_jax import config_schema
from bibound_jax.models import dcgan, resnet
from bibound_jax.models import flow as flow_lib
from bibound_jax.models.flow import FlowMixtureGenerator, SplineFlowGenerator
from bibound_jax.models.time_energy import TimeMLPEnergy
from bibound_jax.models.toy import SCALE_PARAMS, MLPEnergy, MLPGenerator

ENERGIES = ('mlp', 'dcgan', 'resnet')
# The model sections: their keys are the networks' fields (set by each experiment's config);
# declared here for checkpoints of older code.
SECTIONS = (
    config_schema.Section('model.energy', {}, removed={
        # Studies of the toy energy's confinement and slopes (docs/studies/toy.md).
        'model.energy.confine_times': ('all', 'e83a7b6'),
        'model.energy.confine_power': (2.0, 'e83a7b6'),
        'model.energy.prelu_bound': (0.0, 'e83a7b6')}),
    config_schema.Section('model.generator', {}, moved={
        'model.generator.bound': 'model.generator.spline_range'}),
)
GENERATORS = ('mlp', 'flow', 'flow_mixture', 'dcgan', 'resnet')
# Fields set by the builder, not by the config.
_BUILT = ('parent', 'name', 'data_shape', 'latent_dim', 'init_centres')


def _is_28(data_shape) -> bool:
  return tuple(data_shape[:2]) == (28, 28)


def _energy_classes(name: str, data_shape) -> tuple[type, type | None]:
  """(plain class, time-conditioned class or None) for energy `name` on `data_shape`."""
  if name == 'mlp':
    return MLPEnergy, TimeMLPEnergy
  if len(data_shape) == 1:
    raise ValueError(f'Energy {name!r} is for images; {len(data_shape)}-D data needs mlp.')
  if name == 'dcgan':
    return (dcgan.DCGAN28Energy, None) if _is_28(data_shape) else (dcgan.DCGANEnergy,
                                                                    dcgan.TimeDCGANEnergy)
  if name == 'resnet':
    return resnet.ResNetEnergy, resnet.TimeResNetEnergy
  raise ValueError(f'Unknown energy network {name!r}; valid: {", ".join(ENERGIES)}.')


def _generator_class(name: str, data_shape) -> type:
  if name == 'mlp':
    return MLPGenerator
  if name == 'flow':
    return SplineFlowGenerator
  if name == 'flow_mixture':
    return FlowMixtureGenerator
  if len(data_shape) == 1:
    raise ValueError(f'Generator {name!r} is for images; {len(data_shape)}-D data needs mlp.')
  if name == 'dcgan':
    return dcgan.DCGAN28Generator if _is_28(data_shape) else dcgan.DCGANGenerator
  if name == 'resnet':
    return resnet.ResNetGenerator
  raise ValueError(f'Unknown generator network {name!r}; valid: {", ".join(GENERATORS)}.')


def _fields(cls) -> set[str]:
  return {f.name for f in dataclasses.fields(cls)} - set(_BUILT)


def _hyperparameters(section, cls: type, allowed: set[str], which: str) -> dict:
  """The keys of `section` (besides 'name') that `cls` takes; ValueError for a key that no
  variant of the network takes."""
  section = dict(section)
  section.pop('name', None)
  unknown = sorted(set(section) - allowed)
  if unknown:
    raise ValueError(f'config.model.{which} has key(s) {", ".join(unknown)} that network '
                     f'{cls.__name__} does not take; its keys: {", ".join(sorted(allowed))}.')
  if 'sn_mode' in section and section['sn_mode'] not in dcgan.SN_MODES:
    raise ValueError(f"config.model.{which}.sn_mode = {section['sn_mode']!r}; valid: "
                     f'{", ".join(dcgan.SN_MODES)}.')
  if 'scale_param' in section and section['scale_param'] not in SCALE_PARAMS:
    raise ValueError(f"config.model.{which}.scale_param = {section['scale_param']!r}; valid: "
                     f'{", ".join(SCALE_PARAMS)}.')
  fields = _fields(cls)
  return {k: tuple(v) if isinstance(v, list) else v for k, v in section.items() if k in fields}


def create_energy(section, data_shape: Sequence[int], time_conditioned: bool = False):
  """The energy module of `section` ({'name', ...}) for data of shape `data_shape`."""
  cls, kwargs = resolve_energy(section, data_shape, time_conditioned)
  return cls(**kwargs)


def resolve_energy(section, data_shape: Sequence[int], time_conditioned: bool = False):
  """(class, keyword arguments) of the energy of `section`: ValueError naming the key for a
  name or hyperparameter that does not exist for this data (no module is built)."""
  data_shape = tuple(data_shape)
  plain, timed = _energy_classes(section['name'], data_shape)
  if time_conditioned and timed is None:
    raise ValueError(f"There is no time-conditioned {section['name']!r} energy for data of "
                     f'shape {data_shape}; the upper bound needs E(x, t): use another energy.')
  cls = timed if time_conditioned else plain
  allowed = _fields(plain) | (_fields(timed) if timed is not None else set())
  kwargs = _hyperparameters(section, cls, allowed, 'energy')
  if 'data_shape' in {f.name for f in dataclasses.fields(cls)}:
    kwargs['data_shape'] = data_shape
  return cls, kwargs


def create_generator(section, data_shape: Sequence[int]):
  """The generator module of `section` ({'name', 'latent_dim', ...})."""
  cls, kwargs = resolve_generator(section, data_shape)
  return cls(**kwargs)


def resolve_generator(section, data_shape: Sequence[int]):
  """(class, keyword arguments) of the generator of `section`, checked as `resolve_energy`."""
  data_shape = tuple(data_shape)
  cls = _generator_class(section['name'], data_shape)
  if 'latent_dim' not in section:
    raise ValueError('config.model.generator.latent_dim is required.')
  kwargs = _hyperparameters({k: v for k, v in dict(section).items() if k != 'latent_dim'}, cls,
                            _fields(cls), 'generator')
  if cls is SplineFlowGenerator and int(section['latent_dim']) != math.prod(data_shape):
    raise ValueError(f"config.model.generator.latent_dim = {section['latent_dim']}: the flow "
                     f'generator is a bijection, so it must equal the data dimension '
                     f'{math.prod(data_shape)}.')
  if cls is FlowMixtureGenerator and int(section['latent_dim']) != math.prod(data_shape) + 1:
    raise ValueError(f"config.model.generator.latent_dim = {section['latent_dim']}: the flow "
                     'mixture takes the data dimension plus one latent coordinates (the last '
                     f'picks the component): set it to {math.prod(data_shape) + 1}.')
  if kwargs.get('entropy', 'exact') not in flow_lib.ENTROPIES:
    raise ValueError(f"config.model.generator.entropy = {kwargs['entropy']!r}; valid: "
                     f'{", ".join(flow_lib.ENTROPIES)}.')
  if kwargs.get('init_shift', 'uniform') not in flow_lib.INIT_SHIFTS:
    raise ValueError(f"config.model.generator.init_shift = {kwargs['init_shift']!r}; valid: "
                     f'{", ".join(flow_lib.INIT_SHIFTS)}.')
  if kwargs.get('init_shift') == 'data' and len(data_shape) != 1:
    raise ValueError("config.model.generator.init_shift = 'data' starts the components at "
                     'k-means centres of a toy data set; this data has shape '
                     f"{data_shape}: use init_shift = 'uniform'.")
  return cls, dict(latent_dim=int(section['latent_dim']), data_shape=data_shape, **kwargs)

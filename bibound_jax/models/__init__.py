"""Every network a run trains, built from the config: `create_models`.

Every energy maps x (B, ...) -> (B,) treating samples independently (time-conditioned ones take
t too; t = None means t = 0, the EBM itself); every generator maps z (B, d) -> (B, *data_shape)
and takes `train` for its BatchNorm. Names and hyperparameters: models/registry.py.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

from bibound_jax.models import mi
from bibound_jax.models import registry
from bibound_jax.models.flow import FlowMixtureGenerator
from bibound_jax.models.noisy import NoisyGenerator

ENERGIES = registry.ENERGIES
GENERATORS = registry.GENERATORS
SECTIONS = registry.SECTIONS


class Networks(NamedTuple):
  """The Flax modules of a run: energy, generator and the MI network (None unless the lower
  bound uses one)."""
  energy: Any
  generator: Any
  mi_net: Any = None


def create_models(model_config, data_shape: Sequence[int], *, time_conditioned: bool = False,
                  mi_net: dict | None = None,
                  output_noise: tuple[float, float] | None = None) -> Networks:
  """The networks of `config.model` for data of shape `data_shape`, and what the bounds ask for
  (`bibound_jax.bounds.network_options(config)`):

    time_conditioned  the energy takes a time input, E(x, t) (the diffusion bound);
    mi_net            {'kind': 'ba' | 'infonce' | 'jsd', 'hidden': widths}: the MI network
                      (a Gaussian encoder for 'ba', a separable critic otherwise; models/mi.py);
    output_noise      (sigma_init, sigma_floor): a generator with a learned output-noise scale
                      (models/noisy.py)."""
  energy = registry.create_energy(model_config.energy, data_shape, time_conditioned)
  generator = registry.create_generator(model_config.generator, data_shape)
  if output_noise is not None:
    generator = NoisyGenerator(base=generator, sigma_init=output_noise[0],
                               sigma_floor=output_noise[1])
  net = None
  if mi_net is not None:
    net = mi.create_mi_model(mi_net['kind'], generator.latent_dim, tuple(mi_net['hidden']))
  return Networks(energy, generator, net)


def check(model_config, data_shape: Sequence[int], *, time_conditioned: bool = False,
          **unused) -> None:
  """ValueError naming the key when `config.model` names a network, or gives it a
  hyperparameter, that does not exist for this data (or for what the bounds ask: a
  time-conditioned energy); builds nothing."""
  del unused
  registry.resolve_energy(model_config.energy, data_shape, time_conditioned)
  registry.resolve_generator(model_config.generator, data_shape)

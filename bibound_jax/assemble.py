"""A run's parts from its config: the networks (`config.model` plus what its bounds ask for: a
time-conditioned energy, an MI network, a generator with learned output noise) and the state
at iteration 0."""
from __future__ import annotations

import jax

from bibound_jax import bounds
from bibound_jax import models
from bibound_jax import sharding
from bibound_jax import train


def networks(config) -> models.Networks:
  """models.Networks(energy, generator, mi_net) for `config`."""
  return models.create_models(config.model, config.data.shape, **bounds.network_options(config))


def initial_state(config, mesh=None):
  """(networks, state, rng): the networks, their state at iteration 0 and the run's PRNG key,
  both replicated on `mesh` (default: every device) as the train step expects them."""
  mesh = sharding.make_mesh() if mesh is None else mesh
  nets = networks(config)
  init_key, rng = jax.random.split(jax.random.key(config.seed))
  state = train.create_state(config, nets, init_key)
  state, rng = sharding.replicate((state, rng), mesh)
  return nets, state, rng

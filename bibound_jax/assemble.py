"""A run's parts from its config: the networks (`config.model` plus what its bounds ask for: a
time-conditioned energy, an MI network, a generator with learned output noise) and the state
at iteration 0 of every seed."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from bibound_jax import bounds
from bibound_jax import models
from bibound_jax import sharding
from bibound_jax import train
from bibound_jax.data import toy
from bibound_jax.models import flow


# Points of the toy data that k-means sees for a mixture generator's init_shift = 'data'.
DATA_INIT_POINTS = 20_000


def networks(config) -> models.Networks:
  """models.Networks(energy, generator, mi_net) for `config`. A flow mixture with init_shift
  'data' gets its components' starting shifts here: k-means centres of DATA_INIT_POINTS toy
  points drawn with key(config.seed) (the same for every seed of the run)."""
  nets = models.create_models(config.model, config.data.shape, **bounds.network_options(config))
  gen = nets.generator
  if isinstance(gen, models.FlowMixtureGenerator) and gen.init_shift == 'data':
    k_data, k_means = jax.random.split(jax.random.key(config.seed))
    x = toy.sample(config.data.name, k_data, DATA_INIT_POINTS)
    centres = flow.kmeans_centres(x, gen.components, k_means)
    nets = nets._replace(generator=gen.clone(
        init_centres=tuple(tuple(float(v) for v in c) for c in centres)))
  return nets


def seeds(config) -> list[int]:
  """The seeds of a run: config.seed, config.seed + 1, ... (`train.num_seeds` of them)."""
  return [config.seed + k for k in range(config.train.num_seeds)]


def _stacked(config, nets):
  """(state, rng): for seed s = config.seed + k, entry k of every leaf is that of the run with
  seed s alone (split(key(s)) -> init key, run key). One compiled program initialises every
  seed (vmapped over the init keys); run op by op, the networks' init took seconds of start-up."""
  keys = jnp.stack([jax.random.split(jax.random.key(s)) for s in seeds(config)])
  init = jax.jit(jax.vmap(lambda key: train.create_state(config, nets, key)))
  return init(keys[:, 0]), keys[:, 1]


def initial_state(config, mesh=None):
  """(networks, state, rng) at iteration 0 of every seed (`_stacked`), placed on `mesh`
  (default: every device) with the seed axis split along the mesh's 'seeds' axis, as the
  train step expects."""
  mesh = sharding.make_mesh(num_seeds=config.train.num_seeds) if mesh is None else mesh
  nets = networks(config)
  state, rng = sharding.replicate(_stacked(config, nets), mesh, sharding.seeded(mesh))
  return nets, state, rng


def abstract_state(config, mesh=None):
  """(networks, state, rng): the state as shapes, dtypes and shardings only (no
  initialisation) and the run keys, the template to restore a checkpoint into."""
  mesh = sharding.make_mesh(num_seeds=config.train.num_seeds) if mesh is None else mesh
  nets = networks(config)
  seeded = sharding.seeded(mesh)
  state, _ = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=seeded),
                          jax.eval_shape(lambda: _stacked(config, nets)))
  rng = jnp.stack([jax.random.split(jax.random.key(s))[1] for s in seeds(config)])
  return nets, state, sharding.replicate(rng, mesh, seeded)


def seed_slice(tree, k: int):
  """Entry k of every leaf with a leading seed axis (a state, metrics): seed config.seed + k."""
  return jax.tree.map(lambda a: a[k], tree)

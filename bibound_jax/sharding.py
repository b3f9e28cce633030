"""Seeds and data parallelism over every device of every host, through JAX's own runtime.

One global device mesh with two axes, 'seeds' x 'data'. A run trains `train.num_seeds`
independent seeds at once: every leaf of the state carries a leading seed axis, split along
'seeds' and replicated along 'data'; a batch (seeds, energy_steps, B, ...) is split along the
seeds and along B, so each device holds B / (data axis size) examples of its seeds. The seeds
take a mesh axis of their own when their number divides the device count (`make_mesh`), else
every device holds every seed and the devices split the batch. The train step is one `jax.jit`
over the mesh: XLA inserts the all-reduces, so gradients are averaged over the global batch of
each seed and BatchNorm statistics are computed over it (exactly as on one device). Random
numbers come from threefry with partitionable keys (JAX's default), so a run draws the same
latents whatever the device count. One device is just the 1 x 1 mesh: there is no separate
code path.

Multi-host: call `initialize_distributed` before anything touches a device. Data generated
inside `jax.jit` with a batch sharding (the toy sets, StackedMNIST) is produced shard by shard
where it lives; a host-local input pipeline feeds only its own examples and `global_batch`
assembles the global array. `jax.jit` runs SPMD on all processes, and orbax writes checkpoints
collectively.
"""
from __future__ import annotations

import os

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

SEED_AXIS = 'seeds'
DATA_AXIS = 'data'


def make_mesh(devices=None, num_seeds: int = 1) -> Mesh:
  """A (seeds, data) mesh over `devices` (default: every device of every process): the seeds
  axis has num_seeds devices when num_seeds > 1 divides the device count in a single-process
  run, else 1 (several processes split the batch, each holding every seed, so that host input
  pipelines feed contiguous slices)."""
  devices = jax.devices() if devices is None else list(devices)
  n = len(devices)
  single = jax.process_count() == 1
  seeds = num_seeds if single and num_seeds > 1 and n % num_seeds == 0 else 1
  return Mesh(np.asarray(devices).reshape(seeds, n // seeds), (SEED_AXIS, DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def seeded(mesh: Mesh) -> NamedSharding:
  """Sharding of arrays with a leading seed axis (the state, keys, metrics)."""
  return NamedSharding(mesh, P(SEED_AXIS))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of a batch (seeds, energy_steps, B, ...): seeds and B split."""
  return NamedSharding(mesh, P(SEED_AXIS, None, DATA_AXIS))


def latent_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of one seed's per-example arrays (B, ...), such as latents (inside the step,
  which is vmapped over the seeds with the 'seeds' mesh axis)."""
  return NamedSharding(mesh, P(DATA_AXIS))


def per_device_batch(global_batch: int, mesh: Mesh) -> int:
  """B / (data axis size); a clear error when the global batch does not divide over it."""
  n = mesh.shape[DATA_AXIS]
  if global_batch % n:
    lower = global_batch - global_batch % n
    raise ValueError(
        f'config.train.batch_size = {global_batch} is the GLOBAL batch and must divide by the '
        f'{n} devices of the mesh\'s data axis ({jax.process_count()} process(es)); use e.g. '
        f'--config.train.batch_size={lower or n} or {lower + n}.')
  return global_batch // n


def global_batch(local_batch, mesh: Mesh) -> jax.Array:
  """The global (seeds, energy_steps, B, ...) array from this process's
  (seeds, energy_steps, B / processes, ...)."""
  return jax.make_array_from_process_local_data(batch_sharding(mesh), local_batch)


def replicate(tree, mesh: Mesh, sharding: NamedSharding | None = None):
  """Place a host-local pytree (identical on every process) on the mesh: replicated, or with
  `sharding` (e.g. `seeded(mesh)` for a tree with a leading seed axis)."""
  sharding = replicated(mesh) if sharding is None else sharding
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def put(x):
    if jax.dtypes.issubdtype(getattr(x, 'dtype', None), jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(x)))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
  return jax.tree.map(put, tree)


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """Start JAX's multi-host runtime (`jax.distributed.initialize`).

  With a coordinator address (host:port), the process count and this process's id, the
  cluster is set up explicitly (e.g. several processes on one machine, or hosts without a
  scheduler). With none of them and BIBOUND_DISTRIBUTED=1 in the environment, JAX detects the
  cluster itself (TPU pods, SLURM, Open MPI). Otherwise nothing happens (one process).
  CPU processes exchange data with gloo.
  """
  explicit = coordinator_address is not None
  if not explicit and os.environ.get('BIBOUND_DISTRIBUTED') != '1':
    return
  if jax.config.jax_platforms in (None, '', 'cpu') or explicit:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if explicit:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  else:
    jax.distributed.initialize()
  logging.info('jax.distributed: process %d of %d, %d local / %d global devices',
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())

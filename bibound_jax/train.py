"""Train states and the jit-compiled bidirectional train step (docs/bounds.md, "The objective").

One iteration = `optim.energy_steps` energy updates, one update of the MI network (when the
lower bound has one), then one generator update:

    energy:     loss_E = mean E(x_data) - mean E(sg x_fake) + upper.term
    generator:  loss_G = mean E(x) - lambda_H * lower.entropy

The energy minimises the upper bound L_up = L_lo + B; the generator maximises the lower bound
L_lo = E_data[E] - E_{p_g}[E] + H[p_g] (constants such as H[p0] are dropped from the loss, not
from the reported values). `lower` and `upper` are the bound instances that config.bounds names
(bibound_jax/bounds/__init__.py); the step calls them and never looks at their names.

Keys: iteration t uses fold_in(rng, t), split into the energy updates' and the generator
update's keys. An energy update draws its latents and gives the upper bound its key, the lower
bound's sample noise fold_in(key, 3); the generator update splits its key into the sample
noise (shared with the MI network's update) and the lower bound's key.

This module declares the `train` and `optim` config sections (`TRAIN`, `OPTIM`).
"""
from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from bibound_jax import bounds as bounds_lib
from bibound_jax import config_schema
from bibound_jax import sharding
from bibound_jax.bounds import base
from bibound_jax.generator import Generator

sg = jax.lax.stop_gradient


def _check_train(config) -> None:
  config_schema.choice(config, 'train.nonfinite', ('stop', 'skip'))
  config_schema.positive(config, 'train.num_seeds', 'train.batch_size', 'train.num_steps',
                         'train.log_every', 'train.checkpoint_every', 'train.keep_checkpoints',
                         'train.steps_per_call', 'train.divergence_gap',
                         'train.divergence_energy')
  config_schema.positive(config, 'train.eval_every', allow_zero=True)


TRAIN = config_schema.Section(
    'train',
    defaults=dict(
        # Seeds trained at once, config.seed + k for k < num_seeds: one compiled step runs them
        # all (vmapped); each follows the run of its seed alone. Metrics and evaluations are
        # reported per seed and as mean and standard deviation over the seeds.
        num_seeds=1,
        batch_size=200,          # the GLOBAL batch (divided over the devices)
        num_steps=150_000,
        log_every=500,
        eval_every=10_000,       # 0: no evaluation (score checkpoints with experiments.evaluate)
        checkpoint_every=10_000,
        keep_checkpoints=3,
        # Warm start: 'DIR' or 'DIR@STEP' (default: its latest checkpoint) of another run. A
        # fresh workdir starts from that checkpoint's state, PRNG key and iteration instead of
        # an initialisation; the config may differ where the state keeps its shapes. Ignored
        # once the workdir has checkpoints of its own.
        init_from='',
        # Iterations per compiled call (`make_train_steps`): the same updates, less dispatch.
        # Worth it where a step takes milliseconds (the toy); logs, evaluations and checkpoints
        # still happen at their own iterations.
        steps_per_call=1,
        nonfinite='stop',        # 'stop': error naming the step; 'skip': drop the update
        divergence_gap=50.0,     # warn when E(fake) - E(real) exceeds this
        divergence_energy=1e3,   # ... or when |E| exceeds this
    ),
    check=_check_train,
    # How long, how often and what to do on a NaN: none changes what the saved state means.
    resumable=('num_steps', 'log_every', 'eval_every', 'checkpoint_every', 'keep_checkpoints',
               'init_from', 'steps_per_call', 'nonfinite', 'divergence_gap',
               'divergence_energy'))


def _check_optim(config) -> None:
  config_schema.choice(config, 'optim.lr_schedule', ('constant', 'cosine'))
  config_schema.positive(config, 'optim.energy_steps', 'optim.lr_energy', 'optim.lr_generator',
                         'optim.lr_mi_net', 'optim.lr_final_fraction')
  config_schema.positive(config, 'optim.grad_clip', 'optim.b1', 'optim.b2', 'optim.eps',
                         allow_zero=True)
  o = config.optim
  if not (0 <= o.b1 < 1 and 0 <= o.b2 < 1):
    raise config_schema.ConfigError('config.optim.b1 and config.optim.b2 must lie in [0, 1).')
  if o.lr_final_fraction > 1:
    raise config_schema.ConfigError(
        f'config.optim.lr_final_fraction = {o.lr_final_fraction}; the cosine schedule decays '
        'to this fraction of the learning rate: use (0, 1].')


def _cosine_spans_run(section) -> str | None:
  if section.lr_schedule == 'cosine':
    return "optim.lr_schedule = 'cosine' decays the learning rates over train.num_steps"
  return None


OPTIM = config_schema.Section(
    'optim',
    defaults=dict(
        lr_energy=2e-4, lr_generator=2e-4,
        lr_mi_net=2e-4,          # the MI network (bounds.lower = 'mi')
        b1=0.0, b2=0.9, eps=1e-6,   # Adam, as the authors'
        grad_clip=0.0,           # global-norm clipping (0: none)
        energy_steps=1,          # energy updates per generator update
        # 'constant', or 'cosine': each learning rate decays from its value to
        # lr_final_fraction of it over train.num_steps iterations (`make_optimizer`).
        lr_schedule='constant',
        lr_final_fraction=0.02,
    ),
    check=_check_optim,
    spans_run=_cosine_spans_run,
    moved={'optim.n_critic': 'optim.energy_steps', 'optim.lr_critic': 'optim.lr_mi_net'})


class TrainState(train_state.TrainState):
  """Flax TrainState plus BatchNorm running statistics (None for networks without BN)."""
  batch_stats: Any = None


@flax.struct.dataclass
class BiboundState:
  """Everything a run carries between iterations: both networks, the MI network (None unless
  the lower bound has one), the iteration count and the number of iterations with an update
  dropped for non-finite values (`train.nonfinite = 'skip'`)."""
  step: jax.Array
  energy: TrainState
  generator: TrainState
  skipped: jax.Array
  mi_net: TrainState | None = None


def make_optimizer(optim_config, learning_rate: float,
                   num_updates: int) -> optax.GradientTransformation:
  """Adam(b1, b2, eps) after global-norm clipping when grad_clip > 0, at `learning_rate`, or
  with lr_schedule 'cosine' at lr * (f + (1 - f) (1 + cos(pi u / U)) / 2) for update u of
  U = `num_updates` (f = lr_final_fraction)."""
  if optim_config.lr_schedule == 'cosine':
    learning_rate = optax.cosine_decay_schedule(learning_rate, max(1, int(num_updates)),
                                                alpha=optim_config.lr_final_fraction)
  tx = optax.adam(learning_rate, b1=optim_config.b1, b2=optim_config.b2, eps=optim_config.eps)
  if optim_config.grad_clip:
    tx = optax.chain(optax.clip_by_global_norm(optim_config.grad_clip), tx)
  return tx


def create_state(config, networks, key: jax.Array) -> BiboundState:
  """Initialise the networks (`models.create_models`: energy, generator, mi_net or None) and
  their optimisers."""
  k_e, k_g, k_m = jax.random.split(key, 3)
  x0 = jnp.zeros((2,) + tuple(config.data.shape), jnp.float32)
  z0 = jnp.zeros((2, networks.generator.latent_dim), jnp.float32)

  def new(module, variables, lr, updates_per_step=1):
    tx = make_optimizer(config.optim, lr, updates_per_step * config.train.num_steps)
    return TrainState.create(apply_fn=module.apply, params=variables['params'], tx=tx,
                             batch_stats=variables.get('batch_stats'))
  energy = new(networks.energy, networks.energy.init(k_e, x0), config.optim.lr_energy,
               config.optim.energy_steps)
  generator = new(networks.generator, networks.generator.init(k_g, z0, train=False),
                  config.optim.lr_generator)
  mi_net = None
  if networks.mi_net is not None:
    mi_net = new(networks.mi_net, networks.mi_net.init(k_m, x0, z0), config.optim.lr_mi_net)
  # TrainState.create starts `step` as a Python int (weakly typed); after one update it is an
  # int32 array, which would retrace the step. Start it as int32 so the step compiles once.
  zero = lambda: jnp.zeros((), jnp.int32)  # distinct buffers: the step donates its input
  return BiboundState(step=zero(), energy=energy.replace(step=zero()),
                      generator=generator.replace(step=zero()), skipped=zero(),
                      mi_net=None if mi_net is None else mi_net.replace(step=zero()))


def iteration(state: BiboundState) -> int:
  """The iteration count of a state (with or without a leading seed axis: every seed of a run
  is at the same iteration)."""
  return int(jax.device_get(state.step).reshape(-1)[0])


def all_finite(*trees) -> jax.Array:
  """True iff every leaf of every tree is finite (jit-compatible)."""
  leaves = [x for t in trees for x in jax.tree.leaves(t)]
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _keep_if_finite(new: TrainState, old: TrainState, finite, skip: bool) -> TrainState:
  """With `skip`, the old state when loss, metrics or gradients are not finite (the caller
  counts it); otherwise the update as is (the run loop stops with an error)."""
  if not skip:
    return new
  return jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)


def energy_loss(e_params, state: BiboundState, x_data, z, key, lower, upper):
  """loss_E = mean E(x_data) - mean E(sg x_fake) + upper term (+ its penalty, if any);
  (loss, (metrics, carry))."""
  apply_fn = state.energy.apply_fn
  energy_fn = lambda x: apply_fn({'params': e_params}, x)
  gen = Generator(state.generator)
  x_fake, _ = lower.samples(gen, gen.params, z, jax.random.fold_in(key, 3))
  x_fake = sg(x_fake)
  e_real, e_fake = energy_fn(x_data), energy_fn(x_fake)
  inputs = base.EnergyInputs(
      energy_fn=energy_fn, energy_t_fn=lambda x, t: apply_fn({'params': e_params}, x, t),
      x_data=x_data, x_fake=x_fake, z=z, key=key, step=state.step, generator=gen)
  upper_term, metrics, carry = upper.term(inputs)
  metrics = dict(metrics, energy_real=jnp.mean(e_real), energy_fake=jnp.mean(e_fake),
                 upper_term=upper_term)
  loss = metrics['energy_real'] - metrics['energy_fake'] + upper_term
  # A penalty on E's values is in the loss but not in the bound (L_up uses upper_term alone).
  penalty = upper.penalty(e_real, e_fake)
  if penalty is not None:
    metrics['energy_l2'] = penalty
    loss = loss + penalty
  return loss, (metrics, carry)


def generator_loss(g_params, state: BiboundState, z, key, lower, carry=None,
                   lambda_h: float = 1.0):
  """loss_G = mean E(x) - lambda_H * entropy term; (loss, (metrics, new BatchNorm stats))."""
  gen = Generator(state.generator)
  k_samples, k_lower = jax.random.split(key)
  x, new_stats = lower.samples(gen, g_params, z, k_samples)
  loss = jnp.mean(state.energy.apply_fn({'params': state.energy.params}, x))
  term, metrics = lower.entropy(base.GeneratorInputs(
      generator=gen, params=g_params, z=z, x=x, key=k_lower, mi_net=state.mi_net, carry=carry))
  if term is not None:
    loss = loss - lambda_h * term
  return loss, (metrics, new_stats)


def check_batch_shape(shape, config) -> None:
  """Raise a clear error unless shape == (energy_steps, B, *config.data.shape)."""
  expected = (config.optim.energy_steps, '<B>') + tuple(config.data.shape)
  if (len(shape) != len(expected) or shape[0] != config.optim.energy_steps
      or tuple(shape[2:]) != tuple(config.data.shape)):
    raise ValueError(
        f'train_step got a batch of shape {tuple(shape)}; expected (energy_steps, B, '
        f'*data.shape) = {expected} with energy_steps = config.optim.energy_steps and '
        'data.shape = config.data.shape. Reshape the batch or fix the config.')


def train_step(state: BiboundState, batch: jax.Array, rng: jax.Array, *, config, mesh=None):
  """One iteration: `energy_steps` energy updates (one per leading slice of `batch`), the MI
  network's update, then one generator update. batch: (energy_steps, B, *data_shape).
  Returns (new_state, metrics)."""
  check_batch_shape(batch.shape, config)
  lower, upper = bounds_lib.from_config(config)
  skip = config.train.nonfinite == 'skip'
  energy_steps, batch_size = batch.shape[0], batch.shape[1]
  latent_dim = config.model.generator.latent_dim
  k_energy, k_gen = jax.random.split(jax.random.fold_in(rng, state.step))

  def latents(key):
    z = jax.random.normal(key, (batch_size, latent_dim), jnp.float32)
    if mesh is not None:  # each device draws (and keeps) only its own slice of the batch
      z = jax.lax.with_sharding_constraint(z, sharding.latent_sharding(mesh))
    return z

  def energy_update(st, inputs):
    x_data, key = inputs
    k_z, k_loss = jax.random.split(key)
    z = latents(k_z)
    (loss, (metrics, carry)), grads = jax.value_and_grad(energy_loss, has_aux=True)(
        st.energy.params, st, x_data, z, k_loss, lower, upper)
    finite = all_finite(loss, metrics, grads)
    metrics = dict(metrics, loss_energy=loss, grad_norm_energy=optax.global_norm(grads))
    energy = _keep_if_finite(st.energy.apply_gradients(grads=grads), st.energy, finite, skip)
    return (st.replace(energy=energy),
            (metrics, finite, carry, z))

  state, (metrics, finite, carry, z_last) = jax.lax.scan(
      energy_update, state, (batch, jax.random.split(k_energy, energy_steps)))
  finite = jnp.all(finite)
  metrics, carry, z_last = jax.tree.map(lambda a: a[-1], (metrics, carry, z_last))

  k_z, k_loss = jax.random.split(k_gen)
  if lower.reuses(carry):   # the last energy update's latents and work, at the same G params
    z = z_last
  else:
    z, carry = latents(k_z), None
  if state.mi_net is not None:
    # One MI-network update on this iteration's samples, then G with the updated network fixed.
    x, _ = lower.samples(Generator(state.generator), state.generator.params, z,
                         jax.random.split(k_loss)[0])
    m_loss, m_grads = jax.value_and_grad(lower.mi_net_loss)(state.mi_net.params, state.mi_net,
                                                            x, z)
    m_finite = all_finite(m_loss, m_grads)
    state = state.replace(mi_net=_keep_if_finite(state.mi_net.apply_gradients(grads=m_grads),
                                                 state.mi_net, m_finite, skip))
    metrics.update(loss_mi_net=m_loss, grad_norm_mi_net=optax.global_norm(m_grads))
    finite = jnp.logical_and(finite, m_finite)
  (g_loss, (g_metrics, new_stats)), g_grads = jax.value_and_grad(generator_loss, has_aux=True)(
      state.generator.params, state, z, k_loss, lower, carry, config.bounds.lambda_h)
  g_finite = all_finite(g_loss, g_metrics, g_grads, new_stats)
  generator = _keep_if_finite(
      state.generator.apply_gradients(grads=g_grads).replace(batch_stats=new_stats),
      state.generator, g_finite, skip)
  finite = jnp.logical_and(finite, g_finite)
  state = state.replace(step=state.step + 1, generator=generator,
                        skipped=state.skipped + (1 - finite.astype(jnp.int32)))

  metrics.update(g_metrics, loss_generator=g_loss, grad_norm_generator=optax.global_norm(g_grads),
                 nonfinite=1.0 - finite.astype(jnp.float32))
  if 'entropy' in metrics:
    metrics['lower_bound'] = metrics['energy_real'] - metrics['energy_fake'] + metrics['entropy']
    metrics['upper_bound'] = metrics['lower_bound'] + metrics['upper_term']
  return state, metrics


def bound_values(state: BiboundState, x_data, key, *, config) -> dict:
  """The bounds at `state` without an update, on one batch x_data (B, ...): what the train
  step reports (energy_real, energy_fake, entropy, upper_term, lower_bound, upper_bound, and
  the bounds' own diagnostics), from the same losses on fresh latents. One seed's state (no
  seed axis); jit it with the config static."""
  lower, upper = bounds_lib.from_config(config)
  k_z, k_e, k_g = jax.random.split(key, 3)
  z = jax.random.normal(k_z, (x_data.shape[0], config.model.generator.latent_dim), jnp.float32)
  _, (metrics, carry) = energy_loss(state.energy.params, state, x_data, z, k_e, lower, upper)
  if not lower.reuses(carry):
    carry = None
  _, (g_metrics, _) = generator_loss(state.generator.params, state, z, k_g, lower, carry,
                                     config.bounds.lambda_h)
  metrics = dict(metrics, **g_metrics)
  if 'entropy' in metrics:
    metrics['lower_bound'] = metrics['energy_real'] - metrics['energy_fake'] + metrics['entropy']
    metrics['upper_bound'] = metrics['lower_bound'] + metrics['upper_term']
  return metrics


def train_steps(state: BiboundState, batches, rng: jax.Array, *, config, mesh=None):
  """len(batches) iterations of `train_step` in one scan: the same updates as calling it once
  per batch (iteration t uses batches[t]; keys still come from `rng` and the state's step).
  Returns (new_state, metrics) with every metric stacked along a leading iteration axis."""
  body = lambda st, batch: train_step(st, batch, rng, config=config, mesh=mesh)
  return jax.lax.scan(body, state, jnp.stack(batches))


def _over_seeds(fn, config, mesh):
  """fn(state, batches, rng) of one seed, vmapped over the leading seed axis of all three (the
  mesh's 'seeds' axis splits them where it has several devices) and jit-compiled."""
  mesh = sharding.make_mesh(num_seeds=config.train.num_seeds) if mesh is None else mesh
  sharding.per_device_batch(config.train.batch_size, mesh)
  return mesh, jax.vmap(functools.partial(fn, config=config, mesh=mesh),
                        spmd_axis_name=sharding.SEED_AXIS)


def make_train_step(config, donate: bool = True, mesh=None):
  """jit-compiled `step(state, batch, rng) -> (state, metrics)`: one iteration of every seed.

  state, rng and every metric carry a leading seed axis (`train.num_seeds`; seed k is the run
  of seed config.seed + k: `assemble.initial_state`); batch is (seeds, energy_steps, B, ...).
  The config is closed over (static); the step compiles once per input shape and runs over
  `mesh` (default: all devices; bibound_jax/sharding.py). With `donate`, the input state's
  buffers are reused: never touch a state after passing it in. Place the initial state on the
  mesh first (`assemble.initial_state` does): a host state would make the second call compile
  again."""
  mesh, step = _over_seeds(train_step, config, mesh)
  seeded = sharding.seeded(mesh)
  return jax.jit(step, in_shardings=(seeded, sharding.batch_sharding(mesh), seeded),
                 out_shardings=(seeded, seeded), donate_argnums=(0,) if donate else ())


def make_train_steps(config, steps: int, donate: bool = True, mesh=None):
  """jit-compiled `steps_fn(state, batches, rng) -> (state, metrics)` running `steps`
  iterations of every seed per call; `batches` is a tuple of `steps` arrays (seeds,
  energy_steps, B, ...), every metric comes back (seeds, steps).

  One call per iteration costs a fixed dispatch (arguments, donation, one buffer per metric):
  on the toy networks on CPU that is about a third of the step. Sharding, donation and the
  compile-once property are those of `make_train_step`."""
  if steps < 1:
    raise ValueError(f'make_train_steps needs steps >= 1 (train.steps_per_call), got {steps}.')
  mesh, fn = _over_seeds(train_steps, config, mesh)
  seeded = sharding.seeded(mesh)
  return jax.jit(fn, in_shardings=(seeded, (sharding.batch_sharding(mesh),) * steps, seeded),
                 out_shardings=(seeded, seeded), donate_argnums=(0,) if donate else ())

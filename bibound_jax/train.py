"""Train states and the jit-compiled bidirectional train step (DESIGN.md section 1).

One iteration = `n_critic` energy updates, then one generator update:

    energy:     loss_E = mean E(x_data) - mean E(sg G(z)) + upper_bound_term(E; G)
    generator:  loss_G = mean E(G(z')) - lambda_H * entropy_lower_bound(G; z')

The energy minimises the upper bound L_up = L_lo + B; the generator maximises the lower bound
L_lo = E_data[E] - E_{p_g}[E] + H[p_g] (H[p0] is a constant and is dropped from the loss, not
from the reported values). Bounds are chosen by name in `config.bounds`:

    lower in {'sv', 'mi', 'none'}                entropy lower bound of the generator loss
    upper in {'gp', 'diff', 'none', 'r1', 'wgan_gp'}   energy regulariser

'sv' = singular values of the generator Jacobian (bounds/entropy.py); 'mi' = mutual information
of a generator with output noise, x = G(z) + sigma eps, with a critic/encoder trained in the same
step as a third TrainState (bounds/mutual_info.py); 'gp' = gradient penalty (bounds/
gradient_penalty.py); 'diff' = denoising score matching along a VP SDE with a time-conditioned
energy (bounds/diffusion.py). The paper's two headline pairs are sv+gp and mi+diff.

Jacobian terms (entropy, GP score) differentiate the map that made the samples: BatchNorm
normalises with the statistics of the current batch, as functions of the parameters
(`bounds.jacobian_bn = 'batch'`, `jacobian_variables`). The authors (and DESIGN.md section 2)
use the running statistics ('running'): those are constants in the parameters, so a
Linear -> BatchNorm block is no longer scale invariant in the Jacobian while it is in the
samples, and the entropy gradient inflates the weights before each BatchNorm (log s_1 rises by
log c when a kernel is scaled by c) without changing any sample. Only the generator update
writes new running statistics; evaluation uses them.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from bibound_jax import sharding
from bibound_jax.bounds import baselines
from bibound_jax.bounds import diffusion
from bibound_jax.bounds import entropy
from bibound_jax.bounds import gradient_penalty
from bibound_jax.bounds import mutual_info
from bibound_jax.models import mi as mi_models
from bibound_jax.models.noisy import NoisyGenerator

LOWER_BOUNDS = ('sv', 'mi', 'none')
UPPER_BOUNDS = ('gp', 'diff', 'none', 'r1', 'wgan_gp')
sg = jax.lax.stop_gradient


class TrainState(train_state.TrainState):
  """Flax TrainState plus BatchNorm running statistics (None for networks without BN)."""
  batch_stats: Any = None


@flax.struct.dataclass
class BiboundState:
  """Everything a run carries between iterations: both networks, the MI critic/encoder (None
  unless bounds.lower = 'mi'), the iteration count and the number of updates skipped for
  non-finite values (`train.nonfinite = 'skip'`)."""
  step: jax.Array
  energy: TrainState
  generator: TrainState
  skipped: jax.Array
  critic: TrainState | None = None


def make_optimizer(optim_config, learning_rate: float) -> optax.GradientTransformation:
  """Adam(b1, b2, eps) at `learning_rate`, optionally after global-norm clipping."""
  tx = optax.adam(learning_rate, b1=optim_config.b1, b2=optim_config.b2, eps=optim_config.eps)
  if optim_config.get('grad_clip', 0.0):
    tx = optax.chain(optax.clip_by_global_norm(optim_config.grad_clip), tx)
  return tx


def create_state(config, energy_model, gen_model, key: jax.Array, data_shape) -> BiboundState:
  """Initialise both networks and their optimisers."""
  k_e, k_g, k_c = jax.random.split(key, 3)
  bcfg = config.bounds
  lower, _ = bound_names(bcfg)
  if lower == 'mi' and bcfg.mi_learn_sigma:
    gen_model = NoisyGenerator(base=gen_model, sigma_init=bcfg.mi_sigma,
                               sigma_floor=bcfg.mi_sigma_floor)
  latent_dim = gen_model.latent_dim
  x0 = jnp.zeros((2,) + tuple(data_shape), jnp.float32)
  z0 = jnp.zeros((2, latent_dim), jnp.float32)
  critic = None
  if lower == 'mi':
    c_model = mi_models.create_mi_model(bcfg.mi_estimator, latent_dim, tuple(bcfg.mi_hidden))
    c_args = (x0,) if bcfg.mi_estimator == 'ba' else (x0, z0)
    critic = TrainState.create(apply_fn=c_model.apply, params=c_model.init(k_c, *c_args)['params'],
                               tx=make_optimizer(config.optim, config.optim.lr_critic))
  e_vars = energy_model.init(k_e, x0)
  g_vars = gen_model.init(k_g, z0, train=False)
  energy = TrainState.create(apply_fn=energy_model.apply, params=e_vars['params'],
                             tx=make_optimizer(config.optim, config.optim.lr_energy),
                             batch_stats=e_vars.get('batch_stats'))
  generator = TrainState.create(apply_fn=gen_model.apply, params=g_vars['params'],
                                tx=make_optimizer(config.optim, config.optim.lr_generator),
                                batch_stats=g_vars.get('batch_stats'))
  # TrainState.create starts `step` as a Python int (weakly typed); after one update it is an
  # int32 array, which would retrace the step. Start it as int32 so the step compiles once.
  zero = lambda: jnp.zeros((), jnp.int32)  # distinct buffers: the step donates its input
  if critic is not None:
    critic = critic.replace(step=zero())
  return BiboundState(step=zero(), energy=energy.replace(step=zero()),
                      generator=generator.replace(step=zero()), skipped=zero(), critic=critic)


def _variables(params, batch_stats):
  return {'params': params} if batch_stats is None else {'params': params,
                                                         'batch_stats': batch_stats}


def inference_generator_fn(gen: TrainState) -> Callable:
  """fn(params, z) -> x for ONE latent z (d,), BatchNorm on running statistics."""
  def fn(params, z):
    return gen.apply_fn(_variables(params, gen.batch_stats), z[None], train=False)[0]
  return fn


def batch_statistics(gen: TrainState, params, z: jax.Array):
  """The BatchNorm statistics s(params) of the batch z, differentiable in `params`.

  A running average r <- m r + (1 - m) s is linear in r: from r = 0 it gives r0 = (1 - m) s,
  from r0 it gives r1 = (1 - m^2) s, so s = r0^2 / (2 r0 - r1) whatever the momentum m
  (0 where s = 0)."""
  def update(stats):
    return generate(gen.replace(params=params, batch_stats=stats), z, train=True)[1]
  r0 = update(jax.tree.map(jnp.zeros_like, gen.batch_stats))
  r1 = update(r0)
  return jax.tree.map(lambda a, b: a * a / jnp.where(2 * a == b, 1.0, 2 * a - b), r0, r1)


def per_sample_generator_fn(gen: TrainState) -> Callable:
  """fn(variables, z) -> x for ONE latent z (d,), BatchNorm normalising with
  variables['batch_stats'] (inference mode; `variables` = {'params': ...[, 'batch_stats': ...]})."""
  def fn(variables, z):
    return gen.apply_fn(variables, z[None], train=False)[0]
  return fn


def jacobian_variables(gen: TrainState, params, z_batch: jax.Array, bounds_config) -> dict:
  """The variables of the generator whose per-sample Jacobian the bounds use
  (`per_sample_generator_fn`): `params` and, with BatchNorm, the statistics of the batch z_batch
  under `params` (`bounds.jacobian_bn = 'batch'`: differentiable in the parameters, held fixed
  in z, i.e. the O(1/B) cross-sample terms of the Jacobian are dropped) or the running ones
  ('running').

  Computed once per loss and passed to every Jacobian term of it (estimator, GP), so the two
  batch forwards of `batch_statistics` are not repeated inside each vmapped Jacobian call."""
  if gen.batch_stats is None:
    return {'params': params}
  if bounds_config.get('jacobian_bn', 'batch') == 'running':
    return {'params': params, 'batch_stats': gen.batch_stats}
  return {'params': params, 'batch_stats': batch_statistics(gen, params, sg(z_batch))}


def batch_generator_fn(gen: TrainState, z_batch: jax.Array) -> Callable:
  """fn(params, z) -> x for ONE latent z (d,): the training-mode generator of the batch z_batch
  (BatchNorm on the batch statistics under `params`; see `jacobian_variables`). Recomputes the
  statistics at every call: inside a step use `jacobian_variables` once instead."""
  one = per_sample_generator_fn(gen)
  bn = {'jacobian_bn': 'batch'}
  return lambda params, z: one(jacobian_variables(gen, params, z_batch, bn), z)


def generate(gen: TrainState, z: jax.Array, train: bool = True):
  """G(z) for a batch; in training mode also the updated BatchNorm statistics."""
  if gen.batch_stats is None or not train:
    return gen.apply_fn(_variables(gen.params, gen.batch_stats), z, train=train), gen.batch_stats
  x, updates = gen.apply_fn(_variables(gen.params, gen.batch_stats), z, train=True,
                            mutable=['batch_stats'])
  return x, updates['batch_stats']


def bound_names(bounds_config) -> tuple[str, str]:
  """Validated (lower, upper) names; a clear error lists the valid ones."""
  lower, upper = bounds_config.lower, bounds_config.upper
  if lower not in LOWER_BOUNDS:
    raise ValueError(f'Unknown lower bound {lower!r}; valid: {", ".join(LOWER_BOUNDS)}.')
  if upper not in UPPER_BOUNDS:
    raise ValueError(f'Unknown upper bound {upper!r}; valid: {", ".join(UPPER_BOUNDS)}.')
  return lower, upper


def make_estimator(bounds_config):
  """The SV entropy estimator named by `bounds.estimator`, options bound."""
  return entropy.get_estimator(bounds_config.estimator, num_iters=bounds_config.num_iters,
                               block_size=bounds_config.block_size,
                               cg_iters=bounds_config.cg_iters)


def _global_norm(tree) -> jax.Array:
  return optax.global_norm(tree)


def all_finite(*trees) -> jax.Array:
  """True iff every leaf of every tree is finite (jit-compatible)."""
  leaves = [x for t in trees for x in jax.tree.leaves(t)]
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _keep_if_finite(new: TrainState, old: TrainState, finite, skip: bool) -> TrainState:
  """With `skip`, drop an update whose loss, metrics or gradients are not finite (the caller
  counts it); otherwise take it as is and let the run loop stop with an error."""
  if not skip:
    return new
  return jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)


def sv_latents(z: jax.Array, bounds_config) -> jax.Array:
  """The latents of the Jacobian terms: every k-th latent of the batch, k = B / bounds.sv_batch
  (the whole batch when sv_batch is 0 or >= B).

  The entropy term E_z[log vol J(z)] and the GP E_z[1/2 (a - s)^2] are means over z, so a
  subset of the batch estimates them without bias at sv_batch / B of the Jacobian cost (more
  variance, same expectation). The stride keeps the subset spread over the batch shards."""
  n = int(bounds_config.get('sv_batch', 0) or 0)
  if n <= 0 or n >= z.shape[0]:
    return z
  return z[::z.shape[0] // n][:n]


def energy_loss(e_params, state: BiboundState, x_data, z, key, config):
  """loss_E = mean E(x_data) - mean E(sg G(z)) + upper_bound_term, and its diagnostics."""
  bcfg = config.bounds
  _, upper = bound_names(bcfg)
  energy_fn = lambda x: state.energy.apply_fn({'params': e_params}, x)
  k_probe, k_est, k_interp = jax.random.split(key, 3)
  k_noise = jax.random.fold_in(key, 3)  # MI output noise (kept apart: the other keys are fixed)
  x_fake, _ = generate(state.generator, z, train=True)
  if bcfg.lower == 'mi':  # the MI bound is on the entropy of the noisy generator
    x_fake = mutual_info.add_output_noise(x_fake, output_sigma(state.generator.params, bcfg),
                                          k_noise)
  x_fake = sg(x_fake)
  e_real, e_fake = energy_fn(x_data), energy_fn(x_fake)
  aux = {'energy_real': jnp.mean(e_real), 'energy_fake': jnp.mean(e_fake)}
  if upper == 'gp':
    gen = state.generator
    gen_fn = per_sample_generator_fn(gen)
    gen_vars = sg(jacobian_variables(gen, gen.params, z, bcfg))
    z = sv_latents(z, bcfg)
    if bcfg.estimator == 'exact_logdet':
      vectors = None
    else:
      sv_est = entropy.batched_log_volume(make_estimator(bcfg), gen_fn, gen_vars, z, k_est,
                                          bcfg.get('latent_chunk', 0))
      vectors = sv_est.vector
      aux['_sv'] = sg(sv_est)   # for the generator update (shares_sv_work); not a metric
    probes = jax.random.normal(k_probe, z.shape, z.dtype)
    per_sample, _ = gradient_penalty.gp_fisher(energy_fn, gen_fn, gen_vars, z, probes, vectors,
                                               bcfg.get('latent_chunk', 0))
    aux['gp'] = jnp.mean(per_sample)
    weight = gradient_penalty.gp_weight(state.step, bcfg.gp_weight,
                                        bcfg.get('gp_weight_schedule', 'constant'))
    upper_term = gradient_penalty.gp_upper_term(aux['gp'], weight, bcfg.gp_margin)
  elif upper == 'diff':
    energy_t = lambda x, t: state.energy.apply_fn({'params': e_params}, x, t)
    aux['dsm'] = diffusion.dsm_loss(energy_t, x_fake, k_interp, vp_sde(bcfg),
                                    t_min=bcfg.diff_t_min,
                                    likelihood_weighting=bcfg.diff_likelihood_weighting,
                                    importance_sampling=bcfg.diff_importance_sampling)
    upper_term = diffusion.diffusion_upper_term(aux['dsm'], bcfg.diff_weight)
  elif upper == 'r1':
    upper_term = baselines.r1_penalty(energy_fn, x_data, bcfg.r1_weight)
  elif upper == 'wgan_gp':
    upper_term = baselines.wgan_gp_penalty(energy_fn, x_data, x_fake, k_interp,
                                           bcfg.wgan_gp_weight)
  else:
    upper_term = jnp.zeros(())
  aux['upper_term'] = upper_term
  loss = aux['energy_real'] - aux['energy_fake'] + upper_term
  return loss, aux


def vp_sde(bounds_config) -> diffusion.VPSDE:
  return diffusion.VPSDE(beta_min=bounds_config.diff_beta_min,
                         beta_max=bounds_config.diff_beta_max)


def output_sigma(gen_params, bounds_config):
  """The MI output-noise scale: learned (floor + exp(log_sigma)) or the fixed config value."""
  if bounds_config.mi_learn_sigma:
    return mutual_info.output_noise_std(gen_params['log_sigma'], bounds_config.mi_sigma_floor)
  return jnp.asarray(bounds_config.mi_sigma, jnp.float32)


def critic_apply(critic: TrainState):
  """(params, *inputs) -> outputs of the MI critic/encoder."""
  return lambda p, *args: critic.apply_fn({'params': p}, *args)


def noisy_samples(g_params, state: BiboundState, z, key, config):
  """x = G(z) + sigma eps (training-mode BatchNorm), its new BN statistics and sigma."""
  gen = state.generator.replace(params=g_params)
  x, new_stats = generate(gen, z, train=True)
  sigma = output_sigma(g_params, config.bounds)
  return mutual_info.add_output_noise(x, sigma, key), new_stats, sigma


def critic_loss(c_params, state: BiboundState, x_noisy, z, config):
  """The critic/encoder maximises the MI bound on the current (fixed) generator samples."""
  mi, _ = mutual_info.mi_losses(config.bounds.mi_estimator, critic_apply(state.critic), c_params,
                                sg(x_noisy), z)
  return -mi


def shares_sv_work(bounds_config) -> bool:
  """Whether the generator update reuses the energy update's latents and s_1 vectors.

  With sv+gp the last energy update already solved for the s_1 vectors of J(z) at the current
  generator parameters (for the GP score); the generator update that follows runs at the same
  parameters, so on the same latents those vectors are exact for it too and its entropy term
  costs one JVP per sample instead of a second solve. The generator then sees the latents of the
  last energy update rather than fresh ones (each update stays unbiased). `bounds.share_sv`
  turns it off; it does not apply to exact_logdet (no vectors) or to other pairings."""
  return (bounds_config.lower == 'sv' and bounds_config.upper == 'gp'
          and bounds_config.estimator != 'exact_logdet'
          and bool(bounds_config.get('share_sv', True)))


def generator_loss(g_params, state: BiboundState, z, key, config, sv_previous=None):
  """loss_G = mean E(G(z)) - lambda_H * entropy lower bound (SV or MI), and diagnostics.
  sv_previous: the energy update's SV estimate on the same z and generator parameters, whose
  vectors the SV term then reuses (`shares_sv_work`)."""
  bcfg = config.bounds
  lower, _ = bound_names(bcfg)
  gen = state.generator.replace(params=g_params)
  if lower == 'mi':
    k_noise, key = jax.random.split(key)
    x, new_stats, sigma = noisy_samples(g_params, state, z, k_noise, config)
  else:
    x, new_stats = generate(gen, z, train=True)
  e_fake = state.energy.apply_fn({'params': state.energy.params}, x)
  aux = {'new_batch_stats': new_stats}
  loss = jnp.mean(e_fake)
  if lower == 'mi':
    mi, mi_aux = mutual_info.mi_losses(bcfg.mi_estimator, critic_apply(state.critic),
                                       sg(state.critic.params), x, z)
    data_dim = x[0].size
    h_lo = mutual_info.entropy_lower_bound(mi, data_dim, sigma)
    loss = loss - bcfg.lambda_h * h_lo
    # With 'jsd' this is an estimate, not a bound (DESIGN.md section 3).
    aux.update({'entropy': sg(h_lo), 'mi/value': mi_aux['mi'], 'mi/sigma': sg(sigma)})
  if lower == 'sv':
    gen_fn, gen_vars = per_sample_generator_fn(gen), jacobian_variables(gen, g_params, z, bcfg)
    if sv_previous is None:
      est = entropy.batched_log_volume(make_estimator(bcfg), gen_fn, gen_vars,
                                       sv_latents(z, bcfg), key, bcfg.get('latent_chunk', 0))
    else:
      est = entropy.batched_reuse_vectors(gen_fn, gen_vars, sv_latents(z, bcfg), sv_previous)
    log_vol = jnp.mean(est.value)
    loss = loss - bcfg.lambda_h * log_vol
    aux.update({
        'entropy': entropy.gaussian_entropy(z.shape[-1]) + sg(log_vol),
        'sv/smin': jnp.mean(est.smin),
        'sv/residual': jnp.mean(est.residual),
        'sv/iterations': jnp.mean(est.iterations.astype(jnp.float32)),
    })
  return loss, aux


def check_batch_shape(shape, config) -> None:
  """Raise a clear error unless shape == (n_critic, B, *config.data.shape)."""
  expected = (config.optim.n_critic, '<B>') + tuple(config.data.shape)
  if (len(shape) != len(expected) or shape[0] != config.optim.n_critic
      or tuple(shape[2:]) != tuple(config.data.shape)):
    raise ValueError(
        f'train_step got a batch of shape {tuple(shape)}; expected (n_critic, B, *data.shape) = '
        f'{expected} with n_critic = config.optim.n_critic and data.shape = config.data.shape. '
        'Reshape the batch or fix the config.')


def train_step(state: BiboundState, batch: jax.Array, rng: jax.Array, *, config, mesh=None):
  """One iteration: `n_critic` energy updates (one per leading slice of `batch`), then one
  generator update. batch: (n_critic, B, *data_shape). Returns (new_state, metrics)."""
  check_batch_shape(batch.shape, config)
  skip = config.train.get('nonfinite', 'stop') == 'skip'
  n_critic, batch_size = batch.shape[0], batch.shape[1]
  latent_dim = config.model.generator.latent_dim
  k_energy, k_gen = jax.random.split(jax.random.fold_in(rng, state.step))
  share_sv = shares_sv_work(config.bounds)

  def latents(key):
    z = jax.random.normal(key, (batch_size, latent_dim), jnp.float32)
    if mesh is not None:  # each device draws (and keeps) only its own slice of the batch
      z = jax.lax.with_sharding_constraint(z, sharding.latent_sharding(mesh))
    return z

  def critic_step(carry, inputs):
    st = carry
    x_data, key = inputs
    k_z, k_loss = jax.random.split(key)
    z = latents(k_z)
    (loss, aux), grads = jax.value_and_grad(energy_loss, has_aux=True)(
        st.energy.params, st, x_data, z, k_loss, config)
    finite = all_finite(loss, aux, grads)
    if share_sv:
      aux['_z'] = z
    aux = dict(aux, loss_energy=loss, grad_norm_energy=_global_norm(grads),
               finite_energy=finite)
    energy = _keep_if_finite(st.energy.apply_gradients(grads=grads), st.energy, finite, skip)
    return st.replace(energy=energy), aux

  state, e_aux = jax.lax.scan(critic_step, state,
                              (batch, jax.random.split(k_energy, n_critic)))
  e_finite = jnp.all(e_aux.pop('finite_energy'))
  e_aux = jax.tree.map(lambda a: a[-1], e_aux)
  sv_previous, z_previous = e_aux.pop('_sv', None), e_aux.pop('_z', None)

  k_z, k_loss = jax.random.split(k_gen)
  z = z_previous if share_sv else latents(k_z)
  c_metrics = {}
  if state.critic is not None:
    # One critic/encoder step on this iteration's samples, then G with the updated critic fixed.
    x_noisy, _, _ = noisy_samples(state.generator.params, state, z,
                                  jax.random.split(k_loss)[0], config)
    c_loss, c_grads = jax.value_and_grad(critic_loss)(state.critic.params, state, x_noisy, z,
                                                      config)
    c_finite = all_finite(c_loss, c_grads)
    state = state.replace(critic=_keep_if_finite(state.critic.apply_gradients(grads=c_grads),
                                                 state.critic, c_finite, skip))
    c_metrics = {'loss_critic': c_loss, 'grad_norm_critic': _global_norm(c_grads)}
    e_finite = jnp.logical_and(e_finite, c_finite)
  (g_loss, g_aux), g_grads = jax.value_and_grad(generator_loss, has_aux=True)(
      state.generator.params, state, z, k_loss, config, sv_previous if share_sv else None)
  new_stats = g_aux.pop('new_batch_stats')
  g_finite = all_finite(g_loss, g_aux, g_grads, new_stats)
  generator = _keep_if_finite(
      state.generator.apply_gradients(grads=g_grads).replace(batch_stats=new_stats),
      state.generator, g_finite, skip)
  finite = jnp.logical_and(e_finite, g_finite)
  state = state.replace(step=state.step + 1, generator=generator,
                        skipped=state.skipped + (1 - finite.astype(jnp.int32)))

  metrics = dict(e_aux, **g_aux, **c_metrics, loss_generator=g_loss,
                 grad_norm_generator=_global_norm(g_grads),
                 nonfinite=1.0 - finite.astype(jnp.float32))
  if 'entropy' in metrics:
    metrics['lower_bound'] = metrics['energy_real'] - metrics['energy_fake'] + metrics['entropy']
    metrics['upper_bound'] = metrics['lower_bound'] + metrics['upper_term']
    metrics['gap'] = metrics['upper_term']
  return state, metrics


def train_steps(state: BiboundState, batches, rng: jax.Array, *, config, mesh=None):
  """len(batches) iterations of `train_step` in one scan: the same updates as calling it once
  per batch (iteration t uses batches[t]; keys still come from `rng` and the state's step).
  Returns (new_state, metrics) with every metric stacked along a leading iteration axis."""
  body = lambda st, batch: train_step(st, batch, rng, config=config, mesh=mesh)
  return jax.lax.scan(body, state, jnp.stack(batches))


def make_train_steps(config, steps: int, donate: bool = True, mesh=None):
  """jit-compiled `train_steps(state, batches, rng) -> (state, metrics)` running `steps`
  iterations per call; `batches` is a tuple of `steps` arrays (n_critic, B, *data_shape).

  One call per iteration costs a fixed dispatch (arguments, donation, one buffer per metric):
  on the toy networks on CPU that is about a third of the step. Sharding, donation and the
  compile-once property are those of `make_train_step`."""
  if steps < 1:
    raise ValueError(f'make_train_steps needs steps >= 1 (train.steps_per_call), got {steps}.')
  mesh = sharding.make_mesh() if mesh is None else mesh
  sharding.per_device_batch(config.train.batch_size, mesh)
  fn = functools.partial(train_steps, config=config, mesh=mesh)
  rep = sharding.replicated(mesh)
  return jax.jit(fn, in_shardings=(rep, (sharding.batch_sharding(mesh),) * steps, rep),
                 out_shardings=(rep, rep), donate_argnums=(0,) if donate else ())


def make_train_step(config, donate: bool = True, mesh=None):
  """jit-compiled `train_step(state, batch, rng) -> (state, metrics)` for a fixed config.

  The config is closed over (static); the step compiles once per input shape. The step runs
  data-parallel over `mesh` (default: all devices; see bibound_jax/sharding.py): state and
  metrics replicated, the batch sharded along B. With `donate`, the input state's buffers are
  reused: never touch a state after passing it in.
  """
  mesh = sharding.make_mesh() if mesh is None else mesh
  sharding.per_device_batch(config.train.batch_size, mesh)
  step = functools.partial(train_step, config=config, mesh=mesh)
  rep = sharding.replicated(mesh)
  return jax.jit(step, in_shardings=(rep, sharding.batch_sharding(mesh), rep),
                 out_shardings=(rep, rep), donate_argnums=(0,) if donate else ())

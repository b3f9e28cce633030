"""The generator as the bounds see it: batched samples, per-sample maps and their BatchNorm.

A generator module maps z (B, d) -> x (B, ...) and takes `train` for its BatchNorm. The bounds
need two views of it:

  * the batch map that makes the training samples, `Generator.sample(params, z)`: BatchNorm
    normalises with the statistics of this batch and returns updated running averages;
  * a per-sample map `fn(variables, z) -> x` for ONE latent (d,), whose Jacobian J(z) the SV
    entropy and the GP score differentiate (`Generator.per_sample`). It runs BatchNorm in
    inference mode on `variables['batch_stats']`, which `Generator.jacobian_variables` fills
    with either

      'batch'    the statistics of the batch that made the samples, as functions of the
                 parameters (held fixed in z: the O(1/B) cross-sample terms of the batch map's
                 Jacobian are dropped), so the per-sample map IS the map that made the samples;
      'running'  the running averages (the authors' choice). These are constants in the
                 parameters, so a Linear -> BatchNorm block is no longer scale invariant in the
                 Jacobian while it is in the samples: the entropy gradient inflates the weights
                 before each BatchNorm (log s_1 rises by log c when a kernel is scaled by c)
                 without moving a sample (docs/bounds.md, "BatchNorm inside the Jacobian").

The batch statistics are read directly off every `nn.BatchNorm` of the module during a
training-mode forward pass (`batch_statistics`), with the formula Flax's BatchNorm uses.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

sg = jax.lax.stop_gradient


def variables(params, batch_stats) -> dict:
  """Flax variables from parameters and (possibly None) BatchNorm statistics."""
  if batch_stats is None:
    return {'params': params}
  return {'params': params, 'batch_stats': batch_stats}


def _bn_statistics(module: nn.BatchNorm, x: jax.Array) -> dict:
  """{'mean', 'var'} of a BatchNorm input x over its reduction axes, as Flax computes them in
  training mode (float32 at least, Var = E[x^2] - E[x]^2 clipped at 0)."""
  feature_axes = {a % x.ndim for a in (module.axis if isinstance(module.axis, tuple)
                                       else (module.axis,))}
  axes = tuple(i for i in range(x.ndim) if i not in feature_axes)
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  mean = jnp.mean(x, axes)
  mean2 = jnp.mean(jnp.square(x), axes)
  return {'mean': mean, 'var': jnp.maximum(0.0, mean2 - jnp.square(mean))}


def batch_statistics(apply_fn: Callable, params, batch_stats, z: jax.Array):
  """The BatchNorm statistics of the batch z under `params`, a tree shaped like `batch_stats`
  and differentiable in `params`: each BatchNorm's input is intercepted during one
  training-mode forward pass and its batch mean and variance computed directly."""
  found = {}

  def intercept(next_fun, args, kwargs, context):
    module = context.module
    if isinstance(module, nn.BatchNorm) and context.method_name == '__call__':
      found[module.scope.path] = _bn_statistics(module, args[0])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(intercept):
    apply_fn(variables(params, batch_stats), z, train=True, mutable=['batch_stats'])

  def lookup(path, _):
    keys = tuple(p.key for p in path)
    return found[keys[:-1]][keys[-1]]
  return jax.tree_util.tree_map_with_path(lookup, batch_stats)


@dataclasses.dataclass(frozen=True)
class PerSample:
  """The generator at ONE latent: `fn(variables, z) -> x` for z (d,).

  If `has_log_volume`, the module computes its log-volume itself (method `log_volume`),

      log_volume(z) = log p0(z) - log p_g(G(z)),

  which is log |det dG/dz| for a bijection such as models.flow.SplineFlowGenerator (computed
  from the spline slopes), and for models.flow.FlowMixtureGenerator the mixture's exact
  log-density through its components' inverses; `log_volume(variables, z)` returns it. The
  exact entropy, H[p_g] = H[p0] + E_z log_volume(z), and the GP score then use this closed
  form (a first derivative of the module) instead of differentiating the Jacobian (a second
  one): the same values for a bijection, fewer operations to compile and run
  (docs/performance.md, "Start-up"); the only way for a mixture, whose latent holds a
  component selector along which J is zero."""
  apply_fn: Callable
  has_log_volume: bool = False

  def __call__(self, variables_, z: jax.Array) -> jax.Array:
    return self.apply_fn(variables_, z[None], train=False)[0]

  def log_volume(self, variables_, z: jax.Array) -> jax.Array:
    """log p0(z) - log p_g(G(z)) in closed form (requires `has_log_volume`)."""
    if not self.has_log_volume:
      raise ValueError('This generator has no closed-form log-volume (no log_volume method).')
    return self.apply_fn(variables_, z[None], method='log_volume')[0]


@dataclasses.dataclass(frozen=True)
class Generator:
  """A generator TrainState seen by the bounds (apply_fn, params, batch_stats).

  Built inside the train step around the current state; every method takes the parameters to
  differentiate explicitly."""
  state: Any

  @property
  def params(self):
    return self.state.params

  def sample(self, params, z: jax.Array, train: bool = True):
    """(G(z), new BatchNorm running averages) for a batch; `train` as in the module."""
    return generate(self.state.replace(params=params), z, train)

  def per_sample(self, analytic_log_det: bool = True) -> PerSample:
    """fn(variables, z) -> x for ONE latent z (d,), BatchNorm on variables['batch_stats'];
    with the module's closed-form log-volume when it has one and `analytic_log_det`."""
    module = getattr(self.state.apply_fn, '__self__', None)
    has = analytic_log_det and callable(getattr(module, 'log_volume', None))
    return PerSample(self.state.apply_fn, has)

  def jacobian_variables(self, params, z_batch: jax.Array, batch_norm: str = 'batch') -> dict:
    """The variables of `per_sample` whose Jacobian the bounds use: `params` and, with
    BatchNorm, the statistics of the batch z_batch under `params` ('batch') or the running
    ones ('running'); see the module docstring. Compute it once per loss."""
    stats = self.state.batch_stats
    if stats is None:
      return {'params': params}
    if batch_norm == 'running':
      return {'params': params, 'batch_stats': stats}
    return {'params': params,
            'batch_stats': batch_statistics(self.state.apply_fn, params, stats, sg(z_batch))}

  def noise_std(self, params):
    """sigma of a generator with learned output noise (a module with an `output_noise_std`
    method, e.g. models.noisy.NoisyGenerator)."""
    return self.state.apply_fn({'params': params}, method='output_noise_std')


def generate(state, z: jax.Array, train: bool = True):
  """G(z) for a batch from a generator TrainState; in training mode also the updated
  BatchNorm running averages (else the unchanged ones)."""
  vs = variables(state.params, state.batch_stats)
  if state.batch_stats is None or not train:
    return state.apply_fn(vs, z, train=train), state.batch_stats
  x, updates = state.apply_fn(vs, z, train=True, mutable=['batch_stats'])
  return x, updates['batch_stats']


def inference_fn(state) -> Callable:
  """fn(params, z) -> x for ONE latent z (d,), BatchNorm on the running statistics: the
  generator as evaluation samples it."""
  def fn(params, z):
    return state.apply_fn(variables(params, state.batch_stats), z[None], train=False)[0]
  return fn


def batch_generator_fn(state, z_batch: jax.Array) -> Callable:
  """fn(params, z) -> x for ONE latent z (d,): the training-mode generator of the batch
  z_batch (BatchNorm on its statistics under `params`). Recomputes the statistics at every
  call; inside a loss use `Generator.jacobian_variables` once instead."""
  gen = Generator(state)
  one = gen.per_sample()
  return lambda params, z: one(gen.jacobian_variables(params, z_batch), z)

"""The generator as the bounds see it: batch statistics read directly off BatchNorm, the
per-sample map of the batch that made the samples, and its scale invariance."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bibound_jax import assemble
from bibound_jax import generator as generator_lib
from bibound_jax.bounds import entropy
from configs import stackedmnist
from configs import toy


def _generator(cfg):
  _, state, _ = assemble.initial_state(cfg)
  return assemble.seed_slice(state.generator, 0)


def test_batch_statistics_are_those_batchnorm_normalises_with():
  """Per-sample outputs with the directly read statistics equal the training-mode batch
  outputs, and the statistics equal the mean and variance of each BatchNorm's input; the
  running average they feed is the one BatchNorm itself writes."""
  g = _generator(toy.get_config('authors'))
  z = jax.random.normal(jax.random.key(1), (200, 2))
  stats = generator_lib.batch_statistics(g.apply_fn, g.params, g.batch_stats, z)
  x_batch, new = generator_lib.generate(g, z, train=True)
  one = generator_lib.Generator(g).per_sample()
  per_sample = jax.vmap(lambda zi: one({'params': g.params, 'batch_stats': stats}, zi))(z)
  np.testing.assert_allclose(per_sample, x_batch, atol=1e-5)
  # BatchNorm's update is m r + (1 - m) s with m = 0.9 and r the running average before it.
  for name in stats:
    for k in ('mean', 'var'):
      np.testing.assert_allclose(new[name][k], 0.9 * g.batch_stats[name][k]
                                 + 0.1 * stats[name][k], rtol=1e-5, atol=1e-6)
  # The first BatchNorm's input is PReLU(Dense(z)): its mean, directly.
  h = g.apply_fn({'params': g.params, 'batch_stats': g.batch_stats}, z, train=True,
                 capture_intermediates=True, mutable=['batch_stats', 'intermediates'])[1]
  pre = h['intermediates']['PReLU_0']['__call__'][0]
  np.testing.assert_allclose(stats['BatchNorm_0']['mean'], jnp.mean(pre, 0), rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(stats['BatchNorm_0']['var'], jnp.var(pre, 0), rtol=1e-4,
                             atol=1e-6)


def test_batch_statistics_of_a_convolutional_generator():
  """Every BatchNorm of the DCGAN generator (over batch and both spatial axes) is found."""
  g = _generator(stackedmnist.get_config('cnn'))
  z = jax.random.normal(jax.random.key(1), (8, 32))

  @jax.jit
  def both(g, z):
    stats = generator_lib.batch_statistics(g.apply_fn, g.params, g.batch_stats, z)
    one = generator_lib.Generator(g).per_sample()
    per_sample = jax.vmap(lambda zi: one({'params': g.params, 'batch_stats': stats}, zi))(z)
    return stats, per_sample, generator_lib.generate(g, z, train=True)[0]
  stats, per_sample, x_batch = both(g, z)
  assert jax.tree.structure(stats) == jax.tree.structure(g.batch_stats)
  np.testing.assert_allclose(per_sample, x_batch, atol=2e-5)


def test_jacobian_generator_uses_the_batch_statistics_and_is_scale_invariant():
  """With BatchNorm, the Jacobian terms must see the map that made the samples: scaling a
  kernel and bias before a BatchNorm (which changes no sample) leaves the log-volume
  unchanged (up to BatchNorm's epsilon, 1e-5 next to the variance). With the running
  statistics it rises by about d log c: the entropy gradient would inflate the weights."""
  g = _generator(toy.get_config('authors'))
  z = jax.random.normal(jax.random.key(1), (200, 2))

  def log_volume(params, fn_of):
    gs = g.replace(params=params)
    return float(jnp.mean(entropy.batched_log_volume(
        entropy.exact_logdet, fn_of(gs), params, z, jax.random.key(2)).value))
  scaled = jax.tree.map(lambda p: p, g.params)
  scaled['Dense_1'] = jax.tree.map(lambda p: 3.0 * p, g.params['Dense_1'])
  batch_fn = lambda gs: generator_lib.batch_generator_fn(gs, z)
  assert log_volume(scaled, batch_fn) == pytest.approx(log_volume(g.params, batch_fn), abs=5e-3)
  running = log_volume(scaled, generator_lib.inference_fn) - log_volume(
      g.params, generator_lib.inference_fn)
  assert running > 1.0   # d log 3 = 2.2 in the linear regime


def test_jacobian_variables_computed_once_give_the_same_values_and_gradients():
  """A loss computes the batch statistics once (`Generator.jacobian_variables`) and passes
  them to every Jacobian term; the value and the parameter gradient (which flows through the
  statistics) must equal those of recomputing them inside each per-sample call."""
  g = _generator(toy.get_config('authors'))
  gen = generator_lib.Generator(g)
  z = jax.random.normal(jax.random.key(1), (64, 2))
  key = jax.random.key(2)

  def once(params):
    variables = gen.jacobian_variables(params, z)
    return jnp.mean(entropy.batched_log_volume(entropy.exact_smin, gen.per_sample(),
                                               variables, z, key).value)

  def per_call(params):
    return jnp.mean(entropy.batched_log_volume(
        entropy.exact_smin, generator_lib.batch_generator_fn(g, z), params, z, key).value)

  v1, g1 = jax.jit(jax.value_and_grad(once))(g.params)
  v2, g2 = jax.jit(jax.value_and_grad(per_call))(g.params)
  assert float(v1) == pytest.approx(float(v2), rel=1e-5)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  # The statistics carry gradient: holding them fixed changes the parameter gradient.
  stats = jax.lax.stop_gradient(
      generator_lib.batch_statistics(g.apply_fn, g.params, g.batch_stats, z))
  g3 = jax.jit(jax.grad(lambda p: jnp.mean(entropy.batched_log_volume(
      entropy.exact_smin, gen.per_sample(), {'params': p, 'batch_stats': stats}, z,
      key).value)))(g.params)
  assert max(float(jnp.max(jnp.abs(a - b))) for a, b in
             zip(jax.tree.leaves(g1), jax.tree.leaves(g3))) > 1e-3
  # 'running' uses the running averages as they are.
  running = gen.jacobian_variables(g.params, z, 'running')
  assert running['batch_stats'] is g.batch_stats

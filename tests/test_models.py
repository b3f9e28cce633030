"""Toy networks: spectral normalisation, output scale, generator shapes and BatchNorm modes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bibound_jax.bounds import gradient_penalty
from bibound_jax.models.toy import MLPEnergy, MLPGenerator, SNDense
from configs import toy


def test_spectral_norm_divides_by_the_largest_singular_value():
  layer = SNDense(features=30, power_iters=50)
  x = jax.random.normal(jax.random.key(0), (4, 20))
  params = layer.init(jax.random.key(1), x)
  kernel = np.asarray(params['params']['kernel'])
  y = layer.apply(params, x)
  sigma = np.linalg.svd(kernel, compute_uv=False)[0]
  np.testing.assert_allclose(y, x @ (kernel / sigma), rtol=1e-4, atol=1e-5)
  # The normalised kernel has spectral norm 1: the layer is 1-Lipschitz.
  jac = jax.jacfwd(lambda v: layer.apply(params, v[None])[0])(x[0])
  np.testing.assert_allclose(np.linalg.svd(jac, compute_uv=False)[0], 1.0, rtol=1e-4)


def test_spectral_norm_loop_is_the_unrolled_power_iteration_in_a_small_graph():
  """The fori_loop computes what the unrolled loop it replaced computed, and its graph does not
  grow with power_iters (the unrolled one made a third of the toy step's graph)."""
  layer = SNDense(features=16, power_iters=10)
  x = jax.random.normal(jax.random.key(5), (4, 8))
  params = layer.init(jax.random.key(6), x)
  kernel = params['params']['kernel']

  def unrolled(kernel, x):
    v = jnp.ones((16,)) / np.sqrt(16)
    for _ in range(10):
      u = kernel @ v
      u = u / (jnp.linalg.norm(u) + 1e-12)
      v = kernel.T @ u
      v = v / (jnp.linalg.norm(v) + 1e-12)
    return x @ (kernel / (u @ kernel @ v)) + params['params']['bias']

  np.testing.assert_allclose(jax.jit(layer.apply)(params, x), jax.jit(unrolled)(kernel, x),
                             rtol=1e-6, atol=1e-7)
  sizes = [len(jax.make_jaxpr(SNDense(features=16, power_iters=n).apply)(params, x).eqns)
           for n in (1, 10, 50)]
  assert sizes[0] == sizes[1] == sizes[2] < 20, sizes
  with pytest.raises(ValueError, match='power_iters must be >= 1, got 0'):
    SNDense(features=16, power_iters=0).init(jax.random.key(6), x)


def test_energy_lipschitz_bound_is_the_output_scale():
  model = MLPEnergy(hidden=(32, 32), spectral_norm=True)
  x = jax.random.normal(jax.random.key(2), (64, 2))
  params = model.init(jax.random.key(3), x)
  params = jax.tree.map(lambda p: p, params)
  params['params']['scale'] = jnp.asarray(3.0)
  grads = jax.vmap(jax.grad(lambda v: model.apply(params, v[None])[0]))(x)
  # PReLU slopes start at 0.25 < 1, so |grad E| <= |scale| * 1 * 1 * 1.
  assert float(jnp.max(jnp.linalg.norm(grads, axis=-1))) <= 3.0 + 1e-4


def test_generator_shapes_and_batchnorm_modes():
  gen = MLPGenerator(latent_dim=3, data_shape=(4, 2), hidden=(16,), output_activation='tanh')
  z = jax.random.normal(jax.random.key(4), (8, 3))
  variables = gen.init(jax.random.key(5), z, train=False)
  x = gen.apply(variables, z, train=False)
  assert x.shape == (8, 4, 2) and float(jnp.max(jnp.abs(x))) <= 1.0
  # Inference mode is per-sample: one sample alone gives the same output as in a batch.
  np.testing.assert_allclose(gen.apply(variables, z[:1], train=False), x[:1], rtol=1e-6)
  _, updates = gen.apply(variables, z, train=True, mutable=['batch_stats'])
  assert not np.allclose(updates['batch_stats']['BatchNorm_0']['mean'],
                         variables['batch_stats']['BatchNorm_0']['mean'])


def test_gp_weight_schedules():
  np.testing.assert_allclose(gradient_penalty.gp_weight(10, 1e-3), 1e-3)
  w0 = float(gradient_penalty.gp_weight(0, 0.7, 'decay'))
  w_end = float(gradient_penalty.gp_weight(150_000, 0.7, 'decay'))
  np.testing.assert_allclose(w0, 0.7 * 2307**-0.55, rtol=1e-6)
  assert 9e-4 < w_end < 1.1e-3 and w0 > 5 * w_end
  # The configured weight scales the decaying schedule (a config override must take effect).
  np.testing.assert_allclose(gradient_penalty.gp_weight(500, 1.4, 'decay'),
                             2 * gradient_penalty.gp_weight(500, 0.7, 'decay'), rtol=1e-6)


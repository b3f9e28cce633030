"""Baseline energy penalties against closed forms."""
import jax
import jax.numpy as jnp
import numpy as np

from bibound_jax.bounds import baselines


def test_r1_is_mean_squared_input_gradient(x64):
  m = jnp.array([[2.0, 0.5], [0.5, 1.0]], jnp.float64)
  energy = lambda x: 0.5 * jnp.einsum('bi,ij,bj->b', x, m, x)
  x = jax.random.normal(jax.random.key(0), (16, 2), jnp.float64)
  expected = 3.0 * np.mean(np.sum((np.asarray(x) @ np.asarray(m)) ** 2, axis=1))
  np.testing.assert_allclose(baselines.r1_penalty(energy, x, 3.0), expected, rtol=1e-12)


def test_r1_gradient_wrt_energy_parameters(x64):
  x = jax.random.normal(jax.random.key(1), (8, 3), jnp.float64)
  w0 = jax.random.normal(jax.random.key(2), (3, 5), jnp.float64)
  loss = lambda w: baselines.r1_penalty(lambda xx: jnp.sum(jnp.tanh(xx @ w), -1), x, 1.0)
  g = jax.grad(loss)(w0)
  u = jax.random.normal(jax.random.key(3), w0.shape, jnp.float64)
  fd = (loss(w0 + 1e-6 * u) - loss(w0 - 1e-6 * u)) / 2e-6
  np.testing.assert_allclose(jnp.vdot(g, u), fd, rtol=1e-6)


def test_wgan_gp_zero_for_unit_lipschitz_linear_critic(x64):
  x_real = jax.random.normal(jax.random.key(4), (32, 4), jnp.float64)
  x_fake = jax.random.normal(jax.random.key(5), (32, 4), jnp.float64)
  w = jnp.array([0.6, 0.8, 0.0, 0.0], jnp.float64)
  pen = lambda scale: baselines.wgan_gp_penalty(lambda x: scale * x @ w, x_real, x_fake,
                                                jax.random.key(6), 10.0)
  np.testing.assert_allclose(pen(1.0), 0.0, atol=1e-10)
  np.testing.assert_allclose(pen(3.0), 10.0 * 4.0, rtol=1e-8)

"""GP upper-bound term: zero for the matched energy, closed form on average, energy-only grads."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bibound_jax.bounds import entropy
from bibound_jax.bounds import gradient_penalty as gp
from conftest import mlp_fn, mlp_params

d, D = 3, 12


def _linear_generator(key):
  ka, kb = jax.random.split(key)
  return {'a': jax.random.normal(ka, (D, d), jnp.float64), 'b': jax.random.normal(kb, (D,),
                                                                                  jnp.float64)}


def _linear_fn(p, z):
  return p['a'] @ z + p['b']


def _matched_energy(p):
  """E(x) = 1/2 ||A^+ (x - b)||^2 = -log p_g(x) + const on the manifold of G(z) = A z + b."""
  a_pinv = jnp.linalg.pinv(p['a'])
  return lambda x: 0.5 * jnp.sum(((x - p['b']) @ a_pinv.T) ** 2, axis=-1)


@pytest.mark.parametrize('use_vectors', [False, True])
def test_gp_vanishes_for_matched_energy_on_linear_generator(x64, use_vectors):
  p = _linear_generator(jax.random.key(0))
  z = jax.random.normal(jax.random.key(1), (64, d), jnp.float64)
  vectors = None
  if use_vectors:
    vectors = entropy.batched_log_volume(entropy.exact_smin, _linear_fn, p, z,
                                         jax.random.key(3)).vector
  # Expectation over many probes per latent: mean of 1/2 (a - s)^2 over 256 probe draws.
  def gp_for_probe(key):
    probes = jax.random.normal(key, z.shape, jnp.float64)
    return jnp.mean(gp.gp_fisher(_matched_energy(p), _linear_fn, p, z, probes, vectors)[0])
  values = jax.vmap(gp_for_probe)(jax.random.split(jax.random.key(2), 256))
  assert float(jnp.mean(values)) < 1e-16
  # A mismatched energy (scaled by 1.5) gives a clearly positive GP.
  wrong = lambda x: 1.5 * _matched_energy(p)(x)
  probes = jax.random.normal(jax.random.key(4), z.shape, jnp.float64)
  assert float(jnp.mean(gp.gp_fisher(wrong, _linear_fn, p, z, probes, vectors)[0])) > 1e-2


def _energy_params(key):
  k1, k2 = jax.random.split(key)
  return {'w': jax.random.normal(k1, (D, 16), jnp.float64) / 4,
          'v': jax.random.normal(k2, (16,), jnp.float64)}


def _energy(ep):
  return lambda x: jnp.tanh(x @ ep['w']) @ ep['v'] + 0.1 * jnp.sum(x**2, axis=-1)


def _dense_fisher(ep, gparams, z, exact):
  """1/2 ||grad_z E(G(z)) + grad_z log p_g(G(z))||^2 per sample from dense autodiff."""
  def neg_log_pg(zz, v):
    jac = jax.jacfwd(lambda u: mlp_fn(gparams, u))(zz)
    if exact:
      logvol = 0.5 * jnp.linalg.slogdet(jac.T @ jac)[1]
    else:
      logvol = d * jnp.log(jnp.linalg.norm(jac @ v))
    return 0.5 * jnp.sum(zz**2) + logvol
  def one(zz):
    jac = jax.jacfwd(lambda u: mlp_fn(gparams, u))(zz)
    v = jnp.linalg.svd(jac)[2][-1]
    ge = jax.grad(lambda u: _energy(ep)(mlp_fn(gparams, u)[None])[0])(zz)
    gl = jax.grad(neg_log_pg)(zz, v)
    return 0.5 * jnp.sum((ge - gl) ** 2)
  return jax.vmap(one)(z)


@pytest.mark.parametrize('exact', [True, False])
def test_gp_matches_closed_form_fisher(x64, exact):
  gparams = mlp_params(jax.random.key(5), d, D, hidden=16)
  ep = _energy_params(jax.random.key(6))
  z = jax.random.normal(jax.random.key(7), (8, d), jnp.float64)
  vectors = None if exact else entropy.batched_log_volume(
      entropy.exact_smin, mlp_fn, gparams, z, jax.random.key(0)).vector
  ref = _dense_fisher(ep, gparams, z, exact)
  # Probes sqrt(d) e_i for i = 1..d: the probe average of (c . v0)^2 is exactly ||c||^2.
  basis = np.sqrt(d) * np.eye(d)
  fisher = jax.jit(lambda probes: gp.gp_fisher(_energy(ep), mlp_fn, gparams, z, probes,
                                                vectors)[0])   # one compilation
  exact_avg = jnp.mean(jnp.stack([fisher(jnp.tile(basis[i], (8, 1))) for i in range(d)]),
                       axis=0)
  np.testing.assert_allclose(exact_avg, ref, rtol=1e-9)
  # Gaussian probes are unbiased: Monte Carlo average within a few standard errors.
  def one(key):
    probes = jax.random.normal(key, z.shape, jnp.float64)
    return gp.gp_fisher(_energy(ep), mlp_fn, gparams, z, probes, vectors)[0]
  draws = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(8), 4000))
  mc, se = jnp.mean(draws, axis=0), jnp.std(draws, axis=0) / np.sqrt(4000)
  assert np.all(np.abs(mc - ref) < 5 * se + 1e-12)


def test_gp_gradient_flows_only_into_the_energy(x64):
  gparams = mlp_params(jax.random.key(9), d, D, hidden=16)
  ep = _energy_params(jax.random.key(10))
  z = jax.random.normal(jax.random.key(11), (8, d), jnp.float64)
  probes = jax.random.normal(jax.random.key(12), z.shape, jnp.float64)
  loss = lambda e, g: jnp.mean(gp.gp_fisher(_energy(e), mlp_fn, g, z, probes, None)[0])
  ge, gg = jax.grad(loss, argnums=(0, 1))(ep, gparams)
  assert all(float(jnp.max(jnp.abs(x))) == 0.0 for x in jax.tree.leaves(gg))
  assert float(jnp.max(jnp.abs(ge['w']))) > 0.0
  # Energy gradient (double backprop) against central finite differences.
  u = jax.tree.map(lambda x: jnp.ones_like(x) / x.size, ep)
  eps = 1e-6
  f = lambda t: loss(jax.tree.map(lambda a, b: a + t * b, ep, u), gparams)
  fd = (f(eps) - f(-eps)) / (2 * eps)
  np.testing.assert_allclose(sum(jnp.vdot(ge[k], u[k]) for k in ep), fd, rtol=1e-6)


def test_upper_term_is_a_hinge():
  np.testing.assert_allclose(gp.gp_upper_term(jnp.asarray(500.0), 1e-3, 1.0), 0.0)
  np.testing.assert_allclose(gp.gp_upper_term(jnp.asarray(3000.0), 1e-3, 1.0), 2.0, rtol=1e-6)
  np.testing.assert_allclose(gp.gp_upper_term(jnp.asarray(2.0), 0.5, 0.0), 1.0)

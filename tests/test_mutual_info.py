"""MI entropy bounds on a linear-Gaussian generator x = A z + sigma eps, all in closed form:

    I(X; Z) = 1/2 log det(I + A^T A / sigma^2),  posterior z | x ~ N(M x, S),
    S = (I + A^T A / sigma^2)^-1,  M = S A^T / sigma^2,
    H[p_g] = 1/2 log det(2 pi e (A A^T + sigma^2 I)).
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bibound_jax.bounds import mutual_info as mi
from bibound_jax.models import mi as mi_models

d, D, SIGMA = 2, 4, 0.5
sg = jax.lax.stop_gradient


def _orthogonal_a(dtype=jnp.float32):
  """A = Q diag(1.0, 0.6) with orthonormal columns Q: the posterior covariance is diagonal."""
  q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(D, d)))
  return jnp.asarray(q * np.array([1.0, 0.6]), dtype)


def _general_a(dtype=jnp.float32):
  """A with correlated columns: the best diagonal encoder falls 0.13 nats short of I."""
  return jnp.asarray(0.6 * np.random.default_rng(5).normal(size=(D, d)), dtype)


def true_mi(a, sigma=SIGMA):
  a = np.asarray(a, np.float64)
  return 0.5 * np.linalg.slogdet(np.eye(d) + a.T @ a / sigma**2)[1]


def posterior(a, sigma=SIGMA):
  cov = jnp.linalg.inv(jnp.eye(d, dtype=a.dtype) + a.T @ a / sigma**2)
  return cov @ a.T / sigma**2, cov


def sample(seed, a, shape, sigma=SIGMA):
  """Joint draws (x, z) of shape (*shape, D), (*shape, d); numpy RNG (no compile per shape)."""
  rng = np.random.default_rng(seed)
  shape = tuple(np.atleast_1d(shape))
  z = rng.standard_normal(shape + (d,))
  x = z @ np.asarray(a, np.float64).T + sigma * rng.standard_normal(shape + (D,))
  return jnp.asarray(x, a.dtype), jnp.asarray(z, a.dtype)


@functools.cache
def _apply(module):
  """One apply function per module (modules hash by their fields), so jit caches hit."""
  return lambda p, *args: module.apply({'params': p}, *args)


def _init(module, kind, key, k=8):
  x, z = jnp.zeros((k, D)), jnp.zeros((k, d))
  return module.init(key, x) if kind == 'ba' else module.init(key, x, z)


@functools.cache
def _trainer(kind, module, lr):
  """jit(key, data) -> params: Adam on -MI over a scan of pre-drawn batches."""
  tx = optax.adam(lr)
  apply = _apply(module)

  def step(carry, data):
    p, opt = carry
    grads = jax.grad(lambda pp: -mi.mi_losses(kind, apply, pp, *data)[0])(p)
    updates, opt = tx.update(grads, opt, p)
    return (optax.apply_updates(p, updates), opt), None

  @jax.jit
  def run(key, data):
    params = _init(module, kind, key)['params']
    return jax.lax.scan(step, (params, tx.init(params)), data)[0][0]
  return run


def train_mi(kind, module, a, seed, steps=400, batch=128, lr=1e-2):
  """Maximise the MI estimate over the network's parameters; fresh samples every step."""
  return _trainer(kind, module, lr)(jax.random.key(seed), sample(seed, a, (steps, batch)))


def estimates(kind, apply, params, x, z):
  """The estimate on each batch of x (batches, k, D), z (batches, k, d) (traceable)."""
  fn = mi.get_mi_fn(kind)
  return jax.vmap(lambda xx, zz: fn(apply, params, xx, zz)[0])(x, z)


_estimates = jax.jit(estimates, static_argnums=(0, 1))


def evaluate(kind, apply, params, a, seed, k=128, batches=64):
  """Mean and standard error of the estimate over independent batches of size k."""
  values = _estimates(kind, apply, params, *sample(seed, a, (batches, k)))
  return float(jnp.mean(values)), float(jnp.std(values) / math.sqrt(batches))


def test_conditional_entropy_and_entropy_lower_bound(x64):
  a = _general_a(jnp.float64)
  i_true = true_mi(a)
  # H[X|Z] = D/2 log(2 pi e sigma^2), and the true I plus it is the exact Gaussian entropy.
  np.testing.assert_allclose(mi.conditional_entropy(D, SIGMA),
                             0.5 * D * math.log(2 * math.pi * math.e * SIGMA**2), rtol=1e-14)
  np.testing.assert_allclose(mi.entropy_lower_bound(1.25, D, SIGMA) - 1.25,
                             mi.conditional_entropy(D, SIGMA), rtol=1e-14)
  cov_x = np.asarray(a) @ np.asarray(a).T + SIGMA**2 * np.eye(D)
  h_true = 0.5 * np.linalg.slogdet(2 * math.pi * math.e * cov_x)[1]
  np.testing.assert_allclose(mi.entropy_lower_bound(i_true, D, SIGMA), h_true, rtol=1e-12)
  # Differentiable in sigma: d/dsigma H[X|Z] = D / sigma.
  np.testing.assert_allclose(jax.grad(lambda s: mi.conditional_entropy(D, s))(SIGMA), D / SIGMA)


def test_noisy_generator_output_noise_floor_and_init():
  from bibound_jax.models.noisy import NoisyGenerator, log_sigma_init
  from bibound_jax.models.toy import MLPGenerator
  gen = NoisyGenerator(base=MLPGenerator(hidden=(4,)), sigma_init=0.3, sigma_floor=0.01)
  variables = gen.init(jax.random.key(0), jnp.zeros((2, 2)), train=False)
  np.testing.assert_allclose(gen.apply(variables, method='output_noise_std'), 0.3, rtol=1e-6)
  low = {**variables, 'params': {**variables['params'], 'log_sigma': jnp.asarray(-100.0)}}
  assert float(gen.apply(low, method='output_noise_std')) == pytest.approx(0.01, rel=1e-6)
  # __call__ is the noise-free base generator.
  z = jnp.ones((2, 2))
  np.testing.assert_array_equal(gen.apply(variables, z, train=False), MLPGenerator(
      hidden=(4,)).apply({'params': variables['params']['base'],
                          'batch_stats': variables['batch_stats']['base']}, z, train=False))
  with pytest.raises(ValueError):
    log_sigma_init(0.01, floor=0.05)


def test_ba_with_the_true_posterior_equals_true_mi(x64):
  a = _orthogonal_a(jnp.float64)
  m, cov = posterior(a)
  assert np.allclose(cov, jnp.diag(jnp.diagonal(cov)), atol=1e-12)   # diagonal: q can be exact
  logstd = 0.5 * jnp.log(jnp.diagonal(cov))
  encoder = lambda p, x: (x @ p['m'].T, jnp.broadcast_to(p['logstd'], (x.shape[0], d)))
  x, z = sample(2, a, 200_000)
  value, per_sample = mi.ba_bound(encoder, {'m': m, 'logstd': logstd}, x, z)
  se = float(jnp.std(per_sample)) / math.sqrt(per_sample.shape[0])
  assert abs(float(value) - true_mi(a)) < 4 * se, (float(value), true_mi(a), se)
  # Any other encoder is worse: an over-confident posterior and a posterior-free prior.
  worse = mi.ba_bound(encoder, {'m': m, 'logstd': logstd - 0.5}, x, z)[0]
  prior = mi.ba_bound(encoder, {'m': 0 * m, 'logstd': 0 * logstd}, x, z)[0]
  assert float(worse) < true_mi(a) - 0.1
  np.testing.assert_allclose(prior, 0.0, atol=5 * se)     # q = p(z): H(Z) + E log p(z) = 0


@pytest.mark.parametrize('kind,module', [
    ('ba', mi_models.GaussianEncoder(latent_dim=d, hidden=(32,))),
    ('infonce', mi_models.SeparableCritic(hidden=(32,), embed_dim=8)),
    ('infonce', mi_models.ConcatCritic(hidden=(32,))),
])
def test_bounds_are_below_true_mi_at_init(kind, module):
  a = _general_a()
  apply = _apply(module)

  x, z = sample(10, a, (16, 128))

  @jax.jit
  @jax.vmap
  def at_init(key):     # three random initialisations, 16 batches each
    return estimates(kind, apply, _init(module, kind, key)['params'], x, z)

  values = at_init(jax.random.split(jax.random.key(10), 3))
  means, ses = jnp.mean(values, 1), jnp.std(values, 1) / 4.0
  assert bool(jnp.all(means + 3 * ses < true_mi(a))), (means, ses)


@pytest.mark.parametrize('a_name', ['orthogonal', 'general'])
def test_trained_linear_encoder_ba_reaches_the_true_mi(a_name):
  """Orthogonal A: the diagonal Gaussian encoder can be exact, so BA -> I (within 5%). General A:
  the best diagonal encoder reaches -1/2 sum log S_ii <= I = -1/2 log det S (Hadamard)."""
  a = _orthogonal_a() if a_name == 'orthogonal' else _general_a()
  i_true = true_mi(a)
  module = mi_models.GaussianEncoder(latent_dim=d, hidden=())
  params = train_mi('ba', module, a, 3, steps=500, batch=256, lr=2e-2)
  value, se = evaluate('ba', _apply(module), params, a, 4, k=4096, batches=16)
  assert value < i_true + 3 * se, (value, se, i_true)   # still a bound after training
  an = np.asarray(a, np.float64)
  cov = np.linalg.inv(np.eye(d) + an.T @ an / SIGMA**2)
  best_diag = -0.5 * float(np.sum(np.log(np.diagonal(cov))))
  assert best_diag <= i_true + 1e-9
  if a_name == 'general':
    assert value < best_diag + 3 * se < i_true - 0.1, (value, se, best_diag, i_true)
  assert value > 0.95 * best_diag, (value, best_diag, i_true)
  if a_name == 'orthogonal':
    assert value > 0.95 * i_true, (value, i_true)


def test_trained_infonce_stays_below_true_mi_and_log_k():
  a = _orthogonal_a()
  k = 128
  module = mi_models.SeparableCritic(hidden=(64,), embed_dim=16)
  params = train_mi('infonce', module, a, 5, steps=400, batch=k, lr=3e-3)
  value, se = evaluate('infonce', _apply(module), params, a, 6, k=k, batches=64)
  assert value < true_mi(a), (value, se, true_mi(a))
  assert value > 0.7 * true_mi(a), (value, true_mi(a))   # it did learn
  assert value < math.log(k)


def test_infonce_never_exceeds_log_k_even_for_cheating_critics():
  # Nearly noise-free generator (I ~ 14 nats >> log K): log p(x | z) identifies every pair and
  # any multiple of it, however large, still stops at log K.
  a, sigma = _orthogonal_a(), 1e-3
  cheat = lambda p, xx, zz: -p * jnp.sum((xx[:, None] - (zz @ a.T)[None]) ** 2, -1) / (2 * sigma**2)
  assert true_mi(a, sigma) > math.log(128) + 5

  @jax.jit
  def run(x, z, scores):
    return (mi.infonce_bound(cheat, 1.0, x, z), mi.infonce_bound(cheat, 1e4, x, z),
            mi.infonce_bound(lambda p, xx, zz: p * scores, 1e8, x, z))

  for k in (2, 128):
    log_k = np.float32(math.log(k))    # the ceiling as the estimator's dtype rounds it
    scores = jnp.asarray(np.random.default_rng(k).standard_normal((k, k)), jnp.float32)
    exact, huge, noise = run(*sample(7, a, k, sigma), scores)
    np.testing.assert_allclose(exact[0], math.log(k), rtol=1e-6)
    assert bool(jnp.all(huge[1] <= log_k)), huge[1]
    np.testing.assert_allclose(huge[0], math.log(k), atol=0.01)   # float32 rounding at |T| ~ 1e4
    # Random huge scores: still never above log K (and finite).
    assert bool(jnp.all(noise[1] <= log_k)) and np.isfinite(float(noise[0]))


def test_optimal_infonce_critic_is_below_true_mi(x64):
  a = _orthogonal_a(jnp.float64)
  log_lik = lambda p, xx, zz: -jnp.sum((xx[:, None] - (zz @ a.T)[None]) ** 2, -1) / (2 * SIGMA**2)
  value, se = evaluate('infonce', log_lik, None, a, 9, k=256, batches=64)
  assert value < true_mi(a) and value > true_mi(a) - 0.1, (value, se, true_mi(a))


def test_jsd_is_bounded_by_zero_not_by_mi():
  a = _orthogonal_a()
  x, z = sample(10, a, 64)
  cheat = lambda p, xx, zz: p * (3.0 - jnp.sum((xx[:, None] - (zz @ a.T)[None]) ** 2, -1))
  for scale in (1e-3, 1.0, 1e3):
    value, per_sample = mi.jsd_estimator(cheat, scale, x, z)
    assert float(value) <= 0.0 and per_sample.shape == (64,)
  # At the density-ratio-like critic it is far from I (it estimates 2 JSD - 2 log 2).
  assert float(mi.jsd_estimator(cheat, 1.0, x, z)[0]) < 0.0 < true_mi(a)


@pytest.mark.parametrize('kind', mi.MI_KINDS)
def test_mi_losses_gradients_for_critic_and_generator(kind):
  module = mi_models.create_mi_model(kind, d, hidden=(16,), embed_dim=8)
  apply = _apply(module)
  g_params = {'a': _general_a(), 'log_sigma': jnp.asarray(math.log(SIGMA))}
  _, z = sample(12, g_params['a'], 32)

  sigma_of = lambda g: 0.01 + jnp.exp(g['log_sigma'])

  def x_noisy(g):
    return mi.add_output_noise(z @ g['a'].T, sigma_of(g), jax.random.key(12))

  critic_loss = lambda c, g: -mi.mi_losses(kind, apply, c, sg(x_noisy(g)), z)[0]

  def gen_loss(c, g):
    value, aux = mi.mi_losses(kind, apply, sg(c), x_noisy(g), z)
    return -mi.entropy_lower_bound(value, D, sigma_of(g)), aux

  @jax.jit
  def run(key):
    c_params = _init(module, kind, key)['params']
    return (jax.grad(critic_loss, argnums=(0, 1))(c_params, g_params),
            jax.value_and_grad(gen_loss, argnums=(0, 1), has_aux=True)(c_params, g_params))

  (cg, gg), ((loss, aux), (cg2, gg2)) = run(jax.random.key(11))
  # critic step: gradients reach the critic only
  assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves(cg))
  assert any(float(jnp.max(jnp.abs(v))) > 0 for v in jax.tree.leaves(cg))
  assert all(float(jnp.max(jnp.abs(v))) == 0 for v in jax.tree.leaves(gg))
  # generator step: gradients reach G (and the learned sigma) only
  assert all(float(jnp.max(jnp.abs(v))) == 0 for v in jax.tree.leaves(cg2))
  assert float(jnp.max(jnp.abs(gg2['a']))) > 0 and float(jnp.abs(gg2['log_sigma'])) > 0
  assert np.isfinite(float(loss)) and set(aux) >= {'mi'}
  if kind == 'infonce':
    np.testing.assert_allclose(aux['mi/log_k'], math.log(32), rtol=1e-6)


def test_mi_models_shapes_and_pairing():
  key = jax.random.key(13)
  rng = np.random.default_rng(13)
  x = jnp.asarray(rng.standard_normal((5, 4, 4, 1)), jnp.float32)   # images are flattened
  z = jnp.asarray(rng.standard_normal((5, 3)), jnp.float32)
  enc = mi_models.GaussianEncoder(latent_dim=3, hidden=(8,), min_logstd=-2.0)
  mu, logstd = jax.jit(lambda k: enc.apply(enc.init(k, x), x))(key)
  assert mu.shape == logstd.shape == (5, 3) and bool(jnp.all(logstd >= -2.0))
  for critic in (mi_models.SeparableCritic(hidden=(8,), embed_dim=4),
                 mi_models.ConcatCritic(hidden=(8,))):
    @jax.jit
    def run(k):
      p = critic.init(k, x, z)
      return critic.apply(p, x, z), critic.apply(p, x[1:2], z[3:4])
    scores, one = run(key)
    assert scores.shape == (5, 5)
    # scores[i, j] = T(x_i, z_j): the (1, 3) entry equals the pair scored on its own.
    np.testing.assert_allclose(scores[1, 3], one[0, 0], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match='valid'):
    mi_models.create_mi_model('mine', 3)
  with pytest.raises(ValueError, match='valid'):
    mi.get_mi_fn('mine')

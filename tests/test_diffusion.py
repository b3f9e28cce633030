"""Diffusion upper bound: VP SDE closed forms, the DSM minimiser on Gaussian data, unbiased
importance sampling of t, energy-only gradients and the time-conditioned energy.

For data N(m, s^2 I) diffused by the VP SDE, x_t ~ N(alpha_t m, v_t I) with
v_t = alpha_t^2 s^2 + sigma_t^2, so the true energy at time t is E(x, t) = 1/2 ||x - a||^2 / b with
(a, b) = (alpha_t m, v_t), and grad_x E = -score: DSM must be minimised exactly there.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from scipy import integrate

from bibound_jax.bounds import diffusion as diff
from bibound_jax.models.time_energy import TimeEmbedding, TimeMLPEnergy, sinusoidal_embedding

SDE = diff.VPSDE(beta_min=0.1, beta_max=20.0)
M = np.array([1.0, -0.5])
S = 0.7
sg = jax.lax.stop_gradient


def gaussian_data(seed, n, dtype=jnp.float64):
  return jnp.asarray(M + S * np.random.default_rng(seed).standard_normal((n, M.size)), dtype)


def test_vp_sde_matches_numerical_integration(x64):
  for sde in (SDE, diff.VPSDE(0.5, 3.0, T=2.0), diff.VPSDE(1.0, 1.0)):
    ts = np.linspace(0.0, sde.T, 9)
    quad = np.array([integrate.quad(lambda s: float(sde.beta(s)), 0.0, t)[0] for t in ts])
    t = jnp.asarray(ts)
    np.testing.assert_allclose(sde.int_beta(t), quad, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(sde.alpha(t), np.exp(-0.5 * quad), rtol=1e-12)
    np.testing.assert_allclose(sde.sigma(t) ** 2 + sde.alpha(t) ** 2, 1.0, rtol=1e-12)
    np.testing.assert_allclose(sde.sigma(t), np.sqrt(-np.expm1(-quad)), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(sde.g2(t), sde.beta(t))
    np.testing.assert_allclose(sde.int_beta_inverse(sde.int_beta(t)), ts, rtol=1e-12, atol=1e-14)
  # endpoints of the linear schedule
  np.testing.assert_allclose([SDE.beta(0.0), SDE.beta(1.0)], [0.1, 20.0])


def test_marginal_moments_by_monte_carlo(x64):
  n, t = 200_000, 0.3
  x0 = jnp.asarray([[1.5, -2.0, 0.25]])
  eps = jnp.asarray(np.random.default_rng(0).standard_normal((n, 3)))
  xt = SDE.marginal(jnp.broadcast_to(x0, (n, 3)), jnp.full((n,), t), eps)
  alpha, sigma = float(SDE.alpha(t)), float(SDE.sigma(t))
  np.testing.assert_allclose(jnp.mean(xt, 0), alpha * x0[0], atol=4 * sigma / math.sqrt(n))
  np.testing.assert_allclose(jnp.var(xt, 0), sigma**2, rtol=4 * math.sqrt(2 / n))
  # per-sample t broadcasts over image-shaped x0
  img = jnp.ones((2, 3, 3, 1))
  out = SDE.marginal(img, jnp.asarray([0.0, 1.0]), jnp.zeros_like(img))
  np.testing.assert_allclose(out[:, 0, 0, 0], [1.0, float(SDE.alpha(1.0))], rtol=1e-12)


def _quadratic_energy(c):
  """E(x, t) = 1/2 c1 ||x||^2 - c0 . x: the family 1/2 ||x - a||^2 / b up to a constant."""
  return lambda x, t: 0.5 * c[0] * jnp.sum(x * x, -1) - x @ c[1:]


def _gaussian_energy(ab):
  return lambda x, t: 0.5 * jnp.sum((x - ab['a']) ** 2, -1) / ab['b']


@jax.jit
def _newton_fit(x0, ts, eps):
  """Minimiser of the empirical DSM over c = (1/b, a/b): the loss is quadratic in c, so one
  Newton step from 0 lands on it."""
  loss = lambda c: jnp.mean(diff.dsm_at(_quadratic_energy(c), x0, ts, eps, SDE))
  c0 = jnp.zeros(3, x0.dtype)
  return c0 - jnp.linalg.solve(jax.hessian(loss)(c0), jax.grad(loss)(c0))


@jax.jit
def _dsm_ab(ab, x0, ts, eps):
  return jnp.mean(diff.dsm_at(_gaussian_energy(ab), x0, ts, eps, SDE))


@jax.jit
def _newton_step_ab(ab, x0, ts, eps):
  """H^-1 grad of the DSM in the (a, b) form: how far its minimiser is from ab."""
  flat, unravel = ravel_pytree(ab)
  loss = lambda f: _dsm_ab(unravel(f), x0, ts, eps)
  return unravel(jnp.linalg.solve(jax.hessian(loss)(flat), jax.grad(loss)(flat)))


@pytest.mark.parametrize('t', [0.05, 0.3, 0.9])
def test_dsm_minimiser_is_the_true_gaussian_energy(x64, t):
  n = 50_000
  x0 = gaussian_data(1, n)
  eps = jnp.asarray(np.random.default_rng(2).standard_normal((n, 2)))
  ts = jnp.full((n,), t)
  a_true = float(SDE.alpha(t)) * M
  b_true = float(SDE.alpha(t)) ** 2 * S**2 + float(SDE.sigma(t)) ** 2

  c = _newton_fit(x0, ts, eps)
  b_fit, a_fit = 1.0 / float(c[0]), np.asarray(c[1:]) / float(c[0])
  np.testing.assert_allclose(b_fit, b_true, rtol=2e-2)
  np.testing.assert_allclose(a_fit, a_true, atol=2e-2 * math.sqrt(b_true))

  # In the (a, b) form: the gradient at the truth is ~0, i.e. the Newton step it implies is
  # within Monte Carlo error, and every perturbation (including the sign-flipped energy, the
  # score with the wrong sign) has a larger loss.
  truth = {'a': jnp.asarray(a_true), 'b': jnp.asarray(b_true)}
  step = _newton_step_ab(truth, x0, ts, eps)
  assert float(jnp.max(jnp.abs(step['a']))) < 2e-2 * math.sqrt(b_true)
  assert abs(float(step['b'])) < 2e-2 * b_true
  best = float(_dsm_ab(truth, x0, ts, eps))
  for da, fb in ((0.1, 1.0), (-0.1, 1.0), (0.0, 1.1), (0.0, 0.9), (0.0, -1.0)):
    other = {'a': truth['a'] + da, 'b': truth['b'] * fb}
    assert float(_dsm_ab(other, x0, ts, eps)) > best


def test_importance_density_and_sampler(x64):
  t_min = 1e-3
  total = integrate.quad(lambda s: float(diff.importance_density(SDE, s, t_min)), t_min, 1.0,
                         points=[0.01, 0.1], limit=200)[0]
  np.testing.assert_allclose(total, 1.0, rtol=1e-8)
  t = diff.sample_importance_time(jax.random.key(0), (200_000,), SDE, t_min, jnp.float64)
  assert float(jnp.min(t)) >= t_min and float(jnp.max(t)) <= 1.0
  mean = integrate.quad(lambda s: s * float(diff.importance_density(SDE, s, t_min)), t_min, 1.0,
                        points=[0.01, 0.1], limit=200)[0]
  np.testing.assert_allclose(jnp.mean(t), mean, atol=4 * float(jnp.std(t)) / math.sqrt(t.size))


def _test_energy(x, t):
  """A non-Gaussian, time-dependent energy with no special relation to the data."""
  return 0.5 * jnp.sum((x - 0.3) ** 2, -1) / (0.5 + t) + 0.2 * jnp.sum(jnp.sin(2.0 * x), -1)


@pytest.mark.parametrize('likelihood_weighting', [True, False])
def test_importance_sampling_is_unbiased(x64, likelihood_weighting):
  n = 200_000
  x0 = gaussian_data(3, n)

  @jax.jit
  def draws(key):
    return [diff.dsm_per_sample(_test_energy, x0, k, SDE, 1e-3, likelihood_weighting, is_)
            for k, is_ in zip(jax.random.split(key, 2), (False, True))]

  (uniform, _), (importance, t_is) = draws(jax.random.key(4))
  mu = float(jnp.mean(uniform))
  se = math.sqrt(float(jnp.var(uniform) + jnp.var(importance)) / n)
  assert abs(mu - float(jnp.mean(importance))) < 4 * se, (mu, float(jnp.mean(importance)), se)
  if likelihood_weighting:   # the point of the proposal: far lower variance
    assert float(jnp.std(importance)) < 0.5 * float(jnp.std(uniform))
  # The draws follow the proposal's exact CDF, F(t) = log(exp(int beta) - 1) normalised.
  f = lambda t: float(diff._is_antiderivative(SDE, t))
  p_half = (f(1.0) - f(0.5)) / (f(1.0) - f(1e-3))
  assert abs(float(jnp.mean(t_is > 0.5)) - p_half) < 4 * math.sqrt(0.25 / n)
  np.testing.assert_allclose(
      diff.dsm_loss(_test_energy, x0[:64], jax.random.key(5), SDE, 1e-3, likelihood_weighting),
      jnp.mean(diff.dsm_per_sample(_test_energy, x0[:64], jax.random.key(5), SDE, 1e-3,
                                   likelihood_weighting)[0]))


_init_time_mlp = jax.jit(TimeMLPEnergy().init)   # shared: one compile for both tests


def test_gradient_flows_only_to_the_energy():
  model = TimeMLPEnergy()
  rng = np.random.default_rng(6)
  z = jnp.asarray(rng.standard_normal((32, 2)), jnp.float32)
  gen = {'w': jnp.asarray(rng.standard_normal((2, 2)), jnp.float32)}
  e_params = _init_time_mlp(jax.random.key(0), jnp.zeros((1, 2)))['params']

  def loss(ep, gp):
    energy_t = lambda x, t: model.apply({'params': ep}, x, t)
    dsm = diff.dsm_loss(energy_t, z @ gp['w'], jax.random.key(1), SDE,
                        importance_sampling=True)
    return diff.diffusion_upper_term(dsm, 0.5)

  value, (ge, gg) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(e_params, gen)
  assert np.isfinite(float(value)) and float(value) > 0
  assert float(jnp.max(jnp.abs(gg['w']))) == 0.0
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(ge))
  # Every weight matrix learns, the time embedding included (FiLM: time acts on grad_x E).
  kernels = [g for path, g in jax.tree_util.tree_leaves_with_path(ge)
             if 'kernel' in jax.tree_util.keystr(path)]
  assert len(kernels) == 2 + 2 + 2 + 1   # embedding, FiLM, hidden, output
  assert all(float(jnp.max(jnp.abs(g))) > 0 for g in kernels)


def test_sinusoidal_embedding():
  t = jnp.asarray([0.0, 0.25, 1.0])
  emb = sinusoidal_embedding(t, 8)
  assert emb.shape == (3, 8)
  np.testing.assert_allclose(emb[0], [0, 0, 0, 0, 1, 1, 1, 1])
  freqs = np.exp(-math.log(10000.0) * np.arange(4) / 4)
  np.testing.assert_allclose(emb[1, :4], np.sin(250.0 * freqs), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(emb[1, 4:], np.cos(250.0 * freqs), rtol=1e-5, atol=1e-5)
  odd = sinusoidal_embedding(t, 7)
  assert odd.shape == (3, 7) and bool(jnp.all(odd[:, -1] == 0))
  np.testing.assert_allclose(sinusoidal_embedding(t, 8, scale=1.0)[2, 0], math.sin(1.0),
                             rtol=1e-6)


def test_time_mlp_energy_at_t0_is_the_ebm():
  model = TimeMLPEnergy()
  x = jnp.asarray(np.random.default_rng(7).standard_normal((6, 2)), jnp.float32)
  variables = _init_time_mlp(jax.random.key(0), jnp.zeros((1, 2)))   # init without t

  @jax.jit
  def run(variables):
    return (model.apply(variables, x), model.apply(variables, x, 0.0),
            model.apply(variables, x, jnp.zeros(6)), model.apply(variables, x, jnp.full(6, 0.5)))

  e_none, e_zero, e_zeros, e_half = run(variables)
  assert e_none.shape == (6,)
  np.testing.assert_array_equal(e_none, e_zero)
  np.testing.assert_array_equal(e_none, e_zeros)
  assert float(jnp.max(jnp.abs(e_half - e_none))) > 1e-4
  params = variables['params']
  assert params['scale'].shape == () and float(params['scale']) == 1.0
  assert [params[f'Dense_{i}']['kernel'].shape for i in range(5)] == [
      (64, 200), (2, 100), (64, 200), (100, 100), (100, 1)]
  emb = TimeEmbedding(features=16, freq_dim=8)
  out = emb.apply(jax.jit(emb.init)(jax.random.key(1), jnp.zeros(3)), jnp.zeros(3))
  assert out.shape == (3, 16)


def test_spectrally_normalised_time_mlp_bounds_its_slope_at_every_t():
  """With spectral_norm (the toy energies' setting) ||grad_x E(., t)|| <= |scale| 2^L at every
  t however large the weights grow (L = 2 hidden layers, PReLU slopes <= 1). Without it the
  toy mi+diff energy grew its weights until E(fake) - E(real) reached 1e13."""
  x = jnp.asarray(np.random.default_rng(8).standard_normal((256, 2)), jnp.float32) * 2.0
  bounded = TimeMLPEnergy(spectral_norm=True)
  params = jax.jit(bounded.init)(jax.random.key(0), x[:1])['params']
  inflate = lambda p: jax.tree_util.tree_map_with_path(
      lambda path, a: 30.0 * a if 'kernel' in jax.tree_util.keystr(path) else a, p)

  @jax.jit
  def max_slope(params, t):
    grads = jax.grad(lambda xx: jnp.sum(bounded.apply({'params': params}, xx, t)))(x)
    return jnp.max(jnp.linalg.norm(grads, axis=-1))

  for t in (0.0, 1e-3, 0.3, 1.0):
    assert float(max_slope(inflate(params), t)) <= 4.0 * 1.02
  free = TimeMLPEnergy()
  free_params = inflate(_init_time_mlp(jax.random.key(0), x[:1])['params'])
  grads = jax.grad(lambda xx: jnp.sum(free.apply({'params': free_params}, xx)))(x)
  assert float(jnp.max(jnp.linalg.norm(grads, axis=-1))) > 100.0


def test_toy_time_energy_keeps_the_toy_spectral_norm():
  from bibound_jax import assemble
  from configs import toy
  cfg = toy.get_config('authors,mi+diff')
  energy = assemble.networks(cfg).energy
  assert isinstance(energy, TimeMLPEnergy) and energy.spectral_norm
  # Smooth in t (E(., 0) tied to E(., t_min), which DSM sees), the bound's own weight and the
  # energy penalty that stops the toy's run-away (docs/studies/toy_mi_diff.md, rows 13-14).
  assert energy.time_scale == 1.0 and cfg.bounds.diff.weight == 1.0
  assert cfg.bounds.diff.energy_l2 == 0.1
  emb = lambda t: sinusoidal_embedding(jnp.asarray([t]), 32, energy.time_scale)
  assert float(jnp.max(jnp.abs(emb(0.0) - emb(cfg.bounds.diff.t_min)))) < 2e-3


def test_energy_l2_adds_the_penalty_on_the_energy_values_to_the_term():
  """bounds.diff.energy_l2 = a: the bound's penalty is a (mean E(x_data)^2 + mean
  E(x_fake)^2), whose gradient reaches the energy's parameters; a = 0 gives none."""
  from bibound_jax.bounds import base
  from configs import toy
  cfg = toy.get_config('authors,mi+diff')
  x_data = jax.random.normal(jax.random.key(0), (16, 2))
  x_fake = jax.random.normal(jax.random.key(1), (16, 2)) + 1.0

  def term(scale, a):
    cfg.bounds.diff.energy_l2 = a
    energy_t = lambda x, t: scale * _test_energy(x, t)
    inputs = base.EnergyInputs(energy_fn=lambda x: energy_t(x, jnp.zeros(x.shape[:1])),
                               energy_t_fn=energy_t, x_data=x_data, x_fake=x_fake,
                               z=x_fake, key=jax.random.key(2), step=jnp.zeros((), jnp.int32),
                               generator=None)
    bound = diff.DiffusionBound(cfg)
    value, metrics, _ = bound.term(inputs)
    penalty = bound.penalty(inputs.energy_fn(x_data), inputs.energy_fn(x_fake))
    if penalty is not None:
      metrics = dict(metrics, energy_l2=penalty)
      value = value + penalty
    return value, metrics

  plain, metrics = term(1.5, 0.0)
  assert 'energy_l2' not in metrics
  value, metrics = term(1.5, 0.3)
  e = lambda x: 1.5 * _test_energy(x, 0.0)
  expected = 0.3 * (jnp.mean(e(x_data) ** 2) + jnp.mean(e(x_fake) ** 2))
  np.testing.assert_allclose(value - plain, expected, rtol=1e-5)
  np.testing.assert_allclose(metrics['energy_l2'], expected, rtol=1e-6)
  # d/d scale of a (mean (s E0)^2 + ...) = 2 a s (mean E0^2 + ...): the penalty's gradient.
  grad = jax.grad(lambda s: term(s, 0.3)[0] - term(s, 0.0)[0])(1.5)
  np.testing.assert_allclose(grad, 2 * expected / 1.5, rtol=1e-4)


def test_confinement_at_every_time():
  """The confinement is part of E(., t) at every t: zero inside the radius, 5 (|x| - 1)^2
  outside."""
  from bibound_jax.models.toy import confinement
  confined = TimeMLPEnergy(confine=5.0, confine_radius=1.0)
  free = TimeMLPEnergy()
  params = _init_time_mlp(jax.random.key(3), jnp.zeros((1, 2)))   # same parameter tree
  x = jnp.asarray([[0.2, -0.3], [1.5, 0.5], [-2.0, 2.0]])
  c = confinement(x, 5.0, 1.0)
  assert float(c[0]) == 0.0 and float(jnp.min(c[1:])) > 1.0   # inside, outside the radius
  both = jax.jit(lambda x, t: (confined.apply(params, x, t), free.apply(params, x, t)))
  for t in (jnp.zeros(3), jnp.full(3, 0.4)):
    e_confined, e_free = both(x, t)
    np.testing.assert_allclose(e_confined - e_free, c, rtol=1e-5, atol=1e-5)

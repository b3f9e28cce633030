"""The jit train step: one compile, finite metrics, bound selection, clear shape errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bibound_jax import config_lib
from bibound_jax import models
from bibound_jax import sharding
from bibound_jax import train
from bibound_jax.bounds import entropy
from configs import toy


def _setup(arg=None, **bounds):
  cfg = toy.get_config(arg)
  cfg.train.batch_size = 32
  cfg.bounds.update(bounds)
  energy, gen = models.create_models(cfg.model, cfg.data.shape)
  state = train.create_state(cfg, energy, gen, jax.random.key(0), cfg.data.shape)
  # As the run loop does: the state lives replicated on the device mesh.
  return cfg, sharding.replicate(state, sharding.make_mesh())


def _batch(cfg, seed=0):
  return jax.random.normal(jax.random.key(seed), (cfg.optim.n_critic, cfg.train.batch_size, 2))


def test_step_compiles_once_and_metrics_are_finite():
  cfg, state = _setup('sv+gp', estimator='lobpcg')
  step = train.make_train_step(cfg)
  for i in range(5):
    state, metrics = step(state, _batch(cfg, i), jax.random.key(1))
  assert step._cache_size() == 1
  assert int(state.step) == 5
  for name in ('energy_real', 'energy_fake', 'entropy', 'upper_term', 'gap', 'lower_bound',
               'upper_bound', 'loss_energy', 'loss_generator', 'grad_norm_energy',
               'grad_norm_generator', 'gp', 'sv/smin', 'sv/residual'):
    assert np.isfinite(float(metrics[name])), name


def test_several_iterations_per_call_match_single_steps():
  """make_train_steps runs the same updates as one call per iteration, compiled once."""
  cfg, state = _setup('sv+gp')
  batches = tuple(_batch(cfg, i) for i in range(3))
  key = jax.random.key(1)
  single = train.make_train_step(cfg, donate=False)
  one_by_one, history = state, []
  for batch in batches:
    one_by_one, metrics = single(one_by_one, batch, key)
    history.append(metrics)
  multi = train.make_train_steps(cfg, 3, donate=False)
  together, stacked = multi(state, batches, key)
  assert int(together.step) == 3 and stacked['loss_energy'].shape == (3,)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               (one_by_one.energy.params, one_by_one.generator.params),
               (together.energy.params, together.generator.params))
  for i, metrics in enumerate(history):
    for name, value in metrics.items():
      np.testing.assert_allclose(stacked[name][i], value, rtol=1e-6, atol=1e-7, err_msg=name)
  multi(together, batches, key)
  assert multi._cache_size() == 1
  with pytest.raises(ValueError, match='steps_per_call'):
    train.make_train_steps(cfg, 0)


@pytest.mark.parametrize('preset,estimator', [
    ('sv+gp', 'exact_logdet'), ('sv+gp', 'exact_smin'), ('sv+gp', 'lobpcg'),
    ('sv+gp', 'inverse_cg'), ('none', 'lobpcg'), ('r1', 'exact_smin'), ('wgan_gp', 'lobpcg'),
    ('mi+diff', 'exact_smin')])
def test_every_pairing_trains(preset, estimator):
  cfg, state = _setup(preset, estimator=estimator, gp_margin=0.0,
                      gp_weight_schedule='constant')
  before = jax.tree.map(np.asarray, (state.energy.params, state.generator.params))
  state, metrics = train.make_train_step(cfg, donate=False)(state, _batch(cfg), jax.random.key(1))
  assert all(np.isfinite(float(v)) for v in metrics.values())
  after = (state.energy.params, state.generator.params)
  changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), before, after)
  # (the output bias of E cancels in mean E(real) - mean E(fake), so not every leaf moves)
  assert any(jax.tree.leaves(changed[0])) and any(jax.tree.leaves(changed[1]))
  if preset == 'sv+gp':
    assert float(metrics['upper_term']) > 0.0  # zeta = 0: the GP term is active
  if preset == 'wgan_gp':
    assert 'entropy' not in metrics


@pytest.mark.parametrize('lower,upper,extra', [
    ('mi', 'diff', dict(mi_estimator='infonce', mi_learn_sigma=True)),
    ('mi', 'gp', dict(mi_estimator='jsd')),
    ('sv', 'diff', dict(diff_importance_sampling=False)),
])
def test_mi_and_diffusion_pairings(lower, upper, extra):
  cfg, state = _setup(lower=lower, upper=upper, **extra)
  if upper == 'diff':
    cfg.model.energy.name = 'time_mlp'
    from bibound_jax import models
    energy, gen = models.create_models(cfg.model, cfg.data.shape)
    state = train.create_state(cfg, energy, gen, jax.random.key(0), cfg.data.shape)
  before = jax.tree.map(np.asarray, state.generator.params)
  state, metrics = train.make_train_step(cfg, donate=False)(state, _batch(cfg), jax.random.key(1))
  assert all(np.isfinite(float(v)) for v in metrics.values())
  if lower == 'mi':
    assert int(state.critic.step) == 1 and 'mi/value' in metrics
    d = 2
    sigma = float(metrics['mi/sigma'])
    # The reported entropy is the MI estimate plus H[X|Z] = D/2 log(2 pi e sigma^2).
    np.testing.assert_allclose(float(metrics['entropy']), float(metrics['mi/value'])
                               + d / 2 * np.log(2 * np.pi * np.e * sigma**2), rtol=1e-5)
    if extra.get('mi_learn_sigma'):
      assert float(state.generator.params['log_sigma']) != float(before['log_sigma'])
  if upper == 'diff':
    np.testing.assert_allclose(float(metrics['upper_term']),
                               cfg.bounds.diff_weight * float(metrics['dsm']), rtol=1e-5)


def test_diffusion_needs_a_time_conditioned_energy():
  from bibound_jax import config_lib
  cfg = toy.get_config('sv+gp')
  cfg.bounds.upper = 'diff'
  with pytest.raises(config_lib.ConfigError, match="needs a time-conditioned energy.*time_mlp"):
    config_lib.validate_config(cfg, ('25gaussians',))


def test_n_critic_updates_energy_n_times_per_iteration():
  cfg, state = _setup('r1')
  cfg.optim.n_critic = 3
  step = train.make_train_step(cfg, donate=False)
  new, _ = step(state, _batch(cfg), jax.random.key(1))
  assert int(new.step) == 1
  assert int(new.energy.step) == 3 and int(new.generator.step) == 1


def test_batchnorm_statistics_are_carried():
  cfg, state = _setup('sv+gp')
  stats0 = jax.tree.map(np.asarray, state.generator.batch_stats)
  state, _ = train.make_train_step(cfg, donate=False)(state, _batch(cfg), jax.random.key(1))
  moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), stats0, state.generator.batch_stats)
  assert all(jax.tree.leaves(moved))


def test_bad_batch_shape_and_bound_names_give_clear_errors():
  cfg, state = _setup()
  step = train.make_train_step(cfg, donate=False)
  with pytest.raises(ValueError, match=r'expected \(n_critic, B, \*data.shape\)'):
    step(state, jnp.zeros((32, 2)), jax.random.key(0))
  with pytest.raises(ValueError, match='valid: gp, diff, none, r1, wgan_gp'):
    _setup(upper='gradient_penalty')
  with pytest.raises(ValueError, match='valid: sv, mi, none'):
    _setup(lower='svd')


def test_energy_learns_to_separate_data_within_a_few_hundred_steps():
  """After 300 iterations on 25 Gaussians the energy is lower on data than on fakes, and the
  bidirectional run keeps both energies bounded."""
  from bibound_jax.data import toy as toy_data
  cfg, state = _setup('sv+gp')
  cfg.train.batch_size = 100
  step = train.make_train_step(cfg)
  sample = jax.jit(lambda k: toy_data.sample('25gaussians', k, 100)[None])
  for i in range(300):
    state, metrics = step(state, sample(jax.random.key(i)), jax.random.key(7))
  assert float(metrics['energy_real']) < float(metrics['energy_fake'])
  assert abs(float(metrics['energy_real'])) < 100 and abs(float(metrics['energy_fake'])) < 100


def test_jacobian_generator_uses_the_batch_statistics_and_is_scale_invariant():
  """With BatchNorm, the Jacobian terms must see the map that made the samples: per-sample
  outputs equal the training-mode batch, and scaling a kernel and bias before a BatchNorm
  (which changes no sample) leaves the log-volume unchanged. With the running statistics it
  rises by about d log c: the entropy gradient would inflate the weights."""
  from bibound_jax.bounds import entropy
  cfg = toy.get_config()
  energy, gen = models.create_models(cfg.model, cfg.data.shape)
  state = train.create_state(cfg, energy, gen, jax.random.key(0), cfg.data.shape)
  z = jax.random.normal(jax.random.key(1), (200, 2))
  g = state.generator
  x_batch, _ = train.generate(g, z, train=True)
  fn = train.batch_generator_fn(g, z)
  np.testing.assert_allclose(jax.vmap(lambda zi: fn(g.params, zi))(z), x_batch, atol=1e-4)

  def log_volume(params, fn_of):
    gs = g.replace(params=params)
    return float(jnp.mean(entropy.batched_log_volume(
        entropy.exact_logdet, fn_of(gs), params, z, jax.random.key(2)).value))
  scaled = jax.tree.map(lambda p: p, g.params)
  scaled['Dense_1'] = jax.tree.map(lambda p: 3.0 * p, g.params['Dense_1'])
  batch_fn = lambda gs: train.batch_generator_fn(gs, z)
  assert log_volume(scaled, batch_fn) == pytest.approx(log_volume(g.params, batch_fn), abs=1e-3)
  running = log_volume(scaled, train.inference_generator_fn) - log_volume(
      g.params, train.inference_generator_fn)
  assert running > 1.0   # d log 3 = 2.2 in the linear regime


def test_jacobian_variables_computed_once_give_the_same_values_and_gradients():
  """The train step computes the batch statistics once per loss (`jacobian_variables`) and
  passes them to every Jacobian term; the value and the parameter gradient (which flows through
  the statistics) must equal those of recomputing them inside each per-sample call."""
  from bibound_jax.bounds import entropy
  cfg = toy.get_config()
  energy, gen = models.create_models(cfg.model, cfg.data.shape)
  state = train.create_state(cfg, energy, gen, jax.random.key(0), cfg.data.shape)
  g = state.generator
  z = jax.random.normal(jax.random.key(1), (64, 2))
  key = jax.random.key(2)

  def once(params):
    variables = train.jacobian_variables(g, params, z, cfg.bounds)
    return jnp.mean(entropy.batched_log_volume(
        entropy.exact_smin, train.per_sample_generator_fn(g), variables, z, key).value)

  def per_call(params):
    return jnp.mean(entropy.batched_log_volume(
        entropy.exact_smin, train.batch_generator_fn(g, z), params, z, key).value)

  v1, g1 = jax.value_and_grad(once)(g.params)
  v2, g2 = jax.value_and_grad(per_call)(g.params)
  assert float(v1) == pytest.approx(float(v2), rel=1e-5)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  # The statistics carry gradient: holding them fixed changes the parameter gradient.
  stats = jax.lax.stop_gradient(train.batch_statistics(g, g.params, z))
  g3 = jax.grad(lambda p: jnp.mean(entropy.batched_log_volume(
      entropy.exact_smin, train.per_sample_generator_fn(g), {'params': p, 'batch_stats': stats},
      z, key).value))(g.params)
  assert max(float(jnp.max(jnp.abs(a - b))) for a, b in
             zip(jax.tree.leaves(g1), jax.tree.leaves(g3))) > 1e-3


@pytest.mark.parametrize('estimator', ['exact_smin', 'lobpcg'])
def test_generator_update_reusing_the_energy_update_vectors_is_exact(estimator):
  """sv+gp: the energy update solves for the s_1 vectors at the current generator parameters;
  the generator update on the same latents reuses them (`shares_sv_work`). Its loss and
  gradient must equal those of solving again (exact_smin; lobpcg with the same key)."""
  cfg, state = _setup('sv+gp', estimator=estimator, sv_batch=16, num_iters=3)
  assert train.shares_sv_work(cfg.bounds)
  z = jax.random.normal(jax.random.key(3), (cfg.train.batch_size, 2))
  x = jax.random.normal(jax.random.key(4), (cfg.train.batch_size, 2))
  key = jax.random.key(5)
  k_est = jax.random.split(key, 3)[1]   # the estimator key inside energy_loss
  _, aux = train.energy_loss(state.energy.params, state, x, z, key, cfg)
  grad = jax.value_and_grad(train.generator_loss, has_aux=True)
  (fresh, f_aux), f_grads = grad(state.generator.params, state, z, k_est, cfg)
  (reused, r_aux), r_grads = grad(state.generator.params, state, z, k_est, cfg, aux['_sv'])
  assert float(reused) == pytest.approx(float(fresh), rel=1e-5)
  assert float(r_aux['sv/smin']) == pytest.approx(float(f_aux['sv/smin']), rel=1e-5)
  for a, b in zip(jax.tree.leaves(r_grads), jax.tree.leaves(f_grads)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)
  # The step with n_critic = 2 feeds the last energy update's latents to the generator.
  cfg.optim.n_critic = 2
  step = train.make_train_step(cfg, donate=False)
  _, metrics = step(state, _batch(cfg), jax.random.key(1))
  assert np.isfinite(float(metrics['entropy'])) and '_sv' not in metrics and '_z' not in metrics
  cfg.bounds.share_sv = False
  assert not train.shares_sv_work(cfg.bounds)


@pytest.mark.parametrize('estimator', ['exact_logdet', 'exact_smin'])
def test_latent_chunk_gives_the_same_step(estimator):
  """bounds.latent_chunk loops over chunks of latents (entropy.map_latents) instead of one vmap:
  same losses and parameters after two iterations (5 does not divide 32: a remainder chunk)."""
  cfg, state = _setup('sv+gp', estimator=estimator, num_iters=3)
  chunked = cfg.copy_and_resolve_references()
  chunked.bounds.latent_chunk = 5
  out = []
  for c in (cfg, chunked):
    step, s = train.make_train_step(c, donate=False), state
    for i in range(2):
      s, metrics = step(s, _batch(c, i), jax.random.key(1))
    out.append((s, metrics))
  (s0, m0), (s1, m1) = out
  # The chunked step really loops over rematerialised chunks (entropy.map_latents).
  z = jax.random.normal(jax.random.key(3), (cfg.train.batch_size, 2))
  x = _batch(cfg)[0]
  jaxprs = [str(jax.make_jaxpr(lambda p, c=c: train.energy_loss(p, state, x, z, jax.random.key(5),
                                                               c))(state.energy.params))
            for c in (cfg, chunked)]
  for primitive in ('scan', 'remat'):
    assert jaxprs[1].count(primitive) > jaxprs[0].count(primitive), primitive
  assert 'entropy' in m0 and set(m0) == set(m1)
  for k in m0:
    np.testing.assert_allclose(m1[k], m0[k], rtol=1e-4, atol=1e-5, err_msg=k)
  # Two Adam steps move the parameters by ~4e-4; float32 summation order moves them by ~1e-6.
  for a, b in zip(jax.tree.leaves(s1.generator.params), jax.tree.leaves(s0.generator.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  assert float(jnp.max(jnp.abs(jax.tree.leaves(s1.generator.params)[0]
                               - jax.tree.leaves(state.generator.params)[0]))) > 0


def test_latent_chunk_must_be_non_negative():
  with pytest.raises(ValueError, match='latent chunk must be >= 0'):
    entropy.map_latents(lambda z: z, (jnp.zeros((4, 2)),), -1)
  cfg = toy.get_config('sv+gp')
  cfg.bounds.latent_chunk = -2
  with pytest.raises(config_lib.ConfigError, match='latent_chunk = -2 must be >= 0'):
    config_lib.validate_config(cfg, ('25gaussians',))

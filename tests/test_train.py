"""The jit train step: one compile, finite metrics, bound selection, clear shape errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bibound_jax import assemble
from bibound_jax import bounds
from bibound_jax import config_lib
from bibound_jax import generator as generator_lib
from bibound_jax import train
from bibound_jax.bounds import entropy
from configs import toy


def _setup(arg=None, **sections):
  """The toy config (batch 32) with config.bounds.<section> updates, and its initial state
  replicated on the device mesh, as the run loop places it."""
  cfg = toy.get_config(','.join(a for a in ('authors', arg) if a))
  cfg.train.batch_size = 32
  for name, values in sections.items():
    if isinstance(values, dict):
      cfg.bounds[name].update(values)
    else:
      cfg.bounds[name] = values
  _, state, _ = assemble.initial_state(cfg)
  return cfg, state


def _batch(cfg, seed=0):
  return jax.random.normal(jax.random.key(seed), (cfg.train.num_seeds, cfg.optim.energy_steps,
                                                  cfg.train.batch_size, 2))


def _keys(cfg, seed=1):
  """One run key per seed."""
  return jax.random.split(jax.random.key(seed), cfg.train.num_seeds)


def _make_step(cfg, **kwargs):
  """train.make_train_step, returning the metrics of the first seed."""
  step = train.make_train_step(cfg, **kwargs)

  def call(state, batch, keys):
    state, metrics = step(state, batch, keys)
    return state, assemble.seed_slice(metrics, 0)
  call.compiled = step
  return call


def test_step_compiles_once_and_metrics_are_finite():
  cfg, state = _setup('sv+gp', sv={'estimator': 'lobpcg'})
  step = _make_step(cfg)
  for i in range(5):
    state, metrics = step(state, _batch(cfg, i), _keys(cfg))
  assert step.compiled._cache_size() == 1
  assert train.iteration(state) == 5
  for name in ('energy_real', 'energy_fake', 'entropy', 'upper_term', 'lower_bound',
               'upper_bound', 'loss_energy', 'loss_generator', 'grad_norm_energy',
               'grad_norm_generator', 'gp', 'sv/smin', 'sv/residual'):
    assert np.isfinite(float(metrics[name])), name


def test_several_iterations_per_call_match_single_steps():
  """make_train_steps runs the same updates as one call per iteration, compiled once."""
  cfg, state = _setup('sv+gp')
  batches = tuple(_batch(cfg, i) for i in range(3))
  key = _keys(cfg)
  single = _make_step(cfg, donate=False)
  one_by_one, history = state, []
  for batch in batches:
    one_by_one, metrics = single(one_by_one, batch, key)
    history.append(metrics)
  multi = train.make_train_steps(cfg, 3, donate=False)
  together, stacked = multi(state, batches, key)
  assert train.iteration(together) == 3 and stacked['loss_energy'].shape == (1, 3)
  # The scan body and the single step are compiled separately, so a few elements differ in the
  # last float32 bits (measured: 1 of 10,000 by 1.7e-7); a wrong batch or key moves them by lr.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               (one_by_one.energy.params, one_by_one.generator.params),
               (together.energy.params, together.generator.params))
  for i, metrics in enumerate(history):
    for name, value in metrics.items():
      np.testing.assert_allclose(stacked[name][:, i], value, rtol=1e-5, atol=1e-6,
                                 err_msg=name)
  multi(together, batches, key)
  assert multi._cache_size() == 1
  with pytest.raises(ValueError, match='steps_per_call'):
    train.make_train_steps(cfg, 0)


@pytest.mark.parametrize('preset,estimator', [
    ('sv+gp', 'exact_logdet'), ('sv+gp', 'exact_smin'), ('sv+gp', 'lobpcg'),
    ('sv+gp', 'inverse_cg'), ('none', 'lobpcg'), ('r1', 'exact_smin'), ('wgan_gp', 'lobpcg'),
    ('mi+diff', 'exact_smin')])
def test_every_pairing_trains(preset, estimator):
  cfg, state = _setup(preset, sv={'estimator': estimator},
                      gp={'margin': 0.0, 'schedule': 'constant'})
  before = jax.tree.map(np.asarray, (state.energy.params, state.generator.params))
  state, metrics = _make_step(cfg, donate=False)(state, _batch(cfg), _keys(cfg))
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
    ('mi', 'diff', dict(mi={'estimator': 'infonce', 'learn_sigma': True})),
    ('mi', 'gp', dict(mi={'estimator': 'jsd'})),
    ('sv', 'diff', dict(diff={'importance_sampling': False})),
])
def test_mi_and_diffusion_pairings(lower, upper, extra):
  cfg, state = _setup(lower=lower, upper=upper, **extra)
  before = jax.tree.map(np.asarray, state.generator.params)
  state, metrics = _make_step(cfg, donate=False)(state, _batch(cfg), _keys(cfg))
  assert all(np.isfinite(float(v)) for v in metrics.values())
  if lower == 'mi':
    assert int(state.mi_net.step[0]) == 1 and 'mi/value' in metrics
    d = 2
    sigma = float(metrics['mi/sigma'])
    # The reported entropy is the MI estimate plus H[X|Z] = D/2 log(2 pi e sigma^2).
    np.testing.assert_allclose(float(metrics['entropy']), float(metrics['mi/value'])
                               + d / 2 * np.log(2 * np.pi * np.e * sigma**2), rtol=1e-5)
    if cfg.bounds.mi.learn_sigma:
      assert float(state.generator.params['log_sigma'][0]) != float(before['log_sigma'][0])
  if upper == 'diff':
    np.testing.assert_allclose(float(metrics['upper_term']),
                               cfg.bounds.diff.weight * float(metrics['dsm']), rtol=1e-5)


def test_diffusion_builds_a_time_conditioned_energy_or_says_why_not():
  """The diffusion bound asks for E(x, t): the toy MLP becomes TimeMLPEnergy; the 28x28 CNN
  has no time-conditioned variant, which validation names."""
  from bibound_jax.models.time_energy import TimeMLPEnergy
  from configs import stackedmnist
  assert isinstance(assemble.networks(toy.get_config('authors,mi+diff')).energy, TimeMLPEnergy)
  assert not isinstance(assemble.networks(toy.get_config('authors,sv+gp')).energy, TimeMLPEnergy)
  cfg = stackedmnist.get_config('cnn,mi+diff')
  with pytest.raises(config_lib.ConfigError, match="no time-conditioned 'dcgan' energy"):
    config_lib.validate_config(cfg, ('stackedmnist',))


def test_energy_steps_update_the_energy_n_times_per_iteration():
  cfg, state = _setup('r1')
  cfg.optim.energy_steps = 3
  step = _make_step(cfg, donate=False)
  new, _ = step(state, _batch(cfg), _keys(cfg))
  assert train.iteration(new) == 1
  assert int(new.energy.step[0]) == 3 and int(new.generator.step[0]) == 1


def test_batchnorm_statistics_are_carried():
  cfg, state = _setup('sv+gp')
  stats0 = jax.tree.map(np.asarray, state.generator.batch_stats)
  state, _ = _make_step(cfg, donate=False)(state, _batch(cfg), _keys(cfg))
  moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), stats0, state.generator.batch_stats)
  assert all(jax.tree.leaves(moved))


def test_bad_batch_shape_and_bound_names_give_clear_errors():
  cfg, state = _setup()
  step = _make_step(cfg, donate=False)
  with pytest.raises(ValueError, match=r'expected \(energy_steps, B, \*data.shape\)'):
    step(state, jnp.zeros((1, 32, 2)), _keys(cfg))
  with pytest.raises(ValueError, match='choose one of: gp, diff, none, r1, wgan_gp'):
    _setup(upper='gradient_penalty')
  with pytest.raises(ValueError, match='choose one of: sv, mi, none'):
    _setup(lower='svd')


def test_energy_learns_to_separate_data_within_a_few_hundred_steps():
  """After 300 iterations on 25 Gaussians the energy is lower on data than on fakes, and the
  bidirectional run keeps both energies bounded."""
  from bibound_jax.data import toy as toy_data
  cfg, state = _setup('sv+gp')
  cfg.train.batch_size = 100
  step = _make_step(cfg)
  sample = jax.jit(lambda k: toy_data.sample('25gaussians', k, 100)[None, None])
  for i in range(300):
    state, metrics = step(state, sample(jax.random.key(i)), _keys(cfg, 7))
  assert float(metrics['energy_real']) < float(metrics['energy_fake'])
  assert abs(float(metrics['energy_real'])) < 100 and abs(float(metrics['energy_fake'])) < 100


@pytest.mark.parametrize('estimator', ['exact_smin', 'lobpcg'])
def test_generator_update_reusing_the_energy_update_vectors_is_exact(estimator):
  """sv+gp: the GP energy update solves for the s_1 vectors at the current generator
  parameters and hands them on (its carry); the SV term of the generator update on the same
  latents reuses them. Its value and gradient, and those of a fresh solve outside the gradient,
  must equal the estimator's differentiated inside the loss (exact_smin; lobpcg with the same
  key)."""
  from bibound_jax.bounds import base
  cfg, state = _setup('sv+gp', sv={'estimator': estimator, 'num_latents': 16, 'num_iters': 3})
  lower, upper = bounds.from_config(cfg)
  seeded, state = state, assemble.seed_slice(state, 0)   # the losses are those of one seed
  z = jax.random.normal(jax.random.key(3), (cfg.train.batch_size, 2))
  x = jax.random.normal(jax.random.key(4), (cfg.train.batch_size, 2))
  key = jax.random.key(5)
  loss = jax.jit(lambda s, lo, up: train.energy_loss(s.energy.params, s, x, z, key, lo, up),
                 static_argnums=(1, 2))
  _, (_, carry) = loss(state, lower, upper)
  assert lower.reuses(carry)
  gen = generator_lib.Generator(state.generator)
  k_est = jax.random.split(key, 3)[1]   # the GP's estimator key

  def entropy_term(params, previous):
    samples, _ = gen.sample(params, z)
    return lower.entropy(base.GeneratorInputs(generator=gen, params=params, z=z, x=samples,
                                              key=k_est, carry=previous))

  def direct(params):   # the estimator's own differentiable value, solving inside the loss
    variables = gen.jacobian_variables(params, z)
    return jnp.mean(entropy.batched_log_volume(lower.jacobian.estimator, gen.per_sample(),
                                               variables, lower.jacobian.latents(z), k_est).value)

  grad = jax.jit(jax.value_and_grad(entropy_term, has_aux=True))
  (fresh, f_aux), f_grads = grad(gen.params, None)
  (reused, r_aux), r_grads = grad(gen.params, carry)
  d_value, d_grads = jax.jit(jax.value_and_grad(direct))(gen.params)
  for value in (fresh, reused):
    assert float(value) == pytest.approx(float(d_value), rel=1e-5)
  assert float(r_aux['sv/smin']) == pytest.approx(float(f_aux['sv/smin']), rel=1e-5)
  for grads in (r_grads, f_grads):
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(d_grads)):
      np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)   # float32, |grad| up to ~6
  # The step with two energy updates feeds the last one's latents to the generator.
  cfg.optim.energy_steps = 2
  _, metrics = _make_step(cfg, donate=False)(seeded, _batch(cfg), _keys(cfg))
  assert np.isfinite(float(metrics['entropy']))
  cfg.bounds.sv.share_vectors = False
  assert not bounds.from_config(cfg)[0].reuses(carry)
  cfg.bounds.jacobian.estimator = 'exact_logdet'   # no vectors to hand on
  _, (_, carry) = loss(state, *bounds.from_config(cfg))
  assert carry is None


@pytest.mark.parametrize('estimator', ['exact_logdet', 'exact_smin'])
def test_latent_chunk_gives_the_same_step(estimator):
  """bounds.jacobian.latent_chunk loops over chunks of latents (entropy.map_latents) instead of one
  vmap: same losses and parameters after two iterations (5 does not divide 32: a remainder)."""
  cfg, state = _setup('sv+gp', sv={'estimator': estimator, 'num_iters': 3})
  chunked = cfg.copy_and_resolve_references()
  chunked.bounds.jacobian.latent_chunk = 5
  out = []
  for c in (cfg, chunked):
    step, s = _make_step(c, donate=False), state
    for i in range(2):
      s, metrics = step(s, _batch(c, i), _keys(c))
    out.append((s, metrics))
  (s0, m0), (s1, m1) = out
  # The chunked step really loops over rematerialised chunks (entropy.map_latents).
  z = jax.random.normal(jax.random.key(3), (cfg.train.batch_size, 2))
  x = _batch(cfg)[0, 0]
  one = assemble.seed_slice(state, 0)
  jaxprs = [str(jax.make_jaxpr(lambda p, c=c: train.energy_loss(
      p, one, x, z, jax.random.key(5), *bounds.from_config(c)))(one.energy.params))
            for c in (cfg, chunked)]
  for primitive in ('scan', 'remat'):
    assert jaxprs[1].count(primitive) > jaxprs[0].count(primitive), primitive
  assert 'entropy' in m0 and set(m0) == set(m1)
  for k in m0:   # float32 summation order (the generator gradient norm is ~260 here)
    np.testing.assert_allclose(m1[k], m0[k], rtol=1e-3, atol=1e-5, err_msg=k)
  # Two Adam steps move the parameters by ~4e-4; float32 summation order moves them by ~1e-6.
  for a, b in zip(jax.tree.leaves(s1.generator.params), jax.tree.leaves(s0.generator.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  assert float(jnp.max(jnp.abs(jax.tree.leaves(s1.generator.params)[0]
                               - jax.tree.leaves(state.generator.params)[0]))) > 0


def test_latent_chunk_must_be_non_negative():
  with pytest.raises(ValueError, match='latent chunk must be >= 0'):
    entropy.map_latents(lambda z: z, (jnp.zeros((4, 2)),), -1)
  cfg = toy.get_config('authors,sv+gp')
  cfg.bounds.jacobian.latent_chunk = -2
  with pytest.raises(config_lib.ConfigError, match='latent_chunk = -2; it must be a number >= 0'):
    config_lib.validate_config(cfg, ('25gaussians',))

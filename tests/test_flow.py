"""The spline coupling flow generator, the energy's scale and confinement, the lr schedule."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bibound_jax import config_lib
from bibound_jax import train
from bibound_jax.models import flow
from bibound_jax.models import toy as toy_models
from bibound_jax.models.time_energy import TimeMLPEnergy
from configs import toy


def _random_flow(key, layers=3, n=2, bins=6, spline_range=3.0):
  """A flow with random (non-zero) conditioner outputs: far from the identity."""
  g = flow.SplineFlowGenerator(latent_dim=n, data_shape=(n,), layers=layers, hidden=(16,),
                               num_bins=bins, spline_range=spline_range)
  def init(key):   # jitted: op-by-op, the flow's init costs 2 s of dispatch
    params = g.init(key, jnp.zeros((1, n)))['params']
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
    return jax.tree.unflatten(treedef, [0.5 * jax.random.normal(k, p.shape, p.dtype)
                                        for k, p in zip(keys, leaves)])
  return g, {'params': jax.jit(init)(key)}


def test_identity_at_initialisation():
  g = flow.SplineFlowGenerator()
  z = 2.5 * jax.random.normal(jax.random.key(0), (256, 2))
  variables = jax.jit(g.init)(jax.random.key(1), z)   # jitted: op by op is ~200 programs
  np.testing.assert_allclose(jax.jit(g.apply)(variables, z), z, atol=1e-5)


def test_spline_is_increasing_continuous_and_the_identity_outside():
  k = 5
  raw = jax.random.normal(jax.random.key(0), (3 * k - 1,))
  x = jnp.linspace(-4.0, 4.0, 20001)
  spline = jax.jit(flow.rq_spline, static_argnums=4)   # op by op: ~400 small programs
  y = spline(x, jnp.broadcast_to(raw[:k], (x.size, k)),
             jnp.broadcast_to(raw[k:2 * k], (x.size, k)),
             jnp.broadcast_to(raw[2 * k:], (x.size, k - 1)), 3.0)
  dy = np.diff(np.asarray(y))
  assert np.all(dy > 0)
  # No jumps at the knots or at +-bound: steps stay within a bounded slope of the grid step.
  assert dy.max() < 50 * float(x[1] - x[0])
  outside = np.abs(np.asarray(x)) >= 3.0
  np.testing.assert_allclose(np.asarray(y)[outside], np.asarray(x)[outside])
  np.testing.assert_allclose(spline(jnp.array([-3.0 + 1e-6, 3.0 - 1e-6]),
                                    raw[None, :k].repeat(2, 0), raw[None, k:2 * k].repeat(2, 0),
                                    raw[None, 2 * k:].repeat(2, 0), 3.0),
                             [-3.0, 3.0], atol=1e-4)

  # It interpolates: every knot x_k maps to its y_k (the bin selection is right at each knot).
  xk, _ = flow._knots(raw[:k], 3.0)
  yk, _ = flow._knots(raw[k:2 * k], 3.0)
  at_knots = spline(xk, *(jnp.broadcast_to(r, (k + 1, r.size))
                          for r in (raw[:k], raw[k:2 * k], raw[2 * k:])), 3.0)
  np.testing.assert_allclose(at_knots, yk, atol=1e-5)


@pytest.mark.parametrize('n', [2, 3])
def test_jacobian_determinant_is_positive_everywhere(n, x64):
  """Injective: det J > 0 at every latent (no folds), in float64 from the dense Jacobian."""
  g, variables = _random_flow(jax.random.key(n), n=n)
  z = 2.0 * jax.random.normal(jax.random.key(7), (2000, n), jnp.float64)
  f = lambda v: g.apply(variables, v[None])[0]
  det = jax.jit(lambda z: jnp.linalg.det(jax.vmap(jax.jacfwd(f))(z)))(z)
  assert float(det.min()) > 0.0
  # and G is far from the identity, so the check is not vacuous
  assert float(jnp.abs(jax.jit(g.apply)(variables, z) - z).max()) > 0.5


def test_closed_form_log_det_equals_the_dense_jacobian(x64):
  """The flow's log |det J| (sum of log spline slopes) against log |det| of the dense jacfwd
  Jacobian in float64, and the two things the bounds differentiate it for: the SV entropy's
  gradient in the parameters and the GP score's gradient in z (`log_volume`, closed form vs
  Jacobian path). n = 3: the first coupling moves two coordinates, the second one."""
  from bibound_jax import generator as generator_lib
  from bibound_jax.bounds import entropy
  n = 3
  g, variables = _random_flow(jax.random.key(11), layers=2, n=n)
  z = 2.0 * jax.random.normal(jax.random.key(3), (64, n), jnp.float64)
  closed = generator_lib.PerSample(g.apply, has_log_volume=True)
  dense = generator_lib.PerSample(g.apply, has_log_volume=False)
  assert closed.has_log_volume and not dense.has_log_volume

  @jax.jit
  def terms(variables):
    def mean_log_det(v, fn):
      per_latent = jax.vmap(lambda zi: entropy.log_volume(fn, v, zi, None))(z)
      return jnp.mean(per_latent), per_latent
    out = []
    for fn in (closed, dense):
      (_, per_latent), grad = jax.value_and_grad(mean_log_det, has_aux=True)(variables, fn)
      score = jax.vmap(jax.grad(lambda zi: entropy.log_volume(fn, variables, zi, None)))(z)
      out.append((per_latent, grad, score))
    est = entropy.batched_log_volume(entropy.exact_logdet, closed, variables, z,
                                     jax.random.key(0))
    smin = jax.vmap(lambda zi: jnp.linalg.svd(jax.jacfwd(lambda x: dense(variables, x))(zi),
                                              compute_uv=False)[-1])(z)
    return out, est, smin

  ((value, grad, score), (reference, grad_ref, score_ref)), est, smin = terms(variables)
  np.testing.assert_allclose(value, reference, rtol=1e-10, atol=1e-10)
  assert float(jnp.std(value)) > 0.1   # far from the identity: the check is not vacuous
  for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(grad_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
  np.testing.assert_allclose(score, score_ref, rtol=1e-8, atol=1e-8)
  # The SV estimator takes the closed form and still reports s_1 of the dense Jacobian.
  np.testing.assert_allclose(est.value, reference, rtol=1e-10, atol=1e-10)
  np.testing.assert_allclose(est.smin, smin, rtol=1e-8)


def test_the_bounds_take_the_closed_form_from_a_flow():
  """The plumbing: a flow's TrainState gives a PerSample with the closed form, an MLP's does
  not (tests can ask for the dense Jacobian with analytic_log_det=False)."""
  import types
  from bibound_jax import generator as generator_lib
  state = lambda module: types.SimpleNamespace(apply_fn=module.apply)
  flow_gen = generator_lib.Generator(state(flow.SplineFlowGenerator()))
  mlp_gen = generator_lib.Generator(state(toy_models.MLPGenerator()))
  assert flow_gen.per_sample().has_log_volume
  assert not flow_gen.per_sample(analytic_log_det=False).has_log_volume
  assert not mlp_gen.per_sample().has_log_volume


def test_flow_needs_latent_dim_equal_to_the_data_dimension():
  cfg = toy.get_config()
  cfg.model.generator.latent_dim = 3
  with pytest.raises(config_lib.ConfigError, match='latent_dim = 3.*data dimension 2'):
    config_lib.validate_config(cfg, ('25gaussians',))


def test_energy_scale_parametrisations_and_confinement():
  x = jnp.array([[0.5, 0.0], [3.0, 4.0]])   # norms 0.5 and 5
  lin = toy_models.MLPEnergy(hidden=(8,), scale_param='linear')
  exp = toy_models.MLPEnergy(hidden=(8,), scale_param='exp', confine=2.0, confine_radius=2.5)
  v_lin = lin.init(jax.random.key(0), x)
  v_exp = exp.init(jax.random.key(0), x)
  assert set(v_lin['params']) - set(v_exp['params']) == {'scale'}
  assert set(v_exp['params']) - set(v_lin['params']) == {'log_scale'}
  # At init both scales are 1; the confinement adds 2 (5 - 2.5)^2 = 12.5 outside radius 2.5.
  np.testing.assert_allclose(exp.apply(v_exp, x) - lin.apply(v_lin, x), [0.0, 12.5], rtol=1e-5)
  params = dict(v_exp['params'], log_scale=jnp.log(3.0))
  np.testing.assert_allclose(exp.apply({'params': params}, x), 3.0 * exp.apply(v_exp, x),
                             rtol=1e-5)
  with pytest.raises(ValueError, match="scale_param = 'log'"):
    cfg = toy.get_config()
    cfg.model.energy.scale_param = 'log'
    from bibound_jax import assemble
    assemble.networks(cfg)


def test_cosine_schedule_decays_each_learning_rate_to_its_final_fraction():
  cfg = toy.get_config()
  cfg.optim.update(lr_schedule='cosine', lr_final_fraction=0.1, lr_energy=1.0)
  tx = train.make_optimizer(cfg.optim, 1.0, num_updates=100)
  params = {'w': jnp.zeros(())}
  state = tx.init(params)
  # Adam's update of a constant gradient is -lr(u) (up to eps): read lr(u) off the updates.
  lrs = []
  for _ in range(101):
    updates, state = tx.update({'w': jnp.ones(())}, state, params)
    lrs.append(-float(updates['w']))
  expected = [0.1 + 0.9 * (1 + math.cos(math.pi * min(u, 100) / 100)) / 2 for u in range(101)]
  np.testing.assert_allclose(lrs, expected, rtol=1e-4)
  cfg.optim.lr_final_fraction = 1.5
  with pytest.raises(config_lib.ConfigError, match='lr_final_fraction'):
    config_lib.validate_config(cfg, ('25gaussians',))


def test_authors_variant_restores_the_authors_networks():
  cfg = toy.get_config('authors')
  assert cfg.model.generator.name == 'mlp' and cfg.bounds.jacobian.estimator == 'exact_smin'
  assert cfg.model.energy.scale_param == 'linear' and cfg.model.energy.confine == 0.0
  assert cfg.optim.lr_schedule == 'constant' and cfg.train.num_steps == 150_000
  config_lib.validate_config(cfg, ('25gaussians',))

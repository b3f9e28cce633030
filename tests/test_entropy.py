"""SV entropy estimators against dense float64 references (numpy SVD / slogdet)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bibound_jax.bounds import entropy
from conftest import mlp_fn, mlp_params

D = 160


def _setup(d, seed=0):
  params = mlp_params(jax.random.key(seed), d, D)
  z = jax.random.normal(jax.random.key(seed + 100), (d,), jnp.float64)
  jac = np.asarray(jax.jacfwd(lambda zz: mlp_fn(params, zz))(z))
  return params, z, jac


@pytest.mark.parametrize('d', [2, 8, 32])
def test_exact_estimators_match_numpy(x64, d):
  params, z, jac = _setup(d)
  s_ref = np.linalg.svd(jac, compute_uv=False)
  _, logdet_ref = np.linalg.slogdet(jac.T @ jac)
  ld = entropy.exact_logdet(mlp_fn, params, z)
  sm = entropy.exact_smin(mlp_fn, params, z)
  np.testing.assert_allclose(float(ld.value), 0.5 * logdet_ref, rtol=1e-10, atol=1e-10)
  np.testing.assert_allclose(float(sm.smin), s_ref[-1], rtol=1e-10)
  np.testing.assert_allclose(float(sm.value), d * np.log(s_ref[-1]), rtol=1e-10, atol=1e-10)
  # The SV bound is below the log-determinant (the tighter bound).
  assert float(sm.value) <= float(ld.value) + 1e-12


@pytest.mark.parametrize('case', ['random', 'ill_conditioned', 'rank_one', 'isotropic', 'tall'])
def test_closed_form_smin_matches_numpy_svd(x64, case):
  """d <= 2 takes s_1 and v in closed form (no LAPACK); they must match the SVD's."""
  rng = np.random.default_rng(0)
  u, _ = np.linalg.qr(rng.normal(size=(2, 2)))
  w, _ = np.linalg.qr(rng.normal(size=(2, 2)))
  m = {'random': rng.normal(size=(2, 2)),
       'ill_conditioned': u @ np.diag([3.0, 3e-6]) @ w.T,
       'rank_one': np.outer(rng.normal(size=2), rng.normal(size=2)),
       'isotropic': 0.7 * u,
       'tall': rng.normal(size=(5, 2))}[case]
  s, v = entropy._dense_smin(jnp.asarray(m))
  s_ref = np.linalg.svd(m, compute_uv=False)[-1]
  np.testing.assert_allclose(float(s), s_ref, rtol=1e-9, atol=1e-14)
  np.testing.assert_allclose(np.linalg.norm(v), 1.0, rtol=1e-12)
  np.testing.assert_allclose(np.linalg.norm(m @ np.asarray(v)), s_ref, rtol=1e-9, atol=1e-14)
  s1, v1 = entropy._dense_smin(jnp.asarray(m[:, :1]))
  np.testing.assert_allclose(float(s1), np.linalg.norm(m[:, 0]), rtol=1e-12)
  np.testing.assert_allclose(np.asarray(v1), [1.0])


def test_closed_form_smin_float32_accuracy():
  """In float32 the closed form stays as accurate as the SVD at condition number 1e3."""
  rng = np.random.default_rng(1)
  errs = []
  for _ in range(50):
    u, _ = np.linalg.qr(rng.normal(size=(2, 2)))
    w, _ = np.linalg.qr(rng.normal(size=(2, 2)))
    m = u @ np.diag([1.0, 1e-3]) @ w.T
    s, _ = entropy._dense_smin(jnp.asarray(m, jnp.float32))
    errs.append(abs(float(s) / 1e-3 - 1.0))
  assert max(errs) < 3e-4    # the float32 SVD itself: 1.1e-4 on these matrices


@pytest.mark.parametrize('d', [2, 8, 32])
@pytest.mark.parametrize('method,kwargs', [
    ('lobpcg', dict(num_iters=60, block_size=4)),
    ('inverse_cg', dict(num_iters=20, cg_iters=30)),
])
def test_matrix_free_converges_to_exact_smin(x64, d, method, kwargs):
  params, z, jac = _setup(d, seed=d)
  s_ref = np.linalg.svd(jac, compute_uv=False)[-1]
  est = getattr(entropy, method)(mlp_fn, params, z, jax.random.key(1), **kwargs)
  assert abs(float(est.smin) / s_ref - 1.0) < 1e-3
  # The returned vector is a unit right singular vector of s_1.
  v = np.asarray(est.vector)
  np.testing.assert_allclose(np.linalg.norm(v), 1.0, rtol=1e-8)
  np.testing.assert_allclose(np.linalg.norm(jac @ v), float(est.smin), rtol=1e-8)


def test_reported_error_shrinks_with_iterations(x64):
  d = 32
  params, z, jac = _setup(d, seed=3)
  eig = np.linalg.eigvalsh(jac.T @ jac)
  s_ref = np.sqrt(eig[0])
  errs, residuals = [], []
  for iters in (2, 5, 10, 20, 40, 80):
    est = entropy.lobpcg(mlp_fn, params, z, jax.random.key(7), num_iters=iters, block_size=4)
    s = float(est.smin)
    # A Rayleigh quotient never under-estimates s_1: the stopped estimate over-estimates H.
    assert s >= s_ref * (1 - 1e-12)
    # The reported residual bounds the distance from s^2 to the spectrum of J^T J.
    assert np.min(np.abs(eig - s**2)) <= float(est.residual) * (1 + 1e-8) + 1e-14
    errs.append(s / s_ref - 1.0)
    residuals.append(float(est.residual))
  assert residuals[-1] < 1e-2 * residuals[0]
  assert errs[-1] < 1e-3 * errs[0]
  assert all(b <= a for a, b in zip(errs, errs[1:]))
  assert all(b <= a * 1.5 for a, b in zip(residuals, residuals[1:]))


def _dense_sv_bound(params, zs):
  """d * mean log s_1 from the dense Jacobian, differentiated through the SVD."""
  def one(z):
    jac = jax.jacfwd(lambda zz: mlp_fn(params, zz))(z)
    return z.shape[-1] * jnp.log(jnp.linalg.svd(jac, compute_uv=False)[-1])
  return jnp.mean(jax.vmap(one)(zs))


def _dense_logdet(params, zs):
  def one(z):
    jac = jax.jacfwd(lambda zz: mlp_fn(params, zz))(z)
    return 0.5 * jnp.linalg.slogdet(jac.T @ jac)[1]
  return jnp.mean(jax.vmap(one)(zs))


@pytest.mark.parametrize('name,kwargs', [
    ('exact_smin', {}),
    ('lobpcg', dict(num_iters=60, block_size=4)),
    ('inverse_cg', dict(num_iters=60, cg_iters=20)),
])
def test_sv_gradient_matches_dense_and_finite_differences(x64, name, kwargs):
  d = 8
  params = mlp_params(jax.random.key(11), d, D)
  zs = jax.random.normal(jax.random.key(12), (4, d), jnp.float64)
  est = entropy.get_estimator(name, **kwargs)
  bound = lambda p: jnp.mean(entropy.batched_log_volume(est, mlp_fn, p, zs,
                                                         jax.random.key(0)).value)
  g_est = jax.grad(bound)(params)
  g_ref = jax.grad(_dense_sv_bound)(params, zs)
  for k in params:
    np.testing.assert_allclose(g_est[k], g_ref[k], rtol=1e-5, atol=1e-7)
  # Central finite differences along a random parameter direction.
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(5), len(leaves))
  direction = jax.tree.unflatten(treedef, [jax.random.normal(k, l.shape, l.dtype)
                                           for k, l in zip(keys, leaves)])
  eps = 1e-5
  shift = lambda t: jax.tree.map(lambda p, u: p + t * u, params, direction)
  fd = (_dense_sv_bound(shift(eps), zs) - _dense_sv_bound(shift(-eps), zs)) / (2 * eps)
  directional = sum(jnp.vdot(g_est[k], direction[k]) for k in params)
  np.testing.assert_allclose(float(directional), float(fd), rtol=1e-6)


def test_logdet_gradient_matches_dense(x64):
  d = 8
  params = mlp_params(jax.random.key(21), d, D)
  zs = jax.random.normal(jax.random.key(22), (4, d), jnp.float64)
  bound = lambda p: jnp.mean(entropy.batched_log_volume(entropy.exact_logdet, mlp_fn, p, zs,
                                                         jax.random.key(0)).value)
  g_est = jax.grad(bound)(params)
  g_ref = jax.grad(_dense_logdet)(params, zs)
  for k in params:
    np.testing.assert_allclose(g_est[k], g_ref[k], rtol=1e-8, atol=1e-10)


def test_estimators_jit_and_vmap_agree_with_single_calls():
  d = 8
  params = mlp_params(jax.random.key(31), d, 64, dtype=jnp.float32)
  zs = jax.random.normal(jax.random.key(32), (5, d))
  est = entropy.get_estimator('lobpcg', num_iters=3, block_size=2)
  batched = jax.jit(lambda p, z, k: entropy.batched_log_volume(est, mlp_fn, p, z, k))(
      params, zs, jax.random.key(0))
  keys = jax.random.split(jax.random.key(0), 5)
  for i in range(5):
    single = est(mlp_fn, params, zs[i], keys[i])
    np.testing.assert_allclose(batched.value[i], single.value, rtol=1e-4)
  assert batched.value.shape == (5,) and batched.vector.shape == (5, d)


def test_unknown_estimator_lists_valid_names():
  with pytest.raises(ValueError, match='exact_logdet, exact_smin, lobpcg, inverse_cg'):
    entropy.get_estimator('power_iteration')


def test_gaussian_entropy():
  np.testing.assert_allclose(entropy.gaussian_entropy(3), 1.5 * np.log(2 * np.pi * np.e))


def test_warm_start_vector_keeps_the_block_size(x64):
  """A (d,) warm start fills one column of the LOBPCG block, the rest are random: with block 4
  at d = 8 the first subspace [X, R, P] spans R^8, so one iteration is exact."""
  d = 8
  params, z, jac = _setup(d, seed=5)
  s_ref = np.linalg.svd(jac, compute_uv=False)[-1]
  init = jax.random.normal(jax.random.key(4), (d,), jnp.float64)
  est = entropy.lobpcg(mlp_fn, params, z, jax.random.key(1), num_iters=1, block_size=4,
                       init=init)
  np.testing.assert_allclose(float(est.smin), s_ref, rtol=1e-8)

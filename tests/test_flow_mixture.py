"""The flow's inverse and the mixture of flows: exact densities, the entropy and its bound, the
GP score (float64 against quadrature and autodiff of the exact density)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bibound_jax import config_lib
from bibound_jax import generator as generator_lib
from bibound_jax.bounds import entropy
from bibound_jax.bounds import gradient_penalty
from bibound_jax.models import flow
from configs import toy


def _perturbed(module, key, latent_dim, scale):
  variables = jax.jit(module.init)(key, jnp.zeros((2, latent_dim)))
  leaves, treedef = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
  return jax.tree.unflatten(treedef, [p + scale * jax.random.normal(k, p.shape, p.dtype)
                                      for k, p in zip(keys, leaves)])


def test_flow_inverse_undoes_the_flow_and_its_log_det(x64):
  g = flow.SplineFlowGenerator(latent_dim=2, data_shape=(2,), layers=3, hidden=(16,), num_bins=6)
  v = _perturbed(g, jax.random.key(0), 2, 0.5)
  apply = jax.jit(g.apply, static_argnames='method')
  z = 2.0 * jax.random.normal(jax.random.key(1), (2000, 2), jnp.float64)   # some outside
  x, log_det = apply(v, z, method='forward_and_log_det')
  z_back, log_det_inv = apply(v, x, method='inverse')
  # (bins as steep as these make the quadratic's root lose digits: 5e-8 measured)
  np.testing.assert_allclose(z_back, z, atol=1e-6)
  np.testing.assert_allclose(log_det_inv, -log_det, atol=1e-6)
  # log p_g(G(z)) = log p0(z) - log |det J|
  np.testing.assert_allclose(apply(v, x, method='log_density'),
                             -0.5 * jnp.sum(z ** 2, -1) - math.log(2 * math.pi) - log_det,
                             atol=1e-6)


def _mixture(entropy_kind='exact', k=5):
  g = flow.FlowMixtureGenerator(latent_dim=3, data_shape=(2,), components=k, hidden=(16, 16),
                                num_bins=8, entropy=entropy_kind)
  return g, _perturbed(g, jax.random.key(0), 3, 0.05)


def test_mixture_density_and_entropy_against_quadrature(x64):
  g, v = _mixture()
  apply = jax.jit(g.apply, static_argnames='method')
  h = 0.03
  axis = np.arange(-6.0, 6.0 + h / 2, h)
  grid = jnp.asarray(np.stack(np.meshgrid(axis, axis, indexing='ij'), -1).reshape(-1, 2))
  log_p = apply(v, grid, method='log_density')
  assert float(jnp.sum(jnp.exp(log_p)) * h * h) == pytest.approx(1.0, abs=1e-4)
  h_quadrature = float(-jnp.sum(jnp.exp(log_p) * log_p) * h * h)
  # H[p_g] = H[p0] + E log_volume over the latent (z, u) ~ N(0, I_3): Monte Carlo.
  zu = jax.random.normal(jax.random.key(2), (40000, 3), jnp.float64)
  h0 = entropy.gaussian_entropy(3)
  log_vol = apply(v, zu, method='log_volume')
  h_exact = h0 + float(jnp.mean(log_vol))
  assert h_exact == pytest.approx(h_quadrature, abs=4 * float(jnp.std(log_vol)) / 200)
  # The components' bound sum_k pi_k H[p_k] = H[p_g] - I(x; k), with 0 <= I <= log K.
  gc, _ = _mixture('components')
  h_components = h0 + float(jnp.mean(jax.jit(gc.apply, static_argnames='method')(
      v, zu, method='log_volume')))
  assert h_components <= h_quadrature <= h_components + math.log(5)
  # Samples follow the mixture: component k gets a fifth of them.
  k = apply(v, zu[:, -1], method='component')
  np.testing.assert_allclose(np.bincount(np.asarray(k)) / len(k), 0.2, atol=0.01)


@pytest.mark.parametrize('entropy_kind', ['exact', 'components'])
def test_mixture_gp_score_is_the_exact_density_score(entropy_kind, x64):
  """The GP's s(z) = v . grad_z[1/2 |z|^2 + log_volume(z)] through generator.PerSample equals
  v . J(z)^T grad_x[-log q](G(z)) by autodiff of an exact log-density q: the mixture's own
  ('exact'), or the sample's component's ('components', the mixture's where its
  responsibility is 1)."""
  g, v = _mixture(entropy_kind)
  fn = generator_lib.PerSample(g.apply, has_log_volume=True)
  zu = jax.random.normal(jax.random.key(3), (64, 3), jnp.float64)
  probes = jax.random.normal(jax.random.key(4), (64, 3), jnp.float64)
  score = jax.jit(jax.vmap(lambda z, p: gradient_penalty.manifold_score(fn, v, z, p, None)))(
      zu, probes)

  def exact(z, p):
    x = fn(v, z)
    if entropy_kind == 'exact':
      log_q = lambda xx: g.apply(v, xx[None], method='log_density')[0]
    else:
      k = g.apply(v, z[None, -1], method='component')[0]
      log_q = lambda xx: g.apply(v, xx[None], method='component_log_densities')[k, 0]
    jac = jax.jacfwd(lambda zz: fn(v, zz))(z)            # (2, 3); zero along u
    return jnp.dot(p, jac.T @ -jax.grad(log_q)(x))
  np.testing.assert_allclose(score, jax.jit(jax.vmap(exact))(zu, probes), rtol=1e-7,
                             atol=1e-9)


def test_mixture_needs_one_more_latent_coordinate():
  config = toy.get_config('mixture')
  config_lib.validate_config(config, ('25gaussians',))
  config.model.generator.latent_dim = 2
  with pytest.raises(config_lib.ConfigError, match='latent_dim = 2.*set it to 3'):
    config_lib.validate_config(config, ('25gaussians',))
  config.model.generator.latent_dim = 3
  config.model.generator.entropy = 'bound'
  with pytest.raises(config_lib.ConfigError, match='entropy'):
    config_lib.validate_config(config, ('25gaussians',))
  config.model.generator.entropy = 'exact'
  config.model.generator.init_shift = 'kmeans'
  with pytest.raises(config_lib.ConfigError, match="init_shift = 'kmeans'.*uniform, data"):
    config_lib.validate_config(config, ('25gaussians',))


def test_kmeans_finds_the_25_modes_and_data_init_starts_the_components_there():
  """init_shift 'data': k-means on toy points recovers the 25 Gaussians' centres (a mode's
  mean from ~800 points has a standard error of 0.0177 / sqrt(800) = 6e-4 per coordinate; a
  centre between two modes would be 0.35 off), and the built generator's shifts start there."""
  from bibound_jax import assemble  # pylint: disable=import-outside-toplevel
  from bibound_jax.data import toy as toy_data  # pylint: disable=import-outside-toplevel
  config = toy.get_config('mixture')
  config.model.generator.init_shift = 'data'
  nets = assemble.networks(config)
  centres = np.asarray(nets.generator.init_centres)
  truth = toy_data.mode_centres('25gaussians')
  dist = np.linalg.norm(centres[:, None] - truth[None], axis=-1)
  # one centre per mode (a permutation), each within 5 standard errors of its mode's centre
  assert sorted(np.argmin(dist, 1).tolist()) == list(range(25))
  assert np.max(np.min(dist, 1)) < 0.005
  variables = jax.jit(nets.generator.init)(jax.random.key(0), jnp.zeros((2, 3)))
  np.testing.assert_allclose(variables['params']['shift'], centres, rtol=1e-6)
  # uniform starts elsewhere: the option is what puts them there
  config.model.generator.init_shift = 'uniform'
  uniform = jax.jit(assemble.networks(config).generator.init)(jax.random.key(0),
                                                              jnp.zeros((2, 3)))
  assert np.max(np.abs(np.asarray(uniform['params']['shift']) - centres)) > 0.1

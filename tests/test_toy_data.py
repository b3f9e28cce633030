"""Tests of the 2-D toy data sets: samplers, exact densities and the agreement between them."""
import jax
import numpy as np
import pytest

from bibound_jax.data import toy
from bibound_jax.metrics import toy as toy_metrics

CURVES = ('swiss_roll', 'two_moons')


def _grid_density(name, spacing):
  """(points, density, cell area) of log_density on a grid over the evaluation box."""
  half = toy.eval_box(name)
  points, n = toy_metrics.make_grid(half, spacing)
  return points, np.exp(toy.log_density(name, points)), toy_metrics.cell_area(half, n)


@pytest.mark.parametrize('name', toy.DATASETS)
def test_sample_shape_dtype_and_keys(name):
  a = toy.sample(name, jax.random.key(0), 1000)
  b = toy.sample(name, jax.random.key(0), 1000)
  c = toy.sample(name, jax.random.key(1), 1000)
  assert a.shape == (1000, 2) and a.dtype == np.float32
  assert np.all(np.isfinite(np.asarray(a)))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.allclose(np.asarray(a), np.asarray(c))
  # Legacy raw uint32 keys work too, and the sampler composes with an outer jit.
  d = jax.jit(lambda k: toy.sample(name, k, 16))(jax.random.PRNGKey(0))
  assert d.shape == (16, 2)


def test_25gaussians_modes_match_spec():
  n = 50_000
  x = np.asarray(toy.sample('25gaussians', jax.random.key(3), n), np.float64)
  centres, std = toy.mode_centres('25gaussians'), toy.mode_std('25gaussians')
  assert centres.shape == (25, 2)
  np.testing.assert_allclose(np.sort(np.unique(centres[:, 0])),
                             np.array([-4, -2, 0, 2, 4]) / 2.828)
  assert std == pytest.approx(0.05 / 2.828)
  nearest = np.argmin(np.sum((x[:, None] - centres[None]) ** 2, -1), -1)
  resid = x - centres[nearest]
  # Per-mode std (pooled, per coordinate): 1e5 residuals -> relative error ~0.2 %.
  np.testing.assert_allclose(resid.std(0), std, rtol=0.02)
  np.testing.assert_allclose(resid.mean(0), 0.0, atol=0.05 * std)
  # Per-mode std of each mode, 2,000 points each.
  per_mode = np.array([resid[nearest == k].std() for k in range(25)])
  np.testing.assert_allclose(per_mode, std, rtol=0.06)
  # Mode frequencies ~ 1/25: count 2000 +- 44 each; chi-square with 24 dof stays well below 60.
  counts = np.bincount(nearest, minlength=25)
  chi2 = np.sum((counts - n / 25) ** 2 / (n / 25))
  assert chi2 < 60, counts


@pytest.mark.parametrize('name', CURVES)
def test_sample_moments_match_log_density(name):
  """Mean and covariance of samples agree with those of exp(log_density) by grid quadrature."""
  points, dens, area = _grid_density(name, 0.02)
  w = dens * area
  mean_q = w @ points
  cov_q = (points - mean_q).T @ ((points - mean_q) * w[:, None])
  x = np.asarray(toy.sample(name, jax.random.key(7), 200_000), np.float64)
  # Standard errors: mean <= 1.6 / sqrt(2e5) ~ 0.004, covariance entries ~ 0.01.
  np.testing.assert_allclose(x.mean(0), mean_q, atol=0.015)
  np.testing.assert_allclose(np.cov(x.T), cov_q, atol=0.04)
  if name == 'two_moons':
    np.testing.assert_allclose(mean_q, 0.0, atol=1e-6)  # Centred by the shift.


@pytest.mark.parametrize('name', toy.DATASETS)
def test_sample_log_likelihood_matches_negative_entropy(name):
  """E_{x ~ sampler}[log p(x)] = int p log p (grid): sensitive to the noise scale and the curve."""
  points, dens, area = _grid_density(name, 0.01 if name == '25gaussians' else 0.02)
  neg_entropy = np.sum(area * dens * np.log(np.maximum(dens, 1e-300)))
  x = np.asarray(toy.sample(name, jax.random.key(13), 100_000), np.float64)
  ll = toy.log_density(name, x)
  se = ll.std() / np.sqrt(len(ll))                 # ~0.003
  assert ll.mean() == pytest.approx(neg_entropy, abs=max(5 * se, 2e-3))


@pytest.mark.parametrize('name', CURVES)
def test_sampler_matches_sklearn_recipe(name):
  """Moments of our sampler before the project's rescaling/shift match scikit-learn's."""
  datasets = pytest.importorskip('sklearn.datasets')
  if name == 'swiss_roll':
    ref = datasets.make_swiss_roll(200_000, noise=1.0, random_state=0)[0][:, [0, 2]] / 5.0
  else:
    ref = datasets.make_moons(200_000, noise=0.1, random_state=0)[0] + np.array([-0.5, -0.25])
  x = np.asarray(toy.sample(name, jax.random.key(11), 200_000), np.float64)
  np.testing.assert_allclose(x.mean(0), ref.mean(0), atol=0.02)
  np.testing.assert_allclose(np.cov(x.T), np.cov(ref.T), atol=0.05)
  np.testing.assert_allclose(np.abs(x).max(0), np.abs(ref).max(0), atol=0.3)


@pytest.mark.parametrize('name,spacing', [('25gaussians', 0.01), ('swiss_roll', 0.02),
                                          ('two_moons', 0.02)])
def test_log_density_integrates_to_one(name, spacing):
  _, dens, area = _grid_density(name, spacing)
  assert np.sum(dens) * area == pytest.approx(1.0, abs=1e-3)


def test_25gaussians_log_density_is_the_mixture():
  centres, s = toy.mode_centres('25gaussians'), toy.mode_std('25gaussians')
  x = np.array([[0.0, 0.0], [0.3, -0.2], centres[7] + [0.01, 0.0]])
  expect = np.log(np.mean(np.exp(-np.sum((x[:, None] - centres) ** 2, -1) / (2 * s * s)), -1)
                  / (2 * np.pi * s * s))
  np.testing.assert_allclose(toy.log_density('25gaussians', x), expect, rtol=1e-10)
  # Shapes (..., 2) -> (...).
  assert toy.log_density('25gaussians', np.zeros((3, 4, 2))).shape == (3, 4)


@pytest.mark.parametrize('name', CURVES)
def test_curve_quadrature_is_converged(name):
  """The default quadrature agrees with a 4x finer rule (twice the nodes per panel)."""
  axis = np.linspace(-4.0, 4.0, 41)
  points = np.stack(np.meshgrid(axis, axis, indexing='ij'), -1).reshape(-1, 2)
  fine = toy._mixture_log_density(points, *toy._mixture(name, 0.0125, 16))
  np.testing.assert_allclose(toy.log_density(name, points), fine, atol=1e-4, rtol=0)


@pytest.mark.parametrize('name', toy.DATASETS)
def test_eval_box_holds_the_mass(name):
  half = toy.eval_box(name)
  assert toy.mass_outside_box(name, half) < 1e-4
  x = np.asarray(toy.sample(name, jax.random.key(5), 100_000))
  assert np.mean(np.any(np.abs(x) > half, -1)) < 3e-4
  assert toy.eval_box(name) == {'25gaussians': 2.0, 'swiss_roll': 3.5, 'two_moons': 2.0}[name]


def test_mass_outside_box_matches_samples():
  # The swiss roll at L = 3.0 leaves ~4.4e-3 outside (which is why its box is 3.5).
  x = np.asarray(toy.sample('swiss_roll', jax.random.key(9), 200_000))
  frac = np.mean(np.any(np.abs(x) > 3.0, -1))
  assert toy.mass_outside_box('swiss_roll', 3.0) == pytest.approx(frac, rel=0.15)


def test_unknown_name_raises_with_valid_names():
  for fn in (lambda: toy.sample('moons', jax.random.key(0), 4),
             lambda: toy.log_density('moons', np.zeros((1, 2))),
             lambda: toy.eval_box('moons'),
             lambda: toy.mode_centres('moons')):
    with pytest.raises(ValueError) as err:
      fn()
    for valid in toy.DATASETS:
      assert valid in str(err.value)
  for name in CURVES:
    with pytest.raises(ValueError):
      toy.mode_centres(name)
    with pytest.raises(ValueError):
      toy.mode_std(name)

"""Tests of the toy 2-D metrics: grid, mode coverage, grid normaliser and grid KL."""
import jax
import numpy as np
import pytest

from bibound_jax.data import toy
from bibound_jax.metrics import toy as tm

CENTRES = toy.mode_centres('25gaussians')
STD = toy.mode_std('25gaussians')


def _std_normal_logpdf(x, scale=1.0):
  return -0.5 * np.sum(x ** 2, -1) / scale ** 2 - np.log(2 * np.pi * scale ** 2)


def test_make_grid_and_cell_area():
  points, n = tm.make_grid(2.0, 0.5)
  assert n == 9 and points.shape == (81, 2)
  axis = np.linspace(-2, 2, 9)
  np.testing.assert_allclose(np.unique(points[:, 0]), axis)
  np.testing.assert_allclose(points[:9, 1], axis)           # Second coordinate varies fastest.
  np.testing.assert_allclose(points[[0, -1]], [[-2, -2], [2, 2]])
  assert tm.cell_area(2.0, n) == pytest.approx(0.25)
  assert tm.make_grid(3.0, 0.01)[1] == 601                   # Float spacing, exact count.
  with pytest.raises(ValueError):
    tm.make_grid(2.0, 0.3)


def test_default_min_count_is_pacgan_rule():
  assert tm.default_min_count(2500) == 20
  assert tm.default_min_count(10_000) == 80
  assert tm.default_min_count(2501) == 21
  assert tm.default_min_count(10) == 1


def test_perfect_sampler_covers_all_modes():
  x = np.asarray(toy.sample('25gaussians', jax.random.key(0), 10_000))
  m = tm.mode_metrics(x, CENTRES, STD)
  assert m['modes_covered'] == 25
  # Expected 1 - exp(-4.5) = 0.9889 (standard error 0.001).
  assert 0.98 < m['hq_fraction'] < 0.995
  assert m['per_mode_counts'].shape == (25,) and m['per_mode_counts'].sum() == round(
      m['hq_fraction'] * 10_000)
  assert m['min_count'] == 80


def test_three_modes_cover_three():
  rng = np.random.default_rng(0)
  modes = np.array([0, 12, 24])
  x = CENTRES[rng.choice(modes, 3000)] + STD * rng.standard_normal((3000, 2))
  m = tm.mode_metrics(x, CENTRES, STD)
  assert m['modes_covered'] == 3
  assert set(np.flatnonzero(m['per_mode_counts'])) == set(modes)
  assert m['hq_fraction'] > 0.98


def test_min_count_threshold():
  # 2,500 samples: a mode with 19 high-quality samples is not covered, one with 20 is.
  x = np.concatenate([np.repeat(CENTRES[:1], 19, 0), np.repeat(CENTRES[1:2], 20, 0),
                      np.full((2461, 2), 10.0)])
  m = tm.mode_metrics(x, CENTRES, STD)
  assert m['min_count'] == 20 and m['modes_covered'] == 1
  assert tm.mode_metrics(x, CENTRES, STD, min_count=1)['modes_covered'] == 2


def test_far_points_have_no_quality():
  x = np.random.default_rng(1).uniform(5.0, 6.0, (500, 2))
  # Also points between modes: 0.5 spacing from a centre is ~28 std away.
  x = np.concatenate([x, CENTRES + np.array([0.35, 0.0])])
  m = tm.mode_metrics(x, CENTRES, STD)
  assert m['hq_fraction'] == 0.0 and m['modes_covered'] == 0
  assert np.all(m['per_mode_counts'] == 0)


def test_grid_log_normaliser_standard_gaussian():
  points, n = tm.make_grid(6.0, 0.05)
  log_z = tm.grid_log_normaliser(_std_normal_logpdf(points), tm.cell_area(6.0, n))
  assert abs(log_z) < 1e-6
  # Unnormalised: -|x|^2 / 2 integrates to 2 pi.
  log_z = tm.grid_log_normaliser(-0.5 * np.sum(points ** 2, -1), tm.cell_area(6.0, n))
  assert log_z == pytest.approx(np.log(2 * np.pi), abs=1e-6)


def test_grid_kl_of_equal_densities_is_zero():
  points, n = tm.make_grid(2.0, 0.02)
  log_p = toy.log_density('two_moons', points)
  area = tm.cell_area(2.0, n)
  assert abs(tm.grid_kl(log_p, log_p, area)) < 1e-12
  # Renormalisation: constants in log_q do not matter (log_q = -E up to log Z).
  assert abs(tm.grid_kl(log_p, log_p - 123.0, area)) < 1e-10
  assert tm.grid_kl(log_p, _std_normal_logpdf(points), area) > 0.1


def test_grid_kl_matches_monte_carlo():
  """KL(25 Gaussians || N(0, I)) on a grid vs E_p[log p - log q] from 200k samples."""
  half, spacing = 5.0, 0.01     # N(0, I) has ~1e-6 of its mass outside [-5, 5]^2.
  points, n = tm.make_grid(half, spacing)
  kl_grid = tm.grid_kl(toy.log_density('25gaussians', points), _std_normal_logpdf(points),
                       tm.cell_area(half, n))
  x = np.asarray(toy.sample('25gaussians', jax.random.key(2), 200_000), np.float64)
  diff = toy.log_density('25gaussians', x) - _std_normal_logpdf(x)
  kl_mc = diff.mean()
  se = diff.std() / np.sqrt(len(diff))
  # KL ~ 4.85: cross-entropy log 2 pi + E|x|^2 / 2 minus the entropy log 25 + log(2 pi e s^2)
  # (exact up to the negligible overlap of the modes), with E|x|^2 = 2 + 2 s^2.
  closed = (2.0 + 2 * STD ** 2) / 2 - np.log(25) - 1 - 2 * np.log(STD)
  assert kl_mc == pytest.approx(closed, abs=5 * se)
  assert kl_grid == pytest.approx(kl_mc, rel=0.02)
  assert kl_grid == pytest.approx(closed, rel=1e-3)


def test_mode_wells_of_the_exact_energy_and_of_a_skewed_sharpened_one():
  real = np.asarray(toy.sample('25gaussians', jax.random.key(0), 20_000))
  exact = lambda x: -toy.log_density('25gaussians', x)
  w = tm.mode_wells(exact, CENTRES, STD, real)
  assert w['centre_spread'] == pytest.approx(0.0, abs=1e-9)       # equal mixture weights
  for r in (0.5, 1.0, 2.0):
    assert w[f'rise_{r:g}std'] == pytest.approx(r * r / 2, rel=1e-6)
  assert w['real_above_centre'] == pytest.approx(np.log(2.0), abs=0.02)   # chi^2_2 / 2
  # Ten times steeper wells, and mode k deeper by 3k nats: each reading moves by that much.
  depth = 3.0 * np.arange(len(CENTRES))
  skewed = lambda x: 10.0 * exact(x) - depth[np.argmin(
      np.sum((x[:, None] - CENTRES[None]) ** 2, -1), -1)]
  v = tm.mode_wells(skewed, CENTRES, STD, real)
  assert v['centre_spread'] == pytest.approx(3.0 * 24)
  assert v['rise_1std'] == pytest.approx(5.0, rel=1e-6)
  assert v['real_above_centre'] == pytest.approx(10 * np.log(2.0), abs=0.2)


def test_grid_kl_by_part_is_the_chain_rule():
  rng = np.random.default_rng(0)
  log_p, log_q = rng.normal(size=400), rng.normal(size=400) * 2
  part = rng.integers(0, 5, size=400)
  kl = tm.grid_kl_by_part(log_p, log_q, part)
  assert kl['total'] == pytest.approx(tm.grid_kl(log_p, log_q, 1.0))
  # Between: the KL of the parts' masses; within: the masses' weighted KLs of the conditionals.
  p, q = np.exp(log_p) / np.exp(log_p).sum(), np.exp(log_q) / np.exp(log_q).sum()
  P = np.array([p[part == k].sum() for k in range(5)])
  Q = np.array([q[part == k].sum() for k in range(5)])
  assert kl['between'] == pytest.approx(np.sum(P * np.log(P / Q)))
  within = sum(P[k] * tm.grid_kl(log_p[part == k], log_q[part == k], 1.0) for k in range(5))
  assert kl['within'] == pytest.approx(within)
  # q = p with every part's mass rescaled: the shapes agree, all of the KL is between parts.
  shifted = log_p + np.array([0.0, 1.0, -2.0, 0.5, 3.0])[part]
  moved = tm.grid_kl_by_part(log_p, shifted, part)
  assert moved['within'] == pytest.approx(0.0, abs=1e-12) and moved['between'] > 0.1

"""PRD (Sajjadi et al. 2018): curve from histograms, F_8 / F_1/8 on identical and disjoint sets."""
import numpy as np
import pytest

from bibound_jax.metrics import prd


def test_compute_prd_identical_and_disjoint_histograms():
  p = np.array([0.1, 0.2, 0.3, 0.4])
  precision, recall = prd.compute_prd(p, p)
  assert precision.shape == recall.shape == (1001,)
  assert max(prd.max_f_beta_pair(precision, recall)) == pytest.approx(1.0, abs=1e-6)
  precision, recall = prd.compute_prd(np.array([0.5, 0.5, 0, 0]), np.array([0, 0, 0.5, 0.5]))
  assert precision.max() == 0 and recall.max() == 0


def test_compute_prd_matches_definition():
  q, p = np.array([0.7, 0.3, 0.0]), np.array([0.2, 0.3, 0.5])
  precision, recall = prd.compute_prd(q, p, num_angles=5)
  lam = np.tan(np.linspace(1e-10, np.pi / 2 - 1e-10, 5))
  alpha = np.array([np.minimum(l * p, q).sum() for l in lam])
  np.testing.assert_allclose(precision, alpha, rtol=1e-12)
  np.testing.assert_allclose(recall, np.clip(alpha / lam, 0, 1), rtol=1e-12)
  # Precision is at most the mass of q on the support of p (0.7 + 0.3), recall that of p on q's.
  assert precision.max() == pytest.approx(1.0) and recall.max() == pytest.approx(0.5, abs=1e-9)


def test_identical_feature_sets_give_precision_recall_one():
  x = np.random.default_rng(0).standard_normal((200, 16))
  res = prd.prd(x, x.copy(), num_runs=2)
  assert res.f_beta == pytest.approx(1.0, abs=1e-6)
  assert res.f_beta_inv == pytest.approx(1.0, abs=1e-6)


def test_disjoint_feature_sets_give_zero():
  rng = np.random.default_rng(1)
  eval_x = rng.standard_normal((200, 16))
  ref_x = rng.standard_normal((200, 16)) + 100.0
  res = prd.prd(eval_x, ref_x, num_runs=2)
  assert res.f_beta < 1e-6 and res.f_beta_inv < 1e-6


def test_mode_dropping_lowers_recall_not_precision():
  """The model covers 2 of the data's 4 well-separated modes: F_1/8 ~ 1, F_8 ~ 0.5."""
  rng = np.random.default_rng(2)
  centres = 50.0 * np.eye(4, 8)
  ref_x = centres[np.arange(800) % 4] + rng.standard_normal((800, 8))
  eval_x = centres[np.arange(800) % 2] + rng.standard_normal((800, 8))
  res = prd.prd(eval_x, ref_x, num_runs=2)
  assert res.f_beta_inv > 0.95          # precision-like: every sample is realistic
  assert 0.4 < res.f_beta < 0.6         # recall-like: half the data is missed


def test_balance_is_enforced():
  x = np.zeros((10, 2))
  with pytest.raises(ValueError, match='equally many'):
    prd.prd_curve(x, np.zeros((12, 2)))

"""AUROC / AUPRC: exact, ties as sklearn; in-distribution is the positive class."""
import numpy as np
import pytest
from sklearn import metrics as skm

from bibound_jax.metrics import ood


def _sklearn(scores_in, scores_out):
  y = np.r_[np.ones(len(scores_in)), np.zeros(len(scores_out))]
  s = np.r_[scores_in, scores_out]
  return skm.roc_auc_score(y, s), skm.average_precision_score(y, s)


@pytest.mark.parametrize('seed,levels,n_in,n_out', [
    (0, 3, 50, 70), (1, 10, 200, 100), (2, 1000, 300, 300), (3, 2, 7, 5), (4, 5, 1, 40)])
def test_matches_sklearn_with_ties(seed, levels, n_in, n_out):
  rng = np.random.default_rng(seed)
  s_in = rng.integers(0, levels, n_in) + 0.5 * (levels > 2)   # few levels: many ties
  s_out = rng.integers(0, levels, n_out) - 1.0
  ref_roc, ref_ap = _sklearn(s_in, s_out)
  assert ood.auroc(s_in, s_out) == pytest.approx(ref_roc, abs=1e-12)
  assert ood.auprc(s_in, s_out) == pytest.approx(ref_ap, abs=1e-12)


def test_matches_sklearn_continuous_scores():
  rng = np.random.default_rng(5)
  s_in, s_out = rng.normal(1.0, 1.0, 500), rng.normal(0.0, 1.0, 800)
  ref_roc, ref_ap = _sklearn(s_in, s_out)
  assert ood.auroc(s_in, s_out) == pytest.approx(ref_roc, abs=1e-12)
  assert ood.auprc(s_in, s_out) == pytest.approx(ref_ap, abs=1e-12)


def test_perfect_reversed_and_constant_scores():
  s_in, s_out = np.array([3.0, 4.0, 5.0]), np.array([-1.0, 0.0, 2.9])
  assert ood.auroc(s_in, s_out) == 1.0 and ood.auprc(s_in, s_out) == 1.0
  assert ood.auroc(s_out, s_in) == 0.0
  # All scores tied: AUROC 1/2, AP = fraction of positives.
  assert ood.auroc(np.zeros(4), np.zeros(6)) == 0.5
  assert ood.auprc(np.zeros(4), np.zeros(6)) == pytest.approx(0.4)


def test_average_ranks():
  np.testing.assert_array_equal(ood.average_ranks(np.array([10.0, 20.0, 10.0, 5.0])),
                                [2.5, 4.0, 2.5, 1.0])


def test_rejects_bad_input():
  with pytest.raises(ValueError, match='finite'):
    ood.auroc([1.0, np.nan], [0.0])
  with pytest.raises(ValueError, match='both'):
    ood.auprc([], [0.0])


def test_ood_table():
  table = ood.ood_table({'SVHN': ood.ood_metrics([2.0, 3.0], [0.0, 1.0]),
                         'CIFAR-100': {'auroc': 0.61234}})
  assert table.splitlines() == [
      '| OOD set | AUROC | AUPRC |',
      '| --- | ---: | ---: |',
      '| SVHN | 1.0000 | 1.0000 |',
      '| CIFAR-100 | 0.6123 | - |',
  ]

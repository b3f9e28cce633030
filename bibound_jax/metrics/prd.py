"""Precision and recall for distributions, PRD (Sajjadi et al. 2018, arXiv:1806.00035).

The union of the model's features Q (`eval_features`) and the reference features P
(`ref_features`, the data), equally many of each, is clustered by mini-batch k-means into
`num_clusters` = 20 clusters; the cluster histograms q, p are discrete distributions, and for
each slope lambda = tan(angle) on an equiangular grid of `num_angles` angles in (0, pi/2)

    alpha(lambda) = sum_w min(lambda p(w), q(w))        (precision)
    beta(lambda)  = alpha(lambda) / lambda              (recall)

The curves are averaged over `num_runs` = 10 independent clusterings. The authors summarise a
curve by

    F_beta = max over the curve of (1 + beta^2) p r / (beta^2 p + r),

reporting the pair (F_8, F_{1/8}): F_8 weighs recall (does the model cover the data?) and
F_{1/8} weighs precision (are the samples like the data?). Both are 1 for identical distributions
and 0 for disjoint ones. This follows the authors' reference code (compare_gan's prd_score.py:
MiniBatchKMeans with n_init=10, histograms normalised to probabilities, epsilon = 1e-10 at both
ends of the angle grid and in the F_beta denominator); `seed` makes the clusterings reproducible
(the reference leaves them unseeded).

Needs scikit-learn (`sklearn.cluster.MiniBatchKMeans`).
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class PRDResult:
  """A PRD curve (`precision`, `recall`: (num_angles,)) and its (F_8, F_{1/8}) summary."""
  precision: np.ndarray
  recall: np.ndarray
  f_beta: float        # F_8 by default: recall-like
  f_beta_inv: float    # F_{1/8} by default: precision-like
  beta: float


def compute_prd(eval_dist, ref_dist, num_angles: int = 1001,
                epsilon: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
  """The PRD curve (precision, recall), each (num_angles,), of histogram q = eval_dist against
  p = ref_dist (each sums to 1), for angles linspace(epsilon, pi/2 - epsilon, num_angles)."""
  if not 0 < epsilon < 0.1:
    raise ValueError(f'epsilon must be in (0, 0.1), got {epsilon}.')
  if not 3 <= num_angles <= 1_000_000:
    raise ValueError(f'num_angles must be in [3, 1e6], got {num_angles}.')
  q = np.asarray(eval_dist, np.float64)
  p = np.asarray(ref_dist, np.float64)
  slopes = np.tan(np.linspace(epsilon, np.pi / 2 - epsilon, num_angles))
  precision = np.minimum(p[None, :] * slopes[:, None], q[None, :]).sum(axis=1)
  recall = precision / slopes
  # Exact values lie in [0, 1]; clip rounding so the F-scores' range checks hold.
  return np.clip(precision, 0.0, 1.0), np.clip(recall, 0.0, 1.0)


def cluster_histograms(eval_features, ref_features, num_clusters: int = 20,
                       seed: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
  """k-means (MiniBatchKMeans, n_init=10) on the union; the two normalised cluster histograms."""
  import sklearn.cluster  # pylint: disable=import-outside-toplevel

  eval_features = np.asarray(eval_features, np.float64)
  ref_features = np.asarray(ref_features, np.float64)
  data = np.concatenate([eval_features, ref_features])
  kmeans = sklearn.cluster.MiniBatchKMeans(n_clusters=num_clusters, n_init=10, random_state=seed)
  labels = kmeans.fit(data).labels_
  n = len(eval_features)
  q = np.bincount(labels[:n], minlength=num_clusters) / n
  p = np.bincount(labels[n:], minlength=num_clusters) / len(ref_features)
  return q, p


def prd_curve(eval_features, ref_features, num_clusters: int = 20, num_angles: int = 1001,
              num_runs: int = 10, enforce_balance: bool = True,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(precision, recall) averaged over `num_runs` clusterings (seeds seed, seed + 1, ...).

  The two sets must be equally large unless `enforce_balance=False`: a larger set would pull the
  clustering towards itself.
  """
  eval_features = np.asarray(eval_features, np.float64)
  ref_features = np.asarray(ref_features, np.float64)
  if enforce_balance and len(eval_features) != len(ref_features):
    raise ValueError(f'eval_features has {len(eval_features)} points and ref_features '
                     f'{len(ref_features)}; PRD needs equally many (enforce_balance=False to '
                     f'override, not recommended).')
  if len(eval_features) + len(ref_features) < num_clusters:
    raise ValueError(f'Need at least num_clusters={num_clusters} points in all.')
  curves = [compute_prd(*cluster_histograms(eval_features, ref_features, num_clusters, seed + r),
                        num_angles) for r in range(num_runs)]
  precision = np.mean([c[0] for c in curves], axis=0)
  recall = np.mean([c[1] for c in curves], axis=0)
  return precision, recall


def f_beta_score(precision, recall, beta: float = 1.0, epsilon: float = 1e-10) -> np.ndarray:
  """(1 + beta^2) p r / (beta^2 p + r + epsilon), elementwise, for p, r in [0, 1]."""
  precision = np.asarray(precision, np.float64)
  recall = np.asarray(recall, np.float64)
  if beta <= 0:
    raise ValueError(f'beta must be positive, got {beta}.')
  for name, v in (('precision', precision), ('recall', recall)):
    if not ((v >= 0) & (v <= 1)).all():
      raise ValueError(f'All {name} values must lie in [0, 1].')
  return (1 + beta**2) * precision * recall / (beta**2 * precision + recall + epsilon)


def max_f_beta_pair(precision, recall, beta: float = 8.0) -> tuple[float, float]:
  """(max F_beta, max F_{1/beta}) over the curve: (F_8, F_{1/8}) by default."""
  return (float(np.max(f_beta_score(precision, recall, beta))),
          float(np.max(f_beta_score(precision, recall, 1.0 / beta))))


def prd(eval_features, ref_features, num_clusters: int = 20, num_angles: int = 1001,
        num_runs: int = 10, beta: float = 8.0, enforce_balance: bool = True,
        seed: int = 0) -> PRDResult:
  """The PRD curve of model features against reference features and its (F_8, F_{1/8})."""
  precision, recall = prd_curve(eval_features, ref_features, num_clusters, num_angles,
                                num_runs, enforce_balance, seed)
  f_beta, f_beta_inv = max_f_beta_pair(precision, recall, beta)
  return PRDResult(precision=precision, recall=recall, f_beta=f_beta, f_beta_inv=f_beta_inv,
                   beta=beta)

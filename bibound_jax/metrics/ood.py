"""Out-of-distribution detection metrics: AUROC and AUPRC, exact (docs/experiments.md,
"OOD detection").

Convention: the score of an input is s(x) = -E(x) (higher = more in-distribution), and the
in-distribution test set is the POSITIVE class. `scores_in` are the scores of in-distribution test
inputs (e.g. CIFAR-10 test), `scores_out` those of the OOD set (e.g. SVHN test).

AUROC = P(s_in > s_out) + 1/2 P(s_in = s_out), the Mann-Whitney statistic, from average ranks of
the pooled scores (ties share their mean rank):

    AUROC = (sum of the ranks of the positives - n_in (n_in + 1) / 2) / (n_in n_out).

This equals the trapezoidal area under the ROC curve with one threshold per distinct score, i.e.
`sklearn.metrics.roc_auc_score` (a tie between a positive and a negative counts one half).

AUPRC is the average precision as `sklearn.metrics.average_precision_score` defines it: with one
threshold per distinct score t_1 > t_2 > ... (tied inputs enter together),

    AP = sum_k (R_k - R_{k-1}) P_k,   R_0 = 0,

with P_k, R_k the precision and recall of {s >= t_k}: a step function, no interpolation. A random
detector has AUROC 1/2 and AP = n_in / (n_in + n_out). Both are computed exactly in float64 by
sorting: O(n log n).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

_NAMES = {'auroc': 'AUROC', 'auprc': 'AUPRC'}


def _check(scores_in, scores_out) -> tuple[np.ndarray, np.ndarray]:
  s_in = np.asarray(scores_in, np.float64).reshape(-1)
  s_out = np.asarray(scores_out, np.float64).reshape(-1)
  if s_in.size == 0 or s_out.size == 0:
    raise ValueError(f'Need scores for both sets; got {s_in.size} in and {s_out.size} out.')
  if not (np.isfinite(s_in).all() and np.isfinite(s_out).all()):
    raise ValueError('Scores must be finite (an energy overflowed?).')
  return s_in, s_out


def average_ranks(x: np.ndarray) -> np.ndarray:
  """1-based ranks of x in ascending order; ties get the mean of their ranks."""
  order = np.argsort(x, kind='mergesort')
  xs = x[order]
  # Start of each run of equal values, and its length.
  starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
  lengths = np.diff(np.r_[starts, xs.size])
  mean_rank = starts + (lengths + 1) / 2.0          # mean of ranks starts+1 .. starts+lengths
  ranks = np.empty(x.size, np.float64)
  ranks[order] = np.repeat(mean_rank, lengths)
  return ranks


def auroc(scores_in, scores_out) -> float:
  """Area under the ROC curve, in-distribution positive, higher score = in (module docstring)."""
  s_in, s_out = _check(scores_in, scores_out)
  ranks = average_ranks(np.concatenate([s_in, s_out]))
  n_in, n_out = s_in.size, s_out.size
  return float((ranks[:n_in].sum() - n_in * (n_in + 1) / 2.0) / (n_in * n_out))


def auprc(scores_in, scores_out) -> float:
  """Average precision, in-distribution positive, higher score = in (module docstring)."""
  s_in, s_out = _check(scores_in, scores_out)
  scores = np.concatenate([s_in, s_out])
  labels = np.r_[np.ones(s_in.size), np.zeros(s_out.size)]
  order = np.argsort(-scores, kind='mergesort')
  scores, labels = scores[order], labels[order]
  # The last index of each run of equal scores: one threshold per distinct score.
  last = np.r_[np.flatnonzero(scores[1:] != scores[:-1]), scores.size - 1]
  tps = np.cumsum(labels)[last]
  precision = tps / (last + 1)
  recall = tps / s_in.size
  return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def ood_metrics(scores_in, scores_out) -> dict[str, float]:
  """{'auroc': ..., 'auprc': ...} for one in-distribution / OOD pair."""
  return {'auroc': auroc(scores_in, scores_out), 'auprc': auprc(scores_in, scores_out)}


def ood_table(results: Mapping[str, Mapping[str, float]], row_header: str = 'OOD set',
              columns: Sequence[str] | None = None, digits: int = 4) -> str:
  """A markdown table: one row per entry of `results` (e.g. OOD data set -> `ood_metrics`), one
  column per metric (`columns`, default: every metric in order of first appearance; 'auroc' and
  'auprc' are headed AUROC and AUPRC). Missing values show as '-'.

  >>> print(ood_table({'SVHN': {'auroc': 0.91, 'auprc': 0.873}}))
  | OOD set | AUROC | AUPRC |
  | --- | ---: | ---: |
  | SVHN | 0.9100 | 0.8730 |
  """
  if columns is None:
    columns = list(dict.fromkeys(k for row in results.values() for k in row))
  header = [row_header] + [_NAMES.get(c, c) for c in columns]
  lines = ['| ' + ' | '.join(header) + ' |',
           '| --- |' + ' ---: |' * len(columns)]
  for name, row in results.items():
    cells = [f'{row[c]:.{digits}f}' if c in row and row[c] is not None else '-' for c in columns]
    lines.append('| ' + ' | '.join([str(name)] + cells) + ' |')
  return '\n'.join(lines)

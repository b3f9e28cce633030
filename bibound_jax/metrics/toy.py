"""Toy 2-D metrics (docs/experiments.md, "Toys"): mode coverage, sample quality, grid KL.
NumPy only.

* Mode coverage / high-quality fraction (PacGAN / VEEGAN convention): a sample is of high quality
  if it lies within 3 std (Euclidean distance) of its nearest mode centre; a mode is covered if it
  gets at least `min_count` high-quality samples. For a perfect sampler of isotropic 2-D modes the
  expected high-quality fraction is P(chi^2_2 <= 9) = 1 - exp(-4.5) ~= 0.989.
* Grid quantities: on a regular grid x_i over [-L, L]^2 with cell area A,
  int exp(f) dx ~= A sum_i exp(f(x_i)), and densities renormalised on the grid,
  p_i = exp(log_p_i) / Z_p, give KL(p || q) ~= A sum_i p_i (log p_i - log q_i).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import special

# PacGAN rule: 20 high-quality samples out of 2,500 make a mode covered (0.8 %).
_PACGAN_COUNT, _PACGAN_SAMPLES = 20, 2500
_HQ_STDS = 3.0


def make_grid(half_width: float, spacing: float) -> tuple[np.ndarray, int]:
  """Regular grid over [-L, L]^2, both ends included: (points (M, 2) float64, n_per_axis).

  n_per_axis = 2L / spacing + 1 and M = n_per_axis^2; spacing must divide 2L (ValueError
  otherwise). Points are ordered row-major with the first coordinate varying slowest, so
  `f(points).reshape(n, n)[i, j]` is f at (x_i, y_j).
  """
  if half_width <= 0 or spacing <= 0:
    raise ValueError(f'half_width and spacing must be > 0, got {half_width}, {spacing}.')
  intervals = 2.0 * half_width / spacing
  n_intervals = int(round(intervals))
  if n_intervals < 1 or abs(intervals - n_intervals) > 1e-6 * max(1.0, intervals):
    raise ValueError(f'spacing {spacing} does not divide the width 2 * {half_width}.')
  axis = np.linspace(-half_width, half_width, n_intervals + 1)
  points = np.stack(np.meshgrid(axis, axis, indexing='ij'), -1).reshape(-1, 2)
  return points, n_intervals + 1


def cell_area(half_width: float, n_per_axis: int) -> float:
  """Area of one grid cell, (2L / (n_per_axis - 1))^2 (the squared spacing of `make_grid`)."""
  if n_per_axis < 2:
    raise ValueError(f'n_per_axis must be >= 2, got {n_per_axis}.')
  return (2.0 * half_width / (n_per_axis - 1)) ** 2


def default_min_count(num_samples: int) -> int:
  """PacGAN threshold scaled to N samples: ceil(20 N / 2500) = ceil(0.008 N), at least 1."""
  return max(1, -(-_PACGAN_COUNT * int(num_samples) // _PACGAN_SAMPLES))


def nearest_centre(points: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(index, distance) of each point's nearest centre: points (N, 2), centres (K, 2); in chunks
  of about 2^20 distances."""
  points = np.asarray(points, np.float64).reshape(-1, 2)
  centres = np.asarray(centres, np.float64).reshape(-1, 2)
  n = points.shape[0]
  nearest = np.empty(n, np.int64)
  dist = np.empty(n, np.float64)
  chunk = max(1, (1 << 20) // len(centres))
  for start in range(0, n, chunk):
    d2 = np.sum((points[start:start + chunk, None, :] - centres[None]) ** 2, -1)
    idx = np.argmin(d2, -1)
    nearest[start:start + chunk] = idx
    dist[start:start + chunk] = np.sqrt(np.take_along_axis(d2, idx[:, None], -1)[:, 0])
  return nearest, dist


def mode_metrics(samples: np.ndarray, centres: np.ndarray, std: float,
                 min_count: int | None = None) -> dict:
  """Mode coverage and high-quality fraction of samples (N, 2) against mode centres (K, 2).

  With k(x) = argmin_k |x - c_k| and hq(x) = [|x - c_k(x)| <= 3 std]:
    per_mode_counts[k] = #{x : k(x) = k and hq(x)},
    modes_covered = #{k : per_mode_counts[k] >= min_count},  min_count = ceil(0.008 N) by default,
    hq_fraction = mean_x hq(x).
  Returns a dict with those three plus 'min_count' and 'num_modes'.
  """
  samples = np.asarray(samples, np.float64).reshape(-1, 2)
  centres = np.asarray(centres, np.float64).reshape(-1, 2)
  n = samples.shape[0]
  if min_count is None:
    min_count = default_min_count(n)
  nearest, dist = nearest_centre(samples, centres)
  hq = dist <= _HQ_STDS * std
  counts = np.bincount(nearest[hq], minlength=len(centres))
  return {
      'modes_covered': int(np.sum(counts >= min_count)),
      'hq_fraction': float(np.mean(hq)) if n else 0.0,
      'per_mode_counts': counts,
      'min_count': int(min_count),
      'num_modes': len(centres),
  }


def grid_log_normaliser(f_on_grid: np.ndarray, cell_area: float) -> float:
  """log int exp(f) dx ~= log(A sum_i exp(f_i)) = logsumexp(f) + log A (Riemann sum).

  `f_on_grid` is a log-density or a negative energy -E at the grid points (any shape). With both
  ends of the grid included this is the trapezoid rule up to the half-weight of the boundary
  points, which is negligible when the box holds essentially all of exp(f).
  """
  f = np.asarray(f_on_grid, np.float64).ravel()
  return float(special.logsumexp(f) + math.log(cell_area))


def grid_kl(log_p: np.ndarray, log_q: np.ndarray, cell_area: float) -> float:
  """KL(p || q) = A sum_i p_i (log p_i - log q_i), p and q each renormalised on the grid.

  log p_i = log_p_i - log Z_p with Z_p = A sum_i exp(log_p_i) (same for q), so unnormalised
  inputs are fine (e.g. log_q = -E for KL(data || exp(-E)/Z)). The cell area cancels: this is
  the discrete KL between softmax(log_p) and softmax(log_q). Points with p_i = 0 (log_p_i = -inf)
  contribute 0; the result is +inf if q_i = 0 where p_i > 0.
  """
  lp = np.asarray(log_p, np.float64).ravel()
  lq = np.asarray(log_q, np.float64).ravel()
  if lp.shape != lq.shape:
    raise ValueError(f'log_p and log_q must have the same size, got {lp.size} and {lq.size}.')
  del cell_area  # Cancels; kept in the signature so callers state the grid they used.
  lp = lp - special.logsumexp(lp)
  lq = lq - special.logsumexp(lq)
  p = np.exp(lp)
  with np.errstate(invalid='ignore'):
    terms = np.where(p > 0, p * (lp - lq), 0.0)
  return float(max(np.sum(terms), 0.0))


def grid_kl_by_part(log_p: np.ndarray, log_q: np.ndarray, part: np.ndarray) -> dict:
  """KL(p || q) on a grid split by a partition of its points (the chain rule of KL):

    KL(p || q) = sum_k P_k log(P_k / Q_k) + sum_k P_k KL(p(. | k) || q(. | k)),

  P_k and Q_k the masses of part k under p and q (each renormalised on the grid, as in
  `grid_kl`). With the parts the modes' Voronoi cells, 'between' is the KL of the mode weights
  and 'within' that of the shapes inside the cells. Returns {'between', 'within', 'total'}.
  """
  lp = np.asarray(log_p, np.float64).ravel()
  lq = np.asarray(log_q, np.float64).ravel()
  part = np.asarray(part).ravel()
  if not lp.shape == lq.shape == part.shape:
    raise ValueError(f'log_p, log_q and part must have the same size, got {lp.size}, '
                     f'{lq.size} and {part.size}.')
  lp = lp - special.logsumexp(lp)
  lq = lq - special.logsumexp(lq)
  labels = np.unique(part)
  lp_k = np.array([special.logsumexp(lp[part == k]) for k in labels])
  lq_k = np.array([special.logsumexp(lq[part == k]) for k in labels])
  p_k = np.exp(lp_k)
  with np.errstate(invalid='ignore'):
    between = float(np.sum(np.where(p_k > 0, p_k * (lp_k - lq_k), 0.0)))
  total = grid_kl(lp, lq, 1.0)
  return {'between': between, 'within': total - between, 'total': total}


def mode_wells(energy_fn, centres: np.ndarray, std: float, real: np.ndarray,
               radii_in_std=(0.5, 1.0, 2.0), directions: int = 8) -> dict:
  """The shape of an energy's wells at the modes of a mixture of isotropic Gaussians.

  With E_k = E(c_k) at the K mode centres:
    centre_spread = max_k E_k - min_k E_k: exp(-E)/Z weighs mode k by about exp(-E_k) times its
      well's volume, so a spread of s nats between equally wide wells puts e^-s times less mass
      on the shallowest mode. 0 for equal mixture weights.
    rise_<r>std = median over modes and `directions` unit vectors u of E(c_k + r std u) - E_k.
      For -log p of the mixture (modes far apart): r^2 / 2.
    real_above_centre = median over real samples x of E(x) - E(c_k(x)), k(x) the nearest mode.
      For -log p: the median of chi^2_2 / 2, log 2 = 0.693.
  `energy_fn` maps points (n, 2) to energies (n,); it is called once.
  """
  centres = np.asarray(centres, np.float64).reshape(-1, 2)
  real = np.asarray(real, np.float64).reshape(-1, 2)
  angle = 2.0 * np.pi * np.arange(directions) / directions
  unit = np.stack([np.cos(angle), np.sin(angle)], -1)
  rings = [(centres[:, None, :] + r * std * unit[None]).reshape(-1, 2) for r in radii_in_std]
  energies = np.asarray(energy_fn(np.concatenate([centres, *rings, real])), np.float64)
  at_centres, rest = energies[:len(centres)], energies[len(centres):]
  out = {'centre_spread': float(at_centres.max() - at_centres.min())}
  for r, ring in zip(radii_in_std, rings):
    rise = rest[:len(ring)].reshape(len(centres), directions) - at_centres[:, None]
    out[f'rise_{r:g}std'] = float(np.median(rise))
    rest = rest[len(ring):]
  nearest, _ = nearest_centre(real, centres)
  out['real_above_centre'] = float(np.median(rest - at_centres[nearest]))
  return out


def binned_masses(points: np.ndarray, half_width: float, bins: int) -> np.ndarray:
  """The fraction of `points` (N, 2) in each of bins x bins equal cells of [-L, L]^2 (points
  outside count in no cell): a flat array, first coordinate slowest."""
  points = np.asarray(points, np.float64).reshape(-1, 2)
  h, _, _ = np.histogram2d(points[:, 0], points[:, 1], bins=bins,
                           range=[[-half_width, half_width]] * 2)
  return h.ravel() / max(len(points), 1)


def sample_density_tv(samples: np.ndarray, log_q: np.ndarray, grid: np.ndarray,
                      half_width: float, bins: int, rng: np.random.Generator,
                      outside_mass: float = 0.0) -> tuple[float, float]:
  """(TV, floor): the total-variation distance between the samples' masses in bins x bins
  cells of [-L, L]^2 and those of the grid density q (log_q on the grid points, renormalised
  on the grid, then scaled to 1 - outside_mass: the mass q has outside the box), one more cell
  holding the outside of the box; and the same distance for as many exact draws from q: its
  Monte Carlo floor. TV = 1/2 sum_cells |p_cell - q_cell|."""
  lq = np.asarray(log_q, np.float64).ravel()
  q = (1.0 - outside_mass) * np.exp(lq - special.logsumexp(lq))
  grid = np.asarray(grid, np.float64).reshape(-1, 2)
  idx = np.minimum(((grid + half_width) / (2 * half_width) * bins).astype(np.int64), bins - 1)
  q_cells = np.append(np.bincount(idx[:, 0] * bins + idx[:, 1], weights=q,
                                  minlength=bins * bins), outside_mass)
  p_cells = binned_masses(samples, half_width, bins)
  p_cells = np.append(p_cells, 1.0 - p_cells.sum())
  draws = rng.multinomial(len(samples), q_cells / q_cells.sum()) / max(len(samples), 1)
  return (float(0.5 * np.sum(np.abs(p_cells - q_cells))),
          float(0.5 * np.sum(np.abs(draws - q_cells))))


def mode_spreads(points: np.ndarray, centres: np.ndarray, std: float) -> np.ndarray:
  """Per mode, the RMS distance to its centre of the points (N, 2) of high quality assigned to
  it (nearest centre, within 3 std: as `mode_metrics`); NaN for a mode with fewer than 2."""
  points = np.asarray(points, np.float64).reshape(-1, 2)
  nearest, dist = nearest_centre(points, centres)
  hq = dist <= _HQ_STDS * std
  out = np.full(len(centres), np.nan)
  for k in range(len(centres)):
    d = dist[hq & (nearest == k)]
    if len(d) >= 2:
      out[k] = np.sqrt(np.mean(d ** 2))
  return out


def spread_ratio(samples: np.ndarray, data: np.ndarray, centres: np.ndarray, std: float,
                 min_count: int | None = None) -> float:
  """The within-mode spread of samples against the data's: the median over the modes the
  samples cover (`mode_metrics`' rule) of (sample RMS distance to the centre) / (the data's),
  both over high-quality points only. 1 for the data; a generator that draws each mode as a
  point scores ~0 with a perfect high-quality fraction. NaN when no mode is covered."""
  centres = np.asarray(centres, np.float64).reshape(-1, 2)
  counts = mode_metrics(samples, centres, std, min_count)['per_mode_counts']
  if min_count is None:
    min_count = default_min_count(len(np.asarray(samples).reshape(-1, 2)))
  ratio = mode_spreads(samples, centres, std) / mode_spreads(data, centres, std)
  covered = (counts >= min_count) & np.isfinite(ratio)
  return float(np.median(ratio[covered])) if covered.any() else float('nan')

"""2-D toy data sets: samplers in JAX, exact log-densities in NumPy, the training batches.

Each data set is a mixture of isotropic Gaussians, x = c + sigma * eps with eps ~ N(0, I_2):

* '25gaussians': c uniform over the 25 centres 2 * {-2, -1, 0, 1, 2}^2, sigma = 0.05, and the
  whole point divided by 2.828 (the authors' scaling), so the centres are 2 * {-2..2}^2 / 2.828
  and each mode has std 0.05 / 2.828.
* 'swiss_roll': scikit-learn's `make_swiss_roll(noise=1.0)` recipe, keeping coordinates (x, z)
  (indices [0, 2]) and dividing by 5: t = 1.5 pi (1 + 2u), u ~ U(0, 1),
  c(t) = (t cos t, t sin t) / 5, sigma = 1.0 / 5.
* 'two_moons': scikit-learn's `make_moons(noise=0.1)` recipe: with probability 1/2 each, the
  upper half circle (cos th, sin th) or the lower one (1 - cos th, 0.5 - sin th), th ~ U(0, pi),
  sigma = 0.1; then shifted by (-0.5, -0.25). The shift is our choice: it moves the point of
  symmetry of the pair of moons to the origin (the lower moon is then exactly minus the upper one,
  so the mean is 0) and puts the data in [-1.5, 1.5] x [-0.75, 0.75] plus noise, well inside
  [-2, 2]^2. scikit-learn places the points at `linspace` positions in th and splits them
  exactly in half; a sampler of i.i.d. points draws th and the moon at random, which is the
  distribution those deterministic positions discretise.

For swiss roll and two moons the density is a continuous mixture along the curve parameter,
p(x) = int pi(t) N(x; c(t), sigma^2 I) dt with pi uniform over the parameter (t or th, not arc
length), which `log_density` evaluates by composite Gauss-Legendre quadrature in t.

Samplers take an explicit PRNG key and are jitted with `name` and `n` static. `batch_fn` gives
the training batches, a pure function of (seed, step).
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from bibound_jax import sharding

DATASETS = ('25gaussians', 'swiss_roll', 'two_moons')

# 25 Gaussians (authors' code): centres 2 * {-2..2}^2, noise std 0.05, everything / 2.828.
_GAUSS_SCALE = 2.828
_GAUSS_GRID = (-2, -1, 0, 1, 2)
_GAUSS_NOISE = 0.05
# Swiss roll: sklearn make_swiss_roll(noise=1.0), coordinates (x, z), divided by 5.
_ROLL_NOISE = 1.0
_ROLL_SCALE = 5.0
_ROLL_T_RANGE = (1.5 * math.pi, 4.5 * math.pi)
# Two moons: sklearn make_moons(noise=0.1), shifted by (-0.5, -0.25).
_MOONS_NOISE = 0.1
_MOONS_SHIFT = (-0.5, -0.25)

# Half-widths of [-L, L]^2 holding all but < 1e-4 of the mass (checked by `mass_outside_box`:
# ~6e-241, ~4.9e-6 and ~1.6e-8 of the mass lie outside for 25gaussians, swiss_roll, two_moons).
# The swiss roll reaches |z| = 4.5 pi / 5 = 2.83 at t = 4.5 pi, with noise std 0.2, so
# L = 3.0 would leave ~4.4e-3 of the mass outside; L = 3.5 is needed.
_EVAL_BOX = {'25gaussians': 2.0, 'swiss_roll': 3.5, 'two_moons': 2.0}

# Quadrature over the curve parameter: composite Gauss-Legendre, `_NODES_PER_PANEL` nodes per
# panel of width <= `_PANEL_WIDTH[name]`. Along t the Gaussian kernel has width
# ~ sigma / sqrt(|c'|^2 + (c - x).c'') (~0.07-0.2 for the swiss roll, 0.1 for the moons near the
# curve, down to ~0.05 for the moons far from it), so the panels resolve it: against a 4x finer
# rule with twice the nodes per panel the log density differs by < 1e-4 on [-4, 4]^2 and < 1e-5
# inside the evaluation box (760 nodes for the swiss roll, 2 x 504 for the moons; tests check it).
_PANEL_WIDTH = {'swiss_roll': 0.1, 'two_moons': 0.05}
_NODES_PER_PANEL = 8
# Bound on (points x nodes) per chunk in `log_density` (~0.5 MB blocks: cache-friendly).
_CHUNK_ELEMENTS = 1 << 16


def _check_name(name: str) -> None:
  if name not in DATASETS:
    raise ValueError(f'Unknown toy data set {name!r}; valid names are {", ".join(DATASETS)}.')


# ---------------------------------------------------------------------------------------------
# Samplers (JAX).
# ---------------------------------------------------------------------------------------------

def _sample_25gaussians(key: jax.Array, n: int) -> jnp.ndarray:
  """x = (2 * g_k + 0.05 * eps) / 2.828, k ~ U{0..24}, eps ~ N(0, I)."""
  k_mode, k_noise = jax.random.split(key)
  grid = jnp.asarray(_GAUSS_GRID, jnp.float32)
  raw_centres = 2.0 * jnp.stack(jnp.meshgrid(grid, grid, indexing='ij'), -1).reshape(-1, 2)
  idx = jax.random.randint(k_mode, (n,), 0, raw_centres.shape[0])
  eps = jax.random.normal(k_noise, (n, 2), jnp.float32)
  return (raw_centres[idx] + _GAUSS_NOISE * eps) / _GAUSS_SCALE


def _sample_swiss_roll(key: jax.Array, n: int) -> jnp.ndarray:
  """x = ((t cos t, t sin t) + 1.0 * eps) / 5, t = 1.5 pi (1 + 2u), u ~ U(0, 1), eps ~ N(0, I)."""
  k_t, k_noise = jax.random.split(key)
  t = 1.5 * jnp.pi * (1.0 + 2.0 * jax.random.uniform(k_t, (n,), jnp.float32))
  curve = jnp.stack([t * jnp.cos(t), t * jnp.sin(t)], axis=-1)
  eps = jax.random.normal(k_noise, (n, 2), jnp.float32)
  return (curve + _ROLL_NOISE * eps) / _ROLL_SCALE


def _sample_two_moons(key: jax.Array, n: int) -> jnp.ndarray:
  """x = c_m(th) + 0.1 eps + (-0.5, -0.25), m ~ U{upper, lower}, th ~ U(0, pi).

  c_upper(th) = (cos th, sin th), c_lower(th) = (1 - cos th, 0.5 - sin th).
  """
  k_moon, k_th, k_noise = jax.random.split(key, 3)
  lower = jax.random.bernoulli(k_moon, 0.5, (n,))
  th = jax.random.uniform(k_th, (n,), jnp.float32, 0.0, jnp.pi)
  upper_pt = jnp.stack([jnp.cos(th), jnp.sin(th)], axis=-1)
  lower_pt = jnp.stack([1.0 - jnp.cos(th), 0.5 - jnp.sin(th)], axis=-1)
  curve = jnp.where(lower[:, None], lower_pt, upper_pt)
  eps = jax.random.normal(k_noise, (n, 2), jnp.float32)
  return curve + _MOONS_NOISE * eps + jnp.asarray(_MOONS_SHIFT, jnp.float32)


_SAMPLERS = {
    '25gaussians': _sample_25gaussians,
    'swiss_roll': _sample_swiss_roll,
    'two_moons': _sample_two_moons,
}


@functools.partial(jax.jit, static_argnames=('name', 'n'))
def sample(name: str, key: jax.Array, n: int) -> jnp.ndarray:
  """n i.i.d. points (n, 2) float32 from toy data set `name` (see the module docstring)."""
  _check_name(name)
  return _SAMPLERS[name](key, n).astype(jnp.float32)


# ---------------------------------------------------------------------------------------------
# Geometry of the data sets.
# ---------------------------------------------------------------------------------------------

def mode_centres(name: str) -> np.ndarray:
  """The 25 mode centres (25, 2) float64 of '25gaussians': 2 * {-2..2}^2 / 2.828.

  Ordered with the first coordinate in the outer loop: (-2,-2), (-2,-1), ..., (2, 2) (times
  2 / 2.828). Raises ValueError for the other data sets, which have no discrete modes.
  """
  _check_name(name)
  if name != '25gaussians':
    raise ValueError(f'mode_centres is defined only for 25gaussians, not {name!r}.')
  grid = np.asarray(_GAUSS_GRID, np.float64)
  return 2.0 * np.stack(np.meshgrid(grid, grid, indexing='ij'), -1).reshape(-1, 2) / _GAUSS_SCALE


def mode_std(name: str) -> float:
  """Per-coordinate std of each mode of '25gaussians': 0.05 / 2.828 (ValueError otherwise)."""
  _check_name(name)
  if name != '25gaussians':
    raise ValueError(f'mode_std is defined only for 25gaussians, not {name!r}.')
  return _GAUSS_NOISE / _GAUSS_SCALE


def eval_box(name: str) -> float:
  """Half-width L of the square [-L, L]^2 outside which the data has < 1e-4 of its mass.

  2.0 for 25gaussians and two_moons, 3.5 for swiss_roll (see `mass_outside_box`).
  """
  _check_name(name)
  return _EVAL_BOX[name]


# ---------------------------------------------------------------------------------------------
# Exact densities (NumPy, float64).
# ---------------------------------------------------------------------------------------------

def _gauss_legendre(lo: float, hi: float, panel_width: float, nodes_per_panel: int):
  """Nodes and weights of the composite Gauss-Legendre rule for int_lo^hi f(t) dt."""
  n_panels = max(1, math.ceil((hi - lo) / panel_width))
  x, w = np.polynomial.legendre.leggauss(nodes_per_panel)        # on [-1, 1]
  edges = np.linspace(lo, hi, n_panels + 1)
  half = 0.5 * np.diff(edges)[:, None]
  mid = 0.5 * (edges[:-1] + edges[1:])[:, None]
  return (mid + half * x).ravel(), (half * w).ravel()


@functools.lru_cache(maxsize=None)
def _mixture(name: str, panel_width: float | None = None,
             nodes_per_panel: int = _NODES_PER_PANEL):
  """(centres (K, 2), log_weights (K,), sigma): p(x) ~= sum_k w_k N(x; c_k, sigma^2 I).

  For '25gaussians' this is exact (w_k = 1/25). For the curves, the nodes t_j and weights a_j
  of a quadrature rule for int pi(t) f(t) dt give c_j = c(t_j), w_j = pi(t_j) a_j times the
  weight of the curve.
  """
  _check_name(name)
  if panel_width is None:
    panel_width = _PANEL_WIDTH.get(name)
  if name == '25gaussians':
    centres = mode_centres(name)
    log_w = np.full(len(centres), -math.log(len(centres)))
    sigma = mode_std(name)
  elif name == 'swiss_roll':
    lo, hi = _ROLL_T_RANGE
    t, a = _gauss_legendre(lo, hi, panel_width, nodes_per_panel)
    centres = np.stack([t * np.cos(t), t * np.sin(t)], -1) / _ROLL_SCALE
    log_w = np.log(a / (hi - lo))
    sigma = _ROLL_NOISE / _ROLL_SCALE
  else:  # two_moons
    th, a = _gauss_legendre(0.0, math.pi, panel_width, nodes_per_panel)
    upper = np.stack([np.cos(th), np.sin(th)], -1)
    lower = np.stack([1.0 - np.cos(th), 0.5 - np.sin(th)], -1)
    centres = np.concatenate([upper, lower]) + np.asarray(_MOONS_SHIFT)
    log_w = np.log(np.concatenate([a, a]) * (0.5 / math.pi))
    sigma = _MOONS_NOISE
  centres.setflags(write=False)
  log_w.setflags(write=False)
  return centres, log_w, float(sigma)


def _mixture_log_density(x: np.ndarray, centres: np.ndarray, log_w: np.ndarray,
                         sigma: float) -> np.ndarray:
  """log sum_k w_k N(x; c_k, sigma^2 I) for x (n, 2), chunked over x, via logsumexp.

  Uses -|x - c_k|^2 / (2 s^2) = x.c_k / s^2 - |c_k|^2 / (2 s^2) - |x|^2 / (2 s^2), so the
  k-dependent part is one matrix product plus a bias; the |x|^2 term leaves the logsumexp.
  Coordinates are O(1) here, so float64 loses nothing to the expansion (errors ~1e-13).
  """
  inv_var = 1.0 / sigma ** 2
  proj = np.ascontiguousarray((centres * inv_var).T)                  # (2, K)
  bias = log_w - 0.5 * inv_var * np.sum(centres ** 2, -1)             # (K,)
  out = np.empty(x.shape[0], np.float64)
  chunk = max(1, _CHUNK_ELEMENTS // len(centres))
  for start in range(0, x.shape[0], chunk):
    xc = x[start:start + chunk]
    a = xc @ proj
    a += bias
    m = a.max(-1, keepdims=True)
    a -= m
    np.exp(a, out=a)
    out[start:start + chunk] = (np.log(a.sum(-1)) + m[:, 0]
                                - 0.5 * inv_var * np.sum(xc ** 2, -1))
  return out - math.log(2.0 * math.pi * sigma ** 2)


def log_density(name: str, x: np.ndarray) -> np.ndarray:
  """Exact log p(x) (float64, shape x.shape[:-1]) of toy data set `name` at points x (..., 2).

  25gaussians: log (1/25) sum_k N(x; c_k, s^2 I). Swiss roll and two moons:
  log int pi(t) N(x; c(t), sigma^2 I) dt by composite Gauss-Legendre quadrature in t (accurate
  to far better than 1e-3 in log density over the evaluation box), summed with logsumexp.
  """
  _check_name(name)
  x = np.asarray(x, np.float64)
  if x.shape[-1] != 2:
    raise ValueError(f'Expected points of shape (..., 2), got {x.shape}.')
  flat = x.reshape(-1, 2)
  return _mixture_log_density(flat, *_mixture(name)).reshape(x.shape[:-1])


def mass_outside_box(name: str, half_width: float) -> float:
  """P(x not in [-L, L]^2) = sum_k w_k [1 - prod_i (Phi((L - c_ki)/s) - Phi((-L - c_ki)/s))].

  Exact for 25gaussians; for the curves the sum runs over the quadrature nodes of `log_density`.
  Per coordinate the mass outside, Phi((-L - c)/s) + Phi((c - L)/s), is computed directly so that
  tiny values keep their precision.
  """
  centres, log_w, sigma = _mixture(name)
  out = np.minimum(special.ndtr((-half_width - centres) / sigma)
                   + special.ndtr((centres - half_width) / sigma), 1.0)
  out_either = out[:, 0] + out[:, 1] - out[:, 0] * out[:, 1]
  return float(np.sum(np.exp(log_w) * out_either))


def batch_fn(name: str, seeds, energy_steps: int, batch_size: int, mesh=None):
  """batch_at(step) -> (seeds, energy_steps, B, 2): the training batch of iteration `step` for
  each seed of `seeds`, a pure function of (seed, step), jit-compiled and produced directly in
  its batch sharding (each device generates its own slice), so a resumed run sees exactly the
  batches of an uninterrupted one and seed s of several gets the batches of seed s alone."""
  _check_name(name)
  data_keys = jnp.stack([jax.random.fold_in(jax.random.key(s), 1) for s in seeds])
  mesh = sharding.make_mesh(num_seeds=len(seeds)) if mesh is None else mesh

  @functools.partial(jax.jit, out_shardings=sharding.batch_sharding(mesh))
  def batch_at(step):
    def one(data_key):
      x = sample(name, jax.random.fold_in(data_key, step), energy_steps * batch_size)
      return x.reshape(energy_steps, batch_size, -1)
    return jax.vmap(one)(data_keys)
  return batch_at

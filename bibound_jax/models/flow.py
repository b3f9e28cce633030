"""An injective generator: a coupling flow with monotone rational-quadratic splines.

The SV entropy bound assumes G is injective (docs/bounds.md, "The injectivity assumption"); a
PReLU+BatchNorm MLP from R^2 to R^2 folds the plane (det J changes sign) and the
change-of-variables entropy then counts folded mass twice. This flow is a bijection of R^n
(n = latent_dim = data dimension) with det J > 0 everywhere, so its entropy
H(G(z)) = H(z) + E_z log |det J_G(z)| is exact (use `bounds.sv.estimator = 'exact_logdet'`).

Coupling layer l splits the coordinates into two halves A_l and B_l (alternating which half
moves). The coordinates in B_l pass through unchanged; each coordinate in A_l goes through its
own monotone rational-quadratic spline (Durkan et al., 2019, "Neural spline flows") whose
K bin widths, K bin heights and K - 1 interior knot derivatives are outputs of a PReLU MLP of
x_B. On [-b, b] (b = `spline_range`) the spline maps the interval onto itself; outside it is
the identity (boundary derivatives 1, so the map is C^1). The conditioner's last layer starts at zero: the
flow is the identity at initialisation, every bin of equal size and every derivative 1.
The spline's inverse has a closed form too (a quadratic in each bin), so G^-1 and the density
log p_g(x) = log p0(G^-1(x)) - log |det J_G(G^-1(x))| are exact: `FlowMixtureGenerator` (bottom)
needs them for the density of a mixture of such flows.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bibound_jax.models.mi import MLP

MIN_BIN = 1e-3      # smallest bin width/height, as a fraction of the interval
MIN_DERIV = 1e-3    # smallest knot derivative
# softplus^-1(1 - MIN_DERIV): a zero conditioner output gives knot derivative 1.
_ZERO_DERIV = math.log(math.expm1(1.0 - MIN_DERIV))


def _knots(raw: jax.Array, bound: float) -> tuple[jax.Array, jax.Array]:
  """(knots (..., K+1) from -bound to bound, bin sizes (..., K)) from unnormalised sizes."""
  k = raw.shape[-1]
  sizes = 2.0 * bound * (MIN_BIN + (1.0 - MIN_BIN * k) * jax.nn.softmax(raw, axis=-1))
  knots = jnp.concatenate([jnp.zeros(raw.shape[:-1] + (1,), raw.dtype),
                           jnp.cumsum(sizes, axis=-1)], axis=-1) - bound
  return knots.at[..., -1].set(bound), sizes


def rq_spline(x: jax.Array, raw_widths: jax.Array, raw_heights: jax.Array,
              raw_derivs: jax.Array, bound: float) -> jax.Array:
  """The monotone rational-quadratic spline y(x) on [-bound, bound], identity outside.

  x (...,); raw_widths, raw_heights (..., K); raw_derivs (..., K-1), the interior knots'
  derivatives before softplus. In bin k, with xi = (x - x_k) / w_k in [0, 1] and s_k = h_k / w_k,
    y = y_k + h_k (s_k xi^2 + d_k xi (1 - xi)) / (s_k + (d_k + d_{k+1} - 2 s_k) xi (1 - xi)),
  strictly increasing because every s_k, d_k > 0.
  """
  return rq_spline_and_log_slope(x, raw_widths, raw_heights, raw_derivs, bound)[0]


class _Bin(NamedTuple):
  """The bin of each point: its knots (x0, y0), width w, height h, slope s = h / w and the knot
  derivatives d0, d1 at its ends; `inside` marks points in [-bound, bound] and `at` the point
  clipped to it."""
  inside: jax.Array
  at: jax.Array
  x0: jax.Array
  w: jax.Array
  y0: jax.Array
  h: jax.Array
  d0: jax.Array
  d1: jax.Array
  s: jax.Array


def _bin(u: jax.Array, raw_widths: jax.Array, raw_heights: jax.Array, raw_derivs: jax.Array,
         bound: float, of_output: bool) -> _Bin:
  """The spline's bin holding each u (...,): among the input knots, or among the output
  knots (`of_output`, for the inverse)."""
  xk, widths = _knots(raw_widths, bound)
  yk, heights = _knots(raw_heights, bound)
  one = jnp.ones(raw_derivs.shape[:-1] + (1,), raw_derivs.dtype)
  derivs = jnp.concatenate([one, MIN_DERIV + jax.nn.softplus(raw_derivs), one], axis=-1)
  inside = jnp.abs(u) < bound
  uc = jnp.clip(u, -bound, bound)
  knots = yk if of_output else xk
  idx = jnp.clip(jnp.sum(uc[..., None] >= knots[..., 1:-1], axis=-1), 0, widths.shape[-1] - 1)
  take = lambda a, i: jnp.take_along_axis(a, i[..., None], axis=-1)[..., 0]
  x0, w, y0, h = take(xk, idx), take(widths, idx), take(yk, idx), take(heights, idx)
  return _Bin(inside, uc, x0, w, y0, h, take(derivs, idx), take(derivs, idx + 1), h / w)


def _log_slope(b: _Bin, xi: jax.Array, denom: jax.Array) -> jax.Array:
  """log dy/dx at the point xi of its bin, denom = s + (d0 + d1 - 2 s) xi (1 - xi)."""
  s, t = b.s, xi * (1.0 - xi)
  numer = s * s * (b.d1 * xi * xi + 2.0 * s * t + b.d0 * (1.0 - xi) ** 2)
  return jnp.log(numer) - 2.0 * jnp.log(denom)


def rq_spline_and_log_slope(x: jax.Array, raw_widths: jax.Array, raw_heights: jax.Array,
                            raw_derivs: jax.Array, bound: float,
                            with_slope: bool = True) -> tuple[jax.Array, jax.Array | None]:
  """(y(x), log dy/dx) of `rq_spline`; log dy/dx is None when `with_slope` is False.

  In bin k (Durkan et al., 2019, eq. 5), with t = xi (1 - xi),
    dy/dx = s_k^2 (d_{k+1} xi^2 + 2 s_k t + d_k (1 - xi)^2) / (s_k + (d_k + d_{k+1} - 2 s_k) t)^2,
  and 1 outside [-bound, bound]. Written out, so that log |det J| of the flow needs no
  automatic differentiation of the spline (docs/performance.md, "Start-up").
  """
  b = _bin(x, raw_widths, raw_heights, raw_derivs, bound, of_output=False)
  s, d0 = b.s, b.d0
  xi = (b.at - b.x0) / b.w
  t = xi * (1.0 - xi)
  denom = s + (d0 + b.d1 - 2.0 * s) * t
  y = jnp.where(b.inside, b.y0 + b.h * (s * xi * xi + d0 * t) / denom, x)
  if not with_slope:
    return y, None
  return y, jnp.where(b.inside, _log_slope(b, xi, denom), 0.0)


def rq_spline_inverse(y: jax.Array, raw_widths: jax.Array, raw_heights: jax.Array,
                      raw_derivs: jax.Array, bound: float) -> tuple[jax.Array, jax.Array]:
  """(x, log dx/dy): the inverse of `rq_spline` (identity outside [-bound, bound]).

  In bin k of the heights, with delta = y - y_k and D = d_k + d_{k+1} - 2 s_k, xi in [0, 1]
  solves a xi^2 + b xi + c = 0 with a = h_k (s_k - d_k) + delta D, b = h_k d_k - delta D,
  c = -s_k delta, taken as xi = 2c / (-b - sqrt(b^2 - 4ac)) (Durkan et al., 2019, eq. 6-8: no
  cancellation); log dx/dy = -log dy/dx at x.
  """
  bn = _bin(y, raw_widths, raw_heights, raw_derivs, bound, of_output=True)
  s, h, d0 = bn.s, bn.h, bn.d0
  delta = bn.at - bn.y0
  big_d = d0 + bn.d1 - 2.0 * s
  a = h * (s - d0) + delta * big_d
  b = h * d0 - delta * big_d
  c = -s * delta
  # The discriminant is >= 0 in exact arithmetic; where rounding takes it to 0, sqrt's
  # derivative would be infinite: the double `where` keeps value and gradient finite.
  disc = b * b - 4.0 * a * c
  root = jnp.where(disc > 0, jnp.sqrt(jnp.where(disc > 0, disc, 1.0)), 0.0)
  xi = jnp.clip(2.0 * c / (-b - root), 0.0, 1.0)
  x = jnp.where(bn.inside, bn.x0 + xi * bn.w, y)
  log_slope = _log_slope(bn, xi, s + big_d * xi * (1.0 - xi))
  return x, jnp.where(bn.inside, -log_slope, 0.0)


class SplineFlowGenerator(nn.Module):
  """G(z): `layers` rational-quadratic spline couplings, identity at init (module docstring).

  latent_dim must equal the data dimension (a bijection of R^n); `train` is accepted for the
  generator interface (there is no BatchNorm). `log_volume(z)` is log |det J_G(z)|
  in closed form: each coupling's Jacobian is triangular (the moved coordinates depend on
  themselves only through their own spline), so log |det J| is the sum over layers and moved
  coordinates of log dy/dx. The SV bound's `exact_logdet` uses it instead of differentiating
  the Jacobian (bibound_jax/generator.py, `PerSample`). `inverse(x)` is G^-1 with its
  log |det|, `log_density(x)` the exact log p_g(x).
  """
  latent_dim: int = 2
  data_shape: Sequence[int] = (2,)
  layers: int = 2
  hidden: Sequence[int] = (64, 64)
  num_bins: int = 16
  spline_range: float = 3.0     # the splines act on [-spline_range, spline_range]

  def setup(self):
    n = math.prod(self.data_shape)
    half = n // 2
    k = self.num_bins
    for layer in range(self.layers):
      # The conditioner; its last layer starts at zero, so the flow starts as the identity.
      moved = half if layer % 2 else n - half
      setattr(self, f'coupling_{layer}', MLP(tuple(self.hidden), moved * (3 * k - 1),
                                              nn.initializers.zeros))

  def __call__(self, z, train: bool = True):
    del train
    return self.forward(z, with_log_det=False)[0]

  def log_volume(self, z):
    """log |det dG/dz| for each row of z (B, n): shape (B,)."""
    return self.forward(z, with_log_det=True)[1]

  def forward_and_log_det(self, z):
    """forward(z, with_log_det=True): (G(z), log |det J_G(z)|)."""
    return self.forward(z, with_log_det=True)

  def _halves(self, layer: int, n: int):
    """(moved, fixed) coordinates of a layer: odd layers move the first half, even layers the
    second, so every coordinate moves."""
    half = n // 2
    if layer % 2:
      return slice(0, half), slice(half, n)
    return slice(half, n), slice(0, half)

  def _spline_params(self, layer: int, x_fixed, m: int):
    k = self.num_bins
    params = getattr(self, f'coupling_{layer}')(x_fixed)
    params = jnp.reshape(params, (x_fixed.shape[0], m, 3 * k - 1))
    return params[..., :k], params[..., k:2 * k], params[..., 2 * k:] + _ZERO_DERIV

  def _check(self, n: int):
    if n != math.prod(self.data_shape) or n < 2:
      raise ValueError(f'SplineFlowGenerator is a bijection of R^n: latent_dim ({n}) must '
                       f'equal the data dimension ({math.prod(self.data_shape)}) and be >= 2.')

  def forward(self, z, with_log_det: bool = False):
    """(G(z) (B, *data_shape), log |det J_G(z)| (B,) or None)."""
    n = z.shape[-1]
    self._check(n)
    x = z
    log_det = jnp.zeros(z.shape[:1], z.dtype) if with_log_det else None
    for layer in range(self.layers):
      moved, fixed = self._halves(layer, n)
      m = x[:, moved].shape[-1]
      y, log_slope = rq_spline_and_log_slope(
          x[:, moved], *self._spline_params(layer, x[:, fixed], m), self.spline_range,
          with_slope=with_log_det)
      if with_log_det:
        log_det = log_det + jnp.sum(log_slope, axis=-1)
      x = x.at[:, moved].set(y)
    return jnp.reshape(x, (z.shape[0],) + tuple(self.data_shape)), log_det

  def inverse(self, x):
    """(G^-1(x) (B, n), log |det dG^-1/dx| (B,)) for x (B, *data_shape): the layers in
    reverse, each coupling's fixed half unchanged, so its conditioner sees what it saw."""
    z = jnp.reshape(x, (x.shape[0], -1))
    n = z.shape[-1]
    self._check(n)
    log_det = jnp.zeros(z.shape[:1], z.dtype)
    for layer in reversed(range(self.layers)):
      moved, fixed = self._halves(layer, n)
      m = z[:, moved].shape[-1]
      y, log_slope = rq_spline_inverse(z[:, moved], *self._spline_params(layer, z[:, fixed], m),
                                       self.spline_range)
      log_det = log_det + jnp.sum(log_slope, axis=-1)
      z = z.at[:, moved].set(y)
    return z, log_det

  def log_density(self, x):
    """log p_g(x) = log N(G^-1(x); 0, I) + log |det dG^-1/dx| for x (B, *data_shape)."""
    z, log_det = self.inverse(x)
    return _log_normal(z) + log_det


def _log_normal(z):
  """log N(z; 0, I) of each row of z (B, n)."""
  return -0.5 * jnp.sum(z * z, -1) - 0.5 * z.shape[-1] * math.log(2.0 * math.pi)


ENTROPIES = ('exact', 'components')
INIT_SHIFTS = ('uniform', 'data')


def kmeans_centres(x, k: int, key: jax.Array, iterations: int = 50) -> np.ndarray:
  """K centres of the points x (N, n) by k-means: k-means++ seeding (each next centre drawn
  with probability proportional to the squared distance to the nearest centre so far), then
  Lloyd's iterations (each centre moves to the mean of its points; a centre left without
  points stays). Float64 NumPy; (k, n)."""
  x = np.asarray(x, np.float64)
  if x.ndim != 2 or x.shape[0] < k:
    raise ValueError(f'kmeans_centres: need (N, n) points with N >= k = {k}; got {x.shape}.')
  rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
  centres = [x[rng.integers(x.shape[0])]]
  d2 = np.sum((x - centres[0]) ** 2, -1)
  for _ in range(1, k):
    centres.append(x[rng.choice(x.shape[0], p=d2 / d2.sum())])
    d2 = np.minimum(d2, np.sum((x - centres[-1]) ** 2, -1))
  centres = np.stack(centres)
  for _ in range(iterations):
    nearest = np.argmin(np.sum((x[:, None] - centres[None]) ** 2, -1), -1)
    counts = np.bincount(nearest, minlength=k)
    sums = np.zeros_like(centres)
    np.add.at(sums, nearest, x)
    moved = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centres)
    if np.allclose(moved, centres):
      break
    centres = moved
  return centres


class FlowMixtureGenerator(nn.Module):
  """A generator that can leave gaps: k ~ Cat(pi), z ~ N(0, I_n), x = G_k(z) with K injective
  components G_k(z) = exp(a_k) * F_k(z) + b_k (F_k a spline flow as above, a_k and b_k a
  learned per-coordinate log-scale and shift; pi uniform and fixed). docs/bounds.md, "A
  mixture of flows".

  The latent is (z, u) in R^(n+1): u ~ N(0, 1) picks the component, k = floor(K Phi(u)), so
  that the generator stays a map of a Gaussian latent; along u, J is zero. Densities are
  exact: log p_k(x) = log N(F_k^-1((x - b_k) / exp(a_k))) + log |det dF_k^-1| - sum a_k and
  log p_g(x) = logsumexp_k(log pi_k + log p_k(x)). `log_volume(z)` = log p0(z, u) -
  log p_g(G(z, u)), so that H[p_g] = H[p0] + E log_volume:

    entropy 'exact'       with the mixture's density: H[p_g] = sum_k pi_k H[p_k] + I(x; k)
                          exactly (the responsibilities are exact);
    entropy 'components'  with the component's own density, log |det J_k(z)| + log N(u):
                          sum_k pi_k H[p_k] = H[p_g] - I(x; k), a lower bound loose by at most
                          H[pi] = log K; no inverses.

  The GP score s = v . grad[-log p_g(G(z))] follows: exact with 'exact'; with 'components'
  the component's score, which is the mixture's wherever one component's responsibility is 1.
  A sample runs its own component forward (its parameters gathered: one flow pass); with
  'exact' every component's inverse runs at it (K passes). Scales start at init_scale;
  shifts start uniform in [-init_spread, init_spread]^n (init_shift 'uniform'), so the
  components start apart, or at `init_centres`, K centres of the data found by k-means
  (init_shift 'data': `kmeans_centres`, set by `bibound_jax.assemble.networks`), as EM for a
  Gaussian mixture starts.
  """
  latent_dim: int = 3
  data_shape: Sequence[int] = (2,)
  components: int = 5
  entropy: str = 'exact'
  init_spread: float = 2.0
  init_scale: float = 1.0
  init_shift: str = 'uniform'   # 'uniform' or 'data' (see the class docstring)
  init_centres: Any = None      # (K, n) nested tuple with init_shift 'data'; built, not config
  layers: int = 2
  hidden: Sequence[int] = (64, 64)
  num_bins: int = 16
  spline_range: float = 3.0     # the splines act on [-spline_range, spline_range]

  def setup(self):
    n = math.prod(self.data_shape)
    if self.latent_dim != n + 1:
      raise ValueError(f'FlowMixtureGenerator: latent_dim ({self.latent_dim}) must be the data '
                       f'dimension plus one ({n + 1}): the last coordinate picks the component.')
    if self.entropy not in ENTROPIES:
      raise ValueError(f'FlowMixtureGenerator: entropy {self.entropy!r}; valid: '
                       f'{", ".join(ENTROPIES)}.')
    flows = nn.vmap(SplineFlowGenerator, variable_axes={'params': 0},
                    split_rngs={'params': True}, in_axes=0, out_axes=0,
                    axis_size=self.components, methods=['forward_and_log_det', 'inverse'])
    self.flows = flows(latent_dim=n, data_shape=(n,), layers=self.layers, hidden=self.hidden,
                       num_bins=self.num_bins, spline_range=self.spline_range)
    if self.init_shift not in INIT_SHIFTS:
      raise ValueError(f'FlowMixtureGenerator: init_shift {self.init_shift!r}; valid: '
                       f'{", ".join(INIT_SHIFTS)}.')
    if self.init_shift == 'data':
      if self.init_centres is None:
        raise ValueError("FlowMixtureGenerator: init_shift 'data' needs init_centres (K, n): "
                         'build the networks with bibound_jax.assemble.networks(config).')
      centres = jnp.asarray(self.init_centres, jnp.float32)
      if centres.shape != (self.components, n):
        raise ValueError(f'FlowMixtureGenerator: init_centres has shape {centres.shape}; '
                         f'expected (components, n) = {(self.components, n)}.')
      init = lambda key, shape: centres
    else:
      spread = self.init_spread
      init = lambda key, shape: jax.random.uniform(key, shape, minval=-spread, maxval=spread)
    self.shift = self.param('shift', init, (self.components, n))
    self.log_scale = self.param('log_scale', nn.initializers.constant(math.log(self.init_scale)),
                                (self.components, n))

  def component(self, u):
    """k = floor(K Phi(u)) for u (B,): component k has probability 1/K."""
    k = jnp.floor(self.components * jax.scipy.stats.norm.cdf(u)).astype(jnp.int32)
    return jnp.clip(k, 0, self.components - 1)

  def _all_components(self, z):
    """(x (K, B, n), log |det J_k| (K, B)) of every component at z (B, n)."""
    k = self.components
    y, log_det = self.flows.forward_and_log_det(jnp.broadcast_to(z, (k,) + z.shape))
    x = jnp.exp(self.log_scale)[:, None] * y + self.shift[:, None]
    return x, log_det + jnp.sum(self.log_scale, -1)[:, None]

  def _forward(self, zu):
    """(G(z, u) (B, n), log |det J_k(z)| (B,)) with each sample's own component only: its
    flow's parameters gathered per sample (one flow pass, not K)."""
    z, u = zu[:, :-1], zu[:, -1]
    if self.is_initializing():   # create the components' parameters
      self._all_components(z)
    k = self.component(u)
    stacked = self.flows.variables['params']
    n = z.shape[-1]
    single = SplineFlowGenerator(latent_dim=n, data_shape=(n,), layers=self.layers,
                                 hidden=self.hidden, num_bins=self.num_bins,
                                 spline_range=self.spline_range,
                                 parent=None)

    def one(zi, ki):
      params = jax.tree.map(lambda a: jnp.take(a, ki, axis=0), stacked)
      y, log_det = single.apply({'params': params}, zi[None], method='forward_and_log_det')
      return y[0], log_det[0]
    y, log_det = jax.vmap(one)(z, k)
    log_scale = jnp.take(self.log_scale, k, axis=0)
    return (jnp.exp(log_scale) * y + jnp.take(self.shift, k, axis=0),
            log_det + jnp.sum(log_scale, -1))

  def __call__(self, zu, train: bool = True):
    del train
    x, _ = self._forward(zu)
    return jnp.reshape(x, (zu.shape[0],) + tuple(self.data_shape))

  def component_log_densities(self, x):
    """log p_k(x) of every component for x (B, *data_shape): (K, B)."""
    x = jnp.reshape(x, (x.shape[0], -1))
    scale = jnp.exp(self.log_scale)[:, None]
    z, log_det = self.flows.inverse((x[None] - self.shift[:, None]) / scale)
    return _log_normal(z) + log_det - jnp.sum(self.log_scale, -1)[:, None]

  def log_density(self, x):
    """log p_g(x) = logsumexp_k(log pi_k + log p_k(x)), pi_k = 1/K: (B,)."""
    return (jax.scipy.special.logsumexp(self.component_log_densities(x), axis=0)
            - math.log(self.components))

  def log_volume(self, zu):
    """log p0(z, u) - log p_g(G(z, u)) ('exact'), or log |det J_k(z)| + log N(u; 0, 1)
    ('components'): see the class docstring."""
    x, log_det = self._forward(zu)
    if self.entropy == 'components':
      return log_det + _log_normal(zu[:, -1:])
    return _log_normal(zu) - self.log_density(x)

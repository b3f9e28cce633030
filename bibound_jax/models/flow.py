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
x_B. On [-bound, bound] the spline maps the interval onto itself; outside it is the identity
(boundary derivatives 1, so the map is C^1). The conditioner's last layer starts at zero: the
flow is the identity at initialisation, every bin of equal size and every derivative 1.
Only G(z) and its Jacobian are needed (never G^-1), so only the forward spline is implemented.
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

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


def rq_spline_and_log_slope(x: jax.Array, raw_widths: jax.Array, raw_heights: jax.Array,
                            raw_derivs: jax.Array, bound: float,
                            with_slope: bool = True) -> tuple[jax.Array, jax.Array | None]:
  """(y(x), log dy/dx) of `rq_spline`; log dy/dx is None when `with_slope` is False.

  In bin k (Durkan et al., 2019, eq. 5), with t = xi (1 - xi),
    dy/dx = s_k^2 (d_{k+1} xi^2 + 2 s_k t + d_k (1 - xi)^2) / (s_k + (d_k + d_{k+1} - 2 s_k) t)^2,
  and 1 outside [-bound, bound]. Written out, so that log |det J| of the flow needs no
  automatic differentiation of the spline (docs/performance.md, "Start-up").
  """
  xk, widths = _knots(raw_widths, bound)
  yk, heights = _knots(raw_heights, bound)
  one = jnp.ones(raw_derivs.shape[:-1] + (1,), raw_derivs.dtype)
  derivs = jnp.concatenate([one, MIN_DERIV + jax.nn.softplus(raw_derivs), one], axis=-1)
  inside = jnp.abs(x) < bound
  xc = jnp.clip(x, -bound, bound)
  idx = jnp.clip(jnp.sum(xc[..., None] >= xk[..., 1:-1], axis=-1), 0, widths.shape[-1] - 1)
  take = lambda a, i: jnp.take_along_axis(a, i[..., None], axis=-1)[..., 0]
  x0, w, y0, h = take(xk, idx), take(widths, idx), take(yk, idx), take(heights, idx)
  d0, d1 = take(derivs, idx), take(derivs, idx + 1)
  s = h / w
  xi = (xc - x0) / w
  t = xi * (1.0 - xi)
  denom = s + (d0 + d1 - 2.0 * s) * t
  y = jnp.where(inside, y0 + h * (s * xi * xi + d0 * t) / denom, x)
  if not with_slope:
    return y, None
  numer = s * s * (d1 * xi * xi + 2.0 * s * t + d0 * (1.0 - xi) ** 2)
  log_slope = jnp.log(numer) - 2.0 * jnp.log(denom)
  return y, jnp.where(inside, log_slope, 0.0)


class SplineFlowGenerator(nn.Module):
  """G(z): `layers` rational-quadratic spline couplings, identity at init (module docstring).

  latent_dim must equal the data dimension (a bijection of R^n); `train` is accepted for the
  generator interface (there is no BatchNorm). `log_abs_det_jacobian(z)` is log |det J_G(z)|
  in closed form: each coupling's Jacobian is triangular (the moved coordinates depend on
  themselves only through their own spline), so log |det J| is the sum over layers and moved
  coordinates of log dy/dx. The SV bound's `exact_logdet` uses it instead of differentiating
  the Jacobian (bibound_jax/generator.py, `PerSample`).
  """
  latent_dim: int = 2
  data_shape: Sequence[int] = (2,)
  layers: int = 2
  hidden: Sequence[int] = (64, 64)
  num_bins: int = 16
  bound: float = 3.0

  def __call__(self, z, train: bool = True):
    del train
    return self.forward(z, with_log_det=False)[0]

  def log_abs_det_jacobian(self, z):
    """log |det dG/dz| for each row of z (B, n): shape (B,)."""
    return self.forward(z, with_log_det=True)[1]

  @nn.compact
  def forward(self, z, with_log_det: bool = False):
    """(G(z) (B, *data_shape), log |det J_G(z)| (B,) or None)."""
    n = z.shape[-1]
    if n != math.prod(self.data_shape) or n < 2:
      raise ValueError(f'SplineFlowGenerator is a bijection of R^n: latent_dim ({n}) must '
                       f'equal the data dimension ({math.prod(self.data_shape)}) and be >= 2.')
    k, half = self.num_bins, n // 2
    x = z
    log_det = jnp.zeros(z.shape[:1], z.dtype) if with_log_det else None
    for layer in range(self.layers):
      # Odd layers move the first half, even layers the second, so every coordinate moves.
      moved = slice(0, half) if layer % 2 else slice(half, n)
      fixed = slice(half, n) if layer % 2 else slice(0, half)
      m = x[:, moved].shape[-1]
      # The conditioner; its last layer starts at zero, so the flow starts as the identity.
      params = MLP(tuple(self.hidden), m * (3 * k - 1), nn.initializers.zeros,
                   name=f'coupling_{layer}')(x[:, fixed])
      params = jnp.reshape(params, (x.shape[0], m, 3 * k - 1))
      y, log_slope = rq_spline_and_log_slope(
          x[:, moved], params[..., :k], params[..., k:2 * k], params[..., 2 * k:] + _ZERO_DERIV,
          self.bound, with_slope=with_log_det)
      if with_log_det:
        log_det = log_det + jnp.sum(log_slope, axis=-1)
      x = x.at[:, moved].set(y)
    return jnp.reshape(x, (z.shape[0],) + tuple(self.data_shape)), log_det

"""Lower bound 1: the entropy of the generator from the singular values of its Jacobian (SV).

The maths: docs/bounds.md, "The SV entropy bound". The bound `sv` (`SVBound`, bottom).

For an injective generator G: R^d -> R^D with Jacobian J(z) (D x d) and z ~ p0 = N(0, I_d),

    H[p_g] = H[p0] + E_z[ 1/2 log det(J^T J) ]  >=  H[p0] + d * E_z[ log s_1(J(z)) ],

with s_1 the *smallest* singular value. Every estimator here works on ONE latent sample: it takes
the generator as a pure function `fn(params, z) -> x` on a single sample (any output shape; it is
flattened to R^D), its `params`, and a latent `z` of shape (d,), and returns an `SVEstimate`.
Iterations run on `stop_gradient(params)`; only the final value carries gradients to `params`.
Batch with `batched_log_volume`, which vmaps over z and keys.

`SVEstimate.value` is the per-sample log-volume term whose mean is added to H[p0]:
  * `exact_logdet`: 1/2 log det(J^T J) (the tightest bound; equal to the entropy term);
  * `exact_smin`, `lobpcg`, `inverse_cg`: d * log s_1.
It is differentiable with respect to `params`. For the
s_1 estimators the gradient uses the envelope (Hellmann-Feynman) theorem: the converged right
singular vector v is held fixed and s_1 = ||J(z) v|| is differentiated through one JVP, which is
the exact gradient of s_1 at convergence.

Caveat: a Rayleigh quotient over-estimates s_1, so a prematurely stopped iterative estimator
over-estimates the entropy and the "lower bound" is violated. Each estimate reports `residual`
= ||J^T J v - s^2 v|| (for symmetric J^T J there is an eigenvalue within `residual` of s^2) so
callers can watch for it.
"""
from __future__ import annotations

import math
from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp

from bibound_jax.bounds import base

Array = jax.Array
GenFn = Callable[[object, Array], Array]

ESTIMATORS = ('exact_logdet', 'exact_smin', 'lobpcg', 'inverse_cg')


@flax.struct.dataclass
class SVEstimate:
  """Per-sample result of an entropy estimator.

  value: differentiable log-volume term (see module docstring).
  smin: the estimated smallest singular value s_1 (no gradient).
  vector: the right singular vector v used for s_1 (unit norm, no gradient); for
    `exact_logdet` the right singular vector of s_1 as a by-product.
  residual: ||J^T J v - s_1^2 v|| (0 up to rounding for the exact methods).
  iterations: iterations used (0 for the exact methods).
  """
  value: Array
  smin: Array
  vector: Array
  residual: Array
  iterations: Array


def gaussian_entropy(d: int) -> float:
  """H[N(0, I_d)] = d/2 log(2 pi e): the constant H[p0] in the bound."""
  return 0.5 * d * math.log(2.0 * math.pi * math.e)


sg = jax.lax.stop_gradient


def _at(fn: GenFn, params) -> Callable[[Array], Array]:
  """z -> flattened fn(params, z)."""
  return lambda z: jnp.reshape(fn(params, z), (-1,))


def jacobian(fn: GenFn, params, z: Array) -> Array:
  """Dense J(z) = dG/dz, shape (D, d), by `jax.jacfwd` (d JVPs)."""
  return jax.jacfwd(_at(fn, params))(z)


def smin_from_vector(fn: GenFn, params, z: Array, v: Array) -> Array:
  """s_1 = ||J(z) v|| with v held fixed: one JVP; envelope-theorem gradient."""
  _, jv = jax.jvp(_at(fn, params), (z,), (sg(v).astype(z.dtype),))
  return jnp.linalg.norm(jv)


def _r_factor(jac: Array) -> Array:
  """R of J = QR, (d, d): J^T J = R^T R, so R has J's singular values and right singular
  vectors at the cost of a QR of the tall (D, d) Jacobian plus work on a d x d matrix.
  A Jacobian that is not tall (D <= d, e.g. the 2-D toy) is returned as is for the SVD."""
  if jac.shape[0] <= jac.shape[1]:
    return jac
  return jnp.linalg.qr(jac, mode='r')


def _logdet_from_r(r: Array) -> Array:
  """1/2 log det(J^T J) = sum_i log|R_ii| (R = Cholesky factor of J^T J up to signs)."""
  return jnp.sum(jnp.log(jnp.abs(jnp.diagonal(r))))


def _logdet_from_jacobian(jac: Array) -> Array:
  """1/2 log det(J^T J) from J = QR, without squaring J's condition number."""
  return _logdet_from_r(jnp.linalg.qr(jac, mode='r'))


def _dense_smin(r: Array):
  """Smallest singular value and its right singular vector of a (D, d) matrix given its R
  factor (or of any matrix with the same J^T J, e.g. J itself). d <= 2 in closed form."""
  if r.shape[-1] <= 2:
    return _smin_closed_form(r)
  _, s, vt = jnp.linalg.svd(r, full_matrices=False)
  return s[-1], vt[-1]


def _smin_closed_form(r: Array):
  """s_1 and v of a (m, d) matrix with d <= 2, without a LAPACK call (a batched 2 x 2 SVD is
  a loop of library calls on CPU, ~30x slower for the toy's 200 Jacobians).

  For A = r^T r = [[a, b], [b, c]] the eigenvector of the larger eigenvalue is at angle
  theta = atan2(2b, a - c) / 2, so v = (-sin theta, cos theta) and s_1 = ||r v||. The angle
  carries A's rounding error eps ||A|| / (s_2^2 - s_1^2), but s_1 = ||r v|| is a Rayleigh
  quotient: its error is second order in that angle error (relative ~ eps^2 kappa^2 at
  condition number kappa), and v is then as good as the SVD's for the envelope gradient."""
  if r.shape[-1] == 1:
    return jnp.linalg.norm(r), jnp.ones((1,), r.dtype)
  a, c = jnp.sum(r[:, 0] ** 2), jnp.sum(r[:, 1] ** 2)
  b = jnp.dot(r[:, 0], r[:, 1])
  theta = 0.5 * jnp.arctan2(2.0 * b, a - c)
  v = jnp.stack([-jnp.sin(theta), jnp.cos(theta)])
  return jnp.linalg.norm(r @ v), v


def _estimate(fn, params, z, v, residual, iterations) -> SVEstimate:
  s = smin_from_vector(fn, params, z, v)
  return SVEstimate(value=z.shape[-1] * jnp.log(s), smin=sg(s), vector=sg(v),
                    residual=residual, iterations=jnp.asarray(iterations, jnp.int32))


def exact_logdet(fn: GenFn, params, z: Array, key: Array | None = None) -> SVEstimate:
  """1/2 log det(J^T J) from the dense Jacobian (d JVPs).

  Computed as sum_i log|R_ii| with J = QR: R is the Cholesky factor of J^T J up to signs, so this
  is the Cholesky log-determinant without squaring J's condition number. Exact gradient by
  autodiff through `jacfwd` and the QR. A generator with a closed-form log |det J| (fn a
  `generator.PerSample` with `has_log_volume`, e.g. the spline flow) gives the value by that
  formula instead; J is then formed without gradient, only for s_1 and v.
  """
  del key
  if getattr(fn, 'has_log_volume', False):   # the generator's closed form (generator.PerSample)
    s, v = _dense_smin(_r_factor(sg(jacobian(fn, sg(params), z))))
    value = fn.log_volume(params, z)
  else:
    r = jnp.linalg.qr(jacobian(fn, params, z), mode='r')
    s, v = _dense_smin(sg(r))
    value = _logdet_from_r(r)
  return SVEstimate(value=value, smin=s, vector=v,
                    residual=jnp.zeros_like(s), iterations=jnp.zeros((), jnp.int32))


def exact_smin(fn: GenFn, params, z: Array, key: Array | None = None) -> SVEstimate:
  """d * log s_1 with s_1 the smallest singular value of the dense Jacobian.

  s_1^2 is the smallest eigenvalue of J^T J; we take s_1 from the SVD of R in J = QR (the same
  singular values and right vectors as J, no squaring of the condition number, and a d x d SVD
  instead of a D x d one). Gradient by the envelope theorem through one JVP.
  """
  del key
  jac = jacobian(fn, sg(params), z)
  s, v = _dense_smin(_r_factor(jac))
  return _estimate(fn, params, z, v, _residual(jac.T @ (jac @ v), v, s), 0)


def _residual(jtj_v: Array, v: Array, s: Array) -> Array:
  """||J^T J v - s^2 v||: some eigenvalue of J^T J lies within this of s^2 (unit v)."""
  return jnp.linalg.norm(jtj_v - s**2 * v)


def _block_maps(fn: GenFn, params, z: Array):
  """Matrix-free blocks J V (d,k)->(D,k) and J^T U (D,k)->(d,k) from one linearisation."""
  _, jvp_fn = jax.linearize(_at(fn, params), z)
  vjp_fn = jax.linear_transpose(jvp_fn, z)
  j_block = jax.vmap(jvp_fn, in_axes=1, out_axes=1)
  jt_block = jax.vmap(lambda u: vjp_fn(u)[0], in_axes=1, out_axes=1)
  return j_block, jt_block


def _normalise_columns(x: Array) -> Array:
  n = jnp.linalg.norm(x, axis=0, keepdims=True)
  return x / jnp.where(n > 0, n, 1.0)


def _start_block(key, init, d, k, dtype):
  """(d, k) start: the columns of `init` (a (d,) vector or (d, j) block), completed with
  Gaussian columns from `key` when j < k (a warm start never shrinks the block)."""
  if init is None:
    return jax.random.normal(key, (d, k), dtype)
  init = jnp.reshape(init, (d, -1))[:, :k].astype(dtype)
  if init.shape[1] == k:
    return init
  return jnp.concatenate([init, jax.random.normal(key, (d, k - init.shape[1]), dtype)], axis=1)


def lobpcg(fn: GenFn, params, z: Array, key: Array, num_iters: int = 2, block_size: int = 1,
           init: Array | None = None) -> SVEstimate:
  """Smallest singular value of J(z) by block Rayleigh-Ritz (LOBPCG, no preconditioner).

  Iterates on A = J^T J with a block X (d x k), k = block_size:
      R = A X - X diag(theta)                  residuals, theta = Ritz values ||J x_i||^2
      S = orth([X, R, P])                      Householder QR; P = previous search direction
      J S = U Sigma W^T                        thin SVD = Rayleigh-Ritz for A on span S
      X <- S W[:, smallest k],  P <- X_new - X_old (X_old^T X_new)
  J S comes from JVPs and A X from VJPs (`jax.linearize` + `jax.linear_transpose`, vmapped over
  the block columns): J is never formed. Per iteration: 3k JVPs and k VJPs. The start block is
  Gaussian from `key` (or `init`, e.g. a warm start). When 3k >= d the first subspace is all of
  R^d and the result is exact. Returns s_1 = ||J v|| for the best Ritz vector v, an upper bound
  on the true s_1, with the envelope-theorem gradient.
  """
  d = z.shape[-1]
  k = min(block_size, d)
  j_block, jt_block = _block_maps(fn, sg(params), sg(z))
  x0, _ = jnp.linalg.qr(_start_block(key, init, d, k, z.dtype))

  def body(carry, _):
    x, p = carry
    jx = j_block(x)
    r = jt_block(jx) - x * jnp.sum(jx * jx, axis=0)
    basis = jnp.concatenate([x, _normalise_columns(r), _normalise_columns(p)], axis=1)
    q, _ = jnp.linalg.qr(basis)                   # (d, min(3k, d)) orthonormal columns
    _, _, wt = jnp.linalg.svd(j_block(q), full_matrices=False)
    x_new = q @ wt[::-1][:k].T                    # Ritz vectors of the k smallest values
    return (x_new, x_new - x @ (x.T @ x_new)), None

  (x, _), _ = jax.lax.scan(body, (x0, jnp.zeros_like(x0)), None, length=num_iters)
  v = x[:, jnp.argmin(jnp.linalg.norm(j_block(x), axis=0))]
  s = jnp.linalg.norm(j_block(v[:, None]))
  res = _residual(jt_block(j_block(v[:, None]))[:, 0], v, s)
  return _estimate(fn, params, z, v, res, num_iters)


def inverse_cg(fn: GenFn, params, z: Array, key: Array, num_iters: int = 5, cg_iters: int = 10,
               init: Array | None = None) -> SVEstimate:
  """Smallest singular value of J(z) by inverse iteration on A = J^T J.

      v <- A^{-1} v / ||A^{-1} v||,
  each solve by at most `cg_iters` conjugate-gradient steps (`jax.scipy.sparse.linalg.cg`, stopped
  early only at rounding level) with the
  matrix-free operator v -> J^T (J v); `num_iters` outer steps from a Gaussian start (or `init`).
  Returns s_1 = ||J v|| with the envelope-theorem gradient.
  """
  d = z.shape[-1]
  j_block, jt_block = _block_maps(fn, sg(params), sg(z))
  op = lambda v: jt_block(j_block(v[:, None]))[:, 0]
  v0 = _start_block(key, init, d, 1, z.dtype)[:, 0]
  # Stop an inner solve only at rounding level: CG past exact convergence divides 0 by 0.
  tol = 10 * float(jnp.finfo(z.dtype).eps)

  def body(v, _):
    w, _ = jax.scipy.sparse.linalg.cg(op, v, x0=v, tol=tol, maxiter=cg_iters)
    return w / jnp.linalg.norm(w), None

  v, _ = jax.lax.scan(body, v0 / jnp.linalg.norm(v0), None, length=num_iters)
  s = jnp.linalg.norm(j_block(v[:, None]))
  return _estimate(fn, params, z, v, _residual(op(v), v, s), num_iters)


def get_estimator(name: str, num_iters: int = 2, block_size: int = 1, cg_iters: int = 10):
  """The estimator `f(fn, params, z, key) -> SVEstimate` called `name`, options bound."""
  if name == 'exact_logdet':
    return exact_logdet
  if name == 'exact_smin':
    return exact_smin
  if name == 'lobpcg':
    return lambda fn, params, z, key: lobpcg(fn, params, z, key, num_iters, block_size)
  if name == 'inverse_cg':
    return lambda fn, params, z, key: inverse_cg(fn, params, z, key, num_iters, cg_iters)
  raise ValueError(f'Unknown entropy estimator {name!r}; valid: {", ".join(ESTIMATORS)}.')


def map_latents(fn: Callable, xs, chunk: int = 0):
  """fn mapped over the leading axis of the arrays xs (a tuple): vmapped over all B at once
  (chunk 0 or >= B), or `chunk` at a time in a loop (`jax.lax.map`) with each chunk
  rematerialised in the backward pass (`jax.checkpoint`), which divides the memory of
  per-latent d-column Jacobians (the exact estimators), forward and backward, by about B / chunk
  for one extra forward pass. Same values."""
  if chunk < 0:
    raise ValueError(f'latent chunk must be >= 0 (0: all latents at once), got {chunk}.')
  if chunk == 0 or chunk >= xs[0].shape[0]:
    return jax.vmap(fn)(*xs)
  return jax.lax.map(jax.checkpoint(lambda args: fn(*args)), xs, batch_size=chunk)


def batched_log_volume(estimator, fn: GenFn, params, z: Array, key: Array,
                       chunk: int = 0) -> SVEstimate:
  """The estimator on each latent of z (B, d), one PRNG key per sample (`map_latents`)."""
  keys = jax.random.split(key, z.shape[0])
  return map_latents(lambda zi, ki: estimator(fn, params, zi, ki), (z, keys), chunk)


def batched_reuse_vectors(fn: GenFn, params, z: Array, previous: SVEstimate) -> SVEstimate:
  """`previous` re-evaluated at `params`: value = d log ||J(z) v|| with its vectors v held fixed
  (one JVP per sample instead of a solve). At the parameters and latents the vectors were found
  for, this is the estimate itself, value and gradient (envelope theorem); the train step's
  generator update uses it to take the vectors of the energy update it follows."""
  values = jax.vmap(lambda zi, vi: log_volume(fn, params, zi, vi))(z, previous.vector)
  return previous.replace(value=values)


def log_volume(fn: GenFn, params, z: Array, v: Array | None) -> Array:
  """The log-volume term at one z as a function of z: 1/2 log det J^T J when v is None,
  else d log ||J(z) v|| with v fixed. -log p_g(G(z)) = 1/2||z||^2 + log_volume + const."""
  if v is None:
    if getattr(fn, 'has_log_volume', False):   # the generator's closed form (generator.PerSample)
      return fn.log_volume(params, z)
    return _logdet_from_jacobian(jacobian(fn, params, z))
  return z.shape[-1] * jnp.log(smin_from_vector(fn, params, z, v))


class JacobianTerms:
  """The generator-Jacobian terms as config.bounds.jacobian sets them (bounds/jacobian.py),
  shared by the SV entropy bound and the GP upper bound's score of -log p_g: the s_1 estimator
  (`get_estimator`), the latent subset (`latents`), the latent chunks (`map_latents`) and the
  BatchNorm statistics inside the Jacobian (bibound_jax/generator.py)."""

  def __init__(self, section):
    self.section = section
    self.estimator = get_estimator(section.estimator, num_iters=section.num_iters,
                                   block_size=section.block_size, cg_iters=section.cg_iters)
    self.exact_logdet = section.estimator == 'exact_logdet'   # no s_1 vectors to share
    self.batch_norm = section.batch_norm
    self.latent_chunk = section.latent_chunk

  def latents(self, z: Array) -> Array:
    """The latents of the Jacobian terms: every (B / num_latents)-th latent of z (B, d)."""
    n = self.section.num_latents
    if n <= 0 or n >= z.shape[0]:
      return z
    return z[::z.shape[0] // n][:n]

  def estimate(self, fn: GenFn, variables, z: Array, key: Array) -> SVEstimate:
    """The s_1 estimator on every latent of z (already the Jacobian subset)."""
    return batched_log_volume(self.estimator, fn, variables, z, key, self.latent_chunk)


class SVBound(base.LowerBound):
  """`sv`: H[p_g] >= H[p0] + E_z[d log s_1(J(z))] (or E_z[1/2 log det J^T J] with
  exact_logdet), for an injective generator, with the Jacobian settings of config.bounds.jacobian
  (bounds/jacobian.py). The term is the batch mean of `SVEstimate.value`; after a GP energy
  update at the same generator parameters it reuses that update's latents and s_1 vectors
  (`share_vectors`): at the parameters the vectors were solved for, d log ||J(z) v|| with v
  fixed has the estimate's value and gradient (envelope theorem), so the entropy term costs one
  JVP per latent instead of a second solve."""
  name = 'sv'
  uses_jacobian = True
  DEFAULTS = dict(share_vectors=True)
  MOVED = {'bounds.share_sv': 'bounds.sv.share_vectors'}

  def __init__(self, config):
    super().__init__(config)
    self.jacobian = JacobianTerms(config.bounds.jacobian)

  def bounds_nll(self, data_dim: int, latent_dim: int) -> bool:
    return data_dim == latent_dim   # else H is a d-dimensional surface's entropy

  def reuses(self, carry) -> bool:
    return isinstance(carry, SVEstimate) and bool(self.section.share_vectors)

  def entropy(self, inputs: base.GeneratorInputs):
    gen, z = inputs.generator, inputs.z
    fn = gen.per_sample()
    variables = gen.jacobian_variables(inputs.params, z, self.jacobian.batch_norm)
    z_jac = self.jacobian.latents(z)
    if self.jacobian.exact_logdet:   # the value itself is differentiated (no vectors)
      est = self.jacobian.estimate(fn, variables, z_jac, inputs.key)
    else:
      # Solve for the s_1 vectors outside the differentiated graph (or take the GP's), then
      # differentiate d log ||J v|| with v fixed: one JVP per latent. Inside the gradient, a
      # solve over chunks of latents (latent_chunk > 0, rematerialised in the backward pass)
      # would run twice.
      previous = inputs.carry
      if previous is None:
        previous = self.jacobian.estimate(fn, sg(variables), z_jac, inputs.key)
      est = batched_reuse_vectors(fn, variables, z_jac, previous)
    log_vol = jnp.mean(est.value)
    return log_vol, {
        'entropy': gaussian_entropy(z.shape[-1]) + sg(log_vol),
        'sv/smin': jnp.mean(est.smin),
        'sv/residual': jnp.mean(est.residual),
        'sv/iterations': jnp.mean(est.iterations.astype(jnp.float32)),
    }

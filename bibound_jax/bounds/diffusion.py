"""Upper bound 2: the diffusion (denoising score matching) bound on KL(p_g || p_theta), the bound
`diff` (`DiffusionBound`, bottom; docs/bounds.md, "The diffusion upper bound").

A time-dependent energy E_theta(x, t), t in [0, T], with E_theta(x, 0) the EBM. Generator samples
x_0 = G(z) are diffused by the VP SDE  dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw,  so that

    x_t = alpha_t x_0 + sigma_t eps,   alpha_t = exp(-1/2 int_0^t beta),  sigma_t^2 = 1 - alpha_t^2,

with beta linear from beta_min to beta_max and g(t)^2 = beta(t). IF the model family q_t =
exp(-E_theta(., t)) / Z_t evolves under the same SDE (the Fokker-Planck condition the paper
flags as open), then

    KL(p_g || p_theta) <= KL(p_{g,T} || q_T)
        + 1/2 int_0^T g(t)^2 E_{p_{g,t}} ||grad_x E(x, t) + grad_x log p_{g,t}(x)||^2 dt.

**The Fokker-Planck condition is NOT enforced here**: nothing ties E(., t) for t > 0 to the
diffusion of exp(-E(., 0)), so the inequality is a motivated surrogate, not a guarantee, for a
general energy network. The terminal KL(p_{g,T} || q_T) is also dropped (not computed).

Denoising score matching replaces the unknown score of p_{g,t} by the conditional one,
grad_x log p(x_t | x_0) = -eps / sigma_t:

    DSM = 1/2 E_{t ~ U(t_min, T), x_0 = sg G(z), eps} lambda(t) ||grad_x E(x_t, t) - eps/sigma_t||^2

Sign: the model score is -grad_x E and the DSM target for the score is -eps / sigma_t, so grad_x E
is compared with +eps / sigma_t. DSM equals the explicit score-matching term plus a constant
C >= 0 that does not depend on theta (by Jensen), so it has the same theta-gradient and, being
larger, still upper-bounds it. lambda(t) = g(t)^2 = beta(t) (likelihood weighting, the bound's
own weighting) or lambda(t) = sigma_t^2 (the usual unweighted loss, for reference). Note that
DSM is an *average* over t; the integral in the bound is (T - t_min) * DSM (absorbed in w_diff).

Importance sampling of t (Song et al. 2021, "Maximum likelihood training of score-based diffusion
models"): draw t from p(t) proportional to g(t)^2 / sigma_t^2 on [t_min, T], whose antiderivative
is F(t) = log(exp(int_0^t beta) - 1), so t is drawn exactly by inverting F, and divide by
(T - t_min) p(t) so the estimate stays unbiased for the same DSM. With likelihood weighting the
per-sample weight becomes the constant Z / (T - t_min), Z = F(T) - F(t_min), which removes the
1/sigma_t^2 blow-up near t_min.

Score matching fits grad_x E only: it leaves each separated mode's depth E(mode) free, and on the
toy the depths of E(., 0) drift apart by hundreds of nats. An energy penalty (`energy_l2` = a,
as in Du & Mordatch 2019) adds a (mean E(x_data)^2 + mean E(x_fake)^2) >= 0 to the term: B grows,
so L_up stays above whatever w DSM bounds, and the penalty ties the depths to a common level.

Only the energy receives gradients: x_0 (generator samples) enters as a stop-gradient.
energy_t_fn(x (B, ...), t (B,)) -> (B,) must treat samples independently (grad of the sum is the
stack of per-sample input gradients).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from bibound_jax import config_schema
from bibound_jax.bounds import base

Array = jax.Array
sg = jax.lax.stop_gradient


@dataclasses.dataclass(frozen=True)
class VPSDE:
  """Variance-preserving SDE with beta(t) = beta_min + (beta_max - beta_min) t / T.

  Hashable (usable as a static jit argument); every method is elementwise in t.
  """
  beta_min: float = 0.1
  beta_max: float = 20.0
  T: float = 1.0

  @property
  def _slope(self) -> float:
    return (self.beta_max - self.beta_min) / self.T

  def beta(self, t):
    """beta(t), linear from beta_min (t = 0) to beta_max (t = T)."""
    return self.beta_min + self._slope * t

  def int_beta(self, t):
    """int_0^t beta(s) ds = beta_min t + 1/2 (beta_max - beta_min) t^2 / T."""
    return self.beta_min * t + 0.5 * self._slope * t * t

  def int_beta_inverse(self, b):
    """The t with int_beta(t) = b (b >= 0; needs beta_min > 0 or beta_max > beta_min).

    Root of 1/2 k t^2 + beta_min t - b = 0 written as 2b / (beta_min + sqrt(beta_min^2 + 2kb)),
    which is stable also for k = 0.
    """
    return 2.0 * b / (self.beta_min + jnp.sqrt(self.beta_min**2 + 2.0 * self._slope * b))

  def alpha(self, t):
    """alpha_t = exp(-1/2 int_0^t beta): the mean scale of x_t given x_0."""
    return jnp.exp(-0.5 * self.int_beta(t))

  def sigma2(self, t):
    """sigma_t^2 = 1 - alpha_t^2, by expm1 (accurate for small t)."""
    return -jnp.expm1(-self.int_beta(t))

  def sigma(self, t):
    """sigma_t = sqrt(1 - alpha_t^2): the noise scale of x_t given x_0."""
    return jnp.sqrt(self.sigma2(t))

  def g2(self, t):
    """Squared diffusion coefficient g(t)^2 = beta(t)."""
    return self.beta(t)

  def marginal(self, x0: Array, t: Array, eps: Array) -> Array:
    """x_t = alpha_t x_0 + sigma_t eps, t of shape (B,) broadcast over x0's trailing axes."""
    return _expand(self.alpha(t), x0) * x0 + _expand(self.sigma(t), x0) * eps


def _expand(v: Array, x: Array) -> Array:
  """(B,) -> (B, 1, ..., 1) to broadcast against x (B, ...)."""
  return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))


def importance_log_normaliser(sde: VPSDE, t_min: float) -> Array:
  """Z = F(T) - F(t_min), F(t) = log(exp(int_beta(t)) - 1) = int_beta(t) + log sigma_t^2."""
  return _is_antiderivative(sde, sde.T) - _is_antiderivative(sde, t_min)


def _is_antiderivative(sde: VPSDE, t):
  b = sde.int_beta(jnp.asarray(t))
  return b + jnp.log(-jnp.expm1(-b))


def importance_density(sde: VPSDE, t: Array, t_min: float) -> Array:
  """p(t) = (g(t)^2 / sigma_t^2) / Z on [t_min, T]: the importance-sampling proposal for t."""
  return sde.g2(t) / sde.sigma2(t) / importance_log_normaliser(sde, t_min)


def sample_importance_time(key: Array, shape, sde: VPSDE, t_min: float, dtype=jnp.float32) -> Array:
  """t ~ p(t) proportional to g(t)^2 / sigma_t^2 on [t_min, T], by inverting its CDF exactly.

  F(t) = u F(T) + (1 - u) F(t_min), then int_beta(t) = softplus(F) and t from `int_beta_inverse`.
  """
  u = jax.random.uniform(key, shape, dtype)
  f_lo, f_hi = _is_antiderivative(sde, t_min), _is_antiderivative(sde, sde.T)
  f = (f_lo + u * (f_hi - f_lo)).astype(dtype)
  return jnp.clip(sde.int_beta_inverse(jax.nn.softplus(f)), t_min, sde.T)


def dsm_at(energy_t_fn: Callable, x0: Array, t: Array, eps: Array, sde: VPSDE,
           likelihood_weighting: bool = True) -> Array:
  """Per-sample 1/2 lambda(t) ||grad_x E(x_t, t) - eps / sigma_t||^2 at given t (B,), eps.

  Computed as 1/2 (lambda / sigma_t^2) ||sigma_t grad_x E - eps||^2. x0 is a stop-gradient.
  """
  x0 = sg(x0)
  x_t = sde.marginal(x0, t, eps)
  grad = jax.grad(lambda x: jnp.sum(energy_t_fn(x, t)))(x_t)
  resid = _expand(sde.sigma(t), x0) * grad - eps
  sq = jnp.sum(jnp.reshape(resid * resid, (x0.shape[0], -1)), axis=-1)
  lam_over_s2 = sde.g2(t) / sde.sigma2(t) if likelihood_weighting else jnp.ones_like(t)
  return 0.5 * lam_over_s2 * sq


def dsm_per_sample(energy_t_fn: Callable, x0: Array, key: Array, sde: VPSDE, t_min: float = 1e-3,
                   likelihood_weighting: bool = True,
                   importance_sampling: bool = False) -> tuple[Array, Array]:
  """Unbiased per-sample DSM estimates (B,) and the times t (B,) they used.

  One t and one eps per sample. Uniform t: value = 1/2 lambda(t) ||.||^2. Importance-sampled t:
  value = 1/2 lambda(t) ||.||^2 / ((T - t_min) p(t)), whose mean is the same DSM.
  """
  k_t, k_eps = jax.random.split(key)
  b, dtype = x0.shape[0], x0.dtype
  if importance_sampling:
    t = sample_importance_time(k_t, (b,), sde, t_min, dtype)
  else:
    t = jax.random.uniform(k_t, (b,), dtype, minval=t_min, maxval=sde.T)
  eps = jax.random.normal(k_eps, x0.shape, dtype)
  values = dsm_at(energy_t_fn, x0, t, eps, sde, likelihood_weighting)
  if importance_sampling:
    values = values / ((sde.T - t_min) * importance_density(sde, t, t_min))
  return values, t


def dsm_loss(energy_t_fn: Callable, x0: Array, key: Array, sde: VPSDE, t_min: float = 1e-3,
             likelihood_weighting: bool = True, importance_sampling: bool = False) -> Array:
  """DSM = 1/2 E_{t ~ U(t_min, T), eps}[lambda(t) ||grad_x E(x_t, t) - eps / sigma_t||^2].

  The batch mean of `dsm_per_sample`; differentiable in the energy's parameters only.
  """
  values, _ = dsm_per_sample(energy_t_fn, x0, key, sde, t_min, likelihood_weighting,
                             importance_sampling)
  return jnp.mean(values)


def diffusion_upper_term(dsm: Array, w_diff: float) -> Array:
  """upper_bound_term = w_diff * DSM (w_diff = T - t_min turns the average into the integral)."""
  return w_diff * dsm


class DiffusionBound(base.UpperBound):
  """`diff`: upper term w_diff * DSM of the generator's samples along the VP SDE, with a
  time-conditioned energy E(x, t) (E(x, 0) is the EBM). w_diff = T - t_min turns the average
  over t into the bound's integral.

  Config: weight w_diff; beta_min, beta_max (the SDE); t_min; likelihood_weighting
  (lambda = g^2, else sigma_t^2); importance_sampling of t; energy_l2, the weight of a penalty
  on E's values (0: none)."""
  name = 'diff'
  DEFAULTS = dict(weight=1e-3, beta_min=0.1, beta_max=20.0, t_min=1e-3,
                  likelihood_weighting=True, importance_sampling=True, energy_l2=0.0)
  ADDED = {'energy_l2': 0.0}
  MOVED = {f'bounds.diff_{k}': f'bounds.diff.{k}' for k in (
      'weight', 'beta_min', 'beta_max', 't_min', 'likelihood_weighting', 'importance_sampling')}
  # A defensive mixture of uniform draws of t in the importance sampling; no result used it.
  REMOVED = {'bounds.diff.uniform_fraction': (0.0, 'e83a7b6')}

  def objective_warnings(self) -> list[str]:
    w = self.section.weight
    if w >= 1.0:
      return []
    return [f'bounds.diff.weight = {w:g} < 1: w_diff DSM is below the diffusion bound\'s own '
            'weight, so the energy objective no longer bounds the KL term (docs/bounds.md).']

  @classmethod
  def validate(cls, config) -> None:
    config_schema.positive(config, 'bounds.diff.weight', 'bounds.diff.t_min',
                           'bounds.diff.beta_min', 'bounds.diff.beta_max')
    config_schema.positive(config, 'bounds.diff.energy_l2', allow_zero=True)

  def bounds_nll(self, data_dim: int, latent_dim: int) -> bool:
    # Meant as a bound on the NLL on R^D (its generator is the MI bound's noisy one or an
    # injective map of R^D), but only under the Fokker-Planck condition, which is not
    # enforced, and at weight >= 1: the evaluation checks it rather than trusting it.
    return True

  def network_options(self) -> dict:
    return {'time_conditioned': True}

  def term(self, inputs: base.EnergyInputs):
    s = self.section
    dsm = dsm_loss(inputs.energy_t_fn, inputs.x_fake, jax.random.split(inputs.key, 3)[2],
                   VPSDE(beta_min=s.beta_min, beta_max=s.beta_max), t_min=s.t_min,
                   likelihood_weighting=s.likelihood_weighting,
                   importance_sampling=s.importance_sampling)
    return diffusion_upper_term(dsm, s.weight), {'dsm': dsm}, None

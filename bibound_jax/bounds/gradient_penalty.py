"""Upper bound 1: the gradient-penalty (GP) surrogate for KL(p_g || p_theta), the bound `gp`
(`GPBound`, bottom; docs/bounds.md, "The GP upper bound").

The paper bounds KL(p_g || p_theta) by a gradient term that vanishes when p_theta = p_g. On the
generator manifold it is evaluated in latent coordinates along a random probe v0 ~ N(0, I_d):

    a(z) = grad_x E(G(z)) . (J v0)          = v0 . grad_z E(G(z)); J v0 held fixed
    s(z) = v0 . grad_z[-log p_g(G(z))],     -log p_g(G(z)) = 1/2||z||^2 + log_volume(z) + const
    GP   = 1/2 mean_batch (a(z) - s(z))^2
    upper_bound_term = relu(w * GP - zeta)

with log_volume = 1/2 log det J^T J (exact) or d log ||J v|| with the s_1 vector v held fixed.
Since E_v0[(c . v0)^2] = ||c||^2, GP is an unbiased estimate of the latent Fisher divergence
1/2 ||grad_z E(G(z)) + grad_z log p_g(G(z))||^2. Only the energy receives gradients (double
backprop through grad_x E); G(z), J v0 and s(z) are stop-gradients.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from bibound_jax import config_schema
from bibound_jax.bounds import base
from bibound_jax.bounds import entropy

Array = jax.Array
sg = jax.lax.stop_gradient


def manifold_score(gen_fn, gen_params, z: Array, probe: Array, v: Array | None) -> Array:
  """s(z) = probe . grad_z[-log p_g(G(z))] for one z (no gradient)."""
  logvol = lambda zz: entropy.log_volume(gen_fn, gen_params, zz, v)
  _, dlogvol = jax.jvp(logvol, (z,), (probe,))
  return sg(jnp.dot(z, probe) + dlogvol)


def gp_fisher(energy_fn: Callable[[Array], Array], gen_fn, gen_params, z: Array, probes: Array,
              vectors: Array | None = None, chunk: int = 0) -> tuple[Array, Array]:
  """Per-sample 1/2 (a - s)^2 and the pair (a, s) stacked, for a batch of latents.

  energy_fn: batched energy x (B, ...) -> (B,), per-sample independent, differentiable in its
    parameters (closed over). gen_fn(params, z) -> x on one sample, in inference mode.
  z, probes: (B, d). vectors: (B, d) s_1 vectors, or None for the exact log-determinant.
  chunk: latents per vmapped call of the score s (`entropy.map_latents`; 0 = all).
  """
  gen_params = sg(gen_params)
  z = sg(z)
  one = lambda zi, pi: jax.jvp(lambda zz: gen_fn(gen_params, zz), (zi,), (pi,))
  x, u = jax.vmap(one)(z, probes)
  _, a = jax.jvp(energy_fn, (sg(x),), (sg(u),))
  if vectors is None:
    s = entropy.map_latents(lambda zi, pi: manifold_score(gen_fn, gen_params, zi, pi, None),
                            (z, probes), chunk)
  else:
    s = entropy.map_latents(lambda zi, pi, vi: manifold_score(gen_fn, gen_params, zi, pi, vi),
                            (z, probes, vectors), chunk)
  return 0.5 * (a - s) ** 2, jnp.stack([a, s])


def gp_upper_term(gp: Array, weight, margin: float) -> Array:
  """relu(w * GP - zeta)."""
  return jax.nn.relu(weight * gp - margin)


def gp_weight(step, weight: float, schedule: str = 'constant', decay=(2307.0, 0.55)):
  """The GP weight w_t at iteration `step` from the configured `weight` a.

  'constant': w_t = a.   'decay': w_t = a (b + t)^(-c) with (b, c) = (2307, 0.55); the authors'
  toy uses a = 0.7: about 1e-2 at t = 0 and 1e-3 at t = 150k.
  """
  if schedule == 'constant':
    return jnp.asarray(weight, jnp.float32)
  if schedule == 'decay':
    b, c = decay
    return weight * (b + jnp.asarray(step, jnp.float32)) ** (-c)
  raise ValueError(f"Unknown GP weight schedule {schedule!r}; valid: constant, decay.")


class GPBound(base.UpperBound):
  """`gp`: upper term relu(w GP - zeta) with GP = 1/2 mean (a - s)^2 on the generator's
  latents. The score s uses the log-volume of the Jacobian settings (config.bounds.jacobian:
  bounds/jacobian.py), whose s_1 estimate it hands on as the carry.

  Config: weight a; schedule 'constant' (w = a) or 'decay' (w_t = a (2307 + t)^-0.55, the
  authors' toy schedule with a = 0.7; `gp_weight`); margin zeta >= 0; energy_l2, the weight
  of a penalty on E's values (`base.UpperBound.penalty`; 0: none), not part of the bound."""
  name = 'gp'
  uses_jacobian = True
  DEFAULTS = dict(weight=1e-3, schedule='constant', margin=0.0, energy_l2=0.0)
  ADDED = {'energy_l2': 0.0}
  MOVED = {'bounds.gp_weight': 'bounds.gp.weight', 'bounds.gp_weight_schedule':
           'bounds.gp.schedule', 'bounds.gp_margin': 'bounds.gp.margin'}
  # Stretched the decay over train.num_steps (a study of the toy's schedule).
  REMOVED = {'bounds.gp.decay_horizon': (0, 'e83a7b6')}

  def __init__(self, config):
    super().__init__(config)
    self.jacobian = entropy.JacobianTerms(config.bounds.jacobian)

  @classmethod
  def validate(cls, config) -> None:
    config_schema.choice(config, 'bounds.gp.schedule', ('constant', 'decay'))
    config_schema.positive(config, 'bounds.gp.weight', 'bounds.gp.margin',
                           'bounds.gp.energy_l2', allow_zero=True)

  def bounds_nll(self, data_dim: int, latent_dim: int) -> bool:
    return data_dim == latent_dim   # else KL(p_g || p_theta) = +inf for a surface's p_g

  def term(self, inputs: base.EnergyInputs):
    gen = inputs.generator
    fn = gen.per_sample()
    variables = sg(gen.jacobian_variables(gen.params, inputs.z, self.jacobian.batch_norm))
    z = self.jacobian.latents(inputs.z)
    k_probe, k_est, _ = jax.random.split(inputs.key, 3)
    carry = None
    if not self.jacobian.exact_logdet:   # the s_1 vectors the score differentiates along
      carry = sg(self.jacobian.estimate(fn, variables, z, k_est))
    probes = jax.random.normal(k_probe, z.shape, z.dtype)
    per_sample, _ = gp_fisher(inputs.energy_fn, fn, variables, z, probes,
                              None if carry is None else carry.vector,
                              self.jacobian.latent_chunk)
    gp = jnp.mean(per_sample)
    weight = gp_weight(inputs.step, self.section.weight, self.section.schedule)
    return gp_upper_term(gp, weight, self.section.margin), {'gp': gp}, carry

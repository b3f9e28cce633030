"""The baselines, as bounds that share the bidirectional code path (docs/bounds.md, "Baselines").

  none:     0                                         (lower bound only: MEG/VERA-style; diverges)
  r1:       w * mean ||grad_x E(x_data)||^2           (zero-centred penalty; the authors' EBM_0GP)
  wgan_gp:  w * mean (||grad_x E(x_hat)|| - 1)^2,     x_hat = eps x_data + (1 - eps) x_fake,
                                                      eps ~ U(0, 1) per sample (Gulrajani et al.)
`energy_fn` is batched, x (B, ...) -> (B,), and per-sample independent, so the gradient of
sum(E) with respect to x is the stack of per-sample input gradients.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from bibound_jax import config_schema
from bibound_jax.bounds import base

Array = jax.Array


def input_grad_sq_norm(energy_fn, x: Array) -> Array:
  """||grad_x E(x)||^2 per sample, differentiable in the energy parameters (double backprop)."""
  g = jax.grad(lambda xx: jnp.sum(energy_fn(xx)))(x)
  return jnp.sum(jnp.reshape(g, (g.shape[0], -1)) ** 2, axis=-1)


def r1_penalty(energy_fn, x_data: Array, weight: float) -> Array:
  """w * mean ||grad_x E(x_data)||^2."""
  return weight * jnp.mean(input_grad_sq_norm(energy_fn, x_data))


def wgan_gp_penalty(energy_fn, x_data: Array, x_fake: Array, key: Array, weight: float) -> Array:
  """w * mean (||grad_x E(x_hat)|| - 1)^2 on random interpolates x_hat."""
  eps = jax.random.uniform(key, (x_data.shape[0],) + (1,) * (x_data.ndim - 1), x_data.dtype)
  x_hat = eps * x_data + (1.0 - eps) * jax.lax.stop_gradient(x_fake)
  norm = jnp.sqrt(input_grad_sq_norm(energy_fn, x_hat) + 1e-12)
  return weight * jnp.mean((norm - 1.0) ** 2)


class NoEntropy(base.LowerBound):
  """Lower bound `none`: no entropy term (a WGAN-style generator, loss_G = mean E(G(z)))."""
  name = 'none'
  has_entropy = False

  def entropy(self, inputs: base.GeneratorInputs):
    del inputs
    return None, {}


class NoUpper(base.UpperBound):
  """Upper bound `none`: no regulariser, so the energy minimises the LOWER bound (the
  MEG/VERA-style minimax game, which diverges)."""
  name = 'none'

  def term(self, inputs: base.EnergyInputs):
    del inputs
    return jnp.zeros(()), {}, None


class R1Bound(base.UpperBound):
  """`r1`: w * mean ||grad_x E(x_data)||^2 (not a bound on the KL; the authors' EBM_0GP)."""
  name = 'r1'
  DEFAULTS = dict(weight=1.0)
  MOVED = {'bounds.r1_weight': 'bounds.r1.weight'}

  @classmethod
  def validate(cls, config) -> None:
    config_schema.positive(config, 'bounds.r1.weight', allow_zero=True)

  def term(self, inputs: base.EnergyInputs):
    return r1_penalty(inputs.energy_fn, inputs.x_data, self.section.weight), {}, None


class WGANGPBound(base.UpperBound):
  """`wgan_gp`: w * mean (||grad_x E(x_hat)|| - 1)^2 on random interpolates (not a bound on
  the KL; the WGAN-GP critic's penalty)."""
  name = 'wgan_gp'
  DEFAULTS = dict(weight=10.0)
  MOVED = {'bounds.wgan_gp_weight': 'bounds.wgan_gp.weight'}

  @classmethod
  def validate(cls, config) -> None:
    config_schema.positive(config, 'bounds.wgan_gp.weight', allow_zero=True)

  def term(self, inputs: base.EnergyInputs):
    key = jax.random.split(inputs.key, 3)[2]
    return wgan_gp_penalty(inputs.energy_fn, inputs.x_data, inputs.x_fake, key,
                           self.section.weight), {}, None

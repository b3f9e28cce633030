"""Lower bound 2: the entropy of a noisy generator from a lower bound on mutual information, the
bound `mi` (`MIBound`, bottom; docs/bounds.md, "The MI entropy bound").

Add noise to the generator output: x = G(z) + sigma * eps, eps ~ N(0, I_D), z ~ p0 = N(0, I_d).
Then p_g is a proper density on R^D and

    H[p_g] = I(X; Z) + H[X | Z],        H[X | Z] = D/2 log(2 pi e sigma^2),

so any lower bound on I(X; Z) gives a lower bound on H[p_g] (`entropy_lower_bound`). *Our choice* of
MI bounds (the paper's exact form was not available), each with its own small network trained to
maximise it jointly with G:

  ba        Barber-Agakov:  I >= H(Z) + E_{p(x,z)}[log q_phi(z | x)], q_phi a diagonal Gaussian
            encoder (`ba_bound`). A true bound for every q_phi, tight iff q_phi is the posterior;
            it does not saturate. The default.
  infonce   I >= log K - InfoNCE loss over K in-batch negatives with a critic T(x, z)
            (`infonce_bound`). A true bound for every critic; it never exceeds log K.
  jsd       the Deep InfoMax / MEG Jensen-Shannon estimator (`jsd_estimator`). NOT a bound on I.

Network conventions (see `bibound_jax.models.mi`), with x batched (K, ...) and z (K, d):
  encoder_apply(params, x) -> (mu, logstd), each (K, d)          for 'ba'
  critic_apply(params, x, z) -> scores (K, K), scores[i, j] = T(x_i, z_j)   for 'infonce', 'jsd'
Row i, column i is the joint pair (x_i, z_i); the off-diagonal pairs are draws from p(x) p(z)
(shuffled pairs). `lambda p, *a: module.apply({'params': p}, *a)` serves both signatures.

Every estimate is a Monte Carlo average over the batch, so "bound" means in expectation; the
per-sample values are returned too.

In the train step (`mi_losses` is the single entry point for both uses):

  MI network (a third TrainState):       loss = -mi(phi; sg x_noisy, z)
  generator:                             loss_G = mean E(x_noisy) - lambda_H (mi(sg phi; x_noisy, z)
                                                                             + H[X | Z](sigma))
with x_noisy = G(z) + sigma * eps reparameterised (gradients reach G, and sigma if learned). Both
networks *maximise* the same MI bound; there is no minimax between them.
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from bibound_jax import config_schema
from bibound_jax.bounds import base

Array = jax.Array
sg = jax.lax.stop_gradient

MI_KINDS = ('ba', 'infonce', 'jsd')


def add_output_noise(x: Array, sigma, key: Array) -> Array:
  """x + sigma * eps, eps ~ N(0, I): reparameterised, differentiable in x and sigma."""
  return x + sigma * jax.random.normal(key, x.shape, x.dtype)


def conditional_entropy(D: int, sigma) -> Array:
  """H[X | Z] = D/2 log(2 pi e sigma^2) for x = G(z) + sigma eps in R^D; differentiable in sigma."""
  return 0.5 * D * (math.log(2.0 * math.pi * math.e) + 2.0 * jnp.log(sigma))


def entropy_lower_bound(mi_value, D: int, sigma) -> Array:
  """H[p_g] >= mi_value + H[X | Z] for any lower bound mi_value <= I(X; Z)."""
  return mi_value + conditional_entropy(D, sigma)


def gaussian_log_prob(z: Array, mu: Array, logstd: Array) -> Array:
  """log N(z; mu, diag(exp(2 logstd))), summed over the last axis."""
  r = (z - mu) * jnp.exp(-logstd)
  return -0.5 * jnp.sum(r * r + 2.0 * logstd + math.log(2.0 * math.pi), axis=-1)


def ba_bound(encoder_apply: Callable, enc_params, x: Array, z: Array) -> tuple[Array, Array]:
  """Barber-Agakov: I(X; Z) >= H(Z) + E_{p(x, z)}[log q(z | x)].

  q(z | x) = N(mu(x), diag(exp(2 logstd(x)))) from `encoder_apply(params, x) -> (mu, logstd)`.

  H(Z) = d/2 log(2 pi e) assumes z ~ N(0, I_d). The gap is E_x KL(p(z | x) || q(z | x)) >= 0, so
  the bound holds for every encoder and is exact at the true posterior. (x_i, z_i) must be joint
  draws. Returns (batch mean, per-sample values (K,)).
  """
  d = z.shape[-1]
  mu, logstd = encoder_apply(enc_params, x)
  h_z = 0.5 * d * math.log(2.0 * math.pi * math.e)
  per_sample = h_z + gaussian_log_prob(z, mu, logstd)
  return jnp.mean(per_sample), per_sample


def infonce_bound(critic_apply: Callable, critic_params, x: Array, z: Array) -> tuple[Array, Array]:
  """InfoNCE: I(X; Z) >= E[ T(x_i, z_i) - log (1/K sum_j exp T(x_i, z_j)) ].

  (van den Oord et al. 2018; Poole et al. 2019.)

  The critic scores all K x K pairs of the batch; for row i the other K - 1 latents are the
  negatives. Each per-sample term is log K + T_ii - logsumexp_j T_ij <= log K (logsumexp >= its
  largest term), so the estimate saturates at log K whatever the critic. Returns (batch mean,
  per-sample values (K,)).
  """
  scores = critic_apply(critic_params, x, z)
  k = scores.shape[0]
  # T_ii - logsumexp_j T_ij <= 0 in exact arithmetic, but under jit XLA may recompute T_ii in
  # different fusions with different rounding (off by an ulp of |T|, 0.25 at |T| ~ 1e6), so the
  # ceiling is enforced explicitly; log K is added last.
  log_softmax_diag = jnp.minimum(jnp.diagonal(scores) - jax.nn.logsumexp(scores, axis=1), 0.0)
  per_sample = log_softmax_diag + math.log(k)
  return jnp.mean(per_sample), per_sample


def jsd_estimator(critic_apply: Callable, critic_params, x: Array, z: Array) -> tuple[Array, Array]:
  """Deep InfoMax / MEG Jensen-Shannon estimator. NOT a bound on I(X; Z).

      J = E_{p(x,z)}[-softplus(-T(x, z))] - E_{p(x)p(z)}[softplus(T(x, z'))]

  i.e. the negated logistic loss of classifying joint pairs (the diagonal of the K x K score
  matrix) against shuffled pairs (all off-diagonal entries). Its supremum over critics is
  2 JSD(p(x,z) || p(x)p(z)) - 2 log 2 <= 0, attained at T = log p(x,z) / (p(x) p(z)). The JSD is
  zero iff x and z are independent and grows with their dependence, which is why MEG maximises
  it, but J neither lower- nor upper-bounds I, so J + H[X|Z] is not an entropy bound. Kept for
  parity with MEG. Returns (batch mean, per-sample values (K,)) with per-sample
  -softplus(-T_ii) - mean_{j != i} softplus(T_ij). Needs K >= 2.
  """
  scores = critic_apply(critic_params, x, z)
  k = scores.shape[0]
  off = 1.0 - jnp.eye(k, dtype=scores.dtype)
  joint = -jax.nn.softplus(-jnp.diagonal(scores))
  marginal = jnp.sum(jax.nn.softplus(scores) * off, axis=1) / (k - 1)
  per_sample = joint - marginal
  return jnp.mean(per_sample), per_sample


def get_mi_fn(kind: str) -> Callable:
  """The estimator `f(apply, params, x, z) -> (mean, per_sample)` called `kind`."""
  fns = {'ba': ba_bound, 'infonce': infonce_bound, 'jsd': jsd_estimator}
  if kind not in fns:
    raise ValueError(f'Unknown MI estimator {kind!r}; valid: {", ".join(MI_KINDS)}.')
  return fns[kind]


def mi_losses(kind: str, net_apply: Callable, net_params, x_noisy: Array,
              z: Array) -> tuple[Array, dict]:
  """(mi_value, aux): the differentiable MI estimate named `kind` and scalar diagnostics.

  One function for both updates; the caller decides what is held fixed:
    MI network:  loss = -mi_losses(kind, apply, params, sg(x_noisy), z)[0], differentiated
                 w.r.t. the MI network's params;
    generator:   H_lo = entropy_lower_bound(mi_losses(kind, apply, sg(params), x_noisy, z)[0],
                                            D, sigma);
                 loss_G = mean E(x_noisy) - lambda_H * H_lo, differentiated w.r.t. G's params.
  x_noisy = G(z) + sigma * eps must be built from the same z (joint pairs). For 'ba' net_apply
  is the encoder, apply(params, x) -> (mu, logstd); otherwise apply(params, x, z) -> (K, K).
  aux: {'mi': value} (stop-gradient), plus 'mi/log_k' for 'infonce' (its ceiling; a value near
  it means the bound is saturated and K is too small).
  """
  value, _ = get_mi_fn(kind)(net_apply, net_params, x_noisy, z)
  aux = {'mi': sg(value)}
  if kind == 'infonce':
    aux['mi/log_k'] = jnp.asarray(math.log(z.shape[0]), value.dtype)
  return value, aux


class MIBound(base.LowerBound):
  """`mi`: H[p_g] >= I_lo(X; Z) + H[X | Z] for the noisy generator x = G(z) + sigma eps, with an
  MI network (encoder for 'ba', critic for 'infonce' / 'jsd') trained by its own update to
  maximise the same MI bound (`mi_net_loss`). The energy sees the noisy samples too.

  Config: estimator ('ba' | 'infonce' | 'jsd'); hidden (the MI network's widths; its
  learning rate is optim.lr_mi_net); sigma (the output noise), learned when learn_sigma
  (sigma = floor + exp(p), a parameter of the generator; models/noisy.py) with floor
  sigma_floor (docs/bounds.md, "The MI entropy bound")."""
  name = 'mi'
  DEFAULTS = dict(estimator='ba', hidden=(100, 100), sigma=0.05, learn_sigma=False,
                  sigma_floor=0.01)
  MOVED = {f'bounds.mi_{k}': f'bounds.mi.{k}' for k in (
      'estimator', 'hidden', 'sigma', 'learn_sigma', 'sigma_floor')}
  REMOVED = {
      'bounds.mi.lr': (config_schema.ANY, 'e83a7b6'),   # never read (optim.lr_mi_net is)
      # Noised the data the energy sees with the samples' sigma: one negative finding.
      'bounds.mi.noise_data': (False, 'e83a7b6'),
  }

  @classmethod
  def validate(cls, config) -> None:
    config_schema.choice(config, 'bounds.mi.estimator', MI_KINDS)
    config_schema.positive(config, 'bounds.mi.sigma')
    config_schema.positive(config, 'bounds.mi.sigma_floor', allow_zero=True)
    s = config.bounds.mi
    if s.learn_sigma and not s.sigma > s.sigma_floor:
      raise config_schema.ConfigError(
          f'config.bounds.mi.sigma = {s.sigma} must exceed config.bounds.mi.sigma_floor = '
          f'{s.sigma_floor} when learn_sigma is set.')

  def bounds_nll(self, data_dim: int, latent_dim: int) -> bool:
    return True   # the noisy generator G(z) + sigma eps has a density on R^D

  def network_options(self) -> dict:
    s = self.section
    return {'mi_net': {'kind': s.estimator, 'hidden': tuple(s.hidden)},
            'output_noise': (s.sigma, s.sigma_floor) if s.learn_sigma else None}

  def sigma(self, generator, params):
    """The output-noise scale: the generator's learned one, or the fixed config.bounds.mi.sigma."""
    if self.section.learn_sigma:
      return generator.noise_std(params)
    return jnp.asarray(self.section.sigma, jnp.float32)

  def samples(self, generator, params, z, key):
    x, stats = generator.sample(params, z)
    return add_output_noise(x, self.sigma(generator, params), key), stats

  def _apply(self, mi_net):
    return lambda p, *args: mi_net.apply_fn({'params': p}, *args)

  def mi_net_loss(self, mi_params, mi_net, x, z):
    """The MI network maximises the MI bound on fixed (stop-gradient) generator samples."""
    mi, _ = mi_losses(self.section.estimator, self._apply(mi_net), mi_params, sg(x), z)
    return -mi

  def entropy(self, inputs: base.GeneratorInputs):
    mi_net = inputs.mi_net
    mi, aux = mi_losses(self.section.estimator, self._apply(mi_net), sg(mi_net.params),
                        inputs.x, inputs.z)
    sigma = self.sigma(inputs.generator, inputs.params)
    h = entropy_lower_bound(mi, inputs.x[0].size, sigma)
    # With 'jsd' this is an estimate, not a bound (`jsd_estimator`).
    return h, {'entropy': sg(h), 'mi/value': aux['mi'], 'mi/sigma': sg(sigma)}

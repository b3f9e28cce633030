"""The MI network of the mutual-information entropy bound (docs/bounds.md, "The MI entropy bound").

  GaussianEncoder   x (K, ...) -> (mu, logstd), each (K, d): q(z | x) for the Barber-Agakov bound.
  SeparableCritic   (x, z) -> (K, K) scores f(x_i) . g(z_j): K forward passes per network;
                    the default critic for 'infonce' and 'jsd'.
  ConcatCritic      (x, z) -> (K, K) scores MLP([x_i, z_j]): K^2 forward passes. More flexible,
                    but costs K times more; use it for small D only.
Inputs x are flattened, so images work as well. `create_mi_model(kind, ...)` picks by name.
"""
from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from bibound_jax.models.toy import PRELU_INIT

CRITICS = ('separable', 'concat')


class MLP(nn.Module):
  """Dense -> PReLU blocks of widths `hidden`, then a linear map to `features` (its kernel
  initialised by `final_kernel_init`; zeros make the map start at its bias)."""
  hidden: Sequence[int]
  features: int
  final_kernel_init: Callable = nn.linear.default_kernel_init

  @nn.compact
  def __call__(self, h):
    for width in self.hidden:
      h = nn.PReLU(negative_slope_init=PRELU_INIT)(nn.Dense(width)(h))
    return nn.Dense(self.features, kernel_init=self.final_kernel_init)(h)


class GaussianEncoder(nn.Module):
  """q(z | x) = N(mu(x), diag(exp(2 logstd(x)))) from one MLP with a 2d-wide head.

  logstd = min_logstd + softplus(raw - min_logstd): a smooth floor that keeps log q finite when
  the posterior is sharp (at raw = 0 it is ~0, std ~1). hidden=() gives a linear encoder.
  """
  latent_dim: int
  hidden: Sequence[int] = (256, 256)
  min_logstd: float = -7.0

  @nn.compact
  def __call__(self, x, z=None):
    del z   # the signature of the critics, (x, z); the encoder reads x only
    h = jnp.reshape(x, (x.shape[0], -1))
    out = MLP(self.hidden, 2 * self.latent_dim)(h)
    mu, raw = jnp.split(out, 2, axis=-1)
    logstd = self.min_logstd + nn.softplus(raw - self.min_logstd)
    return mu, logstd


class SeparableCritic(nn.Module):
  """T(x, z) = f(x) . g(z) / sqrt(embed_dim), evaluated on all K x K pairs as one matrix product."""
  hidden: Sequence[int] = (256, 256)
  embed_dim: int = 32

  @nn.compact
  def __call__(self, x, z):
    fx = MLP(self.hidden, self.embed_dim, name='f')(jnp.reshape(x, (x.shape[0], -1)))
    gz = MLP(self.hidden, self.embed_dim, name='g')(z)
    return fx @ gz.T / jnp.sqrt(self.embed_dim).astype(fx.dtype)


class ConcatCritic(nn.Module):
  """T(x, z) = MLP([x, z]) on all K x K pairs by broadcasting: scores[i, j] = T(x_i, z_j)."""
  hidden: Sequence[int] = (256, 256)

  @nn.compact
  def __call__(self, x, z):
    k = x.shape[0]
    xf = jnp.reshape(x, (k, -1))
    pairs = jnp.concatenate([jnp.broadcast_to(xf[:, None], (k, z.shape[0], xf.shape[-1])),
                             jnp.broadcast_to(z[None], (k,) + z.shape)], axis=-1)
    return MLP(self.hidden, 1)(pairs)[..., 0]


def create_mi_model(kind: str, latent_dim: int, hidden: Sequence[int] = (256, 256),
                    critic: str = 'separable', embed_dim: int = 32) -> nn.Module:
  """The network for MI estimator `kind`: a GaussianEncoder for 'ba', a critic otherwise."""
  hidden = tuple(hidden)
  if kind == 'ba':
    return GaussianEncoder(latent_dim=latent_dim, hidden=hidden)
  if kind not in ('infonce', 'jsd'):
    raise ValueError(f"Unknown MI estimator {kind!r}; valid: ba, infonce, jsd.")
  if critic == 'separable':
    return SeparableCritic(hidden=hidden, embed_dim=embed_dim)
  if critic == 'concat':
    return ConcatCritic(hidden=hidden)
  raise ValueError(f'Unknown critic {critic!r}; valid: {", ".join(CRITICS)}.')

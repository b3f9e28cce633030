"""A generator with a learned output-noise scale, for the MI entropy bound (docs/bounds.md,
"The MI entropy bound").

x = G(z) + sigma * eps with sigma = floor + exp(log_sigma). The wrapper adds one parameter,
`log_sigma`, next to the wrapped generator's parameters (under 'base'), so the generator's
optimiser trains it with the generator's loss; `__call__` returns the noise-free G(z) (the
bound adds the noise), so every Jacobian-based tool still sees the deterministic map, and
`output_noise_std` returns sigma. The floor keeps H[X | Z] and the MI network's likelihood
finite when the generator would like to shrink the noise away.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp


def log_sigma_init(sigma: float, floor: float) -> float:
  """The parameter at which floor + exp(parameter) = sigma (needs sigma > floor)."""
  if not sigma > floor:
    raise ValueError(f'output noise sigma={sigma} must exceed its floor {floor}.')
  return math.log(sigma - floor)


class NoisyGenerator(nn.Module):
  base: nn.Module
  sigma_init: float = 0.1
  sigma_floor: float = 0.01

  @property
  def latent_dim(self) -> int:
    return self.base.latent_dim

  def setup(self):
    init = log_sigma_init(self.sigma_init, self.sigma_floor)
    self.log_sigma = self.param('log_sigma', lambda *_: init * 1.0, ())

  def __call__(self, z, train: bool = True):
    return self.base(z, train)

  def output_noise_std(self):
    """sigma = floor + exp(log_sigma)."""
    return self.sigma_floor + jnp.exp(self.log_sigma)

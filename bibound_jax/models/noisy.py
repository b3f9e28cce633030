"""A generator with a learnable output-noise scale, for the MI entropy bound (DESIGN.md s. 3).

x = G(z) + sigma * eps with sigma = floor + exp(log_sigma). The wrapper adds one parameter,
`log_sigma`, next to the wrapped generator's parameters (under 'base'), so it is trained by the
generator's optimiser with the generator's loss; `__call__` returns the noise-free G(z) (the
train step adds the noise), so every Jacobian-based tool still sees the deterministic map.
"""
from __future__ import annotations

import flax.linen as nn

from bibound_jax.bounds import mutual_info


class NoisyGenerator(nn.Module):
  base: nn.Module
  sigma_init: float = 0.1
  sigma_floor: float = 0.01

  @property
  def latent_dim(self) -> int:
    return self.base.latent_dim

  @nn.compact
  def __call__(self, z, train: bool = True):
    init = mutual_info.init_log_sigma_param(self.sigma_init, self.sigma_floor)
    self.param('log_sigma', lambda *_: init * 1.0, ())
    return self.base(z, train)

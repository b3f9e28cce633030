"""Divergence warnings: energies running away from the generator, named in the log."""
from __future__ import annotations

from absl import logging


class DivergenceMonitor:
  """Warns when E(fake) - E(real) or |E| of a seed passes train.divergence_gap /
  divergence_energy, once and then again each time that seed's excess over the threshold
  doubles."""

  def __init__(self, config):
    self.gap_threshold = config.train.divergence_gap
    self.energy_threshold = config.train.divergence_energy
    self.warned = {}   # seed -> the excess last warned about

  def __call__(self, scalars: dict, step: int, seed: int | None = None) -> bool:
    """Whether one seed's scalars pass the thresholds (logging a warning when its excess
    doubled; `seed` is named in it when given)."""
    gap = scalars['energy_fake'] - scalars['energy_real']
    size = max(abs(scalars['energy_fake']), abs(scalars['energy_real']))
    excess = max(gap / self.gap_threshold, size / self.energy_threshold)
    if excess <= 1.0:
      return False
    if excess >= 2.0 * self.warned.get(seed, 0.5):
      self.warned[seed] = excess
      logging.warning(
          'Divergence at iteration %d%s: E(fake) - E(real) = %.3g (threshold %g), max |E| = '
          '%.3g (threshold %g). The energy is running away from the generator; the '
          "lower-bound-only baseline (bounds.upper='none') is expected to do this. A WGAN "
          "critic's gap (bounds.upper='wgan_gp') is a distance estimate, large by design on "
          'images: raise train.divergence_gap to silence this.', step,
          '' if seed is None else f' (seed {seed})', gap, self.gap_threshold, size,
          self.energy_threshold)
    return True

  def check(self, step: int, per_seed: list[dict], seeds) -> list[int]:
    """The seeds whose scalars (`per_seed`, in the order of `seeds`) pass the thresholds;
    seeds are named in the warnings of a run of several."""
    named = len(seeds) > 1
    return [seed for seed, scalars in zip(seeds, per_seed)
            if self(scalars, step, seed if named else None)]

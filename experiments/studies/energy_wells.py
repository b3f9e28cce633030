"""How deep and how steep a 25-Gaussians toy energy's wells are, against the data's own: the wells
table of docs/studies/toy_mi_diff.md ("What runs away is the relative depth of the modes") and
its readings of where exp(-E)/Z leaks.

    python -m experiments.studies.energy_wells \
        --workdir=workdirs/bench_toy/25gaussians/mi_diff --preset=mi+diff

Restores the latest checkpoint of a toy run (`configs/toy.py:<preset>`, all its seeds)
and prints, per seed and as mean +- std, `bibound_jax.metrics.toy.mode_wells` of E(x)
(E(x, 0) for a time-conditioned energy), next to the values for E = -log p_data:
centre_spread (max - min of E over the 25 mode centres; 0 for the data's equal weights),
rise_<r>std (E at r mode-stds from a centre minus E at the centre; r^2 / 2 for the data) and
real_above_centre (median over 20,000 real samples of E(x) minus E at its nearest centre;
log 2 for the data). A spread of s nats leaves the shallowest mode e^-s of the deepest one's
mass; rises far above r^2 / 2 are wells narrower than the modes. Then KL(data || exp(-E)/Z) on
the evaluation's grid (`eval.grid_spacing` over [-2, 2]^2, as the toy evaluation computes it),
split by the chain rule into kl_between (the mode weights: masses of the centres' Voronoi
cells) and kl_within (the shapes inside the cells). Last, where exp(-E)/Z puts its mass, on a
grid over [-8, 8]^2 (spacing 0.02): mass_off_box (outside [-2, 2]^2), mass_beyond_confine
(beyond the confinement radius, where the confining term acts), and E's lowest value on that
grid (min_energy) and the distance of that point from the origin (min_energy_radius); and what
sets E's steepness: its output scale and the largest |PReLU slope| (a spectrally normalised
layer has norm 1, so these bound f's Lipschitz constant together).
"""
from __future__ import annotations

import jax
import numpy as np
from absl import app
from absl import flags
from absl import logging

from experiments.studies import toy_checkpoint

toy_checkpoint.define_flags()
FLAGS = flags.FLAGS


def _mass(points: np.ndarray, energy: np.ndarray, box: float, confine_radius: float) -> dict:
  """Where exp(-E)/Z (normalised on `points`, a regular grid) lies: off [-box, box]^2 and
  beyond the confinement radius; and E's lowest point."""
  energy = np.asarray(energy, np.float64)
  w = np.exp(energy.min() - energy)
  w /= w.sum()
  radius = np.linalg.norm(points, axis=1)
  lowest = int(np.argmin(energy))
  return {'mass_off_box': float(w[np.max(np.abs(points), axis=1) > box].sum()),
          'mass_beyond_confine': float(w[radius > confine_radius].sum()),
          'min_energy': float(energy[lowest]), 'min_energy_radius': float(radius[lowest])}


def _steepness(params) -> dict:
  """The energy's output scale (exp(log_scale) or scale) and its largest |PReLU slope|."""
  leaves = {jax.tree_util.keystr(path): np.asarray(v)
            for path, v in jax.tree_util.tree_leaves_with_path(params)}
  slopes = [np.max(np.abs(v)) for k, v in leaves.items() if 'negative_slope' in k]
  scale = [float(np.exp(v.ravel()[0])) if 'log_scale' in k else float(v.ravel()[0])
           for k, v in leaves.items() if k.endswith("['log_scale']") or k.endswith("['scale']")]
  return {'scale': scale[0] if scale else float('nan'),
          'max_abs_prelu_slope': float(max(slopes)) if slopes else float('nan')}


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)   # orbax logs every restore step at INFO
  # pylint: disable=import-outside-toplevel
  from bibound_jax import assemble
  from bibound_jax.data import toy as toy_data
  from bibound_jax.metrics import toy as toy_metrics
  cfg, nets, state, step = toy_checkpoint.restore_from_flags()
  if cfg.data.name != '25gaussians':
    raise app.UsageError(f'{FLAGS.preset!r} is not a 25gaussians config: the wells are measured '
                         'at its 25 mode centres.')
  centres = toy_data.mode_centres('25gaussians')
  std = toy_data.mode_std('25gaussians')
  real = np.asarray(toy_data.sample('25gaussians', jax.random.key(0), 20_000))
  exact = toy_metrics.mode_wells(lambda x: -toy_data.log_density('25gaussians', x),
                                 centres, std, real)
  # KL(data || exp(-E)/Z) on the evaluation's grid, split into the mode weights (the Voronoi
  # cells of the centres) and the shapes inside the cells.
  grid, _ = toy_metrics.make_grid(toy_data.eval_box('25gaussians'), cfg.eval.grid_spacing)
  log_p_grid = toy_data.log_density('25gaussians', grid)
  cells, _ = toy_metrics.nearest_centre(grid, centres)
  exact.update({f'kl_{k}': 0.0 for k in ('between', 'within', 'total')})
  wide, _ = toy_metrics.make_grid(8.0, 0.02)
  box = toy_data.eval_box('25gaussians')
  exact.update(_mass(wide, -toy_data.log_density('25gaussians', wide), box,
                     cfg.model.energy.confine_radius))
  exact.update(scale=float('nan'), max_abs_prelu_slope=float('nan'))
  rows = []
  for k in range(cfg.train.num_seeds):
    params = assemble.seed_slice(state, k).energy.params
    energy = jax.jit(lambda x, p=params: nets.energy.apply({'params': p}, x))
    at = lambda x, e=energy: np.asarray(e(np.asarray(x, np.float32)))
    row = toy_metrics.mode_wells(at, centres, std, real)
    kl = toy_metrics.grid_kl_by_part(log_p_grid, -at(grid), cells)
    row.update({f'kl_{name}': value for name, value in kl.items()})
    row.update(_mass(wide, np.concatenate([at(c) for c in np.array_split(wide, 16)]), box,
                     cfg.model.energy.confine_radius))
    row.update(_steepness(params))
    rows.append(row)
  names = list(exact)
  print(f'{FLAGS.workdir} (iteration {step}), E in nats')
  print('| seed | ' + ' | '.join(names) + ' |')
  print('| --- ' * (len(names) + 1) + '|')
  for seed, row in zip(assemble.seeds(cfg), rows):
    print(f'| {seed} | ' + ' | '.join(f'{row[n]:.2f}' for n in names) + ' |')
  table = np.array([[row[n] for n in names] for row in rows])
  print('| mean +- std | ' + ' | '.join(
      f'{m:.2f} +- {s:.2f}' for m, s in zip(table.mean(0), table.std(0))) + ' |')
  print('| -log p_data | ' + ' | '.join(f'{exact[n]:.2f}' for n in names) + ' |')


if __name__ == '__main__':
  app.run(main)

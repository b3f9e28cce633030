"""Evaluation of a 2-D toy run: samples, densities, mode metrics and the likelihood sandwich.

In 2-D every quantity of the objective (docs/bounds.md, "The objective") is computable:
    log Z        by quadrature of exp(-E) on a grid over [-4L, 4L]^2 (spacing 0.02; `z_edge_mass`
                 is the model mass in its outer band: large means log Z is truncated;
                 `z_outside_mass` the mass outside the plotting box [-L, L]^2, which
                 KL(data || model), computed on that box, does not see),
    NLL          = E_data[E] + log Z,
    H[p_g]       = H[p0] + E_z[1/2 log det J^T J]   (exact_logdet; d = D = 2),
    L_lo         = E_data[E] - E_{p_g}[E] + H[p_g]  <=  NLL  (equality iff p_g = p_theta),
    KL(p_g || p_theta) = NLL - L_lo,
and the upper bound as trained, L_up = L_lo + B with B the run's own upper term at this step
(train.bound_values: relu(w GP - zeta) for the GP bound, w DSM (+ the energy penalty) for the
diffusion bound) on `eval.bound_samples` latents. With lambda_H != 1 the generator's objective
E_data[E] - E_{p_g}[E] + lambda_H H[p_g] is no longer below the NLL.

When a bound fails the evaluation says so: `folded_fraction` is the share of latents (among
those with a non-singular J) whose det J has the minority sign (an injective map of the plane
keeps one orientation, so > 0 means G folds, and the change-of-variables entropy then
over-counts), and `lower_bound_fails` (L_lo > NLL, i.e. KL(p_g || p_theta) < 0),
`upper_bound_fails` (NLL > L_up; only where the upper bound claims to bound the NLL:
`Bound.bounds_nll`, not for r1 or wgan_gp) and
`estimator_above_exact` (the training estimator's entropy above the exact one: an unconverged
iteration) are 1 where they happen; a warning names the seeds, and sandwich.png marks them.
On 25 Gaussians, `mode_depth_spread` (max - min of E over the mode centres; 0 for the data) and
`well_rise_1std` (E one mode-std from a centre minus E there; 0.5 for -log p_data) say whether
exp(-E)/Z weighs the modes evenly and whether its wells have the data's width.

Written to workdir/eval/: samples_<step>.png (+ samples.png, the latest; one row per seed),
bounds.png, sandwich.png, metrics_<step>.json, history.json and toy_eval.npz (`grid` M x 2 with
spacing 0.01 over at least [-2, 2]^2; `samples` (seeds, 10,000, 2) and `energy` (seeds, M) on
the grid; `seeds`).
"""
from __future__ import annotations

import functools
import os
import shutil
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from bibound_jax import bounds as bounds_lib
from bibound_jax import generator as generator_lib
from bibound_jax import train
from bibound_jax.bounds import entropy
from bibound_jax.data import toy as toy_data
from bibound_jax.metrics import toy as toy_metrics
from experiments import evaluation
from experiments import history as history_lib
from experiments.plotting import pyplot

def _chunked(fn, x, chunk: int):
  """fn over x in chunks of exactly `chunk` rows (the last one padded with copies of the first
  row, then cut), so that a jitted fn compiles once; outputs concatenated along axis 0."""
  x = np.asarray(x)
  pad = -len(x) % chunk
  padded = np.concatenate([x, np.repeat(x[:1], pad, 0)]) if pad else x
  out = [fn(padded[i:i + chunk]) for i in range(0, len(padded), chunk)]
  return jax.tree.map(lambda *a: np.concatenate([np.asarray(b) for b in a])[:len(x)], *out)


class _Noise(NamedTuple):
  """A seed's fixed evaluation noise: latents, data samples, the estimator's key and the key
  of the bounds' terms."""
  z: jax.Array
  x_data: np.ndarray
  k_est: jax.Array
  k_bounds: jax.Array


class ToyEvaluator(evaluation.Evaluator):
  """Evaluates a toy run at fixed evaluation noise (comparable across steps and runs)."""

  def __init__(self, config, networks, model: bool = False):
    super().__init__(config, networks, model)
    self.warm_up = bool(config.eval.warm_up)
    self.name = config.data.name
    self.half_width = max(2.0, toy_data.eval_box(self.name))
    self.spacing = config.eval.grid_spacing
    self.grid, self.n_axis = toy_metrics.make_grid(self.half_width, self.spacing)
    self.cell_area = self.spacing**2
    # log Z needs the mass of exp(-E) outside the plotting box too: quadrature over a box 4x as
    # wide at twice the spacing (an energy that keeps falling off the box shows up as mass at
    # its edge, reported as `z_edge_mass`).
    self.z_grid, self.z_axis = toy_metrics.make_grid(4 * self.half_width, 2 * self.spacing)
    self._z_radius = np.max(np.abs(self.z_grid), axis=1)   # each point's sup-norm
    self.z_cell_area = (2 * self.spacing)**2
    self._log_p_data = None
    self._noise = {}
    est = entropy.JacobianTerms(config.bounds.jacobian).estimator

    def latent_terms(g, z, key):
      """Per latent: the exact log-volume log p0(z) - log p_g(G(z)) (1/2 log det J^T J, or the
      module's closed form: generator.PerSample), the training estimator's term, and det J
      (its sign tells folding apart, d = D = 2; for a flow mixture, J of the continuous
      latent coordinates)."""
      gen = generator_lib.Generator(g)
      variables = generator_lib.variables(g.params, g.batch_stats)
      fn = gen.per_sample()
      exact = entropy.batched_log_volume(entropy.exact_logdet, fn, variables, z, key).value
      estimate = entropy.batched_log_volume(est, fn, variables, z, key).value
      # The sign of det J from slogdet: a plain det of a strongly contracting J underflows to
      # 0 in float32 and has no sign (slogdet's sign is 0 only for a singular J).
      def sign(zi):
        jac = entropy.jacobian(fn, variables, zi)
        return jnp.linalg.slogdet(jac[:, :jac.shape[0]])[0]
      return exact, estimate, jax.vmap(sign)(z)
    self._latent_terms = evaluation.program(latent_terms)
    # The bounds as the train step computes them, at this step (the upper term, its parts).
    self._bound_values = evaluation.program(functools.partial(train.bound_values,
                                                              config=config))
    lower, upper = bounds_lib.from_config(config)
    self._check_upper = lower.bounds_nll(2, 2) and upper.bounds_nll(2, 2)

  def noise(self, seed: int) -> _Noise:
    """The fixed evaluation noise of `seed` (from fold_in(key(seed), 2))."""
    if seed not in self._noise:
      ecfg = self.config.eval
      k_z, k_data, k_bounds, k_est = jax.random.split(
          jax.random.fold_in(jax.random.key(seed), 2), 4)
      z = jax.random.normal(k_z, (ecfg.num_samples, self.config.model.generator.latent_dim))
      self._noise[seed] = _Noise(z, np.asarray(toy_data.sample(self.name, k_data,
                                                               ecfg.num_samples)),
                                 k_est, k_bounds)
    return self._noise[seed]

  @property
  def log_p_data(self) -> np.ndarray:
    if self._log_p_data is None:
      self._log_p_data = toy_data.log_density(self.name, self.grid)
    return self._log_p_data

  def compute(self, state, seed: int, workdir: str) -> tuple[dict, dict]:
    """(scalar metrics, arrays) of one seed."""
    del workdir
    cfg, noise = self.config, self.noise(seed)
    e_params, gen = state.energy.params, state.generator
    samples = np.asarray(self._generate(gen, noise.z))
    energy = lambda x: _chunked(lambda c: self._energy(e_params, c), x, 65536)
    energy_grid, energy_z = energy(self.grid), energy(self.z_grid)
    log_z = float(toy_metrics.grid_log_normaliser(-energy_z, self.z_cell_area))
    edge = self._z_radius > 3.5 * self.half_width
    log_w = -energy_z + np.log(self.z_cell_area) - log_z
    z_edge_mass = float(np.sum(np.exp(log_w[edge])))
    z_outside_mass = float(np.sum(np.exp(log_w[self._z_radius > self.half_width])))
    e_data, e_fake = float(np.mean(energy(noise.x_data))), float(np.mean(energy(samples)))
    d = cfg.model.generator.latent_dim
    exact, estimate, det = _chunked(lambda z: self._latent_terms(gen, z, noise.k_est), noise.z,
                                    2048)
    h_exact = entropy.gaussian_entropy(d) + float(np.mean(exact))
    h_est = entropy.gaussian_entropy(d) + float(np.mean(estimate))
    # The run's own upper term at this step, on eval.bound_samples data points and latents.
    values = jax.device_get(self._bound_values(
        state, jnp.asarray(noise.x_data[:cfg.eval.bound_samples]), noise.k_bounds))
    upper_term = float(values['upper_term'])
    nll = e_data + log_z
    lower = e_data - e_fake + h_exact
    m = {
        'nll': nll, 'log_z': log_z, 'z_edge_mass': z_edge_mass,
        'z_outside_mass': z_outside_mass, 'energy_real': e_data,
        'energy_fake': e_fake,
        'entropy_exact': h_exact, 'entropy_estimator': h_est,
        'lower_bound': lower,
        'lower_bound_estimator': e_data - e_fake + h_est,
        'lower_bound_lambda': e_data - e_fake + cfg.bounds.lambda_h * h_est,
        'kl_gen_model': nll - lower,
        'upper_term': upper_term, 'upper_bound': lower + upper_term,
        # the upper term's parts, e.g. gp, dsm, energy_l2
        **{k: float(values[k]) for k in ('gp', 'dsm', 'energy_l2') if k in values},
        'kl_data_model': float(toy_metrics.grid_kl(self.log_p_data, -energy_grid,
                                                   self.cell_area)),
        # An injective map of the plane keeps one orientation: the share of latents whose
        # det J has the minority sign is mass on folds, where the entropy over-counts.
        'folded_fraction': float(min(np.mean(det < 0), np.mean(det > 0))
                                 / max(np.mean(det != 0), 1e-12)),
        # 1 where a bound fails: L_lo > NLL (equivalently KL(p_g || p_theta) < 0), NLL > L_up
        # (the GP term below the KL it should bound), the estimator above the exact entropy.
        'lower_bound_fails': float(lower > nll),
        'estimator_above_exact': float(h_est > h_exact + 1e-3),
    }
    if self._check_upper:   # r1 and wgan_gp bound nothing: no verdict on them
      m['upper_bound_fails'] = float(nll > lower + upper_term)
    if self.name == '25gaussians':
      mm = toy_metrics.mode_metrics(samples, toy_data.mode_centres(self.name),
                                    toy_data.mode_std(self.name))
      m['modes_covered'] = int(mm['modes_covered'])
      m['hq_fraction'] = float(mm['hq_fraction'])
      # Within-mode spread against the data's (1 for the data; ~0 for modes drawn as points).
      m['spread_ratio'] = toy_metrics.spread_ratio(samples, noise.x_data,
                                                   toy_data.mode_centres(self.name),
                                                   toy_data.mode_std(self.name))
      # The wells of E at the modes: depth spread over the centres (0 for the data; s nats
      # leave the shallowest mode e^-s of the deepest one's mass) and the rise at 1 mode-std
      # (0.5 for -log p_data): docs/studies/toy_mi_diff.md, "What runs away is the relative depth of the modes".
      wells = toy_metrics.mode_wells(lambda x: energy(np.asarray(x, np.float32)),
                                     toy_data.mode_centres(self.name),
                                     toy_data.mode_std(self.name), noise.x_data,
                                     radii_in_std=(1.0,))
      m['mode_depth_spread'] = wells['centre_spread']
      m['well_rise_1std'] = wells['rise_1std']
    arrays = {'samples': samples.astype(np.float32), 'energy': energy_grid.astype(np.float32),
              'log_z': np.float32(log_z), 'x_data': noise.x_data}
    if self.model is not None:
      model_metrics, arrays['model_samples'] = self.model_metrics(
          e_params, seed, samples, noise, -energy_grid, z_outside_mass, e_data)
      m.update(model_metrics)
      m['nll_ais_minus_quadrature'] = m['nll_ais'] - nll
    return m, arrays

  def model_metrics(self, e_params, seed: int, samples, noise, minus_energy_grid,
                    outside_mass: float, e_data: float):
    """The energy as a model against its quadrature (experiments/model_eval.py): p_theta's
    samples after `sample.num_steps` MCMC steps from `sample.init`, their total-variation
    distance to exp(-E)/Z in 0.1-wide cells (`model_tv`, with `model_tv_floor` the distance of
    as many exact draws), and log Z and the NLL by AIS (`log_z_ais`, `nll_ais`)."""
    cfg = self.config
    k_chains, k_log_z, k_start = jax.random.split(jax.random.fold_in(jax.random.key(seed), 7), 3)
    std = self.model.standardiser(noise.x_data, 'real')
    n = cfg.sample.num_chains or cfg.eval.num_samples
    start = {'generator': samples, 'data': noise.x_data,
             'noise': np.asarray(std.to_w(jax.random.normal(k_start, (n, 2))))}[cfg.sample.init]
    run = self.model.sample(e_params, np.resize(start, (n, 2)), k_chains, std)
    bins = int(round(2 * self.half_width / 0.1))
    tv, floor = toy_metrics.sample_density_tv(run.x, minus_energy_grid, self.grid,
                                              self.half_width, bins,
                                              np.random.default_rng(seed), outside_mass)
    log_z = self.model.log_z(e_params, std, k_log_z)
    m = {'model_tv': tv, 'model_tv_floor': floor, 'model_acceptance': run.acceptance,
         'log_z_ais': log_z.log_z, 'log_z_ais_error': log_z.error,
         'log_z_ais_converged': float(log_z.converged), 'nll_ais': e_data + log_z.log_z}
    if self.name == '25gaussians':
      mm = toy_metrics.mode_metrics(run.x, toy_data.mode_centres(self.name),
                                    toy_data.mode_std(self.name))
      m['model_modes_covered'] = int(mm['modes_covered'])
      m['model_hq_fraction'] = float(mm['hq_fraction'])
      m['model_spread_ratio'] = toy_metrics.spread_ratio(run.x, noise.x_data,
                                                         toy_data.mode_centres(self.name),
                                                         toy_data.mode_std(self.name))
    return m, run.x.astype(np.float32)

  def write(self, workdir, step, metrics, arrays, history) -> None:
    """toy_eval.npz and the PNGs of the module docstring."""
    out = history_lib.eval_dir(workdir)
    with history_lib.atomic_open(os.path.join(out, 'toy_eval.npz'), 'wb') as f:
      np.savez_compressed(f, grid=self.grid.astype(np.float32),
                          samples=np.stack([a['samples'] for a in arrays]),
                          energy=np.stack([a['energy'] for a in arrays]),
                          seeds=np.asarray(self.seeds))
    plot_samples(arrays, self.seeds, self.n_axis, self.half_width, metrics, step,
                 os.path.join(out, f'samples_{step}.png'), self.name)
    shutil.copyfile(os.path.join(out, f'samples_{step}.png'), os.path.join(out, 'samples.png'))
    plot_bound_terms(history_lib.read_metrics(workdir), self.seeds,
                     os.path.join(out, 'bounds.png'))
    plot_sandwich(history, self.seeds, self.config.bounds, os.path.join(out, 'sandwich.png'))
    for what, failed in bound_failures(metrics, self.seeds):
      logging.warning('Toy evaluation at %d: %s for seed(s) %s.', step, what,
                      ', '.join(map(str, failed)))


def bound_failures(metrics, seeds) -> list[tuple[str, list[int]]]:
  """(what failed, the seeds where it did) for each side of the sandwich that fails in
  `metrics` (a side is checked only where the evaluation wrote its flag: L_up not for r1 or
  wgan_gp, which bound nothing)."""
  checks = [('lower_bound_fails', 'L_lo > NLL (the entropy term over-counts)'),
            ('upper_bound_fails', 'L_up < NLL (the upper term is below the KL)')]
  out = []
  for flag, what in checks:
    if flag not in metrics:
      continue
    failed = [seed for seed, v in zip(seeds, history_lib.seed_values(metrics, flag, seeds))
              if v]
    if failed:
      out.append((what, failed))
  return out


def sandwich_failures(record, seeds) -> list[tuple[int, str]]:
  """(seed, line) for each seed of an evaluation where a side of the sandwich fails, the line
  with its margin: L_lo > NLL, or (where checked, as in `bound_failures`) L_up < NLL, i.e. the
  upper term below KL(p_g || p_theta) = NLL - L_lo."""
  value = lambda key: history_lib.seed_values(record, key, seeds)
  nll, lower = value('nll'), value('lower_bound')
  low = value('lower_bound_fails')
  up = value('upper_bound_fails') if 'upper_bound_fails' in record else [0.0] * len(seeds)
  out = []
  for k, s in enumerate(seeds):
    if low[k]:
      out.append((s, f"iteration {record['step']}, seed {s}: L_lo {lower[k]:.3f} > NLL "
                     f'{nll[k]:.3f} (by {lower[k] - nll[k]:.3f} nats)'))
    if up[k]:
      kl, term = nll[k] - lower[k], value('upper_term')[k]
      out.append((s, f"iteration {record['step']}, seed {s}: upper term {term:.3f} < "
                     f'KL(p_g || p_theta) {kl:.3f} (by {kl - term:.3f} nats)'))
  return out


def plot_samples(arrays, seeds, n_axis, half_width, m, step, path, name) -> None:
  """One row per seed: samples over data; density exp(-E)/Z and log-density on the grid."""
  plt = pyplot()
  # make_grid orders points with x varying slowest: reshape(n, n)[i, j] is (x_i, y_j);
  # imshow wants rows = y, so transpose.
  extent = (-half_width, half_width, -half_width, half_width)
  fig, axes = plt.subplots(len(seeds), 3, figsize=(15, 5 * len(seeds)), squeeze=False)
  for row, seed, a in zip(axes, seeds, arrays):
    value = lambda key: (m[key] if len(seeds) == 1 else m[f'{key}/seed_{seed}'])
    log_q = -a['energy'].reshape(n_axis, n_axis).T - a['log_z']
    ax = row[0]
    ax.scatter(a['x_data'][:, 0], a['x_data'][:, 1], s=1, alpha=0.3, c='tab:blue',
               label='data')
    ax.scatter(a['samples'][:, 0], a['samples'][:, 1], s=1, alpha=0.3, c='tab:red',
               label='generator')
    if 'model_samples' in a:
      ax.scatter(a['model_samples'][:, 0], a['model_samples'][:, 1], s=1, alpha=0.3,
                 c='tab:green', label='p_theta (MCMC)')
    ax.set_xlim(extent[:2])
    ax.set_ylim(extent[2:])
    ax.set_aspect('equal')
    ax.legend(loc='upper right', markerscale=8)
    title = f'seed {seed}, step {step}'
    if 'modes_covered' in m:
      title += f"\nmodes {value('modes_covered'):.0f}/25, high-quality {value('hq_fraction'):.2f}"
    ax.set_title(title)
    im = row[1].imshow(np.exp(log_q), origin='lower', extent=extent, cmap='viridis')
    row[1].set_title(f"density exp(-E)/Z\nKL(data || model) = {value('kl_data_model'):.3f}")
    fig.colorbar(im, ax=row[1], fraction=0.046)
    im = row[2].imshow(np.maximum(log_q, log_q.max() - 20), origin='lower', extent=extent,
                       cmap='magma')
    row[2].set_title(f'log-density -E - log Z ({name})')
    fig.colorbar(im, ax=row[2], fraction=0.046)
  fig.tight_layout()
  fig.savefig(path, dpi=60)
  plt.close(fig)


def _curves(ax, steps, records, key, seeds, **style):
  """The mean of `key` over the seeds (a line), and each seed (thin lines) when there are
  several."""
  line, = ax.plot(steps, [r[key] for r in records], label=key, **style)
  if len(seeds) > 1:
    for seed in seeds:
      ax.plot(steps, [r[f'{key}/seed_{seed}'] for r in records], color=line.get_color(),
              lw=0.5, alpha=0.5)
  return line


def plot_bound_terms(records: list[dict], seeds, path: str) -> None:
  """Training-time bound terms (workdir/metrics.jsonl): lower bound, upper-bound term,
  energies (mean over seeds, and each seed)."""
  plt = pyplot()
  if not records:
    return
  steps = [r['step'] for r in records]
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for key in ('energy_real', 'energy_fake'):
    _curves(axes[0], steps, records, key, seeds)
  axes[0].set_title('energies (train batches)')
  for key in ('lower_bound', 'upper_bound', 'entropy'):
    if key in records[0]:
      _curves(axes[1], steps, records, key, seeds)
  axes[1].set_title('bounds (train batches)')
  for key in ('upper_term', 'gp', 'dsm'):
    if key in records[0]:
      _curves(axes[2], steps, records, key, seeds)
  axes[2].set_yscale('symlog', linthresh=1e-3)
  axes[2].set_title('upper-bound term')
  for ax in axes:
    ax.set_xlabel('iteration')
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def plot_sandwich(history: list[dict], seeds, bounds_config, path: str) -> None:
  """L_lo <= NLL <= L_up over training, from the evaluations (log Z by quadrature): the mean
  over seeds, each seed, and a cross at every evaluation of a seed where a bound fails."""
  plt = pyplot()
  if not history:
    return
  steps = [h['step'] for h in history]
  fig, ax = plt.subplots(figsize=(7, 4.5))
  _curves(ax, steps, history, 'nll', seeds, color='k', lw=2)
  _curves(ax, steps, history, 'lower_bound', seeds, color='tab:blue')
  _curves(ax, steps, history, 'lower_bound_estimator', seeds, color='tab:cyan', ls='--')
  labels = {'nll': 'NLL (quadrature)', 'lower_bound': 'L_lo (exact entropy)',
            'lower_bound_estimator': f'L_lo ({bounds_config.jacobian.estimator})'}
  if bounds_config.lambda_h != 1.0:
    _curves(ax, steps, history, 'lower_bound_lambda', seeds, color='m', ls=':')
    labels['lower_bound_lambda'] = f'objective, lambda_H = {bounds_config.lambda_h:g} (no bound)'
  checked = 'upper_bound_fails' in history[-1]
  _curves(ax, steps, history, 'upper_bound', seeds, color='tab:red', ls='-' if checked else ':')
  labels['upper_bound'] = (f'L_up = L_lo + the {bounds_config.upper} term'
                           + ('' if checked else ' (no bound)'))
  for flag, key, colour in (('lower_bound_fails', 'lower_bound', 'tab:blue'),
                            ('upper_bound_fails', 'upper_bound', 'tab:red')):
    if flag not in history[-1]:
      continue
    pts = [(h['step'], v) for h in history
           for f, v in zip(history_lib.seed_values(h, flag, seeds),
                           history_lib.seed_values(h, key, seeds)) if f]
    if pts:
      ax.plot(*zip(*pts), 'x', color=colour, ms=9, mew=2,
              label=f'{labels[key].split(" (")[0].split(" =")[0]} fails')
  handles, names = ax.get_legend_handles_labels()
  ax.legend(handles, [labels.get(n, n) for n in names], fontsize=8)
  ax.set_xlabel('iteration')
  ax.set_ylabel('nats')
  nlls = [v for h in history for v in history_lib.seed_values(h, 'nll', seeds)]
  lo, hi = np.percentile(nlls, [0, 100])
  pad = max(1.0, 0.5 * (hi - lo))
  ax.set_ylim(lo - 3 * pad, hi + 3 * pad)
  ax.set_title('likelihood sandwich' + (f', {len(seeds)} seeds' if len(seeds) > 1 else ''))
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)

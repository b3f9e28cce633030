"""Evaluation of a 2-D toy run: samples, densities, mode metrics and the likelihood sandwich.

In 2-D every quantity of the objective (docs/bounds.md, "The objective") is computable:
    log Z        by quadrature of exp(-E) on a grid over [-4L, 4L]^2 (spacing 0.02; `z_edge_mass`
                 is the model mass in its outer band: large means log Z is truncated),
    NLL          = E_data[E] + log Z,
    H[p_g]       = H[p0] + E_z[1/2 log det J^T J]   (exact_logdet; d = D = 2),
    L_lo         = E_data[E] - E_{p_g}[E] + H[p_g]  <=  NLL  (equality iff p_g = p_theta),
    KL(p_g || p_theta) = NLL - L_lo,
and the upper bound as trained, L_up = L_lo + relu(w GP - zeta). With lambda_H != 1 the
generator's objective E_data[E] - E_{p_g}[E] + lambda_H H[p_g] is no longer below the NLL.

Written to workdir/eval/: samples_<step>.png (+ samples.png, the latest), bounds.png,
sandwich.png, metrics_<step>.json, history.json and toy_eval.npz (`samples` 10,000 x 2,
`grid` M x 2 with spacing 0.01 over at least [-2, 2]^2, `energy` M).
"""
from __future__ import annotations

import os
import shutil

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from bibound_jax import generator as generator_lib  # noqa: E402
from bibound_jax.bounds import entropy  # noqa: E402
from bibound_jax.bounds import gradient_penalty  # noqa: E402
from bibound_jax.data import toy as toy_data  # noqa: E402
from bibound_jax.metrics import toy as toy_metrics  # noqa: E402
from experiments import evaluation  # noqa: E402
from experiments import history as history_lib  # noqa: E402

def _chunked(fn, x, chunk=65536):
  return np.concatenate([np.asarray(fn(x[i:i + chunk])) for i in range(0, len(x), chunk)])


class ToyEvaluator(evaluation.Evaluator):
  """Evaluates a toy run at fixed evaluation noise (comparable across steps and runs)."""

  def __init__(self, config, networks):
    super().__init__(config, networks)
    self.name = config.data.name
    ecfg = config.eval
    self.half_width = max(2.0, toy_data.eval_box(self.name))
    self.spacing = ecfg.grid_spacing
    self.grid, self.n_axis = toy_metrics.make_grid(self.half_width, self.spacing)
    self.cell_area = self.spacing**2
    # log Z needs the mass of exp(-E) outside the plotting box too: quadrature over a box 4x as
    # wide at twice the spacing (an energy that keeps falling off the box shows up as mass at
    # its edge, reported as `z_edge_mass`).
    self.z_grid, self.z_axis = toy_metrics.make_grid(4 * self.half_width, 2 * self.spacing)
    self.z_cell_area = (2 * self.spacing)**2
    self._log_p_data = None
    key = jax.random.fold_in(jax.random.key(config.seed), 2)
    k_z, k_data, k_gp, self.k_est = jax.random.split(key, 4)
    d = config.model.generator.latent_dim
    self.z = jax.random.normal(k_z, (ecfg.num_samples, d))
    self.x_data = toy_data.sample(self.name, k_data, ecfg.num_samples)
    self.gp_z = self.z[:ecfg.gp_samples]
    self.gp_probes = jax.random.normal(k_gp, self.gp_z.shape)
    self._log_volume = jax.jit(lambda g, z, k: entropy.batched_log_volume(
        entropy.exact_logdet, generator_lib.inference_fn(g), g.params, z, k).value)
    est = entropy.JacobianTerms(config.bounds.sv).estimator
    self._est_log_volume = jax.jit(lambda g, z, k: entropy.batched_log_volume(
        est, generator_lib.inference_fn(g), g.params, z, k).value)

    def gp(e_params, g, z, probes):
      energy_fn = lambda x: networks.energy.apply({'params': e_params}, x)
      per_sample, _ = gradient_penalty.gp_fisher(energy_fn, generator_lib.inference_fn(g),
                                                 g.params, z, probes, None)
      return jnp.mean(per_sample)
    self._gp = jax.jit(gp)

  @property
  def log_p_data(self) -> np.ndarray:
    if self._log_p_data is None:
      self._log_p_data = toy_data.log_density(self.name, self.grid)
    return self._log_p_data

  def compute(self, state, workdir: str) -> tuple[dict, dict]:
    """(scalar metrics, arrays) for a host copy of the state."""
    del workdir
    cfg = self.config
    e_params, gen = state.energy.params, state.generator
    samples = np.asarray(self._generate(gen, self.z))
    energy_grid = self.energies(e_params, self.grid, 65536)
    energy_z = self.energies(e_params, self.z_grid, 65536)
    log_z = float(toy_metrics.grid_log_normaliser(-energy_z, self.z_cell_area))
    edge = np.max(np.abs(self.z_grid), axis=1) > 3.5 * self.half_width
    log_w = -energy_z + np.log(self.z_cell_area) - log_z
    z_edge_mass = float(np.sum(np.exp(log_w[edge])))
    e_data = float(np.mean(self._energy(e_params, self.x_data)))
    e_fake = float(np.mean(self._energy(e_params, samples)))
    d = cfg.model.generator.latent_dim
    h_exact = entropy.gaussian_entropy(d) + float(np.mean(
        _chunked(lambda z: self._log_volume(gen, z, self.k_est), self.z, 2048)))
    h_est = entropy.gaussian_entropy(d) + float(np.mean(
        _chunked(lambda z: self._est_log_volume(gen, z, self.k_est), self.z, 2048)))
    gp = float(self._gp(e_params, gen, self.gp_z, self.gp_probes))
    weight = float(gradient_penalty.gp_weight(int(state.step), cfg.bounds.gp.weight,
                                              cfg.bounds.gp.schedule))
    upper_term = max(weight * gp - cfg.bounds.gp.margin, 0.0)
    nll = e_data + log_z
    lower = e_data - e_fake + h_exact
    m = {
        'nll': nll, 'log_z': log_z, 'z_edge_mass': z_edge_mass, 'energy_real': e_data,
        'energy_fake': e_fake,
        'entropy_exact': h_exact, 'entropy_estimator': h_est,
        'lower_bound': lower,
        'lower_bound_estimator': e_data - e_fake + h_est,
        'lower_bound_lambda': e_data - e_fake + cfg.bounds.lambda_h * h_est,
        'kl_gen_model': nll - lower,
        'gp': gp, 'upper_term_gp': upper_term, 'upper_bound_gp': lower + upper_term,
        'kl_data_model': float(toy_metrics.grid_kl(self.log_p_data, -energy_grid,
                                                   self.cell_area)),
    }
    if self.name == '25gaussians':
      mm = toy_metrics.mode_metrics(samples, toy_data.mode_centres(self.name),
                                    toy_data.mode_std(self.name))
      m['modes_covered'] = int(mm['modes_covered'])
      m['hq_fraction'] = float(mm['hq_fraction'])
    arrays = {'samples': samples.astype(np.float32), 'grid': self.grid.astype(np.float32),
              'energy': energy_grid.astype(np.float32)}
    return m, arrays

  def write(self, workdir, step, metrics, arrays, history) -> None:
    """toy_eval.npz and the PNGs of the module docstring."""
    out = history_lib.eval_dir(workdir)
    np.savez_compressed(os.path.join(out, 'toy_eval.npz'), **arrays)
    plot_samples(arrays, self.x_data, self.n_axis, self.half_width, metrics, step,
                 os.path.join(out, f'samples_{step}.png'), self.name)
    shutil.copyfile(os.path.join(out, f'samples_{step}.png'), os.path.join(out, 'samples.png'))
    plot_bound_terms(history_lib.read_metrics(workdir), os.path.join(out, 'bounds.png'))
    plot_sandwich(history, self.config.bounds, os.path.join(out, 'sandwich.png'))



def plot_samples(arrays, x_data, n_axis, half_width, m, step, path, name) -> None:
  """Samples over data; density exp(-E)/Z and log-density on the grid."""
  # make_grid orders points with x varying slowest: reshape(n, n)[i, j] is (x_i, y_j);
  # imshow wants rows = y, so transpose.
  energy = arrays['energy'].reshape(n_axis, n_axis).T
  log_q = -energy - m['log_z']
  extent = (-half_width, half_width, -half_width, half_width)
  fig, axes = plt.subplots(1, 3, figsize=(15, 5))
  ax = axes[0]
  xd = np.asarray(x_data)
  ax.scatter(xd[:, 0], xd[:, 1], s=1, alpha=0.3, c='tab:blue', label='data')
  s = arrays['samples']
  ax.scatter(s[:, 0], s[:, 1], s=1, alpha=0.3, c='tab:red', label='generator')
  ax.set_xlim(extent[:2])
  ax.set_ylim(extent[2:])
  ax.set_aspect('equal')
  ax.legend(loc='upper right', markerscale=8)
  title = f'samples, step {step}'
  if 'modes_covered' in m:
    title += f"\nmodes {m['modes_covered']}/25, high-quality {m['hq_fraction']:.2f}"
  ax.set_title(title)
  im = axes[1].imshow(np.exp(log_q), origin='lower', extent=extent, cmap='viridis')
  axes[1].set_title(f"density exp(-E)/Z\nKL(data || model) = {m['kl_data_model']:.3f}")
  fig.colorbar(im, ax=axes[1], fraction=0.046)
  im = axes[2].imshow(np.maximum(log_q, log_q.max() - 20), origin='lower', extent=extent,
                      cmap='magma')
  axes[2].set_title(f'log-density -E - log Z ({name})')
  fig.colorbar(im, ax=axes[2], fraction=0.046)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def plot_bound_terms(records: list[dict], path: str) -> None:
  """Training-time bound terms (workdir/metrics.jsonl): lower bound, upper-bound term,
  energies."""
  if not records:
    return
  steps = [r['step'] for r in records]
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for key in ('energy_real', 'energy_fake'):
    axes[0].plot(steps, [r[key] for r in records], label=key)
  axes[0].set_title('energies (train batches)')
  for key in ('lower_bound', 'upper_bound', 'entropy'):
    if key in records[0]:
      axes[1].plot(steps, [r[key] for r in records], label=key)
  axes[1].set_title('bounds (train batches)')
  for key in ('upper_term', 'gp', 'dsm'):
    if key in records[0]:
      axes[2].plot(steps, [r[key] for r in records], label=key)
  axes[2].set_yscale('symlog', linthresh=1e-3)
  axes[2].set_title('upper-bound term')
  for ax in axes:
    ax.set_xlabel('iteration')
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def plot_sandwich(history: list[dict], bounds_config, path: str) -> None:
  """L_lo <= NLL <= L_up over training, from the evaluations (log Z by quadrature)."""
  if not history:
    return
  steps = [h['step'] for h in history]
  fig, ax = plt.subplots(figsize=(7, 4.5))
  ax.plot(steps, [h['nll'] for h in history], 'k-', lw=2, label='NLL (quadrature)')
  ax.plot(steps, [h['lower_bound'] for h in history], 'b-', label='L_lo (exact entropy)')
  ax.plot(steps, [h['lower_bound_estimator'] for h in history], 'b--',
          label=f'L_lo ({bounds_config.sv.estimator})')
  if bounds_config.lambda_h != 1.0:
    ax.plot(steps, [h['lower_bound_lambda'] for h in history], 'm:',
            label=f'objective with lambda_H = {bounds_config.lambda_h:g} (not a bound)')
  if bounds_config.upper == 'gp':
    ax.plot(steps, [h['upper_bound_gp'] for h in history], 'r-',
            label='L_up = L_lo + relu(w GP - zeta)')
  ax.set_xlabel('iteration')
  ax.set_ylabel('nats')
  lo, hi = np.percentile([h['nll'] for h in history], [0, 100])
  pad = max(1.0, 0.5 * (hi - lo))
  ax.set_ylim(lo - 3 * pad, hi + 3 * pad)
  ax.legend(fontsize=8)
  ax.set_title('likelihood sandwich')
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)

"""StackedMNIST evaluation: mode counting at fixed latents (docs/results.md, "StackedMNIST"; docs/sampling.md).

`eval.num_samples` generator samples (inference-mode BatchNorm), each channel classified by the
project's MNIST classifier (trained once, then cached), and

    modes = #{m : n_m > 0},   KL(p || U) = sum_m p_m log(1000 p_m)   over the 1,000 modes.

A perfect sampler with N = 26,000 still has E[KL] ~ (M - 1) / (2N) = 0.019 from sampling noise;
`data_modes` / `data_kl` report the same statistics on N real StackedMNIST samples as the floor.
Written to workdir/eval/: samples_<step>.png (+ samples.png), metrics_<step>.json,
history.json and modes.png (modes and KL over training).
"""
from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from bibound_jax import bounds as bounds_lib
from bibound_jax import likelihood
from bibound_jax import sampling
from bibound_jax import train
from bibound_jax.data import mnist as mnist_data
from bibound_jax.metrics import mnist_classifier
from bibound_jax.metrics import modes as mode_metrics
from experiments import evaluation
from experiments import history as history_lib
from experiments import plotting


def load_digits(config, split: str = 'train'):
  """(uint8 (N, 28, 28), int32 (N,), source name) from the configured MNIST source."""
  return mnist_data.load_mnist(split, config.data.data_dir or None, config.data.source)


class StackedMNISTEvaluator(evaluation.Evaluator):
  """Mode counting at fixed evaluation latents (comparable across steps and runs)."""

  def __init__(self, config, networks, model: bool = False):
    super().__init__(config, networks, model)
    self._classifier = None
    self._data = {}
    self._digits = {}
    self._bound_values = jax.jit(functools.partial(train.bound_values, config=config))

  def digits(self, split: str = 'train') -> np.ndarray:
    """The uint8 digits (N, 28, 28) of a split of the configured source, loaded once."""
    if split not in self._digits:
      self._digits[split] = load_digits(self.config, split)[0]
    return self._digits[split]

  def keys(self, seed: int):
    """(latent key, real-data key) of a seed's fixed evaluation noise."""
    return jax.random.split(jax.random.fold_in(jax.random.key(seed), 2))

  def classifier(self, workdir: str):
    """The digit classifier: loaded from eval.classifier_path, else trained and cached there."""
    if self._classifier is None:
      cfg = self.config
      path = cfg.eval.classifier_path or os.path.join(workdir, 'mnist_classifier.msgpack')
      self._classifier = mnist_classifier.get_or_train_classifier(
          path if jax.process_index() == 0 else None, data_dir=cfg.data.data_dir or None,
          source=cfg.data.source, seed=cfg.seed, steps=cfg.eval.classifier_steps)
    return self._classifier

  def classify(self, x, workdir: str) -> np.ndarray:
    """The 3-digit mode of each image (N, 28, 28, 3)."""
    return mode_metrics.classify_stacked(mnist_classifier.classifier_apply,
                                         self.classifier(workdir), x, self.config.eval.batch_size)

  def reference(self, seed: int, workdir: str) -> dict:
    """Real StackedMNIST samples for the energy statistics, and the modes/KL of as many real
    samples as generated ones (the sampling-noise floor of the metrics); once per seed."""
    if seed not in self._data:
      images = self.digits()
      x, _ = jax.jit(mnist_data.stacked_batch, static_argnums=2)(
          jnp.asarray(images), self.keys(seed)[1], self.config.eval.num_samples)
      modes = self.classify(x, workdir)
      self._data[seed] = {'x': np.asarray(x[:self.config.eval.num_data]),
                          'data_modes': mode_metrics.count_modes(modes),
                          'data_kl': mode_metrics.kl_to_uniform(modes)}
    return self._data[seed]

  def compute(self, state, seed: int, workdir: str) -> tuple[dict, np.ndarray]:
    ref = self.reference(seed, workdir)
    bs, cfg = self.config.eval.batch_size, self.config
    z = jax.random.normal(self.keys(seed)[0], (cfg.eval.num_samples,
                                               cfg.model.generator.latent_dim))
    x = self.samples(state.generator, z, bs)
    modes = self.classify(x, workdir)
    e_fake = self.energies(state.energy.params, x, bs)
    e_real = self.energies(state.energy.params, ref['x'], bs)
    hist = mode_metrics.mode_histogram(modes)
    m = {'modes': mode_metrics.count_modes(modes), 'kl': mode_metrics.kl_to_uniform(modes),
         'max_mode_fraction': float(hist.max() / hist.sum()),
         'data_modes': ref['data_modes'], 'data_kl': ref['data_kl'],
         'energy_real': float(e_real.mean()), 'energy_fake': float(e_fake.mean())}
    logging.info('StackedMNIST eval, seed %d: %d/1000 modes, KL %.3f (real data: %d, %.3f).',
                 seed, m['modes'], m['kl'], m['data_modes'], m['data_kl'])
    x_model = None
    if self.model is not None:
      model_metrics, x_model = self.model_metrics(state, seed, x, workdir)
      m.update(model_metrics)
    return m, (x, modes, x_model)

  def held_out(self, seed: int) -> np.ndarray:
    """eval.num_data StackedMNIST samples of the held-out digits, dequantised
    (likelihood.dequantise): the points whose NLL is reported; fixed per seed."""
    key = ('held_out', seed)
    if key not in self._data:
      images = self.digits('test')
      k_stack, k_deq = jax.random.split(jax.random.fold_in(self.keys(seed)[1], 1))
      x, _ = mnist_data.stacked_batch(jnp.asarray(images), k_stack, self.config.eval.num_data)
      self._data[key] = np.asarray(likelihood.dequantise(x, k_deq))
    return self._data[key]

  def model_metrics(self, state, seed: int, x_gen: np.ndarray, workdir: str):
    """The energy as a model (experiments/model_eval.py): modes and KL of p_theta's samples
    (`sample.num_steps` MCMC steps from `sample.init`), log Z by AIS on `sample.support`, the
    NLL of held-out digits in nats and bits/dim, whether exp(-E) is normalisable on R^D, and
    the bounds at this state (L_lo, L_up) beside the NLL."""
    cfg, sample = self.config, self.config.sample
    params = state.energy.params
    k_chains, k_log_z, k_norm, k_bounds = jax.random.split(jax.random.fold_in(
        jax.random.key(seed), 7), 4)
    train_x = likelihood.dequantise(jnp.asarray(self.reference(seed, workdir)['x']),
                                    jax.random.fold_in(k_log_z, 1))
    std = self.model.standardiser(train_x, sample.support)
    n = sample.num_chains or cfg.eval.num_samples
    if sample.space == 'latent':
      z0 = jax.random.normal(self.keys(seed)[0], (n, cfg.model.generator.latent_dim))
      run = self.model.sample_latent(params, state.generator, z0, k_chains,
                                     chunk=cfg.eval.batch_size)
    else:
      run = self.model.sample(params, self.start_points(seed, n, x_gen, std), k_chains, std,
                              chunk=cfg.eval.batch_size)
    modes = self.classify(run.x, workdir)
    log_z = self.model.log_z(params, std, k_log_z)
    test = self.held_out(seed)
    e_test = self.model.mean_energy(params, test)
    nll = e_test + log_z.log_z
    verdict = self.model.normalisability(params, test, k_norm)
    m = {'model_modes': mode_metrics.count_modes(modes),
         'model_kl': mode_metrics.kl_to_uniform(modes),
         'model_acceptance': run.acceptance, 'model_step_size': run.step_size,
         'energy_model': self.model.mean_energy(params, run.x),
         'energy_test': e_test, 'log_z': log_z.log_z, 'log_z_error': log_z.error,
         'log_z_stderr': log_z.stderr, 'log_z_ess': log_z.ess,
         'log_z_converged': float(log_z.converged), 'log_z_growth': log_z.growth,
         'nll': nll, 'nll_bpd': likelihood.bits_per_dim(nll, self.model.dim),
         'normalisable_real': float(verdict.normalisable), 'ray_drop': verdict.ray_drop,
         'run_off': verdict.run_off}
    m.update(self.bound_metrics(state, k_bounds, m))
    logging.info('StackedMNIST model, seed %d (%s): p_theta after %d %s steps from %s: %d/1000 '
                 'modes, KL %.3f (acceptance %.2f). NLL of held-out digits on the %s: %.1f nats '
                 '= %.3f bits/dim; %s. %s', seed, sample.support, sample.num_steps,
                 sample.kernel, sample.init if sample.space == 'data' else 'the latent EBM',
                 m['model_modes'], m['model_kl'], run.acceptance, sample.support, nll,
                 m['nll_bpd'], log_z.line(), verdict.line())
    return m, run.x

  def start_points(self, seed: int, n: int, x_gen: np.ndarray, std) -> np.ndarray:
    """Where the chains start (`sample.init`): G's evaluation samples, real stacks, or draws
    of the Gaussian base that AIS starts from."""
    init = self.config.sample.init
    if init == 'generator':
      return np.resize(x_gen, (n,) + x_gen.shape[1:])
    if init == 'data':
      images = self.digits()
      x, _ = mnist_data.stacked_batch(jnp.asarray(images), jax.random.fold_in(
          self.keys(seed)[1], 2), n)
      return np.asarray(x)
    y = jax.random.normal(jax.random.fold_in(self.keys(seed)[1], 3), (n, self.model.dim))
    x = sampling.from_space(std.to_w(y), self.config.sample.support)
    return np.asarray(x).reshape((n,) + tuple(self.config.data.shape))

  def bound_metrics(self, state, key, model: dict) -> dict:
    """L_lo and L_up at this state (train.bound_values averaged over eval.bound_batches
    batches of real digits) and where they fail to sandwich the NLL on R^D: the lower side
    only where the lower bound is a bound of that NLL (bounds/base.py, `bounds_nll`), the
    upper side likewise; with exp(-E) not normalisable on R^D that NLL is +inf."""
    cfg = self.config
    images = self.digits()
    values = []
    for k in jax.random.split(key, cfg.eval.bound_batches):
      k_data, k_bound = jax.random.split(k)
      x, _ = mnist_data.stacked_batch(jnp.asarray(images), k_data, cfg.train.batch_size)
      values.append(jax.device_get(self._bound_values(state, x, k_bound)))
    out = {k: float(np.mean([v[k] for v in values])) for k in values[0]
           if k in ('lower_bound', 'upper_bound', 'entropy', 'upper_term')}
    lower, upper = bounds_lib.from_config(cfg)
    dims = (self.model.dim, cfg.model.generator.latent_dim)
    if model['normalisable_real']:
      nll_real = model['nll'] if cfg.sample.support == 'real' else float('nan')
    else:
      nll_real = float('inf')
    # KL(p_g || p_theta) and the entropy are those of a density on R^D only where the lower
    # bound's generator has one; the upper side needs that too.
    ambient = lower.bounds_nll(*dims) and not math.isnan(nll_real)
    if 'lower_bound' in out and ambient:
      out['lower_bound_fails'] = float(out['lower_bound'] > nll_real)
    if 'upper_bound' in out and ambient and upper.bounds_nll(*dims):
      out['upper_bound_fails'] = float(nll_real > out['upper_bound'])
    return out

  def write(self, workdir, step, metrics, artefacts, history) -> None:
    """The sample grid of every seed, the scored samples and the curves over training (and,
    with the model evaluated, p_theta's samples and the sandwich)."""
    out = history_lib.eval_dir(workdir)
    k = self.config.eval.grid_samples
    m = lambda key, seed: history_lib.seed_values(metrics, key, self.seeds)[
        self.seeds.index(seed)]
    if artefacts[0][2] is not None:
      titles = [f'p_theta, seed {seed}, iteration {step}: {m("model_modes", seed):.0f}/1000 '
                f'modes, KL {m("model_kl", seed):.3f}' for seed in self.seeds]
      for name in (f'model_samples_{step}.png', 'model_samples.png'):
        plotting.save_image_grids(os.path.join(out, name), [a[2][:k] for a in artefacts],
                                  titles)
      plot_sandwich(history, self.seeds, os.path.join(out, 'sandwich.png'),
                    self.config.sample.support)
    artefacts = [a[:2] for a in artefacts]
    grids, titles = [], []
    for seed, (x, modes) in zip(self.seeds, artefacts):
      grids.append(x[:k])
      m = lambda key: history_lib.seed_values(metrics, key, self.seeds)[self.seeds.index(seed)]
      titles.append(f'seed {seed}, iteration {step}: {m("modes"):.0f}/1000 modes, '
                    f'KL {m("kl"):.3f}')
    for name in (f'samples_{step}.png', 'samples.png'):
      plotting.save_image_grids(os.path.join(out, name), grids, titles)
    # The scored samples, so that a reader can recount the modes with another classifier.
    with history_lib.atomic_open(os.path.join(out, f'samples_{step}.npz'), 'wb') as f:
      np.savez_compressed(
          f,
          images=np.stack([np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)
                           for x, _ in artefacts]),
          digits=np.stack([mode_metrics.mode_digits(m).astype(np.uint8)
                           for _, m in artefacts]),
          seeds=np.asarray(self.seeds))
    plotting.plot_history(history, ('modes', 'kl', 'energy_real', 'energy_fake'),
                          os.path.join(out, 'modes.png'), 'StackedMNIST', self.seeds)


def plot_sandwich(history: list[dict], seeds, path: str, support: str) -> None:
  """L_lo, the NLL of held-out digits (AIS) and L_up over the evaluations that have them:
  the mean over seeds and each seed; a cross where a side fails (`bound_metrics`)."""
  plt = plotting.pyplot()
  history = [h for h in history if 'nll' in h]
  if not history:
    return
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for key, label, colour in (('nll', f'NLL on the {support} (AIS)', 'k'),
                             ('lower_bound', 'L_lo', 'tab:blue'),
                             ('upper_bound', 'L_up', 'tab:red')):
    pts = [(h['step'], h[key]) for h in history if key in h and np.isfinite(h[key])]
    if not pts:
      continue
    line, = ax.plot(*zip(*pts), marker='o', color=colour, label=label)
    for seed in seeds if len(seeds) > 1 else ():
      pts = [(h['step'], h[f'{key}/seed_{seed}']) for h in history
             if f'{key}/seed_{seed}' in h and np.isfinite(h[f'{key}/seed_{seed}'])]
      if pts:
        ax.plot(*zip(*pts), color=line.get_color(), lw=0.6, alpha=0.5)
  for flag, key, colour, what in (('lower_bound_fails', 'lower_bound', 'tab:blue', 'L_lo > NLL'),
                                  ('upper_bound_fails', 'upper_bound', 'tab:red', 'L_up < NLL')):
    pts = [(h['step'], v) for h in history if flag in h
           for f, v in zip(history_lib.seed_values(h, flag, seeds),
                           history_lib.seed_values(h, key, seeds)) if f]
    if pts:
      ax.plot(*zip(*pts), 'x', color=colour, ms=9, mew=2, label=f'{what} (fails)')
  ax.set_xlabel('iteration')
  ax.set_ylabel('nats')
  ax.set_title('StackedMNIST: bounds and the NLL' + (f', {len(seeds)} seeds'
                                                     if len(seeds) > 1 else ''))
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)

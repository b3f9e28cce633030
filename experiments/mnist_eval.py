"""StackedMNIST evaluation: mode counting at fixed latents (docs/results.md, "StackedMNIST").

`eval.num_samples` generator samples (inference-mode BatchNorm), each channel classified by the
project's MNIST classifier (trained once, then cached), and

    modes = #{m : n_m > 0},   KL(p || U) = sum_m p_m log(1000 p_m)   over the 1,000 modes.

A perfect sampler with N = 26,000 still has E[KL] ~ (M - 1) / (2N) = 0.019 from sampling noise;
`data_modes` / `data_kl` report the same statistics on N real StackedMNIST samples as the floor.
Written to workdir/eval/: samples_<step>.png (+ samples.png), metrics_<step>.json,
history.json and modes.png (modes and KL over training).
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

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

  def __init__(self, config, networks):
    super().__init__(config, networks)
    self._classifier = None
    self._data = {}

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
      images, _, _ = load_digits(self.config)
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
    return m, (x, modes)

  def write(self, workdir, step, metrics, artefacts, history) -> None:
    """The sample grid of every seed, the scored samples and the curves over training."""
    out = history_lib.eval_dir(workdir)
    k = self.config.eval.grid_samples
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

"""StackedMNIST task: on-device batches and mode-counting evaluation (DESIGN.md section 6).

Data: the digits of `load_mnist('train', data.data_dir, data.source)` (TFDS `mnist` when it is
prepared, else the embedded real subset) live on every device as one uint8 array; the batch of
iteration t draws (n_critic * B, 3) digit indices from fold_in(key(seed), t) inside jit, so a
batch is a pure function of (seed, t) (exact resume) and no 28x28x3 image exists on the host.

Evaluation, at fixed latents: `eval.num_samples` generator samples (inference-mode BatchNorm),
each channel classified by the project's MNIST classifier (trained once, then cached), and

    modes = #{m : n_m > 0},   KL(p || U) = sum_m p_m log(1000 p_m)   over the 1,000 modes.

A perfect sampler with N = 26,000 still has E[KL] ~ (M - 1) / (2N) = 0.019 from sampling noise;
`data_modes` / `data_kl` report the same statistics on N real StackedMNIST samples as the floor.
Written to workdir/eval/: samples_<step>.png (+ samples.png), metrics_<step>.json,
history.json and modes.png (modes and KL over training).
"""
from __future__ import annotations

import functools
import os

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from bibound_jax import sharding
from bibound_jax import train
from bibound_jax.data import mnist as mnist_data
from bibound_jax.metrics import mnist_classifier
from bibound_jax.metrics import modes as mode_metrics
from experiments import history as history_lib
from experiments import plotting

DATASETS = ('stackedmnist',)
POSITIVE_KEYS = ('eval.batch_size', 'eval.num_data', 'eval.grid_samples',
                 'eval.classifier_steps')


def _data_dir(config) -> str | None:
  return config.data.get('data_dir') or None


def load_digits(config, split: str = 'train'):
  """(uint8 (N, 28, 28), int32 (N,), source name) from the configured MNIST source."""
  try:
    return mnist_data.load_mnist(split, _data_dir(config), config.data.get('source', 'auto'))
  except ValueError as e:   # a bad source name
    from bibound_jax.config_lib import ConfigError
    raise ConfigError(f'config.data.source: {e}') from None


def stacked_batch(digits: jax.Array, key: jax.Array, batch_size: int) -> tuple[jax.Array, jax.Array]:
  """(x float32 (B, 28, 28, 3) in [-1, 1], index int32 (B, 3)): channel c of sample b is digit
  index[b, c], drawn uniformly with replacement."""
  index = jax.random.randint(key, (batch_size, 3), 0, digits.shape[0])
  x = jnp.moveaxis(digits[index], 1, -1).astype(jnp.float32)   # (B, 3, 28, 28) -> (B, 28, 28, 3)
  return x / 127.5 - 1.0, index


def make_data_fn(config, mesh=None, start_step: int = 0):
  """batch_at(step) -> (n_critic, B, 28, 28, 3), a pure function of (seed, step) built on
  device in its batch sharding (`start_step` is not needed)."""
  del start_step
  mesh = sharding.make_mesh() if mesh is None else mesh
  images, labels, source = load_digits(config)
  logging.info('StackedMNIST from %d %s digits.', len(labels), source)
  digits = sharding.replicate(jnp.asarray(images, jnp.uint8), mesh)
  n_critic, batch = config.optim.n_critic, config.train.batch_size
  data_key = jax.random.fold_in(jax.random.key(config.seed), 1)

  @functools.partial(jax.jit, out_shardings=sharding.batch_sharding(mesh))
  def batch_at_(digits, step):
    x, _ = stacked_batch(digits, jax.random.fold_in(data_key, step), n_critic * batch)
    return x.reshape(n_critic, batch, 28, 28, 3)
  return lambda step: batch_at_(digits, step)


class Evaluator:
  """Mode counting at fixed evaluation latents (comparable across steps and runs)."""

  def __init__(self, config, energy_model, gen_model):
    self.config = config
    ecfg = config.eval
    key = jax.random.fold_in(jax.random.key(config.seed), 2)
    k_z, k_data = jax.random.split(key)
    self.z = jax.random.normal(k_z, (ecfg.num_samples, config.model.generator.latent_dim))
    self.k_data = k_data
    # E(x) (a time-conditioned energy defaults to t = 0, the EBM itself).
    self._energy = jax.jit(lambda p, x: energy_model.apply({'params': p}, x))
    self._generate = jax.jit(lambda g, z: train.generate(g, z, train=False)[0])
    self._classifier = None
    self._data = None

  def classifier(self, workdir: str):
    """The digit classifier: loaded from eval.classifier_path, else trained and cached there."""
    if self._classifier is None:
      path = self.config.eval.classifier_path or os.path.join(workdir, 'mnist_classifier.msgpack')
      self._classifier = mnist_classifier.get_or_train_classifier(
          path if jax.process_index() == 0 else None, data_dir=_data_dir(self.config),
          source=self.config.data.get('source', 'auto'), seed=self.config.seed,
          steps=self.config.eval.classifier_steps)
    return self._classifier

  def reference(self, workdir: str) -> dict:
    """Real StackedMNIST samples for the energy statistics, and the modes/KL of as many real
    samples as generated ones (the sampling-noise floor of the metrics); computed once."""
    if self._data is None:
      images, _, _ = load_digits(self.config)
      digits = jnp.asarray(images)
      n = self.config.eval.num_samples
      x, _ = jax.jit(stacked_batch, static_argnums=2)(digits, self.k_data, n)
      modes = mode_metrics.classify_stacked(mnist_classifier.classifier_apply,
                                            self.classifier(workdir), x,
                                            self.config.eval.batch_size)
      self._data = {'x': np.asarray(x[:self.config.eval.num_data]),
                    'data_modes': mode_metrics.count_modes(modes),
                    'data_kl': mode_metrics.kl_to_uniform(modes)}
    return self._data

  def samples(self, state) -> np.ndarray:
    """(num_samples, 28, 28, 3) generator samples at the fixed evaluation latents."""
    gen = jax.device_get(state.generator)
    bs = self.config.eval.batch_size
    return np.concatenate([np.asarray(self._generate(gen, self.z[i:i + bs]))
                           for i in range(0, self.z.shape[0], bs)])

  def compute(self, state, workdir: str) -> tuple[dict, np.ndarray]:
    ref = self.reference(workdir)
    x = self.samples(state)
    modes = mode_metrics.classify_stacked(mnist_classifier.classifier_apply,
                                          self.classifier(workdir), x, self.config.eval.batch_size)
    e_params = jax.device_get(state.energy.params)
    bs = self.config.eval.batch_size
    e_fake = np.concatenate([np.asarray(self._energy(e_params, x[i:i + bs]))
                             for i in range(0, len(x), bs)])
    e_real = np.asarray(self._energy(e_params, ref['x']))
    hist = mode_metrics.mode_histogram(modes)
    m = {'modes': mode_metrics.count_modes(modes), 'kl': mode_metrics.kl_to_uniform(modes),
         'max_mode_fraction': float(hist.max() / hist.sum()),
         'data_modes': ref['data_modes'], 'data_kl': ref['data_kl'],
         'energy_real': float(e_real.mean()), 'energy_fake': float(e_fake.mean())}
    return m, x

  def evaluate(self, state, step: int, workdir: str, metrics_path: str) -> dict:
    """Compute, then write JSON and PNGs to workdir/eval; returns the scalars."""
    del metrics_path
    m, x = self.compute(state, workdir)
    logging.info('StackedMNIST eval at %d: %d/1000 modes, KL %.3f (real data: %d, %.3f).',
                 step, m['modes'], m['kl'], m['data_modes'], m['data_kl'])
    if jax.process_index() != 0:
      return m
    out = history_lib.eval_dir(workdir)
    history = history_lib.record(workdir, step, m)
    k = self.config.eval.grid_samples
    title = f'iteration {step}: {m["modes"]}/1000 modes, KL {m["kl"]:.3f}'
    for name in (f'samples_{step}.png', 'samples.png'):
      plotting.save_image_grid(os.path.join(out, name), x[:k], title=title)
    plotting.plot_history(history, ('modes', 'kl', 'energy_real', 'energy_fake'),
                          os.path.join(out, 'modes.png'), 'StackedMNIST')
    return m

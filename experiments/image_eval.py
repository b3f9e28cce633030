"""Evaluation of the image runs (CIFAR-10, ImageNet32, SVHN, CelebA); the training stream is
`bibound_jax.data.images.batch_stream`.

Evaluation (`ImageEvaluator`), at fixed evaluation latents and a fixed set of test images:
    energy_real, energy_fake   mean E on `eval.energy_samples` test images / generator samples;
    energy_gap                 energy_fake - energy_real;
    auroc_real_fake, auprc_real_fake
                               AUROC / AUPRC of s(x) = -E(x), test images positive, samples
                               negative (bibound_jax/metrics/ood.py): 1/2 = the energy cannot
                               tell samples from data;
    fid, inception_score(_std) of `eval.num_samples` samples against the `eval.fid_split` split
                               (default: test) in Inception pool3 features (metrics/fid.py);
    prd_f8, prd_f1_8           PRD (F_8 ~ recall, F_1/8 ~ precision; metrics/prd.py) of
                               `eval.prd_samples` samples against as many reference images,
                               from the same pool3 features (`eval.prd_runs` clusterings).
FID, IS and PRD need the Inception weights (bibound_jax/metrics/inception_weights.py); without
them one warning names the conversion command and the rest is still written. The reference
statistics are cached in `eval.stats_dir` (default ~/.cache/bibound_jax/fid_stats):
<dataset>_<split>_inception_pool3.npz (mu, sigma) and ..._prd_features.npy.

Written to workdir/eval/ by process 0: samples_<step>.png (+ samples.png, the latest; the
generator in inference mode on `eval.grid_samples` fixed latents), real.png (test images),
metrics_<step>.json, history.json, history.png (evaluation metrics over training) and bounds.png
(energies and bound terms of the training batches, from metrics.jsonl).
"""
from __future__ import annotations

import math
import os
import shutil

import jax
import numpy as np
from absl import logging

from bibound_jax import config_schema
from bibound_jax.data import images
from bibound_jax.metrics import fid
from bibound_jax.metrics import inception_weights
from bibound_jax.metrics import ood
from bibound_jax.metrics import prd
from experiments import evaluation
from experiments import history as history_lib
from experiments import plotting

HISTORY_KEYS = ('fid', 'inception_score', 'prd_f8', 'prd_f1_8', 'energy_real', 'energy_fake',
                'auroc_real_fake')
TRAIN_KEYS = ('energy_real', 'energy_fake', 'lower_bound', 'upper_term', 'entropy')
DEFAULT_STATS_DIR = os.path.join('~', '.cache', 'bibound_jax', 'fid_stats')


def check_shape(config) -> images.ImageDataset:
  """The data set of `config.data.name`; ConfigError unless config.data.shape is its shape."""
  spec = images.resolve(config.data.name)
  if tuple(config.data.shape) != spec.shape:
    raise config_schema.ConfigError(
        f'config.data.shape = {tuple(config.data.shape)} but {config.data.name} images are '
        f'{spec.shape}; set --config.data.shape="{spec.shape}".')
  return spec


def _atomic_save_npy(path: str, array: np.ndarray) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with history_lib.atomic_open(path, 'wb') as f:
    np.save(f, array)


class ImageEvaluator(evaluation.Evaluator):
  """Evaluates an image run at fixed latents and test images (comparable across steps)."""
  all_processes = False   # reads the test split and the Inception features on process 0

  def __init__(self, config, networks, model: bool = False):
    super().__init__(config, networks, model)
    self.spec = check_shape(config)
    ecfg = config.eval
    self.latent_dim = config.model.generator.latent_dim
    self.fid_split = ecfg.fid_split or self.spec.eval_split
    self.weights_path = ecfg.inception_weights or inception_weights.default_weights_path()
    self.stats_dir = os.path.expanduser(ecfg.stats_dir or DEFAULT_STATS_DIR)
    self._test_images = None
    self._inception = None        # the variables; False once found missing
    self._reference = None        # (mu, sigma, PRD features)

  # -- inputs

  def test_images(self) -> np.ndarray:
    if self._test_images is None:
      cfg = self.config
      self._test_images = images.load_images(cfg.data.name, self.spec.eval_split,
                                             cfg.eval.energy_samples, cfg.eval.batch_size,
                                             cfg.data.data_dir or None, cfg.data.download)
    return self._test_images

  def keys(self, seed: int):
    """(grid key, samples key) of a seed's fixed evaluation latents."""
    return jax.random.split(jax.random.fold_in(jax.random.key(seed), 2))

  def latents(self, seed: int, i: int) -> jax.Array:
    """Evaluation latents of batch i (eval.batch_size, d): the same at every evaluation."""
    return jax.random.normal(jax.random.fold_in(self.keys(seed)[1], i),
                             (self.config.eval.batch_size, self.latent_dim))

  def sample_batches(self, gen, seed: int, n: int):
    """Generator samples (inference-mode BatchNorm) of the first n evaluation latents, in
    batches of eval.batch_size (the last one cut)."""
    b = self.config.eval.batch_size
    for i in range(math.ceil(n / b)):
      yield np.asarray(self._generate(gen, self.latents(seed, i)))[:n - i * b]

  def inception(self):
    """The Inception variables, or None (one warning) when the weights file is unusable."""
    if self._inception is None:
      try:
        self._inception = inception_weights.load_inception_weights(self.weights_path)
      except inception_weights.InceptionWeightsError as e:
        logging.warning('FID, IS and PRD are skipped: %s', e)
        self._inception = False
    return self._inception or None

  def reference(self, variables):
    """(mu, sigma, PRD reference features) of the `fid_split` split, cached in stats_dir."""
    if self._reference is None:
      cfg = self.config
      name = self.spec.tfds_name
      stats = fid.stats_path(self.stats_dir, name, self.fid_split)
      prd_path = os.path.splitext(
          fid.stats_path(self.stats_dir, name, self.fid_split, 'prd_features'))[0] + '.npy'
      features = None

      def compute():
        nonlocal features
        if features is None:
          x = images.load_images(cfg.data.name, self.fid_split, None, cfg.eval.batch_size,
                                 cfg.data.data_dir or None, cfg.data.download)
          logging.info('Inception features of %d %s/%s images for the FID statistics.',
                       len(x), name, self.fid_split)
          features = fid.compute_features(fid.inception_apply, variables, x,
                                          cfg.eval.batch_size)[0]
        return features
      mu, sigma = fid.load_or_compute_stats(stats, compute, dataset=name, split=self.fid_split)
      if os.path.isfile(prd_path):
        ref = np.load(prd_path)
      else:
        pool = compute()
        keep = np.random.default_rng(0).permutation(len(pool))[:cfg.eval.prd_samples]
        ref = pool[np.sort(keep)].astype(np.float32)
        _atomic_save_npy(prd_path, ref)
      self._reference = (mu, sigma, ref)
    return self._reference

  # -- metrics

  def compute(self, state, seed: int, workdir: str) -> tuple[dict, np.ndarray]:
    """(scalar metrics, grid samples) of one seed."""
    del workdir
    e_params, gen = state.energy.params, state.generator
    grid_z = jax.random.normal(self.keys(seed)[0], (self.config.eval.grid_samples,
                                                   self.latent_dim))
    grid = np.asarray(self._generate(gen, grid_z))
    real = self.test_images()
    fake = np.concatenate(list(self.sample_batches(gen, seed, len(real))))
    bs = self.config.eval.batch_size
    e_real, e_fake = self.energies(e_params, real, bs), self.energies(e_params, fake, bs)
    m = {'energy_real': float(np.mean(e_real)), 'energy_fake': float(np.mean(e_fake))}
    m['energy_gap'] = m['energy_fake'] - m['energy_real']
    scores = ood.ood_metrics(-e_real, -e_fake)
    m['auroc_real_fake'], m['auprc_real_fake'] = scores['auroc'], scores['auprc']
    variables = self.inception()
    if variables is not None:
      m.update(self.inception_metrics(gen, seed, variables))
    return m, grid

  def inception_metrics(self, gen, seed: int, variables) -> dict:
    """FID, IS and PRD of eval.num_samples samples (module docstring)."""
    cfg = self.config
    n = cfg.eval.num_samples
    pool3, logits = fid.compute_features(fid.inception_apply, variables,
                                         self.sample_batches(gen, seed, n), cfg.eval.batch_size)
    mu, sigma, ref = self.reference(variables)
    m = {'fid': fid.frechet_distance(*fid.feature_statistics(pool3), mu, sigma)}
    m['inception_score'], m['inception_score_std'] = fid.inception_score(logits,
                                                                         splits=min(10, n))
    k = min(cfg.eval.prd_samples, len(pool3), len(ref))
    if k >= 10:   # PRD clusters 2k points into 20 clusters
      result = prd.prd(pool3[:k], ref[:k], num_runs=cfg.eval.prd_runs)
      m['prd_f8'], m['prd_f1_8'] = result.f_beta, result.f_beta_inv
    return m

  def write(self, workdir, step, metrics, grids, history) -> None:
    """The PNGs of the module docstring (a grid per seed)."""
    out = history_lib.eval_dir(workdir)
    name = self.config.data.name
    titles = []
    for seed in self.seeds:
      value = lambda key: history_lib.seed_values(metrics, key, self.seeds)[
          self.seeds.index(seed)]
      title = f'{name}, seed {seed}, iteration {step}'
      if 'fid' in metrics:
        title += f", FID {value('fid'):.2f}, IS {value('inception_score'):.2f}"
      titles.append(title)
    plotting.save_image_grids(os.path.join(out, f'samples_{step}.png'), grids, titles)
    shutil.copyfile(os.path.join(out, f'samples_{step}.png'), os.path.join(out, 'samples.png'))
    if not os.path.exists(os.path.join(out, 'real.png')):
      plotting.save_image_grid(os.path.join(out, 'real.png'),
                               self.test_images()[:len(grids[0])], title=f'{name} test images')
    plotting.plot_history(history, HISTORY_KEYS, os.path.join(out, 'history.png'),
                          title=f'{name}: evaluation', seeds=self.seeds)
    plotting.plot_history(history_lib.read_metrics(workdir), TRAIN_KEYS,
                          os.path.join(out, 'bounds.png'), title=f'{name}: training batches',
                          seeds=self.seeds)

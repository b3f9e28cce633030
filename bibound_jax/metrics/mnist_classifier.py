"""Train, evaluate, save and cache the MNIST classifier that labels StackedMNIST channels.

The classifier is `bibound_jax.models.mnist_classifier.MNISTClassifier` with its default sizes;
`classifier_apply(params, images)` is the function to hand to `metrics.modes.classify_stacked`.
Training: AdamW with a warmed-up, cosine-decayed learning rate, softmax cross-entropy, and random
shifts of up to `max_shift` pixels (pad with background -1, random 28x28 crop) as the only
augmentation. On the embedded 4,500-digit subset, 300 steps of batch 64 reach 97.6-98.0 % on the 500
held-out digits (seeds 0-3), in about 10-20 s on 2 CPU cores.

File format (`save_classifier`): one msgpack blob (flax.serialization) holding
{'format': 'bibound_jax.mnist_classifier', 'version': 1, 'params': ..., 'info': JSON string},
written atomically (temporary file + rename) so an interrupted save never leaves a half file.
"""
from __future__ import annotations

import functools
import json
import os
import tempfile
import time
from typing import Any

from absl import logging
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bibound_jax.data import mnist as mnist_data
from bibound_jax.models.mnist_classifier import MNISTClassifier

FILE_FORMAT = 'bibound_jax.mnist_classifier'
FILE_VERSION = 1
MODEL = MNISTClassifier()


class ClassifierFileError(ValueError):
  """A classifier file that cannot be read: corrupt, truncated, or not made by save_classifier."""


def classifier_apply(params, images: jax.Array) -> jax.Array:
  """(B, 28, 28, 1) or (B, 28, 28) images in [-1, 1] -> logits (B, 10)."""
  return MODEL.apply({'params': params}, images)


def init_params(key: jax.Array):
  return MODEL.init(key, jnp.zeros((1, 28, 28, 1), jnp.float32))['params']


def _as_inputs(images) -> np.ndarray:
  """uint8 pixels (scaled to [-1, 1]) or floats already in [-1, 1] -> float32 (N, 28, 28, 1)."""
  images = np.asarray(images)
  x = mnist_data.to_unit_range(images) if images.dtype == np.uint8 else images.astype(np.float32)
  if x.ndim == 3:
    x = x[..., None]
  if x.shape[1:] != (28, 28, 1):
    raise ValueError(f'expected (N, 28, 28) or (N, 28, 28, 1) images, got {images.shape}.')
  return x


def random_shift(key: jax.Array, x: jax.Array, max_shift: int) -> jax.Array:
  """Shift each (28, 28, 1) image by an independent integer offset in [-max_shift, max_shift]^2."""
  if max_shift == 0:
    return x
  pad = ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0))
  padded = jnp.pad(x, pad, constant_values=-1.0)   # -1 is the background in [-1, 1].
  offsets = jax.random.randint(key, (x.shape[0], 2), 0, 2 * max_shift + 1)
  crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), x.shape[1:])
  return jax.vmap(crop)(padded, offsets)


@functools.partial(jax.jit, static_argnames=('tx', 'batch_size', 'max_shift'),
                   donate_argnums=(0, 1))
def _train_step(params, opt_state, key, step, images, labels, *, tx, batch_size, max_shift):
  k_idx, k_shift = jax.random.split(jax.random.fold_in(key, step))
  idx = jax.random.randint(k_idx, (batch_size,), 0, images.shape[0])
  x = random_shift(k_shift, images[idx], max_shift)

  def loss_fn(p):
    logits = classifier_apply(p, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels[idx]).mean()

  loss, grads = jax.value_and_grad(loss_fn)(params)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


def train_classifier(images, labels, key: jax.Array, steps: int = 500, batch_size: int = 64,
                     learning_rate: float = 3e-3, weight_decay: float = 1e-4,
                     max_shift: int = 2, log_every: int = 100):
  """Trains `MNISTClassifier` from scratch and returns its params.

  Args:
    images: uint8 (N, 28, 28[, 1]) pixels or float32 already in [-1, 1].
    labels: (N,) digits 0..9.
    key: PRNG key (init, batch sampling with replacement, shifts: all derived from it).
    steps, batch_size, learning_rate, weight_decay: AdamW; the learning rate warms up linearly
      over the first 10 % of `steps`, then decays to 0 (cosine).
    max_shift: random-shift augmentation in pixels (0 disables it).
    log_every: log the training loss every this many steps (0: never).
  """
  x = jnp.asarray(_as_inputs(images))
  y = jnp.asarray(np.asarray(labels).astype(np.int32))
  k_init, k_train = jax.random.split(key)
  params = init_params(k_init)
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, learning_rate, warmup_steps=max(1, steps // 10), decay_steps=max(steps, 2))
  tx = optax.adamw(schedule, weight_decay=weight_decay)
  opt_state = tx.init(params)
  start = time.perf_counter()
  for step in range(steps):
    params, opt_state, loss = _train_step(params, opt_state, k_train, step, x, y, tx=tx,
                                          batch_size=batch_size, max_shift=max_shift)
    if log_every and (step + 1) % log_every == 0:
      logging.info('classifier step %d/%d: loss %.4f (%.1f s)', step + 1, steps, float(loss),
                   time.perf_counter() - start)
  return params


@functools.partial(jax.jit, static_argnums=0)
def _predict_batch(apply_fn, params, x):
  return jnp.argmax(apply_fn(params, x), axis=-1).astype(jnp.int32)


def predict(params, images, batch_size: int = 1000) -> np.ndarray:
  """Predicted digits int32 (N,) for uint8 pixels or floats in [-1, 1]."""
  x = _as_inputs(images)
  n = x.shape[0]
  batch_size = max(1, min(batch_size, n))
  out = []
  for start in range(0, n, batch_size):
    chunk = x[start:start + batch_size]
    pad = batch_size - chunk.shape[0]
    chunk = np.pad(chunk, ((0, pad), (0, 0), (0, 0), (0, 0)))   # One compiled shape.
    out.append(np.asarray(_predict_batch(classifier_apply, params, chunk))[:batch_size - pad])
  return np.concatenate(out) if out else np.zeros((0,), np.int32)


def evaluate_accuracy(params, images, labels, batch_size: int = 1000) -> float:
  """Fraction of `images` whose predicted digit equals `labels`."""
  labels = np.asarray(labels).reshape(-1)
  return float(np.mean(predict(params, images, batch_size) == labels))


# ---------------------------------------------------------------------------------------------
# Files.
# ---------------------------------------------------------------------------------------------

def save_classifier(path: str, params, info: dict[str, Any] | None = None) -> None:
  """Writes params (and a JSON-able `info` dict) to `path` atomically."""
  payload = {'format': FILE_FORMAT, 'version': FILE_VERSION,
             'params': jax.tree.map(np.asarray, params), 'info': json.dumps(info or {})}
  blob = flax.serialization.msgpack_serialize(payload)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.tmp_classifier_')
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(blob)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def load_classifier(path: str, return_info: bool = False):
  """Reads a `save_classifier` file -> params (and its info dict if `return_info`).

  Raises:
    FileNotFoundError: no file at `path`.
    ClassifierFileError: the file is corrupt, truncated, or its params do not fit MNISTClassifier.
  """
  with open(path, 'rb') as f:
    blob = f.read()
  hint = ('Delete it to retrain (get_or_train_classifier retrains automatically) or save a new '
          'one with save_classifier.')
  try:
    payload = flax.serialization.msgpack_restore(blob)
  except Exception as e:  # msgpack raises many types on garbage input.
    raise ClassifierFileError(
        f'{path} is not a readable classifier file (corrupt or truncated?): '
        f'{type(e).__name__}: {e}. {hint}') from e
  if not isinstance(payload, dict) or payload.get('format') != FILE_FORMAT:
    raise ClassifierFileError(f'{path} is not a {FILE_FORMAT} file. {hint}')
  if payload.get('version') != FILE_VERSION:
    raise ClassifierFileError(f'{path} has format version {payload.get("version")}, expected '
                              f'{FILE_VERSION}. {hint}')
  params = payload.get('params')
  expected = jax.eval_shape(init_params, jax.random.key(0))
  try:
    shapes_ok = jax.tree.all(jax.tree.map(
        lambda e, a: tuple(e.shape) == tuple(np.shape(a)) and np.asarray(a).dtype == e.dtype,
        expected, params))
  except (ValueError, TypeError) as e:   # Tree structures differ.
    raise ClassifierFileError(f'{path}: parameter tree does not match MNISTClassifier ({e}). '
                              f'{hint}') from e
  if not shapes_ok:
    raise ClassifierFileError(f'{path}: parameter shapes/dtypes do not match MNISTClassifier. '
                              f'{hint}')
  params = jax.tree.map(jnp.asarray, params)
  if not return_info:
    return params
  try:
    info = json.loads(payload.get('info', '{}'))
  except (TypeError, ValueError) as e:
    raise ClassifierFileError(f'{path}: unreadable info field ({e}). {hint}') from e
  return params, info


def get_or_train_classifier(cache_path: str | None, *, data_dir: str | None = None,
                            source: str = 'auto', seed: int = 0, steps: int = 500,
                            min_accuracy: float = 0.95, **train_kwargs):
  """Params of a trained classifier, loaded from `cache_path` or trained and saved there.

  Training uses `load_mnist('train', data_dir, source)` and reports accuracy on
  `load_mnist('test', ...)`; a held-out accuracy below `min_accuracy` is logged as a warning (the
  mode counts would be unreliable). An unreadable cache file is replaced, with a warning.
  `cache_path=None` always trains and saves nothing.
  """
  if cache_path is not None and os.path.exists(cache_path):
    try:
      params, info = load_classifier(cache_path, return_info=True)
      logging.info('Loaded MNIST classifier from %s (%s).', cache_path, info)
      return params
    except ClassifierFileError as e:
      logging.warning('Retraining the MNIST classifier: %s', e)
  train_x, train_y, name = mnist_data.load_mnist('train', data_dir, source)
  test_x, test_y, _ = mnist_data.load_mnist('test', data_dir, source)
  start = time.perf_counter()
  params = train_classifier(train_x, train_y, jax.random.key(seed), steps=steps, **train_kwargs)
  accuracy = evaluate_accuracy(params, test_x, test_y)
  seconds = time.perf_counter() - start
  logging.info('MNIST classifier: held-out accuracy %.4f on %d digits (%s source), %.1f s.',
               accuracy, len(test_y), name, seconds)
  if accuracy < min_accuracy:
    logging.warning('MNIST classifier accuracy %.4f < %.2f: mode counts will be unreliable.',
                    accuracy, min_accuracy)
  if cache_path is not None:
    save_classifier(cache_path, params, info={
        'test_accuracy': accuracy, 'source': name, 'num_train': int(len(train_y)),
        'num_test': int(len(test_y)), 'steps': steps, 'seed': seed, 'train_seconds': seconds})
  return params

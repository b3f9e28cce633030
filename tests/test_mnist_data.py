"""MNIST sources (embedded subset, TFDS via mock_data) and deterministic StackedMNIST batches."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bibound_jax.data import mnist


@pytest.fixture(scope='module')
def train_digits():
  images, labels, source = mnist.load_mnist('train', source='embedded')
  assert source == 'embedded'
  return images, labels


def test_embedded_file_has_5000_real_digits():
  with np.load(mnist.EMBEDDED_PATH) as data:
    images, labels = data['images'], data['labels']
  assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
  assert labels.shape == (5000,) and labels.dtype == np.uint8
  np.testing.assert_array_equal(np.bincount(labels, minlength=10), np.full(10, 500))
  assert images.max() == 255 and images.min() == 0
  # Handwritten digits: mostly background, some ink, no blank images.
  ink = (images > 127).mean(axis=(1, 2))
  assert 0.05 < ink.mean() < 0.3 and ink.min() > 0


@pytest.mark.parametrize('split,per_class', [('train', 450), ('test', 50)])
def test_embedded_split_is_stratified(split, per_class):
  images, labels, source = mnist.load_mnist(split, source='embedded')
  assert source == 'embedded'
  assert images.shape == (10 * per_class, 28, 28) and images.dtype == np.uint8
  assert labels.shape == (10 * per_class,) and labels.dtype == np.int32
  np.testing.assert_array_equal(np.bincount(labels, minlength=10), np.full(10, per_class))


def test_embedded_split_is_a_deterministic_partition():
  train_x, train_y = mnist.load_embedded('train')
  test_x, test_y = mnist.load_embedded('test')
  all_x, all_y = mnist.load_embedded('all')
  again_x, _ = mnist.load_embedded('test')
  np.testing.assert_array_equal(test_x, again_x)
  rows = lambda x: sorted(r.tobytes() for r in x.reshape(len(x), -1))
  assert rows(np.concatenate([train_x, test_x])) == rows(all_x)
  assert not set(rows(train_x)) & set(rows(test_x))
  np.testing.assert_array_equal(np.sort(np.concatenate([train_y, test_y])), np.sort(all_y))


def test_auto_falls_back_to_embedded_when_tfds_missing(tmp_path):
  images, labels, source = mnist.load_mnist('test', data_dir=str(tmp_path), source='auto')
  assert source == 'embedded' and images.shape == (500, 28, 28)


def test_tfds_source_without_data_names_the_command(tmp_path):
  with pytest.raises(FileNotFoundError, match=r'tfds build mnist --data_dir='):
    mnist.load_mnist('train', data_dir=str(tmp_path), source='tfds')
  assert not list(tmp_path.rglob('*.tfrecord*'))   # Nothing was downloaded.


def test_unknown_source_or_split_raises():
  with pytest.raises(ValueError, match='source'):
    mnist.load_mnist('train', source='web')
  with pytest.raises(ValueError, match='splits'):
    mnist.load_mnist('validation', source='embedded')


@pytest.mark.parametrize('source', ['auto', 'tfds'])
def test_tfds_path_with_mock_data(tmp_path, source):
  tfds = pytest.importorskip('tensorflow_datasets')
  # Metadata only (no examples), so that builder.is_prepared() is true; mock_data supplies the
  # examples and leaves the split sizes unknown (builder.info.splits is empty).
  builder = tfds.builder('mnist', data_dir=str(tmp_path))
  os.makedirs(builder.data_dir)
  builder.info.write_to_directory(builder.data_dir)
  with tfds.testing.mock_data(num_examples=7, data_dir=str(tmp_path)):
    assert not tfds.builder('mnist', data_dir=str(tmp_path)).info.splits
    images, labels, name = mnist.load_mnist('train', data_dir=str(tmp_path), source=source)
  assert name == 'tfds'
  assert images.shape == (7, 28, 28) and images.dtype == np.uint8
  assert labels.shape == (7,) and labels.dtype == np.int32
  assert labels.min() >= 0 and labels.max() <= 9


def test_stacked_channels_are_the_drawn_digits(train_digits):
  images, labels = train_digits
  x, idx = mnist.stacked_batch(jnp.asarray(images), jax.random.key(3), 16)
  x, idx = np.asarray(x), np.asarray(idx)
  modes = mnist.stacked_modes(labels[idx])
  assert x.shape == (16, 28, 28, 3) and x.dtype == np.float32
  assert modes.shape == (16,) and modes.dtype == np.int32
  assert x.min() == -1.0 and x.max() == 1.0
  for b in range(16):
    for c in range(3):
      np.testing.assert_allclose(x[b, :, :, c], images[idx[b, c]] / np.float32(127.5) - 1,
                                 atol=1e-6)
    digits = labels[idx[b]]
    assert modes[b] == 100 * digits[0] + 10 * digits[1] + digits[2]
    assert [modes[b] // 100, modes[b] // 10 % 10, modes[b] % 10] == digits.tolist()


def test_training_batches_are_a_function_of_seed_and_step(train_digits):
  images, _ = train_digits
  a, b = mnist.batch_fn(images, [1], 1, 32), mnist.batch_fn(images, [1], 1, 32)
  x1 = np.asarray(a(10))
  a(11)   # Order of calls must not matter.
  np.testing.assert_array_equal(x1, np.asarray(b(10)))
  assert not np.array_equal(x1, np.asarray(a(11)))
  # Seed 1 of two seeds gets the batches of seed 1 alone.
  both = np.asarray(mnist.batch_fn(images, [2, 1], 1, 32)(10))
  assert both.shape == (2, 1, 32, 28, 28, 3)
  np.testing.assert_array_equal(both[1], x1[0])
  assert not np.array_equal(both[0], x1[0])


def test_stacked_modes_cover_all_1000(train_digits):
  images, labels = train_digits
  _, idx = mnist.stacked_batch(jnp.asarray(images), jax.random.key(0), 26_000)
  assert np.unique(mnist.stacked_modes(labels[np.asarray(idx)])).size == 1000

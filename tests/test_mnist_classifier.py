"""The mode-counting MNIST classifier: accuracy on the embedded hold-out, files, caching."""
import fcntl
import time

from absl import logging
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bibound_jax.data import mnist
from bibound_jax.metrics import mnist_classifier as clf
from bibound_jax.metrics import modes as modes_lib

TRAIN_STEPS = 300


@pytest.fixture(scope='module')
def digits():
  train_x, train_y, _ = mnist.load_mnist('train', source='embedded')
  test_x, test_y, _ = mnist.load_mnist('test', source='embedded')
  return train_x, train_y, test_x, test_y


@pytest.fixture(scope='module')
def params(digits, tmp_path_factory, worker_id):
  """Trained once per test session: the pytest-xdist workers share one file, under a lock."""
  root = tmp_path_factory.getbasetemp()
  path = (root if worker_id == 'master' else root.parent) / 'mnist_classifier.msgpack'
  with open(f'{path}.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if path.exists():
      return clf.load_classifier(str(path))
    train_x, train_y, _, _ = digits
    start = time.perf_counter()
    # 300 steps of a conv net: run time, not compile time, so XLA's optimisations pay here
    # (17.7 s against 35.3 s with them off, tests/conftest.py).
    disabled = jax.config.read('jax_disable_most_optimizations')
    jax.config.update('jax_disable_most_optimizations', False)
    try:
      params = jax.block_until_ready(
          clf.train_classifier(train_x, train_y, jax.random.key(0), steps=TRAIN_STEPS))
    finally:
      jax.config.update('jax_disable_most_optimizations', disabled)
    logging.info('classifier trained in %.1f s', time.perf_counter() - start)
    clf.save_classifier(str(path), params)
    return params


def test_held_out_accuracy_above_95_percent(digits, params):
  _, _, test_x, test_y = digits
  accuracy = clf.evaluate_accuracy(params, test_x, test_y)
  print(f'held-out accuracy {accuracy:.4f} on {len(test_y)} digits')
  assert accuracy > 0.95


def test_classify_stacked_real_digits(digits, params):
  _, _, test_x, test_y = digits
  x, index = mnist.stacked_batch(jnp.asarray(test_x), jax.random.key(0), 300)
  true_modes = mnist.stacked_modes(test_y[np.asarray(index)])
  got = modes_lib.classify_stacked(clf.classifier_apply, params, x, batch_size=128)
  assert np.mean(got == true_modes) > 0.95 ** 3


def test_save_load_round_trip(tmp_path, digits, params):
  _, _, test_x, _ = digits
  path = str(tmp_path / 'sub' / 'classifier.msgpack')
  clf.save_classifier(path, params, info={'test_accuracy': 0.97})
  loaded, info = clf.load_classifier(path, return_info=True)
  assert info == {'test_accuracy': 0.97}
  np.testing.assert_array_equal(clf.predict(loaded, test_x), clf.predict(params, test_x))
  jax.tree.map(np.testing.assert_array_equal, loaded, params)


def test_corrupt_files_raise_a_clear_error(tmp_path, params):
  good = tmp_path / 'good.msgpack'
  clf.save_classifier(str(good), params)
  blob = good.read_bytes()
  cases = {
      'garbage': b'\xc1 this is not msgpack \x00\xff' * 10,
      'truncated': blob[:len(blob) // 2],
      'other': flax.serialization.msgpack_serialize({'weights': np.zeros(3)}),
      'wrong_shapes': flax.serialization.msgpack_serialize(
          {'format': clf.FILE_FORMAT, 'version': clf.FILE_VERSION,
           'params': {'Dense_0': {'kernel': np.zeros((2, 2), np.float32)}}, 'info': '{}'}),
  }
  for name, data in cases.items():
    path = tmp_path / f'{name}.msgpack'
    path.write_bytes(data)
    with pytest.raises(clf.ClassifierFileError, match='Delete it to retrain'):
      clf.load_classifier(str(path))
  with pytest.raises(FileNotFoundError):
    clf.load_classifier(str(tmp_path / 'missing.msgpack'))


def test_get_or_train_reuses_the_cache(tmp_path, params, monkeypatch):
  path = str(tmp_path / 'classifier.msgpack')
  clf.save_classifier(path, params)

  def fail(*args, **kwargs):
    raise AssertionError('must not retrain when the cache is valid')

  monkeypatch.setattr(clf, 'train_classifier', fail)
  cached = clf.get_or_train_classifier(path, source='embedded')
  jax.tree.map(np.testing.assert_array_equal, cached, params)


def test_get_or_train_replaces_a_corrupt_cache(tmp_path, params, monkeypatch):
  path = tmp_path / 'classifier.msgpack'
  path.write_bytes(b'corrupt')
  calls = []

  def fake_train(images, labels, key, steps, **kwargs):
    calls.append((images.shape, steps))
    return params

  monkeypatch.setattr(clf, 'train_classifier', fake_train)
  clf.get_or_train_classifier(str(path), source='embedded', steps=5)
  assert calls == [((4500, 28, 28), 5)]
  _, info = clf.load_classifier(str(path), return_info=True)
  assert info['source'] == 'embedded' and info['test_accuracy'] > 0.95

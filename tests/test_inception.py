"""FID Inception-v3: shapes on random weights, the weights file, pytorch-fid layout and outputs."""
import math

import flax.traverse_util
import jax
import numpy as np
import pytest

from bibound_jax.metrics import fid
from bibound_jax.metrics import inception_weights as iw
from bibound_jax.models import inception

# pytorch-fid 0.3.0 (torch 2.14) run offline on `_reference_variables()` loaded through
# `state_dict_from_variables` into its FID Inception (FIDInceptionA/C/E_1/E_2, 1008 classes), fed
# `(images + 1) / 2` with its default resize_input / normalize_input: the first 6 pool3 features,
# the first 6 bias-free logits, and the sums of pool3, of pool3^2 and of the logits per image.
REF_POOL_HEAD = [[8.7659536e-03, 1.8673167e-01, 1.8381352e+00, 1.4342905e+01, 7.8426385e-01, 0.0],
                 [1.6948022e-02, 9.8171517e-02, 1.7160922e+00, 1.4196285e+01, 6.2904620e-01, 0.0]]
REF_LOGITS_HEAD = [[1.228361, 6.9046149, -7.0065513, -6.2423184, -3.3306469, 4.8407803],
                   [1.1713985, 6.8714134, -6.9492575, -6.099182, -3.4641291, 4.7125654]]
REF_POOL_SUM = [7481.0218127, 7384.3109594]
REF_POOL_SQ_SUM = [82785.3881114, 80644.0243264]
REF_LOGITS_SUM = [195.7079208, 193.5765592]


def _reference_variables():
  """Deterministic non-trivial weights (BN statistics not 0/1) and 2 images, numpy only."""
  rng = np.random.default_rng(2015)
  flat = {}
  for key, leaf in sorted(flax.traverse_util.flatten_dict(inception.abstract_variables(),
                                                          sep='/').items()):
    shape = leaf.shape
    if key.endswith('kernel'):
      gain = 1.0 if '/fc/' in key else 2.0
      value = rng.standard_normal(shape, np.float32) * np.sqrt(gain / math.prod(shape[:-1]))
    elif key.endswith(('scale', 'var')):
      value = rng.uniform(0.5, 1.5, shape)
    else:                                   # biases, BN means
      value = 0.2 * rng.standard_normal(shape)
    flat[key] = value.astype(np.float32)
  images = rng.uniform(-1.0, 1.0, (2, 32, 32, 3)).astype(np.float32)
  return iw.unflatten_variables(flat), images


@pytest.fixture(scope='module')
def variables():
  return inception.init_variables(jax.random.key(0))


@pytest.fixture(scope='module')
def images():
  return np.asarray(jax.random.uniform(jax.random.key(1), (2, 32, 32, 3), minval=-1, maxval=1))


@pytest.fixture(scope='module')
def outputs(variables, images):
  return jax.device_get(fid.inception_apply(variables, images))


def test_random_network_shapes(variables, outputs):
  pool, logits = outputs
  assert pool.shape == (2, inception.NUM_FEATURES) and logits.shape == (2, inception.NUM_CLASSES)
  assert np.isfinite(pool).all() and np.isfinite(logits).all()
  assert (pool >= 0).all()                    # an average of ReLU outputs
  assert not np.allclose(pool[0], pool[1])    # the two images give different features
  n_params = sum(x.size for x in jax.tree.leaves(variables['params']))
  assert n_params == 23_850_960               # torchvision's count for 1008 classes, no aux head


def test_weights_file_round_trip(tmp_path, variables, images, outputs):
  path = str(tmp_path / 'inception.npz')
  iw.save_inception_weights(path, variables)
  with np.load(path) as data:
    assert 'params/Mixed_7c/branch_pool/conv/kernel' in data.files
    assert 'batch_stats/Mixed_5b/branch1x1/bn/var' in data.files
  loaded = iw.load_inception_weights(path)
  jax.tree.map(np.testing.assert_array_equal, loaded, jax.device_get(variables))
  pool, logits = fid.inception_apply(loaded, images)
  np.testing.assert_array_equal(pool, outputs[0])
  np.testing.assert_array_equal(logits, outputs[1])


def test_missing_or_corrupt_weights_file_gives_clear_error(tmp_path, variables):
  missing = str(tmp_path / 'nope.npz')
  with pytest.raises(iw.InceptionWeightsError, match='not found') as err:
    iw.load_inception_weights(missing)
  assert missing in str(err.value) and 'python -m bibound_jax.metrics.inception_weights' in str(
      err.value) and iw.PYTORCH_FID_URL in str(err.value)

  corrupt = tmp_path / 'corrupt.npz'
  corrupt.write_bytes(b'PK\x03\x04 definitely not a zip archive')
  with pytest.raises(iw.InceptionWeightsError, match='Cannot read') as err:
    iw.load_inception_weights(str(corrupt))
  assert str(corrupt) in str(err.value) and 'python -m' in str(err.value)

  # A readable archive of the wrong network: names the file, the mismatch and the command.
  flat = iw.flatten_variables(variables)
  flat['params/fc/kernel'] = flat['params/fc/kernel'][:, :1000]
  del flat['batch_stats/Mixed_7c/branch_pool/bn/mean']
  wrong = str(tmp_path / 'wrong.npz')
  np.savez(wrong, **flat)
  with pytest.raises(iw.InceptionWeightsError) as err:
    iw.load_inception_weights(wrong)
  msg = str(err.value)
  assert wrong in msg and 'params/fc/kernel: (2048, 1000) != (2048, 1008)' in msg
  assert 'missing: batch_stats/Mixed_7c/branch_pool/bn/mean' in msg and 'python -m' in msg


def test_default_path_follows_environment(monkeypatch, tmp_path):
  monkeypatch.setenv(iw.WEIGHTS_ENV, str(tmp_path / 'w.npz'))
  assert iw.default_weights_path() == str(tmp_path / 'w.npz')
  with pytest.raises(iw.InceptionWeightsError, match='w.npz'):
    iw.load_inception_weights()


def test_state_dict_layouts_and_names(variables):
  """PyTorch names and OIHW / (out, in) layouts, and the mapping inverts exactly."""
  sd = iw.state_dict_from_variables(variables)
  assert len(sd) == 94 * 5 + 2                # pytorch-fid also has 94 num_batches_tracked
  assert sd['Conv2d_1a_3x3.conv.weight'].shape == (32, 3, 3, 3)
  assert sd['Mixed_6b.branch7x7_2.conv.weight'].shape == (128, 128, 1, 7)
  assert sd['Mixed_7c.branch3x3_2b.conv.weight'].shape == (384, 384, 3, 1)
  assert sd['fc.weight'].shape == (1008, 2048) and sd['fc.bias'].shape == (1008,)
  assert sd['Mixed_5b.branch_pool.bn.running_var'].shape == (32,)
  k = np.asarray(variables['params']['Mixed_6b']['branch7x7_2']['conv']['kernel'])
  np.testing.assert_array_equal(sd['Mixed_6b.branch7x7_2.conv.weight'][5, 7, 0, :], k[0, :, 7, 5])
  sd['Conv2d_1a_3x3.bn.num_batches_tracked'] = np.zeros((), np.int64)   # ignored
  back = iw.variables_from_state_dict(sd)
  jax.tree.map(np.testing.assert_array_equal, back, jax.device_get(variables))
  sd['AuxLogits.fc.weight'] = np.zeros((1000, 768), np.float32)         # a different network
  with pytest.raises(iw.InceptionWeightsError, match='AuxLogits'):
    iw.variables_from_state_dict(sd)


def test_convert_needs_torch_only_when_called(tmp_path):
  try:
    import torch  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    pytest.skip('torch is installed')
  except ImportError:
    pass
  with pytest.raises(ImportError, match='PyTorch'):
    iw.convert_pytorch_fid_weights(str(tmp_path / 'x.pth'), str(tmp_path / 'x.npz'))


def test_outputs_match_pytorch_fid():
  variables, images = _reference_variables()
  pool, logits = jax.device_get(fid.inception_apply(variables, images))
  # float32 rounding differs between the two frameworks: ~4e-7 of the largest value.
  np.testing.assert_allclose(pool[:, :6], REF_POOL_HEAD, rtol=1e-5, atol=1e-5 * pool.max())
  np.testing.assert_allclose(logits[:, :6], REF_LOGITS_HEAD, rtol=1e-5,
                             atol=1e-5 * np.abs(logits).max())
  np.testing.assert_allclose(pool.sum(1), REF_POOL_SUM, rtol=1e-5)
  np.testing.assert_allclose((pool**2).sum(1), REF_POOL_SQ_SUM, rtol=1e-5)
  np.testing.assert_allclose(logits.sum(1), REF_LOGITS_SUM, rtol=1e-4)


def test_input_conventions(variables):
  np.testing.assert_allclose(inception.uint8_to_inception(np.array([0, 255], np.uint8)),
                             [-1.0, 1.0])
  model = inception.InceptionV3()
  gray = jax.ShapeDtypeStruct((3, 28, 28, 1), np.float32)     # repeated to RGB
  pool, logits = jax.eval_shape(model.apply, variables, gray)
  assert pool.shape == (3, 2048) and logits.shape == (3, 1008)
  with pytest.raises(ValueError, match='at least 75'):
    inception.InceptionV3(resize_input=False).apply(variables, np.zeros((1, 32, 32, 3)))

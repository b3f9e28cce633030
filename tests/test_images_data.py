"""TFDS image pipelines: mock_data for every dataset, a tiny prepared dataset for sharding."""
import os

import numpy as np
import pytest

tfds = pytest.importorskip('tensorflow_datasets')
tf = pytest.importorskip('tensorflow')

from bibound_jax.data import images  # pylint: disable=g-import-not-at-top

NAMES = sorted(images.DATASETS)
NUM_EXAMPLES = 10
BATCH = 4


def _write_metadata(name, data_dir):
  """Metadata only (no examples): builder.is_prepared() becomes true, while mock_data supplies
  the examples and leaves the split sizes unknown (as in tests/test_mnist_data.py)."""
  builder = tfds.builder(images.resolve(name).tfds_name, data_dir=data_dir)
  os.makedirs(builder.data_dir, exist_ok=True)
  builder.info.write_to_directory(builder.data_dir)


@pytest.fixture(scope='module')
def mock_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  for name in NAMES:
    _write_metadata(name, data_dir)
  return data_dir


def _batches(name, data_dir, train, n=None, **kwargs):
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES, data_dir=data_dir):
    assert not tfds.builder(images.resolve(name).tfds_name, data_dir=data_dir).info.splits
    it = images.build_dataset(name, 'train', BATCH, data_dir=data_dir, train=train, **kwargs)
    return [next(it) for _ in range(n)] if n else list(it)


def _raw_images(name, data_dir):
  """The mocked examples preprocessed directly, in file order (no flips)."""
  spec = images.resolve(name)
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES, data_dir=data_dir):
    ds = tfds.builder(spec.tfds_name, data_dir=data_dir).as_dataset(split='train',
                                                                      shuffle_files=False)
    return np.stack([images.preprocess_image(ex['image'], spec).numpy() for ex in ds])


def _check_batch(batch, name, size):
  spec = images.resolve(name)
  assert batch['image'].shape == (size,) + spec.shape
  assert batch['image'].dtype == np.float32
  assert batch['image'].min() >= -1.0 and batch['image'].max() <= 1.0
  assert batch['image'].std() > 0.1   # Random mock pixels cover the range.
  if spec.label_key:
    assert batch['label'].shape == (size,) and batch['label'].dtype == np.int32
    assert batch['label'].min() >= 0
  else:
    assert set(batch) == {'image'}


@pytest.mark.parametrize('name', NAMES)
def test_eval_pipeline_is_deterministic_and_unflipped(name, mock_dir):
  first = _batches(name, mock_dir, train=False)
  # One pass; the last partial batch is kept by default when evaluating.
  assert [len(b['image']) for b in first] == [4, 4, 2]
  for b in first:
    _check_batch(b, name, len(b['image']))
  second = _batches(name, mock_dir, train=False)
  for a, b in zip(first, second, strict=True):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  np.testing.assert_array_equal(np.concatenate([b['image'] for b in first]),
                                _raw_images(name, mock_dir))
  dropped = _batches(name, mock_dir, train=False, drop_remainder=True)
  assert [len(b['image']) for b in dropped] == [4, 4]


@pytest.mark.parametrize('name', NAMES)
def test_train_pipeline_shuffles_flips_and_repeats(name, mock_dir):
  batches = _batches(name, mock_dir, train=True, n=4, seed=3)   # 16 > 10 examples: repeats.
  for b in batches:
    _check_batch(b, name, BATCH)
  raw = _raw_images(name, mock_dir)
  flipped = 0
  for image in np.concatenate([b['image'] for b in batches]):
    same = [np.array_equal(image, r) for r in raw]
    mirrored = [np.array_equal(image, r[:, ::-1]) for r in raw]
    assert any(same) or any(mirrored)
    flipped += any(mirrored) and not any(same)
  assert 0 < flipped < 4 * BATCH
  again = _batches(name, mock_dir, train=True, n=4, seed=3)
  for a, b in zip(batches, again):
    np.testing.assert_array_equal(a['image'], b['image'])


def test_missing_data_names_the_build_command(tmp_path):
  with pytest.raises(FileNotFoundError, match=r'tfds build cifar10 --data_dir='):
    images.build_dataset('cifar10', 'train', 8, data_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError,
                     match=r'tfds build downsampled_imagenet/32x32 --data_dir='):
    images.build_dataset('imagenet32', 'train', 8, data_dir=str(tmp_path))
  assert not [p for p in tmp_path.rglob('*') if p.is_file()]   # Nothing was downloaded.


def test_names_aliases_and_arguments():
  assert images.resolve('imagenet32').tfds_name == 'downsampled_imagenet/32x32'
  assert images.resolve('imagenet_resized/32x32').label_key == 'label'
  assert images.resolve('celeba').shape == (64, 64, 3)
  with pytest.raises(ValueError, match='valid: .*cifar10'):
    images.resolve('mnist')
  with pytest.raises(ValueError, match='process_index'):
    images.build_dataset('cifar10', 'train', 8, process_index=2, process_count=2)


def test_unregistered_imagenet_name_falls_back(monkeypatch):
  monkeypatch.setattr(images, '_registered',
                      lambda name: not name.startswith('downsampled_imagenet'))
  assert images.resolve('imagenet32').tfds_name == 'imagenet_resized/32x32'
  assert images.resolve('downsampled_imagenet/32x32').tfds_name == 'imagenet_resized/32x32'


# ---------------------------------------------------------------------------------------------
# Sharding: mock_data ignores the split (every subsplit yields the same fake examples), so a
# tiny dataset is really prepared on disk and read with tfds.split_for_jax_process.
# ---------------------------------------------------------------------------------------------

NUM_FAKE = 23


class BiboundFakeImages(tfds.core.GeneratorBasedBuilder):
  """23 constant 32x32 images; pixel value = example index."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(32, 32, 3)),
        'label': tfds.features.ClassLabel(num_classes=NUM_FAKE)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    for i in range(NUM_FAKE):
      yield i, {'image': np.full((32, 32, 3), 10 * i, np.uint8), 'label': i}


@pytest.fixture(scope='module')
def fake_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('fake_tfds'))
  BiboundFakeImages(data_dir=data_dir).download_and_prepare()
  return data_dir


@pytest.fixture
def fake_dataset(monkeypatch):
  monkeypatch.setitem(images.DATASETS, 'bibound_fake_images',
                      images.ImageDataset('bibound_fake_images', 32, 'train', 'train', 'label'))


def _ids(batches):
  out = []
  for b in batches:
    ids = np.round((b['image'][:, 0, 0, 0] + 1) * 127.5 / 10).astype(int)
    np.testing.assert_array_equal(ids, b['label'])   # Image and label stay paired.
    out.extend(ids.tolist())
  return out


@pytest.mark.parametrize('count', [2, 3])
def test_per_process_shards_are_disjoint_and_cover_the_split(count, fake_dir, fake_dataset):
  shards = [_ids(images.build_dataset('bibound_fake_images', 'train', 4, data_dir=fake_dir,
                                      train=False, process_index=i, process_count=count))
            for i in range(count)]
  sizes = [len(s) for s in shards]
  assert sum(sizes) == NUM_FAKE and max(sizes) - min(sizes) <= 1
  assert sorted(sum(shards, [])) == list(range(NUM_FAKE))
  # Training streams stay inside their shard.
  it = images.build_dataset('bibound_fake_images', 'train', 4, data_dir=fake_dir, train=True,
                            process_index=1, process_count=count)
  assert set(_ids([next(it) for _ in range(8)])) == set(shards[1])


def test_celeba_center_crop_and_dynamic_shapes():
  spec = images.resolve('celeb_a')
  face = np.zeros((218, 178, 3), np.uint8)
  face[39:179, 19:159] = 255                     # The central 140x140 square.
  out = images.preprocess_image(tf.constant(face), spec).numpy()
  assert out.shape == (64, 64, 3)
  np.testing.assert_allclose(out, 1.0, atol=1e-5)   # No pixel from outside the square.
  # A dynamic-shape 32x32 image (downsampled_imagenet) is only rescaled, never resampled.
  spec32 = images.resolve('downsampled_imagenet/32x32')
  fn = tf.function(lambda x: images.preprocess_image(x, spec32),
                   input_signature=[tf.TensorSpec((None, None, 3), tf.uint8)])
  pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
  np.testing.assert_allclose(fn(tf.constant(pixels)).numpy(), pixels / 127.5 - 1, atol=1e-5)
  assert fn(tf.constant(pixels[:20, :30])).shape == (32, 32, 3)

"""TFDS + tf.data input pipelines for the image experiments (CIFAR-10, ImageNet32, SVHN, CelebA).

`build_dataset(name, split, batch_size, ...)` returns an iterator of NumPy batches
{'image': float32 (B, H, W, 3) in [-1, 1], 'label': int32 (B,) when the dataset has labels}.

* Pixels: x = p / 127.5 - 1 (uint8 p), after any crop/resize (bilinear, antialiased, no
  re-quantisation), clipped to [-1, 1].
* Training (train=True): files and examples shuffled (seeded by `seed` and the process index),
  repeated forever, random horizontal flips (stateless, one seed pair per example drawn from
  `tf.data.Dataset.random(seed)`), batches of exactly `batch_size` (drop_remainder).
* Evaluation (train=False): one pass in file order, no flips; the same batches every call. The
  last partial batch is kept unless drop_remainder=True.
* Per-host sharding: with process_count > 1 the split is replaced by
  `tfds.split_for_jax_process(split, process_index=..., process_count=...)` (= the
  process_index-th of `tfds.even_splits(split, process_count)`: contiguous, disjoint, sizes
  differing by at most one). `batch_size` is the per-process batch. Pass `jax.process_index()`
  and `jax.process_count()` from the caller.
* Nothing is ever downloaded unless download=True. When the dataset is not prepared in data_dir
  (`builder.is_prepared()`), FileNotFoundError names the `tfds build NAME --data_dir=DIR` command.
* No split sizes are read from the metadata (they are empty under `tfds.testing.mock_data`).

Datasets (`DATASETS`; the name is the TFDS name):
  cifar10                     32x32, labels; splits train / test.
  cifar100                    32x32, labels ('label', the 100 fine classes); train / test.
                              An OOD set for CIFAR-10 models (experiments/ood.py).
  svhn_cropped                32x32, labels; splits train / test (/ extra).
  downsampled_imagenet/32x32  32x32, no labels; train / validation. ImageNet32 of the generative
                              modelling literature (van den Oord et al., 2016; Glow, VDM).
  imagenet_resized/32x32      32x32, 1000-class labels; train / validation. Chrabaszcz et al.
                              (2017): the same images resized with a box filter.
  celeb_a                     218x178 -> center crop 140x140 -> resize 64x64 (the face region;
                              the usual crop of the GAN literature), no labels (the attributes are
                              dropped); train / validation / test.
Aliases (`ALIASES`): 'imagenet32' -> 'downsampled_imagenet/32x32'; 'celeba', 'celeba64' ->
'celeb_a'. Both ImageNet32 names are registered in TFDS 4.9.10; if the installed TFDS lacks one,
the other is used with a warning (`FALLBACKS`). Images whose size is not the target (e.g. the
dynamic-shape `downsampled_imagenet` under mock_data) are center-cropped to a square and resized.
`image_size` overrides a dataset's output size (e.g. CelebA at 32x32 as an OOD set for CIFAR-10).
"""
from __future__ import annotations

import dataclasses
import queue
import threading
import time
import weakref
from typing import Iterator

import jax
import numpy as np
from absl import logging

from bibound_jax import sharding


@dataclasses.dataclass(frozen=True)
class ImageDataset:
  """How to read one TFDS image dataset."""
  tfds_name: str
  image_size: int                 # Output height = width.
  train_split: str
  eval_split: str
  label_key: str | None = None    # Feature holding the class label, if any.
  center_crop: int | None = None  # Square center crop (pixels) before resizing.

  @property
  def shape(self) -> tuple[int, int, int]:
    return (self.image_size, self.image_size, 3)


DATASETS = {
    'cifar10': ImageDataset('cifar10', 32, 'train', 'test', 'label'),
    'cifar100': ImageDataset('cifar100', 32, 'train', 'test', 'label'),
    'svhn_cropped': ImageDataset('svhn_cropped', 32, 'train', 'test', 'label'),
    'downsampled_imagenet/32x32': ImageDataset('downsampled_imagenet/32x32', 32, 'train',
                                               'validation'),
    'imagenet_resized/32x32': ImageDataset('imagenet_resized/32x32', 32, 'train', 'validation',
                                           'label'),
    'celeb_a': ImageDataset('celeb_a', 64, 'train', 'test', center_crop=140),
}
ALIASES = {
    'imagenet32': 'downsampled_imagenet/32x32',
    'celeba': 'celeb_a',
    'celeba64': 'celeb_a',
}
# Used when the installed TFDS does not register a name.
FALLBACKS = {
    'downsampled_imagenet/32x32': 'imagenet_resized/32x32',
    'imagenet_resized/32x32': 'downsampled_imagenet/32x32',
}


def _registered(tfds_name: str) -> bool:
  import tensorflow_datasets as tfds
  try:
    tfds.builder_cls(tfds_name.split('/')[0])
  except Exception:  # DatasetNotFoundError (its module path varies across TFDS versions).
    return False
  return True


def resolve(name: str) -> ImageDataset:
  """The `ImageDataset` for a dataset name or alias (see the module docstring)."""
  canonical = ALIASES.get(name, name)
  if canonical not in DATASETS:
    valid = sorted(DATASETS) + sorted(ALIASES)
    raise ValueError(f'Unknown image dataset {name!r}; valid: {", ".join(valid)}.')
  if not _registered(canonical) and canonical in FALLBACKS and _registered(FALLBACKS[canonical]):
    logging.warning('TFDS does not register %r; using %r instead.', canonical,
                    FALLBACKS[canonical])
    canonical = FALLBACKS[canonical]
  return DATASETS[canonical]


def _builder(spec: ImageDataset, data_dir, download: bool):
  import tensorflow_datasets as tfds
  builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
  if not builder.is_prepared():
    if not download:
      root = builder.data_dir_root
      raise FileNotFoundError(
          f'TFDS dataset {spec.tfds_name} is not prepared in {root} (looked for '
          f'{builder.data_dir}) and is never downloaded automatically. Prepare it once with '
          f'`tfds build {spec.tfds_name} --data_dir={root}` (or pass download=True), then '
          f'pass data_dir={str(root)!r}.')
    logging.info('Downloading and preparing %s in %s.', spec.tfds_name, builder.data_dir_root)
    builder.download_and_prepare()
  return builder


def _center_crop(image, size):
  """Center crop to (min(size, H), min(size, W)) for a dynamic-shape image."""
  import tensorflow as tf
  shape = tf.shape(image)
  h, w = shape[0], shape[1]
  ch, cw = tf.minimum(size, h), tf.minimum(size, w)
  return tf.image.crop_to_bounding_box(image, (h - ch) // 2, (w - cw) // 2, ch, cw)


def preprocess_image(image, spec: ImageDataset):
  """uint8 (H, W, 3) -> float32 (S, S, 3) in [-1, 1]: optional center crop, square crop +
  antialiased bilinear resize when the size is not S, then p / 127.5 - 1."""
  import tensorflow as tf
  size = spec.image_size
  if spec.center_crop:
    image = _center_crop(image, spec.center_crop)
  image = tf.cast(image, tf.float32)
  if tuple(image.shape[:2]) != (size, size):
    shape = tf.shape(image)
    image = _center_crop(image, tf.minimum(shape[0], shape[1]))
    image = tf.image.resize(image, (size, size), method='bilinear', antialias=True)
  image = tf.ensure_shape(image, (size, size, 3))
  return tf.clip_by_value(image / 127.5 - 1.0, -1.0, 1.0)


def build_tf_dataset(name: str, split: str, batch_size: int, data_dir: str | None = None,
                     train: bool = True, seed: int = 0, download: bool = False,
                     process_index: int = 0, process_count: int = 1, *,
                     drop_remainder: bool | None = None, shuffle_buffer: int = 10_000,
                     prefetch: int = 2, image_size: int | None = None):
  """The tf.data pipeline behind `build_dataset` (same arguments)."""
  import tensorflow as tf
  import tensorflow_datasets as tfds
  if not 0 <= process_index < process_count:
    raise ValueError(f'Need 0 <= process_index < process_count, got {process_index}, '
                     f'{process_count}.')
  if batch_size < 1:
    raise ValueError(f'batch_size must be positive, got {batch_size}.')
  spec = resolve(name)
  if image_size is not None:
    spec = dataclasses.replace(spec, image_size=int(image_size))
  builder = _builder(spec, data_dir, download)
  if process_count > 1:
    split = tfds.split_for_jax_process(split, process_index=process_index,
                                       process_count=process_count)
  # Distinct but reproducible randomness per process.
  seed = int(seed) * 1_000_003 + int(process_index)
  read_config = tfds.ReadConfig(shuffle_seed=seed)
  ds = builder.as_dataset(split=split, shuffle_files=train, read_config=read_config)

  def select(ex):
    out = {'image': ex['image']}
    if spec.label_key:
      out['label'] = tf.cast(ex[spec.label_key], tf.int32)
    return out
  ds = ds.map(select, num_parallel_calls=tf.data.AUTOTUNE)

  if train:
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    flip_seeds = tf.data.Dataset.random(seed=seed).batch(2)

    def augment(ex, flip_seed):
      image = preprocess_image(ex['image'], spec)
      return dict(ex, image=tf.image.stateless_random_flip_left_right(image, flip_seed))
    ds = tf.data.Dataset.zip((ds, flip_seeds)).map(augment, num_parallel_calls=tf.data.AUTOTUNE)
  else:
    ds = ds.map(lambda ex: dict(ex, image=preprocess_image(ex['image'], spec)),
                num_parallel_calls=tf.data.AUTOTUNE)
  drop = train if drop_remainder is None else drop_remainder
  ds = ds.batch(batch_size, drop_remainder=drop)
  options = tf.data.Options()
  options.deterministic = True
  return ds.with_options(options).prefetch(prefetch)


def build_dataset(name: str, split: str, batch_size: int, data_dir: str | None = None,
                  train: bool = True, seed: int = 0, download: bool = False,
                  process_index: int = 0, process_count: int = 1, *,
                  drop_remainder: bool | None = None, shuffle_buffer: int = 10_000,
                  prefetch: int = 2, image_size: int | None = None) -> Iterator[dict]:
  """Iterator of NumPy batches {'image': float32 (B, H, W, 3) in [-1, 1], 'label': int32 (B,)}.

  Args:
    name: a key of `DATASETS` or `ALIASES` ('cifar10', 'imagenet32', 'svhn_cropped', 'celeb_a'...).
    split: TFDS split string ('train', 'test', 'train[:90%]', ...).
    batch_size: per-process batch size.
    data_dir: TFDS data directory (None: TFDS_DATA_DIR or ~/tensorflow_datasets).
    train: shuffle, repeat forever and flip randomly; else one deterministic pass.
    seed: seed of the file/example shuffles and of the flips (combined with process_index).
    download: run `builder.download_and_prepare()` if the data is not prepared (default: raise).
    process_index, process_count: this host's slice of the split (tfds.split_for_jax_process).
    drop_remainder: drop the last partial batch (default: True when training, else False).
    shuffle_buffer: examples in the shuffle buffer (training).
    prefetch: batches prefetched by tf.data.
    image_size: output height = width (default: the dataset's, `resolve(name).image_size`).

  'label' is present only for datasets with labels (not celeb_a or downsampled_imagenet).
  """
  import tensorflow_datasets as tfds
  ds = build_tf_dataset(name, split, batch_size, data_dir, train, seed, download, process_index,
                        process_count, drop_remainder=drop_remainder,
                        shuffle_buffer=shuffle_buffer, prefetch=prefetch,
                        image_size=image_size)
  return iter(tfds.as_numpy(ds))


# ---------------------------------------------------------------------------------------------
# The training stream and evaluation batches.
# ---------------------------------------------------------------------------------------------

def tf_cpu_only() -> None:
  """Keep TensorFlow (tf.data only) off the accelerators, which JAX owns."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # TF already initialised its devices: nothing to do
    pass


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


def batch_stream(name: str, seeds, start_step: int, energy_steps: int, batch_size: int,
                 mesh=None, data_dir: str | None = None, download: bool = False) -> Prefetch:
  """batch_at(step) -> (seeds, energy_steps, B, H, W, 3) in `sharding.batch_sharding(mesh)`
  for consecutive steps from `start_step`, from the training split of `name`: one stream per
  seed of `seeds`.

  Each process reads its own slice of the split with the per-process batch B / processes, and
  `sharding.global_batch` assembles the global array; a daemon thread keeps two batches on
  device ahead of the loop. The stream of seed s is seeded by `data_seed(s, start_step)`: a
  resumed run draws a fresh, reproducible stream, but NOT the batches the interrupted run would
  have drawn (a tf.data shuffle cannot be fast-forwarded cheaply)."""
  spec = resolve(name)
  mesh = sharding.make_mesh(num_seeds=len(seeds)) if mesh is None else mesh
  processes = jax.process_count()
  if batch_size % processes:
    raise ValueError(f'config.train.batch_size = {batch_size} must divide by the {processes} '
                     'processes.')
  local = batch_size // processes
  tf_cpu_only()
  # Built here, not in the thread, so a missing data set raises at once.
  streams = [build_dataset(name, spec.train_split, energy_steps * local, data_dir=data_dir,
                           train=True, seed=data_seed(s, start_step), download=download,
                           process_index=jax.process_index(), process_count=processes)
             for s in seeds]

  def produce():
    x = np.stack([next(st)['image'].reshape((energy_steps, local) + spec.shape)
                  for st in streams])
    return sharding.global_batch(x, mesh)
  return Prefetch(produce, start_step)


def image_batches(name: str, split: str, n: int | None, batch_size: int, data_dir=None,
                  download: bool = False, image_size: int | None = None):
  """Batches (b, S, S, 3) in [-1, 1] of the first `n` images (all when None) of `split`, in
  file order, no flips."""
  tf_cpu_only()
  held = 0
  for batch in build_dataset(name, split, batch_size, data_dir=data_dir, train=False,
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

"""Where a StackedMNIST KL(modes || uniform) comes from: per-channel digit skew vs dependence.
Its tables are those of docs/studies/stackedmnist_sv_gp_kl.md (the decomposition, the
classifier's confidence) and docs/studies/stackedmnist_mi_diff.md (the pixel statistics).

    python -m experiments.studies.stackedmnist_kl WORKDIR/eval/samples_20000.npz \
        [MORE.npz | MODES.npy ...]
    python -m experiments.studies.stackedmnist_kl --classifier=CLASSIFIER.msgpack FILE.npz ...

Reads the predicted digits an evaluation saved (`eval/samples_<step>.npz`, key `digits`, one
row per seed) or an int array of modes (.npy), and prints per seed the plug-in KL, its split
KL = sum_c KL(p_c || U_10) + TC (bibound_jax.metrics.modes.kl_decomposition), the plug-in bias
(M - 1) / 2N that real data shows as its floor, the rarest and commonest digit per channel,
and the share of the KL carried by the 10 most over-represented modes. With --classifier (a
saved mode-counting classifier, e.g. WORKDIR/mnist_classifier.msgpack), a second table gives
the classifier's confidence (max softmax) on the saved images' channels, for the commonest
digit and for the others, and on the embedded real test digits: are the over-produced digits
ambiguous strokes the classifier files under that label, or confident ones? A last table
gives each npz row's pixel statistics (`modes.pixel_statistics`: neighbour-pixel correlation,
saturated share) beside those of real stacked digits: are the samples digits or pixel noise
that the classifier still files under some label?
"""
import numpy as np
from absl import app
from absl import flags

from bibound_jax.data import mnist
from bibound_jax.metrics import modes as modes_lib

flags.DEFINE_string('classifier', '', 'A saved mode-counting classifier: also report its '
                    'confidence on the saved images (npz files only).')
FLAGS = flags.FLAGS


def _runs(path):
  if path.endswith('.npy'):
    yield path, np.load(path)
    return
  data = np.load(path)
  for seed, digits in zip(data['seeds'], data['digits']):
    yield f'{path} seed {seed}', mnist.stacked_modes(digits)


def _confidence_row(name, probs):
  pred, conf = probs.argmax(-1), probs.max(-1)
  top = int(np.bincount(pred, minlength=10).argmax())
  print(f'| {name} | {top} | {np.mean(pred == top):.3f} | {np.median(conf[pred == top]):.3f} | '
        f'{np.median(conf[pred != top]):.3f} | {np.mean(conf[pred == top] < 0.9):.3f} | '
        f'{np.mean(conf[pred != top] < 0.9):.3f} |')


def confidence(paths, classifier_path):
  import jax
  from bibound_jax.metrics import mnist_classifier as clf
  params = clf.load_classifier(classifier_path)
  probs_of = jax.jit(lambda x: jax.nn.softmax(clf.classifier_apply(params, x), -1))

  def probs(images):   # uint8 (N, 28, 28) -> (N, 10)
    x = (images.astype(np.float32) / 127.5 - 1.0)[..., None]
    return np.concatenate([np.asarray(probs_of(x[i:i + 3000]))
                           for i in range(0, len(x), 3000)])
  print('\n| images (every channel) | commonest digit | its share | median confidence: it | '
        'others | confidence < 0.9: it | others |')
  print('| --- | --- | --- | --- | --- | --- | --- |')
  for path in paths:
    if path.endswith('.npz'):
      data = np.load(path)
      for seed, images in zip(data['seeds'], data['images']):
        _confidence_row(f'{path} seed {seed}',
                        probs(np.moveaxis(images, -1, 1).reshape(-1, 28, 28)))
  test_x, _, _ = mnist.load_mnist('test', source='embedded')
  _confidence_row(f'real digits (embedded test set, {len(test_x)})', probs(np.asarray(test_x)))


def pixel_table(paths):
  print('\n| images | neighbour-pixel correlation | saturated share |\n| --- | --- | --- |')
  for path in paths:
    if path.endswith('.npz'):
      data = np.load(path)
      for seed, images in zip(data['seeds'], data['images']):
        out = modes_lib.pixel_statistics(images)
        print(f"| {path} seed {seed} | {out['neighbour_correlation']:.3f} | "
              f"{out['saturated_fraction']:.3f} |")
  import jax  # pylint: disable=import-outside-toplevel
  test_x, _, _ = mnist.load_mnist('test', source='embedded')
  n = 2000   # stacked as the task stacks them (mnist.stacked_batch), back to uint8
  x, _ = mnist.stacked_batch(np.asarray(test_x), jax.random.key(0), n)
  real = np.clip(np.round((np.asarray(x) + 1.0) * 127.5), 0, 255).astype(np.uint8)
  out = modes_lib.pixel_statistics(real)
  print(f"| real stacked digits ({n} from the embedded test set) | "
        f"{out['neighbour_correlation']:.3f} | {out['saturated_fraction']:.3f} |")


def main(argv):
  paths = argv[1:]
  print('| samples | N | KL | KL ch0 / ch1 / ch2 | TC | plug-in bias | digit freq. range '
        '(ch0, ch1, ch2) | KL share of top-10 modes |')
  print('| --- | --- | --- | --- | --- | --- | --- | --- |')
  for path in paths:
    for name, modes in _runs(path):
      out = modes_lib.kl_decomposition(modes)
      hist = modes_lib.mode_histogram(modes)
      p = hist / hist.sum()
      terms = np.where(p > 0, p * np.log(np.maximum(p, 1e-300) * modes_lib.NUM_MODES), 0.0)
      top = np.sort(terms)[::-1][:10].sum() / out['kl']
      digits = modes_lib.mode_digits(modes)
      ranges = ', '.join(
          f'{np.bincount(digits[:, c], minlength=10).min() / len(modes):.3f}-'
          f'{np.bincount(digits[:, c], minlength=10).max() / len(modes):.3f}' for c in range(3))
      print(f"| {name} | {len(modes)} | {out['kl']:.3f} | "
            f"{' / '.join(f'{v:.3f}' for v in out['kl_channels'])} | "
            f"{out['total_correlation']:.3f} | {out['plugin_bias']:.3f} | {ranges} | {top:.2f} |")
  if FLAGS.classifier:
    confidence(paths, FLAGS.classifier)
  pixel_table(paths)


if __name__ == '__main__':
  app.run(main)

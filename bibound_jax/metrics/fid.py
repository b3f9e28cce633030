"""Frechet Inception Distance and Inception Score (docs/experiments.md, "Images").

FID (Heusel et al. 2017) between Gaussians fitted to Inception pool3 features (2048-d) of two sets:

    FID = ||mu_1 - mu_2||^2 + tr(S_1) + tr(S_2) - 2 tr( (S_1 S_2)^{1/2} ).

`feature_statistics` fits (mu, S) in float64 with the unbiased covariance (`np.cov`, ddof 1, as
pytorch-fid and the TTUR code). `frechet_distance` evaluates the trace term in float64 without a
general matrix square root. S_1 S_2 is similar to M = S_1^{1/2} S_2 S_1^{1/2} = A A^T with
A = S_1^{1/2} S_2^{1/2} (symmetric PSD roots from `eigh`, negative rounding eigenvalues clipped to
0), so its eigenvalues are the squared singular values of A and

    tr (S_1 S_2)^{1/2} = sum_i sqrt(lambda_i(M)) = sum_i s_i(A)      (the nuclear norm of A).

method='svd' (default) takes the s_i(A) from an SVD: absolute error ~ eps ||A||, no complex parts,
symmetric in its arguments, and exact on singular covariances (fewer samples than features: FID of
a set with itself is 0 to ~1e-12). method='eigh' takes sqrt(lambda_i(M)) from `eigvalsh(M)`:
the same number, but a zero eigenvalue comes out as +-eps ||M|| and its square root as
~sqrt(eps) ||A||, so singular covariances give errors ~1e-7 per zero eigenvalue. method='sqrtm' is
the classic route: `scipy.linalg.sqrtm(S_1 S_2)`, and if that is not finite, retry with
S_i + eps I (eps = 1e-6); the real part is kept (pytorch-fid's recipe, where a large imaginary
part is an error). All three agree to rounding on well-conditioned inputs.

Inception Score (Salimans et al. 2016), from the Inception logits of N generated images cut into
`splits` consecutive parts (the reference code's N * i // splits boundaries):

    IS_k = exp( E_{x in part k} KL( p(y|x) || p_k(y) ) ),   p_k(y) = mean_{x in part k} p(y|x),

reported as mean and (population) std of IS_k. The reference uses the softmax over all 1008 logits
of the 2015 graph computed without the output bias (what `models.inception.InceptionV3` returns
by default); `num_classes=1000` restricts the softmax to the first 1000 logits instead.

Statistics of a reference set (e.g. the CIFAR-10 train split) are cached as .npz files with keys
`mu` and `sigma` (pytorch-fid's format, so its precomputed files load too), named by dataset and
split with `stats_path`. `compute_features` runs a network over an iterator of image batches in
fixed-size jitted batches.
"""
from __future__ import annotations

import os
import re
import tempfile
from typing import Any, Callable, Iterable

import jax
import numpy as np
import scipy.linalg
import scipy.special

from bibound_jax.models import inception

Array = jax.Array


# ----------------------------------------------------------------------------- statistics

def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
  """(mu (D,), sigma (D, D)) in float64 of features (N, D), N >= 2; unbiased covariance."""
  x = np.asarray(features, np.float64)
  if x.ndim != 2 or x.shape[0] < 2:
    raise ValueError(f'features must be (N, D) with N >= 2, got shape {x.shape}.')
  return x.mean(axis=0), np.cov(x, rowvar=False)


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
  """Symmetric PSD square root by `eigh` (eigenvalues below 0 from rounding are clipped)."""
  w, v = np.linalg.eigh(0.5 * (s + s.T))
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1, sigma2, method: str = 'svd', eps: float = 1e-6) -> float:
  """tr (S_1 S_2)^{1/2} for symmetric PSD S_1, S_2 (see the module docstring for the methods)."""
  s1 = np.asarray(sigma1, np.float64)
  s2 = np.asarray(sigma2, np.float64)
  if method == 'svd':
    return float(np.sum(np.linalg.svd(_sqrt_psd(s1) @ _sqrt_psd(s2), compute_uv=False)))
  if method == 'eigh':
    r1 = _sqrt_psd(s1)
    m = r1 @ s2 @ r1
    w = np.linalg.eigvalsh(0.5 * (m + m.T))
    return float(np.sum(np.sqrt(np.clip(w, 0.0, None))))
  if method == 'sqrtm':
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
      offset = np.eye(s1.shape[0]) * eps
      covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
      if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
        raise ValueError(f'sqrtm has a large imaginary part {np.max(np.abs(covmean.imag))}.')
      covmean = covmean.real
    return float(np.trace(covmean))
  raise ValueError(f"method must be 'svd', 'eigh' or 'sqrtm', got {method!r}.")


def frechet_distance(mu1, sigma1, mu2, sigma2, method: str = 'svd') -> float:
  """||mu_1 - mu_2||^2 + tr S_1 + tr S_2 - 2 tr (S_1 S_2)^{1/2}, in float64 (module docstring)."""
  mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
  mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
  s1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  s2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
    raise ValueError(f'Shapes do not match: mu {mu1.shape} / {mu2.shape}, '
                     f'sigma {s1.shape} / {s2.shape}.')
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(s1) + np.trace(s2)
               - 2.0 * trace_sqrt_product(s1, s2, method))


def fid_from_features(features1, features2, method: str = 'svd') -> float:
  """FID between two feature sets (N_i, D)."""
  return frechet_distance(*feature_statistics(features1), *feature_statistics(features2),
                          method=method)


def inception_score(logits, splits: int = 10,
                    num_classes: int | None = None) -> tuple[float, float]:
  """(mean, std) over `splits` parts of exp(E_x KL(p(y|x) || p(y))), float64 (module docstring).

  logits: (N, C) Inception logits (C = 1008 for `InceptionV3`); `num_classes` keeps the first
  `num_classes` columns before the softmax (None: all, the reference).
  """
  z = np.asarray(logits, np.float64)
  if z.ndim != 2:
    raise ValueError(f'logits must be (N, C), got shape {z.shape}.')
  if num_classes is not None:
    z = z[:, :num_classes]
  n = z.shape[0]
  if not 1 <= splits <= n:
    raise ValueError(f'Need 1 <= splits <= N, got splits={splits}, N={n}.')
  log_p = z - scipy.special.logsumexp(z, axis=1, keepdims=True)
  p = np.exp(log_p)
  scores = []
  for k in range(splits):
    part_p = p[k * n // splits:(k + 1) * n // splits]
    part_log_p = log_p[k * n // splits:(k + 1) * n // splits]
    py = part_p.mean(axis=0, keepdims=True)
    log_py = np.log(np.where(py > 0, py, 1.0))     # p(y) = 0 only where every p(y|x) = 0
    # 0 log 0 = 0: classes with p(y|x) = 0 contribute nothing.
    kl = np.where(part_p > 0, part_p * (part_log_p - log_py), 0.0).sum(axis=1)
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))


# ----------------------------------------------------------------------------- stats cache

def stats_path(cache_dir: str, dataset: str, split: str, tag: str = 'inception_pool3') -> str:
  """`<cache_dir>/<dataset>_<split>_<tag>.npz`, unsafe characters ('/', ':', '[', ...) -> '_'.

  E.g. stats_path(dir, 'cifar10', 'train') -> dir/cifar10_train_inception_pool3.npz.
  """
  name = '_'.join(re.sub(r'[^A-Za-z0-9.+-]+', '_', s).strip('_') for s in (dataset, split, tag))
  return os.path.join(cache_dir, f'{name}.npz')


def save_stats(path: str, mu, sigma, **metadata) -> None:
  """Write mu, sigma (float64) and scalar/str metadata (e.g. num_samples=50000) to `path`.

  Written to a temporary file then renamed, so a reader never sees half a file.
  """
  mu = np.asarray(mu, np.float64)
  sigma = np.asarray(sigma, np.float64)
  if mu.ndim != 1 or sigma.shape != mu.shape * 2:
    raise ValueError(f'Need mu (D,) and sigma (D, D); got {mu.shape} and {sigma.shape}.')
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, suffix='.npz.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      np.savez(f, mu=mu, sigma=sigma, **{k: np.asarray(v) for k, v in metadata.items()})
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def load_stats(path: str) -> tuple[np.ndarray, np.ndarray]:
  """(mu, sigma) float64 from a file written by `save_stats` (or pytorch-fid's .npz)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'No FID statistics at {path}; compute them with '
                            f'`load_or_compute_stats` or `save_stats`.')
  with np.load(path, allow_pickle=False) as data:
    if 'mu' not in data.files or 'sigma' not in data.files:
      raise ValueError(f'{path} has no mu/sigma (keys: {data.files}).')
    return np.asarray(data['mu'], np.float64), np.asarray(data['sigma'], np.float64)


def load_stats_metadata(path: str) -> dict[str, Any]:
  """The metadata saved with the statistics (everything but mu and sigma)."""
  with np.load(path, allow_pickle=False) as data:
    return {k: data[k].item() if data[k].ndim == 0 else data[k]
            for k in data.files if k not in ('mu', 'sigma')}


def load_or_compute_stats(path: str, features_fn: Callable[[], Any],
                          **metadata) -> tuple[np.ndarray, np.ndarray]:
  """Cached (mu, sigma): load `path` if present, else `features_fn() -> (N, D)`, fit, save.

  `num_samples` is recorded with the statistics.
  """
  if os.path.isfile(path):
    return load_stats(path)
  features = np.asarray(features_fn())
  mu, sigma = feature_statistics(features)
  save_stats(path, mu, sigma, num_samples=features.shape[0], **metadata)
  return mu, sigma


# ----------------------------------------------------------------------------- features

def _batches(images_iter: Iterable, batch_size: int):
  """Re-chunk an iterable of image arrays (each (b, ...), any b) into (batch_size, ...) chunks;
  the last chunk is padded by repeating its final image. Yields (chunk, number of real rows)."""
  buffer, held = [], 0
  for images in images_iter:
    images = np.asarray(images)
    while images.shape[0]:
      take = min(batch_size - held, images.shape[0])
      buffer.append(images[:take])
      held += take
      images = images[take:]
      if held == batch_size:
        yield np.concatenate(buffer), batch_size
        buffer, held = [], 0
  if held:
    chunk = np.concatenate(buffer)
    pad = np.repeat(chunk[-1:], batch_size - held, axis=0)
    yield np.concatenate([chunk, pad]), held


def compute_features(apply_fn: Callable, variables, images_iter: Iterable, batch_size: int,
                     data_sharding: jax.sharding.Sharding | None = None):
  """Run `apply_fn(variables, images)` over all images, in jitted batches of `batch_size`.

  images_iter: an iterable of arrays (b, H, W, C) (any b, e.g. tf.data numpy batches), or one
    array (N, H, W, C). They are re-chunked to exactly `batch_size` rows (the last chunk padded,
    the padding dropped from the results) so the function compiles once.
  apply_fn: returns an array (B, ...) or a tuple/pytree of them, e.g. `inception_apply` ->
    (pool3, logits). It is wrapped in `jax.jit` unless already jitted: pass the same function
    object every time to reuse the compilation.
  data_sharding: where to place each batch (e.g. `NamedSharding(mesh, P('data'))`); None: default
    device.
  Returns the outputs concatenated over all images as numpy arrays, same structure as apply_fn's.
  """
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
  fn = apply_fn if hasattr(apply_fn, 'lower') else jax.jit(apply_fn)
  if isinstance(images_iter, (np.ndarray, jax.Array)):
    images_iter = (images_iter,)
  outputs, pending = [], None
  for chunk, n in _batches(images_iter, batch_size):
    batch = jax.device_put(chunk, data_sharding) if data_sharding is not None else chunk
    result = fn(variables, batch)        # dispatched asynchronously
    if pending is not None:              # fetch the previous batch while this one runs
      outputs.append(jax.tree.map(lambda a, k=pending[1]: np.asarray(a)[:k], pending[0]))
    pending = (result, n)
  if pending is None:
    raise ValueError('compute_features got no images.')
  outputs.append(jax.tree.map(lambda a, k=pending[1]: np.asarray(a)[:k], pending[0]))
  return jax.tree.map(lambda *xs: np.concatenate(xs), *outputs)


@jax.jit
def inception_apply(variables, images: Array) -> tuple[Array, Array]:
  """(pool3, logits) of `models.inception.InceptionV3()` for images in [-1, 1] (jitted once)."""
  return inception.InceptionV3().apply(variables, images)

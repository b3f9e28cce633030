"""Frechet distance, Inception Score, the statistics cache and batched feature extraction."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from bibound_jax.metrics import fid


def _random_spd(rng, d, rank=None):
  a = rng.standard_normal((d, rank or 2 * d))
  return a @ a.T / a.shape[1]


def _sqrtm_reference(mu1, s1, mu2, s2):
  """The textbook formula with scipy's general matrix square root, float64."""
  covmean = scipy.linalg.sqrtm(s1 @ s2)
  return float(np.sum((mu1 - mu2)**2) + np.trace(s1) + np.trace(s2)
               - 2 * np.trace(np.real(covmean)))


@pytest.mark.parametrize('d', [2, 16, 64])
def test_frechet_distance_matches_sqrtm_reference(d):
  rng = np.random.default_rng(d)
  mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
  s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
  ref = _sqrtm_reference(mu1, s1, mu2, s2)
  for method in ('svd', 'eigh', 'sqrtm'):
    np.testing.assert_allclose(fid.frechet_distance(mu1, s1, mu2, s2, method=method), ref,
                               rtol=1e-9, atol=1e-10)


def test_frechet_distance_of_gaussians_closed_form():
  # Commuting (diagonal) covariances: FID = ||dmu||^2 + sum (sqrt(a) - sqrt(b))^2.
  a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
  mu1, mu2 = np.zeros(3), np.array([1.0, 2.0, 0.0])
  expected = 5.0 + np.sum((np.sqrt(a) - np.sqrt(b))**2)
  assert fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected,
                                                                                   rel=1e-12)


def test_frechet_distance_identical_is_zero_and_symmetric():
  rng = np.random.default_rng(0)
  feats = rng.standard_normal((500, 64)) * rng.uniform(0.1, 3.0, 64) + 5.0
  mu, sigma = fid.feature_statistics(feats)
  assert abs(fid.frechet_distance(mu, sigma, mu, sigma)) < 1e-6
  # Singular covariance (fewer samples than features) is fine for the eigen solution.
  mu_s, sigma_s = fid.feature_statistics(feats[:20])
  assert abs(fid.frechet_distance(mu_s, sigma_s, mu_s, sigma_s)) < 1e-6
  mu2, sigma2 = fid.feature_statistics(rng.standard_normal((300, 64)))
  d12 = fid.frechet_distance(mu, sigma, mu2, sigma2)
  d21 = fid.frechet_distance(mu2, sigma2, mu, sigma)
  assert d12 > 0
  np.testing.assert_allclose(d12, d21, rtol=1e-10)
  np.testing.assert_allclose(fid.fid_from_features(feats, feats[::-1]), 0.0, atol=1e-6)


def test_feature_statistics_float64_unbiased():
  x = np.random.default_rng(1).standard_normal((50, 4)).astype(np.float32)
  mu, sigma = fid.feature_statistics(x)
  assert mu.dtype == np.float64 and sigma.dtype == np.float64
  np.testing.assert_allclose(sigma, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-12)
  with pytest.raises(ValueError):
    fid.feature_statistics(x[:1])


def test_inception_score_uniform_and_one_hot():
  mean, std = fid.inception_score(np.zeros((100, 1008)), splits=10)
  assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)
  # One-hot predictions balanced over K classes in every split: IS = K exactly.
  k, n = 10, 1000
  logits = np.where(np.eye(k)[np.arange(n) % k] > 0, 0.0, -1e4)
  mean, std = fid.inception_score(logits, splits=10)
  assert mean == pytest.approx(k, rel=1e-12) and std == pytest.approx(0.0, abs=1e-9)
  # All images in one class: IS = 1.
  assert fid.inception_score(np.tile(logits[:1], (100, 1)), splits=5)[0] == pytest.approx(1.0)
  # Restricting to the first 1000 of 1008 classes.
  wide = np.full((100, 1008), -1e4)
  wide[np.arange(100), np.arange(100) % 4] = 0.0
  assert fid.inception_score(wide, splits=1, num_classes=1000)[0] == pytest.approx(4.0)


def test_inception_score_matches_reference_formula():
  rng = np.random.default_rng(3)
  logits = rng.standard_normal((200, 20)) * 3
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  scores = []
  for part in np.split(p, 4):            # the reference: N * k // splits boundaries
    py = part.mean(0, keepdims=True)
    scores.append(np.exp(np.mean(np.sum(part * (np.log(part) - np.log(py)), 1))))
  mean, std = fid.inception_score(logits, splits=4)
  np.testing.assert_allclose([mean, std], [np.mean(scores), np.std(scores)], rtol=1e-10)


def test_stats_cache_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  mu, sigma = fid.feature_statistics(rng.standard_normal((40, 8)))
  path = fid.stats_path(str(tmp_path), 'cifar10', 'train[:90%]')
  assert path == str(tmp_path / 'cifar10_train_90_inception_pool3.npz')
  fid.save_stats(path, mu, sigma, num_samples=40, dataset='cifar10')
  mu2, sigma2 = fid.load_stats(path)
  np.testing.assert_array_equal(mu2, mu)
  np.testing.assert_array_equal(sigma2, sigma)
  assert fid.load_stats_metadata(path) == {'num_samples': 40, 'dataset': 'cifar10'}
  with pytest.raises(FileNotFoundError, match='No FID statistics'):
    fid.load_stats(str(tmp_path / 'missing.npz'))

  calls = []
  def features():
    calls.append(1)
    return rng.standard_normal((30, 8))
  other = fid.stats_path(str(tmp_path), 'cifar10', 'test')
  first = fid.load_or_compute_stats(other, features)
  second = fid.load_or_compute_stats(other, features)
  assert len(calls) == 1
  np.testing.assert_array_equal(first[1], second[1])
  assert fid.load_stats_metadata(other)['num_samples'] == 30


def test_compute_features_rechunks_pads_and_compiles_once():
  traces = []
  def apply_fn(variables, x):
    traces.append(x.shape)
    flat = jnp.reshape(x, (x.shape[0], -1))
    return flat @ variables['w'], jnp.sum(flat, axis=1)
  variables = {'w': jnp.arange(12.0).reshape(12, 1)}
  images = np.random.default_rng(0).standard_normal((23, 2, 2, 3)).astype(np.float32)
  # Uneven input batches: 5 + 10 + 8 = 23 images, re-chunked into batches of 4 (last padded).
  feats, sums = fid.compute_features(apply_fn, variables, (images[:5], images[5:15], images[15:]),
                                     batch_size=4)
  assert feats.shape == (23, 1) and sums.shape == (23,)
  np.testing.assert_allclose(feats[:, 0], images.reshape(23, -1) @ np.arange(12.0), rtol=1e-5)
  np.testing.assert_allclose(sums, images.reshape(23, -1).sum(1), rtol=1e-5, atol=1e-5)
  assert traces == [(4, 2, 2, 3)]
  # A single array works too, and a sharding places the batches.
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  again, _ = fid.compute_features(apply_fn, variables, images, 8, data_sharding=sharding)
  np.testing.assert_allclose(again, feats, rtol=1e-6)

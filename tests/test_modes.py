"""Mode histogram, mode count and KL(histogram || uniform); channel-wise classification."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from bibound_jax.metrics import modes as modes_lib


def test_exactly_balanced_sample_has_all_modes_and_zero_kl():
  modes = np.repeat(np.arange(1000), 26)
  assert modes_lib.count_modes(modes) == 1000
  np.testing.assert_array_equal(modes_lib.mode_histogram(modes), np.full(1000, 26))
  assert modes_lib.kl_to_uniform(modes) == 0.0


def test_uniform_random_sample_has_all_modes_and_small_kl():
  modes = np.random.default_rng(0).integers(0, 1000, size=26_000)
  assert modes_lib.count_modes(modes) == 1000
  # E[KL] ~ (M - 1) / (2N) = 0.019 for a multinomial sample.
  assert 0 < modes_lib.kl_to_uniform(modes) < 0.04


def test_single_mode_sample():
  modes = np.full(500, 123)
  assert modes_lib.count_modes(modes) == 1
  assert modes_lib.kl_to_uniform(modes) == pytest.approx(math.log(1000), rel=1e-12)


def test_two_mode_sample_by_hand():
  modes = np.array([3, 3, 3, 7])   # p = (3/4, 1/4) on two of the modes.
  assert modes_lib.count_modes(modes) == 2
  expected = 0.75 * math.log(0.75 * 1000) + 0.25 * math.log(0.25 * 1000)
  assert modes_lib.kl_to_uniform(modes) == pytest.approx(expected, rel=1e-12)
  assert modes_lib.kl_to_uniform(modes, num_modes=8) == pytest.approx(
      0.75 * math.log(6) + 0.25 * math.log(2), rel=1e-12)


def test_histogram_rejects_out_of_range_modes():
  with pytest.raises(ValueError, match='modes'):
    modes_lib.mode_histogram([0, 1000])
  with pytest.raises(ValueError, match='modes'):
    modes_lib.kl_to_uniform([-1])
  with pytest.raises(ValueError, match='sample'):
    modes_lib.kl_to_uniform(np.zeros((0,), np.int32))


def _brightness_classifier(params, images):
  """A fake classifier: digit k <=> constant image value k / 10 - 0.5 (params = scale)."""
  centres = jnp.arange(10) / 10 - 0.5
  mean = images.reshape(images.shape[0], -1).mean(axis=1)
  return -params * (mean[:, None] - centres[None, :]) ** 2


def test_classify_stacked_uses_each_channel_in_order():
  rng = np.random.default_rng(0)
  digits = rng.integers(0, 10, size=(37, 3))   # 37: the last batch of 16 is padded.
  x = np.broadcast_to((digits / 10 - 0.5)[:, None, None, :], (37, 28, 28, 3)).astype(np.float32)
  got = modes_lib.classify_stacked(_brightness_classifier, 1.0, x, batch_size=16)
  assert got.dtype == np.int32
  np.testing.assert_array_equal(got, 100 * digits[:, 0] + 10 * digits[:, 1] + digits[:, 2])


def test_kl_decomposition_splits_marginals_and_dependence():
  rng = np.random.default_rng(0)
  # Independent channels, channel 1 skewed: TC ~ 0 (sampling noise only) and the KL is the
  # marginal KL of channel 1, whose exact value is known.
  q = np.array([0.3] + [0.7 / 9] * 9)
  d = np.stack([rng.integers(0, 10, 200_000), rng.choice(10, 200_000, p=q),
                rng.integers(0, 10, 200_000)], -1)
  out = modes_lib.kl_decomposition(100 * d[:, 0] + 10 * d[:, 1] + d[:, 2])
  assert out['kl'] == pytest.approx(modes_lib.kl_to_uniform(100 * d[:, 0] + 10 * d[:, 1] +
                                                            d[:, 2]), abs=1e-9)
  assert out['kl_channels'][1] == pytest.approx(float(np.sum(q * np.log(10 * q))), abs=2e-3)
  assert out['total_correlation'] == pytest.approx(0.0, abs=5e-3)
  assert out['kl'] == pytest.approx(sum(out['kl_channels']) + out['total_correlation'])
  # Fully dependent channels (all three equal), uniform marginals: every nat is dependence.
  c = rng.integers(0, 10, 10_000)
  out = modes_lib.kl_decomposition(111 * c)
  assert max(out['kl_channels']) < 1e-2
  assert out['total_correlation'] == pytest.approx(math.log(100), abs=1e-2)
  np.testing.assert_array_equal(modes_lib.mode_digits([0, 7, 305, 999]),
                                [[0, 0, 0], [0, 0, 7], [3, 0, 5], [9, 9, 9]])
  assert modes_lib.kl_decomposition(np.arange(1000).repeat(26))['plugin_bias'] == (
      pytest.approx(999 / 52_000))


def test_pixel_statistics_tell_strokes_from_noise():
  rng = np.random.default_rng(0)
  noise = rng.integers(0, 256, (200, 28, 28, 3), dtype=np.uint8)
  out = modes_lib.pixel_statistics(noise)
  assert out['neighbour_correlation'] == pytest.approx(0.0, abs=0.01)
  assert out['saturated_fraction'] == pytest.approx(6 / 256, abs=0.003)   # 0..2 and 253..255
  # Each row a constant: every pixel equals its right neighbour.
  rows = np.repeat(rng.integers(0, 256, (50, 28, 1, 3), dtype=np.uint8), 28, axis=2)
  assert modes_lib.pixel_statistics(rows)['neighbour_correlation'] == pytest.approx(1.0)
  # By hand: one image, one row [0, 255, 0]: pairs (-1, 1) and (1, -1), correlation -1.
  stripe = np.array([0, 255, 0], np.uint8).reshape(1, 1, 3, 1)
  assert modes_lib.pixel_statistics(stripe) == pytest.approx(
      {'neighbour_correlation': -1.0, 'saturated_fraction': 1.0})
  with pytest.raises(ValueError, match='uint8 images'):
    modes_lib.pixel_statistics(noise.astype(np.float32))

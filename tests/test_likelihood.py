"""log Z by AIS against closed forms, the normalisability verdict, dequantisation and bits/dim."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bibound_jax import likelihood
from bibound_jax import sampling


def _gaussian(dim, key):
  mu = 0.5 * jax.random.normal(key, (dim,))
  sigma = jnp.exp(jax.random.uniform(jax.random.fold_in(key, 1), (dim,), minval=-2.0,
                                     maxval=0.5))
  energy = lambda x: 0.5 * jnp.sum(((x - mu) / sigma) ** 2, -1)
  log_z = float(jnp.sum(jnp.log(sigma)) + 0.5 * dim * math.log(2.0 * math.pi))
  return energy, mu, sigma, log_z


def _ais_runner(log_p, dim, chains, leapfrog=3):
  return jax.jit(lambda t, k: likelihood.ais(log_p, dim, k, num_chains=chains, num_temps=t,
                                             kernel_name='hmc', num_leapfrog=leapfrog,
                                             step_size=0.1), static_argnums=0)


def test_ais_recovers_a_gaussian_log_z_in_stackedmnist_dimension():
  # D = 2352, a diagonal Gaussian energy with scales over a decade; the base (the chains'
  # standardisation) is off by 10% in scale and 0.1 std in location in every coordinate:
  # KL(base || target) = 34 nats, spread over 2352 coordinates. (At 50 and 100 temperatures
  # with 16 chains the check says converged while the estimate is 0.75 nats low, 3.5 times
  # its reported error: too few temperatures fool the doubling check.)
  dim = 28 * 28 * 3
  energy, mu, sigma, truth = _gaussian(dim, jax.random.key(0))
  std = sampling.Standardise(mu + 0.1 * sigma, 1.1 * sigma)
  run = _ais_runner(std.log_density(sampling.data_log_density(energy, 'real', (dim,))), dim, 32)
  estimates = [likelihood.converged_log_z(run, jax.random.key(i), 100, 1) for i in range(3)]
  for est in estimates:
    assert abs(est.log_z - truth) <= 3.0 * est.error, (est.line(), truth)
    assert est.ess > 4
  # Z_hat is unbiased, so log Z_hat is not above log Z on average beyond its error.
  mean = np.mean([e.log_z for e in estimates])
  assert mean - truth <= np.mean([e.error for e in estimates]) / math.sqrt(3), (mean, truth)


def test_ais_recovers_a_gaussian_mixture_log_z():
  # exp(-E) = e^5 sum_k w_k exp(-|x - mu_k|^2 / (2 s^2)): two components in 10-D (weights
  # 0.3 / 0.7, 6 std apart), so log Z = 5 + D/2 log(2 pi s^2). The base is one broad Gaussian
  # covering both.
  dim, s = 10, 0.5
  w = jnp.asarray([0.3, 0.7])
  mu = jnp.zeros((2, dim)).at[0, 0].set(-1.5).at[1, 0].set(1.5)

  def energy(x):
    d = -0.5 * jnp.sum((x[:, None, :] - mu) ** 2, -1) / s ** 2
    return -(5.0 + jax.scipy.special.logsumexp(d + jnp.log(w), -1))

  truth = 5.0 + 0.5 * dim * math.log(2.0 * math.pi * s ** 2)   # sum_k w_k = 1
  std = sampling.Standardise(jnp.zeros(dim), jnp.full((dim,), 1.5))
  run = _ais_runner(std.log_density(sampling.data_log_density(energy, 'real', (dim,))), dim,
                    256)
  est = likelihood.converged_log_z(run, jax.random.key(3), 200, 1)
  assert abs(est.log_z - truth) <= 3.0 * est.error, (est.line(), truth)
  assert est.error < 0.3, est.line()


def test_weight_statistics_known_answers():
  z, se, ess = likelihood.weight_statistics(jnp.full((8,), 2.0))
  assert float(z) == pytest.approx(2.0)
  assert float(se) == pytest.approx(0.0, abs=1e-6)
  assert float(ess) == pytest.approx(8.0)
  # One weight e^10 times the others: ESS -> about 1.
  _, _, ess = likelihood.weight_statistics(jnp.asarray([10.0, 0.0, 0.0, 0.0]))
  assert float(ess) == pytest.approx((math.exp(10) + 3) ** 2 / (math.exp(20) + 3), rel=1e-5)


def test_converged_flags_a_growing_estimate():
  def run(t, key):
    del key
    value = jnp.asarray(-100.0 / t)        # rises by 0.5 nats from T = 100 to 200: converged
    return likelihood.AISRun(value, jnp.asarray(0.01), jnp.asarray(50.0), jnp.zeros(4),
                             jnp.zeros(t), jnp.zeros(t))
  est = likelihood.converged_log_z(run, jax.random.key(0), 100, 1, tolerance=1.0)
  assert est.converged and est.growth == pytest.approx(0.5)
  est = likelihood.converged_log_z(run, jax.random.key(0), 10, 1, tolerance=1.0)
  assert not est.converged and 'NOT converged' in est.line()   # rises by 5 nats


def test_unnormalisable_energy_is_named_in_one_line():
  # E(x) = -|x| falls along every ray: exp(-E) is not integrable, whatever the data.
  x_data = jax.random.normal(jax.random.key(0), (64, 5))
  energy = lambda x: -jnp.linalg.norm(x, axis=-1)
  std = sampling.Standardise.fit(x_data)
  chains = jax.jit(functools.partial(
      sampling.run_chains, std.log_density(sampling.data_log_density(energy, 'real', (5,))),
      num_steps=60, num_warmup=20, step_size=0.5))(std.to_y(x_data), jax.random.key(1))
  verdict = likelihood.normalisability(energy, x_data, jax.random.key(2), chains=chains,
                                       standardise=std)
  assert not verdict.normalisable
  assert verdict.ray_drop > 0 and verdict.run_off > likelihood.RUN_OFF_RADII
  line = verdict.line()
  assert line.startswith('exp(-E) is NOT normalisable on R^D (NLL = +inf)') and '\n' not in line
  # A confining energy passes.
  quadratic = lambda x: 0.5 * jnp.sum(x ** 2, -1)
  chains = jax.jit(functools.partial(
      sampling.run_chains, std.log_density(sampling.data_log_density(quadratic, 'real', (5,))),
      num_steps=60, num_warmup=20, step_size=0.5))(std.to_y(x_data), jax.random.key(1))
  verdict = likelihood.normalisability(quadratic, x_data, jax.random.key(2), chains=chains,
                                       standardise=std)
  assert verdict.normalisable, verdict.line()


def test_ray_test_finds_the_one_falling_direction():
  # E = |x| - 1.5 x_0 falls only inside the cone x_0 > |x| / 1.5 around e_0; in 50-D random
  # rays (x_0 ~ 0.14 |x|) all rise, and the descent on the sphere finds the cone.
  energy = lambda x: jnp.linalg.norm(x, axis=-1) - 1.5 * x[:, 0]
  key = jax.random.key(0)
  drop, _ = likelihood.ray_test(energy, jnp.zeros(50), 1.0, key, num_rays=16, descent_steps=0)
  assert float(drop) < 0
  drop, _ = likelihood.ray_test(energy, jnp.zeros(50), 1.0, key, num_rays=16)
  assert float(drop) > 0


def test_dequantise_stays_in_the_pixel_bin():
  p = jnp.arange(256, dtype=jnp.float32)
  x = jnp.tile(p / 127.5 - 1.0, (100, 1))
  xd = likelihood.dequantise(x, jax.random.key(0))
  lo, hi = p / 128.0 - 1.0, (p + 1.0) / 128.0 - 1.0
  assert bool(jnp.all((xd >= lo - 1e-6) & (xd <= hi + 1e-6)))
  assert float(jnp.min(xd)) >= -1.0 and float(jnp.max(xd)) < 1.0


def test_bits_per_dim_of_the_uniform_density_is_eight():
  # The uniform density on [-1, 1]^D: NLL = D log 2, each 8-bit pixel then has P = 1/256.
  dim = 2352
  assert likelihood.bits_per_dim(dim * math.log(2.0), dim) == pytest.approx(8.0)
  assert likelihood.bits_per_dim(dim * math.log(2.0), dim, binned=False) == pytest.approx(1.0)

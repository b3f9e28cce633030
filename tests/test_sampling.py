"""MCMC on exp(-E) with blackjax kernels: a known 2-D mixture, the box support, the config."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bibound_jax import config_lib
from bibound_jax import config_schema
from bibound_jax import sampling
from configs import toy

WEIGHTS = np.asarray([0.3, 0.7])
MEANS = np.asarray([[-1.5, 0.0], [1.5, 0.0]])
STD = 0.6


def _mixture_energy(x):
  d = -0.5 * jnp.sum((x[:, None, :] - MEANS) ** 2, -1) / STD ** 2
  return -jax.scipy.special.logsumexp(d + jnp.log(WEIGHTS), -1)


@pytest.mark.parametrize('kernel', sampling.KERNELS)
def test_chains_reproduce_a_known_mixture(kernel):
  # 4,000 chains from a broad start: the weight of the right mode and the first two moments
  # within Monte Carlo error (4 standard errors of independent draws).
  n = 4000
  std = sampling.Standardise(jnp.zeros(2), jnp.ones(2))
  log_p = std.log_density(sampling.data_log_density(_mixture_energy, 'real', (2,)))
  y0 = 1.5 * jax.random.normal(jax.random.key(0), (n, 2))
  chains = jax.jit(functools.partial(sampling.run_chains, log_p, kernel_name=kernel,
                                     num_steps=300, num_warmup=100, step_size=0.3))(
                                         y0, jax.random.key(1))
  x = np.asarray(std.to_w(chains.y))
  mean = WEIGHTS @ MEANS
  cov = STD ** 2 * np.eye(2) + sum(w * np.outer(m - mean, m - mean)
                                   for w, m in zip(WEIGHTS, MEANS))
  right = np.mean(x[:, 0] > 0)
  assert abs(right - WEIGHTS[1]) < 4 * np.sqrt(WEIGHTS[1] * WEIGHTS[0] / n), right
  assert np.all(np.abs(x.mean(0) - mean) < 4 * np.sqrt(np.diag(cov) / n)), x.mean(0)
  # var of a sample variance of near-Gaussian draws ~ 2 s^4 / n (the mixture's x_0 is
  # bimodal: its fourth moment is lower than a Gaussian's, so this is generous there).
  assert np.all(np.abs(np.diag(np.cov(x.T)) - np.diag(cov))
                < 4 * np.sqrt(2 * np.diag(cov) ** 2 / n)), np.cov(x.T)
  target = sampling.default_target_accept(kernel)
  assert abs(float(jnp.mean(chains.acceptance)) - target) < 0.15


def test_box_support_samples_the_uniform_density_of_the_box():
  # E = 0: p_theta is uniform on (-1, 1)^3. In u = atanh(x) the chains see the log-Jacobian
  # only; every sample lies in the box and each coordinate has mean 0 and variance 1/3.
  n = 4000
  energy = lambda x: jnp.zeros(x.shape[0])
  std = sampling.Standardise(jnp.zeros(3), jnp.ones(3))
  log_p = std.log_density(sampling.data_log_density(energy, 'box', (3,)))
  chains = jax.jit(functools.partial(sampling.run_chains, log_p, num_steps=200, num_warmup=50,
                                     step_size=0.3))(jnp.zeros((n, 3)), jax.random.key(0))
  x = np.asarray(sampling.from_space(std.to_w(chains.y), 'box'))
  assert np.all(np.abs(x) < 1)
  assert np.all(np.abs(x.mean(0)) < 4 * np.sqrt(1 / 3 / n))
  assert np.all(np.abs(x.var(0) - 1 / 3) < 4 * np.sqrt(1 / 45 / n))   # var of U(-1,1)^2: 4/45


def test_tanh_log_jacobian_matches_the_direct_formula(x64):
  u = jnp.linspace(-5.0, 5.0, 101, dtype=jnp.float64)
  direct = jnp.sum(jnp.log(1.0 - jnp.tanh(u) ** 2))
  assert float(sampling.log_abs_det_tanh(u)) == pytest.approx(float(direct), rel=1e-12)
  # and stays finite where 1 - tanh^2 underflows to 0 in float32
  big = jnp.asarray([50.0, -50.0], jnp.float32)
  assert float(sampling.log_abs_det_tanh(big)) == pytest.approx(2 * 2 * (np.log(2) - 50), rel=1e-6)


def test_standardise_keeps_the_normalising_constant(x64):
  # int exp(log_p(y)) dy = int exp(log_p_w(w)) dw for y = (w - loc) / scale: check on a 1-D
  # Gaussian by quadrature in y.
  log_p_w = lambda w: -0.5 * jnp.sum((w - 3.0) ** 2) / 4.0      # Z = sqrt(2 pi) * 2
  std = sampling.Standardise(jnp.asarray([1.0]), jnp.asarray([0.5]))
  y = jnp.linspace(-40.0, 40.0, 80001, dtype=jnp.float64)[:, None]
  z = float(jnp.sum(jnp.exp(jax.vmap(std.log_density(log_p_w))(y))) * (y[1, 0] - y[0, 0]))
  assert z == pytest.approx(np.sqrt(2 * np.pi) * 2.0, rel=1e-8)


def test_latent_log_density_is_the_latent_ebm():
  energy = lambda x: jnp.sum(x, axis=-1)
  generate = lambda z: 2.0 * z
  z = jnp.asarray([0.5, -1.0])
  value = sampling.latent_log_density(energy, generate)(z)
  assert float(value) == pytest.approx(-2.0 * (0.5 - 1.0) - 0.5 * (0.25 + 1.0))


def test_bad_sample_settings_name_the_key():
  config = toy.get_config()
  config.sample.kernel = 'nuts'
  with pytest.raises(config_schema.ConfigError, match=r'config\.sample\.kernel'):
    config_lib.validate_config(config, ('25gaussians',))
  config = toy.get_config()
  config.sample.num_warmup = 500
  with pytest.raises(config_schema.ConfigError, match='num_warmup'):
    config_lib.validate_config(config, ('25gaussians',))


_SHARDED = '''
import functools, sys, jax, jax.numpy as jnp, numpy as np
from bibound_jax import likelihood, sampling
energy = lambda x: 0.5 * jnp.sum(x ** 2, -1)
log_p = sampling.data_log_density(energy, 'real', (3,))
y0 = jax.random.normal(jax.random.key(0), (64, 3))
placement = sampling.chain_sharding(64)
if placement is not None:
  y0 = jax.device_put(y0, placement)
chains = jax.jit(functools.partial(sampling.run_chains, log_p, num_steps=40, num_warmup=20,
                                   step_size=0.5))(y0, jax.random.key(1))
run = jax.jit(lambda k: likelihood.ais(log_p, 3, k, num_chains=64, num_temps=50))(
    jax.random.key(2))
np.savez(sys.argv[1], y=np.asarray(chains.y), log_z=np.asarray(run.log_z),
         devices=len(chains.y.sharding.device_set))
'''


def test_chains_and_ais_split_over_devices_like_a_batch(tmp_path):
  """On 4 (fake CPU) devices the chains are sharded along the mesh's data axis and give the
  one-device results, up to the rounding of the acceptance mean that tunes the step size."""
  import os
  import subprocess
  import sys
  out = {}
  for devices in (1, 4):
    env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=(
        os.environ.get('XLA_FLAGS', '') + f' --xla_force_host_platform_device_count={devices}'))
    path = tmp_path / f'{devices}.npz'
    proc = subprocess.run([sys.executable, '-c', _SHARDED, str(path)], env=env,
                          capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out[devices] = np.load(path)
  assert int(out[1]['devices']) == 1 and int(out[4]['devices']) == 4
  np.testing.assert_allclose(out[4]['y'], out[1]['y'], atol=1e-3)
  np.testing.assert_allclose(out[4]['log_z'], out[1]['log_z'], atol=1e-3)

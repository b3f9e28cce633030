"""Shared test fixtures: small random MLP generators with a known dense Jacobian."""
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np
import pytest

# Tests check values, not speed: XLA's slower optimisation passes cost more compile time than
# the tests' small programs run (the Flax examples' tests do the same). Set in the
# environment too, so the subprocesses the tests start inherit it.
os.environ.setdefault('JAX_DISABLE_MOST_OPTIMIZATIONS', '1')
jax.config.update('jax_disable_most_optimizations',
                  os.environ['JAX_DISABLE_MOST_OPTIMIZATIONS'] not in ('0', 'false', 'False'))

# XLA:CPU's fusion emitters (MLIR kernels for every fusion) cost half the compile time of a
# train step under jax_disable_most_optimizations (toy sv+gp step: 6.1 s against 2.8 s, run
# time equal: 9.0 vs 9.1 ms; with optimisations on they are faster, so runs keep them).
if '--xla_cpu_use_fusion_emitters' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             ' --xla_cpu_use_fusion_emitters=false').strip()

# Many tests build the same train step; a persistent compilation cache (shared with the
# subprocesses the tests start) compiles each such program once per machine. Only programs
# that take at least a second to compile: from a cold cache the suite's ~3,000 small ones
# (eager ops, network inits) were all written and ~400 read back, at 0.05 s a read against
# 0.08 s to compile them again (jax.monitoring events over a whole run).
_CACHE = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '.pytest_cache', 'jax')
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', _CACHE)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '1')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
jax.config.update('jax_compilation_cache_dir', os.environ['JAX_COMPILATION_CACHE_DIR'])
jax.config.update('jax_persistent_cache_min_compile_time_secs',
                  float(os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS']))
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def mlp_params(key, d, D, hidden=48, dtype=jnp.float64):
  """A random 3-layer tanh MLP R^d -> R^D (D >> d), scaled so J is well defined."""
  k1, k2, k3, k4 = jax.random.split(key, 4)
  return {
      'w1': jax.random.normal(k1, (d, hidden), dtype) / np.sqrt(d),
      'b1': 0.1 * jax.random.normal(k4, (hidden,), dtype),
      'w2': jax.random.normal(k2, (hidden, hidden), dtype) / np.sqrt(hidden),
      'w3': jax.random.normal(k3, (hidden, D), dtype) / np.sqrt(hidden),
  }


def mlp_fn(params, z):
  """G(z) for one latent z (d,) -> (D,)."""
  h = jnp.tanh(z @ params['w1'] + params['b1'])
  h = jnp.tanh(h @ params['w2'])
  return h @ params['w3']


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield

"""The energy as a model, for the task evaluators: samples of p_theta, log Z, the NLL and
whether exp(-E) is a density at all (docs/sampling.md; the settings: config.sample).

`EnergyModel` holds the jit-compiled programs (compiled once per shape, reused across seeds
and steps); the evaluators call it when `sample.during_training` is set, and always under
`python -m experiments.evaluate`. Everything takes one seed's energy parameters.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from bibound_jax import generator as generator_lib
from bibound_jax import likelihood
from bibound_jax import sampling

Array = jax.Array


@dataclasses.dataclass
class Samples:
  """p_theta samples x (N, *shape) on the host and how the chains went."""
  x: np.ndarray
  acceptance: float
  step_size: float
  max_norm: float


class EnergyModel:
  """Programs for one run's energy network (`module`, E(x) at t = 0) on data of `shape`."""

  def __init__(self, config, module):
    self.section = config.sample
    self.shape = tuple(config.data.shape)
    self.dim = math.prod(self.shape)
    self.settings = sampling.SamplerSettings.from_config(config.sample)
    self._energy = lambda params, x: module.apply({'params': params}, x)
    self._chains = {}

  def energy_fn(self, params):
    """Batched E over flat points (B, D) -> (B,)."""
    return lambda x: self._energy(params, jnp.reshape(x, (x.shape[0],) + self.shape))

  def log_density(self, params, support: str, standardise: sampling.Standardise):
    """log p(y) in the standardised coordinates of `support` (sampling.py)."""
    return standardise.log_density(sampling.data_log_density(
        lambda x: self._energy(params, x), support, self.shape))

  def standardiser(self, x_ref, support: str) -> sampling.Standardise:
    """The chains' preconditioner, which also fixes the AIS base (`base`): on R^D the mean
    and std of the points x_ref (N, *shape) per coordinate, so that the base is a diagonal
    Gaussian fitted to them; on the box none (u = atanh(x) itself): the base is the box's
    uniform density, whose u-coordinates all spread alike (std pi / sqrt(12)), as p_theta's
    do where the energy varies little against the box's volume (docs/sampling.md)."""
    if support == 'box':
      return sampling.Standardise(jnp.zeros(self.dim), jnp.ones(self.dim))
    return sampling.Standardise.fit(jnp.reshape(jnp.asarray(x_ref), (len(x_ref), -1)))

  @staticmethod
  def base(support: str) -> str:
    """The AIS base (likelihood.BASES) of a support."""
    return 'uniform' if support == 'box' else 'gaussian'

  def _chain_program(self, support: str, settings: sampling.SamplerSettings):
    key = (support, settings)
    if key not in self._chains:
      def run(params, standardise, y0, k):
        return sampling.run_chains(self.log_density(params, support, standardise), y0, k,
                                   **settings.kwargs())
      self._chains[key] = jax.jit(run)
    return self._chains[key]

  def sample(self, params, x_start, key, standardise: sampling.Standardise,
             support: str | None = None, chunk: int = 0,
             settings: sampling.SamplerSettings | None = None) -> Samples:
    """MCMC from the points x_start (N, *shape), `chunk` chains per compiled call (0: all);
    each chunk tunes its own step size during the warm-up."""
    support = support or self.section.support
    run = self._chain_program(support, settings or self.settings)

    def one(part, k):
      y0 = standardise.to_y(sampling.to_space(jnp.reshape(jnp.asarray(part), (len(part), -1)),
                                              support))
      chains = run(params, standardise, y0, k)
      return chains, sampling.from_space(standardise.to_w(chains.y), support)
    return _in_chunks(one, np.asarray(x_start, np.float32), key, chunk, self.shape)

  @functools.cached_property
  def _latent_program(self):
    def run(params, gen_state, z0, k):
      generate = lambda z: generator_lib.generate(gen_state, z, train=False)[0]
      log_p = sampling.latent_log_density(lambda x: self._energy(params, x), generate)
      chains = sampling.run_chains(log_p, z0, k, **self.settings.kwargs())
      return chains, generate(chains.y)
    return jax.jit(run)

  def sample_latent(self, params, gen_state, z0, key, chunk: int = 0) -> Samples:
    """MEG's sampler: chains on p(z) ∝ exp(-E(G(z))) N(z; 0, I) from the latents z0 (N, d),
    `chunk` at a time; returns G of the final latents (inference-mode BatchNorm)."""
    one = lambda part, k: self._latent_program(params, gen_state, jnp.asarray(part), k)
    return _in_chunks(one, np.asarray(z0, np.float32), key, chunk, self.shape)

  @functools.cached_property
  def _ais(self):
    s = self.section

    def run(params, standardise, key, num_temps, support):
      return likelihood.ais(self.log_density(params, support, standardise), self.dim, key,
                            num_chains=s.ais_chains, num_temps=num_temps,
                            kernel_name=s.ais_kernel, num_leapfrog=s.num_leapfrog,
                            step_size=s.step_size, base=self.base(support))
    return jax.jit(run, static_argnums=(3, 4))

  def log_z(self, params, standardise: sampling.Standardise, key,
            support: str | None = None) -> likelihood.LogZ:
    """log Z of exp(-E) on the support by AIS from the support's base (`standardiser`), with
    the convergence check of `sample.ais_doublings` doublings of `sample.ais_temps`."""
    support = support or self.section.support
    return likelihood.converged_log_z(
        lambda t, k: self._ais(params, standardise, k, t, support), key,
        self.section.ais_temps, self.section.ais_doublings)

  def normalisability(self, params, x_data, key) -> likelihood.Normalisability:
    """Whether exp(-E) is a density on R^D: the ray test, and `sample.num_steps` steps of MCMC
    on R^D from (at most 256 of) the data points (the chains run off where it is not)."""
    k_ray, k_chain = jax.random.split(key)
    x_data = np.asarray(x_data, np.float32)
    start = x_data[:256]
    real = self.standardiser(x_data, 'real')
    chains = self._chain_program('real', self.settings)(
        params, real, real.to_y(jnp.reshape(jnp.asarray(start), (len(start), -1))), k_chain)
    return likelihood.normalisability(self.energy_fn(params), jnp.asarray(x_data), k_ray,
                                      chains=chains, standardise=real)

  def mean_energy(self, params, x, batch_size: int = 2000) -> float:
    """E averaged over the points x (N, *shape)."""
    fn = self._mean_energy_program
    return float(np.mean(np.concatenate([np.asarray(fn(params, jnp.asarray(x[i:i + batch_size])))
                                         for i in range(0, len(x), batch_size)])))

  @functools.cached_property
  def _mean_energy_program(self):
    return jax.jit(self._energy)


def _in_chunks(run, start: np.ndarray, key, chunk: int, shape) -> Samples:
  """`run(part, key) -> (sampling.Chains, x)` over `chunk` rows of `start` at a time (0: all;
  the last chunk padded with repeated rows and cut, so that one compilation serves all)."""
  chunk = chunk or len(start)
  out, acc, eps, norm = [], [], [], []
  placement = sampling.chain_sharding(chunk)
  for i, k in zip(range(0, len(start), chunk), jax.random.split(key, -(-len(start) // chunk))):
    part = np.resize(start[i:i + chunk], (chunk,) + start.shape[1:])
    if placement is not None:   # the chains split over the devices like a batch
      part = jax.device_put(part, placement)
    chains, x = run(part, k)
    out.append(np.asarray(x)[:min(chunk, len(start) - i)].reshape((-1,) + tuple(shape)))
    acc.append(float(jnp.mean(chains.acceptance)) if chains.acceptance.size else float('nan'))
    eps.append(float(chains.step_size))
    norm.append(float(jnp.max(chains.max_norm)))
  return Samples(np.concatenate(out), float(np.mean(acc)), float(np.mean(eps)),
                 float(np.max(norm)))

"""Samples from the energy-based model p_theta(x) = exp(-E(x)) / Z by MCMC (docs/sampling.md).

The kernels are blackjax's (MALA, HMC). This module chooses the space the chains move in,
runs many chains at once (vmapped and jit-compiled; the chain axis is sharded like a batch when
the start is placed on a mesh) and tunes the step size to a target acceptance rate during
warm-up (blackjax's dual averaging on the chains' mean acceptance rate).

Supports of the model (`SUPPORTS`):
  real   x in R^D, log density -E(x) (+ const);
  box    x in (-1, 1)^D, the range of the pixels: p_theta is exp(-E) restricted to the box.
         The chains move u = atanh(x) in R^D with the change of variables
             log p(u) = -E(tanh u) + sum_i log(1 - tanh(u_i)^2),
         so no proposal ever leaves the box.
`latent_log_density` is MEG's sampler instead: z in R^d with p(z) ∝ exp(-E(G(z))) N(z; 0, I);
G(z) then follows the generator's push-forward of that latent EBM, not p_theta.

Every chain moves in standardised coordinates y = (w - loc) / scale (w = x or u; loc and scale
per coordinate, e.g. the data's): a fixed diagonal preconditioner. blackjax's MALA has no mass
matrix, and pixel coordinates differ in spread by orders of magnitude (background pixels).
`Standardise` maps log densities and points between w and y; its log-Jacobian sum(log scale)
keeps a normalising constant computed in y equal to the one in w.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import blackjax
import flax.struct
import jax
import jax.numpy as jnp

from bibound_jax import config_schema

Array = jax.Array
LogDensity = Callable[[Array], Array]   # one flat point (n,) -> scalar

SUPPORTS = ('real', 'box')
SPACES = ('data', 'latent')
KERNELS = ('mala', 'hmc')
INITS = ('generator', 'data', 'noise')

# config.sample: how the evaluations sample p_theta and estimate its likelihood (`SECTION`).
_DEFAULTS = dict(
    during_training=False,  # periodic evaluations include the model (else only
                            # python -m experiments.evaluate does)
    support='real',         # the model's support: 'real' (R^D) or 'box' ((-1, 1)^D, pixels)
    space='data',           # chains in data space, or 'latent' (MEG: exp(-E(G(z))) N(z; 0, I))
    init='generator',       # chains start at G's samples, at data, or at 'noise'
    kernel='mala',          # blackjax kernel of the chains: 'mala' or 'hmc'
    ais_kernel='hmc',       # ... and of AIS's transitions
    num_leapfrog=5,         # HMC's leapfrog steps per transition
    step_size=0.01,         # the first step size (tuned toward target_accept)
    target_accept=0.0,      # 0: 0.65 for HMC, 0.574 for MALA
    num_chains=0,           # p_theta samples (0: eval.num_samples)
    num_steps=100,          # MCMC transitions per sample ...
    num_warmup=50,          # ... of which the first tune the step size
    ais_chains=64,          # AIS: chains,
    ais_temps=500,          # temperatures of the first run,
    ais_doublings=1,        # and runs at 2x, 4x, ... as many (the convergence check)
)
# Points on the box's faces (pixels at exactly -1 or 1) move this far inside before atanh.
_BOX_EPS = 1e-6


def _check(config) -> None:
  """Check config.sample (ConfigError naming the key)."""
  config_schema.choice(config, 'sample.support', SUPPORTS)
  config_schema.choice(config, 'sample.space', SPACES)
  config_schema.choice(config, 'sample.init', INITS)
  config_schema.choice(config, 'sample.kernel', KERNELS)
  config_schema.choice(config, 'sample.ais_kernel', KERNELS)
  config_schema.positive(config, 'sample.num_leapfrog', 'sample.step_size', 'sample.num_steps',
                         'sample.ais_chains', 'sample.ais_temps')
  config_schema.positive(config, 'sample.target_accept', 'sample.num_chains',
                         'sample.num_warmup', 'sample.ais_doublings', allow_zero=True)
  s = config.sample
  if not s.target_accept < 1:
    raise config_schema.ConfigError(
        f'config.sample.target_accept = {s.target_accept}; use a rate in (0, 1), or 0 for the '
        "kernel's default.")
  if s.num_warmup > s.num_steps:
    raise config_schema.ConfigError(
        f'config.sample.num_warmup = {s.num_warmup} exceeds config.sample.num_steps = '
        f'{s.num_steps}: the warm-up steps are part of the chain.')


# Evaluation settings only: any of them may change between a run and its resumption.
SECTION = config_schema.Section('sample', _DEFAULTS, _check, resumable=('*',))


def to_space(x: Array, support: str) -> Array:
  """The chains' coordinates w of data points x: x itself ('real') or atanh(x) ('box')."""
  if support == 'real':
    return x
  if support == 'box':
    return jnp.arctanh(jnp.clip(x, -1.0 + _BOX_EPS, 1.0 - _BOX_EPS))
  raise ValueError(f'Unknown support {support!r}; valid: {", ".join(SUPPORTS)}.')


def from_space(w: Array, support: str) -> Array:
  """Data points x of the chains' coordinates w (inverse of `to_space`)."""
  if support == 'real':
    return w
  if support == 'box':
    return jnp.tanh(w)
  raise ValueError(f'Unknown support {support!r}; valid: {", ".join(SUPPORTS)}.')


def log_abs_det_tanh(u: Array) -> Array:
  """sum_i log(1 - tanh(u_i)^2) = sum_i 2 (log 2 - u_i - softplus(-2 u_i)), stable for any u."""
  return jnp.sum(2.0 * (math.log(2.0) - u - jax.nn.softplus(-2.0 * u)))


def data_log_density(energy_fn: Callable[[Array], Array], support: str,
                     shape) -> LogDensity:
  """log p(w) up to log Z for ONE flat point w (n,): -E(x(w)) plus, on the box, the
  log-Jacobian of x = tanh(u). `energy_fn` is batched: (B, *shape) -> (B,)."""
  shape = tuple(shape)

  def log_p(w):
    x = from_space(w, support).reshape((1,) + shape)
    value = -energy_fn(x)[0]
    if support == 'box':
      value = value + log_abs_det_tanh(w)
    return value
  return log_p


def latent_log_density(energy_fn: Callable[[Array], Array],
                       generate: Callable[[Array], Array]) -> LogDensity:
  """log p(z) = -E(G(z)) - |z|^2 / 2 (+ const) for ONE latent z (d,): MEG's latent sampler.
  `generate` maps latents (B, d) to samples (B, ...)."""
  return lambda z: -energy_fn(generate(z[None]))[0] - 0.5 * jnp.sum(z * z)


@flax.struct.dataclass
class Standardise:
  """y = (w - loc) / scale, per coordinate: the chains' preconditioner."""
  loc: Array
  scale: Array

  @classmethod
  def fit(cls, w: Array, floor: float = 1e-3) -> 'Standardise':
    """Mean and standard deviation of points w (N, n) per coordinate, the std at least
    `floor` (a constant coordinate, such as a background pixel, gets `floor`)."""
    w = jnp.reshape(w, (w.shape[0], -1))
    return cls(jnp.mean(w, 0), jnp.maximum(jnp.std(w, 0), floor))

  def to_y(self, w: Array) -> Array:
    return (jnp.reshape(w, (w.shape[0], -1)) - self.loc) / self.scale

  def to_w(self, y: Array) -> Array:
    return self.loc + self.scale * y

  def log_density(self, log_p: LogDensity) -> LogDensity:
    """The density of y: log p(loc + scale y) + sum(log scale) (the same normalising constant
    as log p)."""
    log_jac = jnp.sum(jnp.log(self.scale))
    return lambda y: log_p(self.to_w(y)) + log_jac


def kernel(name: str, num_leapfrog: int = 5):
  """(init, step) of blackjax's kernel `name`: init(position, log_p) -> state and
  step(key, state, log_p, step_size) -> (state, info with .acceptance_rate). HMC runs
  `num_leapfrog` velocity-Verlet steps with an identity mass matrix (the chains are
  standardised)."""
  if name == 'mala':
    mala = blackjax.mala.build_kernel()
    return blackjax.mala.init, lambda key, state, log_p, eps: mala(key, state, log_p, eps)
  if name == 'hmc':
    hmc = blackjax.hmc.build_kernel()
    return blackjax.hmc.init, lambda key, state, log_p, eps: hmc(
        key, state, log_p, eps, jnp.ones_like(state.position), num_leapfrog)
  raise ValueError(f'Unknown MCMC kernel {name!r}; valid: {", ".join(KERNELS)}.')


def default_target_accept(name: str) -> float:
  """The acceptance rate that maximises efficiency in high dimension: 0.574 for MALA (Roberts
  and Rosenthal, 1998), 0.65 for HMC (Beskos et al., 2013)."""
  return {'mala': 0.574, 'hmc': 0.65}[name]


@flax.struct.dataclass
class Chains:
  """The end of an MCMC run.

  y: final positions (N, n) in standardised coordinates; acceptance: mean acceptance rate of
  each step after warm-up (num_steps - num_warmup,); step_size: the tuned step size;
  max_norm: the largest |y| over the chains after each step (num_steps,), which shows chains
  running off."""
  y: Array
  acceptance: Array
  step_size: Array
  max_norm: Array


def chain_sharding(num_chains: int):
  """The sharding of a (num_chains, n) array of chains over every device, split like a batch
  along the mesh's data axis (bibound_jax/sharding.py), or None on one device or when the
  chains do not divide over the devices."""
  from bibound_jax import sharding  # pylint: disable=import-outside-toplevel
  n = jax.device_count()
  if n == 1 or num_chains % n:
    return None
  return sharding.latent_sharding(sharding.make_mesh())


def run_chains(log_p: LogDensity, y0: Array, key: Array, *, kernel_name: str = 'mala',
               num_steps: int = 100, num_warmup: int = 50, step_size: float = 0.01,
               target_accept: float | None = None, num_leapfrog: int = 5) -> Chains:
  """`num_steps` MCMC steps of every chain from y0 (N, n) on log_p (one point -> scalar).

  The first `num_warmup` steps tune one step size shared by the chains: blackjax's dual
  averaging toward `target_accept` (default: `default_target_accept`) on the chains' mean
  acceptance rate; the rest run at its final (averaged) value. Every step is a full MALA/HMC
  transition that leaves p invariant, so tuning only changes how fast the chains mix. jit it
  with the sizes static (`functools.partial`); place y0 on a mesh (`chain_sharding`) to shard
  the chains: every step then runs on each device's chains, and the shared step size averages
  the acceptance over all of them."""
  if not 0 <= num_warmup <= num_steps:
    raise ValueError(f'num_warmup = {num_warmup} must lie in [0, num_steps = {num_steps}].')
  init, step = kernel(kernel_name, num_leapfrog)
  target_accept = default_target_accept(kernel_name) if target_accept is None else target_accept
  da_init, da_update, da_final = blackjax.adaptation.step_size.dual_averaging_adaptation(
      target_accept)
  states = jax.vmap(lambda y: init(y, log_p))(y0)
  n = y0.shape[0]

  def move(states, key, eps):
    states, info = jax.vmap(lambda k, s: step(k, s, log_p, eps))(jax.random.split(key, n),
                                                                   states)
    norm = jnp.max(jnp.linalg.norm(states.position, axis=-1))
    return states, jnp.mean(info.acceptance_rate), norm

  def warm(carry, key):
    states, da = carry
    states, acc, norm = move(states, key, jnp.exp(da.log_step_size))
    return (states, da_update(da, acc)), norm

  def run(states, key, eps):
    states, acc, norm = move(states, key, eps)
    return states, (acc, norm)

  k_warm, k_run = jax.random.split(key)
  (states, da), warm_norms = jax.lax.scan(warm, (states, da_init(jnp.asarray(step_size))),
                                          jax.random.split(k_warm, num_warmup))
  eps = da_final(da) if num_warmup else jnp.asarray(step_size)
  states, (acceptance, norms) = jax.lax.scan(lambda s, k: run(s, k, eps), states,
                                             jax.random.split(k_run, num_steps - num_warmup))
  return Chains(y=states.position, acceptance=acceptance, step_size=eps,
                max_norm=jnp.concatenate([warm_norms, norms]))


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
  """The MCMC settings of config.sample (`from_config`)."""
  kernel: str = 'mala'
  num_steps: int = 100
  num_warmup: int = 50
  step_size: float = 0.01
  target_accept: float = 0.0     # 0: default_target_accept(kernel)
  num_leapfrog: int = 5

  @classmethod
  def from_config(cls, section) -> 'SamplerSettings':
    return cls(kernel=section.kernel, num_steps=section.num_steps,
               num_warmup=section.num_warmup, step_size=section.step_size,
               target_accept=section.target_accept, num_leapfrog=section.num_leapfrog)

  def kwargs(self) -> dict:
    """Keyword arguments of `run_chains`."""
    return dict(kernel_name=self.kernel, num_steps=self.num_steps, num_warmup=self.num_warmup,
                step_size=self.step_size, target_accept=self.target_accept or None,
                num_leapfrog=self.num_leapfrog)

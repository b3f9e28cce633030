"""log Z and the NLL of p_theta(x) = exp(-E(x)) / Z by annealed importance sampling (AIS), and
a check that exp(-E) is normalisable at all (docs/sampling.md).

AIS (Neal, 2001) in standardised coordinates y (bibound_jax/sampling.py, `Standardise`), from
the base p_0 = N(0, I_n) (a diagonal Gaussian fitted to the data, in the chains' space) to the
target f(y) = exp(log_p(y)) along the geometric path

    pi_k(y) ∝ p_0(y)^(1 - b_k) f(y)^b_k,     0 = b_0 < b_1 < ... < b_T = 1,

with y_0 ~ p_0, then for k = 1..T: log w += (b_k - b_{k-1}) (log f(y) - log p_0(y)), and y
moves by one MCMC transition (blackjax MALA or HMC) that leaves pi_k invariant. E[w] = Z
exactly, so Z_hat = mean_i w_i is unbiased and, by Jensen, E[log Z_hat] <= log Z: the
estimate is stochastically a LOWER bound on log Z, whose bias shrinks as T grows. Reported:
log Z_hat, its Monte Carlo standard error from the weights (delta method; it under-states the
error when the weights are heavy-tailed), the effective sample size (sum w)^2 / sum w^2, and
a convergence check: independent runs at T, 2T, ... temperatures, converged when the last
doubling moves the estimate by less than `tolerance` nats plus twice the combined error.

The step size is tuned along the path: after each transition it is multiplied by
exp(rate (acceptance - target)). Each transition still leaves its pi_k invariant (the step
size depends on the past only), so the weights stay valid.

Normalisability (`normalisability`): on R^D, exp(-E) need not be integrable (a piecewise-
linear network is linear far from the data; where it falls outwards Z = +inf and the NLL is
+inf). Evidence, cheapest first: the energy falling without bound along a ray (for an
L-Lipschitz E, E(r u) <= -a r on a ray puts exp(a r / 2) on a ball of radius a r / (2 L) around
it, so Z = +inf: a proof for our networks), and MCMC chains started at the data running off.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
from blackjax.mcmc import hmc
from blackjax.mcmc import mala

from bibound_jax import sampling

Array = jax.Array


def sigmoid_schedule(num_temps: int, delta: float = 4.0) -> Array:
  """b_0 = 0 < ... < b_T = 1, dense at both ends: b_t ∝ sigmoid(delta (2 t / T - 1)), shifted
  and scaled to [0, 1] (Grosse et al., 2015; Wu et al., 2017)."""
  t = jnp.linspace(-delta, delta, num_temps + 1)
  s = jax.nn.sigmoid(t)
  return (s - s[0]) / (s[-1] - s[0])


def standard_normal_log_density(y: Array) -> Array:
  """log N(y; 0, I) for one flat point y."""
  return -0.5 * jnp.sum(y * y) - 0.5 * y.shape[-1] * math.log(2.0 * math.pi)


def box_uniform_log_density(u: Array) -> Array:
  """log density of u = atanh(x) for x uniform on (-1, 1)^n: sum log(1 - tanh(u)^2) - n log 2."""
  return sampling.log_abs_det_tanh(u) - u.shape[-1] * math.log(2.0)


@dataclasses.dataclass(frozen=True)
class Base:
  """A normalised base density of AIS: log_density(one point) and sample(key, n, dim)."""
  name: str
  log_density: Callable[[Array], Array]
  sample: Callable[[Array, int, int], Array]


BASES = {
    # N(0, I) in standardised coordinates: the diagonal Gaussian `Standardise` was fitted as.
    'gaussian': Base('gaussian', standard_normal_log_density,
                     lambda key, n, dim: jax.random.normal(key, (n, dim))),
    # The uniform density of the box, in u = atanh(x) (support 'box', unstandardised): the
    # path then anneals exp(-b E(x)) on the box, log Z = D log 2 + log E_uniform[exp(-E)].
    'uniform': Base('uniform', box_uniform_log_density,
                    lambda key, n, dim: jnp.arctanh(jax.random.uniform(
                        key, (n, dim), minval=-1.0 + 1e-6, maxval=1.0 - 1e-6))),
}


@flax.struct.dataclass
class AISRun:
  """One AIS run: log_z (the log of the mean weight), stderr, ess, the log weights (N,), the
  mean acceptance and the step size at each temperature (T,)."""
  log_z: Array
  stderr: Array
  ess: Array
  log_weights: Array
  acceptance: Array
  step_size: Array


def weight_statistics(log_w: Array) -> tuple[Array, Array, Array]:
  """(log mean w, standard error of log mean w, effective sample size) of log weights (N,).

  With w~ = w / mean w: var(log mean w) ~ var(w~) / N (delta method), and the ESS is
  (sum w)^2 / sum w^2 = N / mean(w~^2)."""
  n = log_w.shape[0]
  log_mean = jax.scipy.special.logsumexp(log_w) - math.log(n)
  w = jnp.exp(log_w - log_mean)
  stderr = jnp.sqrt(jnp.var(w, ddof=1) / n)
  ess = n / jnp.mean(w * w)
  return log_mean, stderr, ess


def ais(log_p: sampling.LogDensity, dim: int, key: Array, *, num_chains: int = 64,
        num_temps: int = 1000, kernel_name: str = 'hmc', num_leapfrog: int = 5,
        step_size: float = 0.05, target_accept: float | None = None,
        adapt_rate: float = 0.05, base: str = 'gaussian') -> AISRun:
  """log Z = log int exp(log_p(y)) dy by AIS from the base `BASES[base]` (module docstring;
  by default N(0, I_dim)).

  log_p: one flat point (dim,) -> scalar, e.g. `Standardise.log_density` of
  `sampling.data_log_density`. jit it with the sizes static."""
  _, step = sampling.kernel(kernel_name, num_leapfrog)
  state_cls = {'mala': mala.MALAState, 'hmc': hmc.HMCState}[kernel_name]
  target_accept = (sampling.default_target_accept(kernel_name) if target_accept is None
                   else target_accept)
  betas = sigmoid_schedule(num_temps)
  base = BASES[base]
  value_and_grad = jax.vmap(jax.value_and_grad(log_p))
  base_value_and_grad = jax.vmap(jax.value_and_grad(base.log_density))
  k_start, k_path = jax.random.split(key)
  y0 = base.sample(k_start, num_chains, dim)
  placement = sampling.chain_sharding(num_chains)
  if placement is not None:   # the chains split over the devices like a batch
    y0 = jax.lax.with_sharding_constraint(y0, placement)

  def temperature(carry, inputs):
    y, log_w, eps = carry
    b_prev, b, key = inputs
    lf, gf = value_and_grad(y)
    lb, gb = base_value_and_grad(y)
    log_w = log_w + (b - b_prev) * (lf - lb)
    log_pi = lambda yy: (1.0 - b) * base.log_density(yy) + b * log_p(yy)
    # The state at pi_k from the values just computed (blackjax's init would recompute them).
    states = state_cls(y, (1.0 - b) * lb + b * lf, (1.0 - b) * gb + b * gf)
    states, info = jax.vmap(lambda k, s: step(k, s, log_pi, eps))(
        jax.random.split(key, num_chains), states)
    acc = jnp.mean(info.acceptance_rate)
    return (states.position, log_w, eps * jnp.exp(adapt_rate * (acc - target_accept))), (acc,
                                                                                          eps)

  (_, log_w, _), (acceptance, steps) = jax.lax.scan(
      temperature, (y0, jnp.zeros(num_chains), jnp.asarray(step_size, jnp.float32)),
      (betas[:-1], betas[1:], jax.random.split(k_path, num_temps)))
  log_z, stderr, ess = weight_statistics(log_w)
  return AISRun(log_z=log_z, stderr=stderr, ess=ess, log_weights=log_w,
                acceptance=acceptance, step_size=steps)


@dataclasses.dataclass(frozen=True)
class LogZ:
  """A converged (or not) log Z estimate: the last run's, with every run of the check.

  runs: (num_temps, log_z, stderr, ess) of the runs at T, 2T, ...; converged: the last doubling
  moved the estimate by at most tolerance + 2 x the combined standard error; growth: that move
  (log Z at the most temperatures minus at half as many; AIS under-estimates, so a clear
  positive growth says more temperatures are needed)."""
  log_z: float
  stderr: float
  ess: float
  runs: tuple[tuple[int, float, float, float], ...]
  converged: bool
  growth: float

  @property
  def error(self) -> float:
    """The reported error: the standard error and the last doubling's move (an estimate of
    the bias that remains) combined, sqrt(stderr^2 + growth^2)."""
    growth = 0.0 if math.isnan(self.growth) else self.growth
    return math.sqrt(self.stderr ** 2 + growth ** 2)

  def line(self) -> str:
    state = 'converged' if self.converged else 'NOT converged'
    runs = ', '.join(f'{t} temperatures: {z:.2f} +- {s:.2f} (ESS {e:.1f})'
                     for t, z, s, e in self.runs)
    return (f'log Z >= {self.log_z:.2f} +- {self.error:.2f} (AIS, a stochastic lower bound; '
            f'{state}: {runs})')


def converged_log_z(run: Callable[[int, Array], AISRun], key: Array, num_temps: int,
                    doublings: int = 1, tolerance: float = 1.0) -> LogZ:
  """AIS at num_temps, 2 num_temps, ..., 2^doublings num_temps temperatures (independent
  keys); `run(T, key)` is one AIS run. The estimate is the last run's."""
  runs = []
  for i, k in enumerate(jax.random.split(key, doublings + 1)):
    t = num_temps * 2 ** i
    r = run(t, k)
    runs.append((t, float(r.log_z), float(r.stderr), float(r.ess)))
  t, z, s, e = runs[-1]
  growth = z - runs[-2][1] if len(runs) > 1 else float('nan')
  combined = math.sqrt(s ** 2 + runs[-2][2] ** 2) if len(runs) > 1 else float('inf')
  converged = len(runs) > 1 and abs(growth) <= tolerance + 2.0 * combined
  return LogZ(log_z=z, stderr=s, ess=e, runs=tuple(runs), converged=converged, growth=growth)


@dataclasses.dataclass(frozen=True)
class Normalisability:
  """Whether exp(-E) is integrable on R^D, with the evidence.

  ray_drop: max over the rays tried of E(c + r_1 u) - E(c + r_2 u), r_2 = 10 r_1 far outside
  the data (> 0: E falls outwards along that ray, linearly for a piecewise-linear network:
  Z = +inf); ray_energy: E at c + r_2 u on that ray; run_off: the largest distance from the
  data's centre reached by MCMC chains started at the data, in units of the data's radius."""
  normalisable: bool
  ray_drop: float
  ray_energy: float
  run_off: float
  radius: float

  def line(self) -> str:
    if self.normalisable:
      return (f'exp(-E) looks normalisable on R^D: E rises along every ray tried (the '
              f'steepest fall {self.ray_drop:.3g} nats per decade of radius <= 0) and the '
              f'chains stay within {self.run_off:.2g} data radii.')
    evidence = []
    if self.ray_drop > 0:
      evidence.append(f'E falls by {self.ray_drop:.3g} nats along a ray from {10:g} to '
                      f'{100:g} data radii (to {self.ray_energy:.3g})')
    if self.run_off > RUN_OFF_RADII:
      evidence.append(f'MCMC chains from the data ran off to {self.run_off:.3g} data radii')
    return ('exp(-E) is NOT normalisable on R^D (NLL = +inf): ' + '; '.join(evidence) + '.')


RUN_OFF_RADII = 10.0     # chains further than this many data radii from the centre ran off


def ray_test(energy_fn: Callable[[Array], Array], centre: Array, radius: float, key: Array,
             num_rays: int = 64, descent_steps: int = 50) -> tuple[float, float]:
  """(largest fall E(c + 10 R u) - E(c + 100 R u), E(c + 100 R u) there) over unit directions
  u: `num_rays` random ones, each then moved `descent_steps` projected-gradient steps down
  E(c + 100 R u) on the sphere (the worst direction of a piecewise-linear network is found
  by descent, rarely by chance in high dimension). `energy_fn` is batched over flat points."""
  n = centre.shape[-1]
  u = jax.random.normal(key, (num_rays, n))
  u = u / jnp.linalg.norm(u, axis=-1, keepdims=True)
  far = 100.0 * radius
  grad = jax.grad(lambda uu: jnp.sum(energy_fn(centre + far * uu)))

  def descend(u, _):
    g = grad(u)
    g = g - jnp.sum(g * u, -1, keepdims=True) * u            # tangent to the sphere
    g = g / (jnp.linalg.norm(g, axis=-1, keepdims=True) + 1e-12)
    u = u - 0.1 * g
    return u / jnp.linalg.norm(u, axis=-1, keepdims=True), None

  u, _ = jax.lax.scan(descend, u, None, length=descent_steps)
  near, far_e = energy_fn(centre + 10.0 * radius * u), energy_fn(centre + far * u)
  drop = near - far_e
  i = jnp.argmax(drop)
  return drop[i], far_e[i]


def normalisability(energy_fn: Callable[[Array], Array], x_data: Array, key: Array, *,
                    chains: sampling.Chains | None = None, standardise=None,
                    num_rays: int = 64, descent_steps: int = 50) -> Normalisability:
  """Evidence on whether exp(-E) is integrable on R^D (module docstring). x_data (N, D) flat;
  `chains` (optional) an MCMC run on the 'real' support started at the data, in the
  coordinates of `standardise`."""
  x_data = jnp.reshape(x_data, (x_data.shape[0], -1))
  centre = jnp.mean(x_data, 0)
  radius = float(jnp.max(jnp.linalg.norm(x_data - centre, axis=-1)))
  drop, far_e = jax.jit(lambda c, k: ray_test(energy_fn, c, radius, k, num_rays,
                                               descent_steps))(centre, key)
  run_off = 0.0
  if chains is not None:
    x = standardise.to_w(chains.y)
    run_off = float(jnp.max(jnp.linalg.norm(x - centre, axis=-1))) / radius
  normalisable = float(drop) <= 0 and run_off <= RUN_OFF_RADII
  return Normalisability(normalisable=normalisable, ray_drop=float(drop),
                         ray_energy=float(far_e), run_off=run_off, radius=radius)


# Pixels: 8-bit values p in {0, ..., 255} are the bins [p / 128 - 1, (p + 1) / 128 - 1) of
# [-1, 1); uniform dequantisation draws x uniformly in the bin of each pixel.
PIXEL_BIN = 2.0 / 256.0


def dequantise(x: Array, key: Array) -> Array:
  """Uniform dequantisation of images in [-1, 1] stored as p / 127.5 - 1 (p in 0..255):
  x' = (p + v) / 128 - 1, v ~ U(0, 1), a point of the pixel's bin (`PIXEL_BIN` wide)."""
  p = jnp.round((x + 1.0) * 127.5)
  return (p + jax.random.uniform(key, x.shape, x.dtype)) * PIXEL_BIN - 1.0


def bits_per_dim(nll_nats: float, dim: int, binned: bool = True) -> float:
  """Bits per dimension of an NLL in nats of a density on [-1, 1]^D. With `binned`, of the
  8-bit pixels: -log P(p) <= -E_v log p(x') + D log(1 / bin) by Jensen (uniform
  dequantisation), so bpd = (NLL + D log 128) / (D log 2), an upper bound."""
  extra = dim * math.log(1.0 / PIXEL_BIN) if binned else 0.0
  return (nll_nats + extra) / (dim * math.log(2.0))


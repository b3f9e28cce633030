"""The base of every task's evaluator (toy_eval.py, mnist_eval.py, image_eval.py).

An evaluator is built once per run from the config and the networks; `evaluate(state, step,
workdir)` computes its metrics for every seed of the run (every process, or process 0 only),
records them in workdir/eval (history.json, metrics_<step>.json; per seed and as mean and
standard deviation over the seeds: experiments/history.py) and writes its figures and arrays,
both on process 0 only, and returns the scalars. Subclasses implement `compute` (one seed) and
`write` (every seed); the jitted energy and generator live here.
"""
from __future__ import annotations

import jax
import numpy as np

from bibound_jax import assemble
from bibound_jax import generator as generator_lib
from experiments import history as history_lib


def jit_energy(module):
  """jit-compiled E(params, x) of an energy module (a time-conditioned energy at t = 0, the
  EBM itself)."""
  return jax.jit(lambda p, x: module.apply({'params': p}, x))


class Evaluator:
  """Owns the jitted E(x) and G(z) of the run, the process-0 gate and the history record."""
  # Compute on every process (False: process 0 only, e.g. when it reads data sets).
  all_processes = True

  def __init__(self, config, networks):
    self.config = config
    self.networks = networks
    self.seeds = assemble.seeds(config)
    self._energy = jit_energy(networks.energy)
    # G(z) as evaluation samples it: BatchNorm on the running statistics, no output noise.
    self._generate = jax.jit(lambda g, z: generator_lib.generate(g, z, train=False)[0])

  def energies(self, params, x, batch_size: int) -> np.ndarray:
    """E(x) of an array of inputs, `batch_size` at a time, on the host."""
    return np.concatenate([np.asarray(self._energy(params, x[i:i + batch_size]))
                           for i in range(0, len(x), batch_size)])

  def samples(self, gen_state, z, batch_size: int) -> np.ndarray:
    """G(z) of an array of latents, `batch_size` at a time, on the host."""
    return np.concatenate([np.asarray(self._generate(gen_state, z[i:i + batch_size]))
                           for i in range(0, len(z), batch_size)])

  def compute(self, state, seed: int, workdir: str) -> tuple[dict, object]:
    """(scalar metrics, artefacts for `write`) of one seed: `state` is a host copy of that
    seed's state (no seed axis); `seed` picks its fixed evaluation noise."""
    raise NotImplementedError

  def write(self, workdir: str, step: int, metrics: dict, artefacts: list, history: list[dict]):
    """Figures and arrays in workdir/eval (process 0 only). `metrics` and `history` (which
    includes this step) are the records over the seeds; `artefacts` holds each seed's."""
    raise NotImplementedError

  def evaluate(self, state, step: int, workdir: str, extra: dict | None = None) -> dict:
    """Compute, record and write the evaluation of every seed of `state` (leading seed axis)
    at `step`; returns the scalars (per seed, mean and std: `history.over_seeds`), with
    `extra` (e.g. the run's wall time) added to the record."""
    chief = jax.process_index() == 0
    if not (chief or self.all_processes):
      return {}
    host = jax.device_get(state)
    results = [self.compute(assemble.seed_slice(host, k), seed, workdir)
               for k, seed in enumerate(self.seeds)]
    metrics = dict(history_lib.over_seeds([m for m, _ in results], self.seeds), **(extra or {}))
    if chief:
      history = history_lib.record(workdir, step, metrics)
      self.write(workdir, step, metrics, [a for _, a in results], history)
    return metrics

"""The base of every task's evaluator (toy_eval.py, mnist_eval.py, image_eval.py).

An evaluator is built once per run from the config and the networks; `evaluate(state, step,
workdir)` computes its metrics for every seed of the run (every process, or process 0 only),
records them in workdir/eval (history.json, metrics_<step>.json; per seed and as mean and
standard deviation over the seeds: experiments/history.py) and writes its figures and arrays,
both on process 0 only, and returns the scalars. Subclasses implement `compute` (one seed) and
`write` (every seed); the jitted energy and generator live here.
"""
from __future__ import annotations

import threading

import jax
import numpy as np
from absl import logging

from bibound_jax import assemble
from bibound_jax import config_schema
from bibound_jax import generator as generator_lib
from experiments import history as history_lib
from experiments import model_eval


# config.eval: each task's evaluator reads its own keys (set by the experiment's config); none
# changes what a saved state means, so every key may change between a run and its resumption.
SECTION = config_schema.Section('eval', {}, resumable=('*',))

# Set in the warm-up thread only: `program`s compile for their arguments and do not run.
_COMPILE_ONLY = threading.local()


def program(fn):
  """jax.jit(fn) for an evaluator: called from `Evaluator.start_warm_up`'s thread it compiles
  for its arguments (ahead of time, into the jit's own cache, so the later call with arguments
  of the same shapes compiles nothing) and returns zeros of the output's shape instead of
  running; called from anywhere else it is jax.jit(fn)."""
  jitted = jax.jit(fn)

  def call(*args):
    if getattr(_COMPILE_ONLY, 'on', False):
      lowered = jitted.lower(*args)
      lowered.compile()
      return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), lowered.out_info)
    return jitted(*args)
  return call


def jit_energy(module):
  """jit-compiled E(params, x) of an energy module (a time-conditioned energy at t = 0, the
  EBM itself)."""
  return program(lambda p, x: module.apply({'params': p}, x))


class Evaluator:
  """Owns the jitted E(x) and G(z) of the run, the process-0 gate and the history record."""
  # Compute on every process (False: process 0 only, e.g. when it reads data sets).
  all_processes = True
  # Compile the first evaluation's programs while the train step compiles (`start_warm_up`):
  # the toy's evaluators set it from config.eval.warm_up.
  warm_up = False

  def __init__(self, config, networks, model: bool = False):
    """`model`: also evaluate the energy as a model (samples of p_theta, log Z, the NLL:
    experiments/model_eval.py), as `python -m experiments.evaluate` does; periodic evaluations
    during training do when config.sample.during_training is set."""
    self.config = config
    self.networks = networks
    self.seeds = assemble.seeds(config)
    self.model = (model_eval.EnergyModel(config, networks.energy)
                  if model or config.sample.during_training else None)
    self._energy = jit_energy(networks.energy)
    # G(z) as evaluation samples it: BatchNorm on the running statistics, no output noise.
    self._generate = program(lambda g, z: generator_lib.generate(g, z, train=False)[0])
    self._warm_up = None

  def start_warm_up(self, state, workdir: str) -> None:
    """With `warm_up` (the toy's, from eval.warm_up): run `compute` on the first seed of `state`
    (the run's state before its first call) in a background thread in which the evaluator's
    `program`s only compile, and import matplotlib, so that the run's first evaluation finds
    its programs compiled instead of compiling them when training stops. On a machine with a
    spare core this overlaps the compilation of the train step (docs/performance.md,
    "Start-up"). The evaluation noise is drawn for real (it is cached). `evaluate` waits for
    it. The state is copied to the host here, before the train step donates its buffers."""
    if not self.warm_up:
      return
    if not (jax.process_index() == 0 or self.all_processes):
      return
    first = assemble.seed_slice(jax.device_get(state), 0)

    def work():
      _COMPILE_ONLY.on = True
      try:
        with np.errstate(all='ignore'):   # statistics of the programs' placeholder zeros
          self.compute(first, self.seeds[0], workdir)
        if jax.process_index() == 0:
          from experiments import plotting  # pylint: disable=import-outside-toplevel
          plotting.warm_up()
      except Exception as e:  # noqa: BLE001  (the real evaluation raises it again)
        logging.warning('Evaluation warm-up failed (%s: %s); the first evaluation will '
                        'compile its programs itself.', type(e).__name__, e)
    self._warm_up = threading.Thread(target=work, name='evaluation-warm-up', daemon=True)
    self._warm_up.start()

  def wait_for_warm_up(self) -> None:
    """Block until a warm-up started by `start_warm_up` has finished (no-op without one)."""
    if self._warm_up is not None:
      self._warm_up.join()
      self._warm_up = None

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
    self.wait_for_warm_up()
    host = jax.device_get(state)
    results = [self.compute(assemble.seed_slice(host, k), seed, workdir)
               for k, seed in enumerate(self.seeds)]
    metrics = dict(history_lib.over_seeds([m for m, _ in results], self.seeds), **(extra or {}))
    if chief:
      history = history_lib.record(workdir, step, metrics)
      self.write(workdir, step, metrics, [a for _, a in results], history)
    return metrics

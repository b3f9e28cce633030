"""The training loop: data, train step, clu metrics/progress, orbax checkpoints, evaluation.

`train_and_evaluate(config, workdir)` trains from scratch, or resumes from the latest checkpoint
in `workdir/checkpoints` (experiments/checkpoints.py). Data for iteration t is a pure function
of (seed, t) for the toy and StackedMNIST tasks, so a resumed run sees exactly the batches it
would have seen without the interruption.

Workdir layout:
  checkpoints/<step>/     orbax checkpoints (the latest `train.keep_checkpoints`)
  metrics.jsonl           the scalars written at every log step (also in TensorBoard files)
  events.out.tfevents.*   TensorBoard scalars (clu metric writer)
  eval/                   evaluation PNGs, JSON and arrays (written by the task's Evaluator)

The data pipeline and the evaluator come from the task of `config.data.name`
(experiments/tasks.py).
"""
from __future__ import annotations

import os
import signal

import jax
import numpy as np
from absl import logging
from clu import metric_writers
from clu import periodic_actions

from bibound_jax import bounds
from bibound_jax import config_lib
from bibound_jax import assemble
from bibound_jax import sharding
from bibound_jax import train
from experiments import checkpoints
from experiments import history
from experiments import tasks
from experiments.checkpoints import CheckpointError, NonFiniteError  # noqa: F401 (re-exported)


def _host_records(buffer: list[tuple[int, dict]]) -> list[dict[str, float]]:
  """The buffered metrics as one host dict per iteration. Buffer entries are (n, metrics):
  n = 1 for a single step's scalars, n > 1 for `steps_per_call` metrics stacked along axis 0."""
  out = []
  for n, metrics in jax.device_get(buffer):
    out.extend([metrics] if n == 1 else ({k: v[i] for k, v in metrics.items()} for i in range(n)))
  return out


def check_finite(buffer: list[tuple[int, dict]], first_step: int, manager) -> None:
  """Raise NonFiniteError naming the first step and metric that is NaN/Inf in `buffer`
  (metrics of iterations first_step, first_step + 1, ...)."""
  for i, metrics in enumerate(_host_records(buffer)):
    if metrics['nonfinite'] == 0.0 and all(np.isfinite(v) for v in metrics.values()):
      continue
    bad = sorted(k for k, v in metrics.items() if not np.isfinite(v))
    last = manager.latest_step()
    where = (f'the last good checkpoint is {checkpoints.step_dir(manager, last)} (rerun to '
             'resume from it)' if last is not None else 'no checkpoint was written yet')
    what = f'{", ".join(bad)} = {[float(metrics[k]) for k in bad]}' if bad else 'a gradient'
    raise NonFiniteError(
        f'Non-finite values at iteration {first_step + i}: {what}. The state is not '
        f'checkpointed; {where}. Lower the learning rates, set optim.grad_clip, or set '
        "train.nonfinite='skip' to drop such updates.")


class DivergenceMonitor:
  """Warns when E(fake) - E(real) or |E| passes train.divergence_gap / divergence_energy, once
  and then again each time the excess over the threshold doubles."""

  def __init__(self, config):
    self.gap_threshold = config.train.divergence_gap
    self.energy_threshold = config.train.divergence_energy
    self.warned = 0.5   # the excess last warned about

  def __call__(self, scalars: dict, step: int) -> bool:
    """Whether the thresholds are passed (logging a warning when the excess doubled)."""
    gap = scalars['energy_fake'] - scalars['energy_real']
    size = max(abs(scalars['energy_fake']), abs(scalars['energy_real']))
    excess = max(gap / self.gap_threshold, size / self.energy_threshold)
    if excess <= 1.0:
      return False
    if excess >= 2.0 * self.warned:
      self.warned = excess
      logging.warning(
          'Divergence at iteration %d: E(fake) - E(real) = %.3g (threshold %g), max |E| = '
          '%.3g (threshold %g). The energy is running away from the generator; the '
          "lower-bound-only baseline (bounds.upper='none') is expected to do this.", step, gap,
          self.gap_threshold, size, self.energy_threshold)
    return True


class _Preemption:
  """Turns SIGTERM/SIGINT into a flag the loop checks after each iteration."""

  def __init__(self):
    self.signal = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    self.signal = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _mean_metrics(buffer: list[tuple[int, dict]]) -> dict[str, float]:
  records = _host_records(buffer)
  return {k: float(np.mean([r[k] for r in records])) for k in records[0]}


def chunk_length(step: int, config) -> int:
  """Iterations the next call runs after `step` done: `train.steps_per_call` when no log,
  evaluation or checkpoint falls strictly inside the chunk and it ends by train.num_steps,
  else 1, so every event still happens at its own iteration."""
  k = config.train.steps_per_call
  if k <= 1 or step + k > config.train.num_steps:
    return 1
  for every in (config.train.log_every, config.train.eval_every, config.train.checkpoint_every):
    if (step + k - 1) // every > step // every:   # a multiple of `every` in (step, step + k)
      return 1
  return k


def train_and_evaluate(config, workdir: str) -> train.BiboundState:
  """Train (or resume) the run described by `config` in `workdir`; returns the final state."""
  task = tasks.validate(config)
  lower, _ = bounds.from_config(config)
  if config.bounds.lambda_h != 1.0 and lower.has_entropy:
    logging.warning('bounds.lambda_h = %g != 1: the generator objective is no longer a lower '
                    'bound on the log-likelihood (docs/bounds.md).', config.bounds.lambda_h)
  os.makedirs(workdir, exist_ok=True)
  is_chief = jax.process_index() == 0
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief)

  mesh = sharding.make_mesh()
  try:
    sharding.per_device_batch(config.train.batch_size, mesh)
  except ValueError as e:
    raise config_lib.ConfigError(str(e)) from None
  nets, state, rng = assemble.initial_state(config, mesh)

  manager = checkpoints.open_manager(workdir, config.train.keep_checkpoints)
  restored = checkpoints.restore(manager, state, rng, config=config)
  if restored is not None:
    state, rng = restored
    logging.info('Resumed from %s at step %d.', manager.directory, int(state.step))
    history.truncate(workdir, int(state.step))
  else:
    writer.write_hparams({k: str(v) for k, v in checkpoints.flatten(config.to_dict()).items()})
  start = int(state.step)

  step_fn = train.make_train_step(config, mesh=mesh)
  steps_per_call = config.train.steps_per_call
  steps_fn = (train.make_train_steps(config, steps_per_call, mesh=mesh)
              if steps_per_call > 1 else None)
  batch_at = task.batches(config, mesh, start)
  evaluator = task.evaluator(config, nets)
  num_steps = config.train.num_steps
  report = periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer)
  hooks = [report] if is_chief else []
  diverging = DivergenceMonitor(config)

  buffer, buffer_start = [], start + 1
  # Input-pipeline profile: a host pipeline (data.images.Prefetch) counts the seconds the loop
  # blocked waiting for a batch; on-device data functions (toy, StackedMNIST) run in the
  # compiled stream and have nothing to wait for.
  waited = lambda: getattr(batch_at, 'waited', 0.0)
  data_wait = waited()
  with metric_writers.ensure_flushes(writer), _Preemption() as preempted:
    step = start
    while step < num_steps:
      # `step` counts iterations done after this call; the step functions donate `state`.
      n = chunk_length(step, config)
      with jax.profiler.StepTraceAnnotation('train', step_num=step + n):
        if n == 1:
          state, metrics = step_fn(state, batch_at(step), rng)
        else:
          state, metrics = steps_fn(state, tuple(batch_at(step + i) for i in range(n)), rng)
      step += n
      buffer.append((n, metrics))
      for hook in hooks:
        hook(step)
      log_now = step % config.train.log_every == 0 or step == num_steps
      eval_now = step % config.train.eval_every == 0 or step == num_steps
      save_now = (step % config.train.checkpoint_every == 0 or step == num_steps
                  or preempted.signal is not None)
      if (log_now or eval_now or save_now) and config.train.nonfinite == 'stop':
        # Nothing is written or evaluated after a NaN: the check sees every iteration.
        check_finite(buffer, buffer_start, manager)
      if log_now:
        scalars = _mean_metrics(buffer)
        if hasattr(batch_at, 'waited'):   # ms per iteration spent waiting for the batch
          scalars['data_wait_ms'] = 1e3 * (waited() - data_wait) / sum(n for n, _ in buffer)
          data_wait = waited()
        buffer, buffer_start = [], step + 1
        scalars['skipped'] = float(state.skipped)
        writer.write_scalars(step, scalars)
        if is_chief:
          history.append_metrics(workdir, step, scalars)
        diverging(scalars, step)
      if eval_now:
        with report.timed('eval'):
          scalars = evaluator.evaluate(state, step, workdir)
        writer.write_scalars(step, {f'eval/{k}': v for k, v in scalars.items()})
      if save_now:
        with report.timed('checkpoint'):
          checkpoints.save(manager, state, rng, config)
      if preempted.signal is not None:
        logging.warning('%s received: saved checkpoint %s at iteration %d. Rerun the same '
                        'command to resume.', preempted.signal,
                        checkpoints.step_dir(manager, step), step)
        break
  manager.close()
  return state

"""The training loop: data, train step, clu metrics/progress, orbax checkpoints, evaluation.

`train_and_evaluate(config, workdir)` trains from scratch, or resumes from the latest checkpoint
in `workdir/checkpoints` (experiments/checkpoints.py). Data for iteration t is a pure function
of (seed, t) for the toy and StackedMNIST tasks, so a resumed run sees exactly the batches it
would have seen without the interruption.

Workdir layout:
  checkpoints/<step>/     orbax checkpoints (the latest `train.keep_checkpoints`)
  metrics.jsonl           the scalars written at every log step (also in TensorBoard files)
  events.out.tfevents.*   TensorBoard scalars and the config (experiments/writers.py)
  eval/                   evaluation PNGs, JSON and arrays (written by the task's Evaluator)
  timings.json            where the last session's wall time went (Unix times and seconds:
                          entering the loop, the first compiled call returning, the
                          evaluations, the end; benchmarks/startup.py reads it)

The data pipeline and the evaluator come from the task of `config.data.name`
(experiments/tasks.py).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import time

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
from experiments import writers
from experiments.checkpoints import CheckpointError, NonFiniteError  # noqa: F401 (re-exported)


def _host_records(buffer: list[tuple[int, dict]]) -> list[dict[str, np.ndarray]]:
  """The buffered metrics as one host dict per iteration, each value an array over the seeds.
  Buffer entries are (n, metrics): n = 1 for one iteration's metrics (seeds,), n > 1 for
  `steps_per_call` iterations (seeds, n)."""
  out = []
  for n, metrics in jax.device_get(buffer):
    out.extend([metrics] if n == 1 else ({k: v[:, i] for k, v in metrics.items()}
                                         for i in range(n)))
  return out


def check_finite(buffer: list[tuple[int, dict]], first_step: int, manager, seeds) -> None:
  """Raise NonFiniteError naming the first step, seed and metric that is NaN/Inf in `buffer`
  (metrics of iterations first_step, first_step + 1, ...)."""
  for i, metrics in enumerate(_host_records(buffer)):
    for k, seed in enumerate(seeds):
      if metrics['nonfinite'][k] == 0.0 and all(np.isfinite(v[k]) for v in metrics.values()):
        continue
      bad = sorted(name for name, v in metrics.items() if not np.isfinite(v[k]))
      last = manager.latest_step()
      where = (f'the last good checkpoint is {checkpoints.step_dir(manager, last)} (rerun to '
               'resume from it)' if last is not None else 'no checkpoint was written yet')
      what = (f'{", ".join(bad)} = {[float(metrics[name][k]) for name in bad]}' if bad
              else 'a gradient')
      which = f' of seed {seed}' if len(seeds) > 1 else ''
      raise NonFiniteError(
          f'Non-finite values at iteration {first_step + i}{which}: {what}. The state is not '
          f'checkpointed; {where}. Lower the learning rates, set optim.grad_clip, or set '
          "train.nonfinite='skip' to drop such updates.")


class DivergenceMonitor:
  """Warns when E(fake) - E(real) or |E| of a seed passes train.divergence_gap /
  divergence_energy, once and then again each time that seed's excess over the threshold
  doubles."""

  def __init__(self, config):
    self.gap_threshold = config.train.divergence_gap
    self.energy_threshold = config.train.divergence_energy
    self.warned = {}   # seed -> the excess last warned about

  def __call__(self, scalars: dict, step: int, seed: int | None = None) -> bool:
    """Whether one seed's scalars pass the thresholds (logging a warning when its excess
    doubled; `seed` is named in it when given)."""
    gap = scalars['energy_fake'] - scalars['energy_real']
    size = max(abs(scalars['energy_fake']), abs(scalars['energy_real']))
    excess = max(gap / self.gap_threshold, size / self.energy_threshold)
    if excess <= 1.0:
      return False
    if excess >= 2.0 * self.warned.get(seed, 0.5):
      self.warned[seed] = excess
      logging.warning(
          'Divergence at iteration %d%s: E(fake) - E(real) = %.3g (threshold %g), max |E| = '
          '%.3g (threshold %g). The energy is running away from the generator; the '
          "lower-bound-only baseline (bounds.upper='none') is expected to do this. A WGAN "
          "critic's gap (bounds.upper='wgan_gp') is a distance estimate, large by design on "
          'images: raise train.divergence_gap to silence this.', step,
          '' if seed is None else f' (seed {seed})', gap, self.gap_threshold, size,
          self.energy_threshold)
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


def _mean_metrics(buffer: list[tuple[int, dict]], num_seeds: int) -> list[dict[str, float]]:
  """Each seed's metrics averaged over the buffered iterations."""
  records = _host_records(buffer)
  return [{name: float(np.mean([r[name][k] for r in records])) for name in records[0]}
          for k in range(num_seeds)]


def chunk_length(step: int, config) -> int:
  """Iterations the next call runs after `step` done: `train.steps_per_call` when no log,
  evaluation or checkpoint falls strictly inside the chunk and it ends by train.num_steps,
  else 1, so every event still happens at its own iteration."""
  k = config.train.steps_per_call
  if k <= 1 or step + k > config.train.num_steps:
    return 1
  for every in (config.train.log_every, config.train.eval_every, config.train.checkpoint_every):
    # a multiple of `every` in (step, step + k); every = 0 (eval_every: never) has none
    if every and (step + k - 1) // every > step // every:
      return 1
  return k


def _duration(seconds: float) -> str:
  minutes = int(round(seconds / 60))
  return f'{minutes // 60} h {minutes % 60} min' if minutes >= 60 else f'{seconds / 60:.1f} min'


def _report_expected_time(measured_from, step: int, state, config):
  """Once 5 s of compiled iterations have run (or 100 iterations), log the measured time per
  iteration and the expected wall time of the rest of the run; None once logged."""
  start_step, start_time = measured_from
  if step - start_step < 100 and time.time() - start_time < 5.0:
    return measured_from
  jax.block_until_ready(state)
  per_iteration = (time.time() - start_time) / (step - start_step)
  remaining = config.train.num_steps - step
  evaluations = remaining // config.train.eval_every + 1 if config.train.eval_every else 0
  logging.info('Measured %.3g s per iteration after compilation: the remaining %d iterations '
               'will take about %s, plus %d evaluation(s).', per_iteration, remaining,
               _duration(per_iteration * remaining), evaluations)
  return None


@contextlib.contextmanager
def _evaluation_warm_up(evaluator, state, workdir: str, training: bool):
  """The evaluator's warm-up (`Evaluator.start_warm_up`) runs in the background while the
  loop trains; on any exit from the loop it is waited for (a thread still compiling while the
  interpreter shuts down could crash it). Enter before the first call donates `state`."""
  if evaluator is not None and training:
    evaluator.start_warm_up(state, workdir)
  try:
    yield
  finally:
    if evaluator is not None:
      evaluator.wait_for_warm_up()


def objective_warnings(config) -> list[str]:
  """What in `config` makes an objective stop being the bound it is named after."""
  lower, upper = bounds.from_config(config)
  messages = []
  if config.bounds.lambda_h != 1.0 and lower.has_entropy:
    messages.append(f'bounds.lambda_h = {config.bounds.lambda_h:g} != 1: the generator '
                    'objective is no longer a lower bound on the log-likelihood '
                    '(docs/bounds.md).')
  return messages + lower.objective_warnings() + upper.objective_warnings()


def train_and_evaluate(config, workdir: str) -> train.BiboundState:
  """Train (or resume) the run described by `config` in `workdir`; returns the final state."""
  timings = {'entered': time.time(), 'evaluations_s': []}
  task = tasks.validate(config)
  for message in objective_warnings(config):
    logging.warning(message)
  os.makedirs(workdir, exist_ok=True)
  is_chief = jax.process_index() == 0
  writer, tensorboard = writers.create_writer(workdir, is_chief)

  seeds = assemble.seeds(config)
  mesh = sharding.make_mesh(num_seeds=len(seeds))
  try:
    sharding.per_device_batch(config.train.batch_size, mesh)
  except ValueError as e:
    raise config_lib.ConfigError(str(e)) from None
  nets, state, rng = assemble.initial_state(config, mesh)

  manager = checkpoints.open_manager(workdir, config.train.keep_checkpoints)
  restored = checkpoints.restore(manager, state, rng, config=config, resuming=True)
  if restored is not None:
    state, rng = restored
    logging.info('Resumed from %s at step %d.', manager.directory, train.iteration(state))
    history.truncate(workdir, train.iteration(state))
  elif config.train.init_from:
    state, rng, from_step, differences = checkpoints.warm_start(
        config.train.init_from, state, rng, config)
    logging.info('Warm start from %s (iteration %d); config changes: %s.',
                 config.train.init_from, from_step, '; '.join(differences) or 'none')
  if restored is None and tensorboard is not None:
    tensorboard.write_hparams({k: str(v) for k, v in
                               checkpoints.flatten(config.to_dict()).items()})
  start = train.iteration(state)
  logging.info('%s: %s, bounds %s + %s, %s, %d iteration(s) to %d, batch %d, workdir %s.',
               config.data.name, f'{len(seeds)} seeds from {seeds[0]}' if len(seeds) > 1
               else f'seed {seeds[0]}', config.bounds.lower, config.bounds.upper,
               f'networks {config.model.energy.name}/{config.model.generator.name}',
               config.train.num_steps - start, config.train.num_steps, config.train.batch_size,
               workdir)
  # Wall-clock seconds of training and evaluation, across resumptions (the evaluations'
  # `wall_s`).
  previous = history.load(workdir)
  wall_offset, wall_start = (previous[-1].get('wall_s', 0.0) if previous else 0.0), time.time()

  step_fn = train.make_train_step(config, mesh=mesh)
  steps_per_call = config.train.steps_per_call
  steps_fn = (train.make_train_steps(config, steps_per_call, mesh=mesh)
              if steps_per_call > 1 else None)
  batch_at = task.batches(config, mesh, start)
  evaluator = task.evaluator(config, nets) if config.train.eval_every else None
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
  measured_from = None   # (iteration, time) after compilation, until the estimate is logged
  with (metric_writers.ensure_flushes(writer), _Preemption() as preempted,
        _evaluation_warm_up(evaluator, state, workdir, start < num_steps)):
    step = start
    while step < num_steps:
      # `step` counts iterations done after this call; the step functions donate `state`.
      n = chunk_length(step, config)
      call_start = time.time()
      with jax.profiler.StepTraceAnnotation('train', step_num=step + n):
        if n == 1:
          state, metrics = step_fn(state, batch_at(step), rng)
        else:
          state, metrics = steps_fn(state, tuple(batch_at(step + i) for i in range(n)), rng)
      if 'first_call_end' not in timings:   # compilation and the first call
        jax.block_until_ready(state)
        timings['first_call_start'], timings['first_call_end'] = call_start, time.time()
        measured_from = (step + n, time.time())
      elif measured_from is not None:
        measured_from = _report_expected_time(measured_from, step + n, state, config)
      step += n
      buffer.append((n, metrics))
      for hook in hooks:
        hook(step)
      # Read the preemption flag once: a signal that lands while this iteration logs or
      # evaluates must not skip the save and then stop (it is handled after the next call).
      stopping = preempted.signal
      log_now = step % config.train.log_every == 0 or step == num_steps
      eval_now = evaluator is not None and (step % config.train.eval_every == 0
                                            or step == num_steps)
      save_now = (step % config.train.checkpoint_every == 0 or step == num_steps
                  or stopping is not None)
      if (log_now or eval_now or save_now) and config.train.nonfinite == 'stop':
        # Nothing is written or evaluated after a NaN: the check sees every iteration.
        check_finite(buffer, buffer_start, manager, seeds)
      if log_now:
        per_seed = _mean_metrics(buffer, len(seeds))
        for m, skipped in zip(per_seed, np.asarray(jax.device_get(state.skipped))):
          m['skipped'] = float(skipped)
        scalars = history.over_seeds(per_seed, seeds)
        if hasattr(batch_at, 'waited'):   # ms per iteration spent waiting for the batch
          scalars['data_wait_ms'] = 1e3 * (waited() - data_wait) / sum(n for n, _ in buffer)
          data_wait = waited()
        buffer, buffer_start = [], step + 1
        writer.write_scalars(step, scalars)
        if is_chief:
          history.append_metrics(workdir, step, scalars)
        for seed, m in zip(seeds, per_seed):
          diverging(m, step, seed if len(seeds) > 1 else None)
      if eval_now:
        eval_start = time.time()
        with report.timed('eval'):
          scalars = evaluator.evaluate(
              state, step, workdir, {'wall_s': wall_offset + time.time() - wall_start})
        timings['evaluations_s'].append(time.time() - eval_start)
        writer.write_scalars(step, {f'eval/{k}': v for k, v in scalars.items()})
      if save_now:
        with report.timed('checkpoint'):
          checkpoints.save(manager, state, rng, config)
      if stopping is not None:
        logging.warning('%s received: saved checkpoint %s at iteration %d. Rerun the same '
                        'command to resume.', stopping,
                        checkpoints.step_dir(manager, step), step)
        break
  manager.close()
  if is_chief:
    timings['end'] = time.time()
    with history.atomic_open(os.path.join(workdir, 'timings.json')) as f:
      json.dump(timings, f, indent=1)
  return state

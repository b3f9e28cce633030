"""The training loop: data, train step, clu metrics/progress, orbax checkpoints, evaluation.

`train_and_evaluate(config, workdir)` trains from scratch, or resumes from the latest checkpoint
in `workdir/checkpoints` (experiments/checkpoints.py). Data for iteration t is a pure function
of (seed, t) for the toy and StackedMNIST tasks, so a resumed run sees exactly the batches it
would have seen without the interruption.

The loop's parts live beside it: experiments/preemption.py (SIGTERM/SIGINT -> save and stop),
metric_buffer.py (the metrics between log steps and the NaN/Inf check), divergence.py (the
divergence warnings), progress.py (the first call's time, the expected time, clu's progress
report) and writers.py (log lines and TensorBoard files).

Workdir layout:
  checkpoints/<step>/     orbax checkpoints (the latest `train.keep_checkpoints`)
  metrics.jsonl           the scalars written at every log step (also in TensorBoard files)
  events.out.tfevents.*   TensorBoard scalars and the config (experiments/writers.py)
  eval/                   evaluation PNGs, JSON and arrays (written by the task's Evaluator)

The data pipeline and the evaluator come from the task of `config.data.name`
(experiments/tasks.py).
"""
from __future__ import annotations

import contextlib
import os
import time

import jax
from absl import logging

from bibound_jax import assemble
from bibound_jax import bounds
from bibound_jax import config_lib
from bibound_jax import sharding
from bibound_jax import train
from experiments import checkpoints
from experiments import divergence
from experiments import history
from experiments import metric_buffer
from experiments import preemption
from experiments import progress
from experiments import tasks
from experiments import writers
from experiments.checkpoints import CheckpointError, NonFiniteError  # noqa: F401 (re-exported)


def objective_warnings(config) -> list[str]:
  """What in `config` makes an objective stop being the bound it is named after."""
  lower, upper = bounds.from_config(config)
  messages = []
  if config.bounds.lambda_h != 1.0 and lower.has_entropy:
    messages.append(f'bounds.lambda_h = {config.bounds.lambda_h:g} != 1: the generator '
                    'objective is no longer a lower bound on the log-likelihood '
                    '(docs/bounds.md).')
  return messages + lower.objective_warnings() + upper.objective_warnings()


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


def events(step: int, config, evaluating: bool, stopping: bool) -> tuple[bool, bool, bool]:
  """(log, evaluate, save) after `step` iterations: at multiples of train.log_every,
  eval_every (when `evaluating`) and checkpoint_every, and at the last iteration; `stopping`
  (a preemption signal) saves too."""
  last = step == config.train.num_steps
  log = step % config.train.log_every == 0 or last
  evaluate = evaluating and (step % config.train.eval_every == 0 or last)
  save = step % config.train.checkpoint_every == 0 or last or stopping
  return log, evaluate, save


def make_train_call(config, mesh):
  """(state, batch_at, step, n, rng) -> (state, metrics): iterations step + 1 .. step + n in
  one compiled call (the train step, or for n > 1 the chunk of train.steps_per_call). Both
  donate `state`."""
  step_fn = train.make_train_step(config, mesh=mesh)
  k = config.train.steps_per_call
  steps_fn = train.make_train_steps(config, k, mesh=mesh) if k > 1 else None

  def call(state, batch_at, step, n, rng):
    if n == 1:
      return step_fn(state, batch_at(step), rng)
    return steps_fn(state, tuple(batch_at(step + i) for i in range(n)), rng)
  return call


def _mesh(config, num_seeds: int):
  """The device mesh of the run; ConfigError when the batch does not split over it."""
  mesh = sharding.make_mesh(num_seeds=num_seeds)
  try:
    sharding.per_device_batch(config.train.batch_size, mesh)
  except ValueError as e:
    raise config_lib.ConfigError(str(e)) from None
  return mesh


def _restore(manager, state, rng, config, workdir: str):
  """(state, rng, resumed): this run's latest checkpoint (the records after it forgotten),
  else config.train.init_from's (a warm start), else the initial state and key."""
  restored = checkpoints.restore(manager, state, rng, config=config, resuming=True)
  if restored is not None:
    state, rng = restored
    logging.info('Resumed from %s at step %d.', manager.directory, train.iteration(state))
    history.truncate(workdir, train.iteration(state))
    return state, rng, True
  if config.train.init_from:
    state, rng, from_step, differences = checkpoints.warm_start(
        config.train.init_from, state, rng, config)
    logging.info('Warm start from %s (iteration %d); config changes: %s.',
                 config.train.init_from, from_step, '; '.join(differences) or 'none')
  return state, rng, False


def _describe(config, seeds, start: int, workdir: str) -> str:
  """The line that starts training: data, seeds, bounds, networks, iterations, workdir."""
  return (f'{config.data.name}: '
          + (f'{len(seeds)} seeds from {seeds[0]}' if len(seeds) > 1 else f'seed {seeds[0]}')
          + f', bounds {config.bounds.lower} + {config.bounds.upper}, networks '
          f'{config.model.energy.name}/{config.model.generator.name}, '
          f'{config.train.num_steps - start} iteration(s) to {config.train.num_steps}, batch '
          f'{config.train.batch_size}, workdir {workdir}.')


def _per_seed(buffer: metric_buffer.MetricBuffer, state) -> list[dict[str, float]]:
  """Each seed's means over the buffered iterations and its skipped-update count; empties
  the buffer."""
  skipped = jax.device_get(state.skipped)
  return [dict(m, skipped=float(s)) for m, s in zip(buffer.take(), skipped)]


def _data_wait(batch_at, step: int):
  """step -> {'data_wait_ms': ms per iteration the loop blocked on its host pipeline since
  the last call} ({} for on-device data functions: the toy and StackedMNIST run in the
  compiled stream; `data.images.Prefetch` counts `waited` seconds)."""
  if not hasattr(batch_at, 'waited'):
    return lambda step: {}
  last = {'step': step, 'waited': batch_at.waited}

  def since_last(step):
    ms = 1e3 * (batch_at.waited - last['waited']) / (step - last['step'])
    last.update(step=step, waited=batch_at.waited)
    return {'data_wait_ms': ms}
  return since_last


def _wall_clock(workdir: str):
  """() -> seconds of training and evaluation across resumptions (the evaluations' `wall_s`):
  the last recorded evaluation's plus the time since this call."""
  previous = history.load(workdir)
  offset, start = (previous[-1].get('wall_s', 0.0) if previous else 0.0), time.time()
  return lambda: offset + time.time() - start


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


def train_and_evaluate(config, workdir: str) -> train.BiboundState:
  """Train (or resume) the run described by `config` in `workdir`; returns the final state."""
  task = tasks.validate(config)
  for message in objective_warnings(config):
    logging.warning(message)
  os.makedirs(workdir, exist_ok=True)
  is_chief = jax.process_index() == 0
  writer, tensorboard = writers.create_writer(workdir, is_chief)
  seeds = assemble.seeds(config)
  mesh = _mesh(config, len(seeds))
  nets, state, rng = assemble.initial_state(config, mesh)
  manager = checkpoints.open_manager(workdir, config.train.keep_checkpoints)
  state, rng, resumed = _restore(manager, state, rng, config, workdir)
  if not resumed and tensorboard is not None:
    tensorboard.write_hparams({k: str(v) for k, v in
                               checkpoints.flatten(config.to_dict()).items()})

  step = start = train.iteration(state)
  num_steps = config.train.num_steps
  wall_s = _wall_clock(workdir)
  train_call = make_train_call(config, mesh)
  batch_at = task.batches(config, mesh, start)
  evaluator = task.evaluator(config, nets) if config.train.eval_every else None
  buffer = metric_buffer.MetricBuffer(seeds, start + 1)
  diverging = divergence.DivergenceMonitor(config)
  report = progress.Progress(config, writer, is_chief)
  data_wait = _data_wait(batch_at, start)
  with (contextlib.closing(writer), preemption.Preemption() as preempted,
        _evaluation_warm_up(evaluator, state, workdir, start < num_steps)):
    logging.info(_describe(config, seeds, start, workdir))
    report.start(start)
    while step < num_steps:
      n = chunk_length(step, config)
      with jax.profiler.StepTraceAnnotation('train', step_num=step + n):
        state, metrics = train_call(state, batch_at, step, n, rng)
      step += n
      buffer.add(n, metrics)
      report(step, state)
      # Read the flag once: a signal that lands while this iteration logs or evaluates must
      # not skip the save and then stop (it is handled after the next call).
      stopping = preempted.signal
      log_now, eval_now, save_now = events(step, config, evaluator is not None,
                                           stopping is not None)
      if (log_now or eval_now or save_now) and config.train.nonfinite == 'stop':
        buffer.check_finite(manager)   # nothing is written, evaluated or saved after a NaN
      if log_now:
        per_seed = _per_seed(buffer, state)
        scalars = dict(history.over_seeds(per_seed, seeds), **data_wait(step))
        writer.write_scalars(step, scalars)
        if is_chief:
          history.append_metrics(workdir, step, scalars)
        diverging.check(step, per_seed, seeds)
      if eval_now:
        with report.timed('evaluation', step):
          scalars = evaluator.evaluate(state, step, workdir, {'wall_s': wall_s()})
        writer.write_scalars(step, {f'eval/{k}': v for k, v in scalars.items()})
      if save_now:
        with report.timed('checkpoint', step):
          checkpoints.save(manager, state, rng, config)
      if stopping is not None:
        logging.warning('%s received: saved checkpoint %s at iteration %d. Rerun the same '
                        'command to resume.', stopping, checkpoints.step_dir(manager, step), step)
        break
  manager.close()
  report.finish(step)
  return state

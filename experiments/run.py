"""The training loop: data, train step, clu metrics/progress, orbax checkpoints, evaluation.

`train_and_evaluate(config, workdir)` trains from scratch, or resumes from the latest checkpoint
in `workdir/checkpoints` (both TrainStates, the iteration count and the PRNG key). Data for
iteration t is a pure function of (seed, t), so a resumed run sees exactly the batches it would
have seen without the interruption.

Workdir layout:
  checkpoints/<step>/     orbax checkpoints (the latest `train.keep_checkpoints`)
  metrics.jsonl           the scalars written at every log step (also in TensorBoard files)
  events.out.tfevents.*   TensorBoard scalars (clu metric writer)
  eval/                   evaluation PNGs, JSON and arrays (written by the task's Evaluator)

The data pipeline and the evaluator come from the task of `config.data.name`
(experiments/tasks.py: toy 2-D sets, StackedMNIST, TFDS image sets).
"""
from __future__ import annotations

import functools
import json
import os
import signal
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from clu import metric_writers
from clu import periodic_actions

from bibound_jax import config_lib
from bibound_jax import models
from bibound_jax import sharding
from bibound_jax import train
from experiments import history
from experiments import tasks


def checkpoint_manager(workdir: str, config, create: bool = True) -> ocp.CheckpointManager:
  """Orbax manager over workdir/checkpoints keeping the latest `train.keep_checkpoints`."""
  options = ocp.CheckpointManagerOptions(max_to_keep=config.train.keep_checkpoints,
                                         create=create, read_only=not create)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), 'checkpoints'),
                               options=options)


_all_finite = jax.jit(train.all_finite)


def save_checkpoint(manager: ocp.CheckpointManager, state: train.BiboundState, rng: jax.Array,
                    config) -> None:
  """Save both TrainStates, the iteration count and the run's PRNG key at `state.step`.

  Orbax writes to a temporary directory and renames it when complete, so a save killed half
  way is never listed as a checkpoint. A state with NaN/Inf parameters is never saved."""
  step = int(state.step)
  if not bool(_all_finite((state.energy.params, state.generator.params))):
    raise NonFiniteError(f'Refusing to checkpoint iteration {step}: the parameters are not '
                         'finite. The last good checkpoint is kept.')
  items = {'state': state, 'rng': jax.random.key_data(rng)}
  manager.save(step, args=ocp.args.Composite(
      train=ocp.args.StandardSave(items),
      config=ocp.args.JsonSave(config.to_dict())), force=True)
  manager.wait_until_finished()


class CheckpointError(RuntimeError):
  """A checkpoint cannot be used; the message names the file and what to do."""


class NonFiniteError(FloatingPointError):
  """A loss, energy or gradient became NaN/Inf; the message names the step and the metric."""


# Config keys that may change between a run and its resumption (they do not change what the
# saved state means); any other difference is an error.
RESUMABLE_KEYS = ('train.num_steps', 'train.log_every', 'train.eval_every',
                  'train.checkpoint_every', 'train.keep_checkpoints', 'train.nonfinite',
                  'train.steps_per_call',
                  'train.divergence_gap', 'train.divergence_energy', 'eval.',
                  'data.data_dir', 'data.download')


def _step_dir(manager: ocp.CheckpointManager, step: int) -> str:
  return os.path.join(str(manager.directory), str(step))


def config_differences(saved: dict, current: dict) -> list[str]:
  """'key: saved -> now' for every key that differs and is not in RESUMABLE_KEYS."""
  a, b = _flatten(saved), _flatten(current)
  diffs = []
  for key in sorted(set(a) | set(b)):
    if any(key == k or (k.endswith('.') and key.startswith(k)) for k in RESUMABLE_KEYS):
      continue
    va, vb = a.get(key, '<missing>'), b.get(key, '<missing>')
    if isinstance(va, list):
      va = tuple(va)
    if isinstance(vb, list):
      vb = tuple(vb)
    if va != vb:
      diffs.append(f'{key}: {va!r} in the checkpoint, {vb!r} now')
  return diffs


def restore_checkpoint(manager: ocp.CheckpointManager, state: train.BiboundState,
                       rng: jax.Array, step: int | None = None, config=None):
  """Restore (state, rng) from checkpoint `step` (default: the latest); `state` and `rng` give
  the structure, shapes and dtypes. Returns None when there is no checkpoint.

  With `config`, the checkpoint's saved config must agree with it (outside RESUMABLE_KEYS).
  Raises CheckpointError naming the checkpoint directory, the differing keys, or, for an
  unreadable checkpoint, the previous one to fall back to.
  """
  step = manager.latest_step() if step is None else step
  if step is None:
    return None
  path = _step_dir(manager, step)
  earlier = [s for s in manager.all_steps() if s < step]
  fallback = (f'The previous checkpoint is step {earlier[-1]}: delete {path} to resume from it.'
              if earlier else 'There is no earlier checkpoint: use a new --workdir to start over.')
  if config is not None:
    try:
      saved = manager.restore(step, args=ocp.args.Composite(
          config=ocp.args.JsonRestore()))['config']
    except Exception as e:  # noqa: BLE001 - any failure to read means the file is unusable
      raise CheckpointError(f'Checkpoint {path} is corrupt or truncated (its config cannot be '
                            f'read: {type(e).__name__}: {e}). {fallback}') from e
    diffs = config_differences(saved, config.to_dict())
    if diffs:
      raise CheckpointError(
          f'The workdir holds checkpoints of a different config ({path}):\n  '
          + '\n  '.join(diffs) + '\nUse a new --workdir, or rerun with the saved values.')
  template = {'state': state, 'rng': jax.random.key_data(rng)}
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
  try:
    restored = manager.restore(step, args=ocp.args.Composite(
        train=ocp.args.StandardRestore(abstract)))['train']
  except Exception as e:  # noqa: BLE001
    raise CheckpointError(f'Checkpoint {path} is corrupt or truncated and cannot be restored '
                          f'({type(e).__name__}: {str(e)[:300]}). {fallback}') from e
  return restored['state'], jax.random.wrap_key_data(restored['rng'])


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
    if metrics.get('nonfinite', 0.0) == 0.0 and all(np.isfinite(v) for v in metrics.values()):
      continue
    bad = sorted(k for k, v in metrics.items() if not np.isfinite(v))
    last = manager.latest_step()
    where = (f'the last good checkpoint is {_step_dir(manager, last)} (rerun to resume from it)'
             if last is not None else 'no checkpoint was written yet')
    what = (f'{", ".join(bad)} = {[float(metrics[k]) for k in bad]}' if bad
            else 'a gradient')
    raise NonFiniteError(
        f'Non-finite values at iteration {first_step + i}: {what}. The state is not '
        f'checkpointed; {where}. Lower the learning rates, set optim.grad_clip, or set '
        "train.nonfinite='skip' to drop such updates.")


def warn_if_diverging(scalars: dict, step: int, config, warned: list | None = None) -> bool:
  """Log a warning when E(fake) - E(real) or |E| passes the configured thresholds.

  Returns whether the thresholds are passed. With `warned` (a one-element list holding the
  level last warned about) the warning repeats only when the excess doubles, not every log."""
  gap = scalars['energy_fake'] - scalars['energy_real']
  size = max(abs(scalars['energy_fake']), abs(scalars['energy_real']))
  excess = max(gap / config.train.divergence_gap, size / config.train.divergence_energy)
  if excess > 1.0:
    if warned is not None:
      if excess < 2.0 * warned[0]:
        return True
      warned[0] = excess
    logging.warning(
        'Divergence at iteration %d: E(fake) - E(real) = %.3g (threshold %g), max |E| = %.3g '
        '(threshold %g). The energy is running away from the generator; the lower-bound-only '
        "baseline (bounds.upper='none') is expected to do this.", step, gap,
        config.train.divergence_gap, size, config.train.divergence_energy)
    return True
  return False


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


def _append_jsonl(path: str, record: dict[str, Any]) -> None:
  with open(path, 'a') as f:
    f.write(json.dumps(record) + '\n')


def _truncate_jsonl(path: str, max_step: int) -> None:
  """Drop records written after `max_step` (work that the restored checkpoint does not hold)."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    records = [json.loads(line) for line in f if line.strip()]
  with open(path, 'w') as f:
    for r in records:
      if r['step'] <= max_step:
        f.write(json.dumps(r) + '\n')


def _mean_metrics(buffer: list[tuple[int, dict]]) -> dict[str, float]:
  records = _host_records(buffer)
  return {k: float(np.mean([r[k] for r in records])) for k in records[0]}


def chunk_length(step: int, config) -> int:
  """Iterations the next call runs after `step` done: `train.steps_per_call` when no log,
  evaluation or checkpoint falls strictly inside the chunk and it ends by train.num_steps,
  else 1, so every event still happens at its own iteration."""
  k = int(config.train.get('steps_per_call', 1))
  if k <= 1 or step + k > config.train.num_steps:
    return 1
  for every in (config.train.log_every, config.train.eval_every, config.train.checkpoint_every):
    if (step + k - 1) // every > step // every:   # a multiple of `every` in (step, step + k)
      return 1
  return k


def train_and_evaluate(config, workdir: str) -> train.BiboundState:
  """Train (or resume) the run described by `config` in `workdir`; returns the final state."""
  task = tasks.get_task(config) if tasks.task_name(config.data.name) else None
  config_lib.validate_config(config, tasks.ALL_DATASETS,
                             extra_positive=getattr(task, 'POSITIVE_KEYS', ()))
  if config.bounds.lower == 'sv' and config.bounds.lambda_h != 1.0:
    logging.warning('bounds.lambda_h = %g != 1: the generator objective is no longer a lower '
                    'bound on the log-likelihood (DESIGN.md section 1).', config.bounds.lambda_h)
  os.makedirs(workdir, exist_ok=True)
  is_chief = jax.process_index() == 0
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief)
  metrics_path = os.path.join(workdir, 'metrics.jsonl')

  mesh = sharding.make_mesh()
  try:
    sharding.per_device_batch(config.train.batch_size, mesh)
  except ValueError as e:
    raise config_lib.ConfigError(str(e)) from None
  energy_model, gen_model = models.create_models(config.model, config.data.shape)
  rng = jax.random.key(config.seed)
  init_key, rng = jax.random.split(rng)
  state = train.create_state(config, energy_model, gen_model, init_key, config.data.shape)
  state, rng = sharding.replicate((state, rng), mesh)

  manager = checkpoint_manager(workdir, config)
  restored = restore_checkpoint(manager, state, rng, config=config)
  if restored is not None:
    state, rng = restored
    logging.info('Resumed from %s at step %d.', manager.directory, int(state.step))
    _truncate_jsonl(metrics_path, int(state.step))
    history.truncate(workdir, int(state.step))
  else:
    writer.write_hparams({k: str(v) for k, v in _flatten(config.to_dict()).items()})
  start = int(state.step)

  step_fn = train.make_train_step(config, mesh=mesh)
  steps_per_call = int(config.train.get('steps_per_call', 1))
  steps_fn = (train.make_train_steps(config, steps_per_call, mesh=mesh)
              if steps_per_call > 1 else None)
  batch_at = task.make_data_fn(config, mesh, start)
  evaluator = task.Evaluator(config, energy_model, gen_model)
  num_steps = config.train.num_steps
  report = periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer)
  hooks = [report] if is_chief else []

  buffer, buffer_start, warned = [], start + 1, [0.5]
  # Input-pipeline profile: a host pipeline (image_eval.Prefetch) counts the seconds the loop
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
      if log_now or eval_now or save_now:
        # Nothing is written or evaluated after a NaN: the check sees every iteration.
        if config.train.nonfinite == 'stop':
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
          _append_jsonl(metrics_path, dict(step=step, **scalars))
        warn_if_diverging(scalars, step, config, warned)
      if eval_now:
        with report.timed('eval'):
          scalars = evaluator.evaluate(state, step, workdir, metrics_path)
        writer.write_scalars(step, {f'eval/{k}': v for k, v in scalars.items()})
      if save_now:
        with report.timed('checkpoint'):
          save_checkpoint(manager, state, rng, config)
      if preempted.signal is not None:
        logging.warning('%s received: saved checkpoint %s at iteration %d. Rerun the same '
                        'command to resume.', preempted.signal, _step_dir(manager, step), step)
        break
  manager.close()
  return state


def _flatten(d: dict, prefix: str = '') -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out

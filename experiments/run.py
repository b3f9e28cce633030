"""The training loop: data, train step, clu metrics/progress, orbax checkpoints, evaluation.

`train_and_evaluate(config, workdir)` trains from scratch, or resumes from the latest checkpoint
in `workdir/checkpoints` (both TrainStates, the iteration count and the PRNG key). Data for
iteration t is a pure function of (seed, t), so a resumed run sees exactly the batches it would
have seen without the interruption.

Workdir layout:
  checkpoints/<step>/     orbax checkpoints (the latest `train.keep_checkpoints`)
  metrics.jsonl           the scalars written at every log step (also in TensorBoard files)
  events.out.tfevents.*   TensorBoard scalars (clu metric writer)
  eval/                   evaluation PNGs, JSON and arrays (see experiments/toy_eval.py)
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from clu import metric_writers
from clu import periodic_actions

from bibound_jax import config_lib
from bibound_jax import models
from bibound_jax import train
from bibound_jax.data import toy as toy_data
from experiments import toy_eval


def checkpoint_manager(workdir: str, config) -> ocp.CheckpointManager:
  """Orbax manager over workdir/checkpoints keeping the latest `train.keep_checkpoints`."""
  options = ocp.CheckpointManagerOptions(max_to_keep=config.train.keep_checkpoints, create=True)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), 'checkpoints'),
                               options=options)


def save_checkpoint(manager: ocp.CheckpointManager, state: train.BiboundState, rng: jax.Array,
                    config) -> None:
  """Save both TrainStates, the iteration count and the run's PRNG key at `state.step`."""
  step = int(state.step)
  items = {'state': state, 'rng': jax.random.key_data(rng)}
  manager.save(step, args=ocp.args.Composite(
      train=ocp.args.StandardSave(items),
      config=ocp.args.JsonSave(config.to_dict())), force=True)
  manager.wait_until_finished()


def restore_checkpoint(manager: ocp.CheckpointManager, state: train.BiboundState,
                       rng: jax.Array, step: int | None = None):
  """Restore (state, rng) from checkpoint `step` (default: the latest); `state` and `rng` give
  the structure, shapes and dtypes. Returns None when there is no checkpoint."""
  step = manager.latest_step() if step is None else step
  if step is None:
    return None
  template = {'state': state, 'rng': jax.random.key_data(rng)}
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
  restored = manager.restore(step, args=ocp.args.Composite(
      train=ocp.args.StandardRestore(abstract)))['train']
  return restored['state'], jax.random.wrap_key_data(restored['rng'])


def make_data_fn(config):
  """batch_at(step) -> (n_critic, B, 2): a pure function of (seed, step), jit-compiled."""
  name, n_critic, batch = config.data.name, config.optim.n_critic, config.train.batch_size
  data_key = jax.random.fold_in(jax.random.key(config.seed), 1)

  @jax.jit
  def batch_at(step):
    key = jax.random.fold_in(data_key, step)
    return toy_data.sample(name, key, n_critic * batch).reshape(n_critic, batch, -1)
  return batch_at


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


def _mean_metrics(buffer: list[dict[str, jax.Array]]) -> dict[str, float]:
  stacked = jax.device_get(jax.tree.map(lambda *xs: jnp.stack(xs), *buffer))
  return {k: float(np.mean(v)) for k, v in stacked.items()}


def train_and_evaluate(config, workdir: str) -> train.BiboundState:
  """Train (or resume) the run described by `config` in `workdir`; returns the final state."""
  config_lib.validate_config(config, toy_data.DATASETS)
  if config.bounds.lower == 'sv' and config.bounds.lambda_h != 1.0:
    logging.warning('bounds.lambda_h = %g != 1: the generator objective is no longer a lower '
                    'bound on the log-likelihood (DESIGN.md section 1).', config.bounds.lambda_h)
  os.makedirs(workdir, exist_ok=True)
  is_chief = jax.process_index() == 0
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief)
  metrics_path = os.path.join(workdir, 'metrics.jsonl')

  energy_model, gen_model = models.create_models(config.model, config.data.shape)
  rng = jax.random.key(config.seed)
  init_key, rng = jax.random.split(rng)
  state = train.create_state(config, energy_model, gen_model, init_key, config.data.shape)

  manager = checkpoint_manager(workdir, config)
  restored = restore_checkpoint(manager, state, rng)
  if restored is not None:
    state, rng = restored
    logging.info('Resumed from %s at step %d.', manager.directory, int(state.step))
    _truncate_jsonl(metrics_path, int(state.step))
    toy_eval.truncate_history(workdir, int(state.step))
  else:
    writer.write_hparams({k: str(v) for k, v in _flatten(config.to_dict()).items()})
  start = int(state.step)

  step_fn = train.make_train_step(config)
  batch_at = make_data_fn(config)
  evaluator = toy_eval.ToyEvaluator(config, energy_model, gen_model)
  num_steps = config.train.num_steps
  report = periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer)
  hooks = [report] if is_chief else []

  buffer = []
  with metric_writers.ensure_flushes(writer):
    for step in range(start + 1, num_steps + 1):
      # `step` counts iterations done after this one; the step function donates `state`.
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        state, metrics = step_fn(state, batch_at(step - 1), rng)
      buffer.append(metrics)
      for hook in hooks:
        hook(step)
      if step % config.train.log_every == 0 or step == num_steps:
        scalars = _mean_metrics(buffer)
        buffer = []
        writer.write_scalars(step, scalars)
        if is_chief:
          _append_jsonl(metrics_path, dict(step=step, **scalars))
      if step % config.train.eval_every == 0 or step == num_steps:
        with report.timed('eval'):
          scalars = evaluator.evaluate(state, step, workdir, metrics_path)
        writer.write_scalars(step, {f'eval/{k}': v for k, v in scalars.items()})
      if step % config.train.checkpoint_every == 0 or step == num_steps:
        with report.timed('checkpoint'):
          save_checkpoint(manager, state, rng, config)
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

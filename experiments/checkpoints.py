"""Checkpoints of a run in workdir/checkpoints/<step>/ (orbax): open, save, restore.

A checkpoint holds the whole `train.BiboundState` (every TrainState, the iteration count and
the skipped-update count), the run's PRNG key and the config it was trained with. Orbax
writes to a temporary directory and renames it when complete, so a save killed half way is
never listed. The run loop opens the manager writable; `experiments.evaluate` and
`experiments.ood` open it read-only (nothing is saved or pruned).
"""
from __future__ import annotations

import os

from etils import epath
import jax
import orbax.checkpoint as ocp

from bibound_jax import config_lib
from bibound_jax import train
from experiments import evaluation


class CheckpointError(RuntimeError):
  """A checkpoint cannot be used; the message names the file and what to do."""


class NonFiniteError(FloatingPointError):
  """A loss, energy or gradient became NaN/Inf; the message names the step and the metric."""


def sections():
  """Every config section: the library's and the evaluators' (what may change on resume, what
  spans the run, and the keys added, moved or removed since a checkpoint was saved)."""
  return config_lib.library_sections() + [evaluation.SECTION]


def open_manager(workdir: str, keep: int = 3, read_only: bool = False) -> ocp.CheckpointManager:
  """Orbax manager over workdir/checkpoints keeping the latest `keep` (writable) or touching
  nothing (read_only)."""
  if read_only:   # every option orbax would otherwise reset (with a warning each)
    options = ocp.CheckpointManagerOptions(read_only=True, save_interval_steps=0,
                                           max_to_keep=None, create=False,
                                           cleanup_tmp_directories=False)
  else:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), 'checkpoints'),
                               options=options)


def step_dir(manager: ocp.CheckpointManager, step: int) -> str:
  return os.path.join(str(manager.directory), str(step))


_all_finite = jax.jit(train.all_finite)


def save(manager: ocp.CheckpointManager, state: train.BiboundState, rng: jax.Array,
         config) -> None:
  """Save the state, the run's PRNG key and the config at `state.step`. A state with NaN/Inf
  parameters is never saved (NonFiniteError; the last good checkpoint is kept)."""
  step = train.iteration(state)
  if not bool(_all_finite((state.energy.params, state.generator.params))):
    raise NonFiniteError(f'Refusing to checkpoint iteration {step}: the parameters are not '
                         'finite. The last good checkpoint is kept.')
  items = {'state': state, 'rng': jax.random.key_data(rng)}
  manager.save(step, args=ocp.args.Composite(
      train=ocp.args.StandardSave(items),
      config=ocp.args.JsonSave(config.to_dict())), force=True)
  manager.wait_until_finished()


flatten = config_lib.flatten


def config_differences(saved: dict, current: dict, allow_resumable: bool = True) -> list[str]:
  """'key: saved -> now' for every key where `current` differs from the `saved` config in a way
  that matters for restoring (config_lib.saved_differences over `sections`)."""
  return config_lib.saved_differences(flatten(saved), flatten(current), sections(),
                                      allow_resumable)


def choose_step(manager: ocp.CheckpointManager, step: int | None) -> int:
  """`step` (default: the latest) if it is a checkpoint; CheckpointError naming the ones there."""
  steps = sorted(manager.all_steps())
  if not steps:
    raise CheckpointError(f'No checkpoint in {manager.directory}: train first with '
                          'python -m experiments.main.')
  if step is None:
    return steps[-1]
  if step not in steps:
    raise CheckpointError(f'No checkpoint of step {step} in {manager.directory}; '
                          f'available: {", ".join(map(str, steps))}.')
  return step


def _fallback(manager, step: int) -> str:
  earlier = [s for s in manager.all_steps() if s < step]
  if earlier:
    return (f'The previous checkpoint is step {earlier[-1]}: delete {step_dir(manager, step)} '
            'to resume from it.')
  return 'There is no earlier checkpoint: use a new --workdir to start over.'


def saved_config(manager: ocp.CheckpointManager, step: int) -> dict:
  """The config saved with checkpoint `step` (CheckpointError when unreadable)."""
  try:
    return manager.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore()))['config']
  except Exception as e:  # noqa: BLE001 - any failure to read means the file is unusable
    raise CheckpointError(f'Checkpoint {step_dir(manager, step)} is corrupt or truncated (its '
                          f'config cannot be read: {type(e).__name__}: {e}). '
                          f'{_fallback(manager, step)}') from e


def check_config(manager: ocp.CheckpointManager, step: int, config,
                 resuming: bool = False) -> None:
  """CheckpointError listing the keys where `config` differs from checkpoint `step`'s (and,
  `resuming` training, a longer run where a schedule spans it: `schedule_differences`)."""
  saved = saved_config(manager, step)
  diffs = config_differences(saved, config.to_dict())
  if resuming:
    diffs += schedule_differences(saved, config)
  if diffs:
    seeds = ('\nThe seeds of a run are fixed when it starts (train.num_seeds): train another '
             'number of seeds in a new --workdir.' if any(d.startswith('train.num_seeds:')
                                                          for d in diffs) else '')
    raise CheckpointError(
        f'The workdir holds checkpoints of a different config ({step_dir(manager, step)}):\n  '
        + '\n  '.join(diffs) + seeds + '\nUse a new --workdir, or rerun with the saved values.')


def schedule_differences(saved: dict, config) -> list[str]:
  """Why a run cannot be resumed at another train.num_steps: [] unless its length changed and
  something spans it (a section's `spans_run`: the cosine learning rates).

  Resuming would then jump the learning rates from where the saved run's schedule had taken
  them to where the longer run's stands: a warm restart, not the run the command names."""
  before, now = saved['train']['num_steps'], config.train.num_steps
  spans = config_lib.run_spans(config, sections())
  if before == now or not spans:
    return []
  return [f'train.num_steps: {before!r} in the checkpoint, {now!r} now, and '
          + '; '.join(spans) + ': resuming would jump the schedule (a warm restart, not the '
          f'{now}-iteration run). Rerun with --config.train.num_steps={before}, train the longer '
          'run in a new --workdir, or continue this one on purpose in a new --workdir with '
          '--config.train.init_from=DIR (its log lists the keys that differ).']


def restore(manager: ocp.CheckpointManager, state: train.BiboundState, rng: jax.Array,
            step: int | None = None, config=None, resuming: bool = False):
  """(state, rng) from checkpoint `step` (default: the latest), or None when there is none.

  `state` and `rng` give the structure, shapes, dtypes and shardings (arrays or
  ShapeDtypeStructs). With `config`, the saved config must agree with it (outside the keys
  its sections let change on resume; `resuming` training, also train.num_steps where a
  schedule spans it: `schedule_differences`). CheckpointError names the checkpoint, the differing keys, or, for
  an unreadable checkpoint, the previous one to fall back to."""
  step = manager.latest_step() if step is None else step
  if step is None:
    return None
  if config is not None:
    check_config(manager, step, config, resuming=resuming)
  template = {'state': state, 'rng': jax.random.key_data(rng)}
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
  try:
    restored = manager.restore(step, args=ocp.args.Composite(
        train=ocp.args.StandardRestore(abstract)))['train']
  except Exception as e:  # noqa: BLE001
    raise CheckpointError(f'Checkpoint {step_dir(manager, step)} is corrupt or truncated and '
                          f'cannot be restored ({type(e).__name__}: {str(e)[:300]}). '
                          f'{_fallback(manager, step)}') from e
  return restored['state'], jax.random.wrap_key_data(restored['rng'])


def _shapes(tree_or_dir) -> list[tuple]:
  """Sorted (shape, dtype) of every array in a state tree or in a checkpoint directory."""
  if isinstance(tree_or_dir, str):
    metadata = ocp.StandardCheckpointHandler().metadata(
        epath.Path(os.path.join(tree_or_dir, 'train')))
    tree_or_dir = getattr(metadata, 'tree', metadata)
  else:
    tree_or_dir = {**tree_or_dir, 'rng': jax.random.key_data(tree_or_dir['rng'])}
  return sorted((tuple(x.shape), str(x.dtype)) for x in jax.tree.leaves(tree_or_dir))


def warm_start(spec: str, state: train.BiboundState, rng: jax.Array, config):
  """(state, rng, step, differences) from `spec` = 'DIR' or 'DIR@STEP': another run's checkpoint.

  Unlike `restore`, the config may differ from the saved one; `differences` lists the keys
  that do (outside the resumable ones). The state must keep its shapes: a different network or a
  bound that adds a network is a CheckpointError naming the differing keys."""
  directory, _, step = spec.partition('@')
  if not os.path.isdir(os.path.join(directory, 'checkpoints')):
    raise CheckpointError(f'config.train.init_from = {spec!r}: {directory}/checkpoints does not '
                          "exist. Use the workdir of a trained run, 'DIR' or 'DIR@STEP'.")
  try:
    step = int(step) if step else None
  except ValueError:
    raise CheckpointError(f'config.train.init_from = {spec!r}: {step!r} is not an iteration; '
                          "use 'DIR' or 'DIR@STEP'.") from None
  manager = open_manager(directory, read_only=True)
  try:
    step = choose_step(manager, step)
    differences = config_differences(saved_config(manager, step), config.to_dict())
    if _shapes(step_dir(manager, step)) != _shapes({'state': state, 'rng': rng}):
      raise CheckpointError(
          f'config.train.init_from = {spec!r}: the arrays of checkpoint '
          f'{step_dir(manager, step)} do not have the shapes of this config\'s state (a '
          'different network, number of seeds or bound network). Keys that differ:\n  '
          + '\n  '.join(differences or ['none']))
    restored = restore(manager, state, rng, step)
  finally:
    manager.close()
  return (*restored, step, differences)

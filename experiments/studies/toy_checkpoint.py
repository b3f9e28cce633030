"""Restore a checkpoint (the latest by default) of a toy run, for the studies that read its networks
(energy_wells and fold_precision: docs/studies/toy_mi_diff.md and toy_baselines.md).

The checkpoint's own config says how many seeds the run trained and which networks: the
networks (config.model, confinement and output scale included) and the optimiser settings are
taken from it, so E is the energy that was trained. The preset a user names supplies the rest
and must build the same state shapes (bounds, data, seed count), or the error says which keys
differ.
"""
from __future__ import annotations

from absl import app
from absl import flags

# The keys that fix the shapes of a toy run's state (the rest, such as bound weights, t_min or
# learning rates, change no array).
_SHAPE_KEYS = ('model.', 'data.name', 'data.shape', 'train.num_seeds', 'bounds.lower',
               'bounds.upper', 'bounds.mi.hidden')


def restore(workdir: str, preset: str, num_seeds: int | None = None, step: int | None = None):
  """(config, networks, state, step) of checkpoint `step` (None: the latest) in `workdir`.

  `preset` is the configs/toy.py argument the run was started with (its overrides of bound
  weights and schedules do not matter here); `num_seeds` defaults to the run's. Raises
  app.UsageError naming the fix for a workdir without checkpoints (or without `step`: the
  message lists the ones there), or for a preset or seed
  count whose state shapes differ from the run's."""
  # pylint: disable=import-outside-toplevel
  from bibound_jax import assemble
  from configs import toy
  from experiments import checkpoints
  manager = checkpoints.open_manager(workdir, read_only=True)
  try:
    try:
      step = checkpoints.choose_step(manager, step)
    except checkpoints.CheckpointError as e:
      raise app.UsageError(f'{e} (--workdir is the run directory, the one holding '
                           'checkpoints/).') from None
    saved = checkpoints.saved_config(manager, step)
    cfg = toy.get_config(preset)
    _set_networks(cfg, saved)
    cfg.train.num_seeds = saved['train']['num_seeds'] if num_seeds is None else num_seeds
    diffs = [d for d in checkpoints.config_differences(saved, cfg.to_dict(),
                                                       allow_resumable=False)
             if any(d.startswith(k) for k in _SHAPE_KEYS)]
    if diffs:
      raise app.UsageError(
          f'The run in {workdir} does not have the shapes of --preset={preset!r}'
          + ('' if num_seeds is None else f' and --num_seeds={num_seeds}') + ':\n  '
          + '\n  '.join(diffs) + '\nPass the preset (and seed count) the run was started with.')
    nets, abstract, rng = assemble.abstract_state(cfg)
    state, _ = checkpoints.restore(manager, abstract, rng, step=step)
  finally:
    manager.close()
  return cfg, nets, state, step


def _set_networks(cfg, saved: dict) -> None:
  """cfg.model and cfg.optim := the checkpoint's (the structure of its networks and of its
  optimiser states), read as the code reads them now (`config_lib.upgrade`: moved keys at their
  place, removed ones dropped); keys added since keep the values their sections declare for
  older runs (`Section.added`)."""
  # pylint: disable=import-outside-toplevel
  import ml_collections
  from bibound_jax import config_lib
  from experiments import checkpoints
  sections = checkpoints.sections()
  saved = config_lib.upgrade(saved, sections)
  with cfg.unlocked():
    for name in ('model', 'optim'):
      cfg[name] = ml_collections.ConfigDict(saved[name])
    for section in sections:
      for leaf, value in section.added.items():
        *path, name = section.key(leaf).split('.')
        if path[0] not in ('model', 'optim'):
          continue
        node = cfg
        try:
          for part in path:
            node = node[part]
        except (KeyError, AttributeError):   # a network the run does not have
          continue
        if name not in node:
          node[name] = value


def define_flags() -> None:
  """--workdir, --preset, --num_seeds and --step, as `restore_from_flags` reads them."""
  flags.DEFINE_string('workdir', None, 'The run directory holding checkpoints/.')
  flags.DEFINE_string('preset', 'sv+gp', 'configs/toy.py argument of the run.')
  flags.DEFINE_integer('num_seeds', None, 'train.num_seeds of the run (default: the '
                       "checkpoint's).")
  flags.DEFINE_integer('step', None, 'The checkpoint to read (default: the latest).')
  flags.mark_flag_as_required('workdir')


def restore_from_flags():
  """`restore` with the flags of `define_flags`."""
  f = flags.FLAGS
  return restore(f.workdir, f.preset, f.num_seeds, f.step)

"""The config sections of the library, collected from the components that declare them
(`config_schema.Section`), and what the rest of the code asks of them: the defaults every
config starts from, the checks of a whole config, and how a config compares with the one a
checkpoint was saved with (keys that may change on resume, schedules that span the run, keys
added, moved or removed since).

    train, optim          bibound_jax/train.py
    bounds, bounds.jacobian, bounds.<name>   bibound_jax/bounds/
    sample                bibound_jax/sampling.py
    data                  bibound_jax/data/__init__.py
    model.energy, model.generator            bibound_jax/models/registry.py
    eval                  experiments/evaluation.py (added by the experiments: `sections`)

Unknown keys and ill-typed overrides on the command line are rejected by `ml_collections`
itself (the config is locked and typed; experiments/main.py names the key, and for a key that
moved, its new place: `moved_key`); the sections' checks reject bad values.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import ml_collections

from bibound_jax import bounds
from bibound_jax import data
from bibound_jax import models
from bibound_jax import sampling
from bibound_jax import train
from bibound_jax.config_schema import ANY, ConfigError, Section, choice, positive  # noqa: F401


def library_sections() -> list[Section]:
  """Every section the library declares."""
  return [train.TRAIN, train.OPTIM, *bounds.sections(), sampling.SECTION, data.SECTION,
          *models.SECTIONS]


def add_defaults(config: ml_collections.ConfigDict,
                 sections: Iterable[Section] | None = None) -> None:
  """Create every declared section with a default in `config` (parents before children)."""
  for section in sorted(sections or library_sections(), key=lambda s: s.path.count('.')):
    if not section.defaults:
      continue
    *parents, name = section.path.split('.')
    node = config
    for part in parents:
      if part not in node:
        node[part] = ml_collections.ConfigDict()
      node = node[part]
    node[name] = ml_collections.ConfigDict(dict(section.defaults))


def validate_config(config, datasets: Iterable[str], extra_positive: Iterable[str] = ()) -> None:
  """Check a training config: the declared sections' checks (of the bounds, only the chosen
  ones: `bounds.checked_sections`), the networks' names and keys
  (for what the bounds ask of them), the data set name and the task's own keys that must be
  > 0 (`extra_positive`); ConfigError naming the key."""
  choice(config, 'data.name', datasets)
  for section in library_sections():   # every section, but only the chosen bounds'
    if section.check is not None and section.path.split('.')[0] != 'bounds':
      section.check(config)
  for section in bounds.checked_sections(config):
    if section.check is not None:
      section.check(config)
  choice(config, 'model.energy.name', models.ENERGIES)
  choice(config, 'model.generator.name', models.GENERATORS)
  positive(config, 'model.generator.latent_dim', 'eval.num_samples', *extra_positive)
  try:
    models.check(config.model, config.data.shape, **bounds.network_options(config))
  except ValueError as e:
    raise ConfigError(str(e)) from None


def owner(key: str, sections: Sequence[Section]) -> tuple[Section | None, str]:
  """(the section that holds the dotted key, the key's name in it), the deepest one."""
  best = None
  for section in sections:
    if key.startswith(section.path + '.') and (best is None
                                               or len(section.path) > len(best.path)):
      best = section
  return best, key[len(best.path) + 1:] if best else key


def moved_key(key: str, sections: Sequence[Section] | None = None) -> str | None:
  """The place now of an old config key (with or without the 'config.' prefix), or None;
  follows a key that moved twice."""
  moved = {k: v for s in (sections or library_sections()) for k, v in s.moved.items()}
  key = key[len('config.'):] if key.startswith('config.') else key
  if key not in moved:
    return None
  while key in moved:
    key = moved[key]
  return key


def saved_differences(saved: dict, current: dict, sections: Sequence[Section],
                      allow_resumable: bool = True) -> list[str]:
  """'key: saved -> now' for each difference between flat configs that matters: not for keys a
  section lets change on resume (with `allow_resumable`), nor for a key added since the save
  whose value is the one reproducing the old code, nor for a removed key saved with the value
  the code keeps. Old keys of `saved` are read at their place now (`moved`)."""
  renamed = {}
  for key, value in saved.items():
    renamed[moved_key(key, sections) or key] = value
  removed = {k: v for s in sections for k, v in s.removed.items()}
  diffs = []
  for key in sorted(set(renamed) | set(current)):
    section, name = owner(key, sections)
    if allow_resumable and section is not None and section.is_resumable(name):
      continue
    if key in removed and key not in current:
      keep, commit = removed[key]
      if keep is ANY or _same(renamed[key], keep):
        continue
      diffs.append(f'{key}: {renamed[key]!r} in the checkpoint; the key is gone and the code '
                   f'now behaves as with {keep!r} (commit {commit} has the old behaviour)')
      continue
    if key not in renamed and section is not None and name in section.added:
      if _same(current[key], section.added[name]):
        continue
    before, now = renamed.get(key, '<missing>'), current.get(key, '<missing>')
    if not _same(before, now):
      diffs.append(f'{key}: {before!r} in the checkpoint, {now!r} now')
  return diffs


def _same(a: Any, b: Any) -> bool:
  as_tuple = lambda v: tuple(v) if isinstance(v, list) else v
  return as_tuple(a) == as_tuple(b)


def run_spans(config, sections: Sequence[Section]) -> list[str]:
  """What in `config` spans train.num_steps (each section's `spans_run`)."""
  out = []
  for section in sections:
    if section.spans_run is None:
      continue
    node = config
    try:
      for part in section.path.split('.'):
        node = node[part]
    except (KeyError, AttributeError):
      continue
    reason = section.spans_run(node)
    if reason:
      out.append(reason)
  return out


def upgrade(saved: dict, sections: Sequence[Section]) -> dict:
  """A saved config (nested dict) read by the code now: old keys at their place now, removed
  keys dropped (`saved_differences` refuses a checkpoint whose removed key had another value
  than the one the code keeps)."""
  removed = {k for s in sections for k in s.removed}
  out: dict = {}
  for key, value in flatten(saved).items():
    key = moved_key(key, sections) or key
    if key in removed:
      continue
    *parents, name = key.split('.')
    node = out
    for part in parents:
      node = node.setdefault(part, {})
    node[name] = value
  return out


def flatten(d: dict, prefix: str = '') -> dict:
  """{'a': {'b': 1}} -> {'a.b': 1}."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out

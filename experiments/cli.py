"""The command line shared by the entry points, the studies and the benchmarks. Defines no
flags, so tests import it.

Every script takes `--config=configs/NAME.py[:ARG]` and `--config.KEY=VALUE` overrides as
`python -m experiments.main` does (ml_collections' `config_flags`, the config locked: an
unknown key or an ill-typed value stops the parse, and `parse_flags` says so in one line,
naming where a key that moved went). A study derives one config per bound preset, a benchmark
one per pairing (`derive`): the script's changes first, the command line's overrides last, so
a key named on the command line has its value in every derived config:

    config file (+ ARG)  ->  the preset  ->  the script's changes  ->  the overrides
"""
from __future__ import annotations

import importlib.util
import sys
from typing import Any, Mapping

from absl import flags


def _config_of(argv):
  """(the config that --config names, its path), loaded as config_flags loads it."""
  config_arg = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), None)
  path, _, variant = config_arg.partition(':')
  spec = importlib.util.spec_from_file_location('_bibound_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return (module.get_config(variant) if variant else module.get_config()), path


def unknown_key_message(argv, error) -> str:
  """Name the --config.KEY override that does not exist, and the keys that do at that level
  (the config file is loaded again to list them: ml_collections' error names only the part)."""
  from bibound_jax import config_lib  # pylint: disable=import-outside-toplevel
  for arg in argv:   # a key that moved needs no config to say where it went
    if arg.startswith('--config.'):
      key = arg[len('--config.'):].split('=', 1)[0]
      moved = config_lib.moved_key(key)
      if moved is not None:
        return (f'--config.{key}: this key moved to config.{moved}; pass '
                f'--config.{moved}=... instead.')
  try:
    config, path = _config_of(argv)
  except Exception:  # pylint: disable=broad-except
    return f'a --config override names a key the config does not have ({error})'
  for arg in argv:
    if not arg.startswith('--config.'):
      continue
    node, keys = config, arg[len('--config.'):].split('=', 1)[0].split('.')
    for i, key in enumerate(keys):
      if not hasattr(node, 'keys') or key not in node:
        where = '.'.join(['config'] + keys[:i])
        valid = ', '.join(sorted(node.keys())) if hasattr(node, 'keys') else '(not a section)'
        return (f'--config.{".".join(keys)}: {where} has no key {key!r}; its keys are: '
                f'{valid}. Check the spelling against {path}.')
      node = node[key]
  return f'a --config override names a key the config does not have ({error})'


def parse_flags(argv):
  """absl flag parsing (the `flags_parser` of `app.run`); an override of a key the config does
  not have exits with one line naming the key and the valid ones (ml_collections raises a
  bare AttributeError)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:   # an ill-typed value, a missing required flag, ...
    sys.exit(f'error: {e}\nPass --helpfull to see the flags.')
  except (AttributeError, KeyError) as e:
    sys.exit(f'error: {unknown_key_message(argv, e)}')


def derive(base, overrides: Mapping[str, Any], preset: str = '',
           changes: Mapping[str, Any] | None = None):
  """A copy of `base` with the bound preset `preset` (configs/common.py; '' keeps the file's),
  then `changes` ('dotted.key' -> value), then `overrides` (the same form:
  `config_flags.get_override_values(FLAGS['config'])`). `base` is not modified. A key the config
  does not have raises KeyError where `base` is locked (as config_flags leaves it); a preset
  that does not exist raises ValueError."""
  from configs import common   # pylint: disable=import-outside-toplevel
  config = base.copy_and_resolve_references()
  if preset and not common.apply_preset(config, preset):
    raise ValueError(f'Unknown preset {preset!r}; valid: {", ".join(common.PRESETS)}.')
  config.update_from_flattened_dict(dict(changes or {}))
  config.update_from_flattened_dict(dict(overrides))
  return config


def describe(filename: str, overrides: Mapping[str, Any]) -> str:
  """The config as the command line gave it, for table headers: `--config=FILE[:ARG]
  --config.KEY=VALUE ...`."""
  return ' '.join([f'--config={filename}'] + [f'--config.{k}={v}' for k, v in overrides.items()])

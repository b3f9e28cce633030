"""Checks of config values that name the key and the fix. No imports from the library: the
bounds, the models and `config_lib` all use these."""
from __future__ import annotations

from typing import Iterable


class ConfigError(ValueError):
  """A config value is invalid; the message names the key and the fix."""


def get(config, key: str):
  """config.<key> for a dotted key; ConfigError when a part is missing."""
  node = config
  for part in key.split('.'):
    if not hasattr(node, 'keys') or part not in node:
      raise ConfigError(f'config.{key} is missing; the config file must define it.')
    node = node[part]
  return node


def choice(config, key: str, valid: Iterable) -> None:
  """config.<key> must be one of `valid`."""
  value, valid = get(config, key), tuple(valid)
  if value not in valid:
    raise ConfigError(f'config.{key} = {value!r} is not valid; choose one of: '
                      f'{", ".join(map(str, valid))}.')


def positive(config, *keys: str, allow_zero: bool = False) -> None:
  """Each config.<key> must be a number > 0 (>= 0 with allow_zero)."""
  for key in keys:
    value = get(config, key)
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
        or (value == 0 and not allow_zero)):
      raise ConfigError(f'config.{key} = {value!r}; it must be a number '
                        f'{">= 0" if allow_zero else "> 0"}.')

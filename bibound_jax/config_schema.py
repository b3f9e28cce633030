"""How a component declares its config section (`Section`), and the checks that name the key
and the fix. No imports from the library: every component uses this module, and
`bibound_jax/config_sections.py` collects the declarations.

A section is declared once, by the component that reads it: its defaults, its checks, which of
its keys may change when a run resumes, what in it spans the run (a schedule that
train.num_steps stretches), and, for checkpoints saved by older code, the value a key added
since reproduces, where a key moved, and what a removed key's value was when the code behaved
as it does now.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Mapping


class ConfigError(ValueError):
  """A config value is invalid; the message names the key and the fix."""


ANY = object()   # a removed key whose every value behaved as the code does now


@dataclasses.dataclass(frozen=True)
class Section:
  """A config section (config.<path>) as its component declares it.

  defaults    key -> default value (the section in every config starts as these);
  check       check(config) raises ConfigError naming the key (None: nothing to check);
  resumable   keys that may differ between a run and its resumption (they change nothing the
              saved state means); '*' for every key of the section;
  spans_run   spans_run(section) -> why a longer train.num_steps would change the saved
              part of the run (a schedule over train.num_steps), or None;
  added       key added after runs were saved -> the value that reproduces the code before it
              (a checkpoint without the key matches a config holding that value);
  moved       an old dotted key (from 'config.', e.g. 'bounds.sv.jacobian_bn') -> its key now;
  removed     an old dotted key no longer read -> (the value whose behaviour the code keeps,
              the last commit that reads the key): a checkpoint saved with another value was
              trained by code that is gone. ANY: every value behaved alike (a key that changed
              only rounding, or was never read)."""
  path: str
  defaults: Mapping[str, Any]
  check: Callable[[Any], None] | None = None
  resumable: tuple[str, ...] = ()
  spans_run: Callable[[Any], str | None] | None = None
  added: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  moved: Mapping[str, str] = dataclasses.field(default_factory=dict)
  removed: Mapping[str, tuple[Any, str]] = dataclasses.field(default_factory=dict)

  def key(self, name: str) -> str:
    """The dotted key of `name` in this section, e.g. 'bounds.gp.weight'."""
    return f'{self.path}.{name}'

  def is_resumable(self, name: str) -> bool:
    return '*' in self.resumable or name in self.resumable


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

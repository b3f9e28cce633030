"""The network sets that the benchmarks time and probe, by name (the experiments' configs), and
the --set KEY=VALUE overrides of the benchmarks."""
from __future__ import annotations

import importlib

# network set -> (config module, config argument, description)
NETWORKS = {
    'toy': ('toy', 'authors', "the authors' toy networks (E 2-100-100-1, G 2-100-100-2 with "
            'BatchNorm, batch 200)'),
    'toy_flow': ('toy', '', 'the default toy networks (E 2-100-100-1, G a 2-layer spline '
                 'coupling flow, batch 200)'),
    'fc': ('stackedmnist', '', 'StackedMNIST FC (E 2352-2000-1000-500-250-250-1, '
           'G 32-500-1000-2000-2352, batch 64)'),
    'fc_cpu': ('stackedmnist', 'cpu', 'StackedMNIST FC, CPU variant (E 2352-1000-500-250-250-1, '
               'G 32-250-500-1000-2352, batch 64)'),
    'dcgan28': ('stackedmnist', 'cnn', 'StackedMNIST DCGAN-style CNN (d = 32, batch 64)'),
    'dcgan32': ('cifar10', '', 'CIFAR-10 DCGAN (d = 128, batch 64)'),
}


def get_config(network: str, preset: str):
  module, arg, _ = NETWORKS[network]
  config_module = importlib.import_module(f'configs.{module}')
  cfg = config_module.get_config(','.join(a for a in (arg, preset) if a))
  if network == 'dcgan28' and preset == 'mi+diff':   # no time-conditioned 28x28 CNN energy
    cfg.model.energy = type(cfg.model.energy)({'name': 'mlp', 'hidden': (1000, 500, 250, 250)})
  return cfg


def apply_overrides(cfg, items) -> None:
  """Apply 'dotted.key=value' overrides: the value is read as the type the key holds (a bool
  as true/false in any case, numbers and tuples as Python or JSON literals, a str as is)."""
  import ast
  for item in items:
    key, sep, value = item.partition('=')
    if not sep:
      raise ValueError(f'--set={item}: write KEY=VALUE, e.g. --set=bounds.gp.weight=0.7.')
    *path, name = key.split('.')
    node = cfg
    try:
      for part in path:
        node = node[part]
      old = node[name]
    except (KeyError, AttributeError):
      raise ValueError(f'--set={item}: the config has no key {key!r}.') from None
    if isinstance(old, str) or old is None:
      node[name] = value
      continue
    try:
      if isinstance(old, bool):
        if value.lower() not in ('true', 'false'):
          raise ValueError
        parsed = value.lower() == 'true'
      else:
        parsed = ast.literal_eval({'true': 'True', 'false': 'False'}.get(value, value))
        if isinstance(old, int) and not isinstance(parsed, int):
          raise ValueError
      node[name] = type(old)(parsed)
    except (ValueError, SyntaxError, TypeError):
      raise ValueError(f'--set={item}: {key} is of type {type(old).__name__} (now {old!r}) '
                       f'and {value!r} does not read as one.') from None

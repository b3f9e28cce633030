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
  """Apply 'dotted.key=value' overrides (values parsed as JSON unless the key holds a str)."""
  import json
  for item in items:
    key, value = item.split('=', 1)
    *path, name = key.split('.')
    node = cfg
    for part in path:
      node = node[part]
    node[name] = value if isinstance(node[name], str) else type(node[name])(json.loads(value))

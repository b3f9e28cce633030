"""The network sets that the speed benchmarks time and probe, by name (the experiments' configs).

benchmarks/sv_estimator.py, conv_impl.py and profile_step.py name a set; benchmarks/step_time.py
takes a config file (`--config`) instead.
"""
from __future__ import annotations

import importlib

import ml_collections

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
  fc_energy_for_diffusion(cfg)
  return cfg


def fc_energy_for_diffusion(cfg) -> None:
  """The DCGAN energy needs sides divisible by 8 for its time-conditioned form, which the
  diffusion bound trains: on 28 x 28 (configs/stackedmnist.py:cnn) there is none, so with the
  diffusion bound the benchmarks time the FC energy 2352-1000-500-250-250-1 instead."""
  if (cfg.bounds.upper == 'diff' and cfg.model.energy.name == 'dcgan'
      and cfg.data.shape[0] % 8):
    with cfg.unlocked():
      cfg.model.energy = ml_collections.ConfigDict({'name': 'mlp',
                                                    'hidden': (1000, 500, 250, 250)})

"""Which data pipeline and evaluator a run uses, chosen by `config.data.name`.

A task is a module with:
  DATASETS                      the `config.data.name` values it serves;
  POSITIVE_KEYS                 config keys (beyond the common ones) that must be > 0;
  make_data_fn(config, mesh, start_step) -> batch_at(step): the batch of iteration `step`
                                (0-based), an array (n_critic, B, *data.shape) with
                                `sharding.batch_sharding(mesh)`. The loop calls it with
                                consecutive steps from `start_step`;
  Evaluator(config, energy_model, gen_model) with
                                `evaluate(state, step, workdir, metrics_path) -> dict` writing
                                its files under workdir/eval (the record of evaluations through
                                experiments/history.py) and returning scalars.

Tasks: 'toy' (experiments/toy_eval.py), 'stackedmnist' (experiments/mnist_eval.py), 'image'
(experiments/image_eval.py). Modules are imported on first use, so a toy run never imports
TensorFlow.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from bibound_jax.data import images as image_data
from bibound_jax.data import toy as toy_data

TASK_MODULES = {
    'toy': 'experiments.toy_eval',
    'stackedmnist': 'experiments.mnist_eval',
    'image': 'experiments.image_eval',
}
TASK_DATASETS = {
    'toy': tuple(toy_data.DATASETS),
    'stackedmnist': ('stackedmnist',),
    'image': tuple(image_data.DATASETS) + tuple(image_data.ALIASES),
}
ALL_DATASETS = tuple(name for names in TASK_DATASETS.values() for name in names)


def task_name(dataset: str) -> str | None:
  """The task serving `dataset`, or None."""
  for task, names in TASK_DATASETS.items():
    if dataset in names:
      return task
  return None


def get_task(config) -> ModuleType:
  """The task module for `config.data.name` (see the module docstring)."""
  name = task_name(config.data.name)
  if name is None:
    # validate_config names the key and the choices; this is for callers that skip it.
    raise ValueError(f'config.data.name = {config.data.name!r} is not valid; choose one of: '
                     f'{", ".join(ALL_DATASETS)}.')
  return importlib.import_module(TASK_MODULES[name])

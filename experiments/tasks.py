"""Which data and evaluator a run uses, chosen by `config.data.name`: the task table.

A task has
  datasets        the `config.data.name` values it serves;
  batches         (config, mesh, start_step) -> batch_at(step): the batch of iteration `step`
                  (0-based), an array (seeds, energy_steps, B, *data.shape) in
                  `sharding.batch_sharding(mesh)`; the loop calls it with consecutive steps
                  from `start_step` (bibound_jax/data/);
  evaluator       the Evaluator class (experiments/evaluation.py);
  positive_keys   its config keys that must be > 0;
  validate        its own config checks (ConfigError naming the key).
No module here imports TensorFlow: the image pipelines import it when they are built.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from absl import logging

from bibound_jax import assemble
from bibound_jax import config_schema
from bibound_jax import config_lib
from bibound_jax.data import images as image_data
from bibound_jax.data import mnist as mnist_data
from bibound_jax.data import toy as toy_data
from experiments import image_eval
from experiments import mnist_eval
from experiments import toy_eval


@dataclasses.dataclass(frozen=True)
class Task:
  datasets: tuple[str, ...]
  batches: Callable
  evaluator: type
  positive_keys: tuple[str, ...] = ()
  validate: Callable = lambda config: None


def _toy_batches(config, mesh, start_step):
  del start_step   # a pure function of (seed, step)
  return toy_data.batch_fn(config.data.name, assemble.seeds(config), config.optim.energy_steps,
                           config.train.batch_size, mesh)


def _stackedmnist_batches(config, mesh, start_step):
  del start_step   # a pure function of (seed, step)
  images, labels, source = mnist_eval.load_digits(config)
  logging.info('StackedMNIST from %d %s digits.', len(labels), source)
  return mnist_data.batch_fn(images, assemble.seeds(config), config.optim.energy_steps,
                             config.train.batch_size, mesh)


def _image_batches(config, mesh, start_step):
  return image_data.batch_stream(config.data.name, assemble.seeds(config), start_step,
                                 config.optim.energy_steps, config.train.batch_size, mesh,
                                 config.data.data_dir or None, config.data.download)


TASKS = {
    'toy': Task(tuple(toy_data.DATASETS), _toy_batches, toy_eval.ToyEvaluator,
                ('eval.grid_spacing', 'eval.bound_samples')),
    'stackedmnist': Task(
        ('stackedmnist',), _stackedmnist_batches, mnist_eval.StackedMNISTEvaluator,
        ('eval.batch_size', 'eval.num_data', 'eval.grid_samples', 'eval.classifier_steps',
         'eval.bound_batches'),
        lambda config: config_schema.choice(config, 'data.source', mnist_data.SOURCES)),
    'image': Task(
        tuple(image_data.DATASETS) + tuple(image_data.ALIASES), _image_batches,
        image_eval.ImageEvaluator,
        ('eval.batch_size', 'eval.grid_samples', 'eval.energy_samples', 'eval.prd_runs'),
        image_eval.check_shape),
}
ALL_DATASETS = tuple(name for task in TASKS.values() for name in task.datasets)


def get_task(config) -> Task:
  """The task serving `config.data.name` (ConfigError naming the valid data sets)."""
  for task in TASKS.values():
    if config.data.name in task.datasets:
      return task
  config_schema.choice(config, 'data.name', ALL_DATASETS)
  raise AssertionError('unreachable')


def validate(config) -> Task:
  """Check the config for its task (config_lib.validate_config plus the task's own checks);
  returns the task."""
  task = get_task(config)
  config_lib.validate_config(config, ALL_DATASETS, task.positive_keys)
  task.validate(config)
  return task

"""Evaluate a checkpoint of a run without training: the task's full evaluation at one step.

    python -m experiments.evaluate --config=configs/stackedmnist.py --workdir=DIR [--step=N]

Restores checkpoint N (default: the latest) of the run in --workdir, checks that --config
matches the config saved with it (as a resumed run would), and runs the evaluator of
`config.data.name` (experiments/tasks.py): for StackedMNIST the mode count and KL over
`eval.num_samples` samples and the sample grid, for the toy sets the densities and the
likelihood sandwich, for images the sample grid, energies and FID/IS. Evaluation overrides
(e.g. --config.eval.num_samples=50000) are allowed; the files land in DIR/eval as during
training.
"""
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'The run directory holding checkpoints/.')
flags.DEFINE_integer('step', None, 'Checkpoint step to evaluate (default: the latest).')
config_flags.DEFINE_config_file('config', None, 'The run\'s configuration file.',
                                lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def evaluate_checkpoint(config, workdir: str, step: int | None = None) -> dict:
  """Restore checkpoint `step` (None: the latest) of `workdir` and evaluate it; returns the
  scalars. Raises CheckpointError when there is no checkpoint to evaluate."""
  import os

  import jax
  from bibound_jax import config_lib
  from bibound_jax import models
  from bibound_jax import sharding
  from bibound_jax import train
  from experiments import run
  from experiments import tasks

  task = tasks.get_task(config) if tasks.task_name(config.data.name) else None
  config_lib.validate_config(config, tasks.ALL_DATASETS,
                             extra_positive=getattr(task, 'POSITIVE_KEYS', ()))
  mesh = sharding.make_mesh()
  energy_model, gen_model = models.create_models(config.model, config.data.shape)
  rng = jax.random.key(config.seed)
  state = train.create_state(config, energy_model, gen_model, rng, config.data.shape)
  state, rng = sharding.replicate((state, rng), mesh)
  manager = run.checkpoint_manager(workdir, config, create=False)
  restored = run.restore_checkpoint(manager, state, rng, step=step, config=config)
  if restored is None:
    raise run.CheckpointError(f'No checkpoint in {os.path.join(workdir, "checkpoints")} to '
                              'evaluate: train first with python -m experiments.main.')
  state, _ = restored
  step = int(state.step)
  evaluator = task.Evaluator(config, energy_model, gen_model)
  scalars = evaluator.evaluate(state, step, workdir, os.path.join(workdir, 'metrics.jsonl'))
  manager.close()
  return dict(step=step, **scalars)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected command-line arguments: {argv[1:]}')
  from bibound_jax import config_lib
  from experiments import run
  try:
    scalars = evaluate_checkpoint(FLAGS.config, FLAGS.workdir, FLAGS.step)
  except (config_lib.ConfigError, run.CheckpointError) as e:
    sys.exit(f'error: {e}')
  width = max(len(k) for k in scalars)
  for key, value in scalars.items():
    print(f'{key:<{width}}  {value}')


if __name__ == '__main__':
  app.run(main)

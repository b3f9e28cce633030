"""Evaluate a checkpoint of a run without training: the task's full evaluation at one step.

    python -m experiments.evaluate --config=configs/stackedmnist.py --workdir=DIR [--step=N]

Restores checkpoint N (default: the latest) of the run in --workdir, checks that --config
matches the config saved with it (as a resumed run would), and runs the evaluator of
`config.data.name` (experiments/tasks.py): for StackedMNIST the mode count and KL over
`eval.num_samples` samples and the sample grid, for the toy sets the densities and the
likelihood sandwich, for images the sample grid, energies and FID/IS. Evaluation overrides
(e.g. --config.eval.num_samples=50000) are allowed; the files land in DIR/eval as during
training. Nothing in checkpoints/ is written or removed.
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
  scalars. Raises CheckpointError when there is no such checkpoint."""
  from bibound_jax import assemble
  from experiments import checkpoints
  from experiments import tasks

  task = tasks.validate(config)
  nets, state, rng = assemble.initial_state(config)
  manager = checkpoints.open_manager(workdir, read_only=True)
  try:
    step = checkpoints.choose_step(manager, step)
    state, _ = checkpoints.restore(manager, state, rng, step=step, config=config)
  finally:
    manager.close()
  scalars = task.evaluator(config, nets, model=True).evaluate(state, step, workdir)
  return dict(step=step, **scalars)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected command-line arguments: {argv[1:]}')
  from bibound_jax import config_lib
  from experiments import checkpoints
  try:
    scalars = evaluate_checkpoint(FLAGS.config, FLAGS.workdir, FLAGS.step)
  except (config_lib.ConfigError, checkpoints.CheckpointError) as e:
    sys.exit(f'error: {e}')
  width = max(len(k) for k in scalars)
  for key, value in scalars.items():
    print(f'{key:<{width}}  {value}')


if __name__ == '__main__':
  app.run(main)

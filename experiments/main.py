"""Entry point: python -m experiments.main --config=configs/toy.py --workdir=DIR.

Flags:
  --config   a config file (`configs/NAME.py`, optionally `:ARG` for a variant); any field can be
             overridden, e.g. --config.train.num_steps=2000. Unknown keys and ill-typed values
             are rejected with the key named.
  --workdir  where checkpoints, metrics, TensorBoard files and figures go; rerunning with the
             same workdir resumes from the latest checkpoint.
  --compilation_cache
             JAX's persistent compilation cache (default $JAX_COMPILATION_CACHE_DIR, else
             ~/.cache/bibound_jax/xla; '' turns it off): a rerun, a resumed run or another run
             of the same config loads its compiled programs instead of compiling them again.
"""
import logging as pylogging
import os
import sys

# TensorFlow (imported by the TensorBoard writer and the TFDS pipelines) prints C++ notices
# (oneDNN, CPU instructions) at import: keep its warnings and errors only.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments import cli

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and figures.')
config_flags.DEFINE_config_file('config', None, 'Training configuration file.',
                                lock_config=True)
flags.DEFINE_string('coordinator_address', None,
                    'host:port of process 0 for a multi-process run (jax.distributed). Without '
                    'it, BIBOUND_DISTRIBUTED=1 lets JAX detect the cluster (TPU pod, SLURM).')
flags.DEFINE_integer('num_processes', None, 'Number of processes (with --coordinator_address).')
flags.DEFINE_integer('process_id', None, 'This process (with --coordinator_address).')
flags.DEFINE_string('compilation_cache', os.environ.get(
    'JAX_COMPILATION_CACHE_DIR', os.path.join('~', '.cache', 'bibound_jax', 'xla')),
                    "JAX's persistent compilation cache directory ('': no cache).")
flags.mark_flags_as_required(['config', 'workdir'])


def use_compilation_cache(path: str) -> None:
  """Keep every compiled program that took more than 0.1 s in `path` ('' : none)."""
  import jax
  if path:
    jax.config.update('jax_compilation_cache_dir', os.path.expanduser(path))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.1)


class _OwnLines(pylogging.Filter):
  """INFO lines from this project and clu's metric and progress writers only; warnings and
  errors from anywhere (orbax's per-save notes, JAX's backend probes, matplotlib's font cache
  are dropped)."""
  SOURCES = (f'{os.sep}bibound_jax{os.sep}', f'{os.sep}experiments{os.sep}',
             f'{os.sep}benchmarks{os.sep}', f'clu{os.sep}metric_writers{os.sep}',
             f'clu{os.sep}platform{os.sep}')

  def filter(self, record):
    return (record.levelno >= pylogging.WARNING
            or any(s in record.pathname for s in self.SOURCES))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected command-line arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_OwnLines())
  # Imported here so that --help and flag errors do not wait for the run loop and TensorFlow.
  import jax
  from bibound_jax import config_lib
  from bibound_jax import sharding
  from experiments import checkpoints
  from experiments import run

  use_compilation_cache(FLAGS.compilation_cache)
  sharding.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                  FLAGS.process_id)
  logging.info('JAX process %d/%d, local devices: %s', jax.process_index(), jax.process_count(),
               jax.local_devices())
  try:
    run.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (config_lib.ConfigError, checkpoints.CheckpointError, checkpoints.NonFiniteError,
          FileNotFoundError) as e:
    # Bad input (including data that is not prepared: the message names the `tfds build`
    # command) or a diverged run: one clear message, no traceback, exit status 1.
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)

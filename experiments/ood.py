"""Out-of-distribution detection with a trained energy, s(x) = -E(x).

    python -m experiments.ood --config=configs/cifar10.py --workdir=DIR \
        [--ood=svhn_cropped,cifar100,uniform,constant] [--step=N] [--num_examples=N] \
        [--data_dir=TFDS_DIR]

Restores checkpoint N (default: the latest) of the run in DIR, scores the test split of the
in-distribution set and of each OOD set, prints AUROC and AUPRC (in-distribution positive,
bibound_jax/metrics/ood.py) as a markdown table and writes DIR/eval/ood_<step>.json.

--config is the run's config, with the run's overrides; without it the config saved in the
checkpoint is used (its old keys read at their place now). Only the keys a resumed run may
change (the TFDS location data.data_dir and data.download among them: bibound_jax/config_lib.py)
may differ from the saved config. The checkpoints are opened read-only.

OOD sets: any TFDS image set of bibound_jax/data/images.py (its test split, resized to the
model's image size when it differs; the in-distribution set itself is dropped from the list),
and two synthetic sets that need no data:
  uniform   x ~ U[-1, 1] independently per pixel;
  constant  one colour per image, c ~ U[-1, 1]^3, at every pixel.
The synthetic sets have as many images as the in-distribution test set (seed 0).
"""
from __future__ import annotations

import json
import os
import sys

import jax
import ml_collections
import numpy as np
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from bibound_jax import assemble
from bibound_jax import config_lib
from bibound_jax.data import images
from bibound_jax.metrics import fid
from bibound_jax.metrics import ood
from experiments import checkpoints
from experiments import evaluation
from experiments import history

SYNTHETIC = ('uniform', 'constant')
DEFAULT_OOD = ('svhn_cropped', 'cifar100', 'uniform', 'constant')
# Keys that may differ from the checkpoint's config: where the data lives.


def synthetic_images(kind: str, n: int, shape, seed: int = 0) -> np.ndarray:
  """n float32 images of `shape` (H, W, C) in [-1, 1]: 'uniform' noise or one 'constant' colour
  per image (module docstring)."""
  rng = np.random.default_rng(seed)
  shape = tuple(shape)
  if kind == 'uniform':
    return rng.uniform(-1.0, 1.0, (n,) + shape).astype(np.float32)
  if kind == 'constant':
    colours = rng.uniform(-1.0, 1.0, (n, 1, 1, shape[-1])).astype(np.float32)
    return np.broadcast_to(colours, (n,) + shape).copy()
  raise ValueError(f'Unknown synthetic set {kind!r}; valid: {", ".join(SYNTHETIC)}.')


def ood_names(requested, in_distribution: str) -> list[str]:
  """The OOD sets to score: valid names, without the in-distribution set."""
  valid = SYNTHETIC + tuple(images.DATASETS) + tuple(images.ALIASES)
  bad = [n for n in requested if n not in valid]
  if bad:
    raise ValueError(f'Unknown OOD set(s) {", ".join(bad)}; valid: {", ".join(valid)}.')
  canonical = lambda n: images.ALIASES.get(n, n)
  return [n for n in requested if canonical(n) != canonical(in_distribution)]


def restore(workdir: str, config=None, step: int | None = None):
  """(config, energy module, energy params (host, leading seed axis), step) from the run's
  checkpoint."""
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    raise checkpoints.CheckpointError(
        f'No checkpoints in {workdir} (looked for {os.path.join(workdir, "checkpoints")}).')
  manager = checkpoints.open_manager(workdir, read_only=True)
  try:
    step = checkpoints.choose_step(manager, step)
    if config is None:
      config = ml_collections.ConfigDict(config_lib.upgrade(checkpoints.saved_config(
          manager, step), checkpoints.sections()))
      config.data.shape = tuple(config.data.shape)
    else:
      checkpoints.check_config(manager, step, config)
    nets, abstract, rng = assemble.abstract_state(config)
    state, _ = checkpoints.restore(manager, abstract, rng, step=step)
  finally:
    manager.close()
  return config, nets.energy, jax.device_get(state.energy.params), step


def evaluate_ood(workdir: str, config=None, ood_sets=DEFAULT_OOD, step: int | None = None,
                 num_examples: int | None = None, data_dir: str | None = None) -> dict:
  """Score the in-distribution test split and each OOD set; write workdir/eval/ood_<step>.json.

  `data_dir` (default: config.data.data_dir) is where TFDS finds the data sets.

  Returns {'step', 'in_distribution', 'num_in', 'energy_in', 'ood': {name: {'auroc', 'auprc',
  'num', 'energy'}}} ('energy': the mean E of the set); for a run of several seeds every
  number is the mean over the seeds' energies, with `<key>/std` and `<key>/seed_<s>` beside it
  (experiments/history.py)."""
  config, energy_model, params, step = restore(workdir, config, step)
  seeds = assemble.seeds(config)
  name, shape = config.data.name, tuple(config.data.shape)
  batch = config.eval.batch_size
  data_dir = data_dir or config.data.data_dir or None
  download = config.data.download
  energy = evaluation.jit_energy(energy_model)

  def scores(images_):
    """-E of every image under each seed's energy: (seeds, N)."""
    images_ = np.asarray(images_)
    return np.stack([-fid.compute_features(energy, assemble.seed_slice(params, k),
                                           [images_], batch)
                     for k in range(len(seeds))])

  spec = images.resolve(name)
  s_in = scores(images.load_images(name, spec.eval_split, num_examples, batch, data_dir,
                                   download))
  result = {'step': step, 'in_distribution': name, 'num_in': int(s_in.shape[1]),
            'energy_in': history.over_seeds([{'e': -s.mean()} for s in s_in], seeds)['e'],
            'ood': {}}
  for ood_name in ood_names(ood_sets, name):
    if ood_name in SYNTHETIC:
      s_out = scores(synthetic_images(ood_name, s_in.shape[1], shape))
    else:
      ood_spec = images.resolve(ood_name)
      s_out = scores(images.load_images(ood_name, ood_spec.eval_split, num_examples, batch,
                                        data_dir, download, image_size=shape[0]))
    per_seed = [dict(ood.ood_metrics(a, b), energy=float(-np.mean(b)))
                for a, b in zip(s_in, s_out)]
    result['ood'][ood_name] = dict(history.over_seeds(per_seed, seeds), num=int(s_out.shape[1]))
    logging.info('OOD %s vs %s: %s', name, ood_name, result['ood'][ood_name])
  with history.atomic_open(os.path.join(history.eval_dir(workdir), f'ood_{step}.json')) as f:
    json.dump(result, f, indent=1)
  return result


def format_result(result: dict) -> str:
  """The markdown table of `evaluate_ood`'s result, with a header line."""
  head = (f"{result['in_distribution']} test ({result['num_in']} images, mean E "
          f"{result['energy_in']:.3f}) vs OOD sets, score -E(x), checkpoint {result['step']}:")
  return head + '\n' + ood.ood_table(result['ood'], columns=['auroc', 'auprc', 'energy'])


def command(workdir: str, config=None, ood_sets=DEFAULT_OOD, step: int | None = None,
            num_examples: int | None = None, data_dir: str | None = None) -> int:
  """`evaluate_ood`, then print the table (0); bad input or missing data: 'error: ...' (1)."""
  try:
    result = evaluate_ood(workdir, config, ood_sets, step, num_examples, data_dir)
  except (FileNotFoundError, ValueError, checkpoints.CheckpointError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(format_result(result))
  print(f"Written: {os.path.join(workdir, 'eval', 'ood_%d.json' % result['step'])}")
  return 0


def _define_flags() -> None:
  # Defined only when run as a program, so importing this module next to experiments.main
  # (which defines --workdir and --config too) cannot clash.
  flags.DEFINE_string('workdir', None, 'The run directory (holding checkpoints/).')
  config_flags.DEFINE_config_file('config', None,
                                  "The run's config (default: the checkpoint's).",
                                  lock_config=True)
  flags.DEFINE_list('ood', list(DEFAULT_OOD), 'OOD sets: TFDS image sets, uniform, constant.')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
  flags.DEFINE_integer('num_examples', None, 'Images per TFDS set (default: the whole split).')
  flags.DEFINE_string('data_dir', None, "TFDS data_dir (default: the config's data.data_dir).")
  flags.mark_flag_as_required('workdir')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected command-line arguments: {argv[1:]}')
  f = flags.FLAGS
  sys.exit(command(f.workdir, f.config, f.ood, f.step, f.num_examples, f.data_dir))


if __name__ == '__main__':
  _define_flags()
  app.run(main)

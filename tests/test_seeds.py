"""Several seeds in one run: seed k of N follows the run of seed config.seed + k alone; logs,
evaluations and checkpoints hold every seed; a NaN in one seed names it or drops only its
update."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bibound_jax import assemble
from bibound_jax import train
from bibound_jax.data import toy as toy_data
from experiments import checkpoints
from experiments import run
from experiments import tasks
from test_run import _params, small_config


def _train(cfg, steps, step=None):
  """`steps` iterations from cfg's initial state and data (with `step`, a train step built
  for a config that differs from cfg at most in its seed: the seed only enters through the
  initial state, the data and the keys)."""
  _, state, rng = assemble.initial_state(cfg)
  step = step or train.make_train_step(cfg, donate=False)
  batch_at = tasks.get_task(cfg).batches(cfg, None, 0)
  for t in range(steps):
    state, _ = step(state, batch_at(t), rng)
  return state


@pytest.mark.parametrize('preset', ['sv+gp', 'mi+diff'])
def test_two_seeds_are_the_two_single_seed_runs(preset):
  """Same initialisation, data, latents and keys: seed k of a 2-seed run is the run of seed
  k alone up to float rounding (vmapped kernels may sum in another order), with BatchNorm."""
  cfg = small_config()
  cfg.bounds.lower, cfg.bounds.upper = {'sv+gp': ('sv', 'gp'), 'mi+diff': ('mi', 'diff')}[preset]
  cfg.train.batch_size = 32
  cfg.train.num_seeds = 2
  # Adam with b1 = 0 and eps 1e-6 takes sign-like steps, which turn rounding into O(lr)
  # moves of parameters whose gradient is ~0; eps = 1 makes the update ~ lr g, so that equal
  # up to rounding is a meaningful check (as in tests/multidevice_worker.py).
  cfg.optim.eps = 1.0
  cfg.optim.lr_energy = cfg.optim.lr_generator = 1e-2
  together = _train(cfg, 3)
  assert together.generator.batch_stats is not None
  alone_step = None
  for k in (0, 1):
    alone_cfg = cfg.copy_and_resolve_references()
    alone_cfg.seed, alone_cfg.train.num_seeds = k, 1
    alone_step = alone_step or train.make_train_step(alone_cfg, donate=False)   # one trace
    alone = assemble.seed_slice(_train(alone_cfg, 3, alone_step), 0)
    mine = assemble.seed_slice(together, k)
    # Rounding (vmapped kernels sum in another order) grows through the entropy gradient
    # (measured: 5e-5 after 3 steps); a different seed differs by O(1).
    variables = lambda s: (s.energy.params, s.generator.params, s.generator.batch_stats)
    for a, b in zip(jax.tree.leaves(variables(mine)), jax.tree.leaves(variables(alone))):
      np.testing.assert_allclose(a, b, rtol=1e-3, atol=3e-4)
  # ... and the two seeds are different runs.
  a, b = (assemble.seed_slice(together, k).generator.params for k in (0, 1))
  assert float(jnp.max(jnp.abs(a['Dense_0']['kernel'] - b['Dense_0']['kernel']))) > 1e-2


def test_three_seeds_log_evaluate_and_resume_bit_identically(tmp_path):
  cfg = small_config(num_steps=20, num_seeds=3, log_every=10, eval_every=20)
  cfg.seed = 4
  straight = run.train_and_evaluate(cfg, str(tmp_path / 'straight'))
  # The interrupted-and-resumed run is compared by its parameters only: not evaluated.
  first = small_config(num_steps=10, num_seeds=3, log_every=10)
  first.seed = 4
  run.train_and_evaluate(first, str(tmp_path / 'resumed'))
  first.train.num_steps = 20
  resumed = run.train_and_evaluate(first, str(tmp_path / 'resumed'))
  assert jax.tree.leaves(resumed.step)[0].shape == (3,)
  jax.tree.map(np.testing.assert_array_equal, _params(resumed), _params(straight))
  # Per-seed scalars, their mean and standard deviation, under names a filter can pick.
  with open(tmp_path / 'straight' / 'metrics.jsonl') as f:
    record = json.loads(f.readlines()[-1])
  per_seed = [record[f'energy_real/seed_{s}'] for s in (4, 5, 6)]
  assert record['energy_real'] == pytest.approx(np.mean(per_seed))
  assert record['energy_real/std'] == pytest.approx(np.std(per_seed))
  assert len(set(per_seed)) == 3
  with open(tmp_path / 'straight' / 'eval' / 'metrics_20.json') as f:
    evaluation = json.load(f)
  nll = [evaluation[f'nll/seed_{s}'] for s in (4, 5, 6)]
  assert evaluation['nll'] == pytest.approx(np.mean(nll))
  assert 'folded_fraction/std' in evaluation and evaluation['wall_s'] > 0
  arrays = np.load(tmp_path / 'straight' / 'eval' / 'toy_eval.npz')
  assert arrays['samples'].shape == (3, 500, 2) and list(arrays['seeds']) == [4, 5, 6]
  # A run's seeds are fixed when it starts.
  other = small_config(num_steps=30, num_seeds=2)
  other.seed = 4
  with pytest.raises(checkpoints.CheckpointError,
                     match=r'train.num_seeds: 3 in the checkpoint, 2 now(.|\n)*new --workdir'):
    run.train_and_evaluate(other, str(tmp_path / 'straight'))


def _nan_in_seed(seed_index, step_to_break):
  real = toy_data.batch_fn

  def batch_fn(*args):
    batch_at = real(*args)

    def broken(step):
      batch = batch_at(step)
      bad = jnp.logical_and(step == step_to_break, jnp.arange(batch.shape[0]) == seed_index)
      return jnp.where(bad[:, None, None, None], jnp.nan, batch)
    return broken
  return batch_fn


def test_nan_in_one_seed_names_it_or_drops_only_its_update(tmp_path, monkeypatch):
  monkeypatch.setattr(toy_data, 'batch_fn', _nan_in_seed(1, 16))   # iteration 17, seed 1
  cfg = small_config(num_steps=30, num_seeds=2, checkpoint_every=10)
  with pytest.raises(run.NonFiniteError, match=r'iteration 17 of seed 1: .*energy_real'):
    run.train_and_evaluate(cfg, str(tmp_path / 'stop'))
  cfg.train.nonfinite = 'skip'
  skipped = run.train_and_evaluate(cfg, str(tmp_path / 'skip'))
  np.testing.assert_array_equal(np.asarray(skipped.skipped), [0, 1])
  monkeypatch.undo()
  clean = run.train_and_evaluate(cfg, str(tmp_path / 'clean'))
  # Seed 0 never saw the NaN: its run is untouched; seed 1 lost one update and differs.
  jax.tree.map(np.testing.assert_array_equal, _params(assemble.seed_slice(skipped, 0)),
               _params(assemble.seed_slice(clean, 0)))
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(_params(skipped)))
  one = lambda state: jax.tree.leaves(assemble.seed_slice(state, 1).generator.params)[0]
  assert float(jnp.max(jnp.abs(one(skipped) - one(clean)))) > 0

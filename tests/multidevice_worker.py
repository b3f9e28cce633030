"""Worker for tests/test_multidevice.py, run in a subprocess so that JAX starts with several
(fake) CPU devices or inside a multi-process cluster.

  python tests/multidevice_worker.py compare OUT.npz
      (XLA_FLAGS=--xla_force_host_platform_device_count=4) train a few steps on a 4-device mesh
      and on a 1-device mesh with the same global batch; save both parameter sets.
  python tests/multidevice_worker.py train WORKDIR OUT.npz [COORDINATOR NUM_PROCESSES PROCESS_ID]
      run the full loop for $MD_STEPS (default 10) iterations, optionally as one process of a
      jax.distributed cluster, and save the final parameters ($MD_EVAL=0: no evaluation).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def small_config(num_steps):
  from configs import toy
  cfg = toy.get_config('authors')
  cfg.train.batch_size = 64
  cfg.train.num_steps = num_steps
  cfg.train.log_every = 5
  cfg.train.eval_every = 1000
  cfg.train.checkpoint_every = 10
  cfg.train.steps_per_call = 1
  cfg.eval.num_samples = 500
  cfg.eval.grid_spacing = 0.05
  cfg.eval.bound_samples = 100
  # Adam with b1 = 0 and a tiny eps takes sign-like steps, which turn rounding differences
  # (a different reduction order over devices) into O(lr) differences for parameters whose
  # gradient is ~0. eps = 1 makes the update ~ lr * g, so "equal up to float32 rounding" is a
  # meaningful check; the larger lr makes any real error (wrong averaging, per-device BatchNorm
  # statistics, repeated latents) stand far above that rounding.
  cfg.optim.eps = 1.0
  cfg.optim.lr_energy = cfg.optim.lr_generator = 1e-2
  return cfg


def flat_params(state):
  import jax
  import numpy as np
  leaves = jax.tree_util.tree_flatten_with_path(
      jax.device_get((state.energy.params, state.generator.params, state.generator.batch_stats)))
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves[0]}


def main(argv):
  import numpy as np
  mode = argv[1]
  if mode == 'compare':
    import jax
    from bibound_jax import assemble, sharding, train
    from experiments import tasks
    assert jax.device_count() == 4, jax.devices()
    out = {}
    # Two steps each (rounding differences grow 10-100x per step through the entropy
    # gradient: measured 3e-6, 3e-5, 2e-4, 3e-2 after 1-4 steps on one seed), with the
    # generator solving its own SV vectors or sharing them with the energy update
    # (bounds.sv.share_vectors); 2 and 4 seeds take a mesh axis of 2 (x 2 for the data) and 4.
    for suffix, share, steps, seeds in (('', False, 2, 1), ('_2seeds_shared', True, 2, 2),
                                        ('_4seeds', False, 2, 4)):
      cfg = small_config(steps)
      cfg.bounds.sv.share_vectors = share
      cfg.train.num_seeds = seeds
      for name, devices in (('four', jax.devices()), ('one', jax.devices()[:1])):
        mesh = sharding.make_mesh(devices, seeds)
        assert mesh.shape['seeds'] == (seeds if name == 'four' else 1), mesh.shape
        # Every seed starts from the initialisation the tolerances of
        # test_multidevice._assert_close were measured at; data and latents are the seeds'.
        one = train.create_state(cfg, assemble.networks(cfg), jax.random.key(0))
        state = jax.tree.map(lambda *a: jax.numpy.stack(a), *([one] * seeds))
        state = sharding.replicate(state, mesh, sharding.seeded(mesh))
        step = train.make_train_step(cfg, mesh=mesh)
        batch_at = tasks.get_task(cfg).batches(cfg, mesh, 0)
        keys = jax.random.split(jax.random.key(1), seeds)
        for t in range(cfg.train.num_steps):
          batch = batch_at(t)
          assert len(batch.sharding.device_set) == len(devices)
          state, _ = step(state, batch, keys)
        out.update({f'{name}{suffix}/{k}': v for k, v in flat_params(state).items()})
    np.savez(argv[2], **out)
  elif mode == 'train':
    from bibound_jax import sharding
    if len(argv) > 4:
      sharding.initialize_distributed(argv[4], int(argv[5]), int(argv[6]))
    from experiments import run
    cfg = small_config(int(os.environ.get('MD_STEPS', '10')))
    if os.environ.get('MD_EVAL') == '0':
      cfg.train.eval_every = 0
    state = run.train_and_evaluate(cfg, argv[2])
    np.savez(argv[3], **flat_params(state))


if __name__ == '__main__':
  main(sys.argv)

"""Worker for tests/test_multidevice.py, run in a subprocess so that JAX starts with several
(fake) CPU devices or inside a multi-process cluster.

  python tests/multidevice_worker.py compare OUT.npz
      (XLA_FLAGS=--xla_force_host_platform_device_count=4) train a few steps on a 4-device mesh
      and on a 1-device mesh with the same global batch; save both parameter sets.
  python tests/multidevice_worker.py train WORKDIR OUT.npz [COORDINATOR NUM_PROCESSES PROCESS_ID]
      run the full loop for $MD_STEPS (default 10) iterations, optionally as one process of a
      jax.distributed cluster, and save the final parameters.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def small_config(num_steps):
  from configs import toy
  cfg = toy.get_config()
  cfg.train.batch_size = 64
  cfg.train.num_steps = num_steps
  cfg.train.log_every = 5
  cfg.train.eval_every = 1000
  cfg.train.checkpoint_every = 10
  cfg.eval.num_samples = 500
  cfg.eval.grid_spacing = 0.05
  cfg.eval.gp_samples = 100
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
    # Six steps with the generator solving its own SV vectors; two with them shared from the
    # energy update (bounds.sv.share_vectors), whose rounding differences grow ~25x per step.
    for suffix, share, steps in (('', False, 6), ('_shared', True, 2)):
      cfg = small_config(steps)
      cfg.bounds.sv.share_vectors = share
      for name, devices in (('four', jax.devices()), ('one', jax.devices()[:1])):
        mesh = sharding.make_mesh(devices)
        # The initialisation the tolerances of test_multidevice._assert_close were measured at.
        state = train.create_state(cfg, assemble.networks(cfg), jax.random.key(0))
        state = sharding.replicate(state, mesh)
        step = train.make_train_step(cfg, mesh=mesh)
        batch_at = tasks.get_task(cfg).batches(cfg, mesh, 0)
        for t in range(cfg.train.num_steps):
          batch = batch_at(t)
          assert len(batch.sharding.device_set) == len(devices)
          state, _ = step(state, batch, jax.random.key(1))
        out.update({f'{name}{suffix}/{k}': v for k, v in flat_params(state).items()})
    np.savez(argv[2], **out)
  elif mode == 'train':
    from bibound_jax import sharding
    if len(argv) > 4:
      sharding.initialize_distributed(argv[4], int(argv[5]), int(argv[6]))
    from experiments import run
    state = run.train_and_evaluate(small_config(int(os.environ.get('MD_STEPS', '10'))), argv[2])
    np.savez(argv[3], **flat_params(state))


if __name__ == '__main__':
  main(sys.argv)

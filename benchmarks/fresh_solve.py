"""The generator update's own LOBPCG solve (r1) against the solve shared with the GP (sv+gp).

    python -m benchmarks.fresh_solve                      # this checkout
    git worktree add /tmp/old ac432f9 && python -m benchmarks.fresh_solve --root=/tmp/old

Both pairings use LOBPCG with block 4 and 10 iterations and `latent_chunk` 8 on the StackedMNIST
DCGAN (configs/stackedmnist.py:cnn, batch 32). With sv+gp the energy update solves for the s_1
vectors and the generator update reuses them; with r1 the generator update solves itself. Prints
seconds per training iteration (median of 3, after compiling) of the code under `--root`, which
may be an older checkout (docs/performance.md: before ac432f9's successor, r1 cost 1.84x sv+gp).
"""
from __future__ import annotations

import os
import sys
import time

from absl import app
from absl import flags

flags.DEFINE_string('root', '', 'Repository checkout to time (default: this one).')
flags.DEFINE_integer('latent_chunk', 8, 'bounds.jacobian.latent_chunk (0: all latents at once).')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  root = os.path.abspath(FLAGS.root or os.path.dirname(os.path.dirname(__file__)))
  sys.path.insert(0, root)
  for name in [m for m in sys.modules if m.split('.')[0] in ('bibound_jax', 'configs')]:
    del sys.modules[name]
  import jax   # pylint: disable=import-outside-toplevel
  import numpy as np   # pylint: disable=import-outside-toplevel
  from bibound_jax import train   # pylint: disable=import-outside-toplevel
  from configs import stackedmnist   # pylint: disable=import-outside-toplevel
  new = os.path.exists(os.path.join(root, 'bibound_jax', 'assemble.py'))
  for preset in ('sv+gp', 'r1'):
    cfg = stackedmnist.get_config(f'cnn,{preset}')
    cfg.train.batch_size = 32
    if new:
      from bibound_jax import assemble   # pylint: disable=import-outside-toplevel
      # The Jacobian settings: config.bounds.jacobian, or config.bounds.sv before they moved.
      section = cfg.bounds.jacobian if 'jacobian' in cfg.bounds else cfg.bounds.sv
      for key, value in dict(estimator='lobpcg', num_iters=10, block_size=4, num_latents=0,
                             latent_chunk=FLAGS.latent_chunk).items():
        assert key in section, key
        section[key] = value
      _, state, rng = assemble.initial_state(cfg)
      batch = jax.random.uniform(jax.random.key(1), (1, 1, 32, 28, 28, 3), minval=-1, maxval=1)
    else:   # the layout before the bounds became components (ac432f9)
      from bibound_jax import models, sharding   # pylint: disable=import-outside-toplevel
      cfg.bounds.update(estimator='lobpcg', num_iters=10, block_size=4, sv_batch=0,
                        latent_chunk=FLAGS.latent_chunk)
      e, g = models.create_models(cfg.model, cfg.data.shape)
      state = sharding.replicate(train.create_state(cfg, e, g, jax.random.key(0),
                                                    cfg.data.shape), sharding.make_mesh())
      rng = jax.random.key(2)
      batch = jax.random.uniform(jax.random.key(1), (1, 32, 28, 28, 3), minval=-1, maxval=1)
    step = train.make_train_step(cfg, donate=False)
    jax.block_until_ready(step(state, batch, rng))
    times = []
    for _ in range(3):
      t = time.perf_counter()
      jax.block_until_ready(step(state, batch, rng))
      times.append(time.perf_counter() - t)
    print(f'{preset}: {float(np.median(times)):.2f} s per iteration '
          f'({"current layout" if new else "ac432f9 layout"}, {root})', flush=True)


if __name__ == '__main__':
  app.run(main)

"""Are a 2-D toy checkpoint's folded latents real, or float32 rounding? det J in both precisions:
the float32 and float64 shares of docs/studies/toy_baselines.md.

    python -m experiments.studies.fold_precision \
        --workdir=workdirs/bench_toy/25gaussians/wgan_gp --preset=wgan_gp

Restores the latest checkpoint of a toy run (`configs/toy.py:<preset>`, all its seeds),
and for 10,000 latents z ~ N(0, I) prints, per seed, the share with det J_G(z) < 0 computed in
float32 (as the toy evaluation does) and in float64 (parameters and latents cast up). A flow is
injective in exact arithmetic: negative signs in float32 only are rounding.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags

from experiments.studies import toy_checkpoint

toy_checkpoint.define_flags()
FLAGS = flags.FLAGS


def main(argv):
  del argv
  # pylint: disable=import-outside-toplevel
  from bibound_jax import assemble
  from bibound_jax.bounds import entropy
  from bibound_jax.generator import Generator
  cfg, _, state, step = toy_checkpoint.restore_from_flags()
  z = jax.random.normal(jax.random.key(0), (10_000, cfg.model.generator.latent_dim))

  def negative_share(fn, variables, latents):
    signs = jax.vmap(lambda zi: jnp.linalg.slogdet(entropy.jacobian(fn, variables, zi))[0])(
        latents)
    return float(np.mean(np.asarray(signs) < 0))

  print(f'{FLAGS.workdir} (iteration {step}): share of latents with det J < 0')
  for k, seed in enumerate(assemble.seeds(cfg)):
    gen = Generator(assemble.seed_slice(state, k).generator)
    fn, variables = gen.per_sample(), gen.jacobian_variables(gen.params, z, 'batch')
    f32 = negative_share(fn, variables, z)
    with jax.enable_x64(True):
      f64 = negative_share(fn, jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables),
                           jnp.asarray(z, jnp.float64))
    print(f'  seed {seed}: float32 {f32:.4f}, float64 {f64:.4f}')


if __name__ == '__main__':
  app.run(main)

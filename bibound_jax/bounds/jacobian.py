"""The generator-Jacobian settings shared by the SV entropy bound and the GP upper bound:
config.bounds.jacobian, declared here once (`SECTION`); `entropy.JacobianTerms` applies them.

    estimator     the log-volume / s_1 estimator: exact_logdet, exact_smin, lobpcg, inverse_cg
                  (bounds/entropy.py; docs/bounds.md, "The SV entropy bound");
    num_iters, block_size, cg_iters   the iterative estimators' settings;
    num_latents   the Jacobian terms on every (B / num_latents)-th latent of the batch (0: all).
                  Both the entropy E_z[log vol J(z)] and the GP E_z[1/2 (a - s)^2] are means
                  over z, so a subset estimates them without bias at num_latents / B of the
                  Jacobian cost; the stride keeps the subset spread over the batch shards;
    latent_chunk  latents per vmapped estimator call (`entropy.map_latents`; 0: all at once);
    batch_norm    BatchNorm statistics inside the Jacobian: 'batch' (those of the batch that
                  made the samples) or 'running' (the authors'; bibound_jax/generator.py).

A generator with a closed-form log-volume (the spline flow, the flow mixture:
`generator.PerSample`) gives exact_logdet and the GP score by that formula.
"""
from __future__ import annotations

from bibound_jax import config_schema
from bibound_jax.bounds import entropy


def check(config) -> None:
  config_schema.choice(config, 'bounds.jacobian.estimator', entropy.ESTIMATORS)
  config_schema.choice(config, 'bounds.jacobian.batch_norm', ('batch', 'running'))
  config_schema.positive(config, 'bounds.jacobian.num_iters', 'bounds.jacobian.block_size',
                         'bounds.jacobian.cg_iters')
  config_schema.positive(config, 'bounds.jacobian.num_latents', 'bounds.jacobian.latent_chunk',
                         allow_zero=True)
  n, batch = config.bounds.jacobian.num_latents, config.train.batch_size
  if n and batch % n:
    raise config_schema.ConfigError(
        f'config.bounds.jacobian.num_latents = {n} must be 0 (the whole batch) or a divisor of '
        f'config.train.batch_size = {batch}.')


_OLD = ('estimator', 'num_iters', 'block_size', 'cg_iters', 'num_latents', 'latent_chunk')
SECTION = config_schema.Section(
    'bounds.jacobian',
    defaults=dict(estimator='exact_smin', num_iters=2, block_size=1, cg_iters=10,
                  num_latents=0, latent_chunk=0, batch_norm='batch'),
    check=check,
    moved={**{f'bounds.sv.{k}': f'bounds.jacobian.{k}' for k in _OLD},
           'bounds.sv.jacobian_bn': 'bounds.jacobian.batch_norm',
           # the flat bounds section of the first sessions
           **{f'bounds.{k}': f'bounds.jacobian.{k}' for k in _OLD if k != 'num_latents'},
           'bounds.sv_batch': 'bounds.jacobian.num_latents',
           'bounds.jacobian_bn': 'bounds.jacobian.batch_norm'},
    # It switched between the closed form and the dense Jacobian: the same values up to rounding.
    removed={'bounds.sv.generator_log_det': (config_schema.ANY, 'e83a7b6')})

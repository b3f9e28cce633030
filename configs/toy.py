"""2-D toy experiments: 25 Gaussians, swiss roll, two moons.

    python -m experiments.main --config=configs/toy.py --workdir=/tmp/toy
    python -m experiments.main --config=configs/toy.py:swiss_roll,r1 --workdir=/tmp/toy_r1
    python -m experiments.main --config=configs/toy.py:authors --workdir=/tmp/toy_authors

The default pairs an injective generator with an energy that can sharpen (docs/studies/toy.md): a spline coupling flow G with the exact log-determinant entropy (the SV bound's
injectivity assumption holds: no folding), an energy whose output scale is exp(log_scale)
with a confining quadratic outside the data, Adam at lr_E 1e-3 / lr_G 2e-3 decaying by a cosine
to 2% over 30,000 iterations, and twice the authors' GP weight. `authors` restores the authors'
toy: PReLU+BatchNorm MLP generator (it folds the plane), exact d log s_1 entropy, linear scale,
constant lr 2e-4, GP weight 0.7 (2307 + t)^-0.55, 150k iterations.

The optional argument is a comma-separated list of a data set name, `authors` and/or a bound
preset:
  sv+gp    (default) SV entropy lower bound for G, GP upper bound for E: bidirectional training
  mi+diff  MI entropy lower bound (output noise + Barber-Agakov encoder), diffusion upper bound
           with a time-conditioned energy and an energy penalty (bounds.diff.energy_l2 0.1)
  none     SV lower bound only, no energy regulariser (MEG/VERA-style minimax; diverges)
  r1       SV lower bound, zero-centred R1 penalty on the data (the authors' EBM_0GP)
  wgan_gp  no entropy term, WGAN-GP critic penalty
Any field can be overridden on the command line, e.g. --config.train.num_steps=2000.
"""
import ml_collections

from configs import common

DATASETS = ('25gaussians', 'swiss_roll', 'two_moons')


def _dataset(name):
  def set_name(config):
    config.data.name = name
  return set_name


# Radius of the ball that holds each data set's samples (their largest norm is 2.07, 3.51 and
# 1.87): the energy's confinement starts a little outside, the flow's splines act inside
# [-r, r]^2 (r = model.generator.spline_range), which must hold the data.
CONFINE_RADIUS = {'25gaussians': 2.5, 'swiss_roll': 4.0, 'two_moons': 2.5}
SPLINE_RANGE = {'25gaussians': 3.0, 'swiss_roll': 4.0, 'two_moons': 3.0}


def authors(config):
  """The authors' toy networks and optimiser: BatchNorm MLP G with exact d log s_1, linear
  energy scale, no confinement, GP weight 0.7 (2307 + t)^-0.55, constant lr 2e-4 for 150k
  iterations."""
  config.bounds.jacobian.estimator = 'exact_smin'
  config.bounds.gp.weight = 0.7
  config.model.generator = ml_collections.ConfigDict({
      'name': 'mlp', 'hidden': (100, 100), 'latent_dim': 2, 'output_activation': 'none'})
  config.model.energy.update(scale_param='linear', confine=0.0)
  config.optim.update(lr_energy=2e-4, lr_generator=2e-4, lr_schedule='constant')
  config.train.update(num_steps=150_000, eval_every=10_000, checkpoint_every=10_000)


def mixture(config):
  """A generator that can leave gaps: a mixture of 25 spline flows, each with its own shift and
  scale, chosen by a 3rd latent coordinate (models/flow.py, FlowMixtureGenerator), with the
  mixture's exact entropy (docs/bounds.md, "A mixture of flows")."""
  config.model.generator = ml_collections.ConfigDict({
      'name': 'flow_mixture', 'latent_dim': 3, 'components': 25, 'entropy': 'exact',
      'init_spread': 1.5, 'init_scale': 0.1, 'init_shift': 'uniform', 'layers': 2,
      'hidden': (64, 64), 'num_bins': 16, 'spline_range': 3.0})


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = common.base_config()
  # The exact log-determinant of the flow's 2 x 2 Jacobian. The GP weight follows the authors'
  # schedule a (2307 + t)^-0.55, margin 0, at twice their a = 0.7: with 0.7, w GP fell below
  # KL(p_g || p_theta) between 10k and 20k iterations on 2 of 3 seeds; with 1.4 it falls
  # below less often and by less: on 14 of 45 seed-evaluations from 10k on (seeds 0-8), by
  # at most 0.18 nats; with 2.0 only at 10k, at the cost of modes (docs/studies/toy.md, "The upper
  # bound is a surrogate and fails early"). The flow's log |det J| comes in closed form (generator.PerSample).
  config.bounds.jacobian.estimator = 'exact_logdet'
  config.bounds.gp.schedule = 'decay'
  config.bounds.gp.weight = 1.4
  config.bounds.gp.margin = 0.0
  # The diffusion bound's own weight, (T - t_min) DSM: with a time embedding smooth in t
  # (model.energy.time_scale = 1) it keeps E(., 0) tied to what DSM constrains
  # (docs/studies/toy_mi_diff.md).
  config.bounds.diff.weight = 1.0
  # With the diffusion bound only: a (mean E(real)^2 + mean E(fake)^2), a = 0.1, ties the
  # depths of E's wells; without it the energy runs away once G reaches the modes (at 150k:
  # largest E(fake) - E(real) 196 +- 130 without, 3.6 +- 0.4 with; docs/studies/toy_mi_diff.md, rows 13-14).
  config.bounds.diff.energy_l2 = 0.1
  config.train.steps_per_call = 10   # a toy step is ~3 ms on CPU, a third of it dispatch

  config.data = ml_collections.ConfigDict()
  config.data.name = '25gaussians'
  config.data.shape = (2,)

  config.model = ml_collections.ConfigDict()
  # Spectrally normalised as the authors' toy energy (their `sn=True` default); its output
  # scale exp(log_scale) and its PReLU slopes set its steepness; a quadratic confinement
  # outside the data keeps exp(-E) normalisable (for the time-conditioned energy of the
  # diffusion bound: at every t).
  config.model.energy = ml_collections.ConfigDict({
      'name': 'mlp', 'hidden': (100, 100), 'spectral_norm': True, 'time_scale': 1.0,
      'scale_param': 'exp', 'confine': 10.0, 'confine_radius': None})
  config.model.generator = ml_collections.ConfigDict({
      'name': 'flow', 'latent_dim': 2, 'layers': 2, 'hidden': (64, 64), 'num_bins': 16,
      'spline_range': None})
  config.optim.update(lr_energy=1e-3, lr_generator=2e-3, lr_schedule='cosine',
                      lr_final_fraction=0.02)
  config.train.update(num_steps=30_000, eval_every=5_000, checkpoint_every=5_000)

  config.eval = ml_collections.ConfigDict()
  config.eval.num_samples = 10_000     # generator and data samples for metrics and plots
  config.eval.grid_spacing = 0.01      # quadrature grid over [-L, L]^2, L >= 2
  config.eval.bound_samples = 2_000    # data points and latents of the upper term at a step
  # Compile the evaluation in a background thread while the train step compiles
  # (experiments/evaluation.py, start_warm_up; docs/performance.md, "Start-up").
  config.eval.warm_up = True

  common.parse_arg(config, arg, 'configs/toy.py',
                   {**{name: _dataset(name) for name in DATASETS}, 'authors': authors,
                    'mixture': mixture})
  # Set by data set unless given: the flow's spline interval and the confinement radius.
  if config.model.energy.confine_radius is None:
    config.model.energy.confine_radius = CONFINE_RADIUS[config.data.name]
  if 'spline_range' in config.model.generator and config.model.generator.spline_range is None:
    config.model.generator.spline_range = SPLINE_RANGE[config.data.name]
  return config

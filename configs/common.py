"""Config sections shared by every experiment: seed, bounds, optimiser and training loop.

`base_config()` holds the shared defaults (the authors' code where known); each
`configs/<name>.py` starts from it and sets its data, networks and evaluation. Every bound's
section (config.bounds.<name>) comes from the bound's own defaults (bibound_jax/bounds/).
`parse_arg` reads the comma-separated argument of `--config=configs/<name>.py:ARG`.
"""
from typing import Callable, Mapping

import ml_collections

from bibound_jax import bounds
from bibound_jax import sampling

# Bound pairings by name: (bounds.lower, bounds.upper).
PRESETS = {
    'sv+gp': ('sv', 'gp'),       # SV entropy lower bound for G, GP upper bound for E
    'mi+diff': ('mi', 'diff'),   # MI lower bound (output noise + encoder), diffusion upper bound
    'none': ('sv', 'none'),      # lower bound only (MEG/VERA-style minimax; diverges)
    'r1': ('sv', 'r1'),          # SV lower bound, zero-centred R1 penalty on data (EBM_0GP)
    'wgan_gp': ('none', 'wgan_gp'),  # no entropy term, WGAN-GP critic penalty
}


def base_config() -> ml_collections.ConfigDict:
  """seed, bounds, optim and train sections with the shared defaults."""
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.bounds = ml_collections.ConfigDict()
  config.bounds.lower = 'sv'
  config.bounds.upper = 'gp'
  # Entropy weight in the generator loss; 1 keeps L_lo a bound (a warning is logged otherwise).
  config.bounds.lambda_h = 1.0
  for name, defaults in bounds.sections().items():
    config.bounds[name] = ml_collections.ConfigDict(defaults)

  config.optim = ml_collections.ConfigDict()
  config.optim.lr_energy = 2e-4
  config.optim.lr_generator = 2e-4
  config.optim.lr_mi_net = 2e-4          # the MI network (bounds.lower = 'mi')
  config.optim.b1 = 0.0
  config.optim.b2 = 0.9
  config.optim.eps = 1e-6
  config.optim.grad_clip = 0.0           # global-norm clipping (0: none)
  config.optim.energy_steps = 1          # energy updates per generator update
  # 'constant', or 'cosine': each learning rate decays from its value to lr_final_fraction of
  # it over train.num_steps iterations (half a cosine period; train.make_optimizer).
  config.optim.lr_schedule = 'constant'
  config.optim.lr_final_fraction = 0.02

  config.train = ml_collections.ConfigDict()
  # Seeds trained at once, config.seed + k for k < num_seeds: one compiled step runs them all
  # (vmapped); each follows the run of its seed alone. Metrics and evaluations are reported per
  # seed and as mean and standard deviation over the seeds.
  config.train.num_seeds = 1
  config.train.batch_size = 200
  config.train.num_steps = 150_000
  config.train.log_every = 500
  config.train.eval_every = 10_000       # 0: no evaluation (score checkpoints later with
                                         # python -m experiments.evaluate)
  config.train.checkpoint_every = 10_000
  config.train.keep_checkpoints = 3
  # Warm start: 'DIR' or 'DIR@STEP' (default: its latest checkpoint) of another run. A fresh
  # workdir starts from that checkpoint's state, PRNG key and iteration instead of an
  # initialisation; the config may differ (another bound weight, learning rate, schedule...)
  # where the state keeps its shapes. Ignored once the workdir has checkpoints of its own.
  config.train.init_from = ''
  # Iterations per compiled call (train.make_train_steps): the same updates, less dispatch.
  # Worth it where a step takes milliseconds (the toy); logs, evaluations and checkpoints
  # still happen at their own iterations.
  config.train.steps_per_call = 1
  config.train.nonfinite = 'stop'        # 'stop': error naming the step; 'skip': drop the update
  config.train.divergence_gap = 50.0     # warn when E(fake) - E(real) exceeds this
  config.train.divergence_energy = 1e3   # ... or when |E| exceeds this

  # Samples of p_theta and its likelihood (bibound_jax/sampling.py, docs/sampling.md).
  config.sample = ml_collections.ConfigDict(sampling.DEFAULTS)

  return config


def apply_preset(config: ml_collections.ConfigDict, token: str) -> bool:
  """Set config.bounds.lower/upper from a preset name; False when `token` is not a preset."""
  if token not in PRESETS:
    return False
  config.bounds.lower, config.bounds.upper = PRESETS[token]
  return True


def parse_arg(config: ml_collections.ConfigDict, arg: str | None, file: str,
              tokens: Mapping[str, Callable[[ml_collections.ConfigDict], None]]) -> None:
  """Apply each comma-separated token of `arg`: a bound preset, or one of `tokens` (name ->
  a function that edits the config). An unknown token raises ValueError naming `file` and the
  valid tokens."""
  for token in (arg or '').split(','):
    token = token.strip()
    if not token:
      continue
    if token in tokens:
      tokens[token](config)
    elif not apply_preset(config, token):
      raise ValueError(f'{file}: unknown argument {token!r}; valid: {", ".join(tokens)}; '
                       f'bound presets: {", ".join(PRESETS)}.')

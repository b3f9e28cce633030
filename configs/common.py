"""Config sections shared by every experiment: bounds, optimiser and training loop.

`base_config()` holds the defaults of DESIGN.md sections 1-5 (the authors' code where known);
each `configs/<name>.py` starts from it and sets its data, networks and evaluation.
`apply_preset(config, token)` switches the bound pairing by name.
"""
import ml_collections

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
  config.bounds.lambda_h = 1.0
  config.bounds.estimator = 'exact_smin'   # d log s_1 from the exact SVD
  config.bounds.num_iters = 2
  config.bounds.block_size = 1
  config.bounds.cg_iters = 10
  # Latents of the batch used for the Jacobian terms (entropy and GP): every (B / sv_batch)-th;
  # 0 = all. Unbiased for both means at a fraction of the cost (train.sv_latents).
  config.bounds.sv_batch = 0
  # Latents per vmapped call of the singular-value estimator (entropy.batched_log_volume): 0 =
  # all at once; k > 0 loops over chunks of k, for exact estimators at large d whose per-latent
  # d-column Jacobians do not fit in memory all at once. Same values, less parallelism.
  config.bounds.latent_chunk = 0
  # BatchNorm statistics inside the Jacobian terms: 'batch' (those of the batch that made the
  # samples, as functions of the parameters) or 'running' (the authors' running averages;
  # they let the entropy gradient inflate the weights before each BatchNorm: train.py).
  config.bounds.jacobian_bn = 'batch'
  # sv+gp: the generator update reuses the latents and s_1 vectors the energy update solved for
  # at the same generator parameters (exact; one JVP per sample instead of a second solve).
  config.bounds.share_sv = True
  # 'constant': w = gp_weight (DESIGN.md: 1e-3, margin zeta in [0, 1]); 'decay': the authors'
  # toy schedule w = 0.7 (2307 + t)^-0.55 (1e-2 -> 1e-3 over 150k iterations).
  config.bounds.gp_weight_schedule = 'constant'
  config.bounds.gp_weight = 1e-3
  config.bounds.gp_margin = 0.0
  config.bounds.r1_weight = 1.0
  # MI lower bound (DESIGN.md section 3): x = G(z) + sigma eps; estimator in {ba, infonce, jsd}.
  config.bounds.mi_estimator = 'ba'
  config.bounds.mi_hidden = (100, 100)
  config.bounds.mi_sigma = 0.05
  config.bounds.mi_learn_sigma = False
  config.bounds.mi_sigma_floor = 0.01
  # Diffusion upper bound (DESIGN.md section 5): VP SDE, DSM with likelihood weighting g(t)^2.
  config.bounds.diff_weight = 1e-3
  config.bounds.diff_beta_min = 0.1
  config.bounds.diff_beta_max = 20.0
  config.bounds.diff_t_min = 1e-3
  config.bounds.diff_likelihood_weighting = True
  config.bounds.diff_importance_sampling = True
  config.bounds.wgan_gp_weight = 10.0

  config.optim = ml_collections.ConfigDict()
  config.optim.lr_energy = 2e-4
  config.optim.lr_generator = 2e-4
  config.optim.lr_critic = 2e-4          # MI critic/encoder (bounds.lower = 'mi')
  config.optim.b1 = 0.0
  config.optim.b2 = 0.9
  config.optim.eps = 1e-6
  config.optim.grad_clip = 0.0
  config.optim.n_critic = 1

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 200
  config.train.num_steps = 150_000
  config.train.log_every = 500
  config.train.eval_every = 10_000
  config.train.checkpoint_every = 10_000
  config.train.keep_checkpoints = 3
  # Iterations per compiled call (train.make_train_steps): the same updates, less dispatch.
  # Worth it where a step takes milliseconds (the toy); logs, evaluations and checkpoints
  # still happen at their own iterations.
  config.train.steps_per_call = 1
  config.train.nonfinite = 'stop'        # 'stop': error naming the step; 'skip': drop the update
  config.train.divergence_gap = 50.0     # warn when E(fake) - E(real) exceeds this
  config.train.divergence_energy = 1e3   # ... or when |E| exceeds this

  return config


def apply_preset(config: ml_collections.ConfigDict, token: str) -> bool:
  """Set config.bounds.lower/upper from a preset name; a diffusion bound switches the energy
  to its time-conditioned variant ('mlp' -> 'time_mlp', 'dcgan' -> 'time_dcgan', ...).
  Returns False when `token` is not a preset."""
  if token not in PRESETS:
    return False
  config.bounds.lower, config.bounds.upper = PRESETS[token]
  name = config.model.energy.name
  if config.bounds.upper == 'diff' and not name.startswith('time_'):
    config.model.energy.name = f'time_{name}'
  return True


def tie_time_energy_to_ebm(config: ml_collections.ConfigDict) -> None:
  """With a diffusion upper bound: a time embedding smooth in t (time_scale 1) and the bound's
  own DSM weight ((T - t_min) DSM, so w_diff = 1).

  DSM constrains E(., t) only for t >= t_min, never the EBM E(., 0). With the image-scale
  embedding (1000 t) the two decouple: on the toy, E(fake) - E(real) grew to 1e13 at w = 1e-3
  and kept growing at w = 1; with time_scale 1 and w = 1 it stayed below 0.6 over 40k
  iterations. This delays the run-away, it does not remove it: the 150k toy run still diverges
  after about 50k iterations (README results)."""
  if config.bounds.upper == 'diff':
    config.model.energy.time_scale = 1.0
    config.bounds.diff_weight = 1.0

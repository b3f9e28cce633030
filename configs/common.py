"""Config sections shared by every experiment: seed, bounds, optimiser and training loop.

`base_config()` holds the shared defaults (the authors' code where known), each declared by
the component that reads it (bibound_jax/config_lib.py); each `configs/<name>.py` starts from
it and sets its data, networks and evaluation.
`parse_arg` reads the comma-separated argument of `--config=configs/<name>.py:ARG`.
"""
from typing import Callable, Mapping

import ml_collections

from bibound_jax import config_lib

# Bound pairings by name: (bounds.lower, bounds.upper).
PRESETS = {
    'sv+gp': ('sv', 'gp'),       # SV entropy lower bound for G, GP upper bound for E
    'mi+diff': ('mi', 'diff'),   # MI lower bound (output noise + encoder), diffusion upper bound
    'none': ('sv', 'none'),      # lower bound only (MEG/VERA-style minimax; diverges)
    'r1': ('sv', 'r1'),          # SV lower bound, zero-centred R1 penalty on data (EBM_0GP)
    'wgan_gp': ('none', 'wgan_gp'),  # no entropy term, WGAN-GP critic penalty
}


def base_config() -> ml_collections.ConfigDict:
  """The seed and every section the library declares, at its defaults (config_lib.py lists
  where each section is declared: train, optim, bounds and each bound's own, sample)."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config_lib.add_defaults(config)
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

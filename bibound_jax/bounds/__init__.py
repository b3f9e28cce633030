"""The bounds, by name: the registry the configs, the validation and the train step read.

    lower (the generator's entropy term)   sv, mi, none
    upper (the energy's regulariser)       gp, diff, none, r1, wgan_gp

Each is a class in its own file (bounds/base.py: the interface); adding one is a new file and
a line below (docs/bounds.md, "Adding a bound").
"""
from __future__ import annotations

from bibound_jax import config_checks
from bibound_jax.bounds import baselines
from bibound_jax.bounds import diffusion
from bibound_jax.bounds import entropy
from bibound_jax.bounds import gradient_penalty
from bibound_jax.bounds import mutual_info

LOWER = {b.name: b for b in (entropy.SVBound, mutual_info.MIBound, baselines.NoEntropy)}
UPPER = {b.name: b for b in (gradient_penalty.GPBound, diffusion.DiffusionBound,
                             baselines.NoUpper, baselines.R1Bound, baselines.WGANGPBound)}


def sections() -> dict[str, dict]:
  """{name: defaults} of every bound with a config section (config.bounds.<name>)."""
  out = {}
  for cls in (*LOWER.values(), *UPPER.values()):
    if cls.DEFAULTS:
      out[cls.name] = dict(cls.DEFAULTS)
  return out


def classes(config):
  """(lower class, upper class) named by config.bounds.lower / .upper (ConfigError if unknown)."""
  config_checks.choice(config, 'bounds.lower', LOWER)
  config_checks.choice(config, 'bounds.upper', UPPER)
  return LOWER[config.bounds.lower], UPPER[config.bounds.upper]


def validate(config) -> None:
  """Check the chosen bounds' names and config sections."""
  for cls in classes(config):
    cls.validate(config)


def from_config(config):
  """(lower, upper): the bound instances the config names."""
  lower, upper = classes(config)
  return lower(config), upper(config)


def network_options(config) -> dict:
  """What `models.create_models` must build for the chosen bounds (a time-conditioned energy,
  an MI network, a generator with learned output noise)."""
  lower, upper = from_config(config)
  return {**lower.network_options(), **upper.network_options()}

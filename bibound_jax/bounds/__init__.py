"""The bounds, by name: the registry the configs, the validation and the train step read.

    lower (the generator's entropy term)   sv, mi, none
    upper (the energy's regulariser)       gp, diff, none, r1, wgan_gp

Each is a class in its own file (bounds/base.py: the interface); adding one is a new file and
a line below (docs/bounds.md, "Adding a bound").
"""
from __future__ import annotations

from bibound_jax import config_schema
from bibound_jax.bounds import baselines
from bibound_jax.bounds import diffusion
from bibound_jax.bounds import entropy
from bibound_jax.bounds import gradient_penalty
from bibound_jax.bounds import jacobian
from bibound_jax.bounds import mutual_info

LOWER = {b.name: b for b in (entropy.SVBound, mutual_info.MIBound, baselines.NoEntropy)}
UPPER = {b.name: b for b in (gradient_penalty.GPBound, diffusion.DiffusionBound,
                             baselines.NoUpper, baselines.R1Bound, baselines.WGANGPBound)}


def _check(config) -> None:
  classes(config)   # the names
  config_schema.positive(config, 'bounds.lambda_h', allow_zero=True)


# config.bounds itself: the pairing and the entropy weight in the generator loss (1 keeps L_lo
# a bound; the run logs a warning otherwise). Each bound's own settings are config.bounds.<name>.
SECTION = config_schema.Section('bounds', dict(lower='sv', upper='gp', lambda_h=1.0), _check)


def sections() -> list[config_schema.Section]:
  """config.bounds, the shared Jacobian settings and every bound's own section, declared."""
  own = [cls.config_section() for cls in (*LOWER.values(), *UPPER.values())]
  return [SECTION, jacobian.SECTION] + [s for s in own if s is not None]


def checked_sections(config) -> list[config_schema.Section]:
  """The bound sections whose checks apply to `config`: config.bounds, the chosen bounds' own,
  and the Jacobian settings where a chosen bound uses them. A bad value in an unused bound's
  section does not stop a run."""
  chosen = classes(config)
  out = [SECTION] + [s for s in (cls.config_section() for cls in chosen) if s is not None]
  if any(cls.uses_jacobian for cls in chosen):
    out.append(jacobian.SECTION)
  return out


def classes(config):
  """(lower class, upper class) named by config.bounds.lower / .upper (ConfigError if unknown)."""
  config_schema.choice(config, 'bounds.lower', LOWER)
  config_schema.choice(config, 'bounds.upper', UPPER)
  return LOWER[config.bounds.lower], UPPER[config.bounds.upper]


def from_config(config):
  """(lower, upper): the bound instances the config names."""
  lower, upper = classes(config)
  return lower(config), upper(config)


def network_options(config) -> dict:
  """What `models.create_models` must build for the chosen bounds (a time-conditioned energy,
  an MI network, a generator with learned output noise)."""
  lower, upper = from_config(config)
  return {**lower.network_options(), **upper.network_options()}

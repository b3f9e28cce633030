"""What a bound is to the train step: one small interface (docs/bounds.md, "Adding a bound").

Each iteration, the energy minimises the upper bound and the generator maximises the lower
bound (docs/bounds.md, "The objective"):

    energy:     loss_E = mean E(x_data) - mean E(sg x_fake) + upper.term(...)
    generator:  loss_G = mean E(x)  - lambda_H * lower.entropy(...)

A bound is a class with a `name`, the declaration of its config section `config.bounds.<name>`
(`DEFAULTS`, none when empty; `validate(config)`, which checks it; and for checkpoints of older
code `MOVED`, `ADDED`, `REMOVED`, and `spans_run`: `config_schema.Section`), and its term.
Instances are built from the whole config; `bibound_jax.bounds.from_config` picks them by
`config.bounds.lower` / `config.bounds.upper` from the registry in `bounds/__init__.py`.
The train step calls the instances; it never looks at their names.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar

import jax
import jax.numpy as jnp

from bibound_jax import config_schema

Array = jax.Array


class Bound:
  """A bound's name and config section (subclass LowerBound/UpperBound)."""
  name: ClassVar[str] = ''
  DEFAULTS: ClassVar[dict] = {}
  MOVED: ClassVar[dict] = {}      # old dotted key -> its key in this section
  ADDED: ClassVar[dict] = {}      # key added since runs were saved -> the old behaviour's value
  REMOVED: ClassVar[dict] = {}    # key removed -> (value kept, last commit reading it)
  uses_jacobian: ClassVar[bool] = False   # reads config.bounds.jacobian (bounds/jacobian.py)

  def __init__(self, config):
    self.config = config

  @property
  def section(self):
    """This bound's config section, config.bounds.<name>."""
    return self.config.bounds[self.name]

  @classmethod
  def validate(cls, config) -> None:
    """Raise config_schema.ConfigError, naming the key, for a bad value of the section."""

  @classmethod
  def spans_run(cls, section) -> str | None:
    """Why a longer train.num_steps would change what the saved part of a run means (a
    schedule stretched over the run), or None."""
    del section
    return None

  @classmethod
  def config_section(cls) -> config_schema.Section | None:
    """The declaration of config.bounds.<name> (None for a bound without settings)."""
    if not (cls.DEFAULTS or cls.MOVED or cls.REMOVED):
      return None
    return config_schema.Section(f'bounds.{cls.name}', cls.DEFAULTS, cls.validate,
                                 spans_run=cls.spans_run, added=cls.ADDED, moved=cls.MOVED,
                                 removed=cls.REMOVED)

  def network_options(self) -> dict:
    """Keyword arguments of `models.create_models` for the networks this bound needs."""
    return {}

  def objective_warnings(self) -> list[str]:
    """Settings of this section under which the loss is no longer the bound it is named
    after (the run logs each)."""
    return []

  def bounds_nll(self, data_dim: int, latent_dim: int) -> bool:
    """Whether the bound's value bounds the NLL of p_theta on R^D (D = data_dim) at all
    (docs/bounds.md, "What the bounds bound in D dimensions"): False for a baseline that is
    no bound, and for a bound whose generator density lives on a d-dimensional surface
    (d = latent_dim < D), where the entropy is a surface's and KL(p_g || p_theta) = +inf."""
    del data_dim, latent_dim
    return False


@dataclasses.dataclass(frozen=True)
class EnergyInputs:
  """What an energy update hands the upper bound.

  energy_fn: x (B, ...) -> E (B,), differentiable in the energy parameters (closed over);
  energy_t_fn: (x, t) -> E(x, t) for time-conditioned energies (else None);
  x_data, x_fake: this update's data and (stop-gradient) generator samples; z: their latents;
  key: this update's PRNG key; step: the iteration; generator: the generator as the bounds see
  it (`bibound_jax.generator.Generator`, at its current parameters)."""
  energy_fn: Callable[[Array], Array]
  energy_t_fn: Callable[[Array, Array], Array] | None
  x_data: Array
  x_fake: Array
  z: Array
  key: Array
  step: Array
  generator: Any


class UpperBound(Bound):
  """B >= KL(p_g || p_theta): the energy's regulariser."""
  # Needs a time-conditioned energy E(x, t) (models.create_models(time_conditioned=True)).
  time_conditioned: ClassVar[bool] = False

  def term(self, inputs: EnergyInputs) -> tuple[Array, dict, Any]:
    """(term, metrics, carry): the scalar added to loss_E, differentiable in the energy
    parameters; scalar diagnostics; and work that the following generator update may reuse
    (`LowerBound.reuses`), or None."""
    raise NotImplementedError

  def penalty(self, e_data: Array, e_fake: Array) -> Array | None:
    """The energy penalty `energy_l2` of bounds that declare it (bounds.diff, bounds.gp), from
    E(x_data) and E(x_fake): added to loss_E, but not part of the bound (nor of L_up); None
    where the bound has no such key or it is 0."""
    if 'energy_l2' not in self.DEFAULTS or not self.section.energy_l2 > 0:
      return None
    return energy_l2(e_data, e_fake, self.section.energy_l2)


@dataclasses.dataclass(frozen=True)
class GeneratorInputs:
  """What the generator update hands the lower bound.

  generator, params: the generator and the parameters being differentiated; z: latents;
  x: the samples `LowerBound.samples` made from them (differentiable); key: PRNG key;
  mi_net: the MI network's TrainState (None unless the bound asked for one); carry: the
  upper bound's carry from the last energy update when `reuses(carry)`, else None."""
  generator: Any
  params: Any
  z: Array
  x: Array
  key: Array
  mi_net: Any = None
  carry: Any = None


class LowerBound(Bound):
  """H[p_g] >= h: the generator's entropy term."""
  has_entropy: ClassVar[bool] = True   # False: no entropy term (lambda_H plays no role)

  def samples(self, generator, params, z: Array, key: Array):
    """(x, new BatchNorm statistics): the generator's samples whose entropy is bounded."""
    del key
    return generator.sample(params, z)

  def entropy(self, inputs: GeneratorInputs) -> tuple[Array | None, dict]:
    """(term, metrics): the term multiplied by lambda_H in loss_G, equal to the entropy lower
    bound up to a constant, differentiable in the generator parameters (None: no entropy term);
    metrics['entropy'] reports the bound itself."""
    raise NotImplementedError

  def reuses(self, carry) -> bool:
    """Whether the generator update takes the last energy update's latents and `carry`."""
    del carry
    return False

  def mi_net_loss(self, mi_params, mi_net, x: Array, z: Array) -> Array:
    """The loss of the MI network (bounds that ask for one in `network_options`)."""
    raise NotImplementedError(f'lower bound {self.name!r} has no MI network.')


def energy_l2(e_data, e_fake, a: float):
  """a (mean E(x_data)^2 + mean E(x_fake)^2): a non-negative penalty on the energy's values
  (`UpperBound.penalty`). It ties the depths of wells that nothing else relates
  (docs/bounds.md)."""
  return a * (jnp.mean(e_data ** 2) + jnp.mean(e_fake ** 2))

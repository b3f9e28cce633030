"""The fully connected StackedMNIST pair (docs/experiments.md, "StackedMNIST"), built from the
toy MLP modules.

  E: 2352-2000-1000-500-250-250-1, PReLU, learnable output scale (`MLPEnergy`).
  G: z-500-1000-2000-2352, Linear -> PReLU -> BatchNorm blocks, tanh, reshaped to 28x28x3
     (`MLPGenerator`).

`MLPEnergy` flattens its input and `MLPGenerator` reshapes to `data_shape`, so these are the toy
modules with the authors' widths. The latent size of the StackedMNIST FC generator is not in our
notes of the authors' code; 100 (as in the VEEGAN/PacGAN StackedMNIST experiments) is *our choice*.
"""
from __future__ import annotations

from typing import Sequence

from bibound_jax.models.toy import MLPEnergy, MLPGenerator

STACKED_MNIST_SHAPE = (28, 28, 3)
FC_ENERGY_HIDDEN = (2000, 1000, 500, 250, 250)
FC_GENERATOR_HIDDEN = (500, 1000, 2000)
FC_LATENT_DIM = 100


def fc_energy(hidden: Sequence[int] = FC_ENERGY_HIDDEN, spectral_norm: bool = False) -> MLPEnergy:
  """The StackedMNIST FC energy (any input shape; flattened)."""
  return MLPEnergy(hidden=tuple(hidden), spectral_norm=spectral_norm)


def fc_generator(latent_dim: int = FC_LATENT_DIM,
                 data_shape: Sequence[int] = STACKED_MNIST_SHAPE,
                 hidden: Sequence[int] = FC_GENERATOR_HIDDEN) -> MLPGenerator:
  """The StackedMNIST FC generator: tanh output reshaped to `data_shape`."""
  return MLPGenerator(latent_dim=latent_dim, data_shape=tuple(data_shape), hidden=tuple(hidden),
                      output_activation='tanh')

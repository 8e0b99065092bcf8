"""Generators and discriminators, built from a TrainConfig by :func:`build_models`."""

from __future__ import annotations

from torch import nn

from facegan.config import TrainConfig
from facegan.models import dcgan


def build_models(config: TrainConfig) -> tuple[nn.Module, nn.Module]:
    """Return a fresh (generator, discriminator) pair for ``config.architecture``."""
    if config.architecture == "dcgan":
        generator = dcgan.Generator(
            config.z_dim, config.resolution, config.g_channels, config.max_channels
        )
        discriminator = dcgan.Discriminator(
            config.resolution, config.d_channels, config.max_channels
        )
        return generator, discriminator
    raise ValueError(f"unknown architecture {config.architecture!r}")

"""Generators and discriminators, built from a TrainConfig by :func:`build_models`.

Every generator maps latents (N, z_dim) to images (N, 3, R, R) in [-1, 1]. Every
discriminator maps images to logits (N,) with ``forward`` and to a
:class:`~facegan.models.layers.DiscriminatorOutput` (logits, features, optional
reconstruction loss) with ``forward_parts``, which the training loop uses.
"""

from __future__ import annotations

from torch import nn

from facegan.config import TrainConfig
from facegan.models import dcgan, fastgan, projected, resnet, stylegan


def build_generator(config: TrainConfig) -> nn.Module:
    """Return a fresh generator for ``config.architecture``."""
    args = (config.z_dim, config.resolution, config.g_channels, config.max_channels)
    if config.architecture == "dcgan":
        return dcgan.Generator(*args, progressive=config.progressive)
    if config.architecture == "resnet":
        return resnet.Generator(*args, progressive=config.progressive)
    if config.architecture in ("fastgan", "projected"):
        return fastgan.Generator(*args)
    if config.architecture == "stylegan":
        return stylegan.Generator(
            *args,
            mapping_layers=config.mapping_layers,
            noise_inputs=config.noise_inputs,
            style_mixing=config.style_mixing,
            w_avg_beta=config.w_avg_beta,
        )
    raise ValueError(f"unknown architecture {config.architecture!r}")


def build_discriminator(config: TrainConfig) -> nn.Module:
    """Return a fresh discriminator for ``config.architecture``."""
    args = (config.resolution, config.d_channels, config.max_channels)
    mbstd, kernels = config.minibatch_std, config.minibatch_discrimination
    if config.architecture == "dcgan":
        return dcgan.Discriminator(
            *args, mbstd, kernels, config.spectral_norm, progressive=config.progressive
        )
    if config.architecture == "resnet":
        return resnet.Discriminator(*args, mbstd, kernels, sn=True, progressive=config.progressive)
    if config.architecture == "stylegan":
        # StyleGAN2's discriminator always has the minibatch standard-deviation layer.
        return resnet.Discriminator(*args, True, kernels, sn=config.spectral_norm)
    if config.architecture == "fastgan":
        return fastgan.Discriminator(*args, mbstd, kernels)
    if config.architecture == "projected":
        return projected.Discriminator(*args, mbstd)
    raise ValueError(f"unknown architecture {config.architecture!r}")


def build_models(config: TrainConfig) -> tuple[nn.Module, nn.Module]:
    """Return a fresh (generator, discriminator) pair for ``config.architecture``."""
    return build_generator(config), build_discriminator(config)

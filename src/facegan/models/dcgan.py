"""DCGAN generator and discriminator (Radford et al. 2015) for any power-of-two resolution.

The generator maps z to a 4x4 feature map with a transposed convolution, then doubles the
resolution with strided transposed convolutions, batch norm and ReLU, halving the channels
each time; the discriminator mirrors it with strided convolutions and leaky ReLU. Both
use the paper's N(0, 0.02) weight initialisation.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from facegan.models.layers import DiscriminatorHead, DiscriminatorOutput


def _channels(width: int, blocks: int, max_channels: int) -> list[int]:
    """Channels per block from the 4x4 end: width * 2**(blocks-1), ..., width."""
    return [min(width * 2 ** (blocks - 1 - i), max_channels) for i in range(blocks)]


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    """Map latents z of shape (N, z_dim) to images (N, 3, R, R) in [-1, 1]."""

    def __init__(self, z_dim: int, resolution: int, width: int, max_channels: int = 512):
        super().__init__()
        self.z_dim = z_dim
        self.resolution = resolution
        blocks = int(math.log2(resolution)) - 2  # upsamplings from 4x4, the last to RGB
        channels = _channels(width, blocks, max_channels)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_dim, channels[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(channels[0]),
            nn.ReLU(inplace=True),
        ]
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.ConvTranspose2d(channels[-1], 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert z.ndim == 2 and z.shape[1] == self.z_dim, f"expected (N, {self.z_dim}), got {z.shape}"
        return self.net(z[:, :, None, None])


class Discriminator(nn.Module):
    """Map images (N, 3, R, R) to real/fake logits of shape (N,).

    With ``minibatch_std`` or ``discrimination_kernels`` the last convolution is replaced
    by a :class:`DiscriminatorHead` that holds those layers; ``sn`` wraps every
    convolution in spectral norm. With none of them the layers are the paper's.
    """

    def __init__(
        self,
        resolution: int,
        width: int,
        max_channels: int = 512,
        minibatch_std: bool = False,
        discrimination_kernels: int = 0,
        sn: bool = False,
    ):
        super().__init__()
        self.resolution = resolution
        blocks = int(math.log2(resolution)) - 2  # downsamplings to 4x4
        channels = _channels(width, blocks, max_channels)[::-1]
        layers: list[nn.Module] = [
            nn.Conv2d(3, channels[0], 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [
                nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        self.head = None
        if minibatch_std or discrimination_kernels:
            self.head = DiscriminatorHead(channels[-1], minibatch_std, discrimination_kernels, sn)
        else:
            layers.append(nn.Conv2d(channels[-1], 1, 4, 1, 0, bias=False))
        self.net = nn.Sequential(*layers)
        self.net.apply(_init_weights)
        if sn:
            for index, layer in enumerate(self.net):
                if isinstance(layer, nn.Conv2d):
                    self.net[index] = nn.utils.parametrizations.spectral_norm(layer)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_parts(images).logits

    def forward_parts(self, images: torch.Tensor, reconstruct: bool = False) -> DiscriminatorOutput:
        """Return logits and the 4x4 features before the last layer; DCGAN has no decoder."""
        assert images.shape[1:] == (3, self.resolution, self.resolution), (
            f"expected NCHW (N, 3, {self.resolution}, {self.resolution}), got {images.shape}"
        )
        if self.head is not None:
            logits, features = self.head(self.net(images))
            return DiscriminatorOutput(logits, features)
        trunk = self.net[:-1](images)
        logits = self.net[-1](trunk).flatten()
        return DiscriminatorOutput(logits, trunk.flatten(1))

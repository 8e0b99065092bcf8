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

from facegan.models.layers import DiscriminatorHead, DiscriminatorOutput, check_images
from facegan.models.progressive import ProgressiveStage, blend_rgb, shrink


def _channels(width: int, blocks: int, max_channels: int) -> list[int]:
    """Channels per block from the 4x4 end: width * 2**(blocks-1), ..., width."""
    return [min(width * 2 ** (blocks - 1 - i), max_channels) for i in range(blocks)]


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(ProgressiveStage):
    """Map latents z of shape (N, z_dim) to images (N, 3, R, R) in [-1, 1].

    With ``progressive`` it also has a 1x1 RGB output per resolution below R and renders
    at the stage set by :meth:`set_stage` (see :mod:`facegan.models.progressive`).
    """

    def __init__(self, z_dim: int, resolution: int, width: int, max_channels: int = 512,
                 progressive: bool = False):
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
        self.progressive = progressive
        if progressive:
            # net contains 3 layers per resolution 4, 8, ..., R/2, then the RGB layer and tanh.
            self.init_stage(resolution)
            self.to_rgb_at = nn.ModuleDict({
                str(4 * 2**i): nn.Sequential(nn.Conv2d(c, 3, 1), nn.Tanh())
                for i, c in enumerate(channels)
            })

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert z.ndim == 2, f"expected latents of shape (N, {self.z_dim}), got {z.shape}"
        assert z.shape[1] == self.z_dim, f"expected (N, {self.z_dim}) latents, got {z.shape}"
        if self.progressive:
            return self._forward_stage(z[:, :, None, None])
        return self.net(z[:, :, None, None])

    def _forward_stage(self, x: torch.Tensor) -> torch.Tensor:
        size, alpha = self.stage()
        # maps[s] is the map that the RGB layer for s reads; for R it is the R/2 map.
        deepest = min(size, self.resolution // 2)
        maps, current = {}, 4
        for start in range(0, len(self.net) - 2, 3):
            x = self.net[start:start + 3](x)
            maps[current] = x
            if current >= deepest:
                break
            current *= 2
        if size == self.resolution:
            maps[self.resolution] = maps[self.resolution // 2]
        return blend_rgb(maps, self._rgb, size, alpha, self.resolution)

    def _rgb(self, size: int, x: torch.Tensor) -> torch.Tensor:
        return self.net[-2:](x) if size == self.resolution else self.to_rgb_at[str(size)](x)


class Discriminator(ProgressiveStage):
    """Map images (N, 3, R, R) to real/fake logits of shape (N,).

    With ``minibatch_std`` or ``discrimination_kernels`` the last convolution is replaced
    by a :class:`DiscriminatorHead` that contains those layers; ``sn`` wraps every
    convolution in spectral norm. ``progressive`` adds a 1x1 input convolution per
    resolution below R and reads the input at the stage set by :meth:`set_stage`. With
    none of them the layers are the paper's.
    """

    def __init__(
        self,
        resolution: int,
        width: int,
        max_channels: int = 512,
        minibatch_std: bool = False,
        discrimination_kernels: int = 0,
        sn: bool = False,
        progressive: bool = False,
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
        self.progressive = progressive
        if progressive:
            # net contains 2 layers reading R, then 3 per resolution R/2, ..., 8.
            self.init_stage(resolution)
            self.from_rgb = nn.ModuleDict({
                str(resolution // 2**i): nn.Sequential(
                    nn.Conv2d(3, channels[i - 1], 1), nn.LeakyReLU(0.2)
                )
                for i in range(1, blocks)
            })

    def _trunk_stage(self, images: torch.Tensor) -> torch.Tensor:
        """Return the 4x4 features for the current stage, fading in its first layers."""
        size, alpha = self.stage()
        trunk_end = len(self.net) - (0 if self.head is not None else 1)
        if size == self.resolution:
            h = self.net[0:2](images)
        else:
            h = self.from_rgb[str(size)](shrink(images, size))
        first = 2 + 3 * (self.resolution.bit_length() - size.bit_length() - 1)
        if size != self.resolution:
            h = self.net[first:first + 3](h)
        if alpha < 1.0:
            previous = self.from_rgb[str(size // 2)](shrink(images, size // 2))
            h = previous.lerp(h, alpha)
        start = 2 if size == self.resolution else first + 3
        return self.net[start:trunk_end](h)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_parts(images).logits

    def forward_parts(
        self, images: torch.Tensor, reconstruct: bool = False
    ) -> DiscriminatorOutput:
        """Return logits and the 4x4 features before the last layer; DCGAN has no decoder."""
        check_images(images, self.resolution)
        if self.progressive:
            trunk = self._trunk_stage(images)
        elif self.head is not None:
            trunk = self.net(images)
        else:
            trunk = self.net[:-1](images)
        if self.head is not None:
            logits, features = self.head(trunk)
            return DiscriminatorOutput(logits, features)
        logits = self.net[-1](trunk).flatten()
        return DiscriminatorOutput(logits, trunk.flatten(1))

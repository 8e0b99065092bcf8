"""Residual generator and discriminator with spectral normalisation.

The blocks follow Gulrajani et al. 2017 and Miyato et al. 2018: pre-activation residual
blocks, nearest-neighbour upsampling in the generator, average-pool downsampling in the
discriminator, and spectral norm on every discriminator layer. Widths halve per doubling
of resolution, as in the DCGAN pair, so both families scale the same way with
``g_channels``/``d_channels``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facegan.models.layers import (
    DiscriminatorHead,
    DiscriminatorOutput,
    channels_for,
    check_images,
    spectral,
)
from facegan.models.progressive import ProgressiveStage, blend_rgb, shrink


class GeneratorBlock(nn.Module):
    """BN-ReLU-up-conv3-BN-ReLU-conv3 plus an upsampled 1x1 shortcut; doubles H and W."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1, self.norm2 = nn.BatchNorm2d(c_in), nn.BatchNorm2d(c_out)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.norm1(x)), scale_factor=2.0, mode="nearest")
        h = self.conv2(F.relu(self.norm2(self.conv1(h))))
        return h + self.shortcut(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Generator(ProgressiveStage):
    """Map latents (N, z_dim) to images (N, 3, R, R) in [-1, 1] through residual blocks.

    With ``progressive`` it also has an RGB output per resolution below R and renders
    at the stage set by :meth:`set_stage` (see :mod:`facegan.models.progressive`).
    """

    def __init__(self, z_dim: int, resolution: int, width: int, max_channels: int = 512,
                 progressive: bool = False):
        super().__init__()
        self.z_dim, self.resolution = z_dim, resolution
        channels = channels_for(resolution, width, max_channels)
        self.start_channels = channels[4]
        self.dense = nn.Linear(z_dim, 16 * channels[4])
        sizes = sorted(channels)  # 4, 8, ..., R
        self.blocks = nn.ModuleList(
            GeneratorBlock(channels[size], channels[size * 2]) for size in sizes[:-1]
        )
        self.to_rgb = nn.Sequential(
            nn.BatchNorm2d(channels[resolution]),
            nn.ReLU(),
            nn.Conv2d(channels[resolution], 3, 3, padding=1),
            nn.Tanh(),
        )
        self.progressive = progressive
        if progressive:
            self.init_stage(resolution)
            self.to_rgb_at = nn.ModuleDict({
                str(size): nn.Sequential(nn.Conv2d(channels[size], 3, 1), nn.Tanh())
                for size in sizes[:-1]
            })

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert z.ndim == 2, f"expected (N, {self.z_dim}), got {tuple(z.shape)}"
        assert z.shape[1] == self.z_dim, f"expected (N, {self.z_dim}), got {tuple(z.shape)}"
        x = self.dense(z).view(-1, self.start_channels, 4, 4)
        if self.progressive:
            return self._forward_stage(x)
        for block in self.blocks:
            x = block(x)
        return self.to_rgb(x)

    def _forward_stage(self, x: torch.Tensor) -> torch.Tensor:
        size, alpha = self.stage()
        maps, current = {4: x}, 4
        for block in self.blocks:
            if current >= size:
                break
            x = block(x)
            current *= 2
            maps[current] = x
        return blend_rgb(maps, self._rgb, size, alpha, self.resolution)

    def _rgb(self, size: int, x: torch.Tensor) -> torch.Tensor:
        return self.to_rgb(x) if size == self.resolution else self.to_rgb_at[str(size)](x)


class DiscriminatorBlock(nn.Module):
    """ReLU-conv3-ReLU-conv3-avgpool plus a 1x1-avgpool shortcut; halves H and W.

    The first block skips its leading ReLU, because its input is the image itself.
    """

    def __init__(self, c_in: int, c_out: int, first: bool, sn: bool = True):
        super().__init__()
        self.first = first
        self.conv1 = spectral(nn.Conv2d(c_in, c_out, 3, padding=1), sn)
        self.conv2 = spectral(nn.Conv2d(c_out, c_out, 3, padding=1), sn)
        self.shortcut = spectral(nn.Conv2d(c_in, c_out, 1), sn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(x)
        h = self.conv2(F.relu(self.conv1(h)))
        return F.avg_pool2d(h, 2) + F.avg_pool2d(self.shortcut(x), 2)


class Discriminator(ProgressiveStage):
    """Map images (N, 3, R, R) to logits (N,) through residual blocks down to 4x4.

    With ``progressive`` it has a 1x1 input convolution per resolution below R and reads
    its input at the stage set by :meth:`set_stage`.
    """

    def __init__(
        self,
        resolution: int,
        width: int,
        max_channels: int = 512,
        minibatch_std: bool = False,
        discrimination_kernels: int = 0,
        sn: bool = True,
        progressive: bool = False,
    ):
        super().__init__()
        self.resolution = resolution
        channels = channels_for(resolution, width, max_channels)
        sizes = sorted(channels, reverse=True)  # R, R/2, ..., 4
        blocks = [DiscriminatorBlock(3, channels[resolution], first=True, sn=sn)]
        # The first block already halves R; the rest bring the map down to 4x4.
        for size in sizes[1:-1]:
            blocks.append(DiscriminatorBlock(channels[size * 2], channels[size], False, sn))
        self.blocks = nn.Sequential(*blocks)
        last = channels[8] if resolution > 4 else channels[4]
        self.head = DiscriminatorHead(last, minibatch_std, discrimination_kernels, sn)
        self.progressive = progressive
        if progressive:
            self.init_stage(resolution)
            # The block that reads a size x size map expects channels[2 * size] channels.
            self.from_rgb = nn.ModuleDict({
                str(size): spectral(nn.Conv2d(3, channels[size * 2], 1), sn)
                for size in sizes[1:-1]
            })

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_parts(images).logits

    def forward_parts(
        self, images: torch.Tensor, reconstruct: bool = False
    ) -> DiscriminatorOutput:
        check_images(images, self.resolution)
        x = self._trunk_stage(images) if self.progressive else self.blocks(images)
        logits, features = self.head(F.relu(x))
        return DiscriminatorOutput(logits, features)

    def _trunk_stage(self, images: torch.Tensor) -> torch.Tensor:
        size, alpha = self.stage()
        first = self.resolution.bit_length() - size.bit_length()  # index of the block reading size
        x = shrink(images, size)
        h = self.blocks[first](x if first == 0 else self.from_rgb[str(size)](x))
        if alpha < 1.0:
            previous = self.from_rgb[str(size // 2)](shrink(x, size // 2))
            h = previous.lerp(h, alpha)
        return self.blocks[first + 1:](h)

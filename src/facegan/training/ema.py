"""Exponential moving average of the generator's weights, used for sampling."""

from __future__ import annotations

import copy

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

"""Estimate the memory a training step needs, for ``facegan train --dry-run``."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from facegan.config import TrainConfig
from facegan.models import build_models

# Bytes per trainable parameter: fp32 weight, gradient and Adam's two moments.
TRAINABLE_BYTES = 16


@dataclass
class MemoryEstimate:
    """Estimated bytes of one training step, split into weights and activations."""

    parameters: int  # weights, gradients and Adam state of G and D, plus the EMA copy of G
    activations: int  # tensors autograd keeps for backward, for one batch

    @property
    def total(self) -> int:
        return self.parameters + self.activations

    def describe(self) -> str:
        mib = 2**20
        return (
            f"estimated memory per step: {self.total / mib:,.0f} MiB "
            f"({self.parameters / mib:,.0f} MiB weights and optimizer state, "
            f"{self.activations / mib:,.0f} MiB activations for a batch)"
        )


def estimate_memory(config: TrainConfig, probe_batch: int = 2) -> MemoryEstimate:
    """Measure the tensors saved for backward in G(z), D(G(z)) and D(x) at ``probe_batch``.

    The saved bytes are scaled to one batch of ``batch_size``; accumulated batches free
    their graphs one at a time, so ``accumulate`` does not change the estimate. It
    ignores allocator overhead and temporary buffers, so the real peak is higher (an
    estimate, not a bound).
    """
    generator, discriminator = build_models(config)
    trainable = sum(p.numel() for p in generator.parameters() if p.requires_grad)
    trainable += sum(p.numel() for p in discriminator.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in discriminator.parameters() if not p.requires_grad)
    ema = sum(p.numel() for p in generator.parameters())
    parameters = TRAINABLE_BYTES * trainable + 4 * (frozen + ema)

    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        # Count each storage once: several ops may save views of the same tensor.
        storage = tensor.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    autocast = (
        torch.autocast("cpu", dtype=torch.bfloat16)
        if config.precision == "bf16" else contextlib.nullcontext()
    )
    z = torch.randn(probe_batch, config.z_dim)
    real = torch.rand(probe_batch, 3, config.resolution, config.resolution) * 2 - 1
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), autocast:
        fake = generator(z)
        discriminator(real)
        discriminator(fake)
    per_image = sum(saved.values()) / probe_batch
    return MemoryEstimate(parameters, int(per_image * config.batch_size))

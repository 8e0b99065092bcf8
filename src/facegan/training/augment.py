"""Differentiable augmentation of D's inputs (DiffAugment, Zhao et al. 2020), with an
adaptive probability (ADA, Karras et al. 2020).

Both real and generated images pass through the same random operations before D, and
gradients flow through them to G, so D cannot tell the two apart by the augmentation.
Each operation is applied to each image with probability ``p``. With ADA, ``p`` starts
at 0 and moves every few steps by the sign of r_t - target, where r_t = E[sign(D(x))]
over real images measures how confidently D separates reals (an overfitting heuristic).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Largest translation as a fraction of the image side, and cutout square side as a
# fraction of the image side, as in DiffAugment.
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def _per_image(images: torch.Tensor, p: float) -> torch.Tensor:
    """Return a (N, 1, 1, 1) boolean mask: which images an operation applies to."""
    return torch.rand(images.shape[0], 1, 1, 1, device=images.device) < p


def color(images: torch.Tensor, p: float) -> torch.Tensor:
    """Random brightness (+-0.5), saturation (x0..2) and contrast (x0.5..1.5) on [-1, 1] images."""
    n = images.shape[0]
    options = {"dtype": images.dtype, "device": images.device}
    x = images + (torch.rand(n, 1, 1, 1, **options) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (torch.rand(n, 1, 1, 1, **options) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (torch.rand(n, 1, 1, 1, **options) + 0.5) + mean
    return torch.where(_per_image(images, p), x, images)


def translation(images: torch.Tensor, p: float) -> torch.Tensor:
    """Shift each image by whole pixels, up to 1/8 of its side, filling with zeros."""
    n, _, h, w = images.shape
    max_shift = max(1, int(round(min(h, w) * TRANSLATION_RATIO)))
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), device=images.device).float()
    theta = torch.zeros(n, 2, 3, device=images.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = shifts[:, 0] * 2 / w
    theta[:, 1, 2] = shifts[:, 1] * 2 / h
    grid = F.affine_grid(theta, [n, 3, h, w], align_corners=False)
    # Sampled in fp32: on torch 2.13 (CPU) grid_sample returned NaN for some bf16 batches.
    shifted = F.grid_sample(images.float(), grid, mode="nearest", padding_mode="zeros",
                            align_corners=False).to(images.dtype)
    return torch.where(_per_image(images, p), shifted, images)


def cutout(images: torch.Tensor, p: float) -> torch.Tensor:
    """Zero a random square of half the image side in each image (DeVries and Taylor 2017)."""
    n, _, h, w = images.shape
    size_h, size_w = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    top = torch.randint(0, h - size_h + 1, (n, 1, 1), device=images.device)
    left = torch.randint(0, w - size_w + 1, (n, 1, 1), device=images.device)
    rows = torch.arange(h, device=images.device).view(1, h, 1)
    cols = torch.arange(w, device=images.device).view(1, 1, w)
    inside = (rows >= top) & (rows < top + size_h) & (cols >= left) & (cols < left + size_w)
    keep = (~inside).unsqueeze(1).to(images.dtype)
    return torch.where(_per_image(images, p), images * keep, images)


OPERATIONS = {"color": color, "translation": translation, "cutout": cutout}


class Augmenter:
    """Apply the configured operations with probability ``p``, adapting ``p`` when ADA is on."""

    def __init__(self, operations: list[str], ada_target: float, ada_kimg: float,
                 ada_interval: int, batch_size: int):
        self.operations = [OPERATIONS[name] for name in operations]
        self.ada_target = ada_target
        # Change of p per update: interval * batch images out of ada_kimg thousand.
        self.ada_step = ada_interval * batch_size / (ada_kimg * 1000)
        self.ada_interval = ada_interval
        self.p = 0.0 if ada_target > 0 else 1.0
        self.sign_sum = 0.0
        self.sign_count = 0
        self.steps = 0

    @property
    def enabled(self) -> bool:
        return bool(self.operations)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if not self.operations or self.p <= 0:
            return images
        for operation in self.operations:
            images = operation(images, self.p)
        return images

    def observe(self, real_logits: torch.Tensor) -> None:
        """Accumulate sign(D(x)) on reals; every ``ada_interval`` calls, move p towards target."""
        if self.ada_target <= 0:
            return
        self.sign_sum += float(real_logits.detach().float().sign().sum())
        self.sign_count += real_logits.numel()
        self.steps += 1
        if self.steps % self.ada_interval == 0:
            r_t = self.sign_sum / max(1, self.sign_count)
            direction = 1.0 if r_t > self.ada_target else -1.0
            self.p = min(1.0, max(0.0, self.p + direction * self.ada_step))
            self.sign_sum, self.sign_count = 0.0, 0

    def state_dict(self) -> dict:
        return {"p": self.p, "sign_sum": self.sign_sum, "sign_count": self.sign_count,
                "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.p, self.sign_sum = state["p"], state["sign_sum"]
        self.sign_count, self.steps = state["sign_count"], state["steps"]

"""Adversarial losses on discriminator logits, computed in float32."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nonsaturating_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss: -log D(x) - log(1 - D(G(z))), with D = sigmoid(logits)."""
    return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()


def nonsaturating_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator loss -log D(G(z)) (Goodfellow et al. 2014), which keeps gradients early on."""
    return F.softplus(-fake_logits.float()).mean()

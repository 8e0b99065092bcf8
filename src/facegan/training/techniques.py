"""Training techniques outside the losses: historical averaging, instance noise and
feature matching."""

from __future__ import annotations

import torch
from torch import nn


class HistoricalAverage:
    """Running mean of a network's past parameters and the penalty ||theta - mean||^2.

    Salimans et al. 2016 add this penalty so that parameters that oscillate are pulled
    towards their history. The mean is the plain average of every past update.
    """

    def __init__(self, module: nn.Module):
        self.averages = [p.detach().float().clone() for p in _trainable(module)]
        self.count = 1

    def penalty(self, module: nn.Module) -> torch.Tensor:
        terms = [(p.float() - mean).square().sum()
                 for p, mean in zip(_trainable(module), self.averages)]
        return torch.stack(terms).sum()

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        self.count += 1
        for p, mean in zip(_trainable(module), self.averages):
            mean.add_((p.float() - mean) / self.count)

    def state_dict(self) -> dict:
        return {"averages": self.averages, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.averages = [t.clone() for t in state["averages"]]
        self.count = state["count"]


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def instance_noise_std(initial: float, fade_steps: int, step: int) -> float:
    """Return the std of instance noise at ``step``: ``initial`` fading linearly to 0.

    Noise on both real and generated inputs makes their distributions overlap, so that
    D's gradients stay informative early on (Sønderby et al. 2016, Arjovsky and Bottou
    2017).
    """
    return initial * max(0.0, 1.0 - step / fade_steps)


def feature_matching_loss(
    real_features: torch.Tensor, fake_features: torch.Tensor
) -> torch.Tensor:
    """Return ||E f(x) - E f(G(z))||^2 over D's features f (Salimans et al. 2016)."""
    difference = real_features.detach().float().mean(0) - fake_features.float().mean(0)
    return difference.square().sum()

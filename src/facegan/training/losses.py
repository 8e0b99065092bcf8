"""Adversarial losses on discriminator logits and gradient penalties, computed in float32.

Each loss has a discriminator and a generator half; :func:`d_loss` and :func:`g_loss`
pick them by the name used for ``--loss``. The relativistic pairing loss needs both the
real and the generated logits in the generator half too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Weight of the drift term that keeps Wasserstein critic outputs near zero
# (Karras et al. 2018).
WGAN_DRIFT = 1e-3


def nonsaturating_d_loss(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, smoothing: float = 0.0
) -> torch.Tensor:
    """Discriminator loss: -log D(x) - log(1 - D(G(z))), with D = sigmoid(logits).

    With ``smoothing`` s the real target is 1 - s (one-sided label smoothing, Salimans
    et al. 2016): binary cross-entropy (1 - s) softplus(-x) + s softplus(x).
    """
    real, fake = real_logits.float(), fake_logits.float()
    real_term = F.softplus(-real).mean()
    if smoothing:
        real_term = (1 - smoothing) * real_term + smoothing * F.softplus(real).mean()
    return real_term + F.softplus(fake).mean()


def nonsaturating_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator loss -log D(G(z)) (Goodfellow et al. 2014), which keeps gradients early on."""
    return F.softplus(-fake_logits.float()).mean()


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss (Lim and Ye 2017): max(0, 1 - D(x)) + max(0, 1 + D(G(z)))."""
    return F.relu(1 - real_logits.float()).mean() + F.relu(1 + fake_logits.float()).mean()


def least_squares_d_loss(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, smoothing: float = 0.0
) -> torch.Tensor:
    """Least-squares loss (Mao et al. 2017) with targets 1 - smoothing for reals, 0 for fakes."""
    real_target = 1.0 - smoothing
    return 0.5 * ((real_logits.float() - real_target).square().mean()
                  + fake_logits.float().square().mean())


def least_squares_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * (fake_logits.float() - 1).square().mean()


def wasserstein_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Critic loss D(G(z)) - D(x) plus a small drift penalty on D(x)^2.

    The gradient penalty of WGAN-GP is added separately by :func:`gradient_penalty`.
    """
    real, fake = real_logits.float(), fake_logits.float()
    return fake.mean() - real.mean() + WGAN_DRIFT * real.square().mean()


def relativistic_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Relativistic pairing loss (Jolicoeur-Martineau 2019): softplus(D(G(z)) - D(x)).

    Sample i of the real batch is paired with sample i of the generated batch.
    """
    return F.softplus(fake_logits.float() - real_logits.float()).mean()


def relativistic_g_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(real_logits.float() - fake_logits.float()).mean()


def d_loss(
    name: str, real_logits: torch.Tensor, fake_logits: torch.Tensor, smoothing: float = 0.0
) -> torch.Tensor:
    """Return the discriminator half of loss ``name`` (a ``--loss`` value)."""
    if name == "nonsaturating":
        return nonsaturating_d_loss(real_logits, fake_logits, smoothing)
    if name == "hinge":
        return hinge_d_loss(real_logits, fake_logits)
    if name == "least-squares":
        return least_squares_d_loss(real_logits, fake_logits, smoothing)
    if name == "wgan-gp":
        return wasserstein_d_loss(real_logits, fake_logits)
    if name == "rpgan":
        return relativistic_d_loss(real_logits, fake_logits)
    raise ValueError(f"unknown loss {name!r}")


def g_loss(
    name: str, fake_logits: torch.Tensor, real_logits: torch.Tensor | None = None
) -> torch.Tensor:
    """Return the generator half of loss ``name``; ``rpgan`` also needs ``real_logits``."""
    if name == "nonsaturating":
        return nonsaturating_g_loss(fake_logits)
    if name in ("hinge", "wgan-gp"):
        return -fake_logits.float().mean()
    if name == "least-squares":
        return least_squares_g_loss(fake_logits)
    if name == "rpgan":
        assert real_logits is not None, "rpgan's generator loss needs the real logits"
        return relativistic_g_loss(real_logits, fake_logits)
    raise ValueError(f"unknown loss {name!r}")


def needs_real_logits_for_g(name: str) -> bool:
    """Return whether the generator half of loss ``name`` reads D's logits on reals."""
    return name == "rpgan"


def gradient_norm_penalty(logits: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Return E ||grad_x D(x)||^2 over the batch: R1 on reals, R2 on fakes (Mescheder et al. 2018).

    ``inputs`` must require grad and ``logits`` must depend on it. The graph is kept so
    that the penalty itself can be backpropagated into D.
    """
    (gradients,) = torch.autograd.grad(logits.float().sum(), inputs, create_graph=True)
    return gradients.float().square().sum(dim=(1, 2, 3)).mean()


def interpolate(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Return random points on the lines between real and fake images, requiring grad."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, dtype=real.dtype, device=real.device)
    mixed = real.detach() + alpha * (fake.detach() - real.detach())
    return mixed.requires_grad_(True)


def gradient_penalty(logits: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Return WGAN-GP's E (||grad D(x_hat)|| - 1)^2 at interpolates (Gulrajani et al. 2017)."""
    (gradients,) = torch.autograd.grad(logits.float().sum(), inputs, create_graph=True)
    norms = gradients.float().flatten(1).norm(dim=1)
    return (norms - 1).square().mean()

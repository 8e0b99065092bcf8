"""One discriminator update and one generator update, with every configured loss term.

Each update returns its loss terms by name; :func:`check_finite` raises
``FloatingPointError`` naming every non-finite term before any gradient reaches
the weights, so that the loop can roll back.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING

import torch

from facegan.training import losses
from facegan.training.techniques import feature_matching_loss, instance_noise_std

if TYPE_CHECKING:
    from facegan.training.loop import Trainer


def check_finite(terms: dict[str, torch.Tensor], step: int) -> dict[str, float]:
    """Return the terms as floats; raise FloatingPointError naming any that is NaN or inf."""
    values = {name: float(term.detach()) for name, term in terms.items()}
    bad = [name for name, value in values.items() if not math.isfinite(value)]
    if bad:
        raise FloatingPointError(f"non-finite {', '.join(bad)} at step {step}")
    return values


def d_input(trainer: Trainer, images: torch.Tensor) -> torch.Tensor:
    """Return D's input for ``images``: augmented, plus instance noise while it lasts."""
    config = trainer.config
    images = trainer.augmenter(images)
    std = instance_noise_std(config.instance_noise, config.instance_noise_steps, trainer.step)
    if std > 0:
        images = images + std * torch.randn_like(images)
    return images


def _accuracy(config, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> float:
    """Return the share of reals and fakes on the right side of D's decision boundary."""
    boundary = 0.5 if config.loss == "least-squares" else 0.0
    real_right = (real_logits.detach().float() > boundary).float().mean()
    fake_right = (fake_logits.detach().float() < boundary).float().mean()
    return float(real_right + fake_right) / 2


def _regularise_now(trainer: Trainer) -> bool:
    config = trainer.config
    lazy = config.r1_gamma > 0 or config.r2_gamma > 0
    return lazy and trainer.d_updates % config.r1_every == 0


def _penalty_precision(trainer: Trainer, double_backward: bool):
    """Return the autocast context for a D pass, or fp32 when a gradient penalty needs it.

    Passes that a gradient penalty differentiates twice run in fp32: on torch 2.13 (CPU)
    the double backward of bf16 convolutions crashed the process with SIGFPE for a
    residual D at 128x128 with batch 32.
    """
    return contextlib.nullcontext() if double_backward else trainer.autocast()


def _discriminator_terms(
    trainer: Trainer, real: torch.Tensor, fake: torch.Tensor, regularise: bool
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Return D's loss terms for one batch and its real and generated logits."""
    config, discriminator = trainer.config, trainer.discriminator
    real_in = d_input(trainer, real)
    fake_in = d_input(trainer, fake.detach())
    penalise_real = regularise and config.r1_gamma > 0
    penalise_fake = regularise and config.r2_gamma > 0
    # Penalised passes run in fp32 (see _penalty_precision), so their inputs are cast.
    if penalise_real:
        real_in = real_in.detach().float().requires_grad_(True)
    if penalise_fake:
        fake_in = fake_in.detach().float().requires_grad_(True)
    reconstruct = config.architecture == "fastgan" and config.reconstruction_weight > 0
    with _penalty_precision(trainer, penalise_real):
        real_out = discriminator.forward_parts(real_in, reconstruct=reconstruct)
    with _penalty_precision(trainer, penalise_fake):
        fake_out = discriminator.forward_parts(fake_in)
    terms = {
        "loss_d": losses.d_loss(config.loss, real_out.logits, fake_out.logits,
                                config.label_smoothing),
    }
    if real_out.reconstruction_loss is not None:
        terms["reconstruction"] = config.reconstruction_weight * real_out.reconstruction_loss
    # Lazy regularisation (Karras et al. 2020): every r1_every steps, weighted by r1_every.
    if penalise_real:
        r1 = losses.gradient_norm_penalty(real_out.logits, real_in)
        terms["r1_penalty"] = config.r1_gamma / 2 * config.r1_every * r1
    if penalise_fake:
        r2 = losses.gradient_norm_penalty(fake_out.logits, fake_in)
        terms["r2_penalty"] = config.r2_gamma / 2 * config.r1_every * r2
    if config.loss == "wgan-gp":
        mixed = losses.interpolate(real_in.float(), fake_in.float())
        with _penalty_precision(trainer, True):
            mixed_logits = discriminator(mixed)
        terms["gradient_penalty"] = config.gp_weight * losses.gradient_penalty(mixed_logits, mixed)
    return terms, real_out.logits, fake_out.logits


def discriminator_update(trainer: Trainer) -> dict[str, float]:
    """Run one D update over ``accumulate`` batches; keep the last fakes for G's update."""
    config = trainer.config
    regularise = _regularise_now(trainer)
    trainer.d_optimizer.zero_grad(set_to_none=True)
    sums: dict[str, float] = {}
    accuracy = 0.0
    for _ in range(config.accumulate):
        real = trainer.next_real()
        z = trainer.next_latents()
        with trainer.autocast():
            fake = trainer.generator(z)
        terms, real_logits, fake_logits = _discriminator_terms(trainer, real, fake, regularise)
        if trainer.history_d is not None:
            terms["history_d"] = config.historical_averaging * trainer.history_d.penalty(
                trainer.discriminator
            )
        # Checked before backward, so that a bad batch never reaches the weights.
        values = check_finite(terms, trainer.step + 1)
        (sum(terms.values()) / config.accumulate).backward()
        values["d_real"] = real_logits.float().mean().item()
        values["d_fake"] = fake_logits.float().mean().item()
        for name, value in values.items():
            sums[name] = sums.get(name, 0.0) + value / config.accumulate
        accuracy += _accuracy(config, real_logits, fake_logits) / config.accumulate
        trainer.augmenter.observe(real_logits)
        trainer.last_real, trainer.last_fake = real, fake
    skip = 0 < config.d_skip_accuracy < accuracy
    if not skip:
        trainer.d_optimizer.step()
        if trainer.history_d is not None:
            trainer.history_d.update(trainer.discriminator)
    trainer.d_updates += 1
    sums["d_accuracy"] = accuracy
    sums["d_skipped"] = float(skip)
    return sums


def generator_update(trainer: Trainer) -> dict[str, float]:
    """Run one G update over ``accumulate`` batches; the first reuses D's last fakes."""
    config, discriminator = trainer.config, trainer.discriminator
    trainer.g_optimizer.zero_grad(set_to_none=True)
    sums: dict[str, float] = {}
    for index in range(config.accumulate):
        needs_real = losses.needs_real_logits_for_g(config.loss) or config.feature_matching > 0
        if index == 0 and trainer.last_fake is not None:
            fake, real = trainer.last_fake, trainer.last_real
        else:
            real = trainer.next_real() if needs_real else None
            with trainer.autocast():
                fake = trainer.generator(trainer.next_latents())
        with trainer.autocast():
            fake_out = discriminator.forward_parts(d_input(trainer, fake))
        real_out = None
        if needs_real:
            with torch.no_grad(), trainer.autocast():
                real_out = discriminator.forward_parts(d_input(trainer, real))
        real_logits = real_out.logits if real_out is not None else None
        terms = {"loss_g": losses.g_loss(config.loss, fake_out.logits, real_logits)}
        if config.feature_matching > 0:
            terms["feature_matching"] = config.feature_matching * feature_matching_loss(
                real_out.features, fake_out.features
            )
        if trainer.history_g is not None and index == 0:
            terms["history_g"] = config.historical_averaging * trainer.history_g.penalty(
                trainer.generator
            )
        values = check_finite(terms, trainer.step + 1)
        (sum(terms.values()) / config.accumulate).backward()
        for name, value in values.items():
            sums[name] = sums.get(name, 0.0) + value / config.accumulate
    trainer.last_real = trainer.last_fake = None
    trainer.g_optimizer.step()
    if trainer.history_g is not None:
        trainer.history_g.update(trainer.generator)
    return sums

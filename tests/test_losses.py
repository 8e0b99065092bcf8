"""Adversarial losses and gradient penalties: values on known logits and short training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facegan.config import CHOICES
from facegan.training import losses
from facegan.training.loop import train
from tests.conftest import tiny_config


@pytest.fixture(autouse=True)
def one_thread():
    """Run on one thread: on a shared machine, competing threads slow torch down sharply."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _stats(run_dir):
    return [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]


REAL = torch.tensor([2.0, -1.0, 0.5])
FAKE = torch.tensor([-3.0, 1.0, 0.0])


def test_nonsaturating_without_smoothing_unchanged():
    expected = F.softplus(-REAL).mean() + F.softplus(FAKE).mean()
    assert torch.allclose(losses.d_loss("nonsaturating", REAL, FAKE), expected)


def test_label_smoothing_targets_below_one():
    smoothed = losses.d_loss("nonsaturating", REAL, FAKE, smoothing=0.1)
    target = torch.full_like(REAL, 0.9)
    expected = F.binary_cross_entropy_with_logits(REAL, target) + F.softplus(FAKE).mean()
    assert torch.allclose(smoothed, expected)
    # With smoothing, a very confident D is penalised on reals; without, it is not.
    confident = torch.tensor([20.0])
    assert losses.d_loss("nonsaturating", confident, -confident, 0.1) > 1.0
    assert losses.d_loss("nonsaturating", confident, -confident) < 1e-6


def test_hinge_values():
    # relu(1 - [2, -1, 0.5]) = [0, 2, 0.5]; relu(1 + [-3, 1, 0]) = [0, 2, 1]
    assert torch.allclose(losses.d_loss("hinge", REAL, FAKE), torch.tensor(2.5 / 3 + 3 / 3))
    assert torch.allclose(losses.g_loss("hinge", FAKE), torch.tensor(2 / 3))


def test_least_squares_values():
    expected = 0.5 * (((REAL - 1) ** 2).mean() + (FAKE**2).mean())
    assert torch.allclose(losses.d_loss("least-squares", REAL, FAKE), expected)
    assert torch.allclose(losses.g_loss("least-squares", FAKE), 0.5 * ((FAKE - 1) ** 2).mean())


def test_wasserstein_values():
    expected = FAKE.mean() - REAL.mean() + losses.WGAN_DRIFT * (REAL**2).mean()
    assert torch.allclose(losses.d_loss("wgan-gp", REAL, FAKE), expected)
    assert torch.allclose(losses.g_loss("wgan-gp", FAKE), -FAKE.mean())


def test_relativistic_pairs_samples():
    assert torch.allclose(losses.d_loss("rpgan", REAL, FAKE), F.softplus(FAKE - REAL).mean())
    assert torch.allclose(losses.g_loss("rpgan", FAKE, REAL), F.softplus(REAL - FAKE).mean())
    # Shifting every logit by the same amount changes nothing: only differences count.
    assert torch.allclose(losses.d_loss("rpgan", REAL + 5, FAKE + 5),
                          losses.d_loss("rpgan", REAL, FAKE))


def test_gradient_norm_penalty_of_linear_critic():
    weights = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)
    images = torch.randn(5, 2, 1, 1, requires_grad=True)
    logits = (images * weights).sum(dim=(1, 2, 3))
    # The gradient of <w, x> is w everywhere, so ||grad||^2 = 9 + 16.
    assert torch.allclose(losses.gradient_norm_penalty(logits, images), torch.tensor(25.0))


def test_gradient_penalty_zero_for_unit_slope():
    weights = torch.tensor([0.6, 0.8]).view(1, 2, 1, 1)
    mixed = losses.interpolate(torch.randn(4, 2, 1, 1), torch.randn(4, 2, 1, 1))
    logits = (mixed * weights).sum(dim=(1, 2, 3))
    assert losses.gradient_penalty(logits, mixed).item() == pytest.approx(0.0, abs=1e-10)


LOSS_SETTINGS = {
    "nonsaturating": {},
    "hinge": {},
    "least-squares": {"label_smoothing": 0.1},
    "wgan-gp": {"gp_weight": 10.0},
    "rpgan": {"r1_gamma": 0.1, "r2_gamma": 0.1},
}


def test_every_loss_choice_covered():
    assert set(LOSS_SETTINGS) == set(CHOICES["loss"])


@pytest.mark.parametrize("loss", sorted(LOSS_SETTINGS))
def test_loss_trains_on_faces(loss, dataset32, tmp_path):
    config = tiny_config(loss=loss, steps=3, **LOSS_SETTINGS[loss])
    train(dataset32, tmp_path / loss, config)
    records = _stats(tmp_path / loss)
    assert len(records) == 3
    for record in records:
        for key, value in record.items():
            assert np.isfinite(value), (key, record)
    if loss == "wgan-gp":
        assert all("gradient_penalty" in r for r in records)
    if loss == "rpgan":
        assert all("r1_penalty" in r and "r2_penalty" in r for r in records)


def test_lazy_r1_every_k_steps(dataset32, tmp_path):
    config = tiny_config(r1_gamma=1.0, r1_every=2, steps=4)
    train(dataset32, tmp_path / "lazy", config)
    with_penalty = [r["step"] for r in _stats(tmp_path / "lazy") if "r1_penalty" in r]
    # D updates 0 and 2 (steps 1 and 3) are regularised.
    assert with_penalty == [1, 3]


PENALTY_STEP = """
import torch
from pathlib import Path
from facegan.config import resolve_config
from facegan.training.loop import Trainer
torch.set_num_threads(1)
config = resolve_config("test-32", {
    "architecture": "resnet", "resolution": 128, "batch_size": 32, "precision": "bf16",
    "loss": "rpgan", "r1_gamma": 1.0, "r2_gamma": 1.0, "d_channels": 16, "g_channels": 16,
    "max_channels": 256,
})
images = torch.zeros(32, 3, 128, 128, dtype=torch.uint8)
Trainer(config, images, Path("unused")).train_step()
"""


def test_penalty_step_bf16_128_survives():
    """The bf16 double backward of a 128x128 residual D killed torch 2.13 with SIGFPE."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", PENALTY_STEP], capture_output=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr.decode()[-2000:]

"""Architectures: shapes at every resolution, training on real faces, checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facegan.config import CHOICES
from facegan.models import build_models, dcgan, projected, stylegan
from facegan.models.progressive import stage_at
from facegan.sampling import load_run
from facegan.training.checkpoint import load_checkpoint
from facegan.training.loop import train
from facegan.training.memory import estimate_memory
from tests.conftest import tiny_config

ARCHITECTURES = CHOICES["architecture"]


@pytest.fixture(autouse=True)
def one_thread():
    """Run on one thread: on a shared machine, competing threads slow torch down sharply."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _stats(run_dir):
    return [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_256_forward_backward(architecture):
    config = tiny_config(architecture=architecture, resolution=256, max_channels=32)
    torch.manual_seed(0)
    generator, discriminator = build_models(config)
    z = torch.randn(2, config.z_dim)
    images = generator(z)
    assert images.shape == (2, 3, 256, 256)
    assert images.min() >= -1
    assert images.max() <= 1
    logits = discriminator(images)
    assert logits.shape == (2,)
    logits.sum().backward()
    generator_grads = [p.grad for p in generator.parameters() if p.grad is not None]
    assert generator_grads, "no gradient reached the generator"
    assert all(torch.isfinite(g).all() for g in generator_grads)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_trains_on_faces(architecture, dataset32, tmp_path):
    run_dir = tmp_path / architecture
    train(dataset32, run_dir, tiny_config(architecture=architecture, steps=3))
    records = _stats(run_dir)
    assert [r["step"] for r in records] == [1, 2, 3]
    for record in records:
        for key in ("loss_g", "loss_d", "d_real", "d_fake"):
            assert np.isfinite(record[key]), (key, record)
    if architecture == "fastgan":
        assert all(np.isfinite(r["reconstruction"]) for r in records)

    state = load_checkpoint(run_dir / "checkpoint.pt")
    run = load_run(run_dir)
    for name, tensor in run.generator.state_dict().items():
        assert torch.equal(tensor, state["generator_ema"][name]), name
    for name, tensor in run.discriminator.state_dict().items():
        assert torch.equal(tensor, state["discriminator"][name]), name
    assert run.generator(state["fixed_latents"][:2]).shape == (2, 3, 32, 32)


def test_dcgan_default_layers_unchanged():
    config = tiny_config()
    _, discriminator = build_models(config)
    assert discriminator.head is None
    assert isinstance(discriminator.net[-1], torch.nn.Conv2d)
    keys = set(discriminator.state_dict())
    batch_norm = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}
    expected = {"net.0.weight", "net.2.weight", "net.5.weight", "net.8.weight"}
    expected |= {f"net.{index}.{name}" for index in (3, 6) for name in batch_norm}
    assert keys == expected


def test_dcgan_discriminator_parts_match_forward():
    torch.manual_seed(0)
    discriminator = dcgan.Discriminator(32, 8).eval()
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    parts = discriminator.forward_parts(images)
    assert torch.equal(parts.logits, discriminator.net(images).flatten())
    assert parts.features.shape[0] == 3


def test_stylegan_truncation_in_w():
    torch.manual_seed(0)
    generator = stylegan.Generator(16, 32, 8, 32)
    z = torch.randn(64, 16)
    generator.train()
    before = generator.w_avg.clone()
    generator(z)
    assert not torch.equal(generator.w_avg, before), "training forward must track mean w"
    generator.eval()
    mean_faces = generator(torch.randn(4, 16), truncation_psi=0.0)
    assert torch.allclose(mean_faces, mean_faces[:1].expand_as(mean_faces), atol=1e-6)
    full = generator(z[:4])
    assert torch.equal(full, generator(z[:4], truncation_psi=1.0))
    assert torch.equal(full, generator(z[:4])), "eval mode uses fixed noise, so it repeats"
    half = generator(z[:4], truncation_psi=0.5)
    assert (half - mean_faces).abs().mean() < (full - mean_faces).abs().mean()


def test_stylegan_style_mixing_uses_second_latent():
    torch.manual_seed(0)
    generator = stylegan.Generator(16, 32, 8, 32, style_mixing=1.0)
    generator.train()
    ws = generator.mapping_ws(torch.randn(2, 16))
    assert ws.shape == (2, generator.num_ws, 16)
    assert not torch.equal(ws[:, 0], ws[:, -1])


def test_efficientnet_ranks_cat_first():
    from skimage import data

    model = projected.load_efficientnet_lite0()
    image = torch.from_numpy(data.chelsea()).permute(2, 0, 1).float()[None] / 255
    image = torch.nn.functional.interpolate(image, size=(224, 224), mode="bilinear")
    mean = torch.tensor(projected.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(projected.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = model((image - mean) / std)
    # ImageNet classes 281-285: tabby, tiger cat, Persian, Siamese, Egyptian cat.
    top3 = logits[0].topk(3).indices.tolist()
    assert top3[0] in range(281, 286), top3


def test_projected_features_frozen():
    _, discriminator = build_models(tiny_config(architecture="projected"))
    discriminator.train()
    assert not discriminator.features.training
    frozen = list(discriminator.features.parameters()) + list(
        discriminator.projection.parameters()
    )
    assert frozen and not any(p.requires_grad for p in frozen)
    assert any(p.requires_grad for p in discriminator.discriminators.parameters())


def test_progressive_schedule():
    phase = 1000
    assert stage_at(0, 64, phase) == (8, 1.0)
    assert stage_at(1500, 64, phase) == (16, 0.5)
    assert stage_at(2500, 64, phase) == (16, 1.0)
    assert stage_at(3250, 64, phase) == (32, 0.25)
    assert stage_at(10**6, 64, phase) == (64, 1.0)


@pytest.mark.parametrize("architecture", ["dcgan", "resnet"])
def test_progressive_full_stage_matches_plain(architecture):
    plain_config = tiny_config(architecture=architecture)
    torch.manual_seed(0)
    plain_g, plain_d = build_models(plain_config)
    grown_g, grown_d = build_models(tiny_config(architecture=architecture, progressive=True))
    grown_g.load_state_dict(plain_g.state_dict(), strict=False)
    grown_d.load_state_dict(plain_d.state_dict(), strict=False)
    for net in (plain_g, plain_d, grown_g, grown_d):
        net.eval()
    z = torch.randn(2, plain_config.z_dim)
    assert torch.allclose(grown_g(z), plain_g(z))
    images = plain_g(z)
    assert torch.allclose(grown_d(images), plain_d(images))


@pytest.mark.parametrize("architecture", ["dcgan", "resnet"])
def test_progressive_trains_through_stages(architecture, dataset32, tmp_path):
    config = tiny_config(architecture=architecture, progressive=True, progressive_kimg=0.008,
                         steps=6)
    train(dataset32, tmp_path / "run", config)
    stages = [r["stage"] for r in _stats(tmp_path / "run")]
    assert stages[0] == 3.0  # 8x8
    assert stages[-1] == 5.0  # 32x32, fully faded in
    assert all(np.isfinite(r["loss_d"]) for r in _stats(tmp_path / "run"))
    run = load_run(tmp_path / "run")
    assert run.generator.stage() == (32, 1.0)


def test_memory_estimate_grows_with_batch():
    small = estimate_memory(tiny_config(batch_size=4))
    large = estimate_memory(tiny_config(batch_size=16))
    assert small.parameters == large.parameters > 0
    assert large.activations > small.activations > 0
    assert "MiB" in large.describe()

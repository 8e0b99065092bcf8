"""sample: seeds, truncation, EMA weights and the command's outputs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facegan.cli import main
from facegan.errors import UserError
from facegan.sampling import generate, load_run, sample, sample_latents


def test_same_seed_same_images(trained_run, tmp_path):
    first, _ = sample(trained_run, 6, seed=3, truncation_psi=1.0, out=tmp_path / "a")
    second, _ = sample(trained_run, 6, seed=3, truncation_psi=1.0, out=tmp_path / "b")
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes()


def test_other_seed_other_images(trained_run):
    run = load_run(trained_run)
    a = generate(run.generator, sample_latents(4, run.config.z_dim, seed=1))
    b = generate(run.generator, sample_latents(4, run.config.z_dim, seed=2))
    assert not np.array_equal(a, b)


def test_zero_truncation_gives_mean_face(trained_run):
    run = load_run(trained_run)
    faces = [
        generate(run.generator, sample_latents(3, run.config.z_dim, seed, truncation_psi=0.0))
        for seed in (0, 1, 2)
    ]
    for batch in faces:
        for image in batch:
            assert np.array_equal(image, faces[0][0])


def test_truncation_reduces_spread(trained_run):
    run = load_run(trained_run)
    full = generate(run.generator, sample_latents(16, run.config.z_dim, 5, truncation_psi=1.0))
    half = generate(run.generator, sample_latents(16, run.config.z_dim, 5, truncation_psi=0.5))
    assert half.astype(np.float32).std(axis=0).mean() < full.astype(np.float32).std(axis=0).mean()


@pytest.mark.parametrize("psi", [-0.1, 1.5])
def test_truncation_out_of_range_rejected(trained_run, tmp_path, psi):
    with pytest.raises(UserError, match=r"--truncation .*\[0, 1\]"):
        sample(trained_run, 2, seed=0, truncation_psi=psi, out=tmp_path)


def test_ema_is_default(trained_run, tmp_path):
    ema_paths, _ = sample(trained_run, 2, seed=0, truncation_psi=1.0, out=tmp_path / "ema")
    raw_paths, _ = sample(trained_run, 2, 0, 1.0, tmp_path / "raw", ema=False)
    ema = np.asarray(Image.open(ema_paths[0]))
    raw = np.asarray(Image.open(raw_paths[0]))
    assert not np.array_equal(ema, raw)


def test_cli_writes_pngs_and_grid(trained_run, tmp_path, capsys):
    out = tmp_path / "faces"
    code = main(["sample", str(trained_run), "--n", "5", "--seed", "7", "--out", str(out)])
    assert code == 0
    pngs = sorted(out.glob("seed7-*.png"))
    assert len(pngs) == 5
    with Image.open(pngs[0]) as image:
        assert image.size == (32, 32)
    assert (out / "grid.png").exists()
    assert "grid.png" in capsys.readouterr().out


def test_cli_rejects_bad_truncation(trained_run, tmp_path, capsys):
    code = main(["sample", str(trained_run), "--truncation", "2", "--out", str(tmp_path)])
    assert code == 2
    assert "invalid --truncation 2.0" in capsys.readouterr().err


def test_cli_missing_run(tmp_path, capsys):
    code = main(["sample", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "not found" in capsys.readouterr().err


def test_bundled_model_samples(tmp_path):
    paths, grid = sample(None, 4, seed=0, truncation_psi=1.0, out=tmp_path / "a")
    again, _ = sample(None, 4, seed=0, truncation_psi=1.0, out=tmp_path / "b")
    images = [np.asarray(Image.open(path)) for path in paths]
    assert images[0].shape == (64, 64, 3)
    assert not np.array_equal(images[0], images[1])
    assert paths[0].read_bytes() == again[0].read_bytes()
    assert grid.exists()


def test_bundled_model_card():
    from facegan.pretrained import DEFAULT_MODEL, load_bundled

    generator, config, card = load_bundled(DEFAULT_MODEL)
    for key in ("data", "command", "step", "images_seen", "training_seconds", "config"):
        assert key in card
    assert config.resolution == 64
    size_mb = sum(p.numel() * 2 for p in generator.parameters()) / 1e6
    assert size_mb < 20


def test_style_generator_truncates_in_w():
    import torch

    from facegan.models import build_models
    from tests.conftest import tiny_config

    torch.manual_seed(0)
    generator, _ = build_models(tiny_config(architecture="stylegan"))
    generator.eval()
    assert generator.truncates_in_w
    faces = [
        generate(generator, sample_latents(2, generator.z_dim, seed), truncation_psi=0.0)
        for seed in (0, 1)
    ]
    assert np.array_equal(faces[0][0], faces[1][1])
    varied = generate(generator, sample_latents(2, generator.z_dim, 0), truncation_psi=1.0)
    assert not np.array_equal(varied[0], varied[1])

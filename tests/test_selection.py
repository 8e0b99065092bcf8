"""Careful sampling: filters remove planted bad candidates and keep real faces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from facegan.errors import UserError
from facegan.evaluation import selection
from facegan.evaluation.features import make_extractor

from .conftest import face_variants


class BrightnessCritic(nn.Module):
    """A stand-in discriminator whose logit is the mean pixel value of the image."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(1, 2, 3)) * self.scale


def astronaut_faces(count: int, seed: int = 0) -> np.ndarray:
    return np.stack([np.asarray(face.resize((64, 64))) for face in face_variants(count, seed)])


def noise_images(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(count, 64, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def mixed_pool():
    """Six real faces with four noise images planted at known positions."""
    faces, noise = astronaut_faces(6), noise_images(4)
    pool = np.concatenate([faces[:2], noise[:2], faces[2:], noise[2:]])
    noise_rows = {2, 3, 8, 9}
    return pool, noise_rows


def test_face_filter_removes_noise(mixed_pool):
    pool, noise_rows = mixed_pool
    options = selection.SelectionOptions(filter_face=True)
    keep, report = selection.select(pool, count=10, options=options)
    assert set(keep.tolist()) == set(range(10)) - noise_rows
    assert report.removed["no face found"] == 4
    assert report.kept == 6


def test_novelty_filter_removes_training_identity(mixed_pool):
    pool, noise_rows = mixed_pool
    training = astronaut_faces(3, seed=5)
    train_descriptors = make_extractor("dlib").extract(training, progress=False).values
    options = selection.SelectionOptions(
        filter_face=True, train_descriptors=train_descriptors
    )
    keep, report = selection.select(pool, count=10, options=options)
    # Every real face in the pool is the astronaut, a training identity.
    assert keep.tolist() == []
    assert report.removed["no face found"] == 4
    assert report.removed["training identity within threshold"] == 6


def test_novelty_filter_keeps_other_people(mixed_pool):
    pool, noise_rows = mixed_pool
    faces = np.array([i for i in range(10) if i not in noise_rows])
    unrelated = np.random.default_rng(1).normal(size=(5, 128)) + 10
    options = selection.SelectionOptions(train_descriptors=unrelated)
    keep, report = selection.select(pool[faces], count=6, options=options)
    assert report.removed["training identity within threshold"] == 0
    assert len(keep) == 6


def test_discriminator_ranking_orders_best_first():
    levels = [40, 200, 120, 10, 250]
    pool = np.stack([np.full((8, 8, 3), level, dtype=np.uint8) for level in levels])
    options = selection.SelectionOptions(ranking="rank", top_k=3)
    keep, report = selection.select(pool, count=5, options=options, discriminator=BrightnessCritic())
    assert keep.tolist() == [4, 1, 2]
    assert report.removed["beyond top-k"] == 2


def test_drs_acceptance_rises_with_logit():
    logits = np.linspace(-3, 3, 50)
    acceptance = selection.drs_acceptance(logits, percentile=80)
    assert np.all(np.diff(acceptance) >= 0)
    assert acceptance[-1] > 0.5
    assert acceptance[0] < 0.05


def test_drs_rejects_low_scores_more_often():
    levels = np.repeat([10, 245], 200)
    pool = np.stack([np.full((8, 8, 3), level, dtype=np.uint8) for level in levels])
    options = selection.SelectionOptions(ranking="drs", drs_percentile=50, top_k=400)
    keep, report = selection.select(pool, count=400, options=options, discriminator=BrightnessCritic())
    dark_kept = int((keep < 200).sum())
    bright_kept = int((keep >= 200).sum())
    assert bright_kept > 3 * dark_kept
    assert report.removed["rejected by DRS"] == 400 - len(keep)


def test_ranking_needs_discriminator():
    options = selection.SelectionOptions(ranking="rank")
    with pytest.raises(UserError, match="needs a run with a discriminator"):
        selection.select(noise_images(2), count=2, options=options)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("oversample", 0.5, "--oversample"),
        ("top_k", 0, "--top-k"),
        ("ranking", "best", "--rank-discriminator"),
    ],
)
def test_options_validation_names_the_flag(field, value, message):
    options = selection.SelectionOptions(**{field: value})
    with pytest.raises(UserError, match=message):
        options.validate()


def test_pool_size_rounds_up():
    assert selection.SelectionOptions(oversample=1.5).pool_size(5) == 8


def test_sample_ranks_oversampled_pool(trained_run, tmp_path, capsys):
    from facegan.cli import main

    out = tmp_path / "ranked"
    code = main(
        ["sample", str(trained_run), "--n", "4", "--oversample", "3", "--rank-discriminator",
         "--out", str(out)]
    )
    assert code == 0
    assert len(list(out.glob("seed0-*.png"))) == 4


def test_sample_plain_unchanged(trained_run, tmp_path):
    from facegan.cli import main
    from facegan.sampling import generate, load_run, sample_latents

    out = tmp_path / "plain"
    assert main(["sample", str(trained_run), "--n", "3", "--out", str(out)]) == 0
    run = load_run(trained_run)
    expected = generate(run.generator, sample_latents(3, run.config.z_dim, 0))
    written = np.asarray(Image.open(out / "seed0-0002.png"))
    np.testing.assert_array_equal(written, expected[2])


def test_sample_empty_pool_error(trained_run, tmp_path, capsys):
    from facegan.cli import main

    # The tiny test run draws no recognisable faces, so the face filter removes them all.
    code = main(
        ["sample", str(trained_run), "--n", "2", "--filter-face", "--out", str(tmp_path / "x")]
    )
    assert code == 2
    assert "none of the 2 candidates passed the filters" in capsys.readouterr().err

"""Novelty check: copies of training faces are flagged, unseen real faces are not."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from facegan.errors import UserError
from facegan.evaluation import novelty, plots, realdata
from facegan.evaluation.features import make_extractor

from .conftest import UTKFACE, needs_utkface

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def face_sets():
    """Descriptors and thumbnails of 60 training, 24 held-out and 24 unseen UTKFace faces."""
    paths = sorted(UTKFACE.glob("*.jpg"))[::40][:108]
    images = np.stack(
        [np.asarray(Image.open(p).convert("RGB").resize((64, 64), Image.BICUBIC)) for p in paths]
    )
    descriptors = make_extractor("dlib").extract(images, progress=False).values
    pixels = novelty.pixel_vectors(images)
    parts = {"train": slice(0, 60), "heldout": slice(60, 84), "unseen": slice(84, 108)}
    return {
        name: (images[part], descriptors[part], pixels[part]) for name, part in parts.items()
    }


@needs_utkface
def test_training_copies_flagged(face_sets):
    _, train_descriptors, train_pixels = face_sets["train"]
    _, heldout_descriptors, _ = face_sets["heldout"]
    copies = slice(0, 24)
    report = novelty.novelty_report(
        train_descriptors[copies], train_descriptors, heldout_descriptors,
        train_pixels[copies], train_pixels,
    )
    assert report.pixel_copies == 24
    assert report.new_identity_share == 0.0
    assert report.identity_indices.tolist() == list(range(24))
    assert len(report.warnings) == 2
    assert "pixel copies" in report.warnings[0]
    assert "closer to training identities" in report.warnings[1]


@needs_utkface
def test_unseen_faces_not_flagged(face_sets):
    _, train_descriptors, train_pixels = face_sets["train"]
    _, heldout_descriptors, _ = face_sets["heldout"]
    _, unseen_descriptors, unseen_pixels = face_sets["unseen"]
    report = novelty.novelty_report(
        unseen_descriptors, train_descriptors, heldout_descriptors, unseen_pixels, train_pixels
    )
    assert report.pixel_copies == 0
    assert report.warnings == []
    assert report.heldout_comparison()["ks_p_value"] > novelty.COPY_P_VALUE


@needs_utkface
def test_single_copy_found(face_sets):
    _, train_descriptors, train_pixels = face_sets["train"]
    _, unseen_descriptors, unseen_pixels = face_sets["unseen"]
    descriptors = np.concatenate([unseen_descriptors, train_descriptors[[5]]])
    pixels = np.concatenate([unseen_pixels, train_pixels[[5]]])
    report = novelty.novelty_report(
        descriptors, train_descriptors, np.zeros((0, 128)), pixels, train_pixels
    )
    assert report.pixel_copies == 1
    assert report.pixel_indices[-1] == 5
    assert report.heldout_comparison() is None


def test_ks_p_value_tracks_the_statistic():
    assert novelty.ks_p_value(0.0, 100, 100) == 1.0
    assert novelty.ks_p_value(0.1, 100, 100) > 0.5
    assert novelty.ks_p_value(0.5, 100, 100) < 1e-4


def test_ks_p_value_matches_scipy_asymptotic():
    stats = pytest.importorskip("scipy.stats", reason="scipy is not installed")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=400), rng.normal(0.25, 1, size=300)
    expected = stats.ks_2samp(a, b, method="asymp").pvalue
    statistic = stats.ks_2samp(a, b).statistic
    assert novelty.ks_p_value(statistic, 400, 300) == pytest.approx(expected, rel=0.15)


def test_pixel_vectors_measure_rms_difference():
    black = np.zeros((1, 16, 16, 3), dtype=np.uint8)
    white = np.full((1, 16, 16, 3), 255, dtype=np.uint8)
    vectors = novelty.pixel_vectors(np.concatenate([black, white]), size=8)
    assert np.linalg.norm(vectors[0] - vectors[1]) == pytest.approx(1.0, rel=1e-5)


def test_plots_write_pngs(tmp_path):
    rng = np.random.default_rng(0)
    samples = rng.integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)
    grid = plots.closest_pairs_grid(
        samples, samples[::-1], np.arange(5), rng.random(5), tmp_path / "pairs.png", count=4,
        columns=2,
    )
    histogram = plots.distance_histogram(
        {"samples": rng.random(50), "held-out": rng.random(40) + 0.3},
        tmp_path / "hist.png",
        threshold=0.6,
    )
    with Image.open(grid) as image:
        assert image.size[0] > 2 * 2 * plots.CELL
    with Image.open(histogram) as image:
        assert image.size == (640, 400)


def write_manifest(root, splits):
    (root / "images").mkdir(parents=True)
    lines = []
    for index, split in enumerate(splits):
        path = f"images/{index:03d}.png"
        Image.new("RGB", (8, 8), (index, 0, 0)).save(root / path)
        lines.append(json.dumps({"status": "written", "path": path, "split": split}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")


def test_list_splits_reads_manifest(tmp_path):
    write_manifest(tmp_path, ["train", "heldout", "train", "train", "heldout"])
    splits = realdata.list_splits(tmp_path)
    assert [p.name for p in splits.train] == ["000.png", "002.png", "003.png"]
    assert [p.name for p in splits.heldout] == ["001.png", "004.png"]
    assert not splits.random_heldout


def test_random_heldout_without_marks(tmp_path):
    write_manifest(tmp_path, ["train"] * 20)
    splits = realdata.with_random_heldout(realdata.list_splits(tmp_path), 0.25)
    assert splits.random_heldout
    assert len(splits.heldout) == 5
    assert len(splits.train) == 15
    assert not set(splits.train) & set(splits.heldout)


def test_list_splits_rejects_missing_folder(tmp_path):
    with pytest.raises(UserError, match="not found"):
        realdata.list_splits(tmp_path / "missing")


def test_novelty_command_writes_report(trained_run, dataset32, capsys):
    from facegan.cli import main

    code = main(
        ["novelty", str(trained_run), "--data", str(dataset32), "--n", "8", "--pairs", "4",
         "--heldout-share", "0.25"]
    )
    assert code == 0
    output = capsys.readouterr().out
    assert "new identities" in output
    summary = json.loads((trained_run / "novelty.json").read_text())
    assert summary["samples"] == 8
    assert 0.0 <= summary["new_identity_share"] <= 1.0
    for name in ("novelty-identity-pairs.png", "novelty-pixel-pairs.png", "novelty-distances.png"):
        assert (trained_run / name).is_file(), name

"""Metric maths on synthetic features with known results, and evaluate end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facegan.evaluation import metrics


def gaussian(count: int, dim: int, seed: int, shift: float = 0.0, scale: float = 1.0):
    return np.random.default_rng(seed).normal(shift, scale, size=(count, dim))


def test_frechet_self_distance_zero():
    features = gaussian(500, 16, seed=0)
    assert metrics.frechet_distance(features, features) == pytest.approx(0.0, abs=1e-8)


def test_frechet_closed_form_gaussians():
    # N(0, I) against N(m, 4 I): FD = |m|^2 + D (1 + 4 - 2 * 2) = |m|^2 + D.
    dim = 8
    mean_b = np.full(dim, 0.5)
    value = metrics.frechet_distance_from_statistics(
        np.zeros(dim), np.eye(dim), mean_b, 4 * np.eye(dim)
    )
    assert value == pytest.approx(mean_b @ mean_b + dim)


def test_frechet_matches_scipy_sqrtm():
    scipy_linalg = pytest.importorskip("scipy.linalg", reason="scipy is not installed")
    a = gaussian(400, 12, seed=1)
    b = gaussian(400, 12, seed=2, shift=0.3, scale=1.5) @ np.triu(np.ones((12, 12))) / 4
    mean_a, sigma_a = metrics.feature_statistics(a)
    mean_b, sigma_b = metrics.feature_statistics(b)
    root = scipy_linalg.sqrtm(sigma_a @ sigma_b).real
    expected = ((mean_a - mean_b) ** 2).sum() + np.trace(sigma_a + sigma_b - 2 * root)
    assert metrics.frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)


def test_frechet_singular_covariances_finite():
    # Fewer samples than dimensions: both covariances are singular.
    a = gaussian(20, 64, seed=3)
    b = gaussian(20, 64, seed=4)
    value = metrics.frechet_distance(a, b)
    assert np.isfinite(value)
    assert value > 0


def test_frechet_rejects_mismatched_dims():
    with pytest.raises(ValueError, match="differ in dimension"):
        metrics.frechet_distance(gaussian(10, 4, 0), gaussian(10, 5, 0))


def test_mmd2_unbiased_on_one_distribution():
    estimates = [
        metrics.unbiased_mmd2(gaussian(50, 8, seed), gaussian(50, 8, seed + 1000))
        for seed in range(200)
    ]
    spread = np.std(estimates) / np.sqrt(len(estimates))
    assert abs(np.mean(estimates)) < 3 * spread


def test_kid_of_splits_near_zero():
    features = gaussian(2000, 32, seed=5)
    result = metrics.kernel_inception_distance(features[:1000], features[1000:], num_subsets=50)
    assert abs(result.mean) < 3 * result.standard_error
    assert result.standard_error > 0


def test_kid_of_shift_positive():
    result = metrics.kernel_inception_distance(
        gaussian(600, 32, seed=6), gaussian(600, 32, seed=7, shift=0.5), num_subsets=20
    )
    assert result.mean > 10 * result.standard_error


def test_kid_subset_size_capped():
    result = metrics.kernel_inception_distance(
        gaussian(100, 4, 0), gaussian(60, 4, 1), num_subsets=5, subset_size=1000
    )
    assert result.subset_size == 30


def test_precision_recall_self_is_one():
    features = gaussian(300, 16, seed=8)
    precision, recall = metrics.precision_recall(features, features)
    assert precision == 1.0
    assert recall == 1.0


def test_precision_recall_far_sets_zero():
    precision, recall = metrics.precision_recall(
        gaussian(200, 8, seed=9), gaussian(200, 8, seed=10, shift=100.0)
    )
    assert precision == 0.0
    assert recall == 0.0


def test_precision_recall_narrow_fakes():
    # Fakes covering only the centre of the real distribution: high precision, low recall.
    real = gaussian(1000, 4, seed=11)
    fake = gaussian(1000, 4, seed=12, scale=0.3)
    precision, recall = metrics.precision_recall(real, fake)
    assert precision > 0.9
    assert recall < 0.5


def test_nearest_neighbours_finds_exact_match():
    references = gaussian(50, 8, seed=13)
    distances, indices = metrics.nearest_neighbours(references[[7, 3]], references)
    assert indices.tolist() == [7, 3]
    assert distances.max() < 1e-3


def test_ks_statistic_matches_scipy():
    stats = pytest.importorskip("scipy.stats", reason="scipy is not installed")
    a = gaussian(300, 1, seed=14).ravel()
    b = gaussian(200, 1, seed=15, shift=0.2).ravel()
    assert metrics.ks_statistic(a, b) == pytest.approx(stats.ks_2samp(a, b).statistic)


def test_ks_statistic_of_disjoint_samples_is_one():
    assert metrics.ks_statistic(np.arange(10), np.arange(10) + 100) == 1.0


@pytest.mark.parametrize("extractors", [("dlib",)])
def test_evaluate_command_writes_results(trained_run, dataset32, extractors, capsys):
    from facegan.cli import main

    code = main(
        ["evaluate", str(trained_run), "--data", str(dataset32), "--n", "12",
         "--extractors", ",".join(extractors), "--kid-subsets", "5"]
    )
    assert code == 0
    table = capsys.readouterr().out
    assert "fd_dlib" in table
    assert "face detection rate" in table
    results = json.loads((trained_run / "evaluation.json").read_text())
    for key in ("fd_dlib", "kid_dlib", "kid_dlib_se", "precision_dlib", "recall_dlib"):
        assert np.isfinite(results["metrics"][key]), key
    assert 0.0 <= results["metrics"]["face_detection_rate"] <= 1.0
    assert results["samples"] == 12
    assert (trained_run / "evaluation.jsonl").exists()


def test_evaluate_rejects_unknown_extractor(trained_run, dataset32, capsys):
    from facegan.cli import main

    code = main(["evaluate", str(trained_run), "--data", str(dataset32), "--extractors", "vgg"])
    assert code == 2
    assert "invalid --extractors value 'vgg'" in capsys.readouterr().err


def test_quick_metrics_restores_training_mode(trained_run, dataset32):
    from facegan.evaluation.evaluate import quick_metrics, real_features_for_training
    from facegan.sampling import load_run

    run = load_run(trained_run)
    generator = run.generator.train()
    real = real_features_for_training(dataset32, run.config.resolution, count=12)
    first = quick_metrics(generator, real, count=12, kid_subsets=3)
    second = quick_metrics(generator, real, count=12, kid_subsets=3)
    assert generator.training
    assert first["fd_dlib"] == pytest.approx(second["fd_dlib"])
    assert set(first) >= {"fd_dlib", "kid_dlib", "precision_dlib", "recall_dlib"}

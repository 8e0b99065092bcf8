"""Check whether generated faces are new people or copies of the training faces.

For every sample the nearest training face is found twice: by identity (Euclidean
distance between dlib descriptors, where under 0.6 usually means the same person) and by
pixels (root-mean-square difference of 32x32 thumbnails, in [0, 1]). The samples' nearest
distances are then compared with those of held-out real faces, which the generator never
saw: a generator that copies puts its samples much closer to the training set than
unseen real faces are, which shows as a lower median and a large two-sample
Kolmogorov-Smirnov statistic.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path

import numpy as np
import torch

from facegan.errors import UserError
from facegan.evaluation.features import check_images, resize_batch
from facegan.evaluation.metrics import ks_statistic, nearest_neighbours

logger = logging.getLogger(__name__)

# dlib's own rule of thumb: descriptors of one person are usually within 0.6.
IDENTITY_THRESHOLD = 0.6

PIXEL_SIZE = 32

# A sample whose thumbnail is this close (RMS, pixel values in [0, 1]) to a training
# thumbnail is a near-exact copy. Among 3,000 UTKFace crops at 32x32, distinct photos
# were at least 0.056 apart and every pair under 0.03 was one photo stored twice.
PIXEL_COPY_DISTANCE = 0.03

# The copying warning needs the samples' median nearest-training identity distance to
# be below the held-out median and a KS test that rejects equal distributions at 1%.
COPY_P_VALUE = 0.01


def pixel_vectors(images: np.ndarray, size: int = PIXEL_SIZE, batch_size: int = 256) -> np.ndarray:
    """Flatten ``size`` x ``size`` thumbnails, scaled so that L2 distance is the RMS difference."""
    images = check_images(images)
    scale = 1 / math.sqrt(3 * size * size)
    rows = []
    for start in range(0, len(images), batch_size):
        batch = resize_batch(images[start : start + batch_size], size)
        rows.append(batch.reshape(len(batch), -1) * scale)
    if not rows:
        return np.zeros((0, 3 * size * size), dtype=np.float32)
    return torch.cat(rows).numpy()


def ks_p_value(statistic: float, size_a: int, size_b: int) -> float:
    """Return the asymptotic two-sided p-value of a two-sample KS statistic.

    Uses the Kolmogorov distribution with the small-sample correction of Stephens (1970),
    lambda = (sqrt(n) + 0.12 + 0.11 / sqrt(n)) * D with n = size_a * size_b / (size_a + size_b).
    """
    effective = size_a * size_b / (size_a + size_b)
    root = math.sqrt(effective)
    lam = (root + 0.12 + 0.11 / root) * statistic
    if lam < 1e-3:
        return 1.0
    total = sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return float(min(max(2 * total, 0.0), 1.0))


@dataclasses.dataclass
class NoveltyReport:
    """Nearest training faces of each sample and the comparison with held-out faces.

    Arrays are per sample (``identity_*``, ``pixel_*``) or per held-out face
    (``heldout_identity_distances``). Indices point into the training set.
    """

    identity_distances: np.ndarray
    identity_indices: np.ndarray
    pixel_distances: np.ndarray
    pixel_indices: np.ndarray
    heldout_identity_distances: np.ndarray
    threshold: float = IDENTITY_THRESHOLD
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def new_identity_share(self) -> float:
        """Share of samples with no training identity within ``threshold``."""
        return float((self.identity_distances > self.threshold).mean())

    @property
    def heldout_new_identity_share(self) -> float | None:
        if len(self.heldout_identity_distances) == 0:
            return None
        return float((self.heldout_identity_distances > self.threshold).mean())

    @property
    def pixel_copies(self) -> int:
        """Number of samples within ``PIXEL_COPY_DISTANCE`` of a training thumbnail."""
        return int((self.pixel_distances < PIXEL_COPY_DISTANCE).sum())

    def heldout_comparison(self) -> dict | None:
        """Medians and KS test of sample versus held-out nearest-training identity distances."""
        heldout = self.heldout_identity_distances
        if len(heldout) == 0:
            return None
        statistic = ks_statistic(self.identity_distances, heldout)
        return {
            "sample_median": float(np.median(self.identity_distances)),
            "heldout_median": float(np.median(heldout)),
            "ks_statistic": statistic,
            "ks_p_value": ks_p_value(statistic, len(self.identity_distances), len(heldout)),
        }

    def summary(self) -> dict:
        """Return the numbers for JSON output."""
        return {
            "samples": int(len(self.identity_distances)),
            "heldout_faces": int(len(self.heldout_identity_distances)),
            "identity_threshold": self.threshold,
            "new_identity_share": self.new_identity_share,
            "heldout_new_identity_share": self.heldout_new_identity_share,
            "pixel_copies": self.pixel_copies,
            "pixel_copy_distance": PIXEL_COPY_DISTANCE,
            "median_pixel_distance": float(np.median(self.pixel_distances)),
            "heldout_comparison": self.heldout_comparison(),
            "warnings": list(self.warnings),
        }


def copying_warnings(report: NoveltyReport) -> list[str]:
    """List the signs of copying that ``report`` shows. An empty list means none."""
    found = []
    if report.pixel_copies:
        found.append(
            f"{report.pixel_copies} of {len(report.pixel_distances)} samples are near-exact "
            f"pixel copies of training faces (RMS distance < {PIXEL_COPY_DISTANCE})"
        )
    comparison = report.heldout_comparison()
    if comparison is None:
        return found
    closer = comparison["sample_median"] < comparison["heldout_median"]
    if closer and comparison["ks_p_value"] < COPY_P_VALUE:
        found.append(
            "samples are closer to training identities than held-out real faces are "
            f"(median {comparison['sample_median']:.3f} against "
            f"{comparison['heldout_median']:.3f}, KS statistic "
            f"{comparison['ks_statistic']:.3f}, p = {comparison['ks_p_value']:.2g}); "
            "the generator may be memorising its training set"
        )
    return found


def novelty_report(
    sample_descriptors: np.ndarray,
    train_descriptors: np.ndarray,
    heldout_descriptors: np.ndarray,
    sample_pixels: np.ndarray,
    train_pixels: np.ndarray,
    threshold: float = IDENTITY_THRESHOLD,
) -> NoveltyReport:
    """Find each sample's nearest training face by identity and by pixels, then check copying.

    ``heldout_descriptors`` may be empty (shape (0, 128)), which skips the comparison.
    """
    if len(train_descriptors) == 0:
        raise ValueError("the training set is empty, so there is nothing to compare against")
    identity_distances, identity_indices = nearest_neighbours(sample_descriptors, train_descriptors)
    pixel_distances, pixel_indices = nearest_neighbours(sample_pixels, train_pixels)
    if len(heldout_descriptors):
        heldout_distances, _ = nearest_neighbours(heldout_descriptors, train_descriptors)
    else:
        heldout_distances = np.zeros(0, dtype=np.float32)
    report = NoveltyReport(
        identity_distances=identity_distances,
        identity_indices=identity_indices,
        pixel_distances=pixel_distances,
        pixel_indices=pixel_indices,
        heldout_identity_distances=heldout_distances,
        threshold=threshold,
    )
    report.warnings = copying_warnings(report)
    for message in report.warnings:
        logger.warning(message)
    return report


@dataclasses.dataclass
class NoveltyOptions:
    """Settings of ``facegan novelty``. The CLI flags map onto these fields one to one."""

    count: int = 1000  # generated samples
    seed: int = 0
    truncation_psi: float = 1.0
    ema: bool = True
    train_limit: int | None = None  # compare with this many training faces (default: all)
    heldout_limit: int | None = 1000
    random_heldout_share: float = 0.05  # used when the dataset marks no held-out faces
    threshold: float = IDENTITY_THRESHOLD
    batch_size: int = 64
    pairs: int = 16  # closest pairs drawn in each picture


def _descriptors_and_pixels(paths, resolution, cache_dir, batch_size):
    from facegan.evaluation.evaluate import cached_real_features
    from facegan.evaluation.realdata import load_faces

    images = load_faces(paths, resolution)
    descriptors = cached_real_features(
        paths, resolution, "dlib", cache_dir, batch_size, images=images
    )
    return images, descriptors.values, pixel_vectors(images)


def check_run_novelty(
    run_dir: Path | None, data: Path, options: NoveltyOptions, out: Path | None = None
) -> dict:
    """Generate samples from ``run_dir`` and compare them with the faces of ``data``.

    ``run_dir`` None checks the bundled model. Writes ``novelty.json``,
    ``novelty-identity-pairs.png``, ``novelty-pixel-pairs.png`` and
    ``novelty-distances.png`` to ``out`` (default: the run folder), and returns the
    summary with the paths added.
    """
    from facegan.evaluation import plots, realdata
    from facegan.evaluation.evaluate import CACHE_FOLDER, generate_samples, output_folder
    from facegan.evaluation.features import make_extractor
    from facegan.sampling import load_run

    if options.count < 1:
        raise UserError(f"invalid --n {options.count}; use 1 or more")
    out_dir = output_folder(run_dir, out)
    run = load_run(run_dir, ema=options.ema)
    resolution = run.config.resolution
    samples = generate_samples(
        run.generator, options.count, options.seed, options.truncation_psi, options.batch_size
    )
    splits = realdata.with_random_heldout(
        realdata.list_splits(data), options.random_heldout_share, options.seed
    )
    train_paths = realdata.choose(splits.train, options.train_limit, options.seed)
    heldout_paths = realdata.choose(splits.heldout, options.heldout_limit, options.seed)
    cache_dir = out_dir / CACHE_FOLDER
    train_images, train_descriptors, train_pixels = _descriptors_and_pixels(
        train_paths, resolution, cache_dir, options.batch_size
    )
    _, heldout_descriptors, _ = _descriptors_and_pixels(
        heldout_paths, resolution, cache_dir, options.batch_size
    )
    extracted = make_extractor("dlib").extract(samples, options.batch_size)
    report = novelty_report(
        extracted.values,
        train_descriptors,
        heldout_descriptors,
        pixel_vectors(samples),
        train_pixels,
        options.threshold,
    )
    summary = report.summary()
    summary.update(
        run=run.source,
        step=run.step,
        data=str(data),
        training_faces=len(train_paths),
        random_heldout=splits.random_heldout,
        face_detection_rate=float(extracted.face_found.mean()),
        options=dataclasses.asdict(options),
    )
    summary["pictures"] = {
        "identity_pairs": str(
            plots.closest_pairs_grid(
                samples, train_images, report.identity_indices, report.identity_distances,
                out_dir / "novelty-identity-pairs.png", options.pairs,
            )
        ),
        "pixel_pairs": str(
            plots.closest_pairs_grid(
                samples, train_images, report.pixel_indices, report.pixel_distances,
                out_dir / "novelty-pixel-pairs.png", options.pairs,
            )
        ),
        "distances": str(_distance_plot(report, out_dir / "novelty-distances.png")),
    }
    (out_dir / "novelty.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _distance_plot(report: NoveltyReport, path: Path) -> Path:
    from facegan.evaluation import plots

    series = {"samples": report.identity_distances}
    if len(report.heldout_identity_distances):
        series["held-out real faces"] = report.heldout_identity_distances
    return plots.distance_histogram(
        series,
        path,
        threshold=report.threshold,
        title="distance to the nearest training identity (dlib descriptor)",
    )


def format_summary(summary: dict) -> str:
    """Lay out a novelty summary for the terminal."""
    lines = [
        f"{summary['samples']} samples at step {summary['step']} against "
        f"{summary['training_faces']} training faces and {summary['heldout_faces']} held-out faces",
        f"new identities (nearest training descriptor > {summary['identity_threshold']}): "
        f"samples {summary['new_identity_share']:.1%}",
    ]
    if summary["heldout_new_identity_share"] is not None:
        lines[-1] += f", held-out real faces {summary['heldout_new_identity_share']:.1%}"
    comparison = summary["heldout_comparison"]
    if comparison is not None:
        source = "random split of DATA" if summary["random_heldout"] else "held-out faces"
        lines.append(
            f"median nearest-training identity distance: samples "
            f"{comparison['sample_median']:.3f}, {source} {comparison['heldout_median']:.3f} "
            f"(KS {comparison['ks_statistic']:.3f}, p = {comparison['ks_p_value']:.2g})"
        )
    lines.append(
        f"near-exact pixel copies: {summary['pixel_copies']} "
        f"(median pixel distance {summary['median_pixel_distance']:.3f})"
    )
    lines.append(f"face detection rate (dlib): {summary['face_detection_rate']:.1%}")
    for name, path in summary["pictures"].items():
        lines.append(f"{name.replace('_', ' ')}: {path}")
    for message in summary["warnings"]:
        lines.append(f"WARNING: {message}")
    return "\n".join(lines)

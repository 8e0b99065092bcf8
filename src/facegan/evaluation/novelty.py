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
import logging
import math

import numpy as np
import torch

from facegan.evaluation.features import check_images, _resize_batch
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
        batch = _resize_batch(images[start : start + batch_size], size)
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
    (``heldout_identity_distances``); indices point into the training set.
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
    """List the signs of copying that ``report`` shows; an empty list means none."""
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


def split_heldout(count: int, heldout_share: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split ``count`` indices at random into (training, held-out).

    Used when a dataset marks no held-out faces. The generator then trained on the
    held-out part too, so a sample that copies one of those faces is matched only to the
    training part, and copies are caught through the training part alone.
    """
    if not 0 < heldout_share < 1:
        raise ValueError(f"heldout_share must be between 0 and 1, got {heldout_share}")
    order = np.random.default_rng(seed).permutation(count)
    heldout_count = max(int(round(count * heldout_share)), 1)
    return np.sort(order[heldout_count:]), np.sort(order[:heldout_count])

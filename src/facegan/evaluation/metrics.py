"""Distances between two sets of feature vectors: Fréchet distance, KID, precision and recall.

Every function takes arrays of shape (N, D), one row per image, from the same feature
extractor, and returns plain Python numbers. Nothing here depends on a model.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch


def _as_features(features: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D), got {array.shape}")
    if array.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 rows, got {array.shape[0]}")
    return array


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the mean (D,) and covariance (D, D) of the rows, in float64."""
    array = _as_features(features, "features")
    return array.mean(axis=0), np.cov(array, rowvar=False)


# The eigen-decompositions run in torch (float64): on a 2048x2048 covariance,
# torch.linalg.eigh took 4 s against 16 s for numpy.linalg.eigh on the 2-core machine
# behind docs/benchmarks.md, and scipy.linalg.sqrtm of the product took 43 s.


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    # A covariance is symmetric positive semi-definite, but rounding can leave tiny
    # negative eigenvalues, so they are clipped to 0 before the square root.
    eigenvalues, eigenvectors = torch.linalg.eigh(torch.from_numpy(matrix))
    roots = eigenvalues.clamp(min=0.0).sqrt()
    return ((eigenvectors * roots) @ eigenvectors.T).numpy()


def trace_sqrt_product(sigma_a: np.ndarray, sigma_b: np.ndarray) -> float:
    """Compute tr(sqrtm(sigma_a @ sigma_b)) for two covariance matrices.

    sigma_a @ sigma_b is similar to the symmetric matrix S sigma_b S with S = sqrtm(sigma_a),
    so both share eigenvalues, and those of the symmetric one come from ``eigh`` without the
    complex round-off that a general ``sqrtm`` of a non-symmetric product produces.
    """
    root_a = _symmetric_sqrt(sigma_a)
    middle = root_a @ sigma_b @ root_a
    middle = (middle + middle.T) / 2
    eigenvalues = torch.linalg.eigvalsh(torch.from_numpy(middle))
    return float(eigenvalues.clamp(min=0.0).sqrt().sum())


def frechet_distance_from_statistics(
    mean_a: np.ndarray, sigma_a: np.ndarray, mean_b: np.ndarray, sigma_b: np.ndarray
) -> float:
    """Compute the Fréchet distance between Gaussians N(mean_a, sigma_a) and N(mean_b, sigma_b).

    FD = |mean_a - mean_b|^2 + tr(sigma_a) + tr(sigma_b) - 2 tr(sqrtm(sigma_a sigma_b)),
    as in Heusel et al. 2017 (the formula behind FID).
    """
    if mean_a.shape != mean_b.shape or sigma_a.shape != sigma_b.shape:
        raise ValueError(
            f"statistics differ in dimension: means {mean_a.shape} vs {mean_b.shape}, "
            f"covariances {sigma_a.shape} vs {sigma_b.shape}"
        )
    difference = mean_a - mean_b
    covariance_term = np.trace(sigma_a) + np.trace(sigma_b)
    covariance_term -= 2 * trace_sqrt_product(sigma_a, sigma_b)
    # The exact value is >= 0; float rounding can push a near-zero result below it.
    return max(float(difference @ difference + covariance_term), 0.0)


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Compute the Fréchet distance between Gaussians fitted to two feature sets."""
    mean_a, sigma_a = feature_statistics(features_a)
    mean_b, sigma_b = feature_statistics(features_b)
    return frechet_distance_from_statistics(mean_a, sigma_a, mean_b, sigma_b)


@dataclasses.dataclass(frozen=True)
class KIDResult:
    """Kernel Inception Distance averaged over random subsets.

    ``std`` is the spread of the per-subset estimates. ``standard_error`` divides it by
    the square root of the number of disjoint subsets the smaller set could fill
    (N / subset_size), because overlapping subsets carry no more information than that.
    """

    mean: float
    std: float
    standard_error: float
    subset_size: int
    num_subsets: int


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # The cubic kernel of Bińkowski et al. 2018: k(x, y) = (x.y / D + 1)^3.
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Compute the unbiased estimate of MMD^2 with the cubic polynomial kernel.

    The within-set terms leave out the diagonal (k(x_i, x_i)), which is what removes the
    bias, so the estimate can be slightly negative when both sets share a distribution.
    """
    m, n = x.shape[0], y.shape[0]
    kernel_xx = _polynomial_kernel(x, x)
    kernel_yy = _polynomial_kernel(y, y)
    kernel_xy = _polynomial_kernel(x, y)
    term_xx = (kernel_xx.sum() - np.trace(kernel_xx)) / (m * (m - 1))
    term_yy = (kernel_yy.sum() - np.trace(kernel_yy)) / (n * (n - 1))
    return float(term_xx + term_yy - 2 * kernel_xy.mean())


def kernel_inception_distance(
    features_a: np.ndarray,
    features_b: np.ndarray,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> KIDResult:
    """Compute KID (unbiased MMD^2, cubic kernel) over random subsets of both sets.

    ``subset_size`` is capped at half the smaller set, so that at least two disjoint
    subsets fit and the spread between subsets means something.
    """
    a = _as_features(features_a, "features_a")
    b = _as_features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be at least 1, got {num_subsets}")
    smaller = min(a.shape[0], b.shape[0])
    size = max(min(subset_size, smaller // 2), 2)
    rng = np.random.default_rng(seed)
    estimates = np.empty(num_subsets)
    for index in range(num_subsets):
        rows_a = rng.choice(a.shape[0], size, replace=False)
        rows_b = rng.choice(b.shape[0], size, replace=False)
        estimates[index] = unbiased_mmd2(a[rows_a], b[rows_b])
    std = float(estimates.std(ddof=1)) if num_subsets > 1 else float("nan")
    # NOTE: an approximation. Overlapping subsets are correlated, so the error is taken
    # from the number of disjoint subsets the data holds, not from num_subsets.
    disjoint_subsets = max(smaller // size, 1)
    return KIDResult(
        mean=float(estimates.mean()),
        std=std,
        standard_error=float(std / np.sqrt(disjoint_subsets)),
        subset_size=size,
        num_subsets=num_subsets,
    )


def _kth_neighbour_radii(features: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
    # Column 0 of the sorted distances is the point itself (distance 0), so the k-th
    # neighbour is column k.
    radii = []
    for start in range(0, len(features), batch_size):
        distances = torch.cdist(features[start : start + batch_size], features)
        radii.append(distances.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def _share_inside_manifold(
    queries: torch.Tensor, support: torch.Tensor, radii: torch.Tensor, batch_size: int
) -> float:
    inside = 0
    for start in range(0, len(queries), batch_size):
        distances = torch.cdist(queries[start : start + batch_size], support)
        inside += int((distances <= radii[None, :]).any(dim=1).sum())
    return inside / len(queries)


def precision_recall(
    real_features: np.ndarray, fake_features: np.ndarray, k: int = 3, batch_size: int = 1024
) -> tuple[float, float]:
    """Compute precision and recall with k-nearest-neighbour manifolds.

    From Kynkäänniemi et al. 2019: each set's manifold is the union of balls around its
    points, each ball reaching the point's k-th nearest neighbour in the same set.
    Precision is the share of fake points inside the real manifold (quality), recall the
    share of real points inside the fake manifold (coverage). The paper uses k = 3.
    """
    real = torch.from_numpy(_as_features(real_features, "real_features")).float()
    fake = torch.from_numpy(_as_features(fake_features, "fake_features")).float()
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dimensions differ: {real.shape[1]} vs {fake.shape[1]}")
    if k < 1 or k >= min(len(real), len(fake)):
        raise ValueError(f"k must be between 1 and the smaller set size minus 1, got {k}")
    real_radii = _kth_neighbour_radii(real, k, batch_size)
    fake_radii = _kth_neighbour_radii(fake, k, batch_size)
    precision = _share_inside_manifold(fake, real, real_radii, batch_size)
    recall = _share_inside_manifold(real, fake, fake_radii, batch_size)
    return precision, recall


def nearest_neighbours(
    queries: np.ndarray, references: np.ndarray, batch_size: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Find each query's nearest reference by Euclidean distance.

    Returns (distances, indices), both of shape (len(queries),).
    """
    query_tensor = torch.from_numpy(np.asarray(queries, dtype=np.float32))
    reference_tensor = torch.from_numpy(np.asarray(references, dtype=np.float32))
    distances, indices = [], []
    for start in range(0, len(query_tensor), batch_size):
        block = torch.cdist(query_tensor[start : start + batch_size], reference_tensor)
        values, positions = block.min(dim=1)
        distances.append(values)
        indices.append(positions)
    return torch.cat(distances).numpy(), torch.cat(indices).numpy()


def ks_statistic(sample_a: np.ndarray, sample_b: np.ndarray) -> float:
    """Compute the two-sample Kolmogorov-Smirnov statistic: the largest gap between ECDFs."""
    a = np.sort(np.asarray(sample_a, dtype=np.float64))
    b = np.sort(np.asarray(sample_b, dtype=np.float64))
    if len(a) == 0 or len(b) == 0:
        raise ValueError("both samples need at least one value")
    points = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, points, side="right") / len(a)
    cdf_b = np.searchsorted(b, points, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())

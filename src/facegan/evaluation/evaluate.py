"""Score a trained run against real faces: ``facegan evaluate RUN --data DATA``.

For each feature extractor the run's samples and the real faces give four numbers:
Fréchet distance (``fd_dlib``, ``fd_effnet``, ``fid_inception``), KID with its standard
error, and k-NN precision and recall. The dlib extractor adds the face-detection rate:
the share of images in which dlib's detector finds a face.

Both sample counts move the numbers. FD is biased upwards at small N, because the error
of each sample covariance adds to its trace term, while KID is unbiased. Compare runs
only at equal counts, resolution and extractor.

For a cheap check during training, compute the real features once with
:func:`real_features_for_training`, then call :func:`quick_metrics` every few thousand
steps::

    real = real_features_for_training(data, config.resolution, count=500)
    ...
    stats.update(quick_metrics(generator_ema, real, count=500))
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facegan.errors import UserError
from facegan.evaluation import features as feature_module
from facegan.evaluation import realdata
from facegan.evaluation.features import ExtractedFeatures
from facegan.evaluation.metrics import frechet_distance, kernel_inception_distance
from facegan.evaluation.metrics import precision_recall

logger = logging.getLogger(__name__)

RESULTS_NAME = "evaluation.json"
HISTORY_NAME = "evaluation.jsonl"
CACHE_FOLDER = "eval-cache"

# Nearest neighbours for the precision/recall manifolds, as in Kynkäänniemi et al. 2019.
PRECISION_RECALL_K = 3


@dataclasses.dataclass
class EvaluateOptions:
    """Settings of one evaluation. The CLI flags map onto these fields one to one."""

    count: int = 1000  # generated samples
    real_count: int | None = None  # real faces (default: same as count)
    extractors: tuple[str, ...] = ("dlib", "effnet", "inception")
    seed: int = 0  # latent seed of the samples and of the choice of real faces
    truncation_psi: float = 1.0
    ema: bool = True
    batch_size: int = 64
    kid_subsets: int = 100
    kid_subset_size: int = 1000


def compute_metrics(
    name: str,
    real: ExtractedFeatures,
    fake: ExtractedFeatures,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Compute FD, KID, precision and recall of one extractor's features, with named keys."""
    prefix = feature_module.EXTRACTORS[name].metric_prefix
    kid = kernel_inception_distance(
        real.values, fake.values, kid_subsets, kid_subset_size, seed=seed
    )
    precision, recall = precision_recall(real.values, fake.values, k=PRECISION_RECALL_K)
    metrics = {
        prefix: frechet_distance(real.values, fake.values),
        f"kid_{name}": kid.mean,
        f"kid_{name}_se": kid.standard_error,
        f"precision_{name}": precision,
        f"recall_{name}": recall,
    }
    if fake.face_found is not None:
        metrics["face_detection_rate"] = float(fake.face_found.mean())
    if real.face_found is not None:
        metrics["real_face_detection_rate"] = float(real.face_found.mean())
    return metrics


def _cache_key(paths: list[Path], resolution: int, extractor: str) -> str:
    digest = hashlib.sha1(f"{extractor} {resolution}".encode())
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.resolve()} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def cached_real_features(
    paths: list[Path],
    resolution: int,
    extractor_name: str,
    cache_dir: Path | None,
    batch_size: int = 64,
    images: np.ndarray | None = None,
) -> ExtractedFeatures:
    """Extract features of the real faces at ``paths``, reusing a cache file when it matches.

    The cache file name contains a hash of the paths, their sizes and modification times,
    the resolution and the extractor, so a changed dataset is never served stale.
    """
    cache_file = None
    if cache_dir is not None:
        key = _cache_key(paths, resolution, extractor_name)
        cache_file = Path(cache_dir) / f"real-{extractor_name}-{key}.npz"
        if cache_file.exists():
            with np.load(cache_file) as stored:
                found = stored["face_found"] if "face_found" in stored else None
                logger.info("reusing real %s features from %s", extractor_name, cache_file)
                return ExtractedFeatures(stored["values"], found)
    if images is None:
        images = realdata.load_faces(paths, resolution)
    extracted = feature_module.make_extractor(extractor_name).extract(images, batch_size)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"values": extracted.values}
        if extracted.face_found is not None:
            arrays["face_found"] = extracted.face_found
        np.savez(cache_file, **arrays)
    return extracted


def check_extractors(names: tuple[str, ...]) -> None:
    """Raise UserError naming the first extractor that is unknown or not installed."""
    if not names:
        raise UserError("no feature extractor chosen; pass --extractors dlib,effnet,inception")
    for name in names:
        reason = feature_module.extractor_available(name)
        if reason is not None:
            raise UserError(f"--extractors {name}: {reason}")


def generate_samples(
    generator: nn.Module, count: int, seed: int, truncation_psi: float, batch_size: int = 64
) -> np.ndarray:
    """Generate ``count`` uint8 NHWC samples with the sampler's seeded latents."""
    from facegan.sampling import generate, sample_latents

    latents = sample_latents(count, generator.z_dim, seed)
    device = next(generator.parameters()).device
    return generate(generator, latents.to(device), batch_size, truncation_psi)


def output_folder(run_dir: Path | None, out: Path | None) -> Path:
    """Return where results go: ``out`` if given, else the run folder (or the checkpoint's).

    The bundled model (``run_dir`` None) has no folder, so its results go to
    ``evaluation-bundled`` in the working directory unless ``out`` is given.
    """
    if out is not None:
        folder = Path(out)
    elif run_dir is None:
        folder = Path("evaluation-bundled")
    else:
        folder = Path(run_dir) if Path(run_dir).is_dir() else Path(run_dir).parent
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def evaluate_run(
    run_dir: Path | None, data: Path, options: EvaluateOptions, out: Path | None = None
) -> dict:
    """Generate samples from ``run_dir``, compare them with faces of ``data``, write JSON.

    ``run_dir`` None evaluates the bundled model. Returns the results dictionary, which
    is also written to ``evaluation.json`` and appended as one line to
    ``evaluation.jsonl`` in :func:`output_folder`.
    """
    from facegan.sampling import load_run

    minimum = 2 * PRECISION_RECALL_K
    if options.count < minimum:
        raise UserError(
            f"invalid --n {options.count}; evaluation needs at least {minimum} samples"
        )
    check_extractors(options.extractors)
    run = load_run(run_dir, ema=options.ema)
    resolution = run.config.resolution
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    samples = generate_samples(
        run.generator, options.count, options.seed, options.truncation_psi, options.batch_size
    )
    seconds["generate"] = time.perf_counter() - start

    splits = realdata.list_splits(data)
    real_paths = realdata.choose(splits.train, options.real_count or options.count, options.seed)
    if len(real_paths) < minimum:
        raise UserError(
            f"only {len(real_paths)} real faces in {data}; evaluation needs at least {minimum}"
        )
    out_dir = output_folder(run_dir, out)
    cache_dir = out_dir / CACHE_FOLDER

    metrics: dict[str, float] = {}
    for name in options.extractors:
        start = time.perf_counter()
        real = cached_real_features(real_paths, resolution, name, cache_dir, options.batch_size)
        seconds[f"real_{name}"] = time.perf_counter() - start
        start = time.perf_counter()
        fake = feature_module.make_extractor(name).extract(samples, options.batch_size)
        seconds[f"samples_{name}"] = time.perf_counter() - start
        start = time.perf_counter()
        metrics.update(
            compute_metrics(
                name, real, fake, options.kid_subsets, options.kid_subset_size, options.seed
            )
        )
        seconds[f"metrics_{name}"] = time.perf_counter() - start

    results = {
        "run": run.source,
        "step": run.step,
        "data": str(data),
        "samples": int(len(samples)),
        "real_faces": len(real_paths),
        "resolution": resolution,
        "options": dataclasses.asdict(options),
        "metrics": metrics,
        "seconds": seconds,
    }
    results["output"] = str(write_results(out_dir, results))
    return results


def write_results(out_dir: Path, results: dict) -> Path:
    """Write ``results`` to ``evaluation.json`` and append it to ``evaluation.jsonl``."""
    path = out_dir / RESULTS_NAME
    path.write_text(json.dumps(results, indent=2) + "\n")
    with open(out_dir / HISTORY_NAME, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(results) + "\n")
    return path


def format_table(results: dict) -> str:
    """Lay out the metrics as one row per extractor, for the terminal."""
    metrics = results["metrics"]
    names = [name for name in results["options"]["extractors"]]
    header = f"{'extractor':<10} {'metric':<14} {'FD':>10} {'KID':>10} {'± se':>9} "
    header += f"{'precision':>9} {'recall':>7}"
    lines = [header, "-" * len(header)]
    for name in names:
        prefix = feature_module.EXTRACTORS[name].metric_prefix
        lines.append(
            f"{name:<10} {prefix:<14} {metrics[prefix]:>10.4g} {metrics[f'kid_{name}']:>10.4g} "
            f"{metrics[f'kid_{name}_se']:>9.2g} {metrics[f'precision_{name}']:>9.3f} "
            f"{metrics[f'recall_{name}']:>7.3f}"
        )
    if "face_detection_rate" in metrics:
        lines.append(
            f"face detection rate (dlib): samples {metrics['face_detection_rate']:.1%}, "
            f"real faces {metrics['real_face_detection_rate']:.1%}"
        )
    lines.append(
        f"{results['samples']} samples at step {results['step']} against "
        f"{results['real_faces']} real faces, {results['resolution']}x{results['resolution']}"
    )
    return "\n".join(lines)


@dataclasses.dataclass
class RealFeatures:
    """Real-face features per extractor name, computed once for :func:`quick_metrics`."""

    features: dict[str, ExtractedFeatures]
    resolution: int


def real_features_for_training(
    data: Path,
    resolution: int,
    count: int = 500,
    extractors: tuple[str, ...] = ("dlib",),
    seed: int = 0,
) -> RealFeatures:
    """Load ``count`` training faces of ``data`` and extract their features once."""
    check_extractors(extractors)
    paths = realdata.choose(realdata.list_splits(data).train, count, seed)
    images = realdata.load_faces(paths, resolution, progress=False)
    features = {
        name: feature_module.make_extractor(name).extract(images, progress=False)
        for name in extractors
    }
    return RealFeatures(features, resolution)


def quick_metrics(
    generator: nn.Module,
    real_features: RealFeatures,
    count: int = 500,
    seed: int = 12345,
    kid_subsets: int = 20,
) -> dict[str, float]:
    """Score ``generator`` against precomputed real features; for use inside training.

    Generates ``count`` samples from fixed latents (``seed``), so successive calls differ
    only by the generator. The generator is put in eval mode for the call and restored
    afterwards. Returns a flat dict of the same keys as ``facegan evaluate`` writes.
    With the dlib extractor, 500 samples take about 40 s on one CPU core.
    """
    was_training = generator.training
    generator.eval()
    try:
        with torch.no_grad():
            samples = generate_samples(generator, count, seed, 1.0)
    finally:
        generator.train(was_training)
    if samples.shape[1] != real_features.resolution:
        raise ValueError(
            f"generator makes {samples.shape[1]}px images but the real features were "
            f"computed at {real_features.resolution}px"
        )
    metrics = {}
    for name, real in real_features.features.items():
        fake = feature_module.make_extractor(name).extract(samples, progress=False)
        metrics.update(compute_metrics(name, real, fake, kid_subsets, seed=seed))
    return metrics

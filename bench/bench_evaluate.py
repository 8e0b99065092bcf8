"""Time ``facegan evaluate`` by stage and write the result to docs/benchmarks.md.

    python bench/bench_evaluate.py [--samples 1000] [--large 10000] [--threads 2]

Stages: generating the samples (a freshly initialised cpu-64 generator, because speed
does not depend on the weights), loading the real faces (UTKFace crops resized to 64x64), each
feature extractor on real faces and on samples, and the metric maths. Extractors run on
``--samples`` images; their time at ``--large`` images is extrapolated linearly,
because each image costs the same. The metric maths does not scale linearly
(precision/recall is quadratic in N), so it is measured at ``--large`` on random
features of the right width.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import time
from pathlib import Path

import numpy as np
import torch

from facegan.config import resolve_config
from facegan.evaluation import features, realdata
from facegan.evaluation.evaluate import compute_metrics, generate_samples
from facegan.evaluation.features import ExtractedFeatures
from facegan.models import build_models

ROOT = Path(__file__).resolve().parents[1]
UTKFACE = ROOT.parent / "shared" / "data" / "utkface-200"
BENCHMARKS = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- bench:evaluate -->", "<!-- /bench:evaluate -->"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def measure_extractors(samples: np.ndarray, real: np.ndarray, names) -> dict[str, dict]:
    rows = {}
    for name in names:
        reason = features.extractor_available(name)
        if reason is not None:
            print(f"skipping {name}: {reason}")
            continue
        extractor = features.make_extractor(name)
        real_features, real_seconds = timed(extractor.extract, real)
        fake_features, fake_seconds = timed(extractor.extract, samples)
        metrics, metric_seconds = timed(compute_metrics, name, real_features, fake_features)
        rows[name] = {
            "dim": extractor.dim,
            "real_seconds": real_seconds,
            "sample_seconds": fake_seconds,
            "metric_seconds": metric_seconds,
            "metrics": metrics,
        }
        print(f"{name}: real {real_seconds:.1f} s, samples {fake_seconds:.1f} s, "
              f"metrics {metric_seconds:.1f} s")
    return rows


def measure_large_metrics(count: int, dims: dict[str, int]) -> dict[str, float]:
    rng = np.random.default_rng(0)
    seconds = {}
    for name, dim in dims.items():
        real = ExtractedFeatures(rng.normal(size=(count, dim)).astype(np.float32))
        fake = ExtractedFeatures(rng.normal(size=(count, dim)).astype(np.float32))
        _, seconds[name] = timed(compute_metrics, name, real, fake)
        print(f"{name}: metric maths at {count} samples {seconds[name]:.1f} s")
    return seconds


def render(args, generate_seconds, load_seconds, rows, large_metrics) -> str:
    scale = args.large / args.samples
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    lines = [
        START,
        "## facegan evaluate",
        "",
        f"Measured {datetime.date.today().isoformat()} on {cpu_model()}, "
        f"{os.cpu_count()} cores shared with other jobs, torch {torch.__version__} with "
        f"{args.threads} threads, by `python bench/bench_evaluate.py --samples {args.samples} "
        f"--large {args.large}`. Generator: cpu-64 preset (DCGAN, 64x64). Real faces: "
        "UTKFace crops resized to 64x64. Each extractor sees N samples and N real faces; "
        f"KID uses 100 subsets of up to 1,000. Load average (1, 5, 15 min) at the end: {load}.",
        "",
        f"| stage | {args.samples:,} samples (measured) | {args.large:,} samples |",
        "|---|---:|---:|",
        f"| generate samples | {generate_seconds:.1f} s | {generate_seconds * scale:.0f} s (extrapolated) |",
        f"| load real faces | {load_seconds:.1f} s | {load_seconds * scale:.0f} s (extrapolated) |",
    ]
    total_small = generate_seconds + load_seconds
    total_large = (generate_seconds + load_seconds) * scale
    for name, row in rows.items():
        extract = row["real_seconds"] + row["sample_seconds"]
        per_image = extract / (2 * args.samples) * 1000
        lines.append(
            f"| {name} features, real + samples ({per_image:.0f} ms per image) | "
            f"{extract:.1f} s | {extract * scale:.0f} s (extrapolated) |"
        )
        lines.append(
            f"| {name} metric maths (FD, KID, precision/recall, {row['dim']}-d) | "
            f"{row['metric_seconds']:.1f} s | {large_metrics[name]:.1f} s (measured) |"
        )
        total_small += extract + row["metric_seconds"]
        total_large += extract * scale + large_metrics[name]
    lines.append(f"| **total** | **{total_small / 60:.1f} min** | **{total_large / 60:.0f} min** "
                 "(mostly extrapolated) |")
    lines += [
        "",
        "The feature extractors take nearly all of the time: dlib's descriptor network runs "
        "one face at a time, and Inception-v3 at 299x299 is the largest network. Real-face "
        "features are cached in `RUN/eval-cache/`, so a second evaluation of the same run or "
        "of another run at the same resolution and seed pays only for the samples.",
        "",
        "Sanity values from this run (untrained generator, so the samples are not faces):",
        "",
        "| extractor | FD | KID | precision | recall |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        metrics = row["metrics"]
        prefix = features.EXTRACTORS[name].metric_prefix
        lines.append(
            f"| {name} (`{prefix}`) | {metrics[prefix]:.4g} | {metrics[f'kid_{name}']:.4g} | "
            f"{metrics[f'precision_{name}']:.3f} | {metrics[f'recall_{name}']:.3f} |"
        )
    lines.append(END)
    return "\n".join(lines)


def write_section(text: str) -> None:
    BENCHMARKS.parent.mkdir(parents=True, exist_ok=True)
    current = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.DOTALL)
    if pattern.search(current):
        updated = pattern.sub(lambda _: text, current)
    else:
        updated = current.rstrip() + "\n\n" + text + "\n"
    BENCHMARKS.write_text(updated)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000, help="measured sample count")
    parser.add_argument("--large", type=int, default=10000, help="extrapolated sample count")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument(
        "--extractors", default="dlib,effnet,inception", help="comma-separated extractors"
    )
    args = parser.parse_args()
    if not UTKFACE.is_dir():
        raise SystemExit(f"UTKFace faces not found at {UTKFACE}; the benchmark needs them")
    torch.set_num_threads(args.threads)

    config = resolve_config("cpu-64", {})
    generator, _ = build_models(config)
    generator.eval()
    samples, generate_seconds = timed(generate_samples, generator, args.samples, 0, 1.0)
    paths = realdata.choose(realdata.list_splits(UTKFACE).train, args.samples, seed=0)
    real, load_seconds = timed(realdata.load_faces, paths, config.resolution)
    print(f"generate {generate_seconds:.1f} s, load {load_seconds:.1f} s")

    rows = measure_extractors(samples, real, args.extractors.split(","))
    large = measure_large_metrics(args.large, {name: row["dim"] for name, row in rows.items()})
    write_section(render(args, generate_seconds, load_seconds, rows, large))
    print(f"wrote the evaluate section of {BENCHMARKS}")


if __name__ == "__main__":
    main()

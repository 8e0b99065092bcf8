"""Measure aligned ``facegan prepare`` throughput with one worker and with all cores.

Usage::

    python bench/bench_prepare.py [--photos DIR] [--size 256] [--workers N] [--rounds 2]
                                  [--repeat 2] [--grid /tmp/aligned.png]

Each round runs prepare on the photo folder once with 1 worker and once with N workers
(default: all cores), each into a fresh temporary folder. The best round of each is kept,
because other jobs on a shared machine only ever slow a run down. ``--repeat R``
links every photo R times under different names: the copies are exact duplicates, so only
the first is written, but every copy is decoded, detected and aligned, which gives the
workers more photos to share. The figures replace the section between the
``bench:prepare`` markers in docs/benchmarks.md; the rest of that file is kept.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from facegan.data import align, dlib_models
from facegan.data.facecrop import AlignOptions
from facegan.data.prepare import prepare, read_manifest

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PHOTOS = ROOT.parent / "shared" / "data" / "photos"
DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN = "<!-- bench:prepare -->"
END = "<!-- /bench:prepare -->"
GRID_TILE = 128
GRID_COLUMNS = 8
GRID_TICK = 16


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="folder of photos")
    parser.add_argument("--size", type=int, default=256, help="output size in pixels")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="workers of the parallel run"
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds of 1 and N workers")
    parser.add_argument("--repeat", type=int, default=2, help="copies of each photo to process")
    parser.add_argument("--grid", type=Path, default=None, help="write a PNG grid of the faces")
    parser.add_argument("--no-docs", action="store_true", help="do not update the docs page")
    return parser.parse_args(argv)


def link_photos(photos: Path, folder: Path, repeat: int) -> Path:
    """Return a folder that contains ``repeat`` symbolic links to every photo."""
    if repeat == 1:
        return photos
    for copy in range(repeat):
        target = folder / f"copy{copy}"
        target.mkdir(parents=True)
        for path in sorted(photos.iterdir()):
            if path.is_file():
                (target / path.name).symlink_to(path.resolve())
    return folder


def cpu_seconds() -> float:
    """User plus system CPU time of this process and of its finished child processes."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def forget_models() -> None:
    """Drop this process's loaded dlib models, so that every run pays for loading them."""
    for loader in (
        dlib_models.face_detector,
        dlib_models.shape_predictor,
        dlib_models.face_encoder,
    ):
        loader.cache_clear()


def timed_run(src: Path, size: int, workers: int) -> dict:
    """Run prepare once into a temporary folder and return its figures."""
    forget_models()
    with tempfile.TemporaryDirectory(prefix="bench_prepare_") as out:
        cpu_before = cpu_seconds()
        start = time.perf_counter()
        summary = prepare(src, Path(out), size, workers, align=AlignOptions())
        seconds = time.perf_counter() - start
        cpu = cpu_seconds() - cpu_before
        records = read_manifest(Path(out))
        result = {
            "workers": workers,
            "seconds": seconds,
            "photos": summary.found,
            "faces": summary.faces_aligned,
            "written": summary.written,
            "first_result": summary.first_result_seconds or 0.0,
            "faces_per_second": summary.faces_aligned / seconds,
            "steady_faces_per_second": steady_rate(summary),
            "cpu_per_face": cpu / max(summary.faces_aligned, 1),
            "records": records,
            "images": {r["path"]: np.asarray(Image.open(Path(out) / r["path"])) for r in records
                       if r["status"] == "written"},
        }
    return result


def steady_rate(summary) -> float:
    """Estimate faces/s once the workers are running, from the first result to the last.

    Startup (spawning workers, loading the models) ends roughly when the first result
    arrives. The photos after it, times the mean faces per photo, over the time after it.
    """
    photos = summary.found - summary.resumed
    after_first = summary.seconds - (summary.first_result_seconds or 0.0)
    if photos < 2 or after_first <= 0:
        return float("nan")
    return (photos - 1) * (summary.faces_aligned / photos) / after_first


def eye_positions(record: dict) -> np.ndarray:
    """Map a record's source eye centres into its output image (2x2: left, right)."""
    landmarks = np.asarray(record["landmarks"])
    points = align.face_points(landmarks)
    to_output = align.invert_affine(np.asarray(record["matrix"]))
    return align.map_points(to_output, np.stack([points.eye_left, points.eye_right]))


def eye_statistics(records: list[dict], size: int) -> dict:
    """Spread of the eye line over the written faces, in degrees and output pixels."""
    eyes = np.stack([eye_positions(r) for r in records if r["status"] == "written"])
    delta = eyes[:, 1] - eyes[:, 0]
    angles = np.degrees(np.arctan2(delta[:, 1], delta[:, 0]))
    middle = eyes.mean(axis=1)
    return {
        "max_angle": float(np.abs(angles).max()),
        "middle_x_std": float(middle[:, 0].std()),
        "middle_y_std": float(middle[:, 1].std()),
        "middle_y_mean": float(middle[:, 1].mean()),
        "size": size,
    }


def write_grid(result: dict, path: Path, size: int) -> None:
    """Tile the written faces, with ticks at the mean eye height, into one PNG."""
    written = sorted(
        (r for r in result["records"] if r["status"] == "written"), key=lambda r: r["path"]
    )
    rows = -(-len(written) // GRID_COLUMNS)
    grid = Image.new("RGB", (GRID_COLUMNS * GRID_TILE, rows * GRID_TILE), "white")
    eye_height = eye_statistics(result["records"], size)["middle_y_mean"] * GRID_TILE / size
    for index, record in enumerate(written):
        tile = Image.fromarray(result["images"][record["path"]]).resize(
            (GRID_TILE, GRID_TILE), Image.Resampling.LANCZOS
        )
        draw = ImageDraw.Draw(tile)
        # Ticks at both edges mark the mean eye height without covering the eyes.
        for start in (0, GRID_TILE - GRID_TICK):
            draw.line(
                [(start, eye_height), (start + GRID_TICK, eye_height)], fill=(0, 255, 255), width=2
            )
        grid.paste(tile, ((index % GRID_COLUMNS) * GRID_TILE, (index // GRID_COLUMNS) * GRID_TILE))
    path.parent.mkdir(parents=True, exist_ok=True)
    # 256 colours keep the page light (about a third of the full-colour size) and still
    # show the alignment clearly.
    grid.quantize(256, dither=Image.Dither.FLOYDSTEINBERG).save(path, optimize=True)


def _load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def format_section(
    best: dict[int, dict], eyes: dict, args: argparse.Namespace, load_before: float
) -> str:
    single, parallel = best[1], best[args.workers]
    ratio = parallel["faces_per_second"] / single["faces_per_second"]
    steady_ratio = parallel["steady_faces_per_second"] / single["steady_faces_per_second"]
    load = _load_average()
    lines = [
        BEGIN,
        "## prepare: face alignment throughput",
        "",
        f"`python bench/bench_prepare.py` on {datetime.date.today().isoformat()}: "
        f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {load_before:.1f} before the runs and {load:.1f} after. "
        f"{single['photos']} photos "
        f"({args.repeat} cop{'y' if args.repeat == 1 else 'ies'} of each development photo), "
        f"`--size {args.size}`, default alignment options, best of {args.rounds} rounds.",
        "",
        "| workers | seconds | faces aligned | faces/s | first result after (s) | "
        "faces/s after the first result | CPU s per face |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in (single, parallel):
        lines.append(
            f"| {result['workers']} | {result['seconds']:.1f} | {result['faces']} | "
            f"{result['faces_per_second']:.2f} | {result['first_result']:.1f} | "
            f"{result['steady_faces_per_second']:.2f} | {result['cpu_per_face']:.2f} |"
        )
    if max(load_before, load) > (os.cpu_count() or 1):
        lines += [
            "",
            "NOTE: other processes kept the cores busy during these runs (load average above "
            "the core count), so the workers shared the cores with them and the speed-up "
            "does not show what the workers reach on an idle machine.",
        ]
    lines += [
        "",
        f"Speed-up with {args.workers} workers: {ratio:.2f}x overall, {steady_ratio:.2f}x "
        "after the first result. The overall times include loading the dlib models once "
        "and starting the workers. The rate after the first result leaves that startup out "
        "and is an estimate: photos after the first, times the mean faces per photo, over "
        "the time after it. CPU seconds per face add up all processes; equal values for 1 "
        "and N workers mean the workers repeat no work, so on idle cores the speed-up is "
        "limited only by startup and by the last photos running alone.",
        "",
        f"Eye line over the {single['written']} written faces (from the source landmarks "
        f"mapped into the output): max tilt {eyes['max_angle']:.1f} degrees, eye midpoint "
        f"spread (std) {eyes['middle_x_std']:.1f} px across and {eyes['middle_y_std']:.1f} px "
        f"down at {args.size} px.",
        END,
    ]
    return "\n".join(lines)


def update_docs(section: str) -> None:
    """Replace the prepare section of docs/benchmarks.md, creating the file if needed."""
    text = DOCS.read_text(encoding="utf-8") if DOCS.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text(text, encoding="utf-8")


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.photos.is_dir():
        print(f"photo folder {args.photos} not found; pass one with --photos", file=sys.stderr)
        return 2
    best: dict[int, dict] = {}
    load_before = _load_average()
    with tempfile.TemporaryDirectory(prefix="bench_photos_") as links:
        src = link_photos(args.photos, Path(links), args.repeat)
        for round_index in range(args.rounds):
            for workers in sorted({1, args.workers}):
                result = timed_run(src, args.size, workers)
                print(
                    f"round {round_index + 1}: {workers} workers, {result['seconds']:.1f} s, "
                    f"{result['faces']} faces, {result['faces_per_second']:.2f} faces/s, "
                    f"{result['steady_faces_per_second']:.2f} after the first result"
                )
                if result["faces_per_second"] > best.get(workers, {}).get("faces_per_second", 0):
                    best[workers] = result
    eyes = eye_statistics(best[1]["records"], args.size)
    section = format_section(best, eyes, args, load_before)
    print(section)
    if args.grid is not None:
        write_grid(best[1], args.grid, args.size)
        print(f"grid: {args.grid}")
    if not args.no_docs:
        update_docs(section)
        print(f"updated {DOCS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

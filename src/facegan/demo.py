"""The README's main job: prepare a folder of faces, train the CPU preset, sample new faces."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from facegan.config import resolve_config
from facegan.data.prepare import prepare
from facegan.sampling import sample
from facegan.training.checkpoint import CHECKPOINT_NAME
from facegan.training.loop import train

log = logging.getLogger(__name__)

DEMO_PRESET = "cpu-64"
DEMO_SAMPLES = 64


@dataclass
class DemoResult:
    """Summary of a demo: steps trained and the folder and grid of new faces."""

    step: int
    images_seen: int
    seconds: float
    samples_dir: Path
    samples_grid: Path


def _dataset_for(data: Path, out: Path, resolution: int, workers: int | None) -> Path:
    """Use ``data`` as it is when it is already a dataset at ``resolution``, else prepare it."""
    header = data / "dataset.json"
    if header.exists() and json.loads(header.read_text()).get("size") == resolution:
        return data
    dataset = out / "dataset"
    log.info("preparing %s into %s at %dx%d", data, dataset, resolution, resolution)
    summary = prepare(data, dataset, resolution, workers)
    log.info("dataset: %d written, %d skipped", summary.written + summary.resumed, summary.skipped)
    return dataset


def run_demo(
    data: Path, out: Path, minutes: float, workers: int | None = None, threads: int = 0
) -> DemoResult:
    """Prepare ``data``, train ``cpu-64`` for ``minutes`` and write 64 samples.

    A second call with the same ``out`` resumes the run and trains ``minutes`` more.
    """
    data, out = Path(data), Path(out)
    config = resolve_config(DEMO_PRESET, {"minutes": minutes, "threads": threads})
    dataset = _dataset_for(data, out, config.resolution, workers)
    run_dir = out / "run"
    resume = (run_dir / CHECKPOINT_NAME).exists()
    result = train(dataset, run_dir, config, resume=resume)
    samples_dir = out / "samples"
    _, grid = sample(run_dir, DEMO_SAMPLES, seed=0, truncation_psi=1.0, out=samples_dir)
    return DemoResult(result.step, result.images_seen, result.seconds, samples_dir, grid)

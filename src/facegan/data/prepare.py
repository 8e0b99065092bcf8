"""Turn a folder of face photos into a training dataset: ``facegan prepare SRC OUT``.

Two modes share one layout. With ``align`` set (the command line's default) every photo
goes through dlib detection and FFHQ-style alignment, and each chosen face becomes one
PNG. Without it (``--no-align``, for folders of already-aligned crops) each file is
centre-cropped and resized.

Layout of a prepared dataset::

    OUT/dataset.json       format version, image size and whether faces were aligned
    OUT/manifest.jsonl     JSON records, appended as each photo finishes
    OUT/images/**.png      square RGB crops
    OUT/descriptors.npy    float32 (N, 128) dlib face descriptors (aligned mode only)
    OUT/report.txt         every skipped or duplicate file or face with the reason
    OUT/images.zip         the training split as an uncompressed ZIP (with ``make_zip``)

Every record contains ``source`` (path relative to SRC), ``source_size`` and
``source_mtime`` (used to resume), ``sha256`` of the source bytes, ``status``
(``written``, ``skipped`` or ``duplicate``), ``reason`` (why it was not written),
``path`` (relative to OUT), ``size`` and ``split`` (``train`` or ``heldout``, from the
SHA-256, so every run agrees). Without alignment there is one record per source file.
With it there is one record per chosen face, or one record for a photo with none, and
face records add ``face_index``, ``faces_found``, ``score``, ``box``, ``landmarks``,
``quad``, ``matrix``, ``pad_fraction``, ``phash`` and ``descriptor_row`` (the row of
``descriptors.npy``); see ``docs/prepare.md``. ``photo_records`` is the number of records
the photo produced, so a re-run can tell a complete photo from one cut off by a kill.
A re-run skips every complete source whose path, size and modification time match, so an
interrupted run loses nothing already written.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from facegan.data import align as align_module
from facegan.data.dataset_writer import (
    DatasetWriter,
    end_torn_line,
    write_report,
    write_zip,
)
from facegan.data.detect import load_models
from facegan.data.facecrop import AlignOptions, PhotoFaces, crop_faces
from facegan.data.imageio import (
    ImageDecodeError,
    center_crop_resize,
    file_sha256,
    list_images,
    load_rgb,
)
from facegan.errors import UserError

log = logging.getLogger(__name__)

DATASET_FORMAT = 1
MIN_SIZE = 8
MAX_SIZE = 4096
DEFAULT_HOLDOUT = 0.05

# Environment variables that cap the thread pools of the numeric libraries a worker may
# load, so that N workers use N cores rather than N times the core count.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass
class PrepareSummary:
    """Counts from one ``prepare`` run; ``reasons`` counts skipped files and faces by reason."""

    found: int = 0
    resumed: int = 0
    faces_found: int = 0
    faces_aligned: int = 0
    written: int = 0
    heldout: int = 0
    skipped: int = 0
    duplicates: int = 0
    near_duplicates: int = 0
    reasons: Counter = field(default_factory=Counter)
    out: Path | None = None
    seconds: float = 0.0
    first_result_seconds: float | None = None

    def table(self) -> str:
        """Format the counts as a small aligned table for the terminal."""
        rows = [
            ("files found", self.found),
            ("already done", self.resumed),
            ("faces detected", self.faces_found),
            ("faces aligned", self.faces_aligned),
            ("written", self.written),
            ("  of them held out", self.heldout),
            ("exact duplicates", self.duplicates),
            ("near duplicates", self.near_duplicates),
            ("skipped", self.skipped),
        ]
        rows += [(f"  {reason}", count) for reason, count in self.reasons.most_common()]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {count:>7}" for name, count in rows)


@dataclass(frozen=True)
class _Task:
    """One source file for a worker; ``align`` is None in centre-crop mode."""

    source: str
    relative: str
    size: int
    source_size: int
    mtime_ns: int
    align: AlignOptions | None


@dataclass
class _Outcome:
    """A worker's result for one source: a base record and the aligned faces, if any."""

    record: dict
    crop: bytes | None = None
    faces: PhotoFaces | None = None


def _source_key(relative: str, source_size: int, mtime_ns: int) -> tuple[str, int, int]:
    return relative, source_size, mtime_ns


def read_manifest(out: Path) -> list[dict]:
    """Read ``OUT/manifest.jsonl``; a torn last line from a killed run is ignored."""
    path = out / "manifest.jsonl"
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s line %d is incomplete and was ignored", path, number)
    return records


def _check_dataset_header(out: Path, size: int, aligned: bool) -> None:
    header_path = out / "dataset.json"
    if header_path.exists():
        header = json.loads(header_path.read_text())
        if header.get("size") != size:
            raise UserError(
                f"{out} was prepared at --size {header.get('size')}, not {size}; "
                "use a new output folder or the same --size to resume"
            )
        if header.get("aligned", False) != aligned:
            was = "aligned" if header.get("aligned") else "prepared with --no-align"
            raise UserError(
                f"{out} was {was}; use a new output folder or the same mode to resume"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(exist_ok=True)
    header = {"format": DATASET_FORMAT, "size": size, "aligned": aligned}
    header_path.write_text(json.dumps(header, indent=2) + "\n")


def _encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _process_one(task: _Task) -> _Outcome:
    """Decode one source file and crop or align it; runs in a worker process."""
    record = {
        "source": task.relative,
        "source_size": task.source_size,
        "source_mtime": task.mtime_ns,
        "sha256": None,
        "status": "skipped",
        "reason": None,
        "path": None,
        "size": task.size,
    }
    try:
        record["sha256"] = file_sha256(Path(task.source))
        image = load_rgb(Path(task.source))
    except ImageDecodeError as error:
        record["reason"] = str(error)
        return _Outcome(record)
    except OSError as error:
        record["reason"] = f"cannot read file: {error}"
        return _Outcome(record)
    if task.align is None:
        crop = center_crop_resize(image, task.size)
        return _Outcome(record, crop=_encode_png(crop))
    try:
        faces = crop_faces(np.asarray(image), task.size, task.align)
    except (RuntimeError, ValueError) as error:
        # dlib raises RuntimeError and the aligner ValueError on degenerate input, such as
        # landmarks that collapse onto one point. One bad photo must not stop the run.
        log.warning("alignment failed for %s: %s", task.relative, error)
        record["reason"] = f"alignment failed: {error}"
        return _Outcome(record)
    return _Outcome(record, faces=faces)


def _ignore_sigint() -> None:
    """Leave Ctrl-C to the main process, which stops the pool and reports once."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _init_worker(points: int) -> None:
    """Load the dlib models once in a spawned worker and keep torch, if loaded, to one thread."""
    _ignore_sigint()
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    try:
        load_models(points)
    except UserError as error:
        # The first task reports the same error with its file name.
        log.debug("dlib models not loaded in worker: %s", error)


def _fork_available() -> bool:
    return sys.platform.startswith("linux")


def _spawn_pool(workers: int, initializer, initargs: tuple):
    """Start spawned workers whose numeric libraries use one thread each."""
    saved = {name: os.environ.get(name) for name in _THREAD_VARIABLES}
    os.environ.update({name: "1" for name in _THREAD_VARIABLES})
    try:
        context = multiprocessing.get_context("spawn")
        return context.Pool(workers, initializer=initializer, initargs=initargs)
    finally:
        # Spawned workers copied the environment at start, so the caller's values return.
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _open_pool(workers: int, align: AlignOptions | None):
    """Start the worker processes for a run, with the dlib models loaded when aligning."""
    if align is None:
        return _spawn_pool(workers, _ignore_sigint, ())
    points = align.detect.landmarks
    if _fork_available():
        # Forked workers share the models this process loads (copy-on-write), so they start
        # at once and the models (about 130 MB of files) sit in memory once. Forking is safe here
        # even when torch was imported, because dlib's wheel links no OpenMP or BLAS and
        # the workers never call torch.
        load_models(points)
        return multiprocessing.get_context("fork").Pool(workers, initializer=_ignore_sigint)
    return _spawn_pool(workers, _init_worker, (points,))


@contextlib.contextmanager
def _results(tasks: list[_Task], workers: int):
    """Yield an iterator of outcomes, from worker processes when there are several."""
    if workers <= 1 or len(tasks) <= 1:
        yield map(_process_one, tasks)
        return
    align = tasks[0].align
    # One photo takes 50-500 ms to align, so single tasks balance best; plain crops are
    # cheap enough that batching them saves inter-process traffic.
    chunksize = 1 if align is not None else 8
    with _open_pool(workers, align) as pool:
        yield pool.imap_unordered(_process_one, tasks, chunksize=chunksize)


def _validate(src: Path, size: int, workers: int | None, holdout: float, align) -> int:
    if src.exists() and not src.is_dir():
        raise UserError(f"SRC {src} is a file, not a folder; pass the folder that contains it")
    if not src.is_dir():
        raise UserError(f"source folder {src} not found; pass a folder of images as SRC")
    low, high = (align_module.MIN_SIZE, align_module.MAX_SIZE) if align else (MIN_SIZE, MAX_SIZE)
    if not low <= size <= high:
        raise UserError(f"invalid --size {size}; use a value from {low} to {high}")
    if not 0.0 <= holdout < 1.0:
        raise UserError(f"invalid --holdout {holdout}; use a fraction from 0 to below 1")
    if workers is None:
        workers = os.cpu_count() or 1
    if workers < 1:
        raise UserError(f"invalid --workers {workers}; use 1 or more")
    if align is not None:
        align.validate()
    return workers


def _completed_sources(records: list[dict]) -> set:
    """Keys of sources whose records are all in the manifest."""
    counts = Counter(
        _source_key(r["source"], r["source_size"], r["source_mtime"]) for r in records
    )
    expected = {
        _source_key(r["source"], r["source_size"], r["source_mtime"]): r.get("photo_records", 1)
        for r in records
    }
    return {key for key, count in counts.items() if count >= expected[key]}


def _pending_tasks(
    src: Path, out: Path, size: int, done: set, align
) -> tuple[list[_Task], int]:
    tasks, resumed = [], 0
    out = out.resolve()
    for path in list_images(src):
        if path.resolve().is_relative_to(out):
            continue  # OUT inside SRC: the dataset's own PNGs are not new photos
        relative = path.relative_to(src).as_posix()
        stat = path.stat()
        if _source_key(relative, stat.st_size, stat.st_mtime_ns) in done:
            resumed += 1
            continue
        tasks.append(_Task(str(path), relative, size, stat.st_size, stat.st_mtime_ns, align))
    return tasks, resumed


def _count(summary: PrepareSummary, record: dict) -> None:
    if record["status"] == "written":
        summary.written += 1
        summary.heldout += record.get("split") == "heldout"
    elif record["status"] == "duplicate":
        if record["reason"].startswith("near duplicate"):
            summary.near_duplicates += 1
        else:
            summary.duplicates += 1
    else:
        summary.skipped += 1
        summary.reasons[record["reason"].split(":")[0]] += 1
        log.warning("skipped %s: %s", record["source"], record["reason"])


def _count_faces(summary: PrepareSummary, faces: PhotoFaces | None) -> None:
    if faces is not None:
        summary.faces_found += faces.found
        summary.faces_aligned += sum(crop.png is not None for crop in faces.crops)


def _log_photo(records: list[dict]) -> None:
    first = records[0]
    if "faces_found" not in first:
        return
    written = sum(record["status"] == "written" for record in records)
    # Single-face photos are the common case, so only their count goes to the debug log.
    level = logging.DEBUG if first["faces_found"] == 1 else logging.INFO
    log.log(level, "%s: faces found %d, written %d", first["source"], first["faces_found"], written)


def prepare(
    src: Path,
    out: Path,
    size: int,
    workers: int | None = None,
    *,
    align: AlignOptions | None = None,
    holdout: float = DEFAULT_HOLDOUT,
    make_zip: bool = False,
) -> PrepareSummary:
    """Turn every image under ``src`` into a dataset at ``out``, resuming if present.

    With ``align`` the faces are detected and aligned; without it each image is
    centre-cropped. Files or faces that are skipped are recorded with the reason and listed
    in ``OUT/report.txt``. Returns the counts of this run.
    """
    src, out = Path(src), Path(out)
    workers = _validate(src, size, workers, holdout, align)
    _check_dataset_header(out, size, aligned=align is not None)

    records = read_manifest(out)
    tasks, resumed = _pending_tasks(src, out, size, _completed_sources(records), align)
    if not tasks and not resumed:
        raise UserError(
            f"no .jpg, .jpeg, .png or .webp files found under {src}; check the SRC folder"
        )
    summary = PrepareSummary(found=len(tasks) + resumed, resumed=resumed, out=out)
    log.info("%d images found, %d already done, %d to process", summary.found, resumed, len(tasks))

    writer = DatasetWriter(out, records, align, holdout)
    end_torn_line(out / "manifest.jsonl")
    start = time.perf_counter()
    # The workers start before the progress bar, whose monitor thread must not be forked.
    with (
        _results(tasks, workers) as outcomes,
        open(out / "manifest.jsonl", "a", encoding="utf-8") as manifest,
        logging_redirect_tqdm(),
    ):
        progress = tqdm(total=len(tasks), unit="img", desc="prepare", dynamic_ncols=True)
        for outcome in outcomes:
            if summary.first_result_seconds is None:
                summary.first_result_seconds = time.perf_counter() - start
            _count_faces(summary, outcome.faces)
            new_records = writer.add(outcome.record, outcome.crop, outcome.faces)
            for record in new_records:
                record["photo_records"] = len(new_records)
                _count(summary, record)
            _log_photo(new_records)
            # One write per photo, so a kill leaves at most one torn line.
            manifest.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new_records))
            manifest.flush()
            records.extend(new_records)
            progress.update(1)
        progress.close()
    summary.seconds = time.perf_counter() - start
    write_report(out, records)
    if make_zip:
        log.info("wrote %s", write_zip(out, records))
    return summary

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

import io
import json
import logging
import multiprocessing
import os
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from facegan.data import align as align_module
from facegan.data.dedupe import DuplicateIndex, hash_from_hex
from facegan.data.descriptors import DescriptorStore
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
ZIP_NAME = "images.zip"

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


def _write_bytes_atomic(data: bytes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # The process id keeps two processes that write identical files from sharing a name.
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def heldout_split(sha256: str, fraction: float) -> str:
    """Return ``"heldout"`` for a ``fraction`` of source hashes, else ``"train"``.

    The first 32 bits of the SHA-256 are uniform, so the same bytes always land in the
    same split and the held-out share approaches ``fraction`` on large folders.
    """
    return "heldout" if int(sha256[:8], 16) / 2**32 < fraction else "train"


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


def _init_worker() -> None:
    """Load the dlib models once in each worker and keep torch, if loaded, to one thread."""
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    try:
        from facegan.data.detect import load_models

        load_models()
    except UserError as error:
        # The first task reports the same error with its file name.
        log.debug("dlib models not loaded in worker: %s", error)


def _run_tasks(tasks: list[_Task], workers: int):
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield _process_one(task)
        return
    aligned = tasks[0].align is not None
    # One photo takes 50-500 ms to align, so single tasks balance best; plain crops are
    # cheap enough that batching them saves inter-process traffic.
    chunksize = 1 if aligned else 8
    saved = {name: os.environ.get(name) for name in _THREAD_VARIABLES}
    os.environ.update({name: "1" for name in _THREAD_VARIABLES})
    try:
        context = multiprocessing.get_context("spawn")
        pool = context.Pool(workers, initializer=_init_worker if aligned else None)
    finally:
        # Spawned workers copied the environment at start, so the caller's values return.
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    with pool:
        yield from pool.imap_unordered(_process_one, tasks, chunksize=chunksize)


def _validate(src: Path, size: int, workers: int | None, holdout: float, align) -> int:
    if not src.is_dir():
        raise UserError(f"source folder {src} not found; pass a folder of images as SRC")
    low, high = (align_module.MIN_SIZE, align_module.MAX_SIZE) if align else (MIN_SIZE, MAX_SIZE)
    if not low <= size <= high:
        raise UserError(f"invalid --size {size}; use a value from {low} to {high}")
    if not 0.0 <= holdout < 1.0:
        raise UserError(f"invalid --holdout {holdout}; use a fraction from 0 to below 1")
    workers = workers or os.cpu_count() or 1
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


def _pending_tasks(src: Path, size: int, done: set, align) -> tuple[list[_Task], int]:
    tasks, resumed = [], 0
    for path in list_images(src):
        relative = path.relative_to(src).as_posix()
        stat = path.stat()
        if _source_key(relative, stat.st_size, stat.st_mtime_ns) in done:
            resumed += 1
            continue
        tasks.append(_Task(str(path), relative, size, stat.st_size, stat.st_mtime_ns, align))
    return tasks, resumed


class _DatasetWriter:
    """Main-process side of a run: checks duplicates, writes files and manifest records."""

    def __init__(self, out: Path, records: list[dict], align, holdout: float):
        self.out = out
        self.align = align
        self.holdout = holdout
        complete = [r for r in records if r["status"] == "written"]
        self.source_by_hash = {r["sha256"]: r["source"] for r in complete}
        near = align.near_duplicate if align is not None else -1
        self.faces = DuplicateIndex(near)
        for record in complete:
            if record.get("phash"):
                self.faces.add(hash_from_hex(record["phash"]), record["path"])
        self.descriptors = None
        if align is not None:
            rows = [r["descriptor_row"] for r in records if r.get("descriptor_row") is not None]
            self.descriptors = DescriptorStore(out / "descriptors.npy", max(rows, default=-1) + 1)

    def add(self, outcome: _Outcome, summary: PrepareSummary) -> list[dict]:
        """Turn one worker outcome into manifest records, writing the kept images."""
        record = outcome.record
        if outcome.faces is not None:
            summary.faces_found += outcome.faces.found
            summary.faces_aligned += sum(crop.png is not None for crop in outcome.faces.crops)
        if record["status"] == "skipped" and record["reason"]:
            return [record]
        earlier = self.source_by_hash.get(record["sha256"])
        if earlier is not None:
            record.update(status="duplicate", reason=f"same content as {earlier}")
            return [record]
        record["split"] = heldout_split(record["sha256"], self.holdout)
        if outcome.faces is None:
            return [self._write_crop(record, outcome.crop)]
        return self._write_faces(record, outcome.faces)

    def _write_crop(self, record: dict, png: bytes) -> dict:
        relative_out = f"images/{record['sha256'][:20]}.png"
        _write_bytes_atomic(png, self.out / relative_out)
        record.update(status="written", path=relative_out)
        self.source_by_hash[record["sha256"]] = record["source"]
        return record

    def _face_path(self, record: dict, face_index: int) -> str:
        # Named after the source, plus 8 hex digits of its hash so that a.jpg and a.png in
        # one folder, or files differing only in case, do not collide.
        source = Path(record["source"])
        name = f"{source.stem}_{record['sha256'][:8]}_{face_index}.png"
        return (Path("images") / source.parent / name).as_posix()

    def _write_faces(self, base: dict, faces: PhotoFaces) -> list:
        if not faces.crops:
            return [dict(base, reason=self._no_face_reason(faces), faces_found=faces.found)]
        records = []
        for crop in faces.crops:
            record = dict(base, faces_found=faces.found, **crop.geometry())
            if crop.png is None:
                record["reason"] = crop.reason
                records.append(record)
                continue
            match = self.faces.match(hash_from_hex(crop.phash))
            if match is not None:
                path, distance = match
                record.update(
                    status="duplicate",
                    reason=f"near duplicate of {path} (pHash distance {distance})",
                    phash=crop.phash,
                )
                records.append(record)
                continue
            path = self._face_path(base, crop.face_index)
            _write_bytes_atomic(crop.png, self.out / path)
            row = self.descriptors.append(crop.descriptor)
            record.update(status="written", path=path, phash=crop.phash, descriptor_row=row)
            self.faces.add(hash_from_hex(crop.phash), path)
            records.append(record)
        if any(record["status"] == "written" for record in records):
            self.source_by_hash[base["sha256"]] = base["source"]
        return records

    def _no_face_reason(self, faces: PhotoFaces) -> str:
        if faces.found == 0:
            return "no face found"
        minimum = self.align.detect.min_face
        return (
            f"face too small: the largest face is {faces.largest_rejected_side} px, "
            f"below --min-face {minimum} px"
        )


def _write_report(out: Path, records: list[dict]) -> None:
    lines = []
    for record in records:
        if record["status"] == "written":
            continue
        face = record.get("face_index")
        where = record["source"] if face is None else f"{record['source']}#{face}"
        lines.append(f"{where}\t{record['status']}\t{record['reason']}")
    header = "# files or faces (source#index) not written: source\tstatus\treason\n"
    (out / "report.txt").write_text(header + "".join(line + "\n" for line in lines))


def write_zip(out: Path, records: list[dict]) -> Path:
    """Pack the training split's PNGs and dataset.json into an uncompressed ``OUT/images.zip``.

    Held-out faces stay out of the ZIP, because a loader given only the ZIP cannot tell
    them apart. PNG data is already compressed, so storing saves the time of deflating.
    """
    path = out / ZIP_NAME
    temporary = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.write(out / "dataset.json", "dataset.json")
        for record in records:
            if record["status"] == "written" and record.get("split", "train") == "train":
                archive.write(out / record["path"], record["path"])
    os.replace(temporary, path)
    return path


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


def _end_torn_line(path: Path) -> None:
    """Terminate a torn last line so that the next record starts on a line of its own."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) != b"\n":
            handle.write(b"\n")


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
    tasks, resumed = _pending_tasks(src, size, _completed_sources(records), align)
    summary = PrepareSummary(found=len(tasks) + resumed, resumed=resumed, out=out)
    log.info("%d images found, %d already done, %d to process", summary.found, resumed, len(tasks))

    writer = _DatasetWriter(out, records, align, holdout)
    _end_torn_line(out / "manifest.jsonl")
    start = time.perf_counter()
    with open(out / "manifest.jsonl", "a", encoding="utf-8") as manifest, logging_redirect_tqdm():
        progress = tqdm(total=len(tasks), unit="img", desc="prepare", dynamic_ncols=True)
        for outcome in _run_tasks(tasks, workers):
            if summary.first_result_seconds is None:
                summary.first_result_seconds = time.perf_counter() - start
            new_records = writer.add(outcome, summary)
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
    _write_report(out, records)
    if make_zip:
        log.info("wrote %s", write_zip(out, records))
    return summary

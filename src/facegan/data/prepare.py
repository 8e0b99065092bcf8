"""Turn a folder of face photos into a training dataset: ``facegan prepare SRC OUT``.

Layout of a prepared dataset::

    OUT/dataset.json     format version and image size
    OUT/manifest.jsonl   one JSON record per source file, appended as each file finishes
    OUT/images/*.png     square RGB crops named after the source file's SHA-256
    OUT/report.txt       every skipped file with the reason

Each manifest record holds ``source`` (path relative to SRC), ``source_size`` and
``source_mtime`` (used to resume), ``sha256`` of the source bytes, ``status``
(``written``, ``skipped`` or ``duplicate``), ``reason`` (why it was not written),
``path`` (relative to OUT) and ``size``. A re-run skips every source whose path, size
and modification time match a record, so an interrupted run loses nothing written.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

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


@dataclass
class PrepareSummary:
    """Counts from one ``prepare`` run; ``reasons`` counts skipped files by reason."""

    found: int = 0
    resumed: int = 0
    written: int = 0
    skipped: int = 0
    duplicates: int = 0
    reasons: Counter = field(default_factory=Counter)
    out: Path | None = None

    def table(self) -> str:
        """Format the counts as a small aligned table for the terminal."""
        rows = [
            ("found", self.found),
            ("already done", self.resumed),
            ("written", self.written),
            ("duplicates", self.duplicates),
            ("skipped", self.skipped),
        ]
        rows += [(f"  {reason}", count) for reason, count in self.reasons.most_common()]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {count:>7}" for name, count in rows)


def _source_key(relative: str, stat: os.stat_result) -> tuple[str, int, int]:
    return relative, stat.st_size, stat.st_mtime_ns


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


def _check_dataset_header(out: Path, size: int) -> None:
    header_path = out / "dataset.json"
    if header_path.exists():
        header = json.loads(header_path.read_text())
        if header.get("size") != size:
            raise UserError(
                f"{out} was prepared at --size {header.get('size')}, not {size}; "
                "use a new output folder or the same --size to resume"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(exist_ok=True)
    header = {"format": DATASET_FORMAT, "size": size}
    header_path.write_text(json.dumps(header, indent=2) + "\n")


def _write_png_atomic(image, path: Path) -> None:
    temporary = path.with_name(path.name + ".tmp")
    image.save(temporary, format="PNG")
    os.replace(temporary, path)


def _process_one(task: tuple[str, str, str, int, int, int]) -> dict:
    """Decode, crop and write one source file; runs in a worker process."""
    source, relative, out, size, source_size, mtime_ns = task
    record = {
        "source": relative,
        "source_size": source_size,
        "source_mtime": mtime_ns,
        "sha256": None,
        "status": "skipped",
        "reason": None,
        "path": None,
        "size": size,
    }
    try:
        record["sha256"] = file_sha256(Path(source))
        image = load_rgb(Path(source))
    except ImageDecodeError as error:
        record["reason"] = str(error)
        return record
    except OSError as error:
        record["reason"] = f"cannot read file: {error}"
        return record
    crop = center_crop_resize(image, size)
    relative_out = f"images/{record['sha256'][:20]}.png"
    _write_png_atomic(crop, Path(out) / relative_out)
    record["status"] = "written"
    record["path"] = relative_out
    return record


def _write_report(out: Path, records: list[dict]) -> None:
    lines = [
        f"{record['source']}\t{record['status']}\t{record['reason']}"
        for record in records
        if record["status"] != "written"
    ]
    header = "# files not written: source\tstatus\treason\n"
    (out / "report.txt").write_text(header + "".join(line + "\n" for line in lines))


def _pending_tasks(src: Path, out: Path, size: int, done: set) -> tuple[list, int]:
    tasks, resumed = [], 0
    for path in list_images(src):
        relative = path.relative_to(src).as_posix()
        stat = path.stat()
        if _source_key(relative, stat) in done:
            resumed += 1
            continue
        tasks.append((str(path), relative, str(out), size, stat.st_size, stat.st_mtime_ns))
    return tasks, resumed


def _run_tasks(tasks: list, workers: int):
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield _process_one(task)
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers) as pool:
        yield from pool.imap_unordered(_process_one, tasks, chunksize=8)


def prepare(src: Path, out: Path, size: int, workers: int | None = None) -> PrepareSummary:
    """Crop and resize every image under ``src`` into a dataset at ``out``, resuming if present.

    Files that cannot be decoded are recorded as skipped and listed in ``OUT/report.txt``.
    Returns the counts of this run.
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise UserError(f"source folder {src} not found; pass a folder of images as SRC")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise UserError(f"invalid --size {size}; use a value from {MIN_SIZE} to {MAX_SIZE}")
    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise UserError(f"invalid --workers {workers}; use 1 or more")
    _check_dataset_header(out, size)

    records = read_manifest(out)
    done = {_source_key(r["source"], _Stat(r)) for r in records}
    written_hashes = {r["sha256"] for r in records if r["status"] == "written"}
    tasks, resumed = _pending_tasks(src, out, size, done)
    summary = PrepareSummary(found=len(tasks) + resumed, resumed=resumed, out=out)
    log.info("%d images found, %d already done, %d to process", summary.found, resumed, len(tasks))

    with open(out / "manifest.jsonl", "a", encoding="utf-8") as manifest:
        progress = tqdm(total=len(tasks), unit="img", desc="prepare", dynamic_ncols=True)
        for record in _run_tasks(tasks, workers):
            if record["status"] == "written" and record["sha256"] in written_hashes:
                # The same bytes under another name: keep the first copy only. The file
                # was written under the hash name, which the first copy already owns.
                record.update(status="duplicate", reason="same content as an earlier file")
                record["path"] = None
            _count(summary, record)
            if record["status"] == "written":
                written_hashes.add(record["sha256"])
            manifest.write(json.dumps(record, ensure_ascii=False) + "\n")
            manifest.flush()
            records.append(record)
            progress.update(1)
        progress.close()
    _write_report(out, records)
    return summary


def _count(summary: PrepareSummary, record: dict) -> None:
    if record["status"] == "written":
        summary.written += 1
    elif record["status"] == "duplicate":
        summary.duplicates += 1
    else:
        summary.skipped += 1
        summary.reasons[record["reason"].split(":")[0]] += 1
        log.warning("skipped %s: %s", record["source"], record["reason"])


class _Stat:
    """The two stat fields a manifest record stores, shaped like os.stat_result for the key."""

    def __init__(self, record: dict):
        self.st_size = record["source_size"]
        self.st_mtime_ns = record["source_mtime"]

"""Write the files of a prepared dataset: images, manifest records, report and ZIP.

Runs in the main process of ``facegan prepare``, which receives every result in turn, so the
duplicate checks and the descriptor rows need no locking.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from facegan.data.dedupe import DuplicateIndex, hash_from_hex
from facegan.data.descriptors import DescriptorStore
from facegan.data.facecrop import PhotoFaces

ZIP_NAME = "images.zip"


def write_bytes_atomic(data: bytes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # The process id keeps two processes that write identical files from sharing a name.
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def heldout_split(sha256: str, fraction: float) -> str:
    """Return ``"heldout"`` for a ``fraction`` of source hashes, else ``"train"``.

    The first 32 bits of the SHA-256 are uniform, so the same bytes always land in the
    same split and the held-out share approaches ``fraction`` on large folders.
    """
    return "heldout" if int(sha256[:8], 16) / 2**32 < fraction else "train"


def end_torn_line(path: Path) -> None:
    """Terminate a torn last line so that the next record starts on a line of its own."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) != b"\n":
            handle.write(b"\n")


class DatasetWriter:
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

    def add(self, record: dict, crop: bytes | None, faces: PhotoFaces | None) -> list[dict]:
        """Turn one source's worker result into manifest records, writing the kept images.

        ``crop`` is the centre-cropped PNG (no alignment), ``faces`` the aligned faces.
        """
        if record["status"] == "skipped" and record["reason"]:
            return [record]
        earlier = self.source_by_hash.get(record["sha256"])
        if earlier is not None:
            record.update(status="duplicate", reason=f"same content as {earlier}")
            return [record]
        record["split"] = heldout_split(record["sha256"], self.holdout)
        if faces is None:
            return [self._write_crop(record, crop)]
        return self._write_faces(record, faces)

    def _write_crop(self, record: dict, png: bytes) -> dict:
        relative_out = f"images/{record['sha256'][:20]}.png"
        write_bytes_atomic(png, self.out / relative_out)
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
            write_bytes_atomic(crop.png, self.out / path)
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


def write_report(out: Path, records: list[dict]) -> None:
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

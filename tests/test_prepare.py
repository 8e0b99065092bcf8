"""prepare: every image kind is converted or reported, and re-runs resume."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from facegan.data.imageio import ImageDecodeError, load_rgb
from facegan.data.prepare import prepare, read_manifest
from facegan.errors import UserError
from tests.conftest import astronaut, face_variants


def _records_by_source(out):
    return {record["source"]: record for record in read_manifest(out)}


def _jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92, **kwargs)
    return buffer.getvalue()


@pytest.fixture()
def mixed_folder(tmp_path):
    """Real face photos in every mode and file kind prepare must handle, plus broken files."""
    src = tmp_path / "src"
    (src / "nested" / "deeper").mkdir(parents=True)
    faces = face_variants(12, seed=1)
    faces[0].save(src / "rgb.jpg")
    faces[1].convert("L").save(src / "grey.png")
    faces[2].convert("LA").save(src / "grey_alpha.png")
    faces[3].convert("P", palette=Image.Palette.ADAPTIVE).save(src / "palette.png")
    rgba = faces[4].convert("RGBA")
    rgba.putalpha(Image.new("L", rgba.size, 128))
    rgba.save(src / "alpha.png")
    faces[5].convert("CMYK").save(src / "cmyk.jpg")
    grey16 = (np.asarray(faces[6].convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(grey16).save(src / "sixteen_bit.png")  # mode I;16
    faces[7].save(src / "nested" / "deeper" / "UPPER.JPEG")
    faces[8].save(src / "nested" / "visage_é_面.webp")
    faces[9].convert("1").save(src / "bilevel.png")
    (src / "empty.jpg").write_bytes(b"")
    (src / "notes.jpg").write_text("this is text, not a JPEG")
    (src / "truncated.jpg").write_bytes(_jpeg_bytes(faces[10])[:600])
    # The same bytes as rgb.jpg under another name: an exact duplicate.
    (src / "copy_of_rgb.jpg").write_bytes((src / "rgb.jpg").read_bytes())
    (src / "readme.txt").write_text("not an image suffix, never read")
    return src


def test_prepare_writes_every_mode(mixed_folder, tmp_path):
    out = tmp_path / "out"
    summary = prepare(mixed_folder, out, size=32, workers=1)
    records = _records_by_source(out)
    # rgb.jpg and copy_of_rgb.jpg hold the same bytes, so only the first in order is written.
    written = [
        "copy_of_rgb.jpg", "grey.png", "grey_alpha.png", "palette.png", "alpha.png", "cmyk.jpg",
        "sixteen_bit.png", "nested/deeper/UPPER.JPEG", "nested/visage_é_面.webp", "bilevel.png",
    ]
    for name in written:
        assert records[name]["status"] == "written", records[name]
        with Image.open(out / records[name]["path"]) as image:
            assert image.mode == "RGB"
            assert image.size == (32, 32)
    assert summary.written == len(written)
    assert "readme.txt" not in records


def test_prepare_reports_broken_files(mixed_folder, tmp_path):
    out = tmp_path / "out"
    summary = prepare(mixed_folder, out, size=32, workers=1)
    records = _records_by_source(out)
    for name in ("empty.jpg", "notes.jpg", "truncated.jpg"):
        assert records[name]["status"] == "skipped"
        assert records[name]["reason"]
    assert "empty" in records["empty.jpg"]["reason"]
    assert summary.skipped == 3
    report = (out / "report.txt").read_text()
    for name in ("empty.jpg", "notes.jpg", "truncated.jpg"):
        assert name in report


def test_prepare_marks_exact_duplicates(mixed_folder, tmp_path):
    out = tmp_path / "out"
    summary = prepare(mixed_folder, out, size=32, workers=1)
    records = _records_by_source(out)
    statuses = {records["rgb.jpg"]["status"], records["copy_of_rgb.jpg"]["status"]}
    assert statuses == {"written", "duplicate"}
    assert summary.duplicates == 1


def test_prepare_resumes(mixed_folder, tmp_path):
    out = tmp_path / "out"
    first = prepare(mixed_folder, out, size=32, workers=1)
    second = prepare(mixed_folder, out, size=32, workers=1)
    assert second.resumed == first.found
    assert second.written == 0
    assert len(read_manifest(out)) == first.found
    face_variants(1, seed=9)[0].save(mixed_folder / "new.png")
    third = prepare(mixed_folder, out, size=32, workers=1)
    assert third.written == 1


def test_prepare_ignores_torn_manifest_line(face_folder, tmp_path):
    out = tmp_path / "out"
    prepare(face_folder, out, size=32, workers=1)
    with open(out / "manifest.jsonl", "a") as handle:
        handle.write('{"source": "face_00.png", "sta')  # a write cut off by a kill
    summary = prepare(face_folder, out, size=32, workers=1)
    assert summary.resumed == summary.found


def test_prepare_with_two_workers(face_folder, tmp_path):
    out = tmp_path / "out"
    summary = prepare(face_folder, out, size=32, workers=2)
    assert summary.written == 24
    assert len(list((out / "images").glob("*.png"))) == 24


def test_prepare_rejects_other_size(face_folder, tmp_path):
    out = tmp_path / "out"
    prepare(face_folder, out, size=32, workers=1)
    with pytest.raises(UserError, match="--size 32"):
        prepare(face_folder, out, size=64, workers=1)


def test_prepare_rejects_missing_source(tmp_path):
    with pytest.raises(UserError, match="not found"):
        prepare(tmp_path / "missing", tmp_path / "out", size=32)


def test_exif_orientation_applied(tmp_path):
    photo = astronaut().crop((100, 0, 400, 200))  # 300x200, wider than tall
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the stored pixels must be rotated 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    photo.save(path, exif=exif, quality=95)
    upright = load_rgb(path)
    assert upright.size == (200, 300)
    expected = np.asarray(photo.transpose(Image.Transpose.ROTATE_270), dtype=np.float32)
    difference = np.abs(np.asarray(upright, dtype=np.float32) - expected).mean()
    assert difference < 6.0


def test_alpha_composited_over_white(tmp_path):
    transparent = Image.new("RGBA", (16, 16), (255, 0, 0, 0))
    path = tmp_path / "clear.png"
    transparent.save(path)
    assert np.asarray(load_rgb(path)).min() == 255


def test_sixteen_bit_scaled(tmp_path):
    ramp = np.linspace(0, 65535, 256, dtype=np.uint16).reshape(16, 16)
    path = tmp_path / "ramp.png"
    Image.fromarray(ramp).save(path)
    pixels = np.asarray(load_rgb(path))
    assert pixels.max() == 255
    assert pixels.min() == 0


def test_text_with_image_suffix_rejected(tmp_path):
    path = tmp_path / "fake.png"
    path.write_text("hello")
    with pytest.raises(ImageDecodeError, match="cannot decode"):
        load_rgb(path)


def test_manifest_records_fields(face_folder, tmp_path):
    out = tmp_path / "out"
    prepare(face_folder, out, size=32, workers=1)
    record = read_manifest(out)[0]
    for key in ("source", "source_size", "source_mtime", "sha256", "status", "path", "size"):
        assert key in record
    header = json.loads((out / "dataset.json").read_text())
    assert header["size"] == 32


def test_output_inside_source_not_reread(face_folder, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(face_folder, src)
    prepare(src, src / "out", size=32, workers=1)
    again = prepare(src, src / "out", size=32, workers=1)
    assert again.found == 24
    assert again.written == 0


def test_empty_source_rejected(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no .jpg"):
        prepare(tmp_path / "empty", tmp_path / "out", size=32)


def test_source_file_rejected(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"")
    with pytest.raises(UserError, match="is a file"):
        prepare(path, tmp_path / "out", size=32)


def test_zero_workers_rejected(face_folder, tmp_path):
    with pytest.raises(UserError, match="--workers 0"):
        prepare(face_folder, tmp_path / "out", size=32, workers=0)

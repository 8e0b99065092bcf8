"""prepare with alignment: bad inputs, group rule, duplicates, descriptors, split, ZIP, resume."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from facegan.cli import main
from facegan.data import dedupe
from facegan.data import prepare as prepare_module
from facegan.data.dataset import load_images
from facegan.data.descriptors import DescriptorStore
from facegan.data.detect import DetectOptions
from facegan.data.facecrop import AlignOptions
from facegan.data.dataset_writer import heldout_split
from facegan.data.prepare import prepare, read_manifest
from tests.conftest import SHARED_DATA, astronaut

PHOTOS = SHARED_DATA / "photos"
needs_photos = pytest.mark.skipif(
    not PHOTOS.is_dir(), reason=f"shared face photos not found at {PHOTOS}"
)
SIZE = 64
# Every input below shows the same face, so the near-duplicate check is off unless a test
# is about it.
KEEP_ALL = AlignOptions(near_duplicate=-1)


def _jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92, **kwargs)
    return buffer.getvalue()


def _by_source(out) -> dict[str, list[dict]]:
    records: dict[str, list[dict]] = {}
    for record in read_manifest(out):
        records.setdefault(record["source"], []).append(record)
    return records


def _only(records: dict, name: str) -> dict:
    assert len(records[name]) == 1, records[name]
    return records[name][0]


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    """The astronaut in every pixel mode and file problem that prepare must handle."""
    src = tmp_path_factory.mktemp("bad_inputs")
    photo = astronaut()
    photo.save(src / "rgb.jpg", quality=92)
    photo.convert("L").save(src / "grey.png")
    photo.convert("LA").save(src / "grey_alpha.png")
    photo.convert("P", palette=Image.Palette.ADAPTIVE).save(src / "palette.png")
    rgba = photo.convert("RGBA")
    rgba.putalpha(200)
    rgba.save(src / "alpha.png")
    photo.convert("CMYK").save(src / "cmyk.jpg")
    grey16 = np.asarray(photo.convert("L"), dtype=np.uint16) * 257
    Image.fromarray(grey16).save(src / "sixteen_bit.png")
    # Pixels stored on their side with an EXIF tag saying so: detection only works when the
    # tag is applied first.
    exif = Image.Exif()
    exif[0x0112] = 6
    photo.transpose(Image.Transpose.ROTATE_90).save(src / "exif_rotated.jpg", exif=exif)
    (src / "png_named.jpg").write_bytes(_png_bytes(photo))
    photo.save(src / "visage_é_面.webp")
    (src / "empty.jpg").write_bytes(b"")
    (src / "notes.jpg").write_text("this is text, not a JPEG")
    (src / "truncated.jpg").write_bytes(_jpeg_bytes(photo)[:2000])
    # Her lower body and suit: no face.
    photo.crop((0, 300, 512, 512)).save(src / "no_face.png")
    # A tight crop of her face: most of the aligned square would be padding.
    photo.crop((170, 70, 275, 175)).save(src / "cut_by_border.png")
    return src


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bad_inputs_out(bad_inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("bad_out")
    summary = prepare(bad_inputs, out, SIZE, workers=1, align=KEEP_ALL)
    return out, summary


def test_every_mode_aligned(bad_inputs_out):
    out, _ = bad_inputs_out
    records = _by_source(out)
    names = (
        "rgb.jpg", "grey.png", "grey_alpha.png", "palette.png", "alpha.png", "cmyk.jpg",
        "sixteen_bit.png", "exif_rotated.jpg", "png_named.jpg", "visage_é_面.webp",
    )
    for name in names:
        record = _only(records, name)
        assert record["status"] == "written", record
        with Image.open(out / record["path"]) as image:
            assert image.mode == "RGB"
            assert image.size == (SIZE, SIZE)


def test_non_ascii_name_kept(bad_inputs_out):
    out, _ = bad_inputs_out
    record = _only(_by_source(out), "visage_é_面.webp")
    assert record["path"].startswith("images/visage_é_面_")
    assert (out / record["path"]).is_file()


def test_bad_files_reported(bad_inputs_out):
    out, summary = bad_inputs_out
    records = _by_source(out)
    expected = {
        "empty.jpg": "empty",
        "notes.jpg": "cannot decode",
        "truncated.jpg": "cannot decode",
        "no_face.png": "no face found",
        "cut_by_border.png": "face cut by the photo border",
    }
    report = (out / "report.txt").read_text()
    for name, reason in expected.items():
        record = _only(records, name)
        assert record["status"] == "skipped"
        assert reason in record["reason"], record["reason"]
        assert name in report
    assert summary.skipped == len(expected)
    assert summary.reasons["no face found"] == 1


def test_border_face_written_with_padding(bad_inputs, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "tight.png").write_bytes((bad_inputs / "cut_by_border.png").read_bytes())
    summary = prepare(src, tmp_path / "out", SIZE, workers=1, align=AlignOptions(max_pad=1.0))
    record = _only(_by_source(tmp_path / "out"), "tight.png")
    assert summary.written == 1
    assert record["pad_fraction"] > 0.4
    with Image.open(tmp_path / "out" / record["path"]) as image:
        pixels = np.asarray(image)
    # The padded corners are filled by reflection and blur, not left black.
    assert pixels[:4, :4].mean() > 30


def test_small_face_rejected(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    astronaut().save(src / "astronaut.png")
    options = AlignOptions(detect=DetectOptions(min_face=200))
    summary = prepare(src, tmp_path / "out", SIZE, workers=1, align=options)
    record = _only(_by_source(tmp_path / "out"), "astronaut.png")
    assert record["status"] == "skipped"
    assert "face too small" in record["reason"]
    assert "--min-face 200" in record["reason"]
    assert summary.reasons["face too small"] == 1


def test_manifest_face_fields(bad_inputs_out):
    out, _ = bad_inputs_out
    record = _only(_by_source(out), "rgb.jpg")
    assert record["face_index"] == 0
    assert record["faces_found"] == 1
    assert record["score"] > 0.2
    assert len(record["box"]) == 4
    assert np.asarray(record["landmarks"]).shape == (68, 2)
    assert np.asarray(record["quad"]).shape == (4, 2)
    assert np.asarray(record["matrix"]).shape == (2, 3)
    assert record["split"] in ("train", "heldout")
    header = json.loads((out / "dataset.json").read_text())
    assert header["aligned"] is True


def test_descriptors_match_manifest(bad_inputs_out):
    out, summary = bad_inputs_out
    descriptors = np.load(out / "descriptors.npy")
    written = [r for r in read_manifest(out) if r["status"] == "written"]
    assert descriptors.shape == (summary.written, 128)
    assert sorted(r["descriptor_row"] for r in written) == list(range(summary.written))
    # Every input shows the same person, so all descriptors lie close to the first.
    distances = np.linalg.norm(descriptors - descriptors[0], axis=1)
    assert distances.max() < 0.6


def test_descriptor_store_drops_orphan_rows(tmp_path):
    path = tmp_path / "descriptors.npy"
    store = DescriptorStore(path, 0)
    for value in range(3):
        store.append(np.full(128, value, dtype=np.float32))
    # A killed run wrote row 2 but not its manifest record.
    DescriptorStore(path, 2)
    loaded = np.load(path)
    assert loaded.shape == (2, 128)
    assert loaded[1, 0] == 1.0


def test_near_duplicates_removed(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    photo = astronaut()
    photo.save(src / "a_original.png")
    # The same photo re-encoded and resized, then one shifted and tilted by 5 degrees.
    (src / "b_reencoded.jpg").write_bytes(_jpeg_bytes(photo.resize((400, 400))))
    photo.rotate(5, Image.Resampling.BICUBIC, translate=(20, 10)).save(src / "c_tilted.png")
    summary = prepare(src, tmp_path / "out", SIZE, workers=1, align=AlignOptions())
    records = _by_source(tmp_path / "out")
    assert _only(records, "a_original.png")["status"] == "written"
    for name in ("b_reencoded.jpg", "c_tilted.png"):
        record = _only(records, name)
        assert record["status"] == "duplicate"
        assert "near duplicate of images/a_original_" in record["reason"]
    assert summary.near_duplicates == 2


def test_phash_separates_photos():
    from skimage import data

    face = np.asarray(astronaut())
    reencoded = np.asarray(Image.open(io.BytesIO(_jpeg_bytes(astronaut().resize((256, 256))))))
    other = data.coffee()
    reference = dedupe.perceptual_hash(face)
    assert reference.shape == (dedupe.HASH_BITS // 8,)
    hashes = np.stack([dedupe.perceptual_hash(reencoded), dedupe.perceptual_hash(other)])
    near, far = dedupe.hamming_distances(hashes, reference)
    assert near <= 10
    assert far >= 60
    assert (dedupe.hash_from_hex(dedupe.hash_hex(reference)) == reference).all()


def test_duplicate_index_threshold():
    rng = np.random.default_rng(0)
    first = rng.integers(0, 256, dedupe.HASH_BITS // 8, dtype=np.uint8)
    close = first.copy()
    close[0] ^= 0b111  # 3 bits differ
    index = dedupe.DuplicateIndex(max_distance=3)
    assert index.match(first) is None
    for number in range(100):  # enough rows to grow the storage twice
        index.add(rng.integers(0, 256, dedupe.HASH_BITS // 8, dtype=np.uint8), f"other{number}")
    index.add(first, "first.png")
    assert index.match(close) == ("first.png", 3)
    strict = dedupe.DuplicateIndex(max_distance=2)
    strict.add(first, "first.png")
    assert strict.match(close) is None
    off = dedupe.DuplicateIndex(max_distance=-1)
    off.add(first, "first.png")
    assert off.match(first) is None


def test_exact_duplicate_removed(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    astronaut().save(src / "first.png")
    (src / "second.png").write_bytes((src / "first.png").read_bytes())
    summary = prepare(src, tmp_path / "out", SIZE, workers=1, align=KEEP_ALL)
    record = _only(_by_source(tmp_path / "out"), "second.png")
    assert record["status"] == "duplicate"
    assert record["reason"] == "same content as first.png"
    assert summary.duplicates == 1


def test_heldout_split_deterministic():
    assert heldout_split("00000000" + "0" * 56, 0.05) == "heldout"
    assert heldout_split("ffffffff" + "0" * 56, 0.05) == "train"
    assert heldout_split("80000000" + "0" * 56, 0.0) == "train"
    hashes = [f"{value:08x}" for value in range(0, 2**32, 2**32 // 1000)]
    share = np.mean([heldout_split(text, 0.2) == "heldout" for text in hashes])
    assert share == pytest.approx(0.2, abs=0.01)


def test_zip_and_loader_skip_heldout(bad_inputs, tmp_path):
    out = tmp_path / "out"
    # Half the sources are held out on average, so both splits occur among ten faces.
    prepare(bad_inputs, out, SIZE, workers=1, align=KEEP_ALL, holdout=0.5, make_zip=True)
    written = [r for r in read_manifest(out) if r["status"] == "written"]
    train = [r["path"] for r in written if r["split"] == "train"]
    assert 0 < len(train) < len(written)
    with zipfile.ZipFile(out / "images.zip") as archive:
        names = [name for name in archive.namelist() if name.endswith(".png")]
        assert sorted(names) == sorted(train)
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
    assert len(load_images(out / "images.zip", 32)) == len(train)
    assert len(load_images(out, 32)) == len(train)


def test_resume_after_torn_record(bad_inputs, tmp_path):
    out = tmp_path / "out"
    first = prepare(bad_inputs, out, SIZE, workers=1, align=KEEP_ALL)
    manifest = out / "manifest.jsonl"
    lines = manifest.read_text(encoding="utf-8").splitlines(keepends=True)
    # Cut the last record in half, as a kill during the write would.
    manifest.write_text("".join(lines[:-1]) + lines[-1][:40], encoding="utf-8")
    second = prepare(bad_inputs, out, SIZE, workers=1, align=KEEP_ALL)
    assert second.resumed == first.found - 1
    assert second.written + second.skipped == 1
    third = prepare(bad_inputs, out, SIZE, workers=1, align=KEEP_ALL)
    assert third.resumed == first.found
    written = [r for r in read_manifest(out) if r["status"] == "written"]
    assert np.load(out / "descriptors.npy").shape[0] == len(written)


def test_two_workers_match_one(bad_inputs, tmp_path):
    one = prepare(bad_inputs, tmp_path / "one", SIZE, workers=1, align=KEEP_ALL)
    two = prepare(bad_inputs, tmp_path / "two", SIZE, workers=2, align=KEEP_ALL)
    assert two.written == one.written
    paths_one = {r["path"] for r in read_manifest(tmp_path / "one")}
    paths_two = {r["path"] for r in read_manifest(tmp_path / "two")}
    assert paths_one == paths_two


def test_spawned_workers_align(bad_inputs, tmp_path, monkeypatch):
    # Where fork is unavailable, each spawned worker loads the models in its initializer.
    monkeypatch.setattr(prepare_module, "_fork_available", lambda: False)
    summary = prepare(bad_inputs, tmp_path / "out", SIZE, workers=2, align=KEEP_ALL)
    assert summary.written == 10
    assert summary.skipped == 5


def test_cli_aligns_by_default(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    astronaut().save(src / "astronaut.png")
    assert main(["prepare", str(src), str(tmp_path / "aligned"), "--size", "64"]) == 0
    table = capsys.readouterr().out
    assert "written" in table
    header = json.loads((tmp_path / "aligned" / "dataset.json").read_text())
    assert header["aligned"] is True
    assert main(["prepare", str(src), str(tmp_path / "plain"), "--no-align"]) == 0
    header = json.loads((tmp_path / "plain" / "dataset.json").read_text())
    assert header["aligned"] is False


def test_cli_rejects_bad_option(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    assert main(["prepare", str(src), str(tmp_path / "out"), "--max-pad", "2"]) == 2
    assert "--max-pad" in capsys.readouterr().err


@needs_photos
@pytest.mark.parametrize("rule, faces", [("largest", 1), ("all", 2)])
def test_couple_face_rule(tmp_path, rule, faces):
    src = tmp_path / "src"
    src.mkdir()
    (src / "couple.jpg").write_bytes((PHOTOS / "couple.jpg").read_bytes())
    options = AlignOptions(detect=DetectOptions(rule=rule))
    summary = prepare(src, tmp_path / "out", SIZE, workers=1, align=options)
    records = _by_source(tmp_path / "out")["couple.jpg"]
    assert summary.written == faces
    assert sorted(r["face_index"] for r in records) == list(range(faces))
    assert all(r["faces_found"] == 2 for r in records)
    assert all(r["path"].startswith("images/couple_") for r in records)


@needs_photos
def test_dogs_skipped(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "dogs.jpg").write_bytes((PHOTOS / "dogs.jpg").read_bytes())
    summary = prepare(src, tmp_path / "out", SIZE, workers=1, align=AlignOptions())
    record = _only(_by_source(tmp_path / "out"), "dogs.jpg")
    assert record["reason"] == "no face found"
    assert summary.written == 0

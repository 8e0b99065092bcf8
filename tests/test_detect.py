"""detect: score threshold, size limit, group rule, upsampling and identity descriptors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facegan.data import detect
from facegan.data.imageio import load_rgb
from facegan.errors import UserError
from tests.conftest import SHARED_DATA, astronaut

PHOTOS = SHARED_DATA / "photos"
needs_photos = pytest.mark.skipif(
    not PHOTOS.is_dir(), reason=f"shared face photos not found at {PHOTOS}"
)
# Photos of one person in the shared folder, and photos of other people.
SAME_PERSON = ("img1.jpg", "img2.jpg", "img4.jpg", "img5.jpg", "img6.jpg", "img7.jpg")
OTHER_PEOPLE = ("Tom_Cruise_avp_2014_4.jpg", "img3.jpg", "img8.jpg")


def _photo(name: str) -> np.ndarray:
    return np.asarray(load_rgb(PHOTOS / name))


def _two_face_canvas() -> np.ndarray:
    """The astronaut at full size beside a half-size copy, on a grey canvas."""
    photo = astronaut()
    canvas = Image.new("RGB", (800, 512), (128, 128, 128))
    canvas.paste(photo, (0, 0))
    canvas.paste(photo.resize((256, 256), Image.Resampling.LANCZOS), (530, 128))
    return np.asarray(canvas)


def test_astronaut_one_face():
    detection = detect.find_faces(np.asarray(astronaut()), detect.DetectOptions())
    assert detection.found == 1
    left, top, right, bottom = detection.faces[0].box
    # Her face spans roughly x 175-265, y 76-166 in the 512x512 photo.
    assert 150 < left < 200
    assert 240 < right < 290
    assert 50 < top < 100
    assert 140 < bottom < 190


def test_threshold_rejects_false_box():
    image = np.asarray(astronaut())
    # Below the default threshold the detector also reports a box on her suit.
    loose = detect.detect_faces(image, detect.DetectOptions(min_score=-0.5, rule="all"))
    strict = detect.detect_faces(image, detect.DetectOptions(rule="all"))
    assert len(loose) > len(strict)
    assert all(face.score >= 0.2 for face in strict)


def test_rule_all_and_largest():
    image = _two_face_canvas()
    every = detect.find_faces(image, detect.DetectOptions(rule="all"))
    largest = detect.find_faces(image, detect.DetectOptions(rule="largest"))
    assert len(every.faces) == 2
    assert len(largest.faces) == 1
    # The two rules may detect at different upsampling, so boxes differ by a few pixels.
    assert largest.faces[0].side > 1.5 * min(face.side for face in every.faces)
    # The full-size face is on the left of the canvas.
    assert largest.faces[0].box[0] < 400


def test_min_face_counts_small_faces():
    image = _two_face_canvas()
    options = detect.DetectOptions(rule="all", min_face=70)
    detection = detect.find_faces(image, options)
    assert len(detection.faces) == 1
    assert detection.too_small == 1
    assert detection.found == 2


def test_upsampling_finds_small_face():
    small = np.asarray(astronaut().resize((200, 200), Image.Resampling.LANCZOS))
    # Her face is now about 35 px wide, below the detector's 80 px window.
    assert detect.detect_faces(small, detect.DetectOptions(upsample=0)) == []
    found = detect.detect_faces(small, detect.DetectOptions(upsample=1))
    assert len(found) == 1


def test_detect_size_maps_boxes_back():
    large = np.asarray(astronaut().resize((1536, 1536), Image.Resampling.LANCZOS))
    full = detect.detect_faces(large, detect.DetectOptions(detect_size=1536, upsample=0))
    scaled = detect.detect_faces(large, detect.DetectOptions(detect_size=512, upsample=0))
    assert len(full) == 1
    assert len(scaled) == 1
    # Detection at a third of the size lands within a few percent of the face width.
    tolerance = 0.1 * full[0].side
    assert np.abs(np.subtract(full[0].box, scaled[0].box)).max() < tolerance


@pytest.mark.parametrize(
    "field, value, flag",
    [
        ("upsample", 3, "--upsample"),
        ("min_face", 0, "--min-face"),
        ("detect_size", 100, "--detect-size"),
        ("landmarks", 12, "--landmarks"),
        ("rule", "biggest", "--faces"),
    ],
)
def test_options_validate(field, value, flag):
    options = detect.DetectOptions(**{field: value})
    with pytest.raises(UserError, match=flag):
        options.validate()


def test_landmarks_inside_box():
    image = np.asarray(astronaut())
    face = detect.find_faces(image, detect.DetectOptions()).faces[0]
    for points in (68, 5):
        landmarks = detect.predict_landmarks(image, face.box, points)
        assert landmarks.shape == (points, 2)
        left, top, right, bottom = face.box
        margin = 0.3 * face.side
        assert (landmarks[:, 0] > left - margin).all()
        assert (landmarks[:, 0] < right + margin).all()
        assert (landmarks[:, 1] > top - margin).all()
        assert (landmarks[:, 1] < bottom + margin).all()


def test_descriptor_shape():
    image = np.asarray(astronaut())
    face = detect.find_faces(image, detect.DetectOptions()).faces[0]
    descriptor = detect.face_descriptor(image, face.box)
    assert descriptor.shape == (128,)
    assert descriptor.dtype == np.float32
    assert np.linalg.norm(descriptor) > 0.1


@pytest.fixture(scope="module")
def photo_descriptors():
    descriptors = {}
    for name in SAME_PERSON + OTHER_PEOPLE:
        image = _photo(name)
        face = detect.find_faces(image, detect.DetectOptions()).faces[0]
        descriptors[name] = detect.face_descriptor(image, face.box)
    return descriptors


@needs_photos
def test_same_person_descriptors_close(photo_descriptors):
    reference = photo_descriptors[SAME_PERSON[0]]
    for name in SAME_PERSON[1:]:
        distance = np.linalg.norm(photo_descriptors[name] - reference)
        assert distance < 0.6, f"{name}: distance {distance:.3f}"


@needs_photos
def test_other_people_descriptors_far(photo_descriptors):
    reference = photo_descriptors[SAME_PERSON[0]]
    for name in OTHER_PEOPLE:
        distance = np.linalg.norm(photo_descriptors[name] - reference)
        assert distance > 0.6, f"{name}: distance {distance:.3f}"


@needs_photos
@pytest.mark.parametrize(
    "name, minimum, maximum",
    [("couple.jpg", 2, 2), ("bald_guys.jpg", 20, 30), ("dogs.jpg", 0, 0)],
)
def test_group_photo_counts(name, minimum, maximum):
    detection = detect.find_faces(_photo(name), detect.DetectOptions(rule="all"))
    assert minimum <= len(detection.faces) <= maximum

"""align: landmark geometry, the one-transform renderer, and alignment of real rotated photos."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facegan.data import align
from facegan.data.detect import DetectOptions, find_faces, predict_landmarks
from tests.conftest import astronaut

ROTATIONS = (-30, -15, 0, 10, 30)
SIZE = 256


def _upright_landmarks() -> np.ndarray:
    """68 landmarks with eyes at (40, 50) and (60, 50) and mouth corners at (42, 70), (58, 70)."""
    points = np.zeros((68, 2))
    points[36:42] = (40, 50)
    points[42:48] = (60, 50)
    points[48] = (42, 70)
    points[54] = (58, 70)
    return points


def _smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(height // 8, width // 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))


def _eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return landmarks[36:42].mean(axis=0), landmarks[42:48].mean(axis=0)


def _landmarks_of(image: np.ndarray, points: int = 68) -> np.ndarray:
    detection = find_faces(image, DetectOptions(landmarks=points))
    assert detection.faces, "no face detected"
    return predict_landmarks(image, detection.faces[0].box, points)


def _rotated(image: Image.Image, degrees: float) -> np.ndarray:
    # expand=True keeps the whole photo, and the black corners are real border content.
    return np.asarray(image.rotate(degrees, Image.Resampling.BICUBIC, expand=True))


def test_face_points_from_68():
    points = align.face_points(_upright_landmarks())
    np.testing.assert_allclose(points.eye_left, (40, 50))
    np.testing.assert_allclose(points.eye_right, (60, 50))
    np.testing.assert_allclose(points.mouth, (50, 70))


def test_face_points_from_5():
    five = np.array([[64, 50], [56, 50], [36, 50], [44, 50], [50, 60]], dtype=float)
    points = align.face_points(five)
    np.testing.assert_allclose(points.eye_left, (40, 50))
    np.testing.assert_allclose(points.eye_right, (60, 50))
    expected_mouth_y = 50 + align.MOUTH_TO_NOSE_RATIO * 10
    np.testing.assert_allclose(points.mouth, (50, expected_mouth_y))


def test_face_points_rejects_other_counts():
    with pytest.raises(ValueError, match="shape"):
        align.face_points(np.zeros((10, 2)))


def test_quad_of_upright_face():
    quad = align.face_quad(align.face_points(_upright_landmarks()))
    # Eye distance 20 and eye-to-mouth distance 20, so the half-width is max(40, 36) = 40.
    # The centre is 0.1 of the eye-to-mouth vector below the eye midpoint: (50, 52).
    np.testing.assert_allclose(quad[0], (10, 12))
    np.testing.assert_allclose(quad[1], (10, 92))
    np.testing.assert_allclose(quad[2], (90, 92))
    np.testing.assert_allclose(quad[3], (90, 12))


def test_quad_rotates_with_face():
    angle = np.radians(25)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = _upright_landmarks() @ rotation.T
    quad = align.face_quad(align.face_points(landmarks))
    top_edge = quad[3] - quad[0]
    assert np.degrees(np.arctan2(top_edge[1], top_edge[0])) == pytest.approx(25)
    assert np.hypot(*top_edge) == pytest.approx(80)


def test_quad_matrix_maps_pixel_centres():
    quad = np.array([[10, 12], [10, 92], [90, 92], [90, 12]], dtype=float)
    matrix = align.quad_matrix(quad, 80)
    corners = align.map_points(matrix, [[-0.5, -0.5], [79.5, 79.5]])
    np.testing.assert_allclose(corners, [[10, 12], [90, 92]])
    inverse = align.invert_affine(matrix)
    np.testing.assert_allclose(align.map_points(inverse, corners), [[-0.5, -0.5], [79.5, 79.5]])


def test_render_identity_quad_copies_image():
    image = _smooth_image(64, 64)
    quad = np.array([[-0.5, -0.5], [-0.5, 63.5], [63.5, 63.5], [63.5, -0.5]])
    rendered = align.render_quad(image, quad, 64)
    assert np.abs(rendered.astype(int) - image).max() <= 1


def test_render_quarter_turn():
    image = _smooth_image(64, 64, seed=1)
    # The output's top edge runs down the source's left column: a 90-degree turn.
    quad = np.array([[-0.5, -0.5], [63.5, -0.5], [63.5, 63.5], [-0.5, 63.5]])
    rendered = align.render_quad(image, quad, 64)
    expected = np.transpose(image, (1, 0, 2))
    assert np.abs(rendered.astype(int) - expected).max() <= 1


def test_render_downscale_averages_blocks():
    # A one-pixel checkerboard aliases to black or white when point-sampled; supersampling
    # averages it to mid-grey.
    checker = (np.indices((256, 256)).sum(axis=0) % 2 * 255).astype(np.uint8)
    image = np.repeat(checker[..., None], 3, axis=2)
    quad = np.array([[-0.5, -0.5], [-0.5, 255.5], [255.5, 255.5], [255.5, -0.5]])
    rendered = align.render_quad(image, quad, 32)
    assert abs(rendered.mean() - 127.5) < 2
    assert rendered.std() < 2


def _centroid(pixels: np.ndarray) -> np.ndarray:
    weights = pixels[..., 0].astype(np.float64)
    rows, cols = np.indices(weights.shape)
    return np.array([(cols * weights).sum(), (rows * weights).sum()]) / weights.sum()


@pytest.mark.parametrize("size", [64, 256])
def test_render_large_crop_keeps_positions(size):
    # A 512-px crop at 64 px takes the block-averaging path before the transform, and at
    # 256 px it does not. Both must map a bright square to the same place.
    image = np.zeros((512, 512, 3), dtype=np.uint8)
    image[300:316, 100:116] = 255  # centre at (107.5, 307.5) in pixel indices
    quad = np.array([[-0.5, -0.5], [-0.5, 511.5], [511.5, 511.5], [511.5, -0.5]])
    rendered = align.render_quad(image, quad, size)
    scale = size / 512
    expected = (np.array([107.5, 307.5]) + 0.5) * scale - 0.5
    np.testing.assert_allclose(_centroid(rendered), expected, atol=0.05)


def test_render_pads_outside_photo():
    image = np.full((100, 100, 3), 200, dtype=np.uint8)
    image[:, :50] = 20
    # The quad covers the photo's right half and the same width beyond its right edge.
    quad = np.array([[49.5, -0.5], [49.5, 99.5], [149.5, 99.5], [149.5, -0.5]])
    rendered = align.render_quad(image, quad, 64)
    outside = rendered[:, 40:]
    # Reflection continues the bright half instead of leaving black or a hard edge.
    assert outside.min() > 100
    matrix = align.quad_matrix(quad, 64)
    assert align.pad_fraction(matrix, 64, image.shape) == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("size", [align.MIN_SIZE, align.MAX_SIZE])
def test_render_size_limits(size):
    image = _smooth_image(64, 64)
    quad = np.array([[0, 0], [0, 63], [63, 63], [63, 0]], dtype=float)
    assert align.render_quad(image, quad, size).shape == (size, size, 3)


@pytest.mark.parametrize("size", [align.MIN_SIZE - 1, align.MAX_SIZE + 1])
def test_render_rejects_sizes(size):
    image = _smooth_image(64, 64)
    quad = np.array([[0, 0], [0, 63], [63, 63], [63, 0]], dtype=float)
    with pytest.raises(ValueError, match="between"):
        align.render_quad(image, quad, size)


@pytest.fixture(scope="module")
def astronaut_reference():
    """The unrotated astronaut's alignment and the output positions it gives her eyes."""
    image = np.asarray(astronaut())
    landmarks = _landmarks_of(image)
    aligned = align.align_face(image, landmarks, SIZE)
    to_output = align.invert_affine(aligned.matrix)
    eyes = align.map_points(to_output, np.stack(_eye_centres(landmarks)))
    return aligned, eyes


@pytest.mark.parametrize("degrees", ROTATIONS)
def test_rotated_astronaut_comes_out_level(degrees, astronaut_reference):
    _, expected_eyes = astronaut_reference
    photo = _rotated(astronaut(), degrees)
    aligned = align.align_face(photo, _landmarks_of(photo), SIZE)

    # Measure the result the way a user would: detect landmarks again on the output.
    eye_left, eye_right = _eye_centres(_landmarks_of(aligned.image))
    eye_line = np.degrees(np.arctan2(eye_right[1] - eye_left[1], eye_right[0] - eye_left[0]))
    assert abs(eye_line) < 2.0
    assert np.hypot(*(eye_left - expected_eyes[0])) < 4.0
    assert np.hypot(*(eye_right - expected_eyes[1])) < 4.0


def test_astronaut_eyes_symmetric(astronaut_reference):
    _, eyes = astronaut_reference
    # The recipe centres the crop between the eyes and puts them above the middle.
    assert (eyes[0, 0] + eyes[1, 0]) / 2 == pytest.approx(SIZE / 2, abs=3)
    assert eyes[0, 1] < SIZE / 2
    assert eyes[1, 1] < SIZE / 2


def test_five_point_alignment_matches_68(astronaut_reference):
    reference, reference_eyes = astronaut_reference
    image = np.asarray(astronaut())
    aligned = align.align_face(image, _landmarks_of(image, points=5), SIZE)
    eyes = align.map_points(
        align.invert_affine(aligned.matrix), np.stack(_eye_centres(_landmarks_of(image)))
    )
    # The virtual mouth of the 5-point model is an estimate, so allow 4% of the size.
    assert np.abs(eyes - reference_eyes).max() < 0.04 * SIZE
    assert aligned.pad_fraction == pytest.approx(reference.pad_fraction, abs=0.05)

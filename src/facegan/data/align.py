"""Turn facial landmarks into an oriented square crop and render it at a chosen size.

The crop follows the recipe that built the FFHQ face dataset. Its centre and scale come
from the eye-to-eye and eye-to-mouth vectors, so the crop rotates with the head and its size
tracks the face, not the detector box. Everything here is a pure function of numpy arrays.

Coordinates are pixel indices: the centre of the pixel in column ``x`` and row ``y`` is at
``(x, y)``, which is how dlib reports landmarks. A quad lists the crop's outer corners in
the order top-left, bottom-left, bottom-right, top-right (the order PIL's QUAD uses).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image, ImageFilter

# Output sizes that the aligner renders. Below 32 px a face has too few pixels to align
# usefully. Above 1024 px the source crops of ordinary photos would be mostly upsampled.
MIN_SIZE = 32
MAX_SIZE = 1024

# Largest number of samples per output pixel, along each axis, that the transform renders.
# Larger source crops are first reduced by averaging pixel blocks, so the bicubic
# transform never renders more than MAX_SUPERSAMPLE**2 times the output's pixel count.
MAX_SUPERSAMPLE = 2

# Ratio of the eye-to-mouth distance to the eye-to-nose-base distance, used to place a
# virtual mouth for 5-point landmarks. The median over 145 faces measured with dlib's
# 68-point model was 1.35 (10th-90th percentile 1.19-1.52), so this is an estimate that
# shifts the crop by a few percent on atypical faces.
MOUTH_TO_NOSE_RATIO = 1.35

# Crop proportions of the FFHQ recipe. The half-width is the larger of twice the eye
# distance and 1.8 times the eye-to-mouth distance. The centre sits a tenth of the
# eye-to-mouth vector below the eye midpoint.
EYE_SCALE = 2.0
MOUTH_SCALE = 1.8
CENTRE_SHIFT = 0.1


@dataclasses.dataclass(frozen=True)
class FacePoints:
    """Eye centres and mouth centre of one face, as (x, y) pixel coordinates.

    ``eye_left`` is the eye on the left of the image (the person's right eye).
    """

    eye_left: np.ndarray
    eye_right: np.ndarray
    mouth: np.ndarray


@dataclasses.dataclass(frozen=True)
class AlignedFace:
    """An aligned crop and the geometry that produced it.

    ``matrix`` is the 2x3 affine map from output pixel indices to source pixel indices.
    ``pad_fraction`` is the share of the output that lies outside the source photo.
    """

    image: np.ndarray
    quad: np.ndarray
    matrix: np.ndarray
    pad_fraction: float


def face_points(landmarks: np.ndarray) -> FacePoints:
    """Reduce dlib's 68- or 5-point landmarks (an Nx2 array) to eyes and mouth.

    With 5 points (two corners per eye, then the base of the nose) the mouth is placed on
    the eye-to-nose line at ``MOUTH_TO_NOSE_RATIO`` times the eye-to-nose distance.
    """
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape == (68, 2):
        # iBUG 300-W numbering: 36-41 and 42-47 outline the eyes, 48 and 54 are the
        # mouth corners.
        eye_left = points[36:42].mean(axis=0)
        eye_right = points[42:48].mean(axis=0)
        mouth = (points[48] + points[54]) / 2
        return FacePoints(eye_left, eye_right, mouth)
    if points.shape == (5, 2):
        # dlib's 5-point model: 0-1 are the corners of the eye on the right of the image,
        # 2-3 those of the eye on the left, 4 is the base of the nose.
        eye_right = points[0:2].mean(axis=0)
        eye_left = points[2:4].mean(axis=0)
        eye_mid = (eye_left + eye_right) / 2
        mouth = eye_mid + MOUTH_TO_NOSE_RATIO * (points[4] - eye_mid)
        return FacePoints(eye_left, eye_right, mouth)
    raise ValueError(f"landmarks must have shape (68, 2) or (5, 2), got {points.shape}")


def face_quad(points: FacePoints) -> np.ndarray:
    """Compute the oriented square crop (a 4x2 quad) for one face.

    The crop's x axis blends the eye-to-eye direction with the eye-to-mouth direction
    turned by 90 degrees, so a face whose eyes and mouth disagree slightly about the head
    roll gets the average of the two.
    """
    eye_mid = (points.eye_left + points.eye_right) / 2
    eye_to_eye = points.eye_right - points.eye_left
    eye_to_mouth = points.mouth - eye_mid

    # Rotating the eye-to-mouth vector (dx, dy) by -90 degrees gives (dy, -dx), which
    # points the same way as eye_to_eye on an upright face.
    mouth_across = np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    axis_x = eye_to_eye + mouth_across
    norm = np.hypot(*axis_x)
    if norm < 1e-6:
        raise ValueError("eye and mouth landmarks coincide, so the face has no orientation")
    half_width = max(EYE_SCALE * np.hypot(*eye_to_eye), MOUTH_SCALE * np.hypot(*eye_to_mouth))
    axis_x = axis_x / norm * half_width
    # The y axis is the x axis turned by +90 degrees in image coordinates (y points down).
    axis_y = np.array([-axis_x[1], axis_x[0]])

    centre = eye_mid + CENTRE_SHIFT * eye_to_mouth
    return np.stack(
        [
            centre - axis_x - axis_y,
            centre - axis_x + axis_y,
            centre + axis_x + axis_y,
            centre + axis_x - axis_y,
        ]
    )


def square_quad(centre: np.ndarray, half_side: float, angle: float) -> np.ndarray:
    """Return the quad of a square around ``centre`` whose top edge is turned by ``angle`` radians."""
    cos, sin = np.cos(angle), np.sin(angle)
    axis_x = np.array([cos, sin]) * half_side
    axis_y = np.array([-sin, cos]) * half_side
    centre = np.asarray(centre, dtype=np.float64)
    return np.stack(
        [
            centre - axis_x - axis_y,
            centre - axis_x + axis_y,
            centre + axis_x + axis_y,
            centre + axis_x - axis_y,
        ]
    )


def quad_matrix(quad: np.ndarray, size: int) -> np.ndarray:
    """Return the 2x3 affine map from output pixel indices to source pixel indices.

    Output pixel ``(u, v)`` covers the square from ``(u, v)`` to ``(u + 1, v + 1)`` in the
    output's continuous coordinates, so its centre maps half a step inside the quad corner.
    """
    quad = np.asarray(quad, dtype=np.float64)
    step_u = (quad[3] - quad[0]) / size
    step_v = (quad[1] - quad[0]) / size
    linear = np.stack([step_u, step_v], axis=1)
    offset = quad[0] + linear @ np.array([0.5, 0.5])
    return np.concatenate([linear, offset[:, None]], axis=1)


def map_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to an Nx2 array of points."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Return the inverse of a 2x3 affine matrix."""
    linear_inv = np.linalg.inv(matrix[:, :2])
    return np.concatenate([linear_inv, (-linear_inv @ matrix[:, 2])[:, None]], axis=1)


def pad_fraction(matrix: np.ndarray, size: int, image_shape: tuple[int, ...]) -> float:
    """Estimate the share of the output square that falls outside the source image.

    Samples a 32x32 grid of output pixels, so the result comes in steps of 1/1024.
    """
    grid = (np.arange(32) + 0.5) * (size / 32) - 0.5
    u, v = np.meshgrid(grid, grid)
    source = map_points(matrix, np.stack([u.ravel(), v.ravel()], axis=1))
    height, width = image_shape[:2]
    inside = (
        (source[:, 0] >= -0.5)
        & (source[:, 0] <= width - 0.5)
        & (source[:, 1] >= -0.5)
        & (source[:, 1] <= height - 0.5)
    )
    return float(1.0 - inside.mean())


def _quad_bounds(quad: np.ndarray, margin: int) -> tuple[int, int, int, int]:
    """Integer pixel box (left, top, right, bottom exclusive) that covers the quad."""
    left = math.floor(quad[:, 0].min()) - margin
    top = math.floor(quad[:, 1].min()) - margin
    right = math.ceil(quad[:, 0].max()) + 1 + margin
    bottom = math.ceil(quad[:, 1].max()) + 1 + margin
    return left, top, right, bottom


def _padding_weights(
    shape: tuple[int, int], inner: tuple[int, int, int, int], crop_size: float
) -> tuple[np.ndarray, np.ndarray]:
    """Blend weights for the padded border: how far to blur and how far to fade to grey.

    ``inner`` is the box (left, top, right, bottom) of real pixels inside the padded
    array. Both weights are 0 on real pixels and grow with the distance from them.
    """
    height, width = shape
    left, top, right, bottom = inner
    cols = np.arange(width, dtype=np.float32)
    rows = np.arange(height, dtype=np.float32)
    dx = np.maximum(np.maximum(left - cols, cols - (right - 1)), 0)
    dy = np.maximum(np.maximum(top - rows, rows - (bottom - 1)), 0)
    distance = np.hypot(dx[None, :], dy[:, None])
    # The mirrored content turns to blur within 2% of the crop size and fades half-way
    # to the mean colour over 30%, which hides the mirror seams without a hard edge.
    blur_weight = np.clip(distance / (0.02 * crop_size + 1.0), 0.0, 1.0)
    fade_weight = np.clip(distance / (0.3 * crop_size + 1.0), 0.0, 1.0) * 0.5
    return blur_weight[..., None], fade_weight[..., None]


def _padded_region(
    image: np.ndarray, bounds: tuple[int, int, int, int], crop_size: float
) -> np.ndarray:
    """Cut ``bounds`` out of the image, filling the part outside it by reflection and blur."""
    height, width = image.shape[:2]
    left, top, right, bottom = bounds
    pad = (max(-left, 0), max(-top, 0), max(right - width, 0), max(bottom - height, 0))
    inside = image[max(top, 0) : min(bottom, height), max(left, 0) : min(right, width)]
    if not any(pad):
        return inside

    pad_left, pad_top, pad_right, pad_bottom = pad
    # np.pad reflects repeatedly when the padding is wider than the image itself.
    padded = np.pad(inside, ((pad_top, pad_bottom), (pad_left, pad_right), (0, 0)), "reflect")
    radius = max(1.0, 0.02 * crop_size)
    blurred = np.asarray(
        Image.fromarray(padded).filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32
    )
    inner = (pad_left, pad_top, pad_left + inside.shape[1], pad_top + inside.shape[0])
    blur_weight, fade_weight = _padding_weights(padded.shape[:2], inner, crop_size)

    result = padded.astype(np.float32)
    result += (blurred - result) * blur_weight
    mean_colour = inside.reshape(-1, 3).mean(axis=0)
    result += (mean_colour - result) * fade_weight
    return np.clip(np.rint(result), 0, 255).astype(np.uint8)


def render_quad(image: np.ndarray, quad: np.ndarray, size: int) -> np.ndarray:
    """Resample the quad of an HxWx3 uint8 image into a size x size image in one transform.

    The transform renders ``k`` samples per output pixel along each axis, where ``k`` is
    the number of source pixels per output pixel rounded up. Averaging each k x k block
    lets every source pixel contribute, so fine detail does not alias. When ``k``
    would exceed MAX_SUPERSAMPLE, blocks of source pixels are first averaged (a box filter,
    no interpolation), which brings ``k`` down to MAX_SUPERSAMPLE and bounds the cost.
    """
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"output size must be between {MIN_SIZE} and {MAX_SIZE}, got {size}")
    quad = np.asarray(quad, dtype=np.float64)
    crop_size = float(np.hypot(*(quad[3] - quad[0])))
    # Two pixels of margin keep the bicubic kernel (4 taps) inside the cut-out region.
    bounds = _quad_bounds(quad, margin=2)
    region = Image.fromarray(_padded_region(image, bounds, crop_size))
    local_quad = quad - np.array(bounds[:2], dtype=np.float64)

    shrink = math.ceil(crop_size / (MAX_SUPERSAMPLE * size))
    if shrink >= 2:
        region = region.reduce(shrink)
        # Block i covers source pixels i * shrink to (i + 1) * shrink - 1, so in pixel
        # index coordinates a point x moves to (x + 0.5) / shrink - 0.5.
        local_quad = (local_quad + 0.5) / shrink - 0.5
        crop_size /= shrink

    supersample = max(1, math.ceil(crop_size / size))
    render_size = size * supersample
    matrix = quad_matrix(local_quad, render_size)
    # PIL's AFFINE takes continuous coordinates, in which pixel centres sit at +0.5.
    linear = matrix[:, :2]
    offset = matrix[:, 2] + 0.5 - linear @ np.array([0.5, 0.5])
    coefficients = (linear[0, 0], linear[0, 1], offset[0], linear[1, 0], linear[1, 1], offset[1])
    rendered = region.transform(
        (render_size, render_size), Image.Transform.AFFINE, coefficients, Image.Resampling.BICUBIC
    )
    if supersample > 1:
        rendered = rendered.reduce(supersample)
    return np.asarray(rendered)


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int) -> AlignedFace:
    """Crop, rotate and scale one face of an HxWx3 uint8 RGB image to size x size pixels."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be an HxWx3 uint8 array, got {image.shape} {image.dtype}")
    quad = face_quad(face_points(landmarks))
    matrix = quad_matrix(quad, size)
    return AlignedFace(
        image=render_quad(image, quad, size),
        quad=quad,
        matrix=matrix,
        pad_fraction=pad_fraction(matrix, size, image.shape),
    )

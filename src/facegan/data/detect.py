"""Find faces in a photo with dlib, pick which to keep, and read their landmarks.

Detection runs dlib's HOG frontal face detector on a greyscale copy of the photo scaled
down to at most ``detect_size`` pixels on its longer side. The detector's cost grows with
the pixel count, while faces that matter for a dataset stay well above its 80-pixel window. Landmarks and descriptors are then computed on the full-resolution photo.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from facegan.data import align, dlib_models
from facegan.errors import UserError

# Rules for photos with several faces: keep only the largest box, or every face.
FACE_RULES = ("largest", "all")

# Upsampling doubles the image per step, so the detector finds faces down to about 40 px
# (one step) or 20 px (two steps) at 4 or 16 times the cost.
MAX_UPSAMPLE = 2

# Head roll, in degrees, above which landmarks are predicted a second time on an upright
# copy of the face, and the largest side in pixels of that copy.
ROLL_REFINE_DEGREES = 8.0
VIEW_MAX = 512


@dataclasses.dataclass(frozen=True)
class DetectOptions:
    """Settings for finding faces and choosing which of them to align.

    ``min_score`` is the HOG detector's score threshold. On the development photos, boxes
    on things that are not faces scored up to 0.12 and real faces from 0.29 up, so the
    default 0.2 sits between the two. The ranges can overlap (a rotated photo gave a false
    box of 0.28). ``min_face`` is the smallest box side, in source pixels, worth aligning.
    """

    upsample: int = 1
    min_score: float = 0.2
    min_face: int = 32
    detect_size: int = 1024
    landmarks: int = 68
    rule: str = "largest"

    def validate(self) -> None:
        """Raise UserError naming the option when a value is out of range."""
        if not 0 <= self.upsample <= MAX_UPSAMPLE:
            raise UserError(f"invalid --upsample {self.upsample}; use 0 to {MAX_UPSAMPLE}")
        if self.min_face < 1:
            raise UserError(f"invalid --min-face {self.min_face}; use a size of 1 px or more")
        if self.detect_size < 160:
            raise UserError(f"invalid --detect-size {self.detect_size}; use 160 px or more")
        if self.landmarks not in dlib_models.LANDMARK_POINTS:
            raise UserError(f"invalid --landmarks {self.landmarks}; use 68 or 5")
        if self.rule not in FACE_RULES:
            raise UserError(f"invalid --faces {self.rule!r}; use one of {', '.join(FACE_RULES)}")


@dataclasses.dataclass(frozen=True)
class FaceBox:
    """One detector hit: its score and box (left, top, right, bottom) in source pixels."""

    score: float
    box: tuple[int, int, int, int]

    @property
    def side(self) -> int:
        """Shorter side of the box in pixels."""
        left, top, right, bottom = self.box
        return min(right - left, bottom - top)


@dataclasses.dataclass(frozen=True)
class Detection:
    """The faces chosen in one photo, plus counts of what the detector found there.

    ``found`` counts boxes above the score threshold in the detection pass that was used
    (under the ``largest`` rule, often the pass without upsampling, which misses faces
    under about 80 px). ``too_small`` counts those rejected for being smaller than
    ``min_face``. ``faces`` is in the order of decreasing box area.
    """

    faces: list[FaceBox]
    found: int
    too_small: int


def detect_faces(image: np.ndarray, options: DetectOptions) -> list[FaceBox]:
    """Run the HOG detector on an HxWx3 uint8 RGB image and return boxes above threshold.

    Boxes are in source pixel coordinates, sorted by area (largest first, ties broken by
    score). Under the ``largest`` rule the detector first runs without upsampling, which
    finds every face of 80 px or more (in the detection copy) at a quarter of the cost.
    It upsamples only when that pass finds no face of at least ``min_face``. Upsampled
    passes also produce more large false boxes, which the ``largest`` rule would favour.
    """
    grey, scale = _detection_copy(image, options.detect_size)
    passes = [options.upsample]
    if options.rule == "largest" and options.upsample > 0:
        passes = [0, options.upsample]
    boxes: list[FaceBox] = []
    for upsample in passes:
        boxes = _run_detector(grey, scale, image.shape, upsample, options.min_score)
        if any(face.side >= options.min_face for face in boxes):
            break
    boxes.sort(key=lambda face: (_area(face.box), face.score), reverse=True)
    return boxes


def _detection_copy(image: np.ndarray, detect_size: int) -> tuple[np.ndarray, float]:
    """Return the greyscale copy the detector runs on and its scale relative to the image."""
    height, width = image.shape[:2]
    scale = min(1.0, detect_size / max(height, width))
    grey = Image.fromarray(image).convert("L")
    if scale < 1.0:
        small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        grey = grey.resize(small_size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(grey), scale


def _run_detector(
    grey: np.ndarray, scale: float, shape: tuple, upsample: int, min_score: float
) -> list[FaceBox]:
    height, width = shape[:2]
    detector = dlib_models.face_detector()
    rects, scores, _ = detector.run(grey, upsample, min_score)
    boxes = []
    for rect, score in zip(rects, scores):
        box = (
            max(0, round(rect.left() / scale)),
            max(0, round(rect.top() / scale)),
            min(width, round((rect.right() + 1) / scale)),
            min(height, round((rect.bottom() + 1) / scale)),
        )
        boxes.append(FaceBox(score=float(score), box=box))
    return boxes


def _area(box: tuple[int, int, int, int]) -> int:
    left, top, right, bottom = box
    return (right - left) * (bottom - top)


def choose_faces(boxes: list[FaceBox], options: DetectOptions) -> Detection:
    """Drop boxes below ``min_face`` and apply the group rule to the rest."""
    large = [face for face in boxes if face.side >= options.min_face]
    chosen = large[:1] if options.rule == "largest" else large
    return Detection(faces=chosen, found=len(boxes), too_small=len(boxes) - len(large))


def find_faces(image: np.ndarray, options: DetectOptions) -> Detection:
    """Detect faces in an RGB array and choose the ones to align."""
    return choose_faces(detect_faces(image, options), options)


def _dlib_rectangle(box: tuple[int, int, int, int]):
    import dlib

    left, top, right, bottom = box
    # dlib rectangles include their right and bottom pixel.
    return dlib.rectangle(left, top, right - 1, bottom - 1)


def _shape(image: np.ndarray, box: tuple[int, int, int, int], points: int):
    return dlib_models.shape_predictor(points)(image, _dlib_rectangle(box))


def _predict(image: np.ndarray, box: tuple[int, int, int, int], points: int) -> np.ndarray:
    shape = _shape(image, box, points)
    return np.array([(part.x, part.y) for part in shape.parts()], dtype=np.float64)


def _predict_upright(
    image: np.ndarray, box: tuple[int, int, int, int], landmarks: np.ndarray, points: int
) -> np.ndarray:
    """Predict landmarks again on a copy of the face turned upright by the current estimate."""
    quad = align.face_quad(align.face_points(landmarks))
    top_edge = quad[3] - quad[0]
    roll = np.arctan2(top_edge[1], top_edge[0])
    side = max(box[2] - box[0], box[3] - box[1])
    # A view twice the box side, rendered at 1:1 scale up to VIEW_MAX px, leaves room for
    # the whole face whatever the error of the first estimate.
    view = int(min(2 * side, VIEW_MAX))
    centre = landmarks.mean(axis=0)
    view_quad = align.square_quad(centre, side, roll)
    pixels = align.render_quad(image, view_quad, view)
    quarter = view // 4
    upright = _predict(pixels, (quarter, quarter, view - quarter, view - quarter), points)
    return align.map_points(align.quad_matrix(view_quad, view), upright)


def predict_landmarks(
    image: np.ndarray, box: tuple[int, int, int, int], points: int = 68
) -> np.ndarray:
    """Return the 68 or 5 landmarks of the face in ``box`` as a float64 Nx2 array of (x, y).

    dlib's landmark models were trained on mostly upright faces, so on a strongly tilted
    head their first estimate can be off by tens of degrees. When the estimated roll
    exceeds ROLL_REFINE_DEGREES the face is turned upright by that estimate and its
    landmarks predicted again, up to twice.
    """
    landmarks = _predict(image, box, points)
    for _ in range(2):
        quad = align.face_quad(align.face_points(landmarks))
        top_edge = quad[3] - quad[0]
        if abs(np.degrees(np.arctan2(top_edge[1], top_edge[0]))) < ROLL_REFINE_DEGREES:
            break
        landmarks = _predict_upright(image, box, landmarks, points)
    return landmarks


def face_descriptor(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Compute the 128-d dlib identity descriptor (float32) of the face in ``box``.

    The descriptor always uses the 5-point landmarks, the alignment dlib's network was
    trained with, so descriptors stay comparable whichever landmark model aligned the crop.
    """
    return dlib_models.face_descriptor(image, _shape(image, box, 5))


def load_models(points: int = 68) -> None:
    """Load the detector, the landmark models and the descriptor network into this process."""
    dlib_models.face_detector()
    dlib_models.shape_predictor(points)
    dlib_models.shape_predictor(5)
    dlib_models.face_encoder()

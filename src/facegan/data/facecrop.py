"""Align the chosen faces of one photo: the per-photo step of ``facegan prepare``.

Runs inside a worker process. It returns the encoded PNG of every face with its geometry,
descriptor and perceptual hash, and the main process decides which faces to keep and
writes them, so a face is on disk only when its manifest record follows.
"""

from __future__ import annotations

import dataclasses
import io
import logging

import numpy as np
from PIL import Image

from facegan.data import align, dedupe, detect
from facegan.errors import UserError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class AlignOptions:
    """Settings for aligned face crops.

    ``max_pad`` is the largest share of the output square that may lie outside the photo
    (filled by reflection and blur) before a face is rejected. ``near_duplicate`` is the
    largest pHash Hamming distance (of 256 bits) at which two aligned faces count as the
    same image, or -1 to keep near duplicates.
    """

    detect: detect.DetectOptions = dataclasses.field(default_factory=detect.DetectOptions)
    max_pad: float = 0.4
    near_duplicate: int = 24

    def validate(self) -> None:
        """Raise UserError naming the option when a value is out of range."""
        self.detect.validate()
        if not 0.0 <= self.max_pad <= 1.0:
            raise UserError(f"invalid --max-pad {self.max_pad}; use a fraction from 0 to 1")
        if not -1 <= self.near_duplicate <= dedupe.HASH_BITS:
            raise UserError(
                f"invalid --near-dup {self.near_duplicate}; use -1 (off) to {dedupe.HASH_BITS}"
            )


@dataclasses.dataclass
class FaceCrop:
    """One aligned face, or the reason it was rejected (then ``png`` is None)."""

    face_index: int
    score: float
    box: tuple[int, int, int, int]
    landmarks: list | None = None
    quad: list | None = None
    matrix: list | None = None
    pad_fraction: float | None = None
    png: bytes | None = None
    phash: str | None = None
    descriptor: np.ndarray | None = None
    reason: str | None = None

    def geometry(self) -> dict:
        """Return the manifest fields that describe where the face came from."""
        return {
            "face_index": self.face_index,
            "score": round(self.score, 4),
            "box": list(self.box),
            "landmarks": self.landmarks,
            "quad": self.quad,
            "matrix": self.matrix,
            "pad_fraction": self.pad_fraction,
        }


@dataclasses.dataclass
class PhotoFaces:
    """Detector counts for one photo and the crops of its chosen faces."""

    found: int
    too_small: int
    largest_rejected_side: int | None
    crops: list[FaceCrop]


def _rounded(array: np.ndarray, digits: int = 3) -> list:
    return np.round(np.asarray(array, dtype=np.float64), digits).tolist()


def _encode_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def crop_face(
    image: np.ndarray, face: detect.FaceBox, index: int, size: int, options: AlignOptions
) -> FaceCrop:
    """Align one detected face, or return a FaceCrop whose ``reason`` explains the rejection."""
    landmarks = detect.predict_landmarks(image, face.box, options.detect.landmarks)
    aligned = align.align_face(image, landmarks, size)
    crop = FaceCrop(
        face_index=index,
        score=face.score,
        box=face.box,
        landmarks=_rounded(landmarks, 1),
        quad=_rounded(aligned.quad),
        matrix=_rounded(aligned.matrix, 6),
        pad_fraction=round(aligned.pad_fraction, 4),
    )
    if aligned.pad_fraction > options.max_pad:
        crop.reason = (
            f"face cut by the photo border: {aligned.pad_fraction:.0%} of the crop is padding, "
            f"more than --max-pad {options.max_pad:.0%}"
        )
        return crop
    crop.png = _encode_png(aligned.image)
    crop.phash = dedupe.hash_hex(dedupe.perceptual_hash(aligned.image))
    crop.descriptor = detect.face_descriptor(image, face.box)
    return crop


def crop_faces(image: np.ndarray, size: int, options: AlignOptions) -> PhotoFaces:
    """Detect, choose and align the faces of an HxWx3 uint8 RGB photo."""
    boxes = detect.detect_faces(image, options.detect)
    detection = detect.choose_faces(boxes, options.detect)
    rejected = [face.side for face in boxes if face.side < options.detect.min_face]
    crops = [
        crop_face(image, face, index, size, options)
        for index, face in enumerate(detection.faces)
    ]
    return PhotoFaces(
        found=detection.found,
        too_small=detection.too_small,
        largest_rejected_side=max(rejected) if rejected else None,
        crops=crops,
    )

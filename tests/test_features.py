"""Feature extractors on real faces: real against real is close, real against noise is far."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facegan.errors import UserError
from facegan.evaluation import features
from facegan.evaluation.metrics import frechet_distance, precision_recall

from .conftest import UTKFACE, face_variants, needs_utkface

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def utkface_images(count: int, size: int = 64, offset: int = 0) -> np.ndarray:
    paths = sorted(UTKFACE.glob("*.jpg"))[offset : offset + count]
    return np.stack(
        [np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BICUBIC)) for p in paths]
    )


def noise_images(count: int, size: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(count, size, size, 3), dtype=np.uint8)


def requires(name: str):
    reason = features.extractor_available(name)
    return pytest.mark.skipif(reason is not None, reason=f"{name} extractor unavailable: {reason}")


@pytest.fixture(scope="module")
def real_and_noise():
    # Every 50th UTKFace file, so that the two halves mix ages, sexes and ethnicities.
    paths = sorted(UTKFACE.glob("*.jpg"))[::50][:80]
    real = np.stack(
        [np.asarray(Image.open(p).convert("RGB").resize((64, 64), Image.BICUBIC)) for p in paths]
    )
    return real, noise_images(40)


def test_dlib_detects_faces_not_noise():
    faces = np.stack([np.asarray(face.resize((64, 64))) for face in face_variants(6)])
    extracted = features.make_extractor("dlib").extract(
        np.concatenate([faces, noise_images(4)]), progress=False
    )
    assert extracted.values.shape == (10, 128)
    assert extracted.face_found[:6].all()
    assert not extracted.face_found[6:].any()
    assert np.isfinite(extracted.values).all()


def test_dlib_same_person_within_threshold():
    faces = np.stack([np.asarray(face.resize((64, 64))) for face in face_variants(6, seed=1)])
    values = features.make_extractor("dlib").extract(faces, progress=False).values
    distances = np.linalg.norm(values[:, None] - values[None], axis=-1)
    assert distances.max() < 0.6


# Faces per half for each extractor: enough to separate real from noise, few enough
# that Inception at 299x299 stays within seconds on a CPU.
HALF_SIZES = {"dlib": 30, "effnet": 24, "inception": 12}


@needs_utkface
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=requires(n)) for n in ("dlib", "effnet", "inception")]
)
def test_extractor_separates_real_from_noise(name, real_and_noise):
    real, noise = real_and_noise
    half = HALF_SIZES[name]
    extractor = features.make_extractor(name)
    real_features = extractor.extract(real[: 2 * half], batch_size=16, progress=False)
    noise_features = extractor.extract(noise[:half], batch_size=16, progress=False)
    assert real_features.values.shape == (2 * half, extractor.dim)
    first, second = real_features.values[:half], real_features.values[half:]
    self_distance = frechet_distance(first, first)
    split_distance = frechet_distance(first, second)
    noise_distance = frechet_distance(first, noise_features.values)
    assert self_distance == pytest.approx(0.0, abs=1e-6)
    assert noise_distance > 2 * split_distance
    _, recall = precision_recall(first, noise_features.values)
    # Noise may collapse into one spot of descriptor space, but it never covers real faces.
    assert recall == 0.0
    if name == "dlib":
        assert real_features.face_found.mean() >= 0.9
        assert noise_features.face_found.mean() == 0.0


@requires("inception")
def test_inception_pool_features_deterministic():
    images = np.stack([np.asarray(face.resize((64, 64))) for face in face_variants(2)])
    extractor = features.make_extractor("inception")
    first = extractor.extract(images, progress=False).values
    second = extractor.extract(images, progress=False).values
    assert first.shape == (2, 2048)
    # Average-pooled ReLU outputs are never negative.
    assert first.min() >= 0.0
    np.testing.assert_allclose(first, second, rtol=1e-5)


def test_make_extractor_rejects_unknown_name():
    with pytest.raises(UserError, match="invalid feature extractor 'vgg'"):
        features.make_extractor("vgg")


def test_extract_rejects_float_images():
    with pytest.raises(ValueError, match="uint8"):
        features.make_extractor("dlib").extract(np.zeros((2, 8, 8, 3), dtype=np.float32))


def test_extract_rejects_grey_images():
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        features.make_extractor("dlib").extract(np.zeros((2, 8, 8), dtype=np.uint8))

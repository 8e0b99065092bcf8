"""Shared fixtures: small datasets of real faces cut from scikit-image's photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
UTKFACE = SHARED_DATA / "utkface-200"
needs_utkface = pytest.mark.skipif(
    not UTKFACE.is_dir(), reason=f"UTKFace faces not found at {UTKFACE}"
)

# The astronaut photo (512x512, public domain): her face fills roughly this box.
ASTRONAUT_FACE_BOX = (150, 30, 290, 190)  # left, top, right, bottom


def astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


def face_variants(count: int, seed: int = 0) -> list[Image.Image]:
    """Return ``count`` different crops of the astronaut's face: shifted, scaled, recoloured."""
    rng = np.random.default_rng(seed)
    photo = astronaut()
    left, top, right, bottom = ASTRONAUT_FACE_BOX
    faces = []
    for _ in range(count):
        dx, dy = rng.integers(-12, 13, size=2)
        grow = int(rng.integers(-10, 30))
        box = (left + dx - grow, top + dy - grow, right + dx + grow, bottom + dy + grow)
        face = photo.crop(box)
        gain = rng.uniform(0.8, 1.2, size=3)
        pixels = np.clip(np.asarray(face, dtype=np.float32) * gain, 0, 255).astype(np.uint8)
        face = Image.fromarray(pixels)
        if rng.random() < 0.5:
            face = face.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        faces.append(face)
    return faces


@pytest.fixture(scope="session")
def face_folder(tmp_path_factory) -> Path:
    """A folder of 24 face photos (JPEG and PNG) cut from the astronaut photo."""
    folder = tmp_path_factory.mktemp("faces")
    for index, face in enumerate(face_variants(24)):
        suffix = ".jpg" if index % 2 else ".png"
        face.save(folder / f"face_{index:02d}{suffix}")
    return folder


@pytest.fixture(scope="session")
def dataset32(face_folder, tmp_path_factory) -> Path:
    """``face_folder`` prepared at 32x32."""
    from facegan.data.prepare import prepare

    out = tmp_path_factory.mktemp("dataset32")
    prepare(face_folder, out, size=32, workers=1)
    return out


def tiny_config(**overrides):
    """The test-32 preset with ``overrides``; a step takes a few milliseconds."""
    from facegan.config import resolve_config

    return resolve_config("test-32", overrides)


@pytest.fixture(scope="session")
def trained_run(dataset32, tmp_path_factory) -> Path:
    """A run of the test-32 preset trained for 4 steps."""
    from facegan.training.loop import train

    run_dir = tmp_path_factory.mktemp("run")
    train(dataset32, run_dir, tiny_config())
    return run_dir


@pytest.fixture()
def one_torch_thread():
    """Run a test on one torch thread, restoring the previous count afterwards."""
    # On 2 cores shared with other jobs, 2 torch threads ran EfficientNet 3x slower than 1.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

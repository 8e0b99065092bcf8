"""Load a training set into memory as one uint8 tensor.

``DATA`` may be a folder made by ``facegan prepare`` (its manifest lists the images and
marks held-out faces), a plain folder of images, or a ZIP file of images. Images whose
size differs from the training resolution are centre-cropped and resized on load.
"""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from facegan.data.imageio import (
    IMAGE_SUFFIXES,
    ImageDecodeError,
    _to_rgb,
    center_crop_resize,
    list_images,
    load_rgb,
)
from facegan.data.prepare import read_manifest
from facegan.errors import UserError

log = logging.getLogger(__name__)


def _manifest_paths(root: Path) -> list[Path] | None:
    records = read_manifest(root)
    if not records:
        return None
    paths = [
        root / record["path"]
        for record in records
        if record.get("status") == "written" and record.get("split", "train") == "train"
    ]
    return paths


def _square(image: Image.Image, resolution: int, upscaled: list[int]) -> np.ndarray:
    """Centre-crop and resize ``image``; count images that had to be enlarged in ``upscaled``."""
    if min(image.size) < resolution:
        upscaled[0] += 1
    return np.asarray(center_crop_resize(image, resolution))


def _load_folder(root: Path, resolution: int, upscaled: list[int]) -> list[np.ndarray]:
    paths = _manifest_paths(root)
    if paths is None:
        paths = list_images(root)
    images = []
    for path in tqdm(paths, desc="load", unit="img", dynamic_ncols=True, leave=False):
        try:
            image = load_rgb(path)
        except (ImageDecodeError, FileNotFoundError) as error:
            log.warning("skipped %s: %s", path, error)
            continue
        images.append(_square(image, resolution, upscaled))
    return images


def _load_zip(path: Path, resolution: int, upscaled: list[int]) -> list[np.ndarray]:
    images = []
    with zipfile.ZipFile(path) as archive:
        names = sorted(
            name for name in archive.namelist() if Path(name).suffix.lower() in IMAGE_SUFFIXES
        )
        for name in tqdm(names, desc="load", unit="img", dynamic_ncols=True, leave=False):
            try:
                with Image.open(io.BytesIO(archive.read(name))) as image:
                    image.load()
                    rgb = _to_rgb(image)
            except (OSError, SyntaxError, ValueError) as error:
                log.warning("skipped %s in %s: %s", name, path, error)
                continue
            images.append(_square(rgb, resolution, upscaled))
    return images


def load_images(data: Path, resolution: int) -> torch.Tensor:
    """Load every training image under ``data`` as a uint8 tensor of shape (N, 3, R, R)."""
    data = Path(data)
    upscaled = [0]
    if data.is_dir():
        images = _load_folder(data, resolution, upscaled)
    elif data.is_file() and zipfile.is_zipfile(data):
        images = _load_zip(data, resolution, upscaled)
    else:
        raise UserError(
            f"dataset {data} not found or not a folder or ZIP file; "
            "pass the OUT folder of 'facegan prepare' or a folder of images"
        )
    if not images:
        raise UserError(f"no readable images in {data}; check the path or run 'facegan prepare'")
    if upscaled[0]:
        log.warning(
            "%d of %d images in %s are smaller than %dx%d and were enlarged, which blurs "
            "them; prepare the data at --size %d or more, or train at a lower --resolution",
            upscaled[0], len(images), data, resolution, resolution, resolution,
        )
    stacked = torch.from_numpy(np.stack(images))  # NHWC uint8
    log.info("loaded %d images from %s at %dx%d", len(images), data, resolution, resolution)
    return stacked.permute(0, 3, 1, 2).contiguous()


class BatchSampler:
    """Draw random batches as float tensors in [-1, 1], with optional horizontal flips.

    Its random state lives in its own ``torch.Generator`` so that a resumed run draws the
    same batches as an uninterrupted one.
    """

    def __init__(self, images: torch.Tensor, batch_size: int, x_flip: bool, seed: int):
        self.images = images
        self.batch_size = batch_size
        self.x_flip = x_flip
        self.generator = torch.Generator().manual_seed(seed)

    def next(self) -> torch.Tensor:
        index = torch.randint(len(self.images), (self.batch_size,), generator=self.generator)
        batch = self.images[index].float().div_(127.5).sub_(1.0)
        if self.x_flip:
            flip = torch.rand(self.batch_size, generator=self.generator) < 0.5
            batch[flip] = batch[flip].flip(3)
        return batch

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

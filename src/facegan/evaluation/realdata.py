"""Pick and load real faces for evaluation: training faces and held-out faces.

``DATA`` is a folder made by ``facegan prepare`` (its manifest marks each face
``"split": "train"`` or ``"heldout"``) or a plain folder of images, which has no held-out
faces. Faces are loaded at the generator's resolution with the same centre crop and
Lanczos resize as training, so that real and generated images reach the feature
extractors through one pipeline.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facegan.data.imageio import ImageDecodeError, center_crop_resize, list_images, load_rgb
from facegan.data.prepare import read_manifest
from facegan.errors import UserError

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class DatasetSplits:
    """Image paths of a dataset's training and held-out faces."""

    train: list[Path]
    heldout: list[Path]
    # True when the dataset marks no held-out faces and ``heldout`` was drawn at random.
    random_heldout: bool = False


def list_splits(data: Path) -> DatasetSplits:
    """List the written faces of ``data`` by split. A plain folder has only training faces."""
    data = Path(data)
    if not data.is_dir():
        raise UserError(
            f"dataset {data} not found or not a folder; pass the OUT folder of "
            "'facegan prepare' or a folder of images"
        )
    records = read_manifest(data)
    if records:
        written = [record for record in records if record.get("status") == "written"]
        train = [data / r["path"] for r in written if r.get("split", "train") == "train"]
        heldout = [data / r["path"] for r in written if r.get("split") == "heldout"]
    else:
        train, heldout = list_images(data), []
    if not train:
        raise UserError(f"no training images in {data}; check the path or run 'facegan prepare'")
    return DatasetSplits(train, heldout)


def with_random_heldout(splits: DatasetSplits, share: float, seed: int = 0) -> DatasetSplits:
    """Move a random ``share`` of the training faces to held-out when none are marked.

    The generator trained on those faces too, so a sample that copies one of them is not
    matched to it. Copies are then caught only through the remaining training faces.
    Re-running ``facegan prepare --holdout`` gives a real held-out set.
    """
    if splits.heldout:
        return splits
    if not 0 < share < 1:
        raise UserError(f"invalid held-out share {share}; use a value between 0 and 1")
    if len(splits.train) < 4:
        raise UserError(
            f"only {len(splits.train)} training images; need at least 4 to split off held-out faces"
        )
    order = np.random.default_rng(seed).permutation(len(splits.train))
    heldout_count = max(int(round(len(order) * share)), 1)
    heldout = [splits.train[i] for i in sorted(order[:heldout_count])]
    train = [splits.train[i] for i in sorted(order[heldout_count:])]
    logger.warning(
        "the dataset marks no held-out faces; using a random %d of its %d faces instead "
        "(re-run 'facegan prepare' with --holdout for faces the generator never saw)",
        heldout_count,
        len(order),
    )
    return DatasetSplits(train, heldout, random_heldout=True)


def choose(paths: list[Path], count: int | None, seed: int = 0) -> list[Path]:
    """Pick ``count`` paths at random (all of them when ``count`` is None or larger)."""
    if count is None or count >= len(paths):
        return list(paths)
    rows = np.random.default_rng(seed).choice(len(paths), count, replace=False)
    return [paths[i] for i in sorted(rows)]


def load_faces(paths: list[Path], resolution: int, progress: bool = True) -> np.ndarray:
    """Load ``paths`` as uint8 RGB of shape (N, resolution, resolution, 3), skipping bad files."""
    images = []
    for path in tqdm(paths, desc="load faces", unit="img", disable=not progress, leave=False):
        try:
            image = load_rgb(path)
        except (ImageDecodeError, FileNotFoundError) as error:
            logger.warning("skipped %s: %s", path, error)
            continue
        images.append(np.asarray(center_crop_resize(image, resolution)))
    if not images:
        raise UserError(f"none of the {len(paths)} images could be read; check the dataset")
    return np.stack(images)

"""Decode photos into RGB with one documented rule for every file kind and pixel mode.

Mode rule (applied after the EXIF orientation tag):

* ``RGB``: kept.
* ``L`` and ``1``: grey copied into the three channels.
* ``LA``, ``RGBA``, ``PA`` and palette images with transparency: composited over white,
  because transparent areas of cut-out photos are meant as background.
* ``P`` without transparency: expanded through its palette.
* ``CMYK``: converted with Pillow's built-in formula (no ICC profile).
* ``YCbCr``, ``LAB``, ``HSV``: converted by Pillow.
* 16-bit and 32-bit integer (``I;16*``, ``I``): scaled from the 0-65535 range to 0-255.
* 32-bit float (``F``): values in [0, 1] scaled by 255, larger values clipped to 255.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})

# Photos larger than this many pixels are more likely decompression bombs than faces.
Image.MAX_IMAGE_PIXELS = 200_000_000


class ImageDecodeError(Exception):
    """A file that could not be read as an image; the message names the reason."""


def list_images(root: Path) -> list[Path]:
    """Return image files under ``root`` (recursively, any suffix case) in a stable order."""
    files = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files)


def file_sha256(path: Path) -> str:
    """Return the hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        has_alpha = "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
        mode = image.mode
        if mode == "RGB":
            return image
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I"):
        values = np.asarray(image, dtype=np.float64)
        scaled = np.clip(values / 257.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(scaled, mode="L").convert("RGB")
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        scaled = np.clip(values * 255.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(scaled, mode="L").convert("RGB")
    return image.convert("RGB")


def load_rgb(path: Path) -> Image.Image:
    """Decode ``path`` into an upright RGB image following the module's mode rule.

    Raises ImageDecodeError for empty, truncated or non-image files, whatever their suffix.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageDecodeError("empty file (0 bytes)")
        with Image.open(path) as image:
            image.load()
            upright = ImageOps.exif_transpose(image)
            return _to_rgb(upright)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageDecodeError(f"image too large: {error}") from error
    except (OSError, SyntaxError, ValueError) as error:
        # Pillow raises OSError for truncated data and UnidentifiedImageError (an OSError)
        # for content that no decoder recognises, such as text renamed to .jpg.
        raise ImageDecodeError(f"cannot decode image: {error}") from error


def center_crop_resize(image: Image.Image, size: int) -> Image.Image:
    """Crop the largest centred square and resize it to ``size`` with a Lanczos filter."""
    width, height = image.size
    side = min(width, height)
    left = (width - side) // 2
    top = (height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    if side == size:
        return square
    return square.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)

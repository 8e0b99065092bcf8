"""Draw the alignment figure for docs/prepare.md from scikit-image's astronaut photo.

    python scripts/alignment_grid.py

The top row shows the photo rotated by -30 to +30 degrees, the bottom row the aligned
crop of each. The photo is public domain, so the
figure can be published.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

from facegan.data.facecrop import AlignOptions, crop_faces
from facegan.images import make_grid

ANGLES = (-30, -20, -10, 0, 10, 20, 30)
SIZE = 128
OUT = Path(__file__).resolve().parents[1] / "docs" / "images" / "aligned_astronaut.png"


def main() -> None:
    photo = Image.fromarray(data.astronaut())
    inputs, outputs = [], []
    for angle in ANGLES:
        rotated = photo.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=(0, 0, 0))
        faces = crop_faces(np.asarray(rotated), SIZE, AlignOptions())
        crop = next(face for face in faces.crops if face.png is not None)
        aligned = Image.open(io.BytesIO(crop.png)).convert("RGB")
        inputs.append(np.asarray(rotated.resize((SIZE, SIZE), Image.Resampling.LANCZOS)))
        outputs.append(np.asarray(aligned))
    grid = make_grid(np.stack(inputs + outputs), columns=len(ANGLES))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

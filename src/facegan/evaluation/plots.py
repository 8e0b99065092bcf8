"""Pictures for the novelty check, drawn with PIL alone: pair grids and histograms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from facegan.images import save_png

CELL = 96  # pixels per face in the pair grid
LABEL_HEIGHT = 14
PADDING = 4


def _resized(image: np.ndarray, size: int) -> Image.Image:
    return Image.fromarray(image).resize((size, size), Image.BICUBIC)


def closest_pairs_grid(
    samples: np.ndarray,
    references: np.ndarray,
    reference_indices: np.ndarray,
    distances: np.ndarray,
    path: Path,
    count: int = 16,
    columns: int = 4,
) -> Path:
    """Draw the ``count`` samples closest to a reference, each as sample | nearest reference.

    Pairs are sorted by distance, closest first, and labelled with it. ``references`` is
    indexed by ``reference_indices`` (one per sample).
    """
    order = np.argsort(distances)[:count]
    rows = (len(order) + columns - 1) // columns
    pair_width = 2 * CELL + PADDING
    width = columns * (pair_width + 3 * PADDING) + PADDING
    height = rows * (CELL + LABEL_HEIGHT + 2 * PADDING) + PADDING
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for slot, sample_index in enumerate(order):
        left = PADDING + (slot % columns) * (pair_width + 3 * PADDING)
        top = PADDING + (slot // columns) * (CELL + LABEL_HEIGHT + 2 * PADDING)
        reference = references[reference_indices[sample_index]]
        canvas.paste(_resized(samples[sample_index], CELL), (left, top))
        canvas.paste(_resized(reference, CELL), (left + CELL + PADDING, top))
        label = f"#{sample_index}  d={distances[sample_index]:.3f}"
        draw.text((left, top + CELL + 1), label, fill="black", font=font)
    save_png(np.asarray(canvas), Path(path))
    return Path(path)


def distance_histogram(
    series: dict[str, np.ndarray],
    path: Path,
    threshold: float | None = None,
    bins: int = 30,
    title: str = "",
) -> Path:
    """Plot overlaid step histograms (as shares of each series) of several distance arrays.

    A vertical dashed line marks ``threshold`` when it is given.
    """
    colours = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]
    width, height = 640, 400
    left, right, top, bottom = 60, 20, 40, 50
    values = np.concatenate([np.asarray(v, dtype=np.float64) for v in series.values()])
    low = float(values.min())
    high = float(max(values.max(), threshold or values.max()))
    if high <= low:
        high = low + 1.0
    edges = np.linspace(low, high, bins + 1)
    shares = {
        name: np.histogram(v, bins=edges)[0] / max(len(v), 1) for name, v in series.items()
    }
    peak = max(float(share.max()) for share in shares.values()) or 1.0

    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    plot_width, plot_height = width - left - right, height - top - bottom

    def x_of(value: float) -> float:
        return left + (value - low) / (high - low) * plot_width

    def y_of(share: float) -> float:
        return top + plot_height - share / peak * plot_height

    draw.rectangle((left, top, left + plot_width, top + plot_height), outline="black")
    for tick in np.linspace(low, high, 6):
        draw.line((x_of(tick), top + plot_height, x_of(tick), top + plot_height + 4), "black")
        draw.text((x_of(tick) - 12, top + plot_height + 6), f"{tick:.2f}", "black", font)
    for tick in np.linspace(0, peak, 5):
        draw.text((4, y_of(tick) - 6), f"{tick:.0%}", "black", font)
    for (name, share), colour in zip(shares.items(), colours):
        points = []
        for index, value in enumerate(share):
            points += [(x_of(edges[index]), y_of(value)), (x_of(edges[index + 1]), y_of(value))]
        draw.line(points, fill=colour, width=2)
    if threshold is not None:
        x = x_of(threshold)
        for y in range(top, top + plot_height, 8):
            draw.line((x, y, x, min(y + 4, top + plot_height)), fill="gray")
        draw.text((x + 3, top + 3), f"{threshold:g}", "gray", font)
    for index, ((name, values_of), colour) in enumerate(zip(series.items(), colours)):
        label = f"{name} (n={len(values_of)}, median {np.median(values_of):.3f})"
        draw.text((left + 8, top + 16 + 14 * index), label, fill=colour, font=font)
    draw.text((left, 12), title, "black", font)
    draw.text((left + plot_width // 2 - 60, height - 20), "nearest-neighbour distance", "black", font)
    save_png(np.asarray(canvas), Path(path))
    return Path(path)

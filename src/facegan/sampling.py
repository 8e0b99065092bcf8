"""Generate new faces from a trained run: ``facegan sample RUN``.

Latents are drawn from N(0, I) with a ``torch.Generator`` seeded by ``seed``, so a seed
always gives the same images. Truncation scales each latent towards the mean latent
(zero): ``z' = psi * z``; a style-based generator truncates in w instead, towards its
tracked mean w. At ``psi = 1`` samples are untruncated; lower values trade
variety for typical-looking faces; ``psi = 0`` gives the generator's mean face for
every seed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facegan.config import TrainConfig
from facegan.errors import UserError
from facegan.images import make_grid, save_png, to_uint8
from facegan.models import build_models
from facegan.training.checkpoint import CHECKPOINT_NAME, load_checkpoint

log = logging.getLogger(__name__)


@dataclass
class LoadedRun:
    """A generator in eval mode, ready to sample, with its resolved configuration.

    ``discriminator`` is None for the bundled model, which ships without one.
    """

    generator: nn.Module
    discriminator: nn.Module | None
    config: TrainConfig
    step: int
    source: str


def load_run(run_dir: Path | None, ema: bool = True) -> LoadedRun:
    """Load the latest checkpoint of ``run_dir``; ``ema`` picks the EMA generator weights.

    With ``run_dir`` None, load the generator bundled with the package.
    """
    if run_dir is None:
        from facegan.pretrained import DEFAULT_MODEL, load_bundled

        generator, config, card = load_bundled(DEFAULT_MODEL)
        return LoadedRun(generator, None, config, card["step"], f"bundled model {DEFAULT_MODEL}")
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT_NAME if run_dir.is_dir() else run_dir
    checkpoint = load_checkpoint(path)
    config = TrainConfig.from_dict(checkpoint["config"], str(path))
    generator, discriminator = build_models(config)
    generator.load_state_dict(checkpoint["generator_ema" if ema else "generator"])
    discriminator.load_state_dict(checkpoint["discriminator"])
    generator.eval().requires_grad_(False)
    discriminator.eval().requires_grad_(False)
    return LoadedRun(generator, discriminator, config, checkpoint["step"], str(run_dir))


MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed accepts a signed 64-bit integer


def check_seed(seed: int) -> None:
    if not 0 <= seed <= MAX_SEED:
        raise UserError(f"invalid --seed {seed}; use an integer from 0 to {MAX_SEED}")


def check_output_folder(out: Path) -> None:
    if Path(out).exists() and not Path(out).is_dir():
        raise UserError(f"--out {out} is a file; pass a folder for the samples")


def check_truncation(psi: float) -> None:
    if not 0.0 <= psi <= 1.0:  # also rejects NaN
        raise UserError(f"invalid --truncation {psi}; use a value in [0, 1] (1: no truncation)")


def sample_latents(count: int, z_dim: int, seed: int, truncation_psi: float = 1.0) -> torch.Tensor:
    """Draw ``count`` latents for ``seed`` and truncate them towards zero by ``truncation_psi``."""
    check_truncation(truncation_psi)
    check_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    return torch.randn(count, z_dim, generator=rng) * truncation_psi


@torch.no_grad()
def generate(
    generator: nn.Module,
    latents: torch.Tensor,
    batch_size: int = 64,
    truncation_psi: float = 1.0,
) -> np.ndarray:
    """Run ``generator`` on ``latents`` in batches; return NHWC uint8 images.

    ``truncation_psi`` pulls each sample towards the average: in w space for a generator
    with a mapping network and a tracked mean w (``truncates_in_w``), else by scaling z.
    """
    check_truncation(truncation_psi)
    in_w_space = getattr(generator, "truncates_in_w", False)
    chunks = []
    for batch in latents.split(batch_size):
        if in_w_space:
            images = generator(batch, truncation_psi=truncation_psi)
        else:
            images = generator(batch * truncation_psi)
        chunks.append(to_uint8(images))
    return np.concatenate(chunks)


def write_samples(images: np.ndarray, out: Path, seed: int) -> tuple[list[Path], Path]:
    """Write each image as ``seedS-NNNN.png`` and all of them as ``grid.png`` in ``out``."""
    out = Path(out)
    check_output_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in enumerate(images):
        path = out / f"seed{seed}-{index:04d}.png"
        save_png(image, path)
        paths.append(path)
    grid_path = out / "grid.png"
    save_png(make_grid(images), grid_path)
    return paths, grid_path


def sample(
    run_dir: Path | None,
    count: int,
    seed: int,
    truncation_psi: float,
    out: Path,
    ema: bool = True,
    selection=None,
) -> tuple[list[Path], Path]:
    """Generate ``count`` faces from ``run_dir`` (None: the bundled model) into ``out``.

    ``selection`` (a ``facegan.evaluation.selection.SelectionOptions``) draws a larger
    pool and keeps the faces that pass its filters, best first.
    """
    if count < 1:
        raise UserError(f"invalid --n {count}; use 1 or more")
    check_truncation(truncation_psi)
    check_seed(seed)
    check_output_folder(out)
    run = load_run(run_dir, ema=ema)
    if selection is not None and selection.active:
        from facegan.evaluation.selection import sample_with_selection

        images, _ = sample_with_selection(run, count, seed, truncation_psi, selection, run_dir)
    else:
        latents = sample_latents(count, run.config.z_dim, seed)
        images = generate(run.generator, latents, truncation_psi=truncation_psi)
    paths, grid = write_samples(images, out, seed)
    log.info("wrote %d samples from step %d of %s to %s", len(images), run.step, run.source, out)
    return paths, grid

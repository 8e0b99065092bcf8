"""The generator that ships inside the package, so ``facegan sample`` works with no data.

A bundled model is two files in this folder: ``NAME.safetensors`` with the EMA
generator's weights in half precision, and ``NAME.json`` with the training configuration
and a model card (data, command, steps, time). :func:`export_generator` writes both from
a run; :func:`load_bundled` reads them back as a float32 generator.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from facegan.config import TrainConfig
from facegan.errors import UserError
from facegan.models import build_models
from facegan.training.checkpoint import CHECKPOINT_NAME, load_checkpoint

DEFAULT_MODEL = "faces64"


def bundled_names() -> list[str]:
    """Return the names of the models shipped in this folder."""
    folder = resources.files("facegan") / "pretrained"
    return sorted(p.name.removesuffix(".safetensors") for p in folder.iterdir()
                  if p.name.endswith(".safetensors"))


def export_generator(run_dir: Path, out_dir: Path, name: str, card: dict[str, Any]) -> Path:
    """Write the EMA generator of ``run_dir`` as ``NAME.safetensors`` (fp16) plus ``NAME.json``.

    ``card`` contains the model card's fields (data, command, time, metrics); the run's step,
    images seen and configuration are added from the checkpoint.
    """
    checkpoint = load_checkpoint(Path(run_dir) / CHECKPOINT_NAME)
    weights = {
        key: (value.half() if value.is_floating_point() else value).contiguous()
        for key, value in checkpoint["generator_ema"].items()
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_path = out_dir / f"{name}.safetensors"
    save_file(weights, str(weights_path))
    metadata = {
        **card,
        "step": checkpoint["step"],
        "images_seen": checkpoint["images_seen"],
        "training_seconds": round(checkpoint["seconds"], 1),
        "config": checkpoint["config"],
    }
    (out_dir / f"{name}.json").write_text(json.dumps(metadata, indent=2) + "\n")
    return weights_path


def load_bundled(name: str = DEFAULT_MODEL) -> tuple[torch.nn.Module, TrainConfig, dict]:
    """Load a shipped generator in float32 eval mode; return (generator, config, model card)."""
    names = bundled_names()
    if name not in names:
        raise UserError(
            f"no bundled model named {name!r}; available: {', '.join(names) or 'none'}. "
            "Pass a run folder to sample from your own training instead"
        )
    folder = resources.files("facegan") / "pretrained"
    card = json.loads((folder / f"{name}.json").read_text())
    config = TrainConfig.from_dict(card["config"], f"bundled model {name}")
    generator, _ = build_models(config)
    with resources.as_file(folder / f"{name}.safetensors") as path:
        weights = load_file(str(path))
    state = {key: value.float() if value.is_floating_point() else value
             for key, value in weights.items()}
    generator.load_state_dict(state)
    generator.eval().requires_grad_(False)
    return generator, config, card

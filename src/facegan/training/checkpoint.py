"""Write checkpoints atomically and read them back.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then
renamed over the old one with ``os.replace``, which is atomic on POSIX and Windows. A
kill at any moment therefore leaves either the old or the new checkpoint, never half
of one.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from facegan.errors import UserError

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` atomically (see the module docstring)."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    if hasattr(os, "O_DIRECTORY"):
        # Flush the rename itself, so that a power cut cannot lose it.
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, with a clear error if unreadable."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} not found; train a run first or check the folder")
    try:
        # weights_only=False: the checkpoint contains RNG states and plain config dicts
        # written by this package, not arbitrary objects from elsewhere.
        return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as error:
        raise UserError(f"checkpoint {path} is unreadable ({error}); it may be from another tool")

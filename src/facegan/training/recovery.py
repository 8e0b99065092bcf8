"""Recovery from non-finite losses: roll back to the last good state, lower the learning
rates, and retry a limited number of times.

The last good state is the latest checkpoint, kept in memory as serialised bytes (the
same state that was written to disk), or the state at the start of training before the
first checkpoint. Rolling back restores the weights, optimizers, data order and RNG
states, then reseeds the latent RNG with the rollback count so that the retry draws
different latents. The rollback count and the learning-rate scale survive the rollback
and are saved in checkpoints.
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from facegan.training.loop import Trainer

log = logging.getLogger(__name__)


class Recovery:
    """Track rollbacks of one run and perform them."""

    def __init__(self, max_retries: int, lr_factor: float):
        self.max_retries = max_retries
        self.lr_factor = lr_factor
        self.rollbacks = 0
        self.lr_scale = 1.0
        self._good_state: bytes | None = None

    def remember(self, state: dict) -> None:
        """Keep a copy of ``state`` as the point to roll back to."""
        buffer = io.BytesIO()
        torch.save(state, buffer)
        self._good_state = buffer.getvalue()

    def roll_back(self, trainer: Trainer, error: FloatingPointError) -> None:
        """Restore the last good state with lower learning rates; raise when out of retries."""
        if self.rollbacks >= self.max_retries or self._good_state is None:
            raise FloatingPointError(
                f"{error}; stopped after {self.rollbacks} rollback(s) (--nan-retries "
                f"{self.max_retries}) with learning rates scaled by {self.lr_scale:g}. "
                "Check the data for NaN pixels, or lower --g-lr/--d-lr"
            ) from error
        self.rollbacks += 1
        self.lr_scale *= self.lr_factor
        rollbacks, lr_scale = self.rollbacks, self.lr_scale
        state = torch.load(io.BytesIO(self._good_state), weights_only=False)
        trainer.load_state_dict(state)
        # load_state_dict restored the counters saved with the good state; keep the new ones.
        self.rollbacks, self.lr_scale = rollbacks, lr_scale
        self.apply_lr_scale(trainer)
        trainer.latent_rng.manual_seed(trainer.config.seed + 2 + 7919 * self.rollbacks)
        trainer.last_real = trainer.last_fake = None
        log.warning(
            "%s; rolled back to step %d with learning rates x%g (rollback %d of %d)",
            error, trainer.step, self.lr_scale, self.rollbacks, self.max_retries,
        )

    def apply_lr_scale(self, trainer: Trainer) -> None:
        """Set both optimizers' learning rates to the configured ones times ``lr_scale``."""
        for optimizer, base in ((trainer.g_optimizer, trainer.config.g_lr),
                                (trainer.d_optimizer, trainer.config.d_lr)):
            for group in optimizer.param_groups:
                group["lr"] = base * self.lr_scale

    def state_dict(self) -> dict:
        return {"rollbacks": self.rollbacks, "lr_scale": self.lr_scale}

    def load_state_dict(self, state: dict) -> None:
        self.rollbacks, self.lr_scale = state["rollbacks"], state["lr_scale"]

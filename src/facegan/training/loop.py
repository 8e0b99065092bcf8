"""The training loop: alternate discriminator and generator steps, log, sample, checkpoint.

Outputs in the run folder::

    config.json     the resolved configuration
    stats.jsonl     one JSON line every ``log_every`` steps
    samples/        grids from fixed latents every ``sample_every`` steps (EMA generator)
    checkpoint.pt   the latest checkpoint, replaced atomically every ``checkpoint_every`` steps
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from facegan.config import RESUMABLE_FIELDS, TrainConfig, save_config
from facegan.data.dataset import BatchSampler, load_images
from facegan.errors import UserError
from facegan.images import make_grid, save_png, to_uint8
from facegan.models import build_models
from facegan.models.progressive import stage_at
from facegan.training import steps
from facegan.training.augment import Augmenter
from facegan.training.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from facegan.training.ema import ema_decay_at, ema_decay_with_rampup, make_ema, update_ema
from facegan.training.recovery import Recovery
from facegan.training.techniques import HistoricalAverage

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 2


@dataclass
class TrainResult:
    """Outcome of a training call: the step it stopped at and the files it wrote."""

    step: int
    images_seen: int
    seconds: float
    checkpoint: Path
    grid: Path | None
    interrupted: bool
    stop_reason: str = "steps"  # "steps", "minutes" or "signal"


def check_resume(run_dir: Path, config: TrainConfig, resume: bool) -> dict | None:
    """Return the checkpoint to resume from, or None for a new run.

    Raises UserError when a new run would overwrite an existing one, when --resume finds
    no checkpoint, or when a setting that shapes the training differs from the saved one.
    """
    path = run_dir / CHECKPOINT_NAME
    if not resume:
        if path.exists():
            raise UserError(
                f"{run_dir} already contains a run; pass --resume to continue it "
                "or choose another --out"
            )
        return None
    if not path.exists():
        raise UserError(f"--resume: no checkpoint in {run_dir}; start the run without --resume")
    checkpoint = load_checkpoint(path)
    saved = TrainConfig.from_dict(checkpoint["config"], str(path))
    differences = [
        line for line in saved.differences(config) if line.split(":")[0] not in RESUMABLE_FIELDS
    ]
    if differences:
        raise UserError(
            f"--resume: these settings differ from the run in {run_dir} and cannot change "
            "mid-run (saved -> requested):\n  " + "\n  ".join(differences)
        )
    return checkpoint


class _StopRequest:
    """Turn SIGINT and SIGTERM into a flag the loop checks between steps."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            # A second Ctrl-C while the checkpoint is written: let the default handler act.
            raise KeyboardInterrupt
        log.warning("stop requested (signal %d): saving a checkpoint", signum)
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    """Hold the networks, optimizers and state of one run, and advance it step by step."""

    def __init__(self, config: TrainConfig, images: torch.Tensor, run_dir: Path):
        self.config = config
        self.run_dir = run_dir
        torch.manual_seed(config.seed)
        self.device = _training_device(config)
        self.generator, self.discriminator = build_models(config)
        self.generator.to(self.device)
        self.discriminator.to(self.device)
        self.memory_format = (
            torch.channels_last if config.channels_last else torch.contiguous_format
        )
        self.generator.to(memory_format=self.memory_format)
        self.discriminator.to(memory_format=self.memory_format)
        self.generator_ema = make_ema(self.generator)
        betas = (config.adam_beta1, config.adam_beta2)
        self.g_optimizer = torch.optim.Adam(self.generator.parameters(), config.g_lr, betas=betas)
        self.d_optimizer = torch.optim.Adam(
            [p for p in self.discriminator.parameters() if p.requires_grad],
            config.d_lr,
            betas=betas,
        )
        self.sampler = BatchSampler(images, config.batch_size, config.x_flip, config.seed + 1)
        self.latent_rng = torch.Generator().manual_seed(config.seed + 2)
        fixed_rng = torch.Generator().manual_seed(config.seed + 3)
        self.fixed_latents = torch.randn(config.grid_size, config.z_dim, generator=fixed_rng)
        self.augmenter = Augmenter(
            config.augment_operations(), config.ada_target, config.ada_kimg,
            config.ada_interval, config.batch_size,
        )
        self.history_g = self.history_d = None
        if config.historical_averaging > 0:
            self.history_g = HistoricalAverage(self.generator)
            self.history_d = HistoricalAverage(self.discriminator)
        self.recovery = Recovery(config.nan_retries, config.nan_lr_factor)
        self.data_info: dict | None = None  # path and image count of the training set
        self.last_real = self.last_fake = None
        self.step = 0
        self.d_updates = 0
        self.images_seen = 0
        self.seconds = 0.0

    def autocast(self):
        if self.config.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def next_real(self) -> torch.Tensor:
        """Return the next batch of real images (NCHW in [-1, 1]) and count it as seen."""
        self.images_seen += self.config.batch_size
        batch = self.sampler.next().to(self.device, non_blocking=True)
        return batch.contiguous(memory_format=self.memory_format)

    def next_latents(self) -> torch.Tensor:
        # Drawn on the CPU from the run's own generator, so the same seed gives the same
        # latents on every device.
        z = torch.randn(self.config.batch_size, self.config.z_dim, generator=self.latent_rng)
        return z.to(self.device)

    def train_step(self) -> dict[str, float]:
        """Run ``d_steps`` discriminator updates and one generator update; return their terms.

        ``images_seen`` counts the real images shown to D.
        """
        config = self.config
        values: dict[str, float] = {}
        if config.progressive:
            values["stage"] = self._grow()
        for _ in range(config.d_steps):
            values.update(steps.discriminator_update(self))
        values.update(steps.generator_update(self))
        decay = ema_decay_at(self.step, config.ema_decay, config.ema_warmup)
        decay = ema_decay_with_rampup(decay, config.ema_rampup, config.batch_size,
                                      self.images_seen)
        update_ema(self.generator_ema, self.generator, decay)
        self.step += 1
        if self.augmenter.enabled:
            values["augment_p"] = self.augmenter.p
        return values

    def check_weights(self) -> None:
        """Raise FloatingPointError if any weight of G or D is NaN or inf."""
        for name, network in (("generator", self.generator),
                              ("discriminator", self.discriminator)):
            if not all(torch.isfinite(p).all() for p in network.parameters()):
                raise FloatingPointError(f"non-finite {name} weights at step {self.step}")

    def _grow(self) -> float:
        """Set both networks to the progressive stage for the images seen; return its size."""
        size, alpha = stage_at(self.images_seen, self.config.resolution,
                               self.config.progressive_kimg * 1000)
        self.generator.set_stage(size, alpha)
        self.discriminator.set_stage(size, alpha)
        # Report the stage as a fractional log2 size: 4.5 is 16x16 half faded in.
        return math.log2(size) - 1 + alpha

    @torch.no_grad()
    def sample_grid(self) -> Path:
        """Render the fixed latents with the EMA generator into ``samples/step-NNNNNNN.png``."""
        images = []
        for chunk in self.fixed_latents.split(64):
            images.append(to_uint8(self.generator_ema(chunk.to(self.device)).cpu()))
        grid = make_grid(np.concatenate(images))
        folder = self.run_dir / "samples"
        folder.mkdir(exist_ok=True)
        path = folder / f"step-{self.step:07d}.png"
        save_png(grid, path)
        save_png(grid, folder / "latest.png")
        return path

    def state_dict(self) -> dict:
        history = None
        if self.history_g is not None:
            history = {"g": self.history_g.state_dict(), "d": self.history_d.state_dict()}
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "step": self.step,
            "images_seen": self.images_seen,
            "seconds": self.seconds,
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "generator_ema": self.generator_ema.state_dict(),
            "g_optimizer": self.g_optimizer.state_dict(),
            "d_optimizer": self.d_optimizer.state_dict(),
            "sampler": self.sampler.state_dict(),
            "latent_rng": self.latent_rng.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
            "fixed_latents": self.fixed_latents,
            "d_updates": self.d_updates,
            "augment": self.augmenter.state_dict(),
            "historical_average": history,
            "recovery": self.recovery.state_dict(),
            "data": self.data_info,
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.generator_ema.load_state_dict(state["generator_ema"])
        self.g_optimizer.load_state_dict(state["g_optimizer"])
        self.d_optimizer.load_state_dict(state["d_optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        self.latent_rng.set_state(state["latent_rng"])
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.fixed_latents = state["fixed_latents"]
        self.step = state["step"]
        self.images_seen = state["images_seen"]
        self.seconds = state["seconds"]
        # Checkpoints of format 1 predate the fields below; their defaults match.
        self.d_updates = state.get("d_updates", self.step)
        if "augment" in state:
            self.augmenter.load_state_dict(state["augment"])
        if state.get("historical_average") and self.history_g is not None:
            self.history_g.load_state_dict(state["historical_average"]["g"])
            self.history_d.load_state_dict(state["historical_average"]["d"])
        if "recovery" in state:
            self.recovery.load_state_dict(state["recovery"])
        self.recovery.apply_lr_scale(self)

    def save(self) -> Path:
        path = self.run_dir / CHECKPOINT_NAME
        state = self.state_dict()
        save_checkpoint(state, path)
        self.recovery.remember(state)
        log.info("checkpoint at step %d: %s", self.step, path)
        return path


def _truncate_stats(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint being resumed, so steps do not repeat."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError):
            continue
    path.write_text("".join(line + "\n" for line in kept))


class _StatsWindow:
    """Average step losses between log lines and measure images per second."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.count = 0
        self.started = time.perf_counter()

    def add(self, values: dict[str, float]) -> None:
        # Lazy terms (R1 every k steps) appear in some steps only: average over those.
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1
        self.count += 1

    def flush(self, trainer: Trainer) -> dict:
        elapsed = time.perf_counter() - self.started
        record = {
            "step": trainer.step,
            "kimg": round(trainer.images_seen / 1000, 3),
            "seconds": round(trainer.seconds, 2),
            **{key: round(total / self.counts[key], 5) for key, total in self.sums.items()},
            "images_per_second": round(self.count * _images_per_step(trainer.config) / elapsed, 2),
        }
        self.__init__()
        return record


def _training_device(config: TrainConfig) -> torch.device:
    """Return the device for ``config.device``, or raise UserError when CUDA is missing."""
    if config.device == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "invalid --device cuda: torch finds no CUDA device (torch "
            f"{torch.__version__}); use --device cpu or install a CUDA build of torch"
        )
    return torch.device(config.device)


def _images_per_step(config: TrainConfig) -> int:
    """Return the real images D receives per step: a batch per accumulated pass per D update."""
    return config.batch_size * config.accumulate * config.d_steps


def train(data: Path, run_dir: Path, config: TrainConfig, resume: bool = False) -> TrainResult:
    """Train ``config`` on the images in ``data``, writing into ``run_dir``.

    Stops at ``config.steps``, after ``config.minutes`` of training time, or on SIGINT or
    SIGTERM; every stop writes a checkpoint first. With ``resume`` the run continues from
    ``run_dir/checkpoint.pt`` exactly as if it had not stopped.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} is a file; pass a folder for the run")
    checkpoint = check_resume(run_dir, config, resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    with _run_lock(run_dir):
        if config.threads:
            torch.set_num_threads(config.threads)
        images = load_images(data, config.resolution)
        if len(images) < config.batch_size:
            log.warning(
                "the dataset has %d images, fewer than --batch-size %d, so every batch repeats "
                "images; a GAN trained on so few faces copies them",
                len(images), config.batch_size,
            )
        data_info = {"path": str(Path(data).resolve()), "images": len(images)}
        if checkpoint is not None:
            _check_same_data(checkpoint.get("data"), data_info, run_dir)
        trainer = Trainer(config, images, run_dir)
        trainer.data_info = data_info
        if checkpoint is not None:
            trainer.load_state_dict(checkpoint)
            log.info("resumed %s at step %d", run_dir, trainer.step)
        if trainer.step >= config.steps:
            log.warning(
                "the run is already at step %d and --steps is %d; raise --steps to train further",
                trainer.step, config.steps,
            )
        trainer.recovery.remember(trainer.state_dict())
        save_config(config, run_dir / "config.json")
        stats_path = run_dir / "stats.jsonl"
        _truncate_stats(stats_path, trainer.step)
        return _run_loop(trainer, stats_path)


@contextlib.contextmanager
def _run_lock(run_dir: Path):
    """Hold an exclusive lock on ``run_dir`` so that two trainings never share one folder."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks through fcntl, so the folder is unguarded.
        yield
        return
    with open(run_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"another 'facegan train' is using {run_dir}; wait for it to finish or "
                "choose another --out"
            ) from None
        yield


def _check_same_data(saved: dict | None, current: dict, run_dir: Path) -> None:
    """Reject resuming on a dataset of another size; warn when only its path changed."""
    if saved is None:
        return
    if saved["images"] != current["images"]:
        raise UserError(
            f"--resume: the run in {run_dir} trained on {saved['images']} images from "
            f"{saved['path']}, but {current['path']} has {current['images']}; pass the "
            "same dataset, or start a new run with another --out"
        )
    if saved["path"] != current["path"]:
        log.warning(
            "resuming on %s; the run trained on %s (same image count)",
            current["path"], saved["path"],
        )


class _TrainingEvaluator:
    """Score the EMA generator with dlib-descriptor FD and KID every ``eval_every`` steps.

    The real faces' descriptors are computed at the first check and reused. Each check
    appends one JSON line to ``RUN/metrics.jsonl``; its time is not counted as training.
    """

    def __init__(self, path: Path):
        self.path = path
        self.real = None

    def run(self, trainer: Trainer) -> None:
        from facegan.evaluation.evaluate import quick_metrics, real_features_for_training

        config = trainer.config
        started = time.perf_counter()
        if self.real is None:
            self.real = real_features_for_training(
                Path(trainer.data_info["path"]), config.resolution, count=config.eval_count
            )
        metrics = quick_metrics(trainer.generator_ema, self.real, count=config.eval_count)
        record = {"step": trainer.step, "kimg": round(trainer.images_seen / 1000, 3), **metrics}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        log.info(
            "step %d: %s (%.0f s)",
            trainer.step,
            ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float)),
            time.perf_counter() - started,
        )


def _time_up(trainer: Trainer, session_start: float) -> bool:
    """Return whether this call has trained for ``--minutes`` (each call gets the full budget)."""
    minutes = trainer.config.minutes
    return minutes > 0 and trainer.seconds - session_start >= minutes * 60


def _estimated_total_steps(trainer: Trainer, record: dict, session_start: float) -> int:
    """Estimate the step at which the --minutes limit stops the run, for the bar's ETA."""
    seconds_left = trainer.config.minutes * 60 - (trainer.seconds - session_start)
    steps_per_second = record["images_per_second"] / _images_per_step(trainer.config)
    estimate = trainer.step + max(0, int(seconds_left * steps_per_second))
    return min(trainer.config.steps, estimate)


def _run_loop(trainer: Trainer, stats_path: Path) -> TrainResult:
    config = trainer.config
    grid_path = None
    checkpoint_path = trainer.run_dir / CHECKPOINT_NAME
    window = _StatsWindow()
    evaluator = _TrainingEvaluator(trainer.run_dir / "metrics.jsonl")
    session_start = trainer.seconds
    progress = tqdm(
        total=config.steps, initial=trainer.step, unit="step", desc="train", dynamic_ncols=True
    )
    stats_file = open(stats_path, "a")
    with _StopRequest() as stop:
        while (
            trainer.step < config.steps
            and not _time_up(trainer, session_start)
            and not stop.requested
        ):
            started = time.perf_counter()
            try:
                values = trainer.train_step()
                if trainer.step % config.checkpoint_every == 0:
                    # A checkpoint becomes the rollback point, so it must hold finite weights.
                    trainer.check_weights()
            except FloatingPointError as error:
                trainer.recovery.roll_back(trainer, error)
                trainer.seconds += time.perf_counter() - started
                stats_file.close()
                _truncate_stats(stats_path, trainer.step)
                stats_file = open(stats_path, "a")
                progress.n = trainer.step
                window = _StatsWindow()
                continue
            trainer.seconds += time.perf_counter() - started
            window.add(values)
            progress.update(1)
            if trainer.step % config.log_every == 0:
                record = window.flush(trainer)
                stats_file.write(json.dumps(record) + "\n")
                stats_file.flush()
                if config.minutes > 0:
                    progress.total = _estimated_total_steps(trainer, record, session_start)
                progress.set_postfix(
                    img_s=record["images_per_second"],
                    loss_g=f"{record['loss_g']:.3f}",
                    loss_d=f"{record['loss_d']:.3f}",
                )
            if trainer.step % config.sample_every == 0:
                grid_path = trainer.sample_grid()
            if config.eval_every and trainer.step % config.eval_every == 0:
                evaluator.run(trainer)
            if trainer.step % config.checkpoint_every == 0:
                checkpoint_path = trainer.save()
        progress.close()
        stats_file.close()
        if grid_path is None or trainer.step % config.sample_every != 0:
            grid_path = trainer.sample_grid()
        if trainer.step % config.checkpoint_every != 0 or not checkpoint_path.exists():
            checkpoint_path = trainer.save()
    if stop.requested:
        stop_reason = "signal"
    elif trainer.step >= config.steps:
        stop_reason = "steps"
    else:
        stop_reason = "minutes"
    return TrainResult(
        step=trainer.step,
        images_seen=trainer.images_seen,
        seconds=trainer.seconds,
        checkpoint=checkpoint_path,
        grid=grid_path,
        interrupted=stop.requested,
        stop_reason=stop_reason,
    )

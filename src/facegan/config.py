"""Training configuration: one dataclass, presets as small TOML files, every field a CLI flag.

A resolved configuration is the preset's values with command-line overrides on top. It
is validated in one place (:meth:`TrainConfig.validate`), saved as ``RUN/config.json``
and stored in every checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

from facegan.errors import UserError

# Allowed values of the choice fields. Validation and --help both read this table.
CHOICES: dict[str, tuple[str, ...]] = {
    "architecture": ("dcgan", "resnet", "fastgan", "stylegan", "projected"),
    "loss": ("nonsaturating", "hinge", "least-squares", "wgan-gp", "rpgan"),
    "precision": ("bf16", "fp32"),
    "device": ("cpu", "cuda"),
}

# DiffAugment operations accepted in --diffaugment (Zhao et al. 2020).
AUGMENT_OPERATIONS = ("color", "translation", "cutout")

# Architectures whose networks can grow progressively.
PROGRESSIVE_ARCHITECTURES = ("dcgan", "resnet")

# Losses that compare D's output with a target, so one-sided label smoothing applies.
SMOOTHABLE_LOSSES = ("nonsaturating", "least-squares")

# Fields that may change when a run is resumed: they control how long and how often,
# not what is trained.
RESUMABLE_FIELDS = frozenset(
    {
        "steps", "minutes", "log_every", "sample_every", "checkpoint_every", "threads",
        "eval_every", "eval_count",
        "nan_retries",
    }
)

# torch.Generator.manual_seed takes a signed 64-bit integer, and seeds derive from seed + 3.
MAX_SEED = 2**63 - 4

POWERS_OF_TWO = (32, 64, 128, 256, 512, 1024)


@dataclass
class TrainConfig:
    """Every setting of a training run; the field comments are the --help text."""

    resolution: int = 64  # output size in pixels (a power of two, 32 to 1024)
    architecture: str = "dcgan"  # generator and discriminator family
    loss: str = "nonsaturating"  # adversarial loss
    z_dim: int = 128  # length of the latent vector z
    g_channels: int = 64  # generator width: channels of the last upsampling block
    d_channels: int = 64  # discriminator width: channels of the first block
    max_channels: int = 512  # cap on the channels of any layer
    batch_size: int = 64  # images per step for each network
    g_lr: float = 2e-4  # generator Adam learning rate
    d_lr: float = 2e-4  # discriminator Adam learning rate
    adam_beta1: float = 0.5  # Adam beta1 for both networks
    adam_beta2: float = 0.999  # Adam beta2 for both networks
    ema_decay: float = 0.999  # EMA decay per step for the generator copy used to sample
    ema_warmup: bool = True  # ramp the EMA decay up as (1 + step) / (10 + step) early on
    precision: str = "bf16"  # autocast dtype for forward passes
    device: str = "cpu"  # where to train: cpu, or cuda (the first GPU)
    channels_last: bool = True  # NHWC memory layout, faster convolutions on CPU
    x_flip: bool = True  # mirror half the real images left-right
    seed: int = 0  # seed of weights, latents and batch order
    steps: int = 10000  # stop after this many steps
    minutes: float = 0.0  # also stop after this much training time in total (0: no limit)
    log_every: int = 50  # steps between lines in stats.jsonl
    sample_every: int = 500  # steps between sample grids
    checkpoint_every: int = 1000  # steps between checkpoints
    grid_size: int = 64  # images in each sample grid (fixed latents)
    threads: int = 0  # torch CPU threads (0: torch's default)
    eval_every: int = 0  # steps between dlib-descriptor FD/KID checks in metrics.jsonl (0: off)
    eval_count: int = 500  # samples and real faces per check during training
    # Architecture details.
    spectral_norm: bool = False  # spectral norm on D's layers (resnet, fastgan, projected: always)
    minibatch_std: bool = False  # append the minibatch standard deviation before D's head
    minibatch_discrimination: int = 0  # minibatch discrimination kernels in D's head (0: off)
    mapping_layers: int = 4  # stylegan: layers of the z -> w mapping network
    noise_inputs: bool = True  # stylegan: per-pixel noise inputs in the synthesis network
    style_mixing: float = 0.9  # stylegan: probability of mixing two w's in a training batch
    w_avg_beta: float = 0.995  # stylegan: decay of the tracked mean w used for truncation
    # Losses and regularisers.
    r1_gamma: float = 0.0  # R1 penalty weight on real images (0: off)
    r2_gamma: float = 0.0  # R2 penalty weight on generated images (0: off)
    r1_every: int = 1  # lazy regularisation: apply R1/R2 every k D steps, scaled by k
    gp_weight: float = 10.0  # wgan-gp: gradient penalty weight lambda
    reconstruction_weight: float = 1.0  # fastgan: weight of D's reconstruction loss on reals
    # Improved-GAN techniques (Salimans et al. 2016) and instance noise.
    feature_matching: float = 0.0  # weight of the feature-matching term in G's loss (0: off)
    label_smoothing: float = 0.0  # one-sided: real target 1 - this (nonsaturating, least-squares)
    historical_averaging: float = 0.0  # weight of the historical-averaging penalty (0: off)
    instance_noise: float = 0.0  # std of Gaussian noise on D's inputs at step 0, fading to 0
    instance_noise_steps: int = 5000  # steps over which the instance noise fades linearly
    # Augmentation.
    diffaugment: str = ""  # comma-separated DiffAugment ops: color, translation, cutout
    ada_target: float = 0.0  # adaptive augmentation target for E[sign(D(real))] (0: p fixed 1)
    ada_kimg: float = 100.0  # thousands of images for the ADA probability to move by 1
    ada_interval: int = 4  # steps between ADA probability updates
    # Training schedule.
    d_steps: int = 1  # discriminator updates per generator update
    d_skip_accuracy: float = 0.0  # skip D's update when its batch accuracy exceeds this (0: off)
    accumulate: int = 1  # batches whose gradients are summed per update
    progressive: bool = False  # progressive growing from 8x8 with fade-in (dcgan, resnet)
    progressive_kimg: float = 50.0  # thousands of real images per fade-in or stable phase
    ema_rampup: float = 0.0  # cap the EMA half-life at this fraction of images seen (0: off)
    # Recovery from non-finite losses.
    nan_retries: int = 3  # roll back and retry this many times on NaN/inf (0: stop at once)
    nan_lr_factor: float = 0.5  # multiply both learning rates by this after each rollback

    def validate(self) -> None:
        """Raise UserError naming the first invalid option and its allowed values."""
        for field in fields(self):
            value = getattr(self, field.name)
            if field.type == "float" and not math.isfinite(value):
                raise UserError(f"invalid --{_flag(field.name)} {value}; use a finite number")
        if not 0 <= self.seed <= MAX_SEED:
            raise UserError(f"invalid --seed {self.seed}; use an integer from 0 to {MAX_SEED}")
        for name, allowed in CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise UserError(
                    f"invalid --{_flag(name)} {value!r}; allowed values: {', '.join(allowed)}"
                )
        if self.resolution not in POWERS_OF_TWO:
            raise UserError(
                f"invalid --resolution {self.resolution}; "
                f"allowed values: {', '.join(map(str, POWERS_OF_TWO))}"
            )
        positive = (
            "z_dim g_channels d_channels max_channels batch_size steps "
            "log_every sample_every checkpoint_every grid_size eval_count"
        )
        if self.eval_every < 0:
            raise UserError(f"invalid --eval-every {self.eval_every}; use 0 (off) or more")
        if 0 < self.eval_count < 6:
            raise UserError(f"invalid --eval-count {self.eval_count}; use 6 or more")
        for name in positive.split():
            if getattr(self, name) < 1:
                raise UserError(f"invalid --{_flag(name)} {getattr(self, name)}; use 1 or more")
        for name in ("g_lr", "d_lr"):
            if not 0 < getattr(self, name) < 1:
                raise UserError(f"invalid --{_flag(name)} {getattr(self, name)}; use 0 < lr < 1")
        for name in ("adam_beta1", "adam_beta2", "ema_decay"):
            if not 0 <= getattr(self, name) < 1:
                raise UserError(f"invalid --{_flag(name)} {getattr(self, name)}; use [0, 1)")
        self._validate_techniques()
        if self.minutes < 0:
            raise UserError(f"invalid --minutes {self.minutes}; use 0 (no limit) or more")
        if self.threads < 0:
            raise UserError(f"invalid --threads {self.threads}; use 0 (default) or more")

    def _validate_techniques(self) -> None:
        """Check the fields of the architecture, regularisation and recovery options."""
        for name in ("mapping_layers", "r1_every", "instance_noise_steps", "ada_interval",
                     "d_steps", "accumulate"):
            if getattr(self, name) < 1:
                raise UserError(f"invalid --{_flag(name)} {getattr(self, name)}; use 1 or more")
        non_negative = (
            "minibatch_discrimination r1_gamma r2_gamma gp_weight reconstruction_weight "
            "feature_matching historical_averaging instance_noise ema_rampup nan_retries"
        )
        for name in non_negative.split():
            if getattr(self, name) < 0:
                raise UserError(f"invalid --{_flag(name)} {getattr(self, name)}; use 0 or more")
        for name in ("style_mixing", "d_skip_accuracy", "ada_target"):
            if not 0 <= getattr(self, name) <= 1:
                raise UserError(f"invalid --{_flag(name)} {getattr(self, name)}; use [0, 1]")
        for name in ("w_avg_beta", "label_smoothing"):
            if not 0 <= getattr(self, name) < 1:
                raise UserError(f"invalid --{_flag(name)} {getattr(self, name)}; use [0, 1)")
        if not 0 < self.nan_lr_factor <= 1:
            raise UserError(f"invalid --nan-lr-factor {self.nan_lr_factor}; use 0 < factor <= 1")
        if self.progressive and self.architecture not in PROGRESSIVE_ARCHITECTURES:
            raise UserError(
                f"invalid --progressive with --architecture {self.architecture}; progressive "
                f"growing needs one of: {', '.join(PROGRESSIVE_ARCHITECTURES)}"
            )
        if self.progressive_kimg <= 0:
            raise UserError(f"invalid --progressive-kimg {self.progressive_kimg}; use above 0")
        if self.minibatch_discrimination and self.architecture == "projected":
            raise UserError("invalid --minibatch-discrimination with --architecture projected; "
                            "use 0 (the projected discriminator has no shared head)")
        if self.ada_kimg <= 0:
            raise UserError(f"invalid --ada-kimg {self.ada_kimg}; use a value above 0")
        for operation in self.augment_operations():
            if operation not in AUGMENT_OPERATIONS:
                raise UserError(
                    f"invalid --diffaugment operation {operation!r}; allowed values: "
                    f"{', '.join(AUGMENT_OPERATIONS)} (comma-separated)"
                )
        if self.ada_target > 0 and not self.augment_operations():
            raise UserError("--ada-target needs --diffaugment operations to apply; e.g. "
                            "--diffaugment color,translation,cutout")
        if self.label_smoothing > 0 and self.loss not in SMOOTHABLE_LOSSES:
            raise UserError(
                f"invalid --label-smoothing {self.label_smoothing} with --loss {self.loss}; "
                f"label smoothing needs one of: {', '.join(SMOOTHABLE_LOSSES)}"
            )
        if self.resolution < 32 and self.architecture != "dcgan":
            raise UserError(f"invalid --resolution {self.resolution} for --architecture "
                            f"{self.architecture}; use 32 or more")

    def augment_operations(self) -> list[str]:
        """Return the DiffAugment operations named in ``diffaugment``, in order."""
        return [op.strip() for op in self.diffaugment.split(",") if op.strip()]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str) -> TrainConfig:
        """Build a config from ``values``, rejecting unknown keys and wrong types."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise UserError(
                f"unknown option(s) {', '.join(unknown)} in {source}; "
                f"allowed: {', '.join(known)}"
            )
        config = cls()
        for name, value in values.items():
            setattr(config, name, _coerce(name, value, known[name].type, source))
        return config

    def differences(self, other: TrainConfig) -> list[str]:
        """List fields that differ from ``other`` as 'name: ours -> theirs'."""
        ours, theirs = self.to_dict(), other.to_dict()
        return [f"{k}: {ours[k]!r} -> {theirs[k]!r}" for k in ours if ours[k] != theirs[k]]


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _coerce(name: str, value: Any, type_name: str, source: str) -> Any:
    expected = {"int": int, "float": float, "str": str, "bool": bool}[type_name]
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise UserError(
            f"invalid value {value!r} for {name} in {source}; expected {type_name}"
        )
    return value


def preset_names() -> list[str]:
    """Return the names of the presets that ship with the package."""
    folder = resources.files("facegan") / "presets"
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def load_preset(name_or_path: str) -> tuple[dict[str, Any], str]:
    """Read a preset by name (shipped) or by path to a TOML file; return (values, source)."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        text, source = path.read_text(encoding="utf-8"), str(path)
    elif path.suffix == ".toml":
        raise UserError(f"preset file {path} not found; check the --preset path")
    elif name_or_path in preset_names():
        resource = resources.files("facegan") / "presets" / f"{name_or_path}.toml"
        text, source = resource.read_text(encoding="utf-8"), f"preset {name_or_path}"
    else:
        raise UserError(
            f"invalid --preset {name_or_path!r}; allowed values: {', '.join(preset_names())} "
            "or the path of a .toml file"
        )
    try:
        return tomllib.loads(text), source
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"cannot parse {source}: {error}") from error


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per config field; flags left out are absent from the parsed namespace."""
    group = parser.add_argument_group("training options (override the preset)")
    help_texts = _field_help()
    for field in fields(TrainConfig):
        flag = f"--{_flag(field.name)}"
        help_text = f"{help_texts.get(field.name, '')} (default {field.default!r})"
        if field.type == "bool":
            group.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                help=help_text,
            )
            continue
        kind = {"int": int, "float": float, "str": str}[field.type]
        group.add_argument(
            flag, type=kind, default=argparse.SUPPRESS, metavar=field.type.upper(),
            help=help_text + (f"; one of {', '.join(CHOICES[field.name])}"
                              if field.name in CHOICES else ""),
        )


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Return the config fields given on the command line."""
    names = {f.name for f in fields(TrainConfig)}
    return {name: value for name, value in vars(args).items() if name in names}


def resolve_config(preset: str, overrides: dict[str, Any]) -> TrainConfig:
    """Apply ``overrides`` on top of ``preset`` and validate the result."""
    values, source = load_preset(preset)
    values = {**values, **overrides}
    config = TrainConfig.from_dict(values, source)
    config.validate()
    return config


def _field_help() -> dict[str, str]:
    """Read each field's trailing comment from this module's source as its help text."""
    import inspect

    texts = {}
    for line in inspect.getsource(TrainConfig).splitlines():
        stripped = line.strip()
        if ":" in stripped and "#" in stripped and "=" in stripped:
            name = stripped.split(":", 1)[0]
            texts[name] = stripped.split("#", 1)[1].strip()
    return texts


def save_config(config: TrainConfig, path: Path) -> None:
    path.write_text(json.dumps(config.to_dict(), indent=2) + "\n")


def read_config(path: Path) -> TrainConfig:
    return TrainConfig.from_dict(json.loads(path.read_text()), str(path))

"""Training and sampling speed of the cpu-64 preset against a plain fp32 DCGAN step.

Run from the repository root: ``python bench/bench_train.py``. It writes its section of
docs/benchmarks.md. The baseline is the textbook PyTorch DCGAN step at the same widths
and batch size, in fp32 with the NCHW memory layout and no autocast. The preset's step
differs only in bf16 autocast and the channels-last layout. Rounds of the two alternate, and the reported rate
is the median over rounds, so that load from other processes hits both sides alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DATA, machine, write_section  # noqa: E402

from facegan.config import resolve_config  # noqa: E402
from facegan.sampling import generate, sample_latents  # noqa: E402
from facegan.training.loop import Trainer  # noqa: E402


def baseline_networks(z_dim: int, width: int) -> tuple[nn.Module, nn.Module]:
    """Build the 64x64 DCGAN pair in the PyTorch examples' layout, ``width`` channels wide."""
    generator = nn.Sequential(
        nn.ConvTranspose2d(z_dim, width * 8, 4, 1, 0, bias=False),
        nn.BatchNorm2d(width * 8), nn.ReLU(True),
        nn.ConvTranspose2d(width * 8, width * 4, 4, 2, 1, bias=False),
        nn.BatchNorm2d(width * 4), nn.ReLU(True),
        nn.ConvTranspose2d(width * 4, width * 2, 4, 2, 1, bias=False),
        nn.BatchNorm2d(width * 2), nn.ReLU(True),
        nn.ConvTranspose2d(width * 2, width, 4, 2, 1, bias=False),
        nn.BatchNorm2d(width), nn.ReLU(True),
        nn.ConvTranspose2d(width, 3, 4, 2, 1, bias=False), nn.Tanh(),
    )
    discriminator = nn.Sequential(
        nn.Conv2d(3, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True),
        nn.Conv2d(width, width * 2, 4, 2, 1, bias=False),
        nn.BatchNorm2d(width * 2), nn.LeakyReLU(0.2, True),
        nn.Conv2d(width * 2, width * 4, 4, 2, 1, bias=False),
        nn.BatchNorm2d(width * 4), nn.LeakyReLU(0.2, True),
        nn.Conv2d(width * 4, width * 8, 4, 2, 1, bias=False),
        nn.BatchNorm2d(width * 8), nn.LeakyReLU(0.2, True),
        nn.Conv2d(width * 8, 1, 4, 1, 0, bias=False),
    )
    return generator, discriminator


class BaselineStep:
    """One fp32 discriminator and generator update with the non-saturating loss."""

    def __init__(self, images: torch.Tensor, z_dim: int, width: int, batch_size: int):
        self.images = images
        self.z_dim = z_dim
        self.batch_size = batch_size
        self.generator, self.discriminator = baseline_networks(z_dim, width)
        self.g_optimizer = torch.optim.Adam(self.generator.parameters(), 2e-4, betas=(0.5, 0.999))
        self.d_optimizer = torch.optim.Adam(
            self.discriminator.parameters(), 2e-4, betas=(0.5, 0.999)
        )

    def train_step(self) -> None:
        index = torch.randint(len(self.images), (self.batch_size,))
        real = self.images[index].float() / 127.5 - 1
        z = torch.randn(self.batch_size, self.z_dim, 1, 1)
        fake = self.generator(z)
        d_loss = (
            F.softplus(-self.discriminator(real)).mean()
            + F.softplus(self.discriminator(fake.detach())).mean()
        )
        self.d_optimizer.zero_grad()
        d_loss.backward()
        self.d_optimizer.step()
        g_loss = F.softplus(-self.discriminator(fake)).mean()
        self.g_optimizer.zero_grad()
        g_loss.backward()
        self.g_optimizer.step()


def load_faces(resolution: int, count: int) -> tuple[torch.Tensor, str]:
    """Real faces for the benchmark: UTKFace when present, else crops of the astronaut photo."""
    from facegan.data.imageio import center_crop_resize, load_rgb

    folder = SHARED_DATA / "utkface-200"
    if folder.is_dir():
        paths = sorted(folder.glob("*.jpg"))[:count]
        images = [
            torch.from_numpy(np.array(center_crop_resize(load_rgb(p), resolution)))
            for p in paths
        ]
        source = f"{len(paths)} UTKFace faces"
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.conftest import face_variants

        images = [torch.from_numpy(np.asarray(face.resize((resolution, resolution))))
                  for face in face_variants(count)]
        source = f"{count} crops of skimage's astronaut photo"
    return torch.stack(images).permute(0, 3, 1, 2).contiguous(), source


def time_steps(step, count: int) -> float:
    """Run ``count`` steps of ``step()`` and return the seconds taken."""
    started = time.perf_counter()
    for _ in range(count):
        step()
    return time.perf_counter() - started


def measure_training(config, images, rounds: int, steps: int) -> tuple[float, float]:
    trainer = Trainer(config, images, Path("/nonexistent"))
    baseline = BaselineStep(images, config.z_dim, config.g_channels, config.batch_size)
    for step in (trainer.train_step, baseline.train_step):
        time_steps(step, 3)  # warm-up: oneDNN picks its kernels on the first calls
    ours, theirs = [], []
    for _ in range(rounds):
        theirs.append(steps * config.batch_size / time_steps(baseline.train_step, steps))
        ours.append(steps * config.batch_size / time_steps(trainer.train_step, steps))
    return statistics.median(ours), statistics.median(theirs)


def measure_sampling(config, rounds: int, count: int = 256) -> float:
    trainer = Trainer(config, torch.zeros(1, 3, config.resolution, config.resolution,
                                          dtype=torch.uint8), Path("/nonexistent"))
    latents = sample_latents(count, config.z_dim, seed=0)
    generate(trainer.generator_ema, latents[:64])
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        generate(trainer.generator_ema, latents)
        rates.append(count / (time.perf_counter() - started))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--steps", type=int, default=20, help="steps per round (default 20)")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (default 0: torch's choice)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    config = resolve_config("cpu-64", {})
    images, source = load_faces(config.resolution, 512)
    ours, baseline = measure_training(config, images, args.rounds, args.steps)
    sampling = measure_sampling(config, args.rounds)
    threads = torch.get_num_threads()
    body = f"""## Training and sampling, cpu-64 preset

Command: `python bench/bench_train.py{f' --threads {args.threads}' if args.threads else ''}`.
Machine: {machine()}. Data: {source}. Settings: batch {config.batch_size}, 64x64,
generator width {config.g_channels}, {threads} torch thread(s), median of {args.rounds}
alternating rounds of {args.steps} steps.

| step | images/s | vs baseline |
|---|---|---|
| plain fp32 DCGAN (baseline, same widths) | {baseline:.0f} | 1.00x |
| facegan cpu-64 (bf16 autocast, channels-last) | {ours:.0f} | {ours / baseline:.2f}x |

Sampling with the EMA generator (fp32, batches of 64): {sampling:.0f} images/s.
"""
    path = write_section("train", body)
    print(body)
    print(f"written to {path}")


if __name__ == "__main__":
    main()

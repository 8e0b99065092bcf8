"""Training speed and FLOPs of every architecture at 64x64 and 128x128 on the CPU.

Run from the repository root: ``python bench/bench_models.py``. It writes the
``models`` section of docs/benchmarks.md. For each architecture and resolution it
times full training steps (D update, G update, EMA) on real faces. It counts the FLOPs
of one step with ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and
matrix products, forward and backward). The achieved FLOP rate is compared with the
machine's peak, measured in the same run as the best rate of a large matrix product.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import load_faces  # noqa: E402
from common import machine, write_section  # noqa: E402

from facegan.config import CHOICES, resolve_config  # noqa: E402
from facegan.training.loop import Trainer  # noqa: E402

# Settings per architecture, as in the comparison on docs/architectures.md: the DCGAN
# baseline at the cpu-64 preset's widths, the others narrower because each of their
# layers costs more.
NARROW = {"g_channels": 16, "d_channels": 16, "max_channels": 256}
SETTINGS = {
    "dcgan": {},
    "resnet": {"loss": "hinge", **NARROW},
    "fastgan": {"loss": "hinge", **NARROW},
    "stylegan": {"r1_gamma": 1.0, "r1_every": 4, **NARROW},
    "projected": {"loss": "hinge", "diffaugment": "color,translation,cutout", **NARROW},
}


def peak_flops(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """Return the best FLOP/s of a size x size matrix product in ``dtype``."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    a @ b  # warm-up
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = max(best, 2 * size**3 / (time.perf_counter() - started))
    return best


def conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding,
                        _dilation, transposed, _output_padding, _groups, output_mask,
                        out_shape=None, **kwargs) -> int:
    """Count a convolution's backward as one forward-sized pass per gradient it computes.

    torch 2.13's own formula ignores ``groups`` and so multiplies the count of a grouped
    convolution by the group count. StyleGAN's modulated convolutions (one group per
    image) and EfficientNet's depthwise convolutions are grouped. The forward count is
    right for groups, because ``w_shape[1]`` is the per-group input width.
    """
    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def step_flops(trainer: Trainer) -> float:
    """Count the FLOPs of one training step without lazy R1/R2.

    FlopCounterMode's module hooks fail inside the double backward of a gradient
    penalty (torch 2.13), so the count is taken on a step where the lazy penalty is not
    due. With ``r1_every`` k the penalty adds roughly one D forward and two backward
    passes every k steps, which this count leaves out.
    """
    config = trainer.config
    if config.r1_gamma > 0 or config.r2_gamma > 0:
        assert config.r1_every > 1, "FLOPs cannot be counted when R1 runs every step"
        trainer.d_updates = 1
    mapping = {torch.ops.aten.convolution_backward: conv_backward_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        trainer.train_step()
    return float(counter.get_total_flops())


def images_per_second(trainer: Trainer, steps: int, rounds: int) -> float:
    """Return the median rate over ``rounds`` of ``steps`` steps, in real images per second."""
    trainer.train_step()  # warm-up: oneDNN picks its kernels on the first calls
    rates = []
    for _ in range(rounds):
        seen = trainer.images_seen
        started = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        rates.append((trainer.images_seen - seen) / (time.perf_counter() - started))
    return statistics.median(rates)


def measure(architecture: str, resolution: int, batch_size: int, images, steps: int,
            rounds: int) -> dict:
    overrides = {**SETTINGS[architecture], "architecture": architecture,
                 "resolution": resolution, "batch_size": batch_size}
    config = resolve_config("cpu-64", overrides)
    trainer = Trainer(config, images, Path("/nonexistent"))
    flops = step_flops(trainer) / (batch_size * config.d_steps)
    rate = images_per_second(trainer, steps, rounds)
    return {"architecture": architecture, "resolution": resolution, "rate": rate,
            "flops": flops, "achieved": flops * rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32, help="images per step (32)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round (3)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds; the median counts (2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    peaks = {"bf16": peak_flops(torch.bfloat16), "fp32": peak_flops(torch.float32)}
    rows = []
    for resolution in (64, 128):
        images, source = load_faces(resolution, 256)
        for architecture in CHOICES["architecture"]:
            result = measure(architecture, resolution, args.batch_size, images, args.steps,
                             args.rounds)
            print(result, flush=True)
            rows.append(result)
    peaks_after = {"bf16": peak_flops(torch.bfloat16), "fp32": peak_flops(torch.float32)}
    peak = {key: max(peaks[key], peaks_after[key]) for key in peaks}

    lines = [
        "| architecture | resolution | images/s | GFLOP per image | achieved GFLOP/s "
        "| share of bf16 peak |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['architecture']} | {row['resolution']} | {row['rate']:.1f} "
            f"| {row['flops'] / 1e9:.2f} | {row['achieved'] / 1e9:.1f} "
            f"| {row['achieved'] / peak['bf16']:.0%} |"
        )
    settings = "\n".join(
        f"- {name}: " + (", ".join(f"`{k}={v}`" for k, v in values.items()) or "the preset")
        for name, values in SETTINGS.items()
    )
    body = f"""## Training speed and FLOPs per architecture

`python bench/bench_models.py` on {machine()}, with {args.threads} torch thread(s).
Data: {source}, resized to each resolution. Batch {args.batch_size}, bf16 autocast, the
cpu-64 preset with these overrides:

{settings}

Images/s counts real images shown to D per second, the median of {args.rounds} rounds of
{args.steps} steps. FLOPs per image are those of one training step (D update, G update)
divided by the batch, counted by FlopCounterMode with grouped convolutions' backward
corrected. The count skips the lazy R1 penalty, which stylegan pays every 4th step on
top. Peak: the best rate of a 2048x2048 matrix product in the same run,
{peak['bf16'] / 1e9:.1f} GFLOP/s in bf16 and {peak['fp32'] / 1e9:.1f} GFLOP/s in fp32.
The machine was shared with other jobs, so rates are lower bounds.

{chr(10).join(lines)}
"""
    path = write_section("models", body)
    print(body)
    print(f"written to {path}")


if __name__ == "__main__":
    main()

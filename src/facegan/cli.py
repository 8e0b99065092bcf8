"""The ``facegan`` command: parse and validate options, call the library, print results."""

from __future__ import annotations

import argparse
import difflib
import importlib
import json
import logging
import sys
from pathlib import Path

from facegan import __version__
from facegan.errors import UserError

class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose unknown-option error suggests the closest valid flags."""

    def parse_args(self, args=None, namespace=None):
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            # The command's own parser prints its usage line, which lists its options.
            parser = getattr(parsed, "command_parser", None) or self
            parser.error(_unknown_message(unknown, parsed))
        return parsed


def _unknown_message(unknown: list[str], parsed: argparse.Namespace) -> str:
    flags = [arg for arg in unknown if arg.startswith("-")] or unknown
    parser = getattr(parsed, "command_parser", None)
    known = sorted(parser._option_string_actions) if parser else []
    lines = [f"unrecognized arguments: {' '.join(unknown)}"]
    for flag in flags:
        close = difflib.get_close_matches(flag.split("=")[0], known, n=3, cutoff=0.6)
        if close:
            lines.append(f"{flag}: did you mean {' or '.join(close)}?")
    command = getattr(parsed, "command", None)
    lines.append(f"run 'facegan {command or ''} --help'".replace("  ", " ") + " for the options")
    return "\n".join(lines)


# Modules that add more subcommands; each exposes register(subparsers).
COMMAND_MODULES: tuple[str, ...] = ("facegan.evaluation.commands",)


def _register_prepare(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="turn a folder of face photos into a training dataset",
        description="Read every .jpg/.jpeg/.png/.webp under SRC, detect and align the faces "
        "(or centre-crop with --no-align) and write PNGs with a manifest to OUT. "
        "Re-running on the same OUT resumes.",
    )
    parser.add_argument("src", type=Path, help="folder of photos (searched recursively)")
    parser.add_argument("out", type=Path, help="dataset folder to create or resume")
    parser.add_argument("--size", type=int, default=64, help="output size in pixels (default 64)")
    parser.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: all cores)"
    )
    parser.add_argument(
        "--holdout", type=float, default=0.05,
        help="fraction of source files held out of training for the novelty check, "
        "chosen from each file's SHA-256 (default 0.05)",
    )
    parser.add_argument(
        "--zip", action="store_true",
        help="also pack the training images into an uncompressed OUT/images.zip",
    )
    _add_align_arguments(parser)
    parser.set_defaults(handler=_run_prepare)


def _add_align_arguments(parser) -> None:
    # Defaults come from the option classes, so the help and the library always agree.
    from facegan.data.detect import FACE_RULES, DetectOptions
    from facegan.data.facecrop import AlignOptions

    detect, align = DetectOptions(), AlignOptions()
    group = parser.add_argument_group("face alignment (dlib)")
    group.add_argument(
        "--no-align", action="store_true",
        help="centre-crop each image instead of detecting and aligning faces "
        "(for folders of already-aligned crops)",
    )
    group.add_argument(
        "--faces", choices=FACE_RULES, default=detect.rule,
        help=f"faces to keep from a photo with several: the largest, or all "
        f"(default {detect.rule})",
    )
    group.add_argument(
        "--landmarks", type=int, choices=(68, 5), default=detect.landmarks,
        help="dlib landmark model: 68 points (iBUG 300-W, non-commercial) or 5 points "
        f"(no such restriction) (default {detect.landmarks})",
    )
    group.add_argument(
        "--upsample", type=int, default=detect.upsample,
        help=f"times the detector doubles the photo to find small faces, 0-2 "
        f"(default {detect.upsample})",
    )
    group.add_argument(
        "--min-score", type=float, default=detect.min_score,
        help=f"detector score below which a box is not a face (default {detect.min_score})",
    )
    group.add_argument(
        "--min-face", type=int, default=detect.min_face,
        help=f"smallest face box side to keep, in source pixels (default {detect.min_face})",
    )
    group.add_argument(
        "--detect-size", type=int, default=detect.detect_size,
        help="longer side, in pixels, the photo is scaled down to for detection "
        f"(default {detect.detect_size})",
    )
    group.add_argument(
        "--max-pad", type=float, default=align.max_pad,
        help=f"largest fraction of a crop that may lie outside the photo "
        f"(default {align.max_pad})",
    )
    group.add_argument(
        "--near-dup", type=int, default=align.near_duplicate,
        help="pHash Hamming distance (of 256 bits) up to which two aligned faces count as "
        f"duplicates; -1 turns the check off (default {align.near_duplicate})",
    )


def _align_options(args):
    if args.no_align:
        return None
    from facegan.data.detect import DetectOptions
    from facegan.data.facecrop import AlignOptions

    detect = DetectOptions(
        upsample=args.upsample,
        min_score=args.min_score,
        min_face=args.min_face,
        detect_size=args.detect_size,
        landmarks=args.landmarks,
        rule=args.faces,
    )
    return AlignOptions(detect=detect, max_pad=args.max_pad, near_duplicate=args.near_dup)


def _run_prepare(args) -> int:
    from facegan.data.prepare import prepare

    summary = prepare(
        args.src,
        args.out,
        args.size,
        args.workers,
        align=_align_options(args),
        holdout=args.holdout,
        make_zip=args.zip,
    )
    print(summary.table())
    print(f"dataset: {args.out}  (skipped files are listed in {args.out / 'report.txt'})")
    return 0


def _register_train(subparsers) -> None:
    from facegan.config import add_config_arguments, preset_names

    parser = subparsers.add_parser(
        "train",
        help="train a GAN on a prepared dataset",
        description="Train a GAN from a preset, with any option overridden by its flag.",
    )
    parser.add_argument("data", type=Path, help="dataset folder from 'facegan prepare', or a ZIP")
    parser.add_argument("--out", type=Path, required=True, help="run folder to write")
    parser.add_argument(
        "--preset",
        default=None,
        help=f"one of {', '.join(preset_names())} or a .toml path (default cpu-64; "
        "with --resume, the run's saved configuration)",
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the resolved configuration and exit"
    )
    add_config_arguments(parser)
    parser.set_defaults(handler=_run_train)


def _resolve_train_config(args):
    from facegan.config import TrainConfig, overrides_from_args, read_config, resolve_config

    overrides = overrides_from_args(args)
    saved_path = args.out / "config.json"
    if args.resume and args.preset is None and saved_path.exists():
        values = {**read_config(saved_path).to_dict(), **overrides}
        config = TrainConfig.from_dict(values, "command line")
        config.validate()
        return config
    return resolve_config(args.preset or "cpu-64", overrides)


def _run_train(args) -> int:
    from facegan.models import build_models
    from facegan.training.loop import train

    config = _resolve_train_config(args)
    if args.dry_run:
        generator, discriminator = build_models(config)
        print(json.dumps(config.to_dict(), indent=2))
        for name, net in (("generator", generator), ("discriminator", discriminator)):
            print(f"{name} parameters: {sum(p.numel() for p in net.parameters()):,}")
        from facegan.training.memory import estimate_memory

        print(estimate_memory(config).describe())
        return 0
    try:
        result = train(args.data, args.out, config, resume=args.resume)
    except FloatingPointError as error:
        # Raised when the NaN retries run out; the last good checkpoint is kept on disk.
        print(f"facegan train: error: {error}", file=sys.stderr)
        return 1
    reasons = {
        "steps": f"reached --steps {config.steps}",
        "minutes": f"trained --minutes {config.minutes:g} in this call; --resume continues",
        "signal": "stopped by a signal; --resume continues",
    }
    print(f"step {result.step} ({result.images_seen / 1000:.1f} kimg, "
          f"{result.seconds / 60:.1f} min of training in total): {reasons[result.stop_reason]}")
    print(f"checkpoint: {result.checkpoint}")
    print(f"samples: {result.grid}")
    return 0


def _register_sample(subparsers) -> None:
    parser = subparsers.add_parser(
        "sample",
        help="generate new faces from a trained run",
        description="Write N generated faces as PNGs plus grid.png. The same --seed "
        "gives the same images.",
    )
    parser.add_argument(
        "run", type=Path, nargs="?", default=None,
        help="run folder (or checkpoint file) to sample from (default: the bundled model)",
    )
    parser.add_argument("--n", type=int, default=64, help="number of faces (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="latent seed (default 0)")
    parser.add_argument(
        "--truncation", type=float, default=1.0,
        help="truncation psi in [0, 1]: 1 keeps full variety, 0 gives the mean face (default 1)",
    )
    parser.add_argument("--out", type=Path, default=Path("samples"), help="output folder")
    parser.add_argument(
        "--no-ema", action="store_true", help="use the raw generator instead of its EMA copy"
    )
    from facegan.evaluation.selection import add_selection_arguments

    add_selection_arguments(parser)
    parser.set_defaults(handler=_run_sample)


def _run_sample(args) -> int:
    from facegan.evaluation.selection import options_from_args
    from facegan.sampling import sample

    selection = options_from_args(args)
    paths, grid = sample(
        args.run, args.n, args.seed, args.truncation, args.out, not args.no_ema, selection
    )
    print(f"wrote {len(paths)} faces to {args.out}")
    print(f"grid: {grid}")
    return 0


def _register_demo(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="prepare a folder of faces, train the CPU preset for a few minutes, sample",
        description="Prepare DATA at 64x64, train the cpu-64 preset for --minutes, then "
        "write 64 samples. Running it again continues the same run.",
    )
    parser.add_argument("--data", type=Path, required=True, help="folder of face photos")
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
    parser.add_argument(
        "--minutes", type=float, default=10.0, help="training time in minutes (default 10)"
    )
    parser.add_argument("--workers", type=int, default=None, help="prepare's worker processes")
    parser.add_argument(
        "--threads", type=int, default=0,
        help="torch CPU threads for training (default 0: torch's choice; 1 is often faster "
        "on a machine shared with other busy processes)",
    )
    parser.set_defaults(handler=_run_demo)


def _run_demo(args) -> int:
    from facegan.demo import run_demo

    result = run_demo(args.data, args.out, args.minutes, args.workers, args.threads)
    print(f"trained {result.step} steps ({result.images_seen / 1000:.1f} kimg) "
          f"in {result.seconds / 60:.1f} min")
    print(f"training grids: {args.out / 'run' / 'samples'}")
    print(f"new faces: {result.samples_dir}")
    print(f"grid of new faces: {result.samples_grid}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="facegan", description="Train GANs on face photos and sample new people."
    )
    parser.add_argument("--version", action="version", version=f"facegan {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in (_register_prepare, _register_train, _register_sample, _register_demo):
        register(subparsers)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    for command_parser in subparsers.choices.values():
        # Lets the unknown-option message list the flags of the command that was run.
        command_parser.set_defaults(command_parser=command_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.handler(args)
    except UserError as error:
        print(f"facegan {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # prepare and train keep what they finished, so running the command again resumes.
        print(f"facegan {args.command}: interrupted; run the same command again to resume",
              file=sys.stderr)
        return 130
    except OSError as error:
        # A path that is a file where a folder belongs, a full disk, missing permissions.
        print(f"facegan {args.command}: error: {error}", file=sys.stderr)
        return 1

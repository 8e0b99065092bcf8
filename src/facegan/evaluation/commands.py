"""The ``facegan evaluate`` and ``facegan novelty`` subcommands."""

from __future__ import annotations

import json
import math
from pathlib import Path

from facegan.errors import UserError


def _extractor_list(text: str) -> tuple[str, ...]:
    from facegan.evaluation.features import EXTRACTORS

    names = tuple(name.strip() for name in text.split(",") if name.strip())
    for name in names:
        if name not in EXTRACTORS:
            raise UserError(
                f"invalid --extractors value {name!r}; allowed values: {', '.join(EXTRACTORS)}"
            )
    return names


def _positive(flag: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise UserError(f"invalid {flag} {value}; use 1 or more")


def _add_sampling_arguments(parser) -> None:
    parser.add_argument(
        "run", type=Path, nargs="?", default=None,
        help="run folder (or checkpoint file) to evaluate (default: the bundled model)",
    )
    parser.add_argument(
        "--data", type=Path, required=True,
        help="dataset folder from 'facegan prepare', or a folder of face images",
    )
    parser.add_argument(
        "--n", type=int, default=1000, help="number of generated samples (default 1000)"
    )
    parser.add_argument("--seed", type=int, default=0, help="latent seed (default 0)")
    parser.add_argument(
        "--truncation", type=float, default=1.0,
        help="truncation psi in [0, 1] for the samples (default 1: none)",
    )
    parser.add_argument(
        "--no-ema", action="store_true", help="use the raw generator instead of its EMA copy"
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, help="images per feature batch (default 64)"
    )
    parser.add_argument(
        "--out", type=Path, default=None,
        help="folder for the results (default: the run folder, or evaluation-bundled for "
        "the bundled model)",
    )


def _register_evaluate(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a run's samples against real faces (FD, KID, precision, recall)",
        description="Generate --n samples, extract features of as many real training faces "
        "of DATA, and report Fréchet distance, KID (± standard error), k-NN precision and "
        "recall for each extractor, plus dlib's face-detection rate. Writes "
        "evaluation.json and appends to evaluation.jsonl in the run folder (or --out).",
    )
    _add_sampling_arguments(parser)
    parser.add_argument(
        "--real-n", type=int, default=None,
        help="number of real faces (default: same as --n, at most all training faces)",
    )
    parser.add_argument(
        "--extractors", default="dlib,effnet,inception",
        help="comma-separated feature extractors: dlib (128-d face descriptor), effnet "
        "(EfficientNet-Lite0), inception (Inception-v3, standard FID) "
        "(default dlib,effnet,inception)",
    )
    parser.add_argument(
        "--kid-subsets", type=int, default=100, help="random subsets for KID (default 100)"
    )
    parser.add_argument(
        "--kid-subset-size", type=int, default=1000,
        help="faces per KID subset, capped at half the smaller set (default 1000)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(handler=_run_evaluate)


def _run_evaluate(args) -> int:
    from facegan.evaluation.evaluate import EvaluateOptions, evaluate_run, format_table

    for flag, value in (
        ("--n", args.n), ("--real-n", args.real_n), ("--batch-size", args.batch_size),
        ("--kid-subsets", args.kid_subsets), ("--kid-subset-size", args.kid_subset_size),
    ):
        _positive(flag, value)
    options = EvaluateOptions(
        count=args.n,
        real_count=args.real_n,
        extractors=_extractor_list(args.extractors),
        seed=args.seed,
        truncation_psi=args.truncation,
        ema=not args.no_ema,
        batch_size=args.batch_size,
        kid_subsets=args.kid_subsets,
        kid_subset_size=args.kid_subset_size,
    )
    results = evaluate_run(args.run, args.data, options, args.out)
    print(json.dumps(results, indent=2) if args.json else format_table(results))
    return 0


def _register_novelty(subparsers) -> None:
    parser = subparsers.add_parser(
        "novelty",
        help="check whether a run's samples are new people or copies of training faces",
        description="Find each sample's nearest training face by identity (dlib descriptor "
        "distance) and by pixels, report the share of new identities, compare with held-out "
        "real faces and draw the closest pairs. Writes novelty.json and PNGs to the run "
        "folder (or --out).",
    )
    _add_sampling_arguments(parser)
    parser.add_argument(
        "--threshold", type=float, default=0.6,
        help="descriptor distance above which a sample is a new identity (default 0.6)",
    )
    parser.add_argument(
        "--train-limit", type=int, default=None,
        help="compare with this many random training faces (default: all of them; dlib "
        "needs about 0.08 s per face on one CPU core, and the descriptors are cached)",
    )
    parser.add_argument(
        "--heldout-limit", type=int, default=1000,
        help="use at most this many held-out faces (default 1000)",
    )
    parser.add_argument(
        "--heldout-share", type=float, default=0.05,
        help="share of DATA split off at random as held-out faces when the dataset marks "
        "none (default 0.05)",
    )
    parser.add_argument(
        "--pairs", type=int, default=16, help="closest pairs to draw (default 16)"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(handler=_run_novelty)


def _run_novelty(args) -> int:
    from facegan.evaluation.novelty import NoveltyOptions, check_run_novelty, format_summary

    for flag, value in (
        ("--n", args.n), ("--train-limit", args.train_limit),
        ("--heldout-limit", args.heldout_limit), ("--pairs", args.pairs),
        ("--batch-size", args.batch_size),
    ):
        _positive(flag, value)
    if not args.threshold > 0 or not math.isfinite(args.threshold):  # rejects NaN and inf
        raise UserError(f"invalid --threshold {args.threshold}; use a positive distance")
    options = NoveltyOptions(
        count=args.n,
        seed=args.seed,
        truncation_psi=args.truncation,
        ema=not args.no_ema,
        train_limit=args.train_limit,
        heldout_limit=args.heldout_limit,
        random_heldout_share=args.heldout_share,
        threshold=args.threshold,
        batch_size=args.batch_size,
        pairs=args.pairs,
    )
    summary = check_run_novelty(args.run, args.data, options, args.out)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def register(subparsers) -> None:
    """Add ``evaluate`` and ``novelty`` to the ``facegan`` command."""
    _register_evaluate(subparsers)
    _register_novelty(subparsers)

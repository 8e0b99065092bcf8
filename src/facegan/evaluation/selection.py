"""Pick the best faces from an oversampled pool: filters, discriminator ranking, top-k.

A generator's latent space has regions that decode to broken faces. Sampling with care
means drawing more candidates than needed (``oversample``), removing the ones that fail
a check, ordering the rest and keeping the first ``top_k``:

1. face filter: dlib's detector must find a face in the candidate;
2. novelty filter: no training face may be within ``novelty_threshold`` in dlib
   descriptor distance (the same person);
3. discriminator: either rank candidates by the discriminator's logit, best first, or
   keep each with the acceptance probability of discriminator rejection sampling.

Truncation (``--truncation``) acts before all of this, on the latents.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facegan.errors import UserError
from facegan.evaluation.metrics import nearest_neighbours

logger = logging.getLogger(__name__)

RANKINGS = ("rank", "drs")


@dataclasses.dataclass
class SelectionOptions:
    """How to choose faces from the pool. The ``facegan sample`` flags map onto these fields."""

    oversample: float = 1.0  # candidates per requested face
    top_k: int | None = None  # faces to keep (default: the requested count)
    filter_face: bool = False
    novel_data: Path | None = None  # --filter-novel DATA
    train_descriptors: np.ndarray | None = None  # descriptors of novel_data's training faces
    novelty_threshold: float = 0.6
    ranking: str | None = None  # "rank" or "drs" (discriminator rejection sampling)
    drs_percentile: float = 80.0
    seed: int = 0

    @property
    def active(self) -> bool:
        """True when any option changes which faces are written."""
        return (
            self.oversample != 1.0
            or self.top_k is not None
            or self.filter_face
            or self.novel_data is not None
            or self.train_descriptors is not None
            or self.ranking is not None
        )

    def validate(self) -> None:
        if self.oversample < 1:
            raise UserError(f"invalid --oversample {self.oversample}; use 1 or more")
        if self.top_k is not None and self.top_k < 1:
            raise UserError(f"invalid --top-k {self.top_k}; use 1 or more")
        if self.ranking is not None and self.ranking not in RANKINGS:
            raise UserError(
                f"invalid --rank-discriminator {self.ranking!r}; allowed values: rank, drs"
            )
        if not 0 <= self.drs_percentile < 100:
            raise UserError(f"invalid DRS percentile {self.drs_percentile}; use 0 to 100")

    def pool_size(self, count: int) -> int:
        """Return the number of candidates to generate for ``count`` requested faces."""
        return math.ceil(count * self.oversample)


@dataclasses.dataclass
class SelectionReport:
    """How many candidates each step removed, in the order the steps ran."""

    pool: int
    removed: dict[str, int]
    kept: int

    def lines(self) -> list[str]:
        """Describe the selection in one line per step, for the terminal."""
        lines = [f"pool: {self.pool} candidates"]
        lines += [f"  {name}: removed {count}" for name, count in self.removed.items()]
        lines.append(f"kept: {self.kept}")
        return lines


@torch.no_grad()
def discriminator_scores(
    discriminator: nn.Module, images: np.ndarray, batch_size: int = 64
) -> np.ndarray:
    """Return the discriminator's logit for each uint8 NHWC image (higher: more real)."""
    scores = [torch.zeros(0)]
    device = next(discriminator.parameters()).device
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(images[start : start + batch_size]).to(device)
        batch = batch.permute(0, 3, 1, 2).float() / 127.5 - 1
        scores.append(discriminator(batch).float().flatten().cpu())
    return torch.cat(scores).numpy()


def drs_acceptance(
    logits: np.ndarray, percentile: float = 80.0, epsilon: float = 1e-6
) -> np.ndarray:
    """Return the acceptance probability of each candidate under discriminator rejection sampling.

    From Azadi et al. 2019: with D the logit and D_max its maximum over the pool,
    F = D - D_max - log(1 - exp(D - D_max - epsilon)) - gamma, accepted with
    probability sigmoid(F). gamma is the ``percentile`` of F over the pool, so roughly
    the candidates above that percentile are accepted with probability over one half.
    """
    shifted = np.asarray(logits, dtype=np.float64) - np.max(logits)
    scores = shifted - np.log1p(-np.exp(shifted - epsilon))
    gamma = np.percentile(scores, percentile)
    return 1 / (1 + np.exp(-(scores - gamma)))


def novel_mask(
    descriptors: np.ndarray, train_descriptors: np.ndarray, threshold: float
) -> np.ndarray:
    """Return True for each descriptor with no training descriptor within ``threshold``."""
    distances, _ = nearest_neighbours(descriptors, train_descriptors)
    return distances > threshold


def select(
    images: np.ndarray,
    count: int,
    options: SelectionOptions,
    discriminator: nn.Module | None = None,
) -> tuple[np.ndarray, SelectionReport]:
    """Filter and order the candidate ``images`` (uint8 NHWC), then keep the first ones.

    Returns the indices of the kept candidates, best first, and the report. Keeps
    ``options.top_k`` faces, or ``count`` when it is None, and fewer when too few pass.
    """
    options.validate()
    keep = np.arange(len(images))
    removed: dict[str, int] = {}
    if options.filter_face or options.train_descriptors is not None:
        keep = _apply_face_checks(images, keep, options, removed)
    if options.ranking is not None:
        if discriminator is None:
            raise UserError(
                "--rank-discriminator needs a run with a discriminator; the bundled model "
                "ships without one, so pass a run folder"
            )
        keep = _apply_discriminator(images, keep, options, discriminator, removed)
    wanted = options.top_k or count
    removed["beyond top-k"] = max(len(keep) - wanted, 0)
    keep = keep[:wanted]
    report = SelectionReport(pool=len(images), removed=removed, kept=len(keep))
    for line in report.lines():
        logger.info(line)
    if len(keep) < wanted:
        logger.warning(
            "only %d of %d requested faces passed the filters; raise --oversample",
            len(keep),
            wanted,
        )
    return keep, report


def _apply_face_checks(images, keep, options, removed):
    from facegan.evaluation.features import DlibDescriptorExtractor

    extracted = DlibDescriptorExtractor().extract(images[keep])
    passed = np.ones(len(keep), dtype=bool)
    if options.filter_face:
        removed["no face found"] = int((~extracted.face_found).sum())
        passed &= extracted.face_found
    if options.train_descriptors is not None:
        # Count only candidates that the face filter kept, so none is counted twice.
        novel = novel_mask(
            extracted.values, options.train_descriptors, options.novelty_threshold
        )
        removed["training identity within threshold"] = int((passed & ~novel).sum())
        passed &= novel
    return keep[passed]


def _apply_discriminator(images, keep, options, discriminator, removed):
    scores = discriminator_scores(discriminator, images[keep])
    if options.ranking == "drs":
        acceptance = drs_acceptance(scores, options.drs_percentile)
        rng = np.random.default_rng(options.seed)
        accepted = rng.random(len(keep)) < acceptance
        removed["rejected by DRS"] = int((~accepted).sum())
        # DRS corrects the sample distribution, and sorting the accepted faces by score
        # would undo that, so they stay in seed order.
        return keep[accepted]
    order = np.argsort(-scores, kind="stable")
    return keep[order]


def load_train_descriptors(data: Path, resolution: int, cache_dir: Path | None) -> np.ndarray:
    """Compute (or read from the cache) dlib descriptors of every training face of ``data``."""
    from facegan.evaluation.evaluate import cached_real_features
    from facegan.evaluation.realdata import list_splits

    paths = list_splits(data).train
    logger.info("describing %d training faces of %s for the novelty filter", len(paths), data)
    return cached_real_features(paths, resolution, "dlib", cache_dir).values


def sample_with_selection(run, count: int, seed: int, truncation_psi: float, options, run_dir):
    """Generate a pool of candidates from a loaded run and return the selected faces.

    ``run`` is a ``facegan.sampling.LoadedRun`` and ``run_dir`` its folder, where the
    training descriptors are cached (None: no cache). The report is logged and returned.
    """
    from facegan.evaluation.evaluate import CACHE_FOLDER, generate_samples

    options.validate()
    if options.novel_data is not None and options.train_descriptors is None:
        cache_dir = None
        if run_dir is not None:
            run_dir = Path(run_dir)
            cache_dir = (run_dir if run_dir.is_dir() else run_dir.parent) / CACHE_FOLDER
        options.train_descriptors = load_train_descriptors(
            options.novel_data, run.config.resolution, cache_dir
        )
    pool = generate_samples(run.generator, options.pool_size(count), seed, truncation_psi)
    keep, report = select(pool, count, options, run.discriminator)
    if len(keep) == 0:
        raise UserError(
            f"none of the {len(pool)} candidates passed the filters; "
            "raise --oversample or drop a filter"
        )
    return pool[keep], report


def add_selection_arguments(parser) -> None:
    """Add the careful-sampling options to the ``facegan sample`` parser."""
    group = parser.add_argument_group("careful sampling")
    group.add_argument(
        "--oversample", type=float, default=1.0,
        help="generate this many candidates per requested face, then keep the best "
        "(default 1: no pool)",
    )
    group.add_argument(
        "--top-k", type=int, default=None,
        help="number of faces to keep from the pool (default: --n)",
    )
    group.add_argument(
        "--filter-face", action="store_true",
        help="drop candidates in which dlib's face detector finds no face",
    )
    group.add_argument(
        "--filter-novel", type=Path, default=None, metavar="DATA",
        help="drop candidates within --novelty-threshold of a training face of DATA "
        "(dlib descriptor distance); describes all training faces once, then caches them",
    )
    group.add_argument(
        "--novelty-threshold", type=float, default=0.6,
        help="descriptor distance under which a candidate counts as a training person "
        "(default 0.6)",
    )
    group.add_argument(
        "--rank-discriminator", nargs="?", const="rank", default=None, choices=RANKINGS,
        help="order candidates by discriminator logit, best first (rank, the default "
        "when given without a value), or keep each with its discriminator rejection "
        "sampling probability (drs)",
    )


def options_from_args(args) -> SelectionOptions:
    """Build and validate SelectionOptions from parsed ``facegan sample`` arguments."""
    if args.novelty_threshold <= 0:
        raise UserError(
            f"invalid --novelty-threshold {args.novelty_threshold}; use a positive distance"
        )
    options = SelectionOptions(
        oversample=args.oversample,
        top_k=args.top_k,
        filter_face=args.filter_face,
        novel_data=args.filter_novel,
        novelty_threshold=args.novelty_threshold,
        ranking=args.rank_discriminator,
        seed=args.seed,
    )
    options.validate()
    return options

"""Curriculum specs, pacing functions and the step-indexed batch sampler.

A curriculum is data, not code: `curricula/NAME.yaml` names a difficulty scorer (with its
`scorer_args`), an order and a pacing function. data_prep turns it into an ordered index file
once; training only reads that file. Pacing follows Hacohen and Weinshall (2019): g(x) is the
fraction of the difficulty-sorted data available at training progress x in [0, 1]. `stages`
pacing is the curriculum study's: cumulative pools cut at score percentiles, each open for a
share of training proportional to its size, i.e. the same number of epochs per stage.

The sampler makes every batch a pure function of (seed, step): batch t is drawn without
replacement from the first ceil(g(t/T) N) items of the order. So every rank sees the same
global batch, the curriculum does not depend on the number of processes, and resuming at
step k is exact with no sampler state to save.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

CURRICULA_DIR = Path(__file__).resolve().parents[1] / "curricula"
ORDERS = ("ascending", "descending", "random")
PACING_FUNCTIONS = ("none", "linear", "quadratic", "root", "exponential", "log", "step", "stages")
GROWING = ("linear", "quadratic", "root", "exponential", "log")  # these start at start_fraction

PacingFn = Callable[[float], float]
RUN_MODEL = "stage1"  # scorer_args.model value: the run's own stage-1 text checkpoint


@dataclass
class PacingSpec:
    function: str = "none"
    start_fraction: float | None = None  # growing functions: the share available at step 0 (required)
    full_at: float = 1.0  # training progress (0..1] at which all data is available
    buckets: int = 4  # step pacing only
    percentiles: list[float] | None = None  # stages pacing: score percentiles that close each stage
    epochs_per_stage: float | None = None  # stages pacing: sets stage 2's length (else --multimodal_steps)

    def __post_init__(self) -> None:
        if self.function not in PACING_FUNCTIONS:
            raise ValueError(f"pacing function {self.function!r} unknown; use one of {PACING_FUNCTIONS}")
        if self.function in GROWING and self.start_fraction is None:
            # a default of 1.0 here once meant "all data from step 0": no curriculum, silently
            raise ValueError(f"pacing {self.function!r} needs start_fraction (the share of the ordered data "
                             "available at the first step, e.g. 0.2)")
        if self.function not in GROWING and self.start_fraction is not None:
            raise ValueError(f"pacing {self.function!r} does not use start_fraction; remove it")
        if self.start_fraction is not None and not 0 < self.start_fraction <= 1:
            raise ValueError(f"start_fraction must be in (0, 1], got {self.start_fraction}")
        if (self.function == "stages") != (self.percentiles is not None):
            raise ValueError("stages pacing needs percentiles (e.g. [25, 50, 75]) and only it takes them")
        if self.percentiles is not None and (
                list(self.percentiles) != sorted(self.percentiles) or not all(0 < q < 100 for q in self.percentiles)):
            raise ValueError(f"percentiles must rise strictly inside (0, 100), got {self.percentiles}")
        if self.epochs_per_stage is not None and (self.function != "stages" or self.epochs_per_stage <= 0):
            raise ValueError("epochs_per_stage must be positive and only stages pacing takes it")
        if not 0 < self.full_at <= 1:
            raise ValueError(f"full_at must be in (0, 1], got {self.full_at}")
        if self.buckets < 1:
            raise ValueError(f"buckets must be >= 1, got {self.buckets}")


@dataclass
class CurriculumSpec:
    name: str
    scorer: str | None = None
    scorer_args: dict = field(default_factory=dict)  # e.g. {csv: norms/aoa.csv}; paths relative to the data dir
    order: str = "random"
    pacing: PacingSpec = field(default_factory=PacingSpec)
    description: str = ""

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise ValueError(f"curriculum {self.name!r}: order {self.order!r} unknown; use one of {ORDERS}")
        if self.order != "random" and not self.scorer:
            raise ValueError(f"curriculum {self.name!r}: order {self.order!r} needs a scorer")
        if self.pacing.function == "stages" and self.order == "random":
            raise ValueError(f"curriculum {self.name!r}: stages pacing cuts pools by score; give an order by a scorer")
        if self.scorer_args and not self.scorer:
            raise ValueError(f"curriculum {self.name!r}: scorer_args without a scorer")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def scores_run_model(self) -> bool:
        """The scorer reads the run's own stage-1 text model (`scorer_args: {model: stage1}`), so
        the order is built during the run, after stage 1, not by data prep beforehand."""
        return self.scorer_args.get("model") == RUN_MODEL


def available_curricula() -> list[str]:
    return sorted(p.stem for p in CURRICULA_DIR.glob("*.yaml"))


def load_curriculum(name_or_path: str) -> CurriculumSpec:
    """Resolve `--curriculum NAME` to curricula/NAME.yaml (or take a path to a YAML file)."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = CURRICULA_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        raise FileNotFoundError(
            f"unknown curriculum {name_or_path!r}: {path} does not exist; "
            f"available: {', '.join(available_curricula())}"
        )
    raw = yaml.safe_load(path.read_text()) or {}
    try:
        pacing = PacingSpec(**(raw.pop("pacing", None) or {}))
        return CurriculumSpec(name=raw.pop("name", path.stem), pacing=pacing, **raw)
    except TypeError as e:
        raise ValueError(f"{path}: {e}") from e


def stage_bounds(fractions: list[float]) -> list[float]:
    """Progress at which each stage of `stages` pacing ends: stage k (its pool the first
    fractions[k] of the order) lasts in proportion to its pool, so every stage gets the same
    number of epochs."""
    total = sum(fractions)
    return [sum(fractions[: k + 1]) / total for k in range(len(fractions))]


def stage_fractions(scores_in_order: np.ndarray, percentiles: list[float]) -> list[float]:
    """The cumulative pools of `stages` pacing as fractions of the order: stage k holds the items
    strictly easier than the percentiles[k] of the scores (the study: fewer than 3, 4, 6 nouns),
    the last stage all of them. `scores_in_order` is oriented so that easier comes first
    (negate the scores of a descending order)."""
    s = np.asarray(scores_in_order, dtype=np.float64)
    cuts = np.percentile(s, percentiles)
    return [float((s < c).sum() / len(s)) for c in cuts] + [1.0]


def pacing_function(spec: PacingSpec, fractions: list[float] | None = None) -> PacingFn:
    """g(progress) -> fraction of the ordered data available, nondecreasing, g(x>=full_at)=1.
    `stages` pacing needs its pools' `fractions` (the curriculum manifest's `stage_fractions`)."""
    s, full_at, fn = spec.start_fraction, spec.full_at, spec.function
    if fn == "stages":
        if not fractions:
            raise ValueError("stages pacing needs the stage fractions of its built curriculum")
        bounds = stage_bounds(fractions)

        def staged(progress: float) -> float:
            k = int(np.searchsorted(bounds, min(max(progress, 0.0), 1.0), side="right"))
            return fractions[min(k, len(fractions) - 1)]

        return staged

    def grow(x: float) -> float:
        if fn == "linear":
            return x
        if fn == "quadratic":
            return x * x
        if fn == "root":
            return math.sqrt(x)
        if fn == "log":
            return math.log2(1.0 + x)
        raise AssertionError(fn)

    def g(progress: float) -> float:
        x = min(max(progress / full_at, 0.0), 1.0)
        if fn == "none":
            return 1.0
        if fn == "step":  # "baby steps": bucket k of B opens at x = k / B
            return min(1.0, (math.floor(x * spec.buckets) + 1) / spec.buckets)
        if fn == "exponential":  # geometric growth from s to 1
            return s ** (1.0 - x)
        return s + (1.0 - s) * grow(x)

    return g


def order_by_scores(scores: np.ndarray, order: str, seed: int) -> np.ndarray:
    """Indices sorted by difficulty; ties (and `random`) broken by a seeded permutation."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(scores))
    if order == "random":
        return perm
    keys = scores[perm] if order == "ascending" else -scores[perm]
    return perm[np.argsort(keys, kind="stable")]


class StepBatchSampler:
    """Yields this rank's share of global batch t for t in [start_step, num_steps).

    `order` holds dataset indices, easiest first; `pacing` maps progress to the available
    fraction. Each global batch (batch_size * world_size items) is a seeded draw without
    replacement from the available prefix; rank r takes rows r*batch_size ... (r+1)*batch_size.
    """

    def __init__(self, order: np.ndarray, pacing: PacingFn, num_steps: int, batch_size: int,
                 seed: int, rank: int = 0, world_size: int = 1, start_step: int = 0):
        self.order = np.asarray(order)
        self.pacing, self.num_steps, self.batch_size = pacing, num_steps, batch_size
        self.seed, self.rank, self.world_size, self.start_step = seed, rank, world_size, start_step
        if batch_size * world_size > len(self.order):
            raise ValueError(f"global batch {batch_size * world_size} exceeds dataset size {len(self.order)}")

    def available(self, step: int) -> int:
        """Items open at `step`: the pacing's share, at least a global batch, and all of them at
        the last step, so a stage always ends on the hardest items (a pacing that opens the
        last items only at progress 1.0 would otherwise never reach them)."""
        global_batch = self.batch_size * self.world_size
        if step >= self.num_steps - 1:
            return len(self.order)
        n = math.ceil(self.pacing(step / max(self.num_steps, 1)) * len(self.order))
        return min(len(self.order), max(global_batch, n))

    def global_batch(self, step: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, step])
        picks = rng.choice(self.available(step), size=self.batch_size * self.world_size, replace=False)
        return self.order[picks]

    def __len__(self) -> int:
        return max(self.num_steps - self.start_step, 0)

    def __iter__(self) -> Iterator[list[int]]:
        lo = self.rank * self.batch_size
        for step in range(self.start_step, self.num_steps):
            yield self.global_batch(step)[lo : lo + self.batch_size].tolist()

"""Stage 5: turn a curriculum spec and caption scores into an ordered index file.

Writes `prepared/curricula/<name>-seed<seed>/order.npy` (caption indices, easiest first for an
ascending spec; ties and `random` broken by the run's seed), a manifest with the spec, the
scorer, the data fingerprint, the score range of each quarter of the order and, for `stages`
pacing, each stage's pool, and `curriculum.png`: the difficulty distribution and the share of
the data open over training. A run copies the manifest beside its checkpoints.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from babymm.curriculum import (
    CurriculumSpec,
    load_curriculum,
    order_by_scores,
    pacing_function,
    stage_bounds,
    stage_fractions,
)
from babymm.files import DataError, atomic_dir
from data_prep import ingest as ingest_stage
from data_prep import score as score_stage
from data_prep.stage import (
    fingerprint,
    is_up_to_date,
    log,
    prepared_dir,
    read_manifest,
    run_cli,
    stage_parser,
    write_manifest,
)

STAGE = "curricula"


def out_dir(data_dir: Path, name: str, seed: int = 0, subset: str | None = None) -> Path:
    return prepared_dir(data_dir, subset) / STAGE / f"{name}-seed{seed}"


def build_curriculum(data_dir: Path, curriculum: str, seed: int = 0, overwrite: bool = False,
                     subset: str | None = None, scorer_args: dict | None = None, out: Path | None = None) -> Path:
    """`scorer_args` replace the spec's (e.g. the run's own stage-1 model for `model: stage1`), and
    `out` is where the order goes when it belongs to one run rather than to the data."""
    data_dir = Path(data_dir)
    try:
        spec = load_curriculum(curriculum)
    except (FileNotFoundError, ValueError) as e:
        raise DataError(str(e)) from e
    if scorer_args is not None:
        spec.scorer_args = {**spec.scorer_args, **scorer_args}
    if spec.scores_run_model:
        raise DataError(f"curriculum {spec.name!r} scores captions with the run's own stage-1 model "
                        f"(scorer_args.model: stage1): train.py builds it after stage 1; to build it here, "
                        "pass the model directory (--scorer_model DIR)")
    ingested = ingest_stage.require_ingested(data_dir, captions=True, subset=subset)
    if spec.scorer:
        scores_dir = score_stage.score_captions(data_dir, spec.scorer, args=spec.scorer_args, subset=subset)
        upstream = read_manifest(scores_dir)["fingerprint"]
    else:
        scores_dir, upstream = None, ingested["fingerprint"]
    fp = fingerprint(STAGE, upstream, spec.to_dict(), seed)
    out = Path(out) if out is not None else out_dir(data_dir, spec.name, seed, subset)
    if not overwrite and is_up_to_date(out, fp):
        log(STAGE, f"{out} is up to date")
        return out
    n = ingested["captions"]
    scores = np.load(scores_dir / "scores.npy") if scores_dir else np.zeros(n, dtype=np.float32)
    order = order_by_scores(scores, spec.order, seed)
    edges = np.linspace(0, n, 5).astype(int)
    quarters = [
        {"first": int(a), "last": int(b - 1),
         "score_min": float(scores[order[a:b]].min()), "score_max": float(scores[order[a:b]].max()),
         "score_mean": float(scores[order[a:b]].mean())}
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    ]
    stages = {}
    if spec.pacing.function == "stages":
        easier_first = scores[order] if spec.order == "ascending" else -scores[order]
        fractions = stage_fractions(easier_first, spec.pacing.percentiles)
        stages = {"stage_fractions": fractions, "stage_sizes": [math.ceil(f * n) for f in fractions],
                  "stage_ends_at_progress": stage_bounds(fractions)}
    with atomic_dir(out) as tmp:
        np.save(tmp / "order.npy", order.astype(np.int64))
        plot_curriculum(tmp / "curriculum.png", spec, scores, stages.get("stage_fractions"))
        write_manifest(tmp, STAGE, fp, curriculum=spec.to_dict(), seed=seed, captions=n,
                       data_fingerprint=ingested["fingerprint"], subset=subset, quarters=quarters, **stages)
    sizes = f"; stage pools {', '.join(f'{s:,}' for s in stages['stage_sizes'])}" if stages else ""
    log(STAGE, f"{spec.name}: {n} captions ordered ({spec.order} by {spec.scorer}{sizes}) -> {out}")
    return out


def plot_curriculum(path: Path, spec: CurriculumSpec, scores: np.ndarray, fractions: list[float] | None) -> None:
    """Two panels: how difficulty is distributed, and the share of the ordered data open as
    training goes (the pacing), so a spec's effect is seen before a step is trained."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    if spec.scorer:
        integer = np.array_equal(scores, np.round(scores)) and np.ptp(scores) <= 60
        # counts (words, nouns): one bar per value; anything else: 40 bins
        bins = np.arange(scores.min() - 0.5, scores.max() + 1.5) if integer else 40
        left.hist(scores, bins=bins, color="#4c72b0", rwidth=0.9 if integer else None)
        left.set_xlabel(f"difficulty ({spec.scorer})")
        left.set_ylabel("captions")
    else:
        left.text(0.5, 0.5, "no scorer: random order", ha="center", va="center", transform=left.transAxes)
    left.set_title("difficulty")
    g = pacing_function(spec.pacing, fractions)
    x = np.linspace(0, 1, 501)
    right.plot(x, [g(v) for v in x], color="#dd8452")
    right.set_ylim(0, 1.05)
    right.set_xlabel("stage-2 progress")
    right.set_ylabel(f"share of data open ({spec.order})")
    right.set_title(f"pacing: {spec.pacing.function}")
    fig.suptitle(f"curriculum {spec.name}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--curriculum", default="length")
    p.add_argument("--seed", type=int, default=0, help="breaks ties and draws a random order (a run passes its --seed)")
    p.add_argument("--scorer_model", default=None, help="the model directory a model-based scorer reads "
                                                          "(replaces the spec's scorer_args.model)")
    return run_cli(p, argv, lambda a: build_curriculum(
        a.data_dir, a.curriculum, a.seed, a.overwrite, a.subset,
        scorer_args={"model": a.scorer_model} if a.scorer_model else None))


if __name__ == "__main__":
    sys.exit(main())

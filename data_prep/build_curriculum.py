"""Stage 5: turn a curriculum spec and caption scores into an ordered index file.

Writes `prepared/curricula/<name>/order.npy` (caption indices, easiest first for an
ascending spec) and a manifest with the spec, the scorer, the data fingerprint and the score
range of each quarter of the order, which a run copies beside its checkpoints.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from babymm.curriculum import load_curriculum, order_by_scores
from babymm.files import DataError, atomic_dir
from data_prep import ingest as ingest_stage
from data_prep import score as score_stage
from data_prep.stage import (
    fingerprint,
    is_up_to_date,
    log,
    read_manifest,
    run_cli,
    stage_parser,
    write_manifest,
)

STAGE = "curricula"


def out_dir(data_dir: Path, name: str) -> Path:
    return Path(data_dir) / "prepared" / STAGE / name


def build_curriculum(data_dir: Path, curriculum: str, seed: int = 0, overwrite: bool = False) -> Path:
    data_dir = Path(data_dir)
    try:
        spec = load_curriculum(curriculum)
    except (FileNotFoundError, ValueError) as e:
        raise DataError(str(e)) from e
    ingested = ingest_stage.require_ingested(data_dir, captions=True)
    if spec.scorer:
        scores_dir = score_stage.score_captions(data_dir, spec.scorer)
        upstream = read_manifest(scores_dir)["fingerprint"]
    else:
        scores_dir, upstream = None, ingested["fingerprint"]
    fp = fingerprint(STAGE, upstream, spec.to_dict(), seed)
    out = out_dir(data_dir, spec.name)
    if not overwrite and is_up_to_date(out, fp):
        log(STAGE, f"{out} is up to date")
        return out
    n = ingested["captions"]
    scores = np.load(scores_dir / "scores.npy") if scores_dir else np.zeros(n, dtype=np.float32)
    order = order_by_scores(scores, spec.order, seed)
    quarters = [
        {"first": int(a), "last": int(b - 1),
         "score_min": float(scores[order[a:b]].min()), "score_max": float(scores[order[a:b]].max()),
         "score_mean": float(scores[order[a:b]].mean())}
        for a, b in zip(np.linspace(0, n, 5).astype(int)[:-1], np.linspace(0, n, 5).astype(int)[1:], strict=True)
    ]
    with atomic_dir(out) as tmp:
        np.save(tmp / "order.npy", order.astype(np.int64))
        write_manifest(tmp, STAGE, fp, curriculum=spec.to_dict(), seed=seed, captions=n,
                       data_fingerprint=ingested["fingerprint"], quarters=quarters)
    log(STAGE, f"{spec.name}: {n} captions ordered ({spec.order} by {spec.scorer}) -> {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--curriculum", default="length")
    p.add_argument("--seed", type=int, default=0)
    return run_cli(p, argv, lambda a: build_curriculum(a.data_dir, a.curriculum, a.seed, a.overwrite))


if __name__ == "__main__":
    sys.exit(main())

"""Stage 4: score caption difficulty with a registered scorer -> `prepared/scores/<scorer>/`."""

from __future__ import annotations

import sys
from pathlib import Path

import datasets
import numpy as np

from babymm.files import DataError, atomic_dir
from data_prep import ingest as ingest_stage
from data_prep.scorers import SCORERS, ScoringContext
from data_prep.stage import fingerprint, is_up_to_date, log, run_cli, stage_parser, write_manifest

STAGE = "scores"


def out_dir(data_dir: Path, scorer: str) -> Path:
    return Path(data_dir) / "prepared" / STAGE / scorer


def score_captions(data_dir: Path, scorer: str, overwrite: bool = False) -> Path:
    data_dir = Path(data_dir)
    if scorer not in SCORERS:
        raise DataError(f"unknown scorer {scorer!r}; registered: {', '.join(sorted(SCORERS))}")
    upstream = ingest_stage.require_ingested(data_dir, captions=True)
    fp = fingerprint(STAGE, upstream["fingerprint"], scorer)
    out = out_dir(data_dir, scorer)
    if not overwrite and is_up_to_date(out, fp):
        log(STAGE, f"{out} is up to date")
        return out
    prepared = ingest_stage.out_dir(data_dir)
    captions = datasets.load_from_disk(str(prepared / "captions"))["caption"]
    ctx = ScoringContext(text=ingest_stage.load_text(data_dir))
    scores = np.asarray(SCORERS[scorer](list(captions), ctx), dtype=np.float32)
    if scores.shape != (len(captions),) or not np.isfinite(scores).all():
        raise DataError(f"scorer {scorer!r} returned shape {scores.shape} or non-finite values "
                        f"for {len(captions)} captions")
    q = np.quantile(scores, [0.0, 0.25, 0.5, 0.75, 1.0]).round(4).tolist()
    with atomic_dir(out) as tmp:
        np.save(tmp / "scores.npy", scores)
        write_manifest(tmp, STAGE, fp, scorer=scorer, captions=len(scores),
                       mean=float(scores.mean()), quantiles_0_25_50_75_100=q)
    log(STAGE, f"{scorer}: {len(scores)} captions, quartiles {q} -> {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--scorer", default="length", choices=sorted(SCORERS))
    return run_cli(p, argv, lambda a: score_captions(a.data_dir, a.scorer, a.overwrite))


if __name__ == "__main__":
    sys.exit(main())

"""Stage 4: score caption difficulty with a registered scorer -> `prepared/scores/<scorer>[-args]/`.

`scores.npy` holds one float per ingested caption (higher = harder), in caption order; the
manifest holds the scorer, its arguments, its code version and the quartiles. Scores are
reused while the ingested data, the scorer, its arguments, the files they name and the
scorer's code (`code_version`) are unchanged, and recomputed when any of them changes.
`scores_table` puts several scorers side by side as columns of one pandas table
(`--export scores.csv`).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd

from babymm.files import DataError, atomic_dir, write_text_atomic
from data_prep import ingest as ingest_stage
from data_prep import scorers as scorers_module
from data_prep.scorers import RUNTIME_ARGS, SCORERS, ScoringContext, input_paths
from data_prep.stage import (
    file_fingerprint,
    fingerprint,
    is_up_to_date,
    log,
    prepared_dir,
    run_cli,
    stage_parser,
    write_manifest,
)

STAGE = "scores"


def column_name(scorer: str, args: dict[str, Any] | None = None) -> str:
    """`length`, or `aoa-1a2b3c4d` when the scorer takes arguments: one name per distinct scoring."""
    args = _scoring_args(scorer, args or {})
    return scorer if not args else f"{scorer}-{fingerprint(args)[:8]}"


def out_dir(data_dir: Path, scorer: str, args: dict[str, Any] | None = None, subset: str | None = None) -> Path:
    return prepared_dir(data_dir, subset) / STAGE / column_name(scorer, args)


def _inputs_fingerprint(ctx: ScoringContext, scorer: str) -> str:
    """Files the arguments name (a norms CSV, a checkpoint, also inside `combined`): replaced in
    place, they rescore."""
    files: list[Path] = []
    for p in input_paths(ctx, scorer):
        if not p.exists():
            raise DataError(f"scorer {scorer!r}: {p} (named in scorer_args) does not exist; fix the path in the spec")
        files += sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    return file_fingerprint(files)


def code_version(scorer: str) -> str:
    """A hash of the scorer's code, with its name: the source of data_prep/scorers.py (every
    shipped scorer, and the helpers, constants and registries they share, live there) and of
    the module file the scorer is defined in, if elsewhere (for `combined`, of every registered
    scorer's: its components are named by its arguments). Whole files, not the scorer
    function's own source, because a scorer's result also depends on the helpers and constants
    beside it (caption_words, WORD_PUNCT, POS_MODEL, ...) and on the scorers it calls: an edit
    anywhere in those files rescores, which is cheap next to silently reusing scores of old
    code. Code outside them (babymm's model classes that `alignment` loads, installed
    packages) is not covered; the model and norms files the arguments name are, by
    `_inputs_fingerprint`."""
    files = {Path(scorers_module.__file__).resolve()}
    h = hashlib.sha256(scorer.encode())
    for fn in SCORERS.values() if scorer == "combined" else [SCORERS[scorer]]:
        if getattr(fn, "__module__", None) == scorers_module.__name__:
            continue  # its source is scorers.py's
        try:
            files.add(Path(inspect.getsourcefile(fn)).resolve())
        except TypeError:  # no source file (built in, or made at run time): its bytecode stands for it
            code = getattr(fn, "__code__", None)
            h.update(code.co_code + repr(code.co_consts).encode() if code is not None else repr(fn).encode())
    for f in sorted(files):
        h.update(str(f.name).encode() + b"\0" + (f.read_bytes() if f.is_file() else b"") + b"\0")
    return h.hexdigest()[:16]


def _scoring_args(scorer: str, args: dict[str, Any]) -> dict[str, Any]:
    """The arguments that change scores: not those that only change speed (num_proc, batch_size)."""
    return {k: v for k, v in args.items() if k not in RUNTIME_ARGS.get(scorer, ())}


def score_captions(data_dir: Path, scorer: str, overwrite: bool = False, args: dict[str, Any] | None = None,
                   subset: str | None = None) -> Path:
    data_dir = Path(data_dir)
    args = dict(args or {})
    if scorer not in SCORERS:
        raise DataError(f"unknown scorer {scorer!r}; registered: {', '.join(sorted(SCORERS))}")
    upstream = ingest_stage.require_ingested(data_dir, captions=True, subset=subset)
    captions = datasets.load_from_disk(str(ingest_stage.out_dir(data_dir, subset) / "captions"))
    ctx = ScoringContext(captions=captions.select_columns(
                             [c for c in ("caption", "image_id", "source", "num_words") if c in captions.column_names]),
                         text=None, data_dir=data_dir, args=args,
                         ingest_dir=ingest_stage.out_dir(data_dir, subset))
    version = code_version(scorer)
    fp = fingerprint(STAGE, upstream["fingerprint"], scorer, _scoring_args(scorer, args), _inputs_fingerprint(ctx, scorer),
                     version)
    out = out_dir(data_dir, scorer, args, subset)
    if not overwrite and is_up_to_date(out, fp):
        log(STAGE, f"{out} is up to date")
        return out
    ctx.text = ingest_stage.load_text(data_dir, subset)
    scores = np.asarray(SCORERS[scorer](ctx), dtype=np.float32)
    if scores.shape != (captions.num_rows,) or not np.isfinite(scores).all():
        raise DataError(f"scorer {scorer!r} returned shape {scores.shape} or non-finite values "
                        f"for {captions.num_rows} captions")
    q = np.quantile(scores, [0.0, 0.25, 0.5, 0.75, 1.0]).round(4).tolist()
    with atomic_dir(out) as tmp:
        np.save(tmp / "scores.npy", scores)
        write_manifest(tmp, STAGE, fp, scorer=scorer, scorer_args=args, code_version=version,
                       column=column_name(scorer, args),
                       captions=len(scores), mean=float(scores.mean()), quantiles_0_25_50_75_100=q)
    log(STAGE, f"{scorer}: {len(scores)} captions, quartiles {q} -> {out}")
    return out


def scores_table(data_dir: Path, scorers: list[tuple[str, dict[str, Any] | None]],
                 subset: str | None = None) -> pd.DataFrame:
    """One row per caption (caption, image_id) and one column per scorer, scoring what is missing."""
    data_dir = Path(data_dir)
    ingest_stage.require_ingested(data_dir, captions=True, subset=subset)
    captions = datasets.load_from_disk(str(ingest_stage.out_dir(data_dir, subset) / "captions"))
    table = captions.select_columns([c for c in ("caption", "image_id") if c in captions.column_names]).to_pandas()
    for name, args in scorers:
        table[column_name(name, args)] = np.load(score_captions(data_dir, name, args=args, subset=subset) / "scores.npy")
    return table


def _parse_args(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        args = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"--scorer_args {text!r} is not JSON ({e.msg}); pass e.g. '{{\"csv\": \"aoa.csv\"}}'") from None
    if not isinstance(args, dict):
        raise DataError(f"--scorer_args must be a JSON object, got {text!r}")
    return args


def _run(a) -> None:
    args = _parse_args(a.scorer_args)
    if a.export:
        table = scores_table(a.data_dir, [(s, args) for s in a.scorer], a.subset)
        write_text_atomic(a.export, table.to_csv(index=False))
        log(STAGE, f"{len(table)} captions x {len(a.scorer)} scorers -> {a.export}")
    else:
        for s in a.scorer:
            score_captions(a.data_dir, s, a.overwrite, args, a.subset)


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--scorer", nargs="+", default=["length"], choices=sorted(SCORERS))
    p.add_argument("--scorer_args", default=None, help="the scorer's arguments as a JSON object")
    p.add_argument("--export", type=Path, default=None, help="write the scores of every --scorer as columns of a CSV")
    return run_cli(p, argv, _run)


if __name__ == "__main__":
    sys.exit(main())

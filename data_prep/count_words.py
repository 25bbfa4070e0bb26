"""Stage 2: count words (whitespace-delimited tokens) against the budget, per portion and source.

BabyLM caps language input at 100M words (strict-small: 10M); captions count. The report
`prepared/words/manifest.json` is what a run cites for its word budget.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import datasets

from babymm.files import DataError, atomic_dir
from data_prep import ingest as ingest_stage
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

STAGE = "words"
BABYLM_BUDGET = 100_000_000


def out_dir(data_dir: Path, subset: str | None = None) -> Path:
    return prepared_dir(data_dir, subset) / STAGE


def _count(ds: datasets.Dataset, column: str) -> Counter:
    if "num_words" in ds.column_names:  # ingest counted each line's words (babymm.text.count_words)
        sums = ds.data.table.select(["source", "num_words"]).group_by("source", use_threads=False).aggregate(
            [("num_words", "sum")])
        return Counter(dict(zip(sums.column("source").to_pylist(), sums.column("num_words_sum").to_pylist(),
                                strict=True)))
    counts: Counter = Counter()
    for batch in ds.iter(batch_size=10_000):
        for text, source in zip(batch[column], batch["source"], strict=True):
            counts[source] += len(text.split())
    return counts


def count_words(data_dir: Path, word_budget: int = BABYLM_BUDGET, overwrite: bool = False,
                subset: str | None = None) -> dict:
    data_dir = Path(data_dir)
    upstream = ingest_stage.require_ingested(data_dir, subset=subset)
    fp = fingerprint(STAGE, upstream["fingerprint"], word_budget)
    out = out_dir(data_dir, subset)
    if not overwrite and is_up_to_date(out, fp):
        log(STAGE, f"{out} is up to date")
        return read_manifest(out)
    text_ds = ingest_stage.load_text(data_dir, subset)
    text = _count(text_ds, "text") if text_ds is not None else Counter()
    captions: Counter = Counter()
    if upstream["captions"]:
        captions = _count(datasets.load_from_disk(str(ingest_stage.out_dir(data_dir, subset) / "captions")), "caption")
    total = sum(text.values()) + sum(captions.values())
    if total > word_budget:
        raise DataError(f"{data_dir}: {total:,} words exceed the budget of {word_budget:,} "
                        f"(text {sum(text.values()):,}, captions {sum(captions.values()):,}); "
                        "drop files or raise --word_budget")
    with atomic_dir(out) as tmp:
        manifest = write_manifest(
            tmp, STAGE, fp, budget=word_budget, total_words=total, budget_used=total / word_budget,
            text_words=sum(text.values()), caption_words=sum(captions.values()),
            text_words_by_source=dict(text), caption_words_by_source=dict(captions),
        )
    log(STAGE, f"{total:,} words ({sum(text.values()):,} text, {sum(captions.values()):,} captions) "
               f"= {100 * total / word_budget:.1f}% of the {word_budget:,}-word budget")
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--word_budget", type=int, default=BABYLM_BUDGET)
    return run_cli(p, argv, lambda a: count_words(a.data_dir, a.word_budget, a.overwrite, a.subset))


if __name__ == "__main__":
    sys.exit(main())

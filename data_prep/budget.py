"""Stage: subsample the ingested data to an exact word budget -> `prepared/subsets/NAME/ingest/`.

    python -m data_prep.budget --data_dir DATA --word_budget 10000000 --text_fraction 0.5 --seed 0

BabyLM counts words as whitespace tokens, captions included. The budget is split between the
text-only portion (`text_fraction`, 0.5 as the 2024/2025 tracks) and the captions. Each portion
is drawn by a seeded random order of whole units: runs of consecutive lines of one text file
(so a dialogue is not shredded into single utterances), and images with all their captions.
Units are taken in that order while they fit; the words left are then filled by whole lines
(text) or whole images (captions) further down the order, so a portion lands on its share
exactly whenever the data allows. A portion smaller than its share is taken whole and the
rest of the budget goes to the other portion (the report says so). Data with fewer words
than the budget is used whole, under the name `budget-Nw-all` (no draw, so no seed); data more
than 1% short of it is refused rather than trained on under a budget it does not have.

The output has the ingest stage's form (text and captions datasets, same columns, a manifest
with the same keys), so every later stage reads a subset exactly as it reads the whole data,
under `prepared/subsets/NAME/`. The manifest's `budget` entry is the budget report: words per
portion and source, lines, captions and images, requested against taken.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from babymm.files import DataError, atomic_dir
from data_prep import ingest as ingest_stage
from data_prep.stage import (
    fingerprint,
    is_up_to_date,
    log,
    read_manifest,
    run_cli,
    stage_parser,
    write_manifest,
)

STAGE = "budget"
TEXT_RUN_LINES = 32  # consecutive lines of one file drawn together
SHORTFALL_ALLOWED = 0.01  # data up to 1% under the budget is used whole


@dataclass(frozen=True)
class Budget:
    word_budget: int
    text_fraction: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.word_budget <= 0:
            raise DataError(f"--word_budget must be positive, got {self.word_budget}")
        if not 0.0 <= self.text_fraction <= 1.0:
            raise DataError(f"--text_fraction must be in [0, 1], got {self.text_fraction}")

    def name(self, sampled: bool) -> str:
        if not sampled:
            return f"budget-{self.word_budget}w-all"
        return f"budget-{self.word_budget}w-text{self.text_fraction:g}-seed{self.seed}"


def select(item_words: np.ndarray, unit_of: np.ndarray, share: int, seed: int, fill_items: bool) -> np.ndarray:
    """Which items to keep (bool mask) so their words sum to at most `share`, as close as whole
    items allow. Units (groups of items, `unit_of[i]`) are taken in a seeded random order while
    they fit; the words left are filled greedily by the items (`fill_items`, e.g. lines) or the
    whole units further down that order."""
    item_words = np.asarray(item_words, dtype=np.int64)
    n_units = int(unit_of.max()) + 1 if len(unit_of) else 0
    unit_words = np.bincount(unit_of, weights=item_words, minlength=n_units).astype(np.int64)
    perm = np.random.default_rng(seed).permutation(n_units)
    csum = np.cumsum(unit_words[perm])
    k = int(np.searchsorted(csum, share, side="right"))
    take_unit = np.zeros(n_units, dtype=bool)
    take_unit[perm[:k]] = True
    keep = take_unit[unit_of]
    left = share - (int(csum[k - 1]) if k else 0)
    if left <= 0 or k == n_units:
        return keep
    rest = perm[k:]
    if fill_items:  # the items of the remaining units, unit by unit in the drawn order
        rank = np.empty(n_units, dtype=np.int64)
        rank[rest] = np.arange(len(rest))
        candidates = np.flatnonzero(~take_unit[unit_of])
        candidates = candidates[np.argsort(rank[unit_of[candidates]], kind="stable")]
        words = item_words[candidates]
    else:
        candidates, words = rest, unit_words[rest]
    smallest = int(words.min())
    for c, w in zip(candidates.tolist(), words.tolist(), strict=True):
        if left < smallest:
            break
        if w <= left:
            left -= w
            if fill_items:
                keep[c] = True
            else:
                keep[unit_of == c] = True
    return keep


def text_units(sources: np.ndarray) -> np.ndarray:
    """Unit of each line: runs of TEXT_RUN_LINES consecutive lines that never cross a file."""
    n = len(sources)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    new_file = np.r_[True, sources[1:] != sources[:-1]]
    file_start = np.maximum.accumulate(np.where(new_file, np.arange(n), 0))
    starts = new_file | ((np.arange(n) - file_start) % TEXT_RUN_LINES == 0)
    return np.cumsum(starts) - 1


def _codes(ds: datasets.Dataset, column: str) -> np.ndarray:
    """A string column as integer codes (equal strings, equal codes), without Python strings."""
    col = ds.data.column(column).combine_chunks().dictionary_encode()
    return np.asarray(col.indices, dtype=np.int64)


def _int_column(ds: datasets.Dataset, column: str) -> np.ndarray:
    """An integer column as int64, straight from Arrow (`ds[column]` is a lazy column that
    np.asarray would read one formatted row at a time)."""
    return np.asarray(ds.data.column(column).to_numpy(), dtype=np.int64)


def _words_by(ds: datasets.Dataset, keep: np.ndarray, words: np.ndarray) -> dict[str, int]:
    col = ds.data.column("source").combine_chunks().dictionary_encode()
    codes = np.asarray(col.indices, dtype=np.int64)[keep]
    sums = np.bincount(codes, weights=words[keep], minlength=len(col.dictionary)).astype(np.int64)
    return {str(name): int(n) for name, n in zip(col.dictionary.to_pylist(), sums, strict=True) if n}


def out_dir(data_dir: Path, name: str) -> Path:
    return ingest_stage.out_dir(data_dir, name)


def make_budget(data_dir: Path, budget: Budget, overwrite: bool = False) -> str:
    """Subsample the ingested data of `data_dir` to `budget`; returns the subset's name."""
    data_dir = Path(data_dir)
    upstream = ingest_stage.require_ingested(data_dir)
    full = ingest_stage.out_dir(data_dir)
    text = ingest_stage.load_text(data_dir)
    captions = datasets.load_from_disk(str(full / "captions")) if upstream["captions"] else None
    text_words = _int_column(text, "num_words") if text is not None else np.zeros(0, np.int64)
    cap_words = _int_column(captions, "num_words") if captions is not None else np.zeros(0, np.int64)
    have = {"text": int(text_words.sum()), "captions": int(cap_words.sum())}
    total = have["text"] + have["captions"]
    sampled = total > budget.word_budget
    if total < budget.word_budget * (1 - SHORTFALL_ALLOWED):
        raise DataError(f"{data_dir}: holds {total:,} words (text {have['text']:,}, captions {have['captions']:,}), "
                        f"less than --word_budget {budget.word_budget:,}; lower the budget (at most {total:,}) "
                        "or add data")
    name = budget.name(sampled)
    fp = fingerprint(STAGE, upstream["fingerprint"], budget.word_budget,
                     *((budget.text_fraction, budget.seed) if sampled else ()))
    out = out_dir(data_dir, name)
    if not overwrite and is_up_to_date(out, fp):
        log(STAGE, f"{out} is up to date")
        return name
    want_text = round(budget.word_budget * budget.text_fraction)
    want = {"text": min(want_text, have["text"]), "captions": min(budget.word_budget - want_text, have["captions"])}
    spare = budget.word_budget - want["text"] - want["captions"]  # a portion too small for its share
    for portion in ("text", "captions"):
        extra = min(spare, have[portion] - want[portion])
        want[portion] += extra
        spare -= extra
    keep_text = (select(text_words, text_units(_codes(text, "source")), want["text"], budget.seed, fill_items=True)
                 if text is not None else np.zeros(0, dtype=bool))
    images = _codes(captions, "image_id") if captions is not None else np.zeros(0, dtype=np.int64)
    keep_caps = (select(cap_words, images, want["captions"], budget.seed + 1, fill_items=False)
                 if captions is not None else np.zeros(0, dtype=bool))
    report: dict[str, Any] = {
        "word_budget": budget.word_budget, "text_fraction": budget.text_fraction,
        "seed": budget.seed if sampled else None, "sampled": sampled,
        "requested_words": {"text": want_text, "captions": budget.word_budget - want_text},
        "data_words": have,
        "words": {"text": int(text_words[keep_text].sum()), "captions": int(cap_words[keep_caps].sum())},
        "text_lines": int(keep_text.sum()), "captions": int(keep_caps.sum()),
        "images": int(len(np.unique(images[keep_caps]))) if captions is not None else 0,
        "text_words_by_source": _words_by(text, keep_text, text_words) if text is not None else {},
        "caption_words_by_source": _words_by(captions, keep_caps, cap_words) if captions is not None else {},
    }
    report["words"]["total"] = report["words"]["text"] + report["words"]["captions"]
    manifest = {k: v for k, v in upstream.items() if k not in ("stage", "fingerprint", "created")}
    with atomic_dir(out) as tmp:
        if text is not None and keep_text.any():
            text.select(np.flatnonzero(keep_text)).save_to_disk(str(tmp / "text"))
            np.save(tmp / "text_lines.npy", np.flatnonzero(keep_text))  # rows of the whole data's text
        if captions is not None:
            captions.select(np.flatnonzero(keep_caps)).save_to_disk(str(tmp / "captions"))
            np.save(tmp / "caption_rows.npy", np.flatnonzero(keep_caps))
        write_manifest(tmp, ingest_stage.STAGE, fp, **{**manifest, "text_lines": report["text_lines"],
                                                        "captions": report["captions"], "subset": name,
                                                        "whole_data_fingerprint": upstream["fingerprint"],
                                                        "budget": report})
    for line in describe(report, name):
        log(STAGE, line)
    return name


def describe(report: dict[str, Any], name: str) -> list[str]:
    """The budget report as lines for the log."""
    w, req = report["words"], report["requested_words"]
    lines = [f"{name}: {w['total']:,} of {report['word_budget']:,} words "
             + ("(a seeded draw)" if report["sampled"] else "(all the data: it holds no more than the budget)")]
    for portion, lines_key in (("text", "text_lines"), ("captions", "captions")):
        what = f"{report[lines_key]:,} lines" if portion == "text" else \
            f"{report['captions']:,} captions of {report['images']:,} images"
        note = "" if not report["sampled"] or w[portion] == req[portion] else \
            f" (asked {req[portion]:,}{'; the data has ' + format(report['data_words'][portion], ',') if report['data_words'][portion] < req[portion] else ''})"
        lines.append(f"  {portion}: {w[portion]:,} words{note}, {what}")
        by = report["text_words_by_source" if portion == "text" else "caption_words_by_source"]
        lines += [f"    {src}: {n:,}" for src, n in sorted(by.items())]
    return lines


def read_report(data_dir: Path, name: str) -> dict[str, Any]:
    manifest = read_manifest(out_dir(data_dir, name))
    if manifest is None or "budget" not in manifest:
        raise DataError(f"{out_dir(data_dir, name)}: no budget report; run python -m data_prep.budget")
    return manifest["budget"]


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--word_budget", type=int, required=True, help="words in all, text and captions (10M: strict-small)")
    p.add_argument("--text_fraction", type=float, default=0.5, help="share of the budget for the text-only portion")
    p.add_argument("--seed", type=int, default=0, help="seed of the draw")
    return run_cli(p, argv, lambda a: print(make_budget(a.data_dir, Budget(a.word_budget, a.text_fraction, a.seed),
                                                        a.overwrite)))


if __name__ == "__main__":
    sys.exit(main())

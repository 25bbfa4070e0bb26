"""Stage: subsample the ingested data to an exact word budget -> `prepared/subsets/NAME/ingest/`.

    python -m data_prep.budget --data_dir DATA --word_budget 10000000 --text_fraction 0.5 --seed 0

BabyLM counts words as whitespace tokens, captions included. The budget is split between the
text-only portion (`text_fraction`, 0.5 as the 2024/2025 tracks) and the captions. Each portion
is drawn by a seeded random order of whole units: runs of consecutive lines of one text file
(so a dialogue is not shredded into single utterances), and images with all their captions.
Units are taken in that order while they fit; the words left are then filled by whole lines
(text) or whole images (captions) further down the order, and what that greedy pass leaves is
made up exactly, where it can be, by a subset-sum over a bounded pool (`select`): the last
REPAIR_ITEMS lines or images taken and the first REPAIR_ITEMS passed over. What is guaranteed:
a portion never passes its share; a portion of at most REPAIR_ITEMS lines (text) or images
(captions) and at most REPAIR_WORDS words lands on its share to the word whenever some choice
of whole lines (images) does, and otherwise on the closest such choice below it; a larger
portion lands exactly whenever that pool can make up the remainder (at BabyLM sizes, with lines
of a few words, practically always), and otherwise as close as the pool allows. Either way the
report records each portion's `shortfall` in words (0 when exact).

A portion smaller than its share is taken whole and the rest of the budget goes to the other
portion (the report says so: `target_words`, `text_fraction_taken`). Data with no more words
than the budget is used whole, under the name `budget-Nw-all` (no draw, so no seed), and only
when its own text share is within FRACTION_TOLERANCE of `text_fraction` (else it is refused,
naming the share it has: a fraction that was not taken is never reported); data more than 1%
short of the budget is refused rather than trained on under a budget it does not have.

The output has the ingest stage's form (text and captions datasets, same columns, a manifest
with the same keys), so every later stage reads a subset exactly as it reads the whole data,
under `prepared/subsets/NAME/`. The manifest's `budget` entry is the budget report: the
requested fraction (`text_fraction`) and the one taken (`text_fraction_taken`, text words over
all words taken), and words per portion and source, lines, captions and images, requested
(`requested_words`), aimed at (`target_words`) and taken (`words`), with `shortfall` per
portion (target - taken) and in all (budget - taken).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from babymm.files import DataError, atomic_dir, write_json_atomic
from data_prep import ingest as ingest_stage
from data_prep.stage import (
    MANIFEST,
    fingerprint,
    is_up_to_date,
    log,
    read_manifest,
    run_cli,
    stage_parser,
    write_manifest,
)

STAGE = "budget"
VERSION = 2  # 2: the exact fill (select's subset-sum repair); the requested fraction checked and reported
TEXT_RUN_LINES = 32  # consecutive lines of one file drawn together
SHORTFALL_ALLOWED = 0.01  # data up to 1% under the budget is used whole
FRACTION_TOLERANCE = 0.01  # data used whole: its text share may differ from --text_fraction by this much
# the exact fill's pool: the last REPAIR_ITEMS lines (images) taken and the first REPAIR_ITEMS
# passed over, solved for at most REPAIR_WORDS words; a few milliseconds whatever the data's size
REPAIR_ITEMS = 512
REPAIR_WORDS = 1 << 17


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
    """Which items to keep (bool mask) so their words sum to `share`, or as close below it as
    whole items allow. Units (groups of items, `unit_of[i]`) are taken in a seeded random order
    while they fit; the words left are filled greedily by the pieces further down that order:
    items (`fill_items`, e.g. lines) or whole units (e.g. images). A remainder that pass leaves
    is then made up by `_exact_fill` over the last REPAIR_ITEMS pieces taken and the first
    REPAIR_ITEMS passed over.

    Guaranteed: the kept words never pass `share`, and (not `fill_items`) a unit is kept whole
    or not at all. With at most REPAIR_ITEMS pieces and `share` at most REPAIR_WORDS, the pool
    holds every piece, so the result is exact whenever some set of pieces sums to `share`, and
    otherwise is the largest such sum below it. Beyond that, exact whenever the pool can make
    up the remainder; the caller reports any shortfall."""
    item_words = np.asarray(item_words, dtype=np.int64)
    unit_of = np.asarray(unit_of, dtype=np.int64)
    n_units = int(unit_of.max()) + 1 if len(unit_of) else 0
    unit_words = np.bincount(unit_of, weights=item_words, minlength=n_units).astype(np.int64)
    perm = np.random.default_rng(seed).permutation(n_units)
    csum = np.cumsum(unit_words[perm])
    k = int(np.searchsorted(csum, share, side="right"))
    take_unit = np.zeros(n_units, dtype=bool)
    take_unit[perm[:k]] = True
    left = share - (int(csum[k - 1]) if k else 0)
    if left <= 0 or k == n_units:
        return take_unit[unit_of]
    # the pieces in the drawn order: the taken units' first, then those passed over
    if fill_items:  # lines, unit by unit in the drawn order
        rank = np.empty(n_units, dtype=np.int64)
        rank[perm] = np.arange(n_units)
        order = np.argsort(rank[unit_of], kind="stable")
        n_taken = int(take_unit[unit_of].sum())
        piece_words = item_words[order]
    else:  # whole units
        order, n_taken, piece_words = perm, k, unit_words[perm]
    take = np.zeros(len(order), dtype=bool)
    take[:n_taken] = True
    rest = piece_words[n_taken:]
    smallest = int(rest.min())
    for i, w in enumerate(rest.tolist(), start=n_taken):  # the greedy fill
        if left < smallest:
            break
        if w <= left:
            left -= w
            take[i] = True
    if left > 0:
        _exact_fill(piece_words, take, left)
    if fill_items:
        keep = np.zeros(len(item_words), dtype=bool)
        keep[order[take]] = True
        return keep
    take_unit[:] = False
    take_unit[order[take]] = True
    return take_unit[unit_of]


def _exact_fill(words: np.ndarray, take: np.ndarray, left: int) -> None:
    """Make up the `left` words the greedy fill missed, in place on `take` (pieces in the drawn
    order, taken ones True): the last REPAIR_ITEMS pieces taken are released, and a subset of
    them and of the first REPAIR_ITEMS pieces passed over (those no longer than the target) is
    chosen whose words sum to the released words + `left`, or as close below as they come. The
    pieces taken earliest and the candidates first in the order are preferred, so the draw
    moves as little as it must. Changes nothing unless it gains words."""
    taken = np.flatnonzero(take)[-REPAIR_ITEMS:]
    # release no more than keeps the target within REPAIR_WORDS (the latest taken first)
    back = np.cumsum(words[taken][::-1])
    n_release = int(np.searchsorted(back, REPAIR_WORDS - left, side="right"))
    released = taken[len(taken) - n_release:]
    target = left + int(words[released].sum())
    if target > REPAIR_WORDS:  # not even the remainder alone: the greedy result stands
        return
    passed = np.flatnonzero(~take)
    passed = passed[words[passed] <= target][:REPAIR_ITEMS]
    pool = np.concatenate([released, passed])
    best, chosen = subset_sum(words[pool].tolist(), target)
    if best <= target - left:  # no gain on what is already taken
        return
    take[released] = False
    take[pool[chosen]] = True


def subset_sum(weights: list[int], target: int) -> tuple[int, np.ndarray]:
    """The largest sum <= `target` of a subset of `weights` (non-negative ints), and which
    (bool mask). Bitset dynamic programming, O(len(weights) * target / 64) machine words; among
    subsets with that sum it prefers the earlier weights (the last one is left out whenever the
    rest can reach the sum)."""
    mask = (1 << (target + 1)) - 1
    reach = [1]  # reach[i]: bit s set iff some subset of weights[:i] sums to s
    for w in weights:
        reach.append((reach[-1] | (reach[-1] << w)) & mask)
    best = reach[-1].bit_length() - 1
    chosen = np.zeros(len(weights), dtype=bool)
    s = best
    for i in range(len(weights) - 1, -1, -1):
        if not (reach[i] >> s) & 1:  # s cannot be made without weights[i]
            chosen[i] = True
            s -= weights[i]
    return best, chosen


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
    if not sampled:
        check_share(data_dir, budget, have)
    name = budget.name(sampled)
    # data used whole is the same data whatever the fraction asked (within the tolerance), so the
    # fraction is not part of its identity; its report is brought up to the request below
    fp = fingerprint(STAGE, VERSION, upstream["fingerprint"], budget.word_budget,
                     *((budget.text_fraction, budget.seed) if sampled else ()))
    out = out_dir(data_dir, name)
    if not overwrite and is_up_to_date(out, fp):
        manifest = read_manifest(out)
        if manifest["budget"]["text_fraction"] != budget.text_fraction:
            manifest["budget"]["text_fraction"] = budget.text_fraction
            write_json_atomic(out / MANIFEST, manifest)
            log(STAGE, f"{out} is up to date; its report now names --text_fraction {budget.text_fraction:g}")
        else:
            log(STAGE, f"{out} is up to date")
        return name
    want_text = round(budget.word_budget * budget.text_fraction)
    requested = {"text": want_text, "captions": budget.word_budget - want_text}
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
    words = {"text": int(text_words[keep_text].sum()), "captions": int(cap_words[keep_caps].sum())}
    words["total"] = words["text"] + words["captions"]
    report: dict[str, Any] = {
        "word_budget": budget.word_budget, "text_fraction": budget.text_fraction,
        "text_fraction_taken": round(words["text"] / words["total"], 6) if words["total"] else None,
        "seed": budget.seed if sampled else None, "sampled": sampled,
        "requested_words": requested, "data_words": have, "target_words": want, "words": words,
        "shortfall": {"text": want["text"] - words["text"], "captions": want["captions"] - words["captions"],
                      "total": budget.word_budget - words["total"]},
        "text_lines": int(keep_text.sum()), "captions": int(keep_caps.sum()),
        "images": int(len(np.unique(images[keep_caps]))) if captions is not None else 0,
        "text_words_by_source": _words_by(text, keep_text, text_words) if text is not None else {},
        "caption_words_by_source": _words_by(captions, keep_caps, cap_words) if captions is not None else {},
    }
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


def check_share(data_dir: Path, budget: Budget, have: dict[str, int]) -> None:
    """Data used whole (no more words than the budget) must have the text share asked for, within
    FRACTION_TOLERANCE: no draw can move it, and a fraction that was not taken is never reported."""
    total = have["text"] + have["captions"]
    share = have["text"] / total
    if abs(share - budget.text_fraction) <= FRACTION_TOLERANCE:
        return
    world = ", or name a new --data_dir, where the built-in world is generated at the --text_fraction asked" \
        if (Path(data_dir) / "world.json").exists() else ""
    raise DataError(f"{data_dir}: holds {total:,} words, no more than --word_budget {budget.word_budget:,}, so it "
                    f"would be used whole, and its text share is {share:.4g} ({have['text']:,} text, "
                    f"{have['captions']:,} caption words), not --text_fraction {budget.text_fraction:g}; pass "
                    f"--text_fraction {share:.4g} to use it whole, or a --word_budget under {total:,} to draw "
                    f"{budget.text_fraction:g} of it{world}")


def describe(report: dict[str, Any], name: str) -> list[str]:
    """The budget report as lines for the log."""
    w, req = report["words"], report["requested_words"]
    target, short = report.get("target_words", req), report.get("shortfall", {})
    lines = [f"{name}: {w['total']:,} of {report['word_budget']:,} words "
             + ("(a seeded draw)" if report["sampled"] else "(all the data: it holds no more than the budget)"),
             f"  text fraction: {report['text_fraction']:g} asked, {report.get('text_fraction_taken') or 0:.4g} taken"]
    for portion, lines_key in (("text", "text_lines"), ("captions", "captions")):
        what = f"{report[lines_key]:,} lines" if portion == "text" else \
            f"{report['captions']:,} captions of {report['images']:,} images"
        notes = []
        if w[portion] != req[portion]:
            notes.append(f"asked {req[portion]:,}")
        if report["data_words"][portion] < req[portion]:
            notes.append(f"the data has {report['data_words'][portion]:,}")
        if target[portion] != req[portion]:
            notes.append(f"aimed at {target[portion]:,}")
        if short.get(portion):
            notes.append(f"{short[portion]:,} short: no whole {'lines' if portion == 'text' else 'images'} "
                         "the exact fill could reach made up the rest")
        note = f" ({'; '.join(notes)})" if notes else ""
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

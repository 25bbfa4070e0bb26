"""Choice tasks' decision rules and their per-item records.

Every choice task (BLiMP and EWoK pairs, Winoground, VQA, zero-shot classification) scores
each option and picks the highest. babymm's strict rule (`choose`): a tie is never a hit, the
pick among tied options is the first one that is not the target. So an untrained model that
gives every option the same score scores 0, not 1, whatever position the target holds.

Winoground and VQA are also reported under the official BabyLM pipeline's rule (`first_best`:
ties go to the first option, which it always makes the correct one), the leaderboard's number;
`ranked_choice_records` gives both, so neither is ever reported instead of the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from eval.stats import accuracy_summary, choice_hits


def choose(scores: np.ndarray, target: np.ndarray | Sequence[int]) -> np.ndarray:
    """Chosen option per row of `scores` [N, C]: the target where it is a hit under
    `choice_hits` (strictly best), else the best other option, so ties go against the target."""
    scores = np.asarray(scores, dtype=np.float64)
    target = np.asarray(target, dtype=np.int64)
    hits = choice_hits(scores, target)
    others = scores.copy()
    others[np.arange(len(scores)), target] = -np.inf
    return np.where(hits, target, np.nan_to_num(others, nan=-np.inf).argmax(axis=1))


def choice_records(ids: Sequence[str], options: Sequence[Sequence[str]], scores: np.ndarray,
                   target: Sequence[int]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Hits [N] and one record per item: id, the chosen option (the BabyLM submission's
    `pred`), the target, whether it is a hit, and every option's score."""
    scores = np.asarray(scores, dtype=np.float64)
    target = np.asarray(target, dtype=np.int64)
    if scores.shape != (len(ids), max(len(o) for o in options)):
        raise ValueError(f"scores of shape {scores.shape} for {len(ids)} items")
    pick = choose(scores, target)
    hits = pick == target
    records = [{"id": i, "pred": opts[p], "target": opts[t], "hit": bool(h),
                "scores": [round(float(s), 5) for s in row]}
               for i, opts, p, t, h, row in zip(ids, options, pick, target, hits, scores, strict=True)]
    return hits, records


def choice_metrics(hits: np.ndarray, heldout: np.ndarray | None = None, suffix: str = "") -> dict[str, Any]:
    """Accuracy with its interval, and on the items using a held-out composition if any."""
    out = {f"{k}{suffix}": v for k, v in accuracy_summary(hits).items()}
    if heldout is not None and heldout.any():
        out.update({f"{k}_heldout_composition{suffix}": v
                    for k, v in accuracy_summary(hits[heldout]).items()})
    return out


def first_best(scores: np.ndarray) -> np.ndarray:
    """The official BabyLM pipeline's pick per row of `scores` [N, C]: `torch.max` over the
    options, which returns the first of tied maxima (and a NaN, as torch propagates it). The
    pipeline lists the correct option first, so there a tie is a hit: the leaderboard's rule."""
    return np.asarray(scores, dtype=np.float64).argmax(axis=1)


def ranked_choice_records(ids: Sequence[str], options: Sequence[Sequence[str]], scores: np.ndarray,
                          target: Sequence[int]) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Hits [N] under the official rule (`first_best`), hits [N] under babymm's strict rule
    (`choose`: a tie is a miss), and one record per item: the official pick as `pick` (its
    index) and `pred` (its text), so the records compare item by item with the official
    pipeline's `--save_predictions`; `hit`; the strict rule's `pred_strict` and `hit_strict`;
    the target and every option's score."""
    strict_hits, records = choice_records(ids, options, scores, target)
    pick = first_best(scores)
    hits = pick == np.asarray(target, dtype=np.int64)
    out = [{"id": r["id"], "pick": int(p), "pred": opts[p], "target": r["target"], "hit": bool(h),
            "pred_strict": r["pred"], "hit_strict": r["hit"], "scores": r["scores"]}
           for r, opts, p, h in zip(records, options, pick, hits, strict=True)]
    return hits, strict_hits, out

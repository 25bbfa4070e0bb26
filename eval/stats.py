"""Scoring rules and uncertainty for evaluation numbers.

Small test sets (a few hundred Winoground or VQA items, BLiMP paradigms of 1000 pairs) give
accuracies whose noise is comparable to the differences between runs, so every accuracy is
reported with its standard error and a confidence interval, and choice tasks use one tie rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike

Z95 = NormalDist().inv_cdf(0.975)  # 1.959963984540054


def choice_hits(scores: ArrayLike, target: ArrayLike) -> np.ndarray:
    """hits[i] is True only if choice target[i] scores strictly above every other choice of row i.

    A tie is not a hit: a model that gives every choice the same score (a constant or collapsed
    scorer) must score 0, not 1, and argmax would break ties toward index 0, which is the target
    in VQA. NaN scores are never hits. scores: [N, C]; target: [N] ints in [0, C).
    """
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(target)
    if s.ndim != 2 or t.shape != (len(s),):
        raise ValueError(f"scores must be [N, C] and target [N]; got {s.shape} and {t.shape}")
    if not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"target must be integer indices, got dtype {t.dtype}")
    if len(t) and (t.min() < 0 or t.max() >= s.shape[1]):
        raise ValueError(f"target indices must lie in [0, {s.shape[1]})")
    rows = np.arange(len(s))
    own = s[rows, t]
    others = s.copy()
    others[rows, t] = -np.inf
    return own > others.max(axis=1, initial=-np.inf)


def _wilson(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval: unlike p +- z*se it stays inside [0, 1] and is not empty at
    p = 0 or 1, where the binomial standard error is 0."""
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_summary(hits: ArrayLike) -> dict[str, float]:
    """Accuracy of a vector of 0/1 hits with its binomial standard error sqrt(p(1-p)/n) and a
    95% Wilson score interval. Keys: acc, n, stderr, ci95_low, ci95_high (NaN when n = 0)."""
    h = np.asarray(hits, dtype=bool).ravel()
    n = int(h.size)
    if n == 0:
        nan = float("nan")
        return {"acc": nan, "n": 0, "stderr": nan, "ci95_low": nan, "ci95_high": nan}
    k = int(h.sum())
    p = k / n
    low, high = _wilson(k, n)
    return {"acc": p, "n": n, "stderr": math.sqrt(p * (1 - p) / n),
            "ci95_low": low, "ci95_high": high}


def macro_accuracy(groups: Mapping[str, ArrayLike]) -> dict[str, float]:
    """Unweighted mean of per-group accuracies (how BLiMP is reported: every paradigm counts
    once, whatever its size). The groups are independent samples, so
    stderr = sqrt(sum_g se_g^2) / G with se_g the binomial standard error of group g; the 95%
    interval is the normal one, acc +- 1.96 stderr, clipped to [0, 1].
    Keys: acc, n_groups, n (items over all groups), stderr, ci95_low, ci95_high."""
    summaries = [accuracy_summary(h) for h in groups.values()]
    summaries = [s for s in summaries if s["n"] > 0]
    g = len(summaries)
    if g == 0:
        raise ValueError("macro_accuracy needs at least one non-empty group")
    acc = float(np.mean([s["acc"] for s in summaries]))
    se = math.sqrt(sum(s["stderr"] ** 2 for s in summaries)) / g
    return {"acc": acc, "n_groups": g, "n": sum(s["n"] for s in summaries), "stderr": se,
            "ci95_low": max(0.0, acc - Z95 * se), "ci95_high": min(1.0, acc + Z95 * se)}


def bootstrap_ci(values: ArrayLike, statistic: Callable[[np.ndarray], float] = np.mean,
                 iters: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of statistic(values): resample the values with
    replacement `iters` times (seeded, so reruns agree) and take the (1-level)/2 and
    (1+level)/2 quantiles of the resampled statistic. For statistics with no closed-form error."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    idx = np.random.default_rng(seed).integers(0, len(v), size=(iters, len(v)))
    stats = np.array([statistic(v[i]) for i in idx], dtype=np.float64)
    low, high = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def mean_spread(values: ArrayLike) -> dict[str, float]:
    """Across-seed summary: mean, sample std (ddof=1; NaN for one value), n, min, max."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if len(v) == 0:
        raise ValueError("mean_spread needs at least one value")
    std = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
    return {"mean": float(v.mean()), "std": std, "n": len(v),
            "min": float(v.min()), "max": float(v.max())}

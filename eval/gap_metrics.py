"""Contrastive-gap metrics and retrieval on paired embeddings (Fahim, Murphy, Fyshe 2024).

Inputs are image embeddings I [N, D] and text embeddings T [N, D] (numpy arrays or CPU
tensors), row j of each a matched pair. Every function L2-normalises its inputs first (the
metrics are defined on the sphere) and computes in float64, so values are comparable across
runs and small gaps are not noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupShuffleSplit

from eval.stats import bootstrap_ci, choice_hits

RECALL_AT = (1, 5, 10)


def _norm(x: ArrayLike | torch.Tensor) -> torch.Tensor:
    return F.normalize(torch.as_tensor(np.asarray(x), dtype=torch.float64), dim=-1)


def centroid_distance(I: ArrayLike, T: ArrayLike) -> float:
    """||mean(I) - mean(T)||: centroids are not re-normalised, so the range is 0..2."""
    return float((_norm(I).mean(0) - _norm(T).mean(0)).norm())


def _pair_splits(n: int, n_splits: int, test_fraction: float, seed: int):
    """(train, test) index arrays into the 2n stacked rows [I; T], split by pair: row j and
    row n + j (the same pair's image and text) always land on the same side."""
    groups = np.r_[np.arange(n), np.arange(n)]
    gss = GroupShuffleSplit(n_splits=n_splits, test_size=test_fraction, random_state=seed)
    return gss.split(np.zeros((2 * n, 1)), groups=groups)


def linear_separability(I: ArrayLike, T: ArrayLike, n_splits: int = 5,
                        test_fraction: float = 0.2, C: float = 1.0,
                        seed: int = 0) -> dict[str, float]:
    """Held-out accuracy of an L2-regularised logistic regression (inverse strength C, 1.0 by
    default) telling image (0) from text (1): 0.5 = modalities overlap, 1.0 = disjoint.

    Splits are by pair (sklearn GroupShuffleSplit, seeded): a pair's image and text are both in
    train or both in test, so each side has exactly as many images as texts (chance is 0.5)
    and the classifier cannot score by recognising the held-out partner of a training point.
    Repeated over n_splits seeded splits. Returns mean and std (ddof=1; 0 for one split) of the
    held-out accuracy across splits, and n_splits. The splits overlap, so std is a spread, not
    a standard error of the mean.
    """
    if len(I) != len(T):
        raise ValueError(f"I and T must be paired: {len(I)} vs {len(T)} rows")
    x = torch.cat([_norm(I), _norm(T)]).numpy()
    n = len(I)
    y = np.r_[np.zeros(n), np.ones(n)]
    accs = []
    for train, test in _pair_splits(n, n_splits, test_fraction, seed):
        clf = LogisticRegression(C=C, max_iter=5000).fit(x[train], y[train])
        accs.append(clf.score(x[test], y[test]))
    a = np.asarray(accs, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
            "n_splits": float(len(a))}


def matched_cosine(I: ArrayLike, T: ArrayLike) -> float:
    return float((_norm(I) * _norm(T)).sum(-1).mean())


def unmatched_cosine(I: ArrayLike, T: ArrayLike) -> float:
    sims = _norm(I) @ _norm(T).T
    off = ~torch.eye(len(sims), dtype=torch.bool)
    return float(sims[off].mean())


def _log_mean_exp(x: torch.Tensor) -> float:
    return float(torch.logsumexp(x, 0) - math.log(x.numel()))


def uniformity(X: ArrayLike, t: float = 2.0) -> float:
    """log mean_{j<k} exp(-t ||x_j - x_k||^2)."""
    return _log_mean_exp(-t * torch.pdist(_norm(X)).pow(2))


def cross_uniformity(I: ArrayLike, T: ArrayLike, t: float = 2.0) -> float:
    """log mean_{j!=k} exp(-t ||I_j - T_k||^2), over non-matching pairs."""
    d2 = torch.cdist(_norm(I), _norm(T)).pow(2)
    return _log_mean_exp(-t * d2[~torch.eye(len(d2), dtype=torch.bool)])


def alignment(I: ArrayLike, T: ArrayLike) -> float:
    """mean_j ||I_j - T_j||^2."""
    return float((_norm(I) - _norm(T)).pow(2).sum(-1).mean())


def _energy_fractions(X: ArrayLike) -> np.ndarray:
    """p_i = s_i^2 / sum_k s_k^2 for the singular values s of the normalised (uncentred)
    embedding matrix: the share of the total squared norm (= N) along each direction."""
    s2 = torch.linalg.svdvals(_norm(X)).pow(2).numpy()
    return s2 / s2.sum()


def rank(X: ArrayLike, min_fraction: float = 0.01) -> int:
    """Number of directions holding more than min_fraction of the embeddings' energy.

    A relative threshold: an absolute one on singular values grows with N (s_i^2 sums to N),
    so the same model would get a higher 'rank' on a bigger eval set."""
    return int((_energy_fractions(X) > min_fraction).sum())


def effective_rank(X: ArrayLike) -> float:
    """exp(entropy of the energy fractions) (Roy & Vetterli 2007): k for k equally used
    directions, between 1 and D, and no threshold to choose."""
    p = _energy_fractions(X)
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def pca_stats(X: ArrayLike) -> tuple[float, int]:
    """Fraction of variance on the first principal component, and components for 95%."""
    x = _norm(X)
    var = torch.linalg.svdvals(x - x.mean(0)).pow(2)
    frac = var / var.sum()
    return float(frac[0]), int((torch.cumsum(frac, 0) < 0.95).sum()) + 1


def _exact_sims(I: ArrayLike, T: ArrayLike) -> np.ndarray:
    """cos(I_i, T_k) [N, M] in float64, where identical input rows give bit-identical sims.

    A BLAS matmul may sum different output columns in different orders, so two equal text
    rows could differ in the last bit and a tie would turn into a win or a loss. Deduplicating
    the rows first and gathering the products back makes exact ties exact."""
    ui, inv_i = np.unique(np.asarray(I, dtype=np.float64), axis=0, return_inverse=True)
    ut, inv_t = np.unique(np.asarray(T, dtype=np.float64), axis=0, return_inverse=True)
    sims = (_norm(ui) @ _norm(ut).T).numpy()
    return sims[inv_i.reshape(-1)][:, inv_t.reshape(-1)]


def _tie_aware_ranks(sims: np.ndarray, truth: np.ndarray,
                     ks: Sequence[int] = RECALL_AT) -> tuple[np.ndarray, np.ndarray]:
    """Per query (row): P(hit at K) for each K [Q, len(ks)] and the expected rank [Q] (1-based)
    when entries with equal score are put in a uniformly random order.

    With s* the best score of a true entry, g false entries strictly above s*, m true and t
    false entries exactly at s*: the first true entry's position pos in the tied block of t+m
    has P(pos = p) = prod_{i<p-1} (t-i)/(t+m-i) * m/(t+m-p+1), P(hit@K) = P(pos <= K-g), and
    E[rank] = g + (t+m+1)/(m+1). Crediting ties to the truth instead gives a constant scorer
    R@1 = 1."""
    if not truth.any(axis=1).all():
        raise ValueError("every query needs at least one true entry")
    best = np.where(truth, sims, -np.inf).max(axis=1, keepdims=True)
    at_best = sims == best
    g = ((sims > best) & ~truth).sum(1)
    m = (at_best & truth).sum(1)
    t = (at_best & ~truth).sum(1)
    # cdf[:, p-1] = P(pos <= p), summed from the front so P(pos = 1) = m/(t+m) is exact
    cdf = np.zeros((len(sims), max(ks)))
    survive, total = np.ones(len(sims)), np.zeros(len(sims))
    for p in range(1, max(ks) + 1):
        left = np.clip(t + m - (p - 1), 1, None)  # entries not yet placed (>= m while t >= p-1)
        total = total + np.where(p - 1 <= t, survive * m / left, 0.0)
        survive = survive * np.clip(t - (p - 1), 0, None) / left
        cdf[:, p - 1] = total
    hits = np.empty((len(sims), len(ks)))
    for col, k in enumerate(ks):
        q = k - g  # positions of the tied block that fall inside the top K
        inside = cdf[np.arange(len(sims)), np.clip(q, 1, None) - 1]
        hits[:, col] = np.where(q <= 0, 0.0, np.where(q > t, 1.0, inside))
    return hits, g + (t + m + 1) / (m + 1)


def retrieval_metrics(I: ArrayLike, T: ArrayLike,
                      texts: Sequence[str] | None = None) -> dict[str, float]:
    """R@1/5/10, mean and median rank (1-based) for image->text and text->image, COCO style.

    Captions with identical text (when `texts` is given; else every row is its own caption)
    are one gallery entry, embedded as their first occurrence, whose ground truth is every
    image they describe. i2t: each of the N images against the unique captions, one correct
    entry each. t2i: each unique caption against the N images; hit at K if any of its images
    is in the top K; rank = that of its best-placed image. Ties (exactly equal float64
    similarities) count at their expected value under a random order of the tied entries, so a
    collapsed text encoder scores chance (i2t R@1 = 1/num_unique_captions), not 1. Without
    ties and repeats this is open_clip's definition.

    R@1 comes with a 95% percentile bootstrap interval over queries (`*_r1_ci95_low/high`).
    Also returns i2t_r1_chance = 1/num_unique_captions, t2i_r1_chance = mean over captions of
    (#images / N) (which equals 1/num_unique_captions, as the groups partition the images) and
    num_unique_captions.
    """
    n = len(I)
    if len(T) != n:
        raise ValueError(f"I and T must be paired: {n} vs {len(T)} rows")
    if texts is None:
        group = np.arange(n)
        first = np.arange(n)
    else:
        if len(texts) != n:
            raise ValueError(f"texts has {len(texts)} entries for {n} pairs")
        first_row: dict[str, int] = {}  # caption -> row of its first occurrence
        for j, caption in enumerate(texts):
            first_row.setdefault(str(caption), j)
        gid = {caption: c for c, caption in enumerate(first_row)}
        group = np.array([gid[str(caption)] for caption in texts])
        first = np.array(list(first_row.values()))
    n_caps = int(group.max()) + 1
    gallery = np.asarray(T, dtype=np.float64)[first]  # [G, D]
    sims = _exact_sims(I, gallery)  # [N, G], computed once and used in both directions
    owns = group[:, None] == np.arange(n_caps)[None, :]  # image i is described by caption c

    out: dict[str, float] = {}
    for name, s, truth in (("i2t", sims, owns), ("t2i", sims.T, owns.T)):
        hits, ranks = _tie_aware_ranks(s, truth)
        for col, k in enumerate(RECALL_AT):
            out[f"{name}_r{k}"] = float(hits[:, col].mean())
        # queries are the sampling unit: a percentile bootstrap over them
        out[f"{name}_r1_ci95_low"], out[f"{name}_r1_ci95_high"] = bootstrap_ci(hits[:, 0])
        out[f"{name}_mean_rank"] = float(ranks.mean())
        out[f"{name}_median_rank"] = float(np.median(ranks))
    out["i2t_r1_chance"] = 1.0 / n_caps
    out["t2i_r1_chance"] = float(owns.sum(0).mean() / n)
    out["num_unique_captions"] = float(n_caps)
    return out


def zero_shot_accuracy(image_emb: ArrayLike, class_text_emb: ArrayLike,
                       labels: ArrayLike) -> float:
    """Each image takes the class whose prompt embedding is nearest in cosine; a tie for the
    nearest is not a hit (eval.stats.choice_hits), so identical prompts score 0, not 1/C."""
    sims = _exact_sims(image_emb, class_text_emb)
    return float(choice_hits(sims, np.asarray(labels, dtype=np.int64)).mean())


def gap_summary(I: ArrayLike, T: ArrayLike, seed: int = 0, n_splits: int = 3) -> dict[str, float]:
    """The cheap gap metrics, for logging during training (no SVD, no retrieval); the
    separability's spread over splits as `linear_separability_std`."""
    sep = linear_separability(I, T, n_splits=n_splits, seed=seed)
    return {
        "centroid_distance": centroid_distance(I, T),
        "linear_separability": sep["mean"],
        "linear_separability_std": sep["std"],
        "matched_cosine": matched_cosine(I, T),
        "unmatched_cosine": unmatched_cosine(I, T),
        "uniformity_image": uniformity(I),
        "uniformity_text": uniformity(T),
        "uniformity_cross": cross_uniformity(I, T),
        "alignment": alignment(I, T),
    }


def gap_report(I: ArrayLike, T: ArrayLike, texts: Sequence[str] | None = None,
               seed: int = 0) -> dict[str, float]:
    """Every gap metric (separability over 5 splits) and retrieval (captions grouped by
    `texts`) as one flat dict of floats."""
    top1_i, k95_i = pca_stats(I)
    top1_t, k95_t = pca_stats(T)
    report = {
        **gap_summary(I, T, seed=seed, n_splits=5),
        "rank_image": rank(I), "rank_text": rank(T),
        "effective_rank_image": effective_rank(I), "effective_rank_text": effective_rank(T),
        "pca_top1_image": top1_i, "pca_top1_text": top1_t,
        "pca_95_components_image": k95_i, "pca_95_components_text": k95_t,
        **retrieval_metrics(I, T, texts),
    }
    return {k: float(v) for k, v in report.items()}

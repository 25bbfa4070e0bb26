"""Contrastive-gap metrics and retrieval on paired embeddings (Fahim, Murphy, Fyshe 2024).

Inputs are image embeddings I [N, D] and text embeddings T [N, D], row j of each a matched
pair. Every function L2-normalises its inputs first (the metrics are defined on the sphere)
and computes in float64, so values are comparable across runs and small gaps are not noise.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression


def _norm(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    return F.normalize(torch.as_tensor(np.asarray(x), dtype=torch.float64), dim=-1)


def centroid_distance(I, T) -> float:
    """||mean(I) - mean(T)||: centroids are not re-normalised, so the range is 0..2."""
    return float((_norm(I).mean(0) - _norm(T).mean(0)).norm())


def linear_separability(I, T, seed: int = 0) -> float:
    """Held-out accuracy of a logistic regression telling image (0) from text (1), trained on a
    seeded 80% of the 2N embeddings: 0.5 = modalities overlap, 1.0 = disjoint."""
    x = torch.cat([_norm(I), _norm(T)]).numpy()
    y = np.r_[np.zeros(len(I)), np.ones(len(T))]
    perm = np.random.default_rng(seed).permutation(len(x))
    cut = int(0.8 * len(x))
    clf = LogisticRegression(max_iter=2000).fit(x[perm[:cut]], y[perm[:cut]])
    return float(clf.score(x[perm[cut:]], y[perm[cut:]]))


def matched_cosine(I, T) -> float:
    return float((_norm(I) * _norm(T)).sum(-1).mean())


def unmatched_cosine(I, T) -> float:
    sims = _norm(I) @ _norm(T).T
    off = ~torch.eye(len(sims), dtype=torch.bool)
    return float(sims[off].mean())


def _log_mean_exp(x: torch.Tensor) -> float:
    return float(torch.logsumexp(x, 0) - math.log(x.numel()))


def uniformity(X, t: float = 2.0) -> float:
    """log mean_{j<k} exp(-t ||x_j - x_k||^2)."""
    return _log_mean_exp(-t * torch.pdist(_norm(X)).pow(2))


def cross_uniformity(I, T, t: float = 2.0) -> float:
    """log mean_{j!=k} exp(-t ||I_j - T_k||^2), over non-matching pairs."""
    d2 = torch.cdist(_norm(I), _norm(T)).pow(2)
    return _log_mean_exp(-t * d2[~torch.eye(len(d2), dtype=torch.bool)])


def alignment(I, T) -> float:
    """mean_j ||I_j - T_j||^2."""
    return float((_norm(I) - _norm(T)).pow(2).sum(-1).mean())


def rank(X, threshold: float = 1.0) -> int:
    """Number of singular values of the normalised embedding matrix above `threshold`."""
    return int((torch.linalg.svdvals(_norm(X)) > threshold).sum())


def pca_stats(X) -> tuple[float, int]:
    """Fraction of variance on the first principal component, and components for 95%."""
    x = _norm(X)
    var = torch.linalg.svdvals(x - x.mean(0)).pow(2)
    frac = var / var.sum()
    return float(frac[0]), int((torch.cumsum(frac, 0) < 0.95).sum()) + 1


def retrieval_metrics(I, T) -> dict[str, float]:
    """R@1/5/10, mean and median rank (1-based) for image->text and text->image, where the
    match of row j is column j (open_clip's definition)."""
    sims = _norm(I) @ _norm(T).T  # [N, N]
    out: dict[str, float] = {}
    for name, s in (("i2t", sims), ("t2i", sims.T)):
        truth = s.diagonal()[:, None]
        ranks = (s > truth).sum(1).double() + 1  # ties resolved in the item's favour
        out[f"{name}_mean_rank"] = float(ranks.mean())
        out[f"{name}_median_rank"] = float(ranks.median())
        for k in (1, 5, 10):
            out[f"{name}_r{k}"] = float((ranks <= k).double().mean())
    return out


def zero_shot_accuracy(image_emb, class_text_emb, labels) -> float:
    """Each image takes the class whose prompt embedding is nearest in cosine."""
    pred = (_norm(image_emb) @ _norm(class_text_emb).T).argmax(1)
    return float((pred == torch.as_tensor(np.asarray(labels))).double().mean())


def gap_report(I, T, seed: int = 0) -> dict[str, float]:
    top1_i, k95_i = pca_stats(I)
    top1_t, k95_t = pca_stats(T)
    return {
        "centroid_distance": centroid_distance(I, T),
        "linear_separability": linear_separability(I, T, seed),
        "matched_cosine": matched_cosine(I, T),
        "unmatched_cosine": unmatched_cosine(I, T),
        "uniformity_image": uniformity(I),
        "uniformity_text": uniformity(T),
        "uniformity_cross": cross_uniformity(I, T),
        "alignment": alignment(I, T),
        "rank_image": rank(I), "rank_text": rank(T),
        "pca_top1_image": top1_i, "pca_top1_text": top1_t,
        "pca_95_components_image": k95_i, "pca_95_components_text": k95_t,
        **retrieval_metrics(I, T),
    }

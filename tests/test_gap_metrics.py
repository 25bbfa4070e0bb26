"""Gap metrics and retrieval against naive loops, brute force and cases with known answers."""

import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupShuffleSplit

from eval import gap_metrics as gm
from eval.stats import bootstrap_ci


def _emb(n=12, d=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True), y / np.linalg.norm(y, axis=1, keepdims=True)


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_metrics_match_naive_loops():
    I, T = _emb()
    n = len(I)
    assert gm.centroid_distance(I, T) == pytest.approx(np.linalg.norm(I.mean(0) - T.mean(0)))
    assert gm.matched_cosine(I, T) == pytest.approx(np.mean([I[j] @ T[j] for j in range(n)]))
    assert gm.unmatched_cosine(I, T) == pytest.approx(
        np.mean([I[j] @ T[k] for j in range(n) for k in range(n) if j != k]))
    assert gm.alignment(I, T) == pytest.approx(np.mean([np.sum((I[j] - T[j]) ** 2) for j in range(n)]))
    u = math.log(np.mean([math.exp(-2 * np.sum((I[j] - I[k]) ** 2)) for j in range(n) for k in range(j + 1, n)]))
    assert gm.uniformity(I) == pytest.approx(u)
    xu = math.log(np.mean([math.exp(-2 * np.sum((I[j] - T[k]) ** 2)) for j in range(n) for k in range(n) if j != k]))
    assert gm.cross_uniformity(I, T) == pytest.approx(xu)


def test_inputs_are_normalised():
    I, T = _emb()
    assert gm.alignment(3 * I, 0.5 * T) == pytest.approx(gm.alignment(I, T))
    assert gm.retrieval_metrics(3 * I, 0.5 * T) == gm.retrieval_metrics(I, T)
    assert gm.effective_rank(5 * I) == pytest.approx(gm.effective_rank(I))


def test_identical_modalities_have_no_gap():
    I, _ = _emb(n=200, d=8)
    assert gm.centroid_distance(I, I) == pytest.approx(0.0, abs=1e-12)
    assert gm.alignment(I, I) == pytest.approx(0.0, abs=1e-12)
    assert gm.matched_cosine(I, I) == pytest.approx(1.0)


# ---------------------------------------------------------------- linear separability


def test_separability_identical_modalities_is_chance():
    # Both copies of a point are on the same side of the split and get the same prediction,
    # so exactly one of the two is right: 0.5 on every split, whatever the classifier learns.
    I, _ = _emb(n=200, d=8)
    sep = gm.linear_separability(I, I)
    assert sep["mean"] == pytest.approx(0.5, abs=1e-12)
    assert sep["std"] == pytest.approx(0.0, abs=1e-12)
    assert sep["n_splits"] == 5


def test_separability_two_samples_of_one_distribution():
    I, _ = _emb(n=200, d=8)
    J, _ = _emb(n=200, d=8, seed=5)
    assert gm.linear_separability(I, J)["mean"] == pytest.approx(0.5, abs=0.08)


def test_disjoint_clusters_are_separable():
    rng = np.random.default_rng(1)
    I = np.c_[np.ones(100), 0.05 * rng.normal(size=(100, 3))]
    T = np.c_[-np.ones(100), 0.05 * rng.normal(size=(100, 3))]
    assert gm.linear_separability(I, T) == {"mean": 1.0, "std": 0.0, "n_splits": 5.0}
    assert gm.centroid_distance(I, T) == pytest.approx(2.0, abs=0.01)


def test_separability_splits_keep_pairs_together():
    n = 50
    for train, test in gm._pair_splits(n, n_splits=4, test_fraction=0.2, seed=3):
        assert len(test) == 2 * 10  # 10 whole pairs
        assert sorted(test[test < n]) == sorted(test[test >= n] - n)
        assert sorted(train[train < n]) == sorted(train[train >= n] - n)
        assert set(train % n).isdisjoint(test % n)


def test_separability_matches_hand_loop():
    I, T = _emb(n=120, d=5, seed=2)
    T = T + 0.3  # a real but partial gap
    seed, n_splits, C = 7, 4, 0.5
    x = np.r_[_unit(I), _unit(T)]
    y = np.r_[np.zeros(len(I)), np.ones(len(T))]
    pairs = np.r_[np.arange(len(I)), np.arange(len(T))]
    accs = []
    for tr, te in GroupShuffleSplit(n_splits=n_splits, test_size=0.2, random_state=seed).split(
            x, y, groups=pairs):
        assert y[te].mean() == 0.5
        clf = LogisticRegression(C=C, max_iter=5000).fit(x[tr], y[tr])
        accs.append(np.mean(clf.predict(x[te]) == y[te]))
    sep = gm.linear_separability(I, T, n_splits=n_splits, C=C, seed=seed)
    assert sep["mean"] == pytest.approx(np.mean(accs), abs=1e-12)
    assert sep["std"] == pytest.approx(np.std(accs, ddof=1), abs=1e-12)
    assert 0.55 < sep["mean"] < 1.0  # the case is not degenerate


# ---------------------------------------------------------------- rank


def _anisotropic(n, seed):
    """6 strong directions and 26 weak ones in 32 dimensions."""
    rng = np.random.default_rng(seed)
    scale = np.r_[np.ones(6), 0.05 * np.ones(26)]
    return rng.normal(size=(n, 32)) * scale


def test_rank_does_not_depend_on_n():
    small, big = _anisotropic(200, 0), _anisotropic(2000, 1)
    assert gm.rank(small) == gm.rank(big) == 6
    assert gm.effective_rank(small) == pytest.approx(gm.effective_rank(big), rel=0.05)
    # the old absolute rule (singular values above 1) grows with N on the same distribution
    old = [int((np.linalg.svd(_unit(x), compute_uv=False) > 1.0).sum()) for x in (small, big)]
    assert old[1] > old[0] + 5


def test_rank_and_effective_rank_by_hand():
    x = np.eye(4)[[0, 1, 0, 1, 0, 1]]  # two directions, equal energy: p = (1/2, 1/2)
    assert gm.rank(x) == 2
    assert gm.effective_rank(x) == pytest.approx(2.0, abs=1e-12)
    y = 2 * np.eye(3)[[0, 0, 0, 1]]  # p = (3/4, 1/4)
    assert gm.rank(y) == 2 and gm.rank(y, min_fraction=0.3) == 1
    assert gm.effective_rank(y) == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))
    assert gm.effective_rank(np.eye(7)) == pytest.approx(7.0)


def test_pca_stats():
    x = np.eye(4)[[0, 1, 0, 1, 0, 1]]
    top1, k95 = gm.pca_stats(x)
    assert k95 == 1 and top1 == pytest.approx(1.0)


# ---------------------------------------------------------------- retrieval


def _old_rule(I, T):
    """The previous definition: ties credited to the true item."""
    sims = _unit(I) @ _unit(T).T
    return float(np.mean((sims > sims.diagonal()[:, None]).sum(1) + 1 <= 1))


def test_retrieval_known_cases():
    eye = np.eye(5)
    r = gm.retrieval_metrics(eye, eye)
    assert r["i2t_r1"] == r["t2i_r1"] == 1.0 and r["i2t_mean_rank"] == r["t2i_mean_rank"] == 1.0
    assert r["num_unique_captions"] == 5 and r["i2t_r1_chance"] == pytest.approx(0.2)
    # text j matches image (j+1) mod n best: every true match ranks second
    shifted = np.roll(eye, 1, axis=0)
    mixed = 0.6 * eye + 0.8 * shifted
    r = gm.retrieval_metrics(eye, mixed)
    assert r["i2t_r1"] == 0.0 and r["i2t_r5"] == 1.0 and r["i2t_median_rank"] == 2.0
    assert r["t2i_r1"] == 0.0 and r["t2i_mean_rank"] == 2.0


def test_retrieval_without_ties_is_open_clip():
    I, noise = _emb(n=40, d=8, seed=3)
    T = _unit(I + 1.5 * noise)  # related, so retrieval is neither at chance nor perfect
    sims = I @ T.T
    r = gm.retrieval_metrics(I, T)
    for name, s in (("i2t", sims), ("t2i", sims.T)):
        ranks = [1 + sum(s[q, k] > s[q, q] for k in range(len(s))) for q in range(len(s))]
        for k in (1, 5, 10):
            assert r[f"{name}_r{k}"] == pytest.approx(np.mean([rk <= k for rk in ranks]), abs=1e-12)
        assert r[f"{name}_mean_rank"] == pytest.approx(np.mean(ranks))
        assert r[f"{name}_median_rank"] == pytest.approx(np.median(ranks))
        # R@1's interval: a percentile bootstrap over the queries' hit indicators
        low, high = bootstrap_ci(np.array([rk <= 1 for rk in ranks], dtype=float))
        assert (r[f"{name}_r1_ci95_low"], r[f"{name}_r1_ci95_high"]) == pytest.approx((low, high))
        assert low < r[f"{name}_r1"] < high
    assert 0.2 < r["i2t_r1"] < r["i2t_r5"] < r["i2t_r10"] < 1  # not degenerate


@pytest.mark.parametrize("texts", [None, [f"c{j % 7}" for j in range(35)]])
def test_collapsed_text_encoder_scores_chance(texts):
    rng = np.random.default_rng(4)
    I = rng.normal(size=(35, 8))
    T = np.tile(rng.normal(size=8), (35, 1))  # every caption embeds to the same vector
    r = gm.retrieval_metrics(I, T, texts)
    g = 35 if texts is None else 7
    assert r["num_unique_captions"] == g
    assert r["i2t_r1"] == pytest.approx(1 / g, abs=1e-12) and r["i2t_r1_chance"] == pytest.approx(1 / g)
    assert r["t2i_r1"] == pytest.approx(1 / g, abs=1e-12) and r["t2i_r1_chance"] == pytest.approx(1 / g)
    assert r["i2t_r5"] == pytest.approx(min(1, 5 / g)) and r["i2t_mean_rank"] == pytest.approx((g + 1) / 2)
    assert _old_rule(I, T) == 1.0  # what ties credited to the truth gave


def test_repeated_captions_grouped_coco_style():
    # 24 captions, 8 pairs each; text embedding depends only on the caption and, like the
    # image embedding, only on which of 4 clusters the caption is in (a half-collapsed model).
    rng = np.random.default_rng(5)
    caption = rng.permutation(np.repeat(np.arange(24), 8))
    texts = [f"caption {c}" for c in caption]
    T = np.eye(8)[caption % 4]
    I = np.eye(8)[caption % 4]
    assert _old_rule(I, T) == 1.0  # every image found "its" text at rank 1
    r = gm.retrieval_metrics(I, T, texts)
    assert r["num_unique_captions"] == 24
    # i2t: each image's caption ties with the 5 others of its cluster (m=1, t=5, g=0)
    assert r["i2t_r1"] == pytest.approx(1 / 6)
    assert r["i2t_r5"] == pytest.approx(5 / 6)
    assert r["i2t_r10"] == pytest.approx(1.0)
    assert r["i2t_mean_rank"] == pytest.approx(3.5) and r["i2t_median_rank"] == pytest.approx(3.5)
    # t2i: 8 true images tied with 40 others of the cluster (m=8, t=40)
    assert r["t2i_r1"] == pytest.approx(8 / 48)
    assert r["t2i_r5"] == pytest.approx(1 - math.comb(40, 5) / math.comb(48, 5))
    assert r["t2i_r10"] == pytest.approx(1 - math.comb(40, 10) / math.comb(48, 10))
    assert r["t2i_mean_rank"] == pytest.approx(49 / 9)
    assert r["t2i_r1_chance"] == pytest.approx(1 / 24)
    # without grouping, the 8 copies of a caption are 8 gallery entries, one of them correct
    assert gm.retrieval_metrics(I, T)["i2t_r1"] == pytest.approx(1 / 48)


def test_repeated_caption_uses_first_occurrence():
    I = np.eye(3)
    T = np.eye(3)[[0, 1, 1]]  # row 2 has the text of row 0 but the embedding of row 1
    r = gm.retrieval_metrics(I, T, ["a", "b", "a"])
    assert r["num_unique_captions"] == 2
    # "a" is e0 and "b" is e1: images 0 and 1 find their caption; image 2 scores 0 against
    # both, a tie of its caption with the other (hit probability 1/2)
    assert r["i2t_r1"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert r["t2i_r1"] == 1.0  # "a" finds image 0, one of its two images; "b" finds image 1


def _brute_force(score, truth, ks):
    """Average over every order of the gallery, stable-sorted by score: ties in random order."""
    q, m = score.shape
    hits, ranks = np.zeros((q, len(ks))), np.zeros(q)
    perms = list(itertools.permutations(range(m)))
    for i in range(q):
        for perm in perms:
            order = sorted(perm, key=lambda k: -score[i][k])
            rank = 1 + next(p for p, k in enumerate(order) if truth[i][k])
            ranks[i] += rank / len(perms)
            hits[i] += np.array([rank <= k for k in ks]) / len(perms)
    return hits, ranks


def test_tie_rule_matches_brute_force_on_score_matrices():
    rng = np.random.default_rng(6)
    ks = (1, 2, 3, 4, 5, 6)
    for _ in range(5):
        score = rng.integers(0, 3, size=(5, 6)).astype(float)
        truth = rng.random((5, 6)) < 0.3
        truth[np.arange(5), rng.integers(0, 6, 5)] = True
        hits, ranks = gm._tie_aware_ranks(score, truth, ks)
        want_hits, want_ranks = _brute_force(score, truth, ks)
        np.testing.assert_allclose(hits, want_hits, atol=1e-12)
        np.testing.assert_allclose(ranks, want_ranks, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("grouped", [False, True])
def test_retrieval_matches_brute_force(seed, grouped):
    # N=6 rows drawn from a few discrete vectors, so equal rows tie exactly; cosines of
    # different vector pairs are distinct, so the tie pattern is known without the code.
    rng = np.random.default_rng(seed)
    pool_i, pool_t = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    a = rng.integers(0, 3, 6)  # image rows
    b = rng.integers(0, 3, 6)  # text rows (a caption's text decides its embedding)
    cos = _unit(pool_i) @ _unit(pool_t).T  # one value per (image vector, text vector)
    texts = [f"t{v}" for v in b] if grouped else None
    if grouped:
        caps = list(dict.fromkeys(b))  # unique captions in order of first occurrence
        owner = np.array([[b[j] == c for c in caps] for j in range(6)])  # [image, caption]
        score = np.array([[cos[a[j], c] for c in caps] for j in range(6)])
    else:
        owner = np.eye(6, dtype=bool)
        score = np.array([[cos[a[j], b[k]] for k in range(6)] for j in range(6)])
    r = gm.retrieval_metrics(pool_i[a], pool_t[b], texts)
    for name, s, truth in (("i2t", score, owner), ("t2i", score.T, owner.T)):
        hits, ranks = _brute_force(s, truth, (1, 5, 10))
        for col, k in enumerate((1, 5, 10)):
            assert r[f"{name}_r{k}"] == pytest.approx(hits[:, col].mean(), abs=1e-12)
        assert r[f"{name}_mean_rank"] == pytest.approx(ranks.mean(), abs=1e-12)
        assert r[f"{name}_median_rank"] == pytest.approx(np.median(ranks), abs=1e-12)
    assert r["num_unique_captions"] == owner.shape[1]
    assert r["t2i_r1_chance"] == pytest.approx(np.mean(owner.sum(0) / 6))


def test_retrieval_accepts_tensors():
    I, T = _emb(n=20, seed=8)
    assert gm.retrieval_metrics(torch.as_tensor(I, dtype=torch.float32), torch.as_tensor(T)) == \
        gm.retrieval_metrics(I.astype(np.float32), T)


# ---------------------------------------------------------------- zero-shot and reports


def test_zero_shot_accuracy():
    classes = np.eye(3)
    images = np.eye(3)[[0, 2, 1, 1]] + 0.1
    assert gm.zero_shot_accuracy(images, classes, [0, 2, 1, 0]) == 0.75
    # two classes with the same prompt: an image nearest to it is tied, and a tie is no hit
    tied = np.eye(3)[[0, 0, 1]]
    assert gm.zero_shot_accuracy(np.eye(3)[[0, 1]], tied, [0, 2]) == 0.5
    assert gm.zero_shot_accuracy(np.eye(3)[[0, 0]], np.ones((4, 3)), [0, 3]) == 0.0


REPORT_KEYS = {
    "centroid_distance", "linear_separability", "linear_separability_std", "matched_cosine",
    "unmatched_cosine", "uniformity_image", "uniformity_text", "uniformity_cross", "alignment",
    "rank_image", "rank_text", "effective_rank_image", "effective_rank_text",
    "pca_top1_image", "pca_top1_text", "pca_95_components_image", "pca_95_components_text",
    *(f"{d}_{m}" for d in ("i2t", "t2i")
      for m in ("r1", "r5", "r10", "mean_rank", "median_rank", "r1_chance", "r1_ci95_low", "r1_ci95_high")),
    "num_unique_captions",
}


def test_gap_report_is_its_parts():
    I, T = _emb(n=30)
    texts = [f"c{j % 10}" for j in range(30)]
    report = gm.gap_report(I, T, texts=texts, seed=1)
    assert set(report) == REPORT_KEYS
    assert all(type(v) is float for v in report.values())
    sep = gm.linear_separability(I, T, seed=1)
    assert report["linear_separability"] == sep["mean"]
    assert report["linear_separability_std"] == sep["std"]
    assert report["rank_text"] == gm.rank(T) and report["effective_rank_image"] == gm.effective_rank(I)
    assert report["uniformity_cross"] == gm.cross_uniformity(I, T)
    assert {k: report[k] for k in gm.retrieval_metrics(I, T, texts)} == gm.retrieval_metrics(I, T, texts)
    assert report["num_unique_captions"] == 10.0


def test_gap_summary_is_its_parts():
    I, T = _emb(n=30, seed=9)
    summary = gm.gap_summary(I, T, seed=2)
    assert summary == {
        "centroid_distance": gm.centroid_distance(I, T),
        "linear_separability": gm.linear_separability(I, T, n_splits=3, seed=2)["mean"],
        "linear_separability_std": gm.linear_separability(I, T, n_splits=3, seed=2)["std"],
        "matched_cosine": gm.matched_cosine(I, T),
        "unmatched_cosine": gm.unmatched_cosine(I, T),
        "uniformity_image": gm.uniformity(I),
        "uniformity_text": gm.uniformity(T),
        "uniformity_cross": gm.cross_uniformity(I, T),
        "alignment": gm.alignment(I, T),
    }

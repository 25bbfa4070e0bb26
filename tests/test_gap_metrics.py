"""Gap metrics and retrieval against naive loops and cases with known answers."""

import math

import numpy as np
import pytest
import torch

from eval import gap_metrics as gm


def _emb(n=12, d=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True), y / np.linalg.norm(y, axis=1, keepdims=True)


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


def test_identical_modalities_have_no_gap():
    I, _ = _emb(n=200, d=8)
    assert gm.centroid_distance(I, I) == pytest.approx(0.0, abs=1e-12)
    assert gm.alignment(I, I) == pytest.approx(0.0, abs=1e-12)
    assert gm.matched_cosine(I, I) == pytest.approx(1.0)
    # two samples of one distribution: nothing to separate
    J, _ = _emb(n=200, d=8, seed=5)
    assert gm.linear_separability(I, J) == pytest.approx(0.5, abs=0.12)


def test_disjoint_clusters_are_separable():
    rng = np.random.default_rng(1)
    I = np.c_[np.ones(100), 0.05 * rng.normal(size=(100, 3))]
    T = np.c_[-np.ones(100), 0.05 * rng.normal(size=(100, 3))]
    assert gm.linear_separability(I, T) == 1.0
    assert gm.centroid_distance(I, T) == pytest.approx(2.0, abs=0.01)


def test_retrieval_known_cases():
    eye = np.eye(5)
    r = gm.retrieval_metrics(eye, eye)
    assert r["i2t_r1"] == r["t2i_r1"] == 1.0 and r["i2t_mean_rank"] == 1.0
    # text j matches image (j+1) mod n best: every true match ranks second
    shifted = np.roll(eye, 1, axis=0)
    mixed = 0.6 * eye + 0.8 * shifted
    r = gm.retrieval_metrics(eye, mixed)
    assert r["i2t_r1"] == 0.0 and r["i2t_r5"] == 1.0 and r["i2t_median_rank"] == 2.0


def test_rank_pca_and_zero_shot():
    x = np.eye(4)[[0, 1, 0, 1, 0, 1]]  # only two directions used
    assert gm.rank(x) == 2
    top1, k95 = gm.pca_stats(x)
    assert k95 == 1 and top1 == pytest.approx(1.0)
    classes = np.eye(3)
    images = np.eye(3)[[0, 2, 1, 1]] + 0.1
    assert gm.zero_shot_accuracy(images, classes, [0, 2, 1, 0]) == 0.75
    report = gm.gap_report(*_emb(n=30))
    assert {"centroid_distance", "linear_separability", "i2t_r1", "uniformity_cross"} <= set(report)
    assert all(isinstance(v, float | int) and not math.isnan(v) for v in report.values())
    assert torch.is_tensor(gm._norm(x))

"""Tie rule and uncertainty estimates against hand computations and scipy."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from eval import stats

Z = 1.959963984540054  # the 0.975 quantile of the standard normal


def test_choice_hits_strict():
    scores = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [2.0, 3.0]])
    assert stats.choice_hits(scores, np.array([0, 0, 0, 1])).tolist() == [True, False, False, True]


def test_choice_hits_vqa_tie_is_not_a_hit():
    # 8-way with the target at index 0: argmax would break every tie in the target's favour
    scores = np.zeros((3, 8))
    scores[1, 0] = 1.0
    scores[2, [0, 5]] = 1.0
    target = np.zeros(3, dtype=int)
    assert stats.choice_hits(scores, target).tolist() == [False, True, False]
    assert (scores.argmax(1) == 0).tolist() == [True, True, True]  # the rule this replaces


def test_choice_hits_nan_and_validation():
    assert stats.choice_hits(np.array([[np.nan, 0.0], [1.0, np.nan]]), np.array([0, 0])).tolist() == [False, False]
    with pytest.raises(ValueError):
        stats.choice_hits(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError):
        stats.choice_hits(np.zeros((2, 3)), np.array([0]))
    with pytest.raises(ValueError):
        stats.choice_hits(np.zeros((2, 3)), np.array([0.0, 1.0]))


def _wilson_by_hand(k, n):
    p = k / n
    centre = (p + Z**2 / (2 * n)) / (1 + Z**2 / n)
    half = Z / (1 + Z**2 / n) * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2))
    return centre - half, centre + half


def test_accuracy_summary_seven_of_ten():
    s = stats.accuracy_summary([1] * 7 + [0] * 3)
    assert s["acc"] == pytest.approx(0.7) and s["n"] == 10
    assert s["stderr"] == pytest.approx(math.sqrt(0.7 * 0.3 / 10))
    low, high = _wilson_by_hand(7, 10)
    assert (s["ci95_low"], s["ci95_high"]) == pytest.approx((low, high))
    assert (low, high) == pytest.approx((0.3968, 0.8922), abs=1e-4)  # published table value
    ci = sps.binomtest(7, 10).proportion_ci(confidence_level=0.95, method="wilson")
    assert (s["ci95_low"], s["ci95_high"]) == pytest.approx((ci.low, ci.high), abs=1e-9)


@pytest.mark.parametrize("k,n", [(0, 10), (10, 10), (1, 3), (431, 1000)])
def test_accuracy_summary_against_scipy(k, n):
    s = stats.accuracy_summary(np.arange(n) < k)
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert (s["ci95_low"], s["ci95_high"]) == pytest.approx((ci.low, ci.high), abs=1e-9)
    if k == 0:  # all wrong: standard error 0, but the interval is not empty
        assert s["stderr"] == 0.0 and s["ci95_high"] == pytest.approx(Z**2 / (n + Z**2))


def test_accuracy_summary_empty():
    s = stats.accuracy_summary([])
    assert s["n"] == 0 and math.isnan(s["acc"]) and math.isnan(s["ci95_low"])


def test_macro_accuracy_by_hand():
    groups = {"a": [1, 1, 1, 0], "b": [1, 0]}
    m = stats.macro_accuracy(groups)
    assert m["acc"] == pytest.approx((0.75 + 0.5) / 2)  # the micro mean would be 4/6
    se = math.sqrt(0.75 * 0.25 / 4 + 0.5 * 0.5 / 2) / 2
    assert m["stderr"] == pytest.approx(se)
    assert m["ci95_low"] == pytest.approx(0.625 - Z * se)
    assert m["ci95_high"] == pytest.approx(min(1.0, 0.625 + Z * se))
    assert m["n_groups"] == 2 and m["n"] == 6


def test_macro_accuracy_clips_and_rejects_empty():
    m = stats.macro_accuracy({"a": [1] * 5 + [0], "b": [1] * 6})
    assert m["ci95_high"] == 1.0 and m["ci95_low"] == pytest.approx(
        (5 / 6 + 1) / 2 - Z * math.sqrt(5 / 6 * 1 / 6 / 6) / 2)
    with pytest.raises(ValueError):
        stats.macro_accuracy({})


def test_bootstrap_ci_known_cases():
    assert stats.bootstrap_ci([3.0] * 20) == (3.0, 3.0)
    # two values: the resampled mean is 0, 1/2 or 1 with probability 1/4, 1/2, 1/4
    assert stats.bootstrap_ci([0.0, 1.0], iters=2000) == (0.0, 1.0)
    assert stats.bootstrap_ci([0.0, 1.0], iters=2000, level=0.4) == (0.5, 0.5)
    assert stats.bootstrap_ci([1.0, 5.0, 2.0], seed=3) == stats.bootstrap_ci([1.0, 5.0, 2.0], seed=3)


def test_bootstrap_ci_against_scipy_and_normal_theory():
    x = np.random.default_rng(0).normal(10.0, 2.0, size=400)
    low, high = stats.bootstrap_ci(x, iters=4000)
    ref = sps.bootstrap((x,), np.mean, n_resamples=4000, method="percentile", random_state=1)
    assert low == pytest.approx(ref.confidence_interval.low, abs=0.03)
    assert high == pytest.approx(ref.confidence_interval.high, abs=0.03)
    se = x.std(ddof=1) / math.sqrt(len(x))
    assert (low, high) == pytest.approx((x.mean() - Z * se, x.mean() + Z * se), abs=0.04)
    med = stats.bootstrap_ci(x, statistic=np.median, iters=500)
    assert med[0] < np.median(x) < med[1]


def test_mean_spread():
    s = stats.mean_spread([1.0, 2.0, 3.0, 4.0])
    assert s == {"mean": 2.5, "std": pytest.approx(math.sqrt(5 / 3)), "n": 4, "min": 1.0, "max": 4.0}
    one = stats.mean_spread([0.7])
    assert one["mean"] == 0.7 and math.isnan(one["std"]) and one["n"] == 1

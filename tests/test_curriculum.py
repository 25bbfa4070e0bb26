"""Pacing functions, difficulty ordering, the step-indexed sampler, and spec resolution."""

import math

import numpy as np
import pytest

from babymm.curriculum import (
    GROWING,
    PacingSpec,
    StepBatchSampler,
    available_curricula,
    load_curriculum,
    order_by_scores,
    pacing_function,
)


@pytest.mark.parametrize("fn", GROWING)
def test_pacing_starts_at_start_fraction_and_reaches_one(fn):
    g = pacing_function(PacingSpec(function=fn, start_fraction=0.2, full_at=0.5))
    assert g(0.0) == pytest.approx(0.2)
    assert g(0.5) == pytest.approx(1.0)
    assert g(0.9) == 1.0
    values = [g(x / 100) for x in range(101)]
    assert all(b >= a - 1e-12 for a, b in zip(values, values[1:], strict=False))


def test_pacing_hand_values():
    s, full = 0.2, 0.5
    x = 0.25 / full  # halfway to full
    assert pacing_function(PacingSpec("linear", s, full))(0.25) == pytest.approx(0.2 + 0.8 * 0.5)
    assert pacing_function(PacingSpec("quadratic", s, full))(0.25) == pytest.approx(0.2 + 0.8 * 0.25)
    assert pacing_function(PacingSpec("root", s, full))(0.25) == pytest.approx(0.2 + 0.8 * math.sqrt(x))
    assert pacing_function(PacingSpec("exponential", s, full))(0.25) == pytest.approx(0.2 ** 0.5)
    assert pacing_function(PacingSpec("log", s, full))(0.25) == pytest.approx(0.2 + 0.8 * math.log2(1.5))


def test_step_pacing_buckets():
    g = pacing_function(PacingSpec(function="step", buckets=4, full_at=1.0))
    assert [g(p) for p in (0.0, 0.24, 0.25, 0.5, 0.74, 0.75, 1.0)] == [0.25, 0.25, 0.5, 0.75, 0.75, 1.0, 1.0]
    assert pacing_function(PacingSpec("none"))(0.0) == 1.0


def test_bad_pacing_spec_rejected():
    with pytest.raises(ValueError, match="pacing function"):
        PacingSpec(function="cubic")
    with pytest.raises(ValueError, match="start_fraction"):
        PacingSpec(function="linear", start_fraction=0.0)


def test_order_by_scores():
    scores = np.array([3.0, 1.0, 2.0, 1.0, 5.0])
    asc = order_by_scores(scores, "ascending", seed=0)
    assert list(scores[asc]) == [1.0, 1.0, 2.0, 3.0, 5.0]
    desc = order_by_scores(scores, "descending", seed=0)
    assert list(scores[desc]) == [5.0, 3.0, 2.0, 1.0, 1.0]
    rnd = order_by_scores(scores, "random", seed=0)
    assert sorted(rnd) == list(range(5))
    assert list(order_by_scores(scores, "ascending", seed=0)) == list(asc)  # deterministic


def test_sampler_draws_only_from_available_prefix():
    order = np.arange(1000)[::-1]  # dataset index 999 is the easiest
    g = pacing_function(PacingSpec("linear", start_fraction=0.1, full_at=0.5))
    s = StepBatchSampler(order, g, num_steps=100, batch_size=16, seed=0)
    batches = list(s)
    assert len(batches) == 100 == len(s)
    for step, batch in enumerate(batches):
        allowed = set(order[: s.available(step)].tolist())
        assert set(batch) <= allowed and len(set(batch)) == 16
    assert s.available(0) == 100 and s.available(50) == 1000
    # early batches are easy (high dataset index); late batches reach the hard end
    assert min(batches[0]) >= 900 and min(min(b) for b in batches[50:]) < 500


def test_sampler_is_rank_consistent_and_resumable():
    order = np.random.default_rng(0).permutation(500)
    g = pacing_function(PacingSpec("root", 0.3, 0.8))
    single = list(StepBatchSampler(order, g, 20, batch_size=8, seed=3))
    ranks = [list(StepBatchSampler(order, g, 20, batch_size=4, seed=3, rank=r, world_size=2)) for r in (0, 1)]
    # the two ranks split exactly the single-process global batch
    assert [a + b for a, b in zip(ranks[0], ranks[1], strict=True)] == single
    resumed = list(StepBatchSampler(order, g, 20, batch_size=8, seed=3, start_step=12))
    assert resumed == single[12:]


def test_curriculum_specs_resolve_by_name():
    names = available_curricula()
    assert {"length", "random"} <= set(names)
    length = load_curriculum("length")
    assert length.scorer == "length" and length.order == "ascending"
    assert load_curriculum("random").pacing.function == "none"
    with pytest.raises(FileNotFoundError, match="unknown curriculum 'nope'.*available"):
        load_curriculum("nope")

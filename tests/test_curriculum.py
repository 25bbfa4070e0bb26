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


def test_omitted_start_fraction_is_refused_not_no_curriculum(tmp_path):
    spec = tmp_path / "c.yaml"
    spec.write_text("scorer: length\norder: ascending\npacing:\n  function: root\n  full_at: 0.6\n")
    with pytest.raises(ValueError, match="needs start_fraction"):
        load_curriculum(str(spec))
    with pytest.raises(ValueError, match="does not use start_fraction"):
        PacingSpec(function="step", start_fraction=0.5)


def test_last_step_reaches_the_hardest_items():
    """full_at 1.0 opens the last items only at progress 1.0, which step T-1 never reaches."""
    order = np.arange(1000)
    g = pacing_function(PacingSpec("root", start_fraction=0.2, full_at=1.0))
    s = StepBatchSampler(order, g, num_steps=10, batch_size=8, seed=0)
    assert s.available(8) == math.ceil((0.2 + 0.8 * math.sqrt(0.8)) * 1000) < 1000
    assert s.available(9) == 1000


def test_stage_fractions_and_bounds_by_hand():
    from babymm.curriculum import stage_bounds, stage_fractions

    # noun counts of 8 captions, easiest first; percentiles 25/50/75 of them are 1, 2, 3.25
    scores = np.array([0, 1, 1, 2, 2, 3, 4, 5], dtype=float)
    fractions = stage_fractions(scores, [25, 50, 75])
    assert fractions == [1 / 8, 3 / 8, 6 / 8, 1.0]  # < 1, < 2, < 3.25, all
    bounds = stage_bounds(fractions)  # each stage lasts in proportion to its pool: 1, 3, 6, 8 of 18
    assert bounds == pytest.approx([1 / 18, 4 / 18, 10 / 18, 1.0])
    g = pacing_function(PacingSpec("stages", percentiles=[25, 50, 75]), fractions)
    assert [g(x) for x in (0.0, 0.05, 0.06, 0.3, 0.56, 0.99)] == [1 / 8, 1 / 8, 3 / 8, 6 / 8, 1.0, 1.0]
    with pytest.raises(ValueError, match="needs the stage fractions"):
        pacing_function(PacingSpec("stages", percentiles=[25, 50, 75]))


def test_epochs_per_stage_sets_stage_two(tmp_path):
    from babymm import train
    from babymm.config import parse_config

    # pools of 100, 300, 600 and 800 captions at batch 50, 2 epochs each: 2 * 1800 / 50 = 72 steps
    assert train.epoch_steps({"stage_sizes": [100, 300, 600, 800]}, 2, 50) == 72
    spec = load_curriculum("nouns_stages")
    assert spec.pacing.function == "stages" and spec.pacing.epochs_per_stage == 2
    assert spec.pacing.percentiles == [25, 50, 75]
    cfg = parse_config(["--curriculum", "nouns_stages"])
    train.stage2_length(cfg, spec)
    assert cfg.train.multimodal_steps is None  # resolved once the data is known
    cfg = parse_config(["--curriculum", "nouns_stages", "--multimodal_steps", "10"])
    with pytest.raises(ValueError, match="--multimodal_steps would be ignored"):
        train.stage2_length(cfg, spec)
    cfg = parse_config([])
    train.stage2_length(cfg, load_curriculum("length"))
    assert cfg.train.multimodal_steps == 1000


def test_built_curriculum_is_seeded_by_the_run_and_plotted(tiny_world, tmp_path):
    import json
    import shutil

    from data_prep import build_curriculum, ingest

    root = tmp_path / "world"
    shutil.copytree(tiny_world, root, ignore=shutil.ignore_patterns("prepared"))
    ingest.ingest(root)
    a = build_curriculum.build_curriculum(root, "random", seed=0)
    b = build_curriculum.build_curriculum(root, "random", seed=1)
    assert a != b and a.name == "random-seed0" and b.name == "random-seed1"
    assert not np.array_equal(np.load(a / "order.npy"), np.load(b / "order.npy"))
    assert json.loads((b / "manifest.json").read_text())["seed"] == 1
    png = (a / "curriculum.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_a_staged_curriculum_sets_stage_two_by_its_epochs(tiny_world, tmp_path):
    """stages pacing with epochs_per_stage: the run's stage 2 is that many epochs of every pool,
    recorded as steps."""
    import json
    import shutil

    from babymm import train

    data = tmp_path / "world"
    shutil.copytree(tiny_world, data, ignore=shutil.ignore_patterns("prepared"))
    spec = tmp_path / "length_stages.yaml"
    spec.write_text("scorer: length\norder: ascending\npacing:\n  function: stages\n"
                    "  percentiles: [25, 50, 75]\n  epochs_per_stage: 0.25\n")
    out = tmp_path / "run"
    rc = train.main(["--data_dir", str(data), "--curriculum", str(spec), "--output_dir", str(out),
                     "--preset", "tiny", "--text_pretrain_steps", "0", "--batch_size", "64",
                     "--text_batch_size", "4", "--eval_steps", "0", "--run_eval", "false",
                     "--word_milestones", "none", "--checkpointing_steps", "0", "--logging_steps", "1"])
    assert rc == 0
    manifest = json.loads((out / "curriculum_manifest.json").read_text())
    scores = np.load(data / "prepared" / "scores" / "length" / "scores.npy")
    cuts = np.percentile(scores, [25, 50, 75])  # the pools by hand: captions shorter than each cut, then all
    pools = [int((scores < c).sum()) for c in cuts] + [len(scores)]
    assert manifest["stage_sizes"] == pools
    steps = json.loads((out / "run_config.json").read_text())["train"]["multimodal_steps"]
    assert steps == math.ceil(0.25 * sum(pools) / 64)
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in logged if "step" in r) == steps

"""benchmarks/train_throughput.py: loss conditions (views included) and the median of repeats."""

import json

from tests.conftest import load_script


def test_median_of_repeats_by_hand():
    bench = load_script("benchmarks/train_throughput.py", "train_throughput_bench")
    base = {"type": "coca", "preset": "tiny", "precision": "fp32", "vision": "conv"}
    rows = [{**base, "loss": "cua", "step_ms": ms} for ms in (130.0, 110.0, 190.0)]
    rows += [{**base, "loss": "clip", "step_ms": ms} for ms in (100.0, 120.0)]
    out = {r["loss"]: r for r in bench.median_rows(rows)}
    assert out["cua"]["step_ms"] == 130.0 and out["cua"]["step_ms_range"] == "110.0-190.0"
    assert out["cua"]["repeats"] == 3
    assert out["clip"]["step_ms"] == 100.0  # of two, the lower middle


def test_a_loss_with_views_is_timed(tmp_path, capsys):
    bench = load_script("benchmarks/train_throughput.py", "train_throughput_bench")
    out = tmp_path / "cost.md"
    assert bench.main(["--types", "coca", "--presets", "tiny", "--losses", "declip", "cua", "--steps", "1",
                       "--warmup", "0", "--batch", "8", "--text_batch", "2", "--repeats", "2",
                       "--out", str(out)]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())
    assert [r["loss"] for r in rows] == ["declip", "cua"] and all(r["repeats"] == 2 for r in rows)
    # declip's caption views add a decoder pass: more tokens per step than cua's
    per_step = {r["loss"]: r["tokens_per_s"] / r["steps_per_s"] for r in rows}
    assert per_step["declip"] > per_step["cua"]

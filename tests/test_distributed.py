"""Two gloo processes under torchrun train exactly what one process trains on the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY_MODEL, TINY_TRAIN

TRAIN = Path(__file__).resolve().parents[1] / "babymm" / "train.py"


def _metrics(run: Path, kind: str = "train/stage") -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if any(k.startswith(kind) for k in r)]


def test_torchrun_two_processes_match_one(tiny_run, tiny_world, tmp_path):
    args = ["--data_dir", str(tiny_world), "--curriculum", "length", *TINY_MODEL, *TINY_TRAIN, "--run_eval", "false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = tmp_path / "ddp"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(TRAIN),
                           "--output_dir", str(ddp), *args], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    single, double = _metrics(tiny_run), _metrics(ddp)
    assert [m["step"] for m in double] == [m["step"] for m in single]  # logged once, not per rank
    for a, b in zip(single, double, strict=True):
        assert b["train/text_tokens_seen"] == a["train/text_tokens_seen"]  # same global batches
        # text blocks have equal lengths, so stage 1 is the same computation split in two
        if a["train/stage"] == "text":
            assert b["train/text_loss"] == pytest.approx(a["train/text_loss"], abs=1e-4)
        else:  # per-rank token means of unequal captions differ from the global mean a little
            assert b["train/clip_loss"] == pytest.approx(a["train/clip_loss"], abs=1e-3)
            assert b["train/caption_loss"] == pytest.approx(a["train/caption_loss"], abs=5e-3)
    # the gap probe runs once (main process), at the same steps, on the same stage-1 weights first
    gap1, gap2 = _metrics(tiny_run, "eval/gap/"), _metrics(ddp, "eval/gap/")
    assert [m["step"] for m in gap2] == [m["step"] for m in gap1] and len(gap1) >= 2
    assert gap2[0]["eval/gap/centroid_distance"] == pytest.approx(gap1[0]["eval/gap/centroid_distance"], abs=1e-3)
    assert (ddp / "model.safetensors").exists()


@pytest.mark.parametrize("model_type", ["flamingo", "coca", "text"])
def test_torchrun_trains_every_model_type(model_type, tiny_world, tmp_path):
    """DDP fails on a parameter a forward leaves unused: every type must use all of its own."""
    run = tmp_path / model_type
    train = ["--text_pretrain_steps", "2", "--multimodal_steps", "4", "--batch_size", "8", "--text_batch_size", "4",
             "--logging_steps", "2", "--warmup_steps", "1", "--eval_steps", "0"]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(TRAIN),
                           "--data_dir", str(tiny_world), "--output_dir", str(run), "--model_type", model_type,
                           *TINY_MODEL, *train, "--run_eval", "false"],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stage2 = [m for m in _metrics(run) if m["train/stage"] == "multimodal"]
    assert [m["step"] for m in stage2] == [4, 6]  # logged once, after the 2 text steps
    assert all(m["train/caption_loss"] > 0 for m in stage2)
    assert ("train/clip_loss" in stage2[0]) == (model_type != "text")

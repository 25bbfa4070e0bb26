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

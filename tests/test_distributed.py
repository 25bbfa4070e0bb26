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


def _torchrun(out: Path, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(TRAIN),
                           "--output_dir", str(out), *args], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=600)


LOSS_TERMS = ("train/caption_loss", "train/text_loss", "train/clip_loss", "train/uniform_loss", "train/align_loss",
              "train/loss")


def test_torchrun_two_processes_match_one(tiny_run, tiny_world, tmp_path):
    args = ["--data_dir", str(tiny_world), "--curriculum", "length", *TINY_MODEL, *TINY_TRAIN, "--run_eval", "false"]
    ddp = tmp_path / "ddp"
    proc = _torchrun(ddp, args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    single, double = _metrics(tiny_run), _metrics(ddp)
    assert [m["step"] for m in double] == [m["step"] for m in single]  # logged once, not per rank
    for a, b in zip(single, double, strict=True):
        assert b["train/text_tokens_seen"] == a["train/text_tokens_seen"]  # same global batches
        assert b["train/words_seen"] == a["train/words_seen"]
        # the global batch's token means: only float summation order differs over 20 steps
        for k in LOSS_TERMS:
            if k in a:
                assert b[k] == pytest.approx(a[k], rel=2e-4), (a["step"], k)
    # the gap probe runs once (main process), at the same steps, on the same stage-1 weights first
    gap1, gap2 = _metrics(tiny_run, "eval/gap/"), _metrics(ddp, "eval/gap/")
    assert [m["step"] for m in gap2] == [m["step"] for m in gap1] and len(gap1) >= 2
    assert gap2[0]["eval/gap/centroid_distance"] == pytest.approx(gap1[0]["eval/gap/centroid_distance"], abs=1e-3)
    assert (ddp / "model.safetensors").exists()


@pytest.mark.slow
def test_first_step_losses_are_the_global_batch_losses(tiny_world, tmp_path):
    """With identical weights (step 1 of stage 2, no stage 1), one process and two on the same global
    batch log the same loss terms to 1e-6 relative: the LM losses are normalised by the global
    token count, not averaged over per-process means (which gave 5.27162 vs 5.27188)."""
    from babymm import train

    args = ["--data_dir", str(tiny_world), "--curriculum", "length", *TINY_MODEL, "--text_pretrain_steps", "0",
            "--multimodal_steps", "2", "--batch_size", "16", "--text_batch_size", "8", "--logging_steps", "1",
            "--warmup_steps", "1", "--eval_steps", "0", "--checkpointing_steps", "0", "--run_eval", "false"]
    assert train.main(["--output_dir", str(tmp_path / "one"), *args]) == 0
    proc = _torchrun(tmp_path / "two", args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _metrics(tmp_path / "one")[0], _metrics(tmp_path / "two")[0]
    assert a["step"] == b["step"] == 1
    assert {k for k in a if k.endswith("_loss")} == {"train/caption_loss", "train/text_loss", "train/clip_loss",
                                                     "train/uniform_loss", "train/align_loss"}
    for k in LOSS_TERMS:
        assert b[k] == pytest.approx(a[k], rel=1e-6), k


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


def test_torchrun_captioning_only_leaves_the_contrastive_heads_unused(tiny_world, tmp_path):
    """Every contrastive weight 0: the embeddings are not computed, so DDP must be told that the
    heads get no gradient (it refuses unused parameters otherwise)."""
    run = tmp_path / "captioning"
    proc = _torchrun(run, ["--data_dir", str(tiny_world), *TINY_MODEL, "--text_pretrain_steps", "0",
                           "--multimodal_steps", "2", "--batch_size", "8", "--text_batch_size", "4",
                           "--logging_steps", "1", "--warmup_steps", "1", "--eval_steps", "0", "--run_eval", "false",
                           "--clip_weight", "0", "--uniform_weight", "0", "--align_weight", "0"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _metrics(run)
    assert len(rows) == 2 and all(set(k for k in r if k.endswith("_loss")) == {"train/caption_loss", "train/text_loss"}
                                  for r in rows)

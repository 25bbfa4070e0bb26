"""Nothing lost: a run killed with SIGKILL at a random step and resumed logs exactly what an
uninterrupted run logs; word milestones are exported, loadable and scored; incomplete
checkpoints are ignored; a resume with another configuration is refused."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from babymm import train
from babymm.checkpoint import complete_checkpoints, milestone_dirs
from babymm.training import TIMING_METRICS
from tests.conftest import TINY_MODEL

TRAIN = Path(__file__).resolve().parents[1] / "babymm" / "train.py"
TEXT_STEPS, MM_STEPS, EVERY = 10, 26, 4
FLAGS = [*TINY_MODEL, "--curriculum", "length", "--text_pretrain_steps", str(TEXT_STEPS), "--multimodal_steps",
         str(MM_STEPS), "--batch_size", "16", "--text_batch_size", "8", "--warmup_steps", "2", "--logging_steps", "3",
         "--eval_steps", "8", "--eval_gap_pairs", "40", "--checkpointing_steps", str(EVERY), "--save_total_limit", "2",
         "--word_milestones", "1k,2k,6k", "--run_eval", "false", "--num_threads", "1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _command(world: Path, out: Path, nproc: int, extra: list[str] = ()) -> list[str]:
    launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                                                    str(nproc)]
    return [*launcher, str(TRAIN), "--data_dir", str(world), "--output_dir", str(out), *FLAGS, *extra]


def _run(world: Path, out: Path, nproc: int = 1, extra: list[str] = ()) -> subprocess.CompletedProcess:
    proc = subprocess.run(_command(world, out, nproc, extra), env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _train_steps_logged(out: Path) -> int:
    path = out / "metrics.jsonl"
    if not path.exists():
        return 0
    return sum('"train/stage"' in line for line in path.read_text().splitlines())


def _kill_at_random_step(world: Path, out: Path, nproc: int, seed: int) -> int:
    """Start a run and SIGKILL its whole process group once it has logged a random number of
    train rows (after the first checkpoint). Returns that number, for the failure message."""
    target = random.Random(seed).randint(EVERY // 3 + 2, (TEXT_STEPS + MM_STEPS) // 3 - 1)
    with open(out.parent / f"{out.name}.log", "w") as log:
        proc = subprocess.Popen(_command(world, out, nproc), env=ENV, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 300
        while _train_steps_logged(out) < target:
            assert proc.poll() is None, f"the run ended before it was killed: {(out.parent / f'{out.name}.log').read_text()[-2000:]}"
            assert time.monotonic() < deadline, "the run never reached the kill step"
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "model.safetensors").exists()  # it was killed before the end
    return target


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _assert_same_log(resumed: list[dict], reference: list[dict], why: str) -> None:
    assert [r["step"] for r in resumed] == [r["step"] for r in reference], why
    for a, b in zip(resumed, reference, strict=True):
        assert set(a) == set(b), why
        for k, v in b.items():
            if k in TIMING_METRICS:
                continue
            if isinstance(v, float):
                assert a[k] == pytest.approx(v, abs=1e-6), f"{why}: step {b['step']} {k}"
            else:
                assert a[k] == v, f"{why}: step {b['step']} {k}"


@pytest.fixture(scope="module")
def reference(tiny_world, tmp_path_factory):
    """The same run, never stopped."""
    out = tmp_path_factory.mktemp("resume") / "reference"
    _run(tiny_world, out)
    return out


@pytest.mark.parametrize("nproc", [1, 2])
def test_sigkill_at_a_random_step_then_resume_logs_what_an_unstopped_run_logs(nproc, reference, tiny_world,
                                                                              tmp_path):
    out = tmp_path / "killed"
    target = _kill_at_random_step(tiny_world, out, nproc, seed=time.time_ns())
    why = f"killed after {target} logged rows, {nproc} process(es)"
    proc = _run(tiny_world, out, nproc, ["--resume_from_checkpoint", "auto"])
    assert "resuming" in proc.stdout, why
    resumed = _rows(out)
    if nproc == 1:
        _assert_same_log(resumed, _rows(reference), why)
    else:  # two ranks split each caption batch: per-rank token means differ from one process's a little
        ref_steps = [r["step"] for r in _rows(reference)]
        assert [r["step"] for r in resumed] == ref_steps, why
        unstopped = tmp_path / "ddp-reference"
        _run(tiny_world, unstopped, nproc)
        _assert_same_log(resumed, _rows(unstopped), why)
    assert (out / "model.safetensors").exists()
    # the milestones the killed run wrote and those written after the resume are all there, once
    assert [d.name for d in milestone_dirs(out)] == ["chck_1k", "chck_2k", "chck_6k"]
    assert len(complete_checkpoints(out)) == 2  # --save_total_limit 2
    resumes = (out / "resumed.jsonl").read_text().splitlines()
    assert len(resumes) == 1 and json.loads(resumes[0])["step"] % EVERY == 0


def test_a_checkpoint_killed_while_being_written_is_ignored(reference, tiny_world, tmp_path):
    """SIGKILL inside the second checkpoint's save: resume goes on from the first, and says so."""
    out = tmp_path / "run"
    driver = ("import os, signal, sys, accelerate\n"
              "real = accelerate.Accelerator.save_state\n"
              "calls = []\n"
              "def save_state(self, output_dir=None, **kw):\n"
              "    real(self, output_dir, **kw)\n"
              "    calls.append(output_dir)\n"
              "    if len(calls) == 2:\n"
              "        os.kill(os.getpid(), signal.SIGKILL)  # files written, trainer state not yet\n"
              "accelerate.Accelerator.save_state = save_state\n"
              "from babymm import train\n"
              "sys.exit(train.main(sys.argv[1:]))\n")
    cmd = _command(tiny_world, out, 1)
    killed = subprocess.run([sys.executable, "-c", driver, *cmd[2:]], env=ENV, capture_output=True, text=True,
                            timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    partial = out / "checkpoints" / f".step-{2 * EVERY:08d}.tmp"
    assert partial.is_dir() and (partial / "model.safetensors").exists()
    assert [d.name for d in complete_checkpoints(out)] == [f"step-{EVERY:08d}"]
    proc = _run(tiny_world, out, 1, ["--resume_from_checkpoint", "auto"])
    assert f"ignoring {partial}: incomplete" in proc.stderr
    assert f"from {out / 'checkpoints' / f'step-{EVERY:08d}'}" in proc.stdout
    _assert_same_log(_rows(out), _rows(reference), "killed inside a checkpoint write")


def test_resume_from_a_named_checkpoint_finds_its_run(reference, tiny_world, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    (out / "model.safetensors").unlink()
    (out / "metrics.jsonl").write_text((out / "metrics.jsonl").read_text() + '{"step": 999, "junk": 1}\n')
    first = complete_checkpoints(out)[0]
    proc = subprocess.run([sys.executable, str(TRAIN), "--data_dir", str(tiny_world), *FLAGS,
                           "--resume_from_checkpoint", str(first)], env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "model.safetensors").exists()
    _assert_same_log(_rows(out), _rows(reference), "resumed from a named checkpoint")


def test_word_milestones_are_exported_loadable_and_scored(reference, tiny_world, tmp_path):
    from transformers import AutoModelForCausalLM

    from eval import compare
    from eval import run as eval_run

    dirs = milestone_dirs(reference)
    assert [d.name for d in dirs] == ["chck_1k", "chck_2k", "chck_6k"]
    rows = [r for r in _rows(reference) if "train/words_seen" in r]
    for d in dirs:
        info = json.loads((d / "milestone.json").read_text())
        # exported at the first step whose words passed the milestone: the log agrees on the step
        assert info["words_seen"] >= info["milestone_words"]
        assert info["words_seen"] == info["caption_words"] + info["text_words"]
        logged = [r for r in rows if r["step"] == info["step"]]
        if logged:
            assert logged[0]["train/words_seen"] == info["words_seen"]
        assert AutoModelForCausalLM.from_pretrained(d).config.num_hidden_layers > 0
        assert (d / "tokenizer.json").exists() and (d / "modeling_babymm.py").exists()
    text_stage = json.loads((dirs[0] / "milestone.json").read_text())
    assert text_stage["stage"] == "text" and text_stage["caption_words"] == 0
    # eval scores each milestone, then compare plots a score against words seen
    run = tmp_path / "scored"
    shutil.copytree(reference, run)
    assert eval_run.main(["--run_dir", str(run), "--milestones", "--batch_size", "32"]) == 0
    assert all((d / "results.json").exists() for d in milestone_dirs(run))
    png = tmp_path / "curve.png"
    assert compare.main([str(run), "--by_words", str(png)]) == 0
    curve = compare.words_curve([run])
    assert list(curve["model"]) == ["chck_1k", "chck_2k", "chck_6k", "final"]
    assert curve["words_seen"].is_monotonic_increasing
    assert curve["words_seen"].iloc[-1] == rows[-1]["train/words_seen"]
    assert png.stat().st_size > 0 and png.with_suffix(".csv").exists()


def test_resume_refuses_another_configuration(reference, tiny_world, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    args = ["--data_dir", str(tiny_world), "--output_dir", str(out), *FLAGS, "--resume_from_checkpoint", "auto"]
    rc = train.main([*args, "--learning_rate", "0.01"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "train.learning_rate 0.002 -> 0.01" in err
    rc = train.main([*args, "--overwrite_output_dir", "true"])
    assert rc == 2 and "contradict" in capsys.readouterr().err
    # flags that only change how a run is written and watched may differ
    assert train.main([*args, "--save_total_limit", "3", "--num_threads", "2"]) == 0
    assert (out / "resumed.jsonl").exists()


def test_auto_resume_without_a_run_starts_one(tiny_world, tmp_path):
    out = tmp_path / "new"
    assert train.main(["--data_dir", str(tiny_world), "--output_dir", str(out), *FLAGS,
                       "--multimodal_steps", "4", "--resume_from_checkpoint", "auto"]) == 0
    assert (out / "model.safetensors").exists() and not (out / "resumed.jsonl").exists()

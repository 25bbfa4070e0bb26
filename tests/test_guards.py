"""Guards: non-finite steps stop (or are skipped and counted), a bad configuration is refused in
one line per problem before any work, data that cannot fill a batch or a curriculum built for
other data are refused; words seen are counted as BabyLM counts them."""

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from accelerate import Accelerator

from babymm import train
from babymm.checkpoint import BABYLM_MILESTONES, crossed, milestone_name, parse_milestones
from babymm.config import parse_config
from babymm.data import TextBlocks
from babymm.tokenizer import load_tokenizer, word_starts
from babymm.training import MetricsLog, NonFiniteError, TrainState, run_stage
from tests.conftest import TINY_MODEL, TINY_TRAIN

ARGS = SimpleNamespace(learning_rate=0.1, weight_decay=0.0, warmup_steps=0, lr_schedule="constant",
                       max_grad_norm=10.0, logging_steps=2, eval_steps=0, skip_nonfinite=0)


class BadAt:
    """loss = (w x - y)^2, except at the given steps: a NaN loss, or a finite loss whose gradient is NaN."""

    def __init__(self, steps, kind="loss"):
        self.steps, self.kind, self.calls = set(steps), kind, 0

    weights = {}  # every term weighs 1

    def loss_terms(self, model, batch, num_items=None):
        self.calls += 1
        fit = ((model(batch["x"]) - batch["y"]) ** 2).mean()
        if self.calls in self.steps:
            if self.kind == "loss":
                return {"fit_loss": fit, "bad_loss": fit * float("nan")}
            w = model.weight.sum()
            return {"fit_loss": fit, "bad_loss": torch.sqrt((w - w).abs())}  # 0, with gradient 0 * inf = NaN
        return {"fit_loss": fit}

    def after_step(self, model):
        pass


def batches(start):
    for i in range(start, 6):
        x = torch.ones(4, 1)
        yield {"x": x, "y": 3 * x, "num_words": torch.tensor([1, 1, 1, 1]), "index": torch.arange(4) + 10 * i,
               "text_index": torch.tensor([i])}


def _errors(capsys) -> str:
    """The one `error:` line of a failed run's stderr (progress bars and notes aside)."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, lines
    return lines[0]


def _stage(tmp_path, task, skip):
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    state = TrainState()
    args = SimpleNamespace(**{**vars(ARGS), "skip_nonfinite": skip})
    acc = Accelerator(cpu=True)
    run_stage(state, "fit", acc, model, 6, batches, task, args, MetricsLog(tmp_path / "m.jsonl", acc))
    return state, model


@pytest.mark.parametrize("kind", ["loss", "gradient"])
def test_a_non_finite_step_stops_the_run_naming_step_records_and_terms(tmp_path, kind):
    with pytest.raises(NonFiniteError) as e:
        _stage(tmp_path, BadAt([3], kind), skip=0)
    msg = str(e.value)
    assert "\n" not in msg
    assert f"fit step 3 (global 3): non-finite {kind}" in msg
    assert "caption rows [20, 21, 22, 23]" in msg and "text blocks [2]" in msg  # the third batch's records
    assert "'bad_loss'" in msg and "'fit_loss'" in msg
    assert "--skip_nonfinite 0" in msg


@pytest.mark.parametrize("kind", ["loss", "gradient"])
def test_skip_nonfinite_skips_counts_and_then_stops(tmp_path, kind):
    state, model = _stage(tmp_path, BadAt([2, 5], kind), skip=2)
    assert state.skipped_steps == 2 and state.step == 6
    assert state.seen["caption_words"] == 4 * 4  # the skipped steps' words were not trained on
    rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["train/skipped_steps"] for r in rows] == [1, 1, 2]
    assert all(np.isfinite(r["train/loss"]) for r in rows)
    assert torch.isfinite(model.weight).all()
    with pytest.raises(NonFiniteError, match="stopped \\(2 non-finite step\\(s\\), --skip_nonfinite 1\\)"):
        _stage(tmp_path, BadAt([2, 5], kind), skip=1)


def test_a_skipped_step_leaves_the_weights_alone(tmp_path):
    """Skipping step 1 of 1: the only update is the skipped one, so the weight stays at 0."""
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    acc = Accelerator(cpu=True)
    args = SimpleNamespace(**{**vars(ARGS), "skip_nonfinite": 1})
    run_stage(TrainState(), "fit", acc, model, 1, lambda s: batches(5), BadAt([1], "gradient"), args,
              MetricsLog(tmp_path / "m.jsonl", acc))
    assert model.weight.item() == 0.0


@pytest.mark.parametrize("flags, message", [
    (["--learning_rate", "-1"], "--learning_rate -1.0 is negative"),
    (["--uniform_weight", "-0.5"], "--uniform_weight -0.5 is negative"),
    (["--warmup_steps", "-3"], "--warmup_steps -3 is negative"),
    (["--batch_size", "0"], "--batch_size 0 must be positive"),
    (["--max_grad_norm", "0"], "--max_grad_norm 0.0 must be positive"),
    (["--temperature", "0.001", "--learn_temperature", "false"], "--temperature 0.001 is below 1/100"),
    (["--word_milestones", "1M,lots"], "--word_milestones: 'lots' is not a positive word count"),
    (["--lr_schedule", "linear"], "--lr_schedule 'linear': use cosine or constant"),
    (["--on_bad_record", "ignore"], "--on_bad_record 'ignore': use error or skip"),
    (["--word_budget", "0"], "--word_budget 0 must be positive"),
    (["--text_pretrain_steps", "0", "--multimodal_steps", "0"], "are both 0"),
])
def test_a_bad_configuration_is_refused_in_one_line_before_any_work(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    rc = train.main(["--data_dir", str(tmp_path / "no-data-needed"), "--output_dir", str(out), *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists() and not (tmp_path / "no-data-needed").exists()  # nothing was prepared or written


def test_every_problem_is_reported_each_on_its_line(tmp_path, capsys):
    rc = train.main(["--data_dir", str(tmp_path), "--output_dir", str(tmp_path / "r"), "--learning_rate", "-1",
                     "--weight_decay", "-1", "--logging_steps", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 3 and all(line.startswith("error: ") for line in err)


def test_a_batch_not_divisible_by_the_processes_is_refused():
    cfg = parse_config(["--batch_size", "16", "--text_batch_size", "9"])
    assert cfg.problems(1) == []
    problems = cfg.problems(3)
    assert problems == ["--batch_size 16 is not divisible by the 3 processes; each must get an equal share"]


def test_a_cut_warmup_is_said(tiny_world, tmp_path, capsys):
    cfg = parse_config(["--warmup_steps", "100", "--text_pretrain_steps", "600", "--multimodal_steps", "2000"])
    assert cfg.warnings() == ["--warmup_steps 100 is cut to 61 for the 600-step text stage (at most a tenth of a stage + 1)"]
    assert parse_config(["--warmup_steps", "50", "--text_pretrain_steps", "600"]).warnings() == []


def test_data_smaller_than_one_batch_is_refused_naming_the_budget(tiny_world, tmp_path, capsys):
    rc = train.main(["--data_dir", str(tiny_world), "--output_dir", str(tmp_path / "r"), "--word_budget", "20000", "--text_fraction", "0.6",
                     *TINY_MODEL, *TINY_TRAIN, "--batch_size", "5000"])
    err = _errors(capsys)
    assert rc == 2
    assert "1,206 captions at --word_budget 20,000, fewer than one batch of --batch_size 5000" in err


def test_a_curriculum_built_for_other_data_is_refused(tiny_world, tmp_path, capsys):
    from data_prep.pipeline import prepare

    world = tmp_path / "world"
    shutil.copytree(tiny_world, world, ignore=shutil.ignore_patterns("prepared"))
    prepare(world, "length")
    manifest = world / "prepared" / "curricula" / "length-seed0" / "manifest.json"
    m = json.loads(manifest.read_text())
    m["data_fingerprint"] = "0123456789abcdef"
    manifest.write_text(json.dumps(m))
    rc = train.main(["--data_dir", str(world), "--output_dir", str(tmp_path / "r"), *TINY_MODEL, *TINY_TRAIN])
    err = _errors(capsys)
    assert rc == 2
    assert "curricula/length-seed0: built for other data (fingerprint 0123456789abcdef" in err and "--overwrite" in err


def test_text_blocks_count_whitespace_words(tiny_run, tiny_world):
    """Counted from outside: the words of the ingested text lines, split on whitespace."""
    import datasets

    prepared = tiny_world / "prepared"
    lines = datasets.load_from_disk(str(prepared / "ingest" / "text"))["text"]
    words = sum(len(line.split()) for line in lines)
    tok = load_tokenizer(prepared / "tokenizer")
    blocks = TextBlocks(prepared / "tokens" / "text.npy", 1, word_starts(tok))  # a token per block: nothing cut
    assert int(blocks.__getitems__(list(range(len(blocks))))["num_words"].sum()) == words
    manifest = json.loads((prepared / "tokens" / "manifest.json").read_text())
    assert manifest["words"] == manifest["words_counted_by_word_start_tokens"] == words
    # a block's count is its tokens that begin a word: "<s> ▁the ▁b all </s>" holds 2 words
    ids = tok("the ball")["input_ids"] + [tok.eos_token_id]
    assert word_starts(tok)[np.array(ids)].sum() == 2


def test_word_milestones_by_hand():
    assert BABYLM_MILESTONES[:3] == [1_000_000, 2_000_000, 3_000_000]
    assert BABYLM_MILESTONES[9:12] == [10_000_000, 20_000_000, 30_000_000]
    assert BABYLM_MILESTONES[-2:] == [900_000_000, 1_000_000_000] and len(BABYLM_MILESTONES) == 28
    assert parse_milestones("babylm") == BABYLM_MILESTONES and parse_milestones("none") == []
    assert parse_milestones("2M, 500k,1.5M,500k") == [500_000, 1_500_000, 2_000_000]
    assert [milestone_name(n) for n in (1_000_000, 20_000_000, 500_000, 1_500_000, 1234)] == [
        "chck_1M", "chck_20M", "chck_500k", "chck_1500k", "chck_1234"]
    assert crossed([10, 20, 30], 9, 20) == [10, 20] and crossed([10, 20, 30], 10, 19) == []

"""The type-independent training loop: a task's terms are summed and stepped, the state counts."""

import json
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator

from babymm.training import MetricsLog, TrainState, run_stage

ARGS = SimpleNamespace(learning_rate=0.1, weight_decay=0.0, warmup_steps=0, lr_schedule="constant",
                       max_grad_norm=10.0, logging_steps=2, eval_steps=0, skip_nonfinite=0)


class SquareTask:
    """loss = (w x - y)^2 for a 1-parameter model; counts its after_step calls."""

    def __init__(self):
        self.after = 0

    weights = {}  # every term weighs 1

    def loss_terms(self, model, batch, num_items=None):
        return {"fit_loss": ((model(batch["x"]) - batch["y"]) ** 2).mean()}

    def after_step(self, model):
        self.after += 1


def batches(n):
    """The stage's batches from step `start` on, as run_stage asks for them."""
    def from_step(start):
        for _ in range(start, n):
            x = torch.ones(4, 1)
            yield {"x": x, "y": 3 * x, "num_words": torch.tensor([2, 3, 4, 5]),
                   "text_input_ids": torch.zeros(2, 8, dtype=torch.long), "text_num_words": torch.tensor([3, 1])}
    return from_step


def test_run_stage_sums_terms_steps_counts_and_logs(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    acc = Accelerator(cpu=True)
    state, task = TrainState(), SquareTask()
    log = MetricsLog(tmp_path / "metrics.jsonl", acc)
    run_stage(state, "fit", acc, model, 6, batches(6), task, ARGS, log)
    assert task.after == 6 and (state.step, state.stage_step, state.stage) == (6, 6, "fit")
    assert state.seen == {"caption_words": 6 * 14, "text_words": 6 * 4, "text_tokens": 6 * 16}
    assert state.words_seen == 6 * 18
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert rows[-1]["train/caption_words_seen"] == 84 and rows[0]["train/caption_words_seen"] == 28
    assert [r["train/words_seen"] for r in rows] == [36, 72, 108]
    # Adam's first steps move w by about lr each: from 0 toward 3, the squared error falls
    assert rows[0]["train/fit_loss"] > rows[-1]["train/fit_loss"]
    assert rows[0]["train/loss"] == rows[0]["train/fit_loss"]
    # a second stage continues the global step with a fresh optimizer
    run_stage(state, "more", acc, model, 2, batches(2), task, ARGS, log)
    assert (state.step, state.stage_step, state.stage) == (8, 2, "more")


def test_train_state_round_trips_through_its_state_dict():
    model = torch.nn.Linear(2, 2)
    args = SimpleNamespace(**{**vars(ARGS), "warmup_steps": 4, "lr_schedule": "cosine"})
    a = TrainState()
    a.start_stage("multimodal", model, 20, args)
    for _ in range(7):
        a.optimizer.step()
        a.scheduler.step()
    a.step, a.stage_step, a.seen = 107, 7, {"caption_words": 5, "text_words": 2, "text_tokens": 9}
    a.skipped_steps, a.pending, a.pending_steps = 1, {"loss": 3.5}, 2
    b = TrainState()
    b.start_stage("multimodal", model, 20, args)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))  # JSON-safe, as a checkpoint stores it
    assert (b.stage, b.step, b.stage_step, b.seen) == ("multimodal", 107, 7, a.seen)
    assert (b.skipped_steps, b.pending, b.pending_steps) == (1, {"loss": 3.5}, 2)
    assert b.scheduler.get_last_lr() == pytest.approx(a.scheduler.get_last_lr())
    assert b.scheduler.last_epoch == 7

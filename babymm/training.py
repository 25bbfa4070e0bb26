"""The training loop, independent of model type: a task gives the loss terms of a batch, the
loop does the rest (optimizer, schedule, clipping, logging, word counts, the probe).

`TrainState` holds everything a checkpoint must restore besides the model: the stage, the
global and stage step, the word and token counters, the optimizer and the schedule. It has
`state_dict`/`load_state_dict`, so `accelerator.register_for_checkpointing` can save it.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from babymm.curriculum import StepBatchSampler
from babymm.optim import build_optimizer, build_scheduler

Batch = dict[str, torch.Tensor]


class Task(Protocol):
    def loss_terms(self, model: torch.nn.Module, batch: Batch) -> dict[str, torch.Tensor]: ...

    def after_step(self, model: torch.nn.Module) -> None: ...


class TrainArgs(Protocol):
    learning_rate: float
    weight_decay: float
    warmup_steps: int
    lr_schedule: str
    max_grad_norm: float
    logging_steps: int
    eval_steps: int


class MetricsLog:
    """Appends metric dicts as JSON lines (main process) and forwards them to trackers."""

    def __init__(self, path: Path, accelerator: Accelerator):
        self.path, self.accelerator = path, accelerator

    def __call__(self, metrics: dict[str, Any], step: int) -> None:
        if self.accelerator.is_main_process:
            with self.path.open("a") as f:
                f.write(json.dumps({"step": step, **metrics}) + "\n")
        self.accelerator.log(metrics, step=step)


@dataclass
class TrainState:
    """Where training is: stage, steps, what it has seen, and the stage's optimizer and schedule."""

    stage: str = ""
    step: int = 0  # global, over all stages
    stage_step: int = 0
    seen: dict[str, int] = field(default_factory=lambda: {"caption_words": 0, "text_tokens": 0})
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None

    def start_stage(self, stage: str, module: torch.nn.Module, num_steps: int, args: TrainArgs) -> None:
        """A fresh AdamW and warmup-then-decay schedule for `module` (each stage trains a different set)."""
        self.stage, self.stage_step = stage, 0
        self.optimizer = build_optimizer(module, args.learning_rate, args.weight_decay)
        warmup = min(args.warmup_steps, num_steps // 10 + 1)  # a short stage still spends most steps at full lr
        self.scheduler = build_scheduler(self.optimizer, warmup, num_steps, args.lr_schedule)

    def state_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "step": self.step, "stage_step": self.stage_step, "seen": dict(self.seen),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stage, self.step, self.stage_step = state["stage"], state["step"], state["stage_step"]
        self.seen = dict(state["seen"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])


def step_loader(dataset: torch.utils.data.Dataset, order: np.ndarray, pacing: Callable[[float], float],
                num_steps: int, global_batch: int, seed: int, accelerator: Accelerator) -> DataLoader:
    """A DataLoader whose batch t is a pure function of (seed, t); this rank's share of it."""
    n = accelerator.num_processes
    if global_batch % n:
        raise ValueError(f"batch size {global_batch} is not divisible by {n} processes")
    sampler = StepBatchSampler(order, pacing, num_steps, global_batch // n, seed,
                               rank=accelerator.process_index, world_size=n)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=_whole_batch)


def _whole_batch(batch: Batch) -> Batch:
    """Batches arrive whole from the datasets' `__getitems__`; nothing to collate."""
    return batch


def with_text(captions: Iterable[Batch], text: Iterable[Batch]) -> Iterable[Batch]:
    """Caption batches with a text-only batch mixed into each, as `text_*` keys."""
    for cap, txt in zip(captions, text, strict=True):
        yield {**cap, "text_input_ids": txt["input_ids"], "text_attention_mask": txt["attention_mask"]}


def text_only(batches: Iterable[Batch]) -> Iterable[Batch]:
    for b in batches:
        yield {"text_input_ids": b["input_ids"], "text_attention_mask": b["attention_mask"]}


def run_stage(state: TrainState, stage: str, accelerator: Accelerator, module: torch.nn.Module,
              num_steps: int, batches: Iterable[Batch], task: Task, args: TrainArgs, log: MetricsLog,
              probe: Callable[[torch.nn.Module], dict[str, float]] | None = None) -> None:
    """Train `module` for one stage on `task`'s loss. `probe` (main process, no gradient) is
    logged before the first step, every `eval_steps` and after the last."""

    def measure() -> None:
        if probe is not None and accelerator.is_main_process:
            log(probe(module), state.step)

    state.start_stage(stage, module, num_steps, args)
    wrapped, state.optimizer = accelerator.prepare(module, state.optimizer)
    sums: dict[str, float] = defaultdict(float)
    window = {k: 0 for k in state.seen}
    started, count = time.perf_counter(), 0
    bar = tqdm(total=num_steps, desc=stage, disable=not accelerator.is_local_main_process, dynamic_ncols=True)
    measure()
    for batch in batches:
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        losses = task.loss_terms(wrapped, batch)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{stage} step {state.stage_step}: non-finite loss "
                                     f"{({k: v.item() for k, v in losses.items()})}")
        state.optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        grad_norm = accelerator.clip_grad_norm_(wrapped.parameters(), args.max_grad_norm)
        state.optimizer.step()
        state.scheduler.step()
        task.after_step(module)
        state.step += 1
        state.stage_step += 1
        for k, v in losses.items():
            sums[k] += v.detach().item()
        sums["loss"] += loss.detach().item()
        sums["grad_norm"] += float(grad_norm)
        count += 1
        window["caption_words"] += int(batch["num_words"].sum()) if "num_words" in batch else 0
        window["text_tokens"] += int(batch["text_input_ids"].numel()) if "text_input_ids" in batch else 0
        bar.update(1)
        if state.stage_step % args.logging_steps == 0 or state.stage_step == num_steps:
            means = accelerator.reduce(torch.tensor([v / count for v in sums.values()],
                                                    device=accelerator.device), reduction="mean")
            totals = accelerator.reduce(torch.tensor(list(window.values()), device=accelerator.device,
                                                     dtype=torch.float64), reduction="sum")
            for k, v in zip(window, totals.tolist(), strict=True):
                state.seen[k] += int(v)
            metrics = {f"train/{k}": round(float(v), 5) for k, v in zip(sums, means.tolist(), strict=True)}
            metrics.update({f"train/{k}_seen": v for k, v in state.seen.items()})
            metrics.update({"train/stage": stage, "train/lr": state.scheduler.get_last_lr()[0],
                            "train/steps_per_s": round(count / (time.perf_counter() - started), 3)})
            if hasattr(module, "logit_scale"):
                metrics["train/logit_scale"] = round(module.logit_scale.item(), 3)
            log(metrics, state.step)
            bar.set_postfix(loss=f"{metrics['train/loss']:.3f}")
            sums.clear()
            window = {k: 0 for k in state.seen}
            started, count = time.perf_counter(), 0
        if args.eval_steps and (state.stage_step % args.eval_steps == 0 or state.stage_step == num_steps):
            measure()
    bar.close()

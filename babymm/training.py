"""The training loop, independent of model type: a task gives the loss terms of a batch, the
loop does the rest (optimizer, schedule, clipping, guards, logging, word counts, the probe).

`TrainState` holds everything a checkpoint must restore besides the model and optimizer
weights: the stage, the global and stage step, the words and tokens seen, the skipped steps,
the schedule, and the loss sums not yet logged. Its `state_dict` is plain JSON. Batches are a
pure function of (seed, step), so resuming at stage step k only starts the sampler at k.

Each step all-reduces the batch's LM target counts before the forward (the LM losses are
normalised by the global batch's count) and one small vector after it (the loss terms and the
counts), so every rank holds the same global numbers: a non-finite loss on any rank stops or skips the step on all of them, the
word counters are exact at every step (word milestones), and the main process's state is the
whole run's.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from babymm.curriculum import StepBatchSampler
from babymm.models.base import lm_targets
from babymm.optim import build_optimizer, build_scheduler
from babymm.speed import Throughput, decoder_shape, step_flops

Batch = dict[str, torch.Tensor]
COUNTERS = ("caption_words", "text_words", "text_tokens")
# logged metrics that measure the machine, not the run: they differ between equal runs
TIMING_METRICS = ("train/steps_per_s", "train/tokens_per_s", "train/tflops", "train/mfu")


class Task(Protocol):
    """What a stage trains: `loss_terms` gives each term unweighted (logged under its own name);
    `weights` names each term's weight in `loss` (a term it does not name weighs 1)."""

    weights: Mapping[str, float]

    def loss_terms(self, model: torch.nn.Module, batch: Batch,
                   num_items: dict[str, float] | None = None) -> dict[str, torch.Tensor]: ...

    # optional: def decoder_passes(self, model, batch) -> list[babymm.speed.DecoderPass]
    # (the decoder passes `loss_terms` runs, for `train/mfu`)

    def after_step(self, model: torch.nn.Module) -> None: ...


class TrainArgs(Protocol):
    learning_rate: float
    weight_decay: float
    warmup_steps: int
    lr_schedule: str
    max_grad_norm: float
    logging_steps: int
    eval_steps: int
    skip_nonfinite: int


class NonFiniteError(FloatingPointError):
    """A non-finite loss or gradient beyond what `--skip_nonfinite` allows."""


def stage_warmup(warmup_steps: int, num_steps: int) -> int:
    """The warmup a stage uses: `--warmup_steps`, capped at a tenth of the stage + 1 so a short
    stage still spends most of its steps at full rate (train.py says so when it bites)."""
    return min(warmup_steps, num_steps // 10 + 1)


class MetricsLog:
    """Appends metric dicts as JSON lines (main process) and forwards them to trackers."""

    def __init__(self, path: Path, accelerator: Accelerator):
        self.path, self.accelerator = path, accelerator

    def __call__(self, metrics: dict[str, Any], step: int) -> None:
        if self.accelerator.is_main_process:
            with self.path.open("a") as f:
                f.write(json.dumps({"step": step, **metrics}) + "\n")
        self.accelerator.log(metrics, step=step)

    def size(self) -> int:
        """Bytes written so far: a checkpoint records it, a resume cuts the log back to it."""
        return self.path.stat().st_size if self.path.exists() else 0


@dataclass
class TrainState:
    """Where training is: stage, steps, what it has seen, and the stage's optimizer and schedule."""

    stage: str = ""
    step: int = 0  # global, over all stages
    stage_step: int = 0
    seen: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    skipped_steps: int = 0
    pending: dict[str, float] = field(default_factory=dict)  # loss sums since the last log
    pending_steps: int = 0
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None

    @property
    def words_seen(self) -> int:
        """Words trained on, text and captions, as BabyLM counts them (whitespace words)."""
        return self.seen["caption_words"] + self.seen["text_words"]

    def start_stage(self, stage: str, module: torch.nn.Module, num_steps: int, args: TrainArgs,
                    device: torch.device | None = None) -> None:
        """A fresh AdamW (fused on a CUDA `device`) and warmup-then-decay schedule for `module`
        (each stage trains a different set)."""
        self.stage, self.stage_step = stage, 0
        self.pending, self.pending_steps = {}, 0
        fused = device is not None and device.type == "cuda"
        self.optimizer = build_optimizer(module, args.learning_rate, args.weight_decay, fused=fused)
        self.scheduler = build_scheduler(self.optimizer, stage_warmup(args.warmup_steps, num_steps), num_steps,
                                         args.lr_schedule)

    def state_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "step": self.step, "stage_step": self.stage_step, "seen": dict(self.seen),
                "skipped_steps": self.skipped_steps, "pending": dict(self.pending),
                "pending_steps": self.pending_steps,
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stage, self.step, self.stage_step = state["stage"], state["step"], state["stage_step"]
        self.seen = {**dict.fromkeys(COUNTERS, 0), **state["seen"]}
        self.skipped_steps = state.get("skipped_steps", 0)
        self.pending, self.pending_steps = dict(state.get("pending", {})), state.get("pending_steps", 0)
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])


def step_loader(dataset: torch.utils.data.Dataset, order: np.ndarray, pacing: Callable[[float], float],
                num_steps: int, global_batch: int, seed: int, accelerator: Accelerator,
                start_step: int = 0, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """A DataLoader whose batch t is a pure function of (seed, t), from `start_step` on; this rank's share.

    `num_workers` > 0 builds batches in that many worker processes, ahead of the step (the
    order is the sampler's, so the batches are the same as with none); `pin_memory` puts them in
    page-locked memory, so the copy to a CUDA device can overlap the step (`non_blocking`). It
    only applies on a CUDA device: pinned memory has no use on the CPU."""
    n = accelerator.num_processes
    if global_batch % n:
        raise ValueError(f"batch size {global_batch} is not divisible by {n} processes")
    sampler = StepBatchSampler(order, pacing, num_steps, global_batch // n, seed,
                               rank=accelerator.process_index, world_size=n, start_step=start_step)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=_whole_batch, num_workers=num_workers,
                      pin_memory=pin_memory and accelerator.device.type == "cuda",
                      persistent_workers=False, prefetch_factor=4 if num_workers else None)


def _whole_batch(batch: Batch) -> Batch:
    """Batches arrive whole from the datasets' `__getitems__`; nothing to collate."""
    return batch


def with_text(captions: Iterable[Batch], text: Iterable[Batch]) -> Iterable[Batch]:
    """Caption batches with a text-only batch mixed into each, as `text_*` keys."""
    for cap, txt in zip(captions, text, strict=True):
        yield {**cap, **{f"text_{k}": v for k, v in txt.items()}}


def text_only(batches: Iterable[Batch]) -> Iterable[Batch]:
    for b in batches:
        yield {f"text_{k}": v for k, v in b.items()}


def _counts(batch: Batch) -> list[float]:
    """This rank's caption words, text words and text tokens in `batch` (COUNTERS order), then
    the token positions of its input batches (captions and text, padding included), which
    `train/tokens_per_s` counts."""
    def total(key: str) -> float:
        return float(batch[key].sum()) if key in batch else 0.0

    def positions(key: str) -> float:
        return float(batch[key].numel()) if key in batch else 0.0

    return [total("num_words"), total("text_num_words"), positions("text_input_ids"),
            positions("input_ids") + positions("text_input_ids")]


def _lm_targets(batch: Batch) -> list[float]:
    """This rank's next-token targets in the caption and the text batch (what `lm_loss` sums)."""
    return [float(lm_targets(batch[key])) if key in batch else 0.0
            for key in ("attention_mask", "text_attention_mask")]


def global_num_items(batch: Batch, accelerator: Accelerator) -> dict[str, float | torch.Tensor]:
    """Each LM loss's normaliser: the GLOBAL batch's target count over the processes. Each rank
    divides its token sum by it, so the mean over ranks that DDP's gradient averaging (and the
    log) takes is the global batch's token mean, not a mean of per-rank means (transformers'
    `num_items_in_batch`, scaled by the number of processes as its Trainer does). With several
    processes the counts are summed on the device and stay there (no host synchronisation)."""
    local = _lm_targets(batch)
    n = accelerator.num_processes
    if n == 1:
        return {k: max(v, 1.0) for k, v in zip(("caption", "text"), local, strict=True)}
    total = accelerator.reduce(torch.tensor(local, dtype=torch.float32, device=accelerator.device), reduction="sum")
    return dict(zip(("caption", "text"), (total.clamp(min=1.0) / n).unbind(), strict=True))


def _records(batch: Batch) -> str:
    """Which records a batch held, for an error message."""
    parts = []
    if "index" in batch:
        parts.append(f"caption rows {batch['index'].tolist()}")
    if "text_index" in batch:
        parts.append(f"text blocks {batch['text_index'].tolist()}")
    return "; ".join(parts) or "no record ids"


def _full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a parameter FSDP2 shards across the processes (every rank must call it)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def run_stage(state: TrainState, stage: str, accelerator: Accelerator, module: torch.nn.Module,
              num_steps: int, batches: Callable[[int], Iterable[Batch]], task: Task, args: TrainArgs,
              log: MetricsLog, probe: Callable[[torch.nn.Module], dict[str, float]] | None = None,
              resume: Callable[[], None] | None = None,
              end_of_step: Callable[[TrainState, int], None] | None = None,
              peak_flops: float | None = None) -> None:
    """Train `module` for one stage on `task`'s loss.

    `batches(k)` gives the stage's batches from stage step k on. `resume`, if given, restores
    the prepared module, optimizer and `state` from a checkpoint (then the stage goes on from
    `state.stage_step`). `probe` (main process, no gradient) is logged before the first step,
    every `eval_steps` and after the last; `end_of_step(state, words_before)` runs after each
    step's log and probe (word milestones, checkpoints). With `peak_flops` (the device's
    measured matmul peak, babymm.speed) the log has `train/mfu` beside `train/tokens_per_s`.

    A step synchronises the host with the device once: the loss terms, the gradient norm and
    the word counts travel in one all-reduced vector, read after the backward, because the
    guard must know whether they are finite before the optimizer steps.
    """

    def measure() -> None:
        # under FSDP every process runs it (it gathers the sharded weights); the main one logs
        if probe is not None and (accelerator.is_main_process or accelerator.distributed_type == DistributedType.FSDP):
            metrics = probe(module)
            if accelerator.is_main_process:
                log(metrics, state.step)

    state.start_stage(stage, module, num_steps, args, accelerator.device)
    accelerator.free_memory()  # the previous stage's module and optimizer: a checkpoint holds this stage's
    wrapped, state.optimizer = accelerator.prepare(module, state.optimizer)
    if resume is not None:
        resume()
        if state.stage != stage:
            raise ValueError(f"the checkpoint is in stage {state.stage!r}, not {stage!r}")
    else:
        measure()
    started, timed = time.perf_counter(), 0
    # what the model FLOPs are counted by (babymm.speed); a task or module without them logs tokens/s only
    shape, passes, throughput = decoder_shape(module), getattr(task, "decoder_passes", None), Throughput(peak_flops)
    bar = tqdm(total=num_steps, initial=state.stage_step, desc=stage, disable=not accelerator.is_local_main_process,
               dynamic_ncols=True)
    tick = time.perf_counter()
    for batch in batches(state.stage_step):
        counts = _counts(batch)  # read on the host, before the batch moves to the device
        num_items = global_num_items(batch, accelerator)
        flops = step_flops(shape, passes(module, batch)) if shape and passes else 0.0
        batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in batch.items()}
        losses = task.loss_terms(wrapped, batch, num_items)
        loss = sum(task.weights.get(k, 1.0) * v for k, v in losses.items())
        names = [*losses, "loss"]
        state.optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)  # a non-finite loss gives non-finite gradients: the step is skipped below
        grad_norm = accelerator.clip_grad_norm_(wrapped.parameters(), args.max_grad_norm)
        local = torch.cat([torch.stack([v.detach().double() for v in (*losses.values(), loss)]),
                           grad_norm.detach().double().reshape(1).to(accelerator.device),
                           torch.tensor(counts, dtype=torch.float64).to(accelerator.device, non_blocking=True)])
        totals = accelerator.reduce(local, reduction="sum").tolist()  # every rank: the global numbers
        means = [v / accelerator.num_processes for v in totals[: len(names) + 1]]
        grad_norm = means.pop()  # every rank clipped the same (all-reduced) gradients
        *seen, positions = totals[len(names) + 1:]
        problem = ("loss" if not all(map(math.isfinite, means)) else
                   "gradient" if not math.isfinite(grad_norm) else None)
        words_before = state.words_seen
        if problem is None:
            state.optimizer.step()
            task.after_step(module)
            for k, v in zip(COUNTERS, seen, strict=True):
                state.seen[k] += int(v)
            for k, v in zip(names, means, strict=True):
                state.pending[k] = state.pending.get(k, 0.0) + v
            state.pending["grad_norm"] = state.pending.get("grad_norm", 0.0) + grad_norm
            state.pending_steps += 1
        else:
            state.optimizer.zero_grad(set_to_none=True)
            state.skipped_steps += 1
            where = (f"{stage} step {state.stage_step + 1} (global {state.step + 1}): non-finite {problem}; "
                     f"loss terms on this rank {({k: v.item() for k, v in losses.items()})}; {_records(batch)}")
            if state.skipped_steps > args.skip_nonfinite:
                raise NonFiniteError(f"{where}; stopped ({state.skipped_steps} non-finite step(s), "
                                     f"--skip_nonfinite {args.skip_nonfinite})")
            if accelerator.is_main_process:
                tqdm.write(f"[train] skipped {where} ({state.skipped_steps}/{args.skip_nonfinite} allowed)")
        with warnings.catch_warnings():  # after a skipped first step torch warns of a missed optimizer step
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step\\(\\)` before")
            state.scheduler.step()  # a skipped step still uses up its batch and its place in the schedule
        state.step += 1
        state.stage_step += 1
        timed += 1
        bar.update(1)
        # the tokens of every process; the FLOPs (and so the MFU) are this device's
        throughput.add(int(positions), flops, time.perf_counter() - tick)
        if state.stage_step % args.logging_steps == 0 or state.stage_step == num_steps:
            n = max(state.pending_steps, 1)
            metrics = {f"train/{k}": round(v / n, 5) for k, v in state.pending.items()}
            metrics.update({f"train/{k}": v for k, v in throughput.read().items()})
            metrics.update({f"train/{k}_seen": v for k, v in state.seen.items()})
            metrics.update({"train/words_seen": state.words_seen, "train/stage": stage,
                            "train/lr": state.scheduler.get_last_lr()[0], "train/skipped_steps": state.skipped_steps,
                            "train/steps_per_s": round(timed / (time.perf_counter() - started), 3)})
            if hasattr(module, "logit_scale"):
                metrics["train/logit_scale"] = round(_full(module.logit_scale.detach()).item(), 3)
            log(metrics, state.step)
            if "train/loss" in metrics:
                bar.set_postfix(loss=f"{metrics['train/loss']:.3f}")
            state.pending, state.pending_steps = {}, 0
            started, timed = time.perf_counter(), 0
        if args.eval_steps and (state.stage_step % args.eval_steps == 0 or state.stage_step == num_steps):
            measure()
        if end_of_step is not None:
            end_of_step(state, words_before)
        tick = time.perf_counter()  # probes and checkpoints are not training time
    bar.close()

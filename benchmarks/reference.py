"""babymm's stage-2 training step against two references, side by side in one process.

    python benchmarks/reference.py                     # CPU default: every type, 1 thread, ~5 min on a shared 2-core VM
    python benchmarks/reference.py --types git --threads 0              # git only, every core (train.py's rule)
    python benchmarks/reference.py --device cuda --preset base [--precision bf16] [--batch 64]
    python benchmarks/reference.py --device cuda --preset base --precision bf16 --hf_precision fp32 bf16

1. Overhead of the training loop. The `babymm` side is a stage-2 step exactly as
   `babymm/train.py` runs it: `run_stage(...)` with a real `accelerate.Accelerator`, a
   `TrainState`, a `MetricsLog` writing JSON lines to a temporary directory, the type's own task
   (`task_for(type(model))(cfg.loss)`, the loss flags parsed by `babymm.config.parse_config`
   from the 2024 recipe, configs/baseline2024_git.yaml: caption loss + 0.25 text loss, no
   contrastive term, AdamW 1e-4 with weight decay 0.1), caption batches from `step_loader` (the
   `length` curriculum's order and pacing through `StepBatchSampler`) zipped with text batches by
   `with_text`. The datasets are in memory: their `__getitems__` returns the dict the real
   `CaptionData` / `TextBlocks` return (input_ids, attention_mask, num_words, index, images; the
   captions cut to the batch's longest) by indexing preallocated random tensors, so the data cost
   left in is the sampler's and the indexing, not tokenizing or reading features from disk
   (benchmarks/data_loading.py measures those). Not in the timing: the gap probe
   (`--eval_steps`) and checkpoints (benchmarks/checkpoint_cost.py); `logging_steps` is 10.
   The `bare` side is the same model (a copy of the same initial weights) in a plain PyTorch
   loop: `task.loss_terms(model, batch)` summed by `task.weights`, `loss.backward()`,
   `clip_grad_norm_`, the same AdamW (`babymm.optim.build_optimizer`) `step()` and
   `zero_grad()`, on the same batches built beforehand on the device: no sampler, no logging, no
   all-reduce, no guard, no schedule. overhead_ratio = babymm tokens/s / bare tokens/s
   (goal >= 0.95).

2. Against transformers' GIT, what a BabyLM 2024 participant trains (babylm/git-2024):
   `GitForCausalLM` at the same width, depth, heads, vocabulary, number of image tokens and batch,
   in a plain fp32 loop (torch's AdamW 1e-4, weight decay 0.1, clip 1.0): caption loss from
   `model(input_ids, attention_mask, pixel_values, labels)` + 0.25 x the text batch's loss
   (GIT without pixel_values is a text decoder; its `labels` loss always drops the image
   positions, so that one is taken from the logits). The 2024 baseline feeds GIT the 197 tokens
   (width 768) of a frozen DINO ViT: here `model.git.image_encoder` is replaced by a module that
   returns the precomputed features [B, P, 768] (passed as pixel_values [B, 1, P, 768]) as its
   `last_hidden_state`, which GIT's own `visual_projection` (Linear 768 -> width, LayerNorm) then
   projects; babymm's `git` reads the same tensors with `--vision_encoder features` (its
   FeatureEncoder + projector). vs_transformers_git_ratio = babymm git tokens/s / transformers
   GIT tokens/s (goal >= 1.2). The architectures differ as the two libraries do: GIT is BERT-style
   (post-LayerNorm, learned absolute positions, GELU MLP with 2 matrices, biases, dropout 0.1 by
   default, eager attention, logits at every position, image prefix included); babymm is Llama
   (pre-RMSNorm, RoPE, SwiGLU with 3 matrices, no biases, no dropout, SDPA, logits at the caption
   positions only). Parameters are matched, not intermediate sizes: GIT keeps the 2024 shape
   (intermediate 4 x width, 3072 at base) and babymm's SwiGLU gets 2/3 of it, rounded up to a
   multiple of 64 (2048 at base, as Llama sizes it), so both MLPs hold about 8 x width^2 weights
   per layer; both tie the output layer to the input embedding (GitConfig's default was tied in
   transformers 4.x, which the 2024 participants ran; 5.x unties it). The JSON lists the
   parameters of each part of both models. The optimizers differ as each side would run them:
   babymm's `build_optimizer` (torch's fused AdamW on CUDA, as training), torch's default AdamW for GIT. On CUDA,
   babymm and bare follow babymm's `--tf32` default (TF32 matmuls, as train.py sets them), GIT
   runs exact fp32 as a plain loop does (`--hf_tf32` gives it TF32 too); each row says which.

A token is a position of the step's input batches that goes through the decoder: the image
prefix (GIT's P image tokens; CoCa's CLS) + the caption batch (padded to its longest caption,
padding included) + the text batch; the no-image text-embedding pass when a contrastive term is
on. Both sides of a comparison count the same tokens of the same batches, so each ratio is the
inverse ratio of step times. Flamingo's and CoCa's image tokens are attended to by
cross-attention, not decoder positions, and not counted.

Measurement: every model is built first (fixed seeds); then, per type, each side runs `--warmup`
steps, and the sides alternate rounds of `--steps_per_round` steps (babymm, bare, transformers,
babymm, ...; babymm's `run_stage` is paused between its rounds inside its batch iterator), each
round on the same steps' batches on every side, so load from other processes hits every side
alike. Per side: the median over rounds of tokens/s and ms/step and their range; per ratio: the
median of the per-round ratios (same batches, adjacent in time) and their range. On CUDA the
clock synchronises the device. On a CPU the JSON also has each ratio from process CPU time,
which other jobs' load changes least (`--threads 1`, the default: on a shared 2-core VM two
threads that wait for a taken core made steps take 2.7-10 s where one thread took 0.93 s).
Writes results/reference_<device>.json and .md.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import inspect
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import accelerate
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import transformers
import yaml
from accelerate import Accelerator
from torch import nn
from transformers.modeling_outputs import BaseModelOutput

from babymm.config import RunConfig, argument_classes, parse_config
from babymm.curriculum import PacingSpec, load_curriculum, pacing_function
from babymm.files import write_json_atomic, write_text_atomic
from babymm.models import MODEL_TYPES, BabyModel, build_model
from babymm.optim import build_optimizer
from babymm.tasks import task_for
from babymm.training import MetricsLog, TrainState, run_stage, step_loader, with_text

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "baseline2024_git.yaml"
# recipe keys that set sizes (this benchmark's own flags set those) or pick the type
SIZE_KEYS = {"model_type", "preset", "hidden_size", "num_layers", "num_heads", "vocab_size", "batch_size",
             "text_batch_size"}
CONTRASTIVE_KEYS = {"caption_weight", "text_weight", "clip_weight", "uniform_weight", "align_weight"}

# Sizes: babymm preset underneath, then the architecture and batch this benchmark sets.
#   cpu: babymm's `small` preset (the CPU default: 128 x 4 layers, 4 heads, vocabulary 2,048;
#        its SwiGLU width 384 is also the one matching GIT's 512 in parameters) fed as the 2024
#        baseline is where it drives the cost: 197 image tokens of width 768 in front of each
#        caption, captions of 20-40 tokens, text blocks of 128, as many text blocks as pairs
#        (8 + 8). The output layer weighs against the decoder layers about as at base (0.31 vs
#        0.30 of their parameters). A step takes ~1 s on one thread of this 2-core VM, and the
#        whole default run (4 types) about 5 minutes; 256 wide with vocabulary 8,192 and 16 + 16
#        took 6-7 s a step here.
#   base: babymm's base preset (12 x 768, vocabulary 32,768) at the 2024 recipe's batch.
#   tiny: for tests.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(babymm_preset="tiny", hidden_size=32, num_layers=2, num_heads=2, vocab_size=512,
                 image_tokens=5, feature_dim=48, batch=4, text_batch=4, block_size=16, caption_tokens=(6, 10),
                 rounds=1, steps_per_round=2, warmup=1),
    "cpu": dict(babymm_preset="small", hidden_size=128, num_layers=4, num_heads=4, vocab_size=2048,
                image_tokens=197, feature_dim=768, batch=8, text_batch=8, block_size=128, caption_tokens=(20, 40),
                rounds=12, steps_per_round=2, warmup=3),
    "base": dict(babymm_preset="base", hidden_size=768, num_layers=12, num_heads=12, vocab_size=32_768,
                 image_tokens=197, feature_dim=768, batch=128, text_batch=128, block_size=128,
                 caption_tokens=(20, 40), rounds=8, steps_per_round=5, warmup=3),
}
GOALS = {"overhead_ratio": 0.95, "vs_transformers_git_ratio": 1.2}


# ---------------------------------------------------------------------------------------------
# data: in-memory stand-ins for CaptionData and TextBlocks


class MemoryCaptions(torch.utils.data.Dataset):
    """`n` image-caption pairs as preallocated random tensors; `__getitems__` returns what
    `babymm.data.CaptionData` returns: `<s> caption </s>` right-padded to the batch's longest
    (input_ids, attention_mask), num_words, index and (for a type that reads images) the
    features [B, P, D]."""

    def __init__(self, n: int, lengths: tuple[int, int], vocab: int, image_shape: tuple[int, ...] | None,
                 generator: torch.Generator, bos: int = 2, eos: int = 3, pad: int = 0):
        lo, hi = lengths
        self.lengths = torch.randint(lo, hi + 1, (n,), generator=generator)
        self.ids = torch.randint(4, vocab, (n, hi), generator=generator)
        self.mask = (torch.arange(hi)[None, :] < self.lengths[:, None]).long()
        self.ids[:, 0] = bos
        self.ids[torch.arange(n), self.lengths - 1] = eos
        self.ids.masked_fill_(self.mask == 0, pad)
        self.num_words = ((self.lengths - 2) * 3 // 4).clamp(min=1)
        self.images = None if image_shape is None else torch.randn(n, *image_shape, generator=generator)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        width = int(self.lengths[index].max())
        batch = {"input_ids": self.ids[index, :width], "attention_mask": self.mask[index, :width],
                 "num_words": self.num_words[index], "index": index}
        if self.images is not None:
            batch["images"] = self.images[index]
        return batch


class MemoryText(torch.utils.data.Dataset):
    """`n` text blocks of `block` tokens; `__getitems__` returns what `babymm.data.TextBlocks` returns."""

    def __init__(self, n: int, block: int, vocab: int, generator: torch.Generator):
        self.ids = torch.randint(4, vocab, (n, block), generator=generator)
        self.num_words = torch.full((n,), block * 3 // 4, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        ids = self.ids[index]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "index": index,
                "num_words": self.num_words[index]}


# ---------------------------------------------------------------------------------------------
# transformers' GIT fed precomputed image tokens


class PrecomputedImageTokens(nn.Module):
    """Stands in for `GitModel.image_encoder`: `pixel_values` [B, 1, P, D] already are a frozen
    vision model's last hidden state [B, P, D] (GitModel only takes 4-D or 5-D pixel_values)."""

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> BaseModelOutput:
        return BaseModelOutput(last_hidden_state=pixel_values[:, 0])


def git_intermediate(hidden: int) -> int:
    """GIT's (and BERT's) MLP width: 4 x hidden."""
    return 4 * hidden


def swiglu_intermediate(hidden: int) -> int:
    """A SwiGLU width with the parameters of a 4 x hidden GELU MLP (2/3 of it, three matrices
    instead of two), rounded up to a multiple of 64 as Llama does: 2048 for 768."""
    return 64 * math.ceil(2 * git_intermediate(hidden) / 3 / 64)


def build_transformers_git(hidden: int, layers: int, heads: int, intermediate: int, vocab: int,
                           image_tokens: int, feature_dim: int, max_positions: int,
                           dropout: float = 0.1) -> transformers.GitForCausalLM:
    """`GitForCausalLM` whose image encoder returns precomputed tokens [B, P, feature_dim].
    GIT derives its image-token count from the vision config ((image_size / patch_size)^2 + 1,
    a ViT's patches and CLS), which its loss uses to skip the image positions: so P - 1 must be
    a square (197 = 14^2 + 1, DINO ViT-B/16 at 224 pixels). The vision tower it builds is
    thrown away (0 layers)."""
    side = math.isqrt(image_tokens - 1)
    if side * side != image_tokens - 1:
        raise ValueError(f"transformers' GIT takes a ViT's (S/p)^2 + 1 image tokens; {image_tokens} - 1 is not a square")
    vision = dict(hidden_size=feature_dim, intermediate_size=4, num_hidden_layers=0, num_attention_heads=1,
                  image_size=16 * side, patch_size=16)
    config = transformers.GitConfig(
        vision_config=vision, vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=intermediate, max_position_embeddings=max_positions,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, tie_word_embeddings=True,
        pad_token_id=0, bos_token_id=2, eos_token_id=3)
    model = transformers.GitForCausalLM(config)
    model.git.image_encoder = PrecomputedImageTokens()
    assert model.git.encoder.layer[0].attention.self.image_patch_tokens == image_tokens
    assert model.output.weight is model.git.embeddings.word_embeddings.weight, "GIT's output layer is not tied"
    return model.train()


def transformers_git_loss(model: nn.Module, batch: dict[str, torch.Tensor], text_weight: float) -> torch.Tensor:
    """The 2024 recipe on transformers' GIT: caption loss given the image + text_weight x the
    text batch's next-token loss with no image."""
    caption = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    pixel_values=batch["pixel_values"], labels=batch["labels"], use_cache=False).loss
    ids = batch["text_input_ids"]
    logits = model(input_ids=ids, attention_mask=batch["text_attention_mask"], use_cache=False).logits
    text = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
    return caption + text_weight * text


def transformers_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A babymm batch as a GIT training loop's collator gives it: labels (-100 at padding) and the
    features as 4-D pixel_values (views of the same tensors)."""
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
            "labels": batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100),
            "pixel_values": batch["images"].unsqueeze(1),
            "text_input_ids": batch["text_input_ids"], "text_attention_mask": batch["text_attention_mask"]}


def parameter_groups(model: nn.Module) -> dict[str, int]:
    """Parameters (each tensor once: tied weights are one) by part: embeddings (token and, for
    GIT, position), decoder layers (attention + MLP + norms), the image path (everything that
    reads images: projection, resampler, cross-attention, contrastive heads), the output layer
    if not tied, the final norm."""
    groups: dict[str, int] = {}
    for name, p in model.named_parameters():  # named_parameters gives a tied tensor once
        if any(k in name for k in ("embed_tokens", "word_embeddings", "position_embeddings")):
            key = "embeddings"
        elif ".layers." in name or ".layer." in name:
            key = "decoder_layers"
        elif name.startswith("output.") or "lm_head" in name:
            key = "output_layer"
        elif name == "decoder.model.norm.weight" or "embeddings.LayerNorm" in name:
            key = "norm_outside_layers"
        else:
            key = "image_path_and_heads"
        groups[key] = groups.get(key, 0) + p.numel()
    groups["total"] = sum(p.numel() for p in model.parameters())
    return groups


# ---------------------------------------------------------------------------------------------
# sides


class Clock:
    """(wall, process CPU) seconds, after the device has finished what was queued (CUDA). The
    CPU time is this process's alone, so on a shared CPU it is what the other jobs' load leaves
    least changed (with one thread; threads waiting for each other add to it)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self) -> tuple[float, float]:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter(), time.process_time()

    def since(self, start: tuple[float, float]) -> tuple[float, float]:
        wall, cpu = self()
        return wall - start[0], cpu - start[1]


@dataclass
class Side:
    """One way of training: the model, its precision, its rounds' seconds."""

    name: str
    model: nn.Module
    clock: Clock
    matmul_precision: str  # torch.set_float32_matmul_precision while it runs (TF32 on CUDA or not)
    precision: str = "fp32"
    seconds: list[float] = field(default_factory=list)  # wall, per round
    cpu_seconds: list[float] = field(default_factory=list)  # process CPU time, per round

    def record(self, took: tuple[float, float]) -> None:
        self.seconds.append(took[0])
        self.cpu_seconds.append(took[1])

    def enter(self) -> None:
        torch.set_float32_matmul_precision(self.matmul_precision)


@dataclass
class LoopSide(Side):
    """A plain loop over batches already on the device (`bare`, `transformers`)."""

    batches: list[dict[str, torch.Tensor]] = field(default_factory=list)
    loss_fn: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor] | None = None
    optimizer: torch.optim.Optimizer | None = None
    max_grad_norm: float = 1.0
    first_loss: torch.Tensor | None = None

    def run(self, steps: range) -> tuple[float, float]:
        """Train on `steps`' batches; the (wall, CPU) seconds they took."""
        self.enter()
        device_type = "cuda" if self.clock.cuda else "cpu"
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        start = self.clock()
        for t in steps:
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                loss = self.loss_fn(self.model, self.batches[t])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.first_loss is None:
                self.first_loss = loss.detach()
        return self.clock.since(start)


@dataclass
class BabymmSide(Side):
    """`run_stage` as train.py calls it; paused between rounds inside its batch iterator."""

    cfg: RunConfig | None = None
    task: Any = None
    accelerator: Accelerator | None = None
    batches_from: Callable[[int], Iterator[dict[str, torch.Tensor]]] | None = None
    peak_flops: float | None = None
    state: TrainState | None = None

    def run(self, warmup: int, rounds: int, per_round: int, others: list[LoopSide], log_dir: Path) -> None:
        """`warmup` untimed steps, then `rounds` timed rounds of `per_round` steps, running the
        `others`' warm-up and rounds between its own (babymm, other 1, other 2, babymm, ...)."""
        total = warmup + rounds * per_round
        started = [(0.0, 0.0)]

        def batches(start: int) -> Iterator[dict[str, torch.Tensor]]:
            if start != 0:
                raise AssertionError("the benchmark never resumes")
            it = iter(self.batches_from(0))
            for t in range(total):
                if t >= warmup and (t - warmup) % per_round == 0:
                    r = (t - warmup) // per_round
                    for other in others:
                        if r == 0:
                            other.run(range(warmup))
                        else:
                            other.record(other.run(range(warmup + (r - 1) * per_round, warmup + r * per_round)))
                    self.enter()
                    started[0] = self.clock()
                yield next(it)  # the sampler and the dataset's __getitems__ are timed

        def end_of_step(state: TrainState, words_before: int) -> None:
            s = state.stage_step
            if s > warmup and (s - warmup) % per_round == 0:
                self.record(self.clock.since(started[0]))

        self.state = TrainState()
        self.enter()
        call = dict(state=self.state, stage="multimodal", accelerator=self.accelerator, module=self.model,
                    num_steps=total, batches=batches, task=self.task, args=self.cfg.train,
                    log=MetricsLog(log_dir / "metrics.jsonl", self.accelerator), probe=None, end_of_step=end_of_step)
        if self.peak_flops is not None and "peak_flops" in inspect.signature(run_stage).parameters:
            call["peak_flops"] = self.peak_flops  # as train.py passes it (train/mfu in the log)
        run_stage(**call)
        if self.state.skipped_steps or self.state.stage_step != total:
            raise RuntimeError(f"babymm side: {self.state.skipped_steps} skipped steps, {self.state.stage_step}/{total}")
        for other in others:  # their last round
            other.record(other.run(range(warmup + (rounds - 1) * per_round, total)))


@dataclass
class TypeBench:
    """One model type's sides and the batches they share."""

    model_type: str
    cfg: RunConfig
    babymm: BabymmSide
    bare: LoopSide
    transformers: list[LoopSide]
    params: dict[str, dict[str, int]]
    embed_fraction: float = 0.0  # of the decoder the no-image embedding pass adds (contrastive terms)
    tokens: list[int] = field(default_factory=list)  # per step

    @property
    def loops(self) -> list[LoopSide]:
        return [self.bare, *self.transformers]

    def load_batches(self, device: torch.device) -> None:
        """Every step's batch as babymm's sampler makes it, on the device for the plain loops, and
        each step's tokens."""
        on_device = [{k: v.to(device) for k, v in b.items()} for b in self.babymm.batches_from(0)]
        prefix = self.babymm.model.prefix_tokens
        self.tokens = [b["input_ids"].shape[0] * (b["input_ids"].shape[1] + prefix)
                       + round(self.embed_fraction * b["input_ids"].numel())
                       + (b["text_input_ids"].numel() if "text_input_ids" in b else 0) for b in on_device]
        self.bare.batches = on_device
        as_git = [transformers_batch(b) for b in on_device] if self.transformers else []
        for side in self.transformers:
            side.batches = as_git

    def release_batches(self) -> None:
        for side in self.loops:
            side.batches = []


# ---------------------------------------------------------------------------------------------
# building


def recipe_flags(model_type: str, loss: str) -> list[str]:
    """The 2024 recipe's flags (configs/baseline2024_git.yaml) that `model_type` takes, without its
    sizes; `loss` "default": babymm's default loss weights instead of the recipe's."""
    recipe = yaml.safe_load(RECIPE.read_text())
    fields = {f.name for cls in argument_classes(model_type) for f in dataclasses.fields(cls) if f.init}
    flags = []
    for k, v in recipe.items():
        if k in SIZE_KEYS or k not in fields or (loss == "default" and k in CONTRASTIVE_KEYS):
            continue
        flags += [f"--{k}", str(v)]
    return flags


def sizes(args: argparse.Namespace) -> dict[str, Any]:
    """The preset's sizes with the flags that override them."""
    s = dict(SIZES[args.preset])
    for k in ("hidden_size", "num_layers", "num_heads", "vocab_size", "image_tokens", "feature_dim", "batch",
              "text_batch", "block_size", "rounds", "steps_per_round", "warmup"):
        if getattr(args, k, None) is not None:
            s[k] = getattr(args, k)
    if args.caption_tokens is not None:
        s["caption_tokens"] = tuple(args.caption_tokens)
    s["git_intermediate"] = args.git_intermediate or git_intermediate(s["hidden_size"])
    s["babymm_intermediate"] = args.babymm_intermediate or swiglu_intermediate(s["hidden_size"])
    longest = max(s["block_size"], s["caption_tokens"][1] + s["image_tokens"])
    s["max_positions"] = max(256 if args.preset != "base" else 1024, longest)
    return s


def run_config(model_type: str, s: dict[str, Any], args: argparse.Namespace, total_steps: int) -> RunConfig:
    flags = ["--model_type", model_type, "--preset", s["babymm_preset"], *recipe_flags(model_type, args.loss),
             "--hidden_size", s["hidden_size"], "--num_layers", s["num_layers"], "--num_heads", s["num_heads"],
             "--intermediate_size", s["babymm_intermediate"], "--vocab_size", s["vocab_size"],
             "--max_positions", s["max_positions"], "--batch_size", s["batch"], "--text_batch_size", s["text_batch"],
             "--block_size", s["block_size"], "--max_caption_tokens", s["caption_tokens"][1],
             "--logging_steps", args.logging_steps, "--seed", args.seed, "--multimodal_steps", total_steps,
             "--text_pretrain_steps", 0, "--mixed_precision", "bf16" if args.precision == "bf16" else "no"]
    if MODEL_TYPES[model_type].has_vision:
        flags += ["--vision_encoder", "features", "--vision_width", s["hidden_size"]]
    return parse_config([str(f) for f in flags])


def build_type(model_type: str, s: dict[str, Any], args: argparse.Namespace, accelerator: Accelerator,
               clock: Clock, peak_flops: float | None) -> TypeBench:
    total = s["warmup"] + s["rounds"] * s["steps_per_round"]
    cfg = run_config(model_type, s, args, total)
    t = cfg.train
    task = task_for(MODEL_TYPES[model_type])(cfg.loss)
    vision = MODEL_TYPES[model_type].has_vision
    derived: dict[str, Any] = {"vocab_size": s["vocab_size"]}
    if vision:
        derived.update(image_size=cfg.data.image_size, feature_dim=s["feature_dim"], feature_tokens=s["image_tokens"])
    torch.manual_seed(args.seed)
    model: BabyModel = build_model(cfg.model.resolve(**derived))
    bare_model = copy.deepcopy(model)  # the same initial weights; prepared (and wrapped) on its own
    device = accelerator.device
    bare_model.to(device)

    gen = torch.Generator().manual_seed(args.seed)
    pool = args.pool
    captions = MemoryCaptions(pool * s["batch"], s["caption_tokens"], s["vocab_size"],
                              (s["image_tokens"], s["feature_dim"]) if task.reads_images else None, gen)
    text = MemoryText(pool * s["text_batch"], s["block_size"], s["vocab_size"], gen)
    spec = load_curriculum(args.curriculum)
    pacing = pacing_function(spec.pacing)
    order = np.random.default_rng(args.seed).permutation(len(captions))  # a difficulty order
    text_order, everything = np.arange(len(text)), pacing_function(PacingSpec())
    loader_params = inspect.signature(step_loader).parameters
    loading = {k: getattr(t, f"dataloader_{k}") for k in ("num_workers", "pin_memory")
               if k in loader_params and hasattr(t, f"dataloader_{k}")}

    def multimodal_batches(start: int):  # as train.py's
        cap = step_loader(captions, order, pacing, t.multimodal_steps, t.batch_size, t.seed + 2, accelerator,
                          start, **loading)
        if not task.uses_text:
            return cap
        txt = step_loader(text, text_order, everything, t.multimodal_steps, t.text_batch_size, t.seed + 3,
                          accelerator, start, **loading)
        return with_text(cap, txt)

    embed_pass = getattr(task, "embeddings", False) and getattr(task, "captioning", True)
    fraction = getattr(model, "embedding_pass_fraction", 1.0) if embed_pass else 0.0
    tf32 = "high" if device.type == "cuda" and getattr(t, "tf32", False) else "highest"

    bare_task = task_for(MODEL_TYPES[model_type])(cfg.loss)  # its own instance (a test may wrap the other's)

    def bare_loss(m: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(bare_task.weights.get(k, 1.0) * v for k, v in bare_task.loss_terms(m, batch).items())

    bare = LoopSide("bare", bare_model, clock, tf32, args.precision, loss_fn=bare_loss,
                    optimizer=build_optimizer(bare_model, t.learning_rate, t.weight_decay,
                                              fused=device.type == "cuda"),
                    max_grad_norm=t.max_grad_norm)
    babymm = BabymmSide("babymm", model, clock, tf32, args.precision, cfg=cfg, task=task, accelerator=accelerator,
                        batches_from=multimodal_batches, peak_flops=peak_flops)
    params = {"babymm": parameter_groups(model)}
    hf_sides = []
    if model_type == "git" and not args.no_transformers:
        torch.manual_seed(args.seed)
        hf = build_transformers_git(s["hidden_size"], s["num_layers"], s["num_heads"], s["git_intermediate"],
                                    s["vocab_size"], s["image_tokens"], s["feature_dim"], s["max_positions"],
                                    args.git_dropout).to(device)
        params["transformers_git"] = parameter_groups(hf)
        text_weight = cfg.loss.text_weight
        hf_params = list(hf.parameters())
        for i, precision in enumerate(args.hf_precision):
            m = hf if i == 0 else copy.deepcopy(hf)
            if i:
                hf_params = list(m.parameters())
            hf_sides.append(LoopSide(
                f"transformers_{precision}", m, clock, "high" if args.hf_tf32 and device.type == "cuda" else "highest",
                precision,
                loss_fn=lambda mm, b: transformers_git_loss(mm, b, text_weight),
                optimizer=torch.optim.AdamW(hf_params, lr=t.learning_rate, weight_decay=t.weight_decay),
                max_grad_norm=1.0))
    return TypeBench(model_type, cfg, babymm, bare, hf_sides, params, embed_fraction=fraction)


@dataclass
class Bench:
    args: argparse.Namespace
    sizes: dict[str, Any]
    accelerator: Accelerator
    types: dict[str, TypeBench]
    load_before: list[float] = field(default_factory=lambda: list(os.getloadavg()))


def build(args: argparse.Namespace) -> Bench:
    """Every model of every side, before any is timed."""
    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    elif device.type == "cpu":  # train.py's set_threads for a lone CPU process: every core
        torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    s = sizes(args)
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision="bf16" if args.precision == "bf16" else "no")
    if accelerator.device.type != device.type:
        raise SystemExit(f"error: --device {args.device} but the Accelerator is on {accelerator.device}")
    clock = Clock(accelerator.device)
    peak = None
    try:  # train.py measures the matmul peak and run_stage logs train/mfu against it
        from babymm.speed import measure_matmul_peak

        peak = measure_matmul_peak(accelerator.device, torch.bfloat16 if args.precision == "bf16" else torch.float32,
                                   seconds=0.5 if device.type == "cuda" else 0.1)
    except ImportError:
        pass
    types = {t: build_type(t, s, args, accelerator, clock, peak) for t in args.types}
    return Bench(args, s, accelerator, types)


# ---------------------------------------------------------------------------------------------
# measuring and reporting


def side_summary(seconds: list[float], round_tokens: list[int], per_round: int) -> dict[str, float]:
    tps = [n / s for n, s in zip(round_tokens, seconds, strict=True)]
    ms = [1000 * s / per_round for s in seconds]
    return {"tokens_per_s": round(statistics.median(tps)), "tokens_per_s_min": round(min(tps)),
            "tokens_per_s_max": round(max(tps)), "step_ms": round(statistics.median(ms), 1),
            "step_ms_min": round(min(ms), 1), "step_ms_max": round(max(ms), 1)}


def ratio_summary(num: list[float], den: list[float]) -> dict[str, float]:
    """tokens/s of the side timed `num` over the one timed `den`, round by round (same tokens):
    den seconds / num seconds. Median, range, and the ratio of the median times."""
    per_round = [d / n for n, d in zip(num, den, strict=True)]
    return {"ratio": round(statistics.median(per_round), 4), "ratio_min": round(min(per_round), 4),
            "ratio_max": round(max(per_round), 4),
            "ratio_of_medians": round(statistics.median(den) / statistics.median(num), 4),
            "per_round": [round(r, 4) for r in per_round]}


def measure(bench: Bench, log_dir: Path) -> None:
    s, device = bench.sizes, bench.accelerator.device
    for name, tb in bench.types.items():
        (log_dir / name).mkdir(parents=True, exist_ok=True)
        tb.load_batches(device)
        tb.babymm.run(s["warmup"], s["rounds"], s["steps_per_round"], tb.loops, log_dir / name)
        if device.type == "cuda":  # a type's batches (3 GB at base) go before the next type's come
            tb.release_batches()
            torch.cuda.empty_cache()


def machine(device: torch.device) -> dict[str, Any]:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None, "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__, "accelerate": accelerate.__version__}


def report(bench: Bench, argv: list[str]) -> dict[str, Any]:
    s, args = bench.sizes, bench.args
    k, w = s["steps_per_round"], s["warmup"]
    out: dict[str, Any] = {}
    sides, overhead, vs_hf = [], {}, {}
    for name, tb in bench.types.items():
        round_tokens = [sum(tb.tokens[w + r * k: w + (r + 1) * k]) for r in range(s["rounds"])]
        for side in (tb.babymm, *tb.loops):
            sides.append({"type": name, "side": side.name, "precision": side.precision,
                          "tf32": bench.accelerator.device.type == "cuda" and side.matmul_precision == "high",
                          "params_M": round(sum(p.numel() for p in side.model.parameters()) / 1e6, 3),
                          **side_summary(side.seconds, round_tokens, k),
                          "cpu_step_ms": round(statistics.median(side.cpu_seconds) * 1000 / k, 1),
                          "round_s": [round(x, 4) for x in side.seconds],
                          "round_cpu_s": [round(x, 4) for x in side.cpu_seconds]})
        overhead[name] = {**ratio_summary(tb.babymm.seconds, tb.bare.seconds),
                          "cpu_time": ratio_summary(tb.babymm.cpu_seconds, tb.bare.cpu_seconds)}
        for hf in tb.transformers:
            vs_hf[hf.precision] = {**ratio_summary(tb.babymm.seconds, hf.seconds),
                                   "cpu_time": ratio_summary(tb.babymm.cpu_seconds, hf.cpu_seconds)}
        out.setdefault("tokens_per_step", {})[name] = round(statistics.mean(tb.tokens[w:]), 1)
        out.setdefault("params", {})[name] = tb.params
    first = bench.types.get("git") or next(iter(bench.types.values()))
    out = {
        "overhead_ratio": overhead[first.model_type]["ratio"],
        "overhead_ratio_range": [overhead[first.model_type]["ratio_min"], overhead[first.model_type]["ratio_max"]],
        "overhead_type": first.model_type,
        "vs_transformers_git_ratio": vs_hf[args.hf_precision[0]]["ratio"] if vs_hf else None,
        "vs_transformers_git_ratio_range": ([vs_hf[args.hf_precision[0]]["ratio_min"],
                                             vs_hf[args.hf_precision[0]]["ratio_max"]] if vs_hf else None),
        # the same ratios from process CPU time (robust to other jobs' load on a shared CPU at 1 thread)
        "overhead_ratio_cpu_time": overhead[first.model_type]["cpu_time"]["ratio"],
        "vs_transformers_git_ratio_cpu_time": vs_hf[args.hf_precision[0]]["cpu_time"]["ratio"] if vs_hf else None,
        "goals": {k2: f">= {v}" for k2, v in GOALS.items()},
        "overhead": overhead, "vs_transformers_git": vs_hf, "sides": sides, **out,
        "tokens": "positions of the step's input batches through the decoder: image prefix (GIT) or CLS (CoCa) + "
                  "caption batch padded to its longest + text batch (+ the no-image embedding pass with a "
                  "contrastive term); the same batches on every side",
        "config": {**{k2: v for k2, v in s.items()}, "preset": args.preset, "device": args.device,
                   "precision": args.precision, "hf_precision": args.hf_precision, "loss": args.loss,
                   "git_dropout": args.git_dropout, "logging_steps": args.logging_steps, "curriculum": args.curriculum,
                   "seed": args.seed, "pool": args.pool,
                   "loss_weights": {n: dict(tb.babymm.task.weights) for n, tb in bench.types.items()},
                   "learning_rate": first.cfg.train.learning_rate, "weight_decay": first.cfg.train.weight_decay},
        "machine": {**machine(bench.accelerator.device), "load_average_before": bench.load_before,
                    "load_average_after": list(os.getloadavg())},
        "command": " ".join([Path(sys.executable).name, "benchmarks/reference.py", *argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return out


def markdown(result: dict[str, Any]) -> str:
    rows = []
    for r in result["sides"]:
        ratio = ""
        if r["side"] == "bare":
            o = result["overhead"][r["type"]]
            ratio = f"babymm/bare {o['ratio']:.3f} [{o['ratio_min']:.3f}, {o['ratio_max']:.3f}]"
        elif r["side"].startswith("transformers"):
            o = result["vs_transformers_git"][r["precision"]]
            ratio = f"babymm/transformers {o['ratio']:.3f} [{o['ratio_min']:.3f}, {o['ratio_max']:.3f}]"
        rows.append({"type": r["type"], "side": r["side"], "precision": r["precision"], "params_M": r["params_M"],
                     "step_ms": f"{r['step_ms']} [{r['step_ms_min']}, {r['step_ms_max']}]",
                     "tokens_per_s": f"{r['tokens_per_s']} [{r['tokens_per_s_min']}, {r['tokens_per_s_max']}]",
                     "ratio (median [range] over rounds)": ratio})
    c, m = result["config"], result["machine"]
    head = (f"# babymm against the references ({c['device']}, {m['gpu'] or m['processor']}, "
            f"{m['torch_threads']} threads, {result['date']})\n\n`{result['command']}`\n\n"
            f"- overhead_ratio ({result['overhead_type']}): **{result['overhead_ratio']}** "
            f"(range {result['overhead_ratio_range']}; goal {result['goals']['overhead_ratio']})\n"
            f"- vs_transformers_git_ratio: **{result['vs_transformers_git_ratio']}** "
            f"(range {result['vs_transformers_git_ratio_range']}; goal {result['goals']['vs_transformers_git_ratio']})\n"
            f"- from process CPU time instead of wall time: overhead {result['overhead_ratio_cpu_time']}, vs "
            f"transformers {result['vs_transformers_git_ratio_cpu_time']}; load average before/after "
            f"{[round(x, 2) for x in m['load_average_before']]} / {[round(x, 2) for x in m['load_average_after']]}\n"
            f"- {c['hidden_size']} wide x {c['num_layers']} layers x {c['num_heads']} heads, vocabulary "
            f"{c['vocab_size']}, {c['image_tokens']} image tokens of {c['feature_dim']}, batch {c['batch']} pairs "
            f"(captions {c['caption_tokens'][0]}-{c['caption_tokens'][1]} tokens) + {c['text_batch']} text blocks of "
            f"{c['block_size']}; MLP: babymm SwiGLU {c['babymm_intermediate']}, GIT {c['git_intermediate']}; "
            f"{c['rounds']} rounds x {c['steps_per_round']} steps after {c['warmup']} warm-up\n"
            f"- tokens: {result['tokens']}\n\n")
    return head + pd.DataFrame(rows).to_markdown(index=False) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="See the module docstring for what is measured.")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--preset", choices=sorted(SIZES), help="sizes: cpu (default on the CPU), base (default on "
                   "CUDA: babymm's base preset at the 2024 batch), tiny (tests)")
    p.add_argument("--types", nargs="+", default=sorted(MODEL_TYPES, key=["git", "flamingo", "coca", "text"].index),
                   choices=sorted(MODEL_TYPES),
                   help="model types for the overhead comparison (transformers' GIT runs with git)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="babymm (Accelerator mixed_precision) and the bare loop (autocast)")
    p.add_argument("--hf_precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                   help="transformers' GIT, one side each (the first gives vs_transformers_git_ratio); the "
                        "2024 baseline trained in fp32")
    p.add_argument("--loss", default="recipe2024", choices=["recipe2024", "default"],
                   help="recipe2024: caption + 0.25 text, no contrastive term; default: babymm's default weights")
    p.add_argument("--no_transformers", action="store_true", help="skip transformers' GIT")
    p.add_argument("--hf_tf32", action="store_true",
                   help="CUDA: TF32 matmuls for transformers' GIT too (babymm and bare follow babymm's --tf32 "
                        "default, on; a plain fp32 loop has them off)")
    for name in ("hidden_size", "num_layers", "num_heads", "vocab_size", "image_tokens", "feature_dim",
                 "block_size"):
        p.add_argument(f"--{name}", type=int)
    p.add_argument("--batch", type=int, help="image-caption pairs per step")
    p.add_argument("--text_batch", type=int, help="text blocks per step")
    p.add_argument("--caption_tokens", type=int, nargs=2, metavar=("MIN", "MAX"),
                   help="caption lengths, <s> and </s> included, drawn uniformly")
    p.add_argument("--babymm_intermediate", type=int, help="default: 2/3 of GIT's, rounded up to 64 (same params)")
    p.add_argument("--git_intermediate", type=int, help="default: 4 x hidden")
    p.add_argument("--git_dropout", type=float, default=0.1, help="GIT's hidden and attention dropout (GitConfig's)")
    p.add_argument("--rounds", type=int)
    p.add_argument("--steps_per_round", type=int)
    p.add_argument("--warmup", type=int)
    p.add_argument("--logging_steps", type=int, default=10)
    p.add_argument("--curriculum", default="length")
    p.add_argument("--pool", type=int, default=4, help="dataset size in batches")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; 0: train.py's rule (every core on the CPU). Default 1: on a CPU shared with "
                        "other jobs, threads that wait for a taken core make timings erratic (here 2 threads gave "
                        "2.7-10 s a step where 1 gave 0.93 +- 0.01 s)"),
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out_dir", type=Path, default=ROOT / "results")
    args = p.parse_args(argv)
    args.preset = args.preset or ("cpu" if args.device == "cpu" else "base")
    if args.loss != "recipe2024" and not args.no_transformers:
        print("note: --loss default adds contrastive terms transformers' GIT does not compute; it is left out",
              file=sys.stderr)
        args.no_transformers = True
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    bench = build(args)
    with tempfile.TemporaryDirectory(prefix="babymm-reference-") as logs:
        measure(bench, Path(logs))
    result = report(bench, argv)
    out = args.out_dir / f"reference_{args.device}"
    write_json_atomic(out.with_suffix(".json"), result)
    write_text_atomic(out.with_suffix(".md"), markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

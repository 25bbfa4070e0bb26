"""Optimizer and learning-rate schedule (pure function of the step)."""

from __future__ import annotations

import math

import torch
from torch import nn


def lr_multiplier(step: int, warmup_steps: int, total_steps: int, schedule: str = "cosine",
                  min_ratio: float = 0.1) -> float:
    """Linear warmup to 1, then constant or cosine decay to `min_ratio` at `total_steps`."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise ValueError(f"lr schedule {schedule!r} unknown; use cosine or constant")
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, fused: bool = False) -> torch.optim.AdamW:
    """AdamW with decay only on matrices (dim >= 2); norms, biases and the logit scale are exempt.

    `fused`: torch's fused kernel, one kernel launch for every parameter's update instead of a
    few per tensor group, what a GPU step wants (training asks for it on CUDA). CPU runs keep the
    default multi-tensor update: the fused one differs from it in the last bits (1e-7), and
    results/ were made on CPUs, to be reproduced bit for bit; the optimizer step is about 1% of a
    small-preset CPU step."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6, fused=fused)


def build_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                    schedule: str) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, warmup_steps, total_steps, schedule))

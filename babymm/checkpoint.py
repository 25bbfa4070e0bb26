"""Checkpoints that survive a kill, and exported models at word milestones.

A run directory holds

    checkpoints/step-00000400/   model, optimizer and RNG states (`accelerator.save_state`,
                                 weights as safetensors) + trainer_state.json: the `TrainState`
                                 (stage, steps, words seen, schedule, unlogged loss sums) and
                                 how much of metrics.jsonl was written when it was saved;
                                 task_state.safetensors: the task's own tensors (DeCLIP's queue)
    milestones/chck_1M/          an exported model (`babymm.models.save_model`: the transformers
                                 checkpoint the official pipeline loads, with its tokenizer and
                                 processor), run_config.json and milestone.json

A checkpoint is written into a hidden temporary directory and renamed into place when complete,
so a directory named `step-N` is always whole; anything else is ignored on resume, and said so.
The trainer state goes as JSON, not through `register_for_checkpointing`, which pickles and
unpickles with `weights_only=False`; accelerate reads its own files with `weights_only=True`.

Milestones follow the BabyLM 2025 rules: every 1M words to 10M, every 10M to 100M, every 100M
to 1B (a multi-epoch run), named as the rules' revisions are (`chck_1M`, ..., `chck_100M`).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from babymm.files import atomic_dir, write_json_atomic

CHECKPOINTS = "checkpoints"
MILESTONES = "milestones"
STATE_FILE = "trainer_state.json"
TASK_STATE_FILE = "task_state.safetensors"  # what the task keeps between steps (DeCLIP's text queue)
_NAME = re.compile(r"step-(\d+)")
# the model's weights as `accelerate.save_state` writes them: whole (safetensors), or under FSDP
# sharded (a torch.distributed.checkpoint directory, whose .metadata is written last) or gathered
MODEL_FILES = ("model.safetensors", "pytorch_model_fsdp_0/.metadata", "pytorch_model_fsdp.bin")
BABYLM_MILESTONES = ([m * 1_000_000 for m in range(1, 10)] + [m * 10_000_000 for m in range(1, 10)]
                     + [m * 100_000_000 for m in range(1, 11)])


def _has_model(d: Path) -> bool:
    return any((d / f).is_file() for f in MODEL_FILES)


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step-{step:08d}"


def _say(msg: str) -> None:
    print(f"[checkpoint] {msg}", file=sys.stderr, flush=True)


def complete_checkpoints(run_dir: Path, report: bool = False) -> list[Path]:
    """The run's complete checkpoints, oldest first. With `report`, each incomplete one (a
    temporary directory left by a kill, or a step directory missing its state) is named."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for d in sorted(root.iterdir()):
        if _NAME.fullmatch(d.name) and (d / STATE_FILE).is_file() and _has_model(d):
            found.append(d)
        elif report:
            _say(f"ignoring {d}: incomplete (the run was stopped while writing it)")
    return sorted(found, key=lambda d: int(_NAME.fullmatch(d.name).group(1)))


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None; incomplete ones are reported."""
    found = complete_checkpoints(run_dir, report=True)
    return found[-1] if found else None


def read_checkpoint_state(path: Path) -> dict[str, Any]:
    """trainer_state.json of a checkpoint; ValueError if `path` is not a complete checkpoint."""
    path = Path(path)
    state_file = path / STATE_FILE
    if not state_file.is_file() or not _has_model(path):
        raise ValueError(f"{path} is not a complete checkpoint (no {STATE_FILE} or model weights); "
                         f"use one of {CHECKPOINTS}/step-* or --resume_from_checkpoint auto")
    return json.loads(state_file.read_text())


def _tied_embeddings_note(record: logging.LogRecord) -> bool:
    """accelerate warns at every save that the tied output embedding is stored once; it is re-tied
    on load (the exact-resume tests hold), so the warning is dropped."""
    return "Removed shared tensor" not in record.getMessage()


def save_checkpoint(accelerator: Accelerator, run_dir: Path, step: int, trainer_state: dict[str, Any],
                    keep: int, tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Every rank writes its part into a temporary directory; the main process adds the trainer
    state (and the task's `tensors`, the same on every rank: DeCLIP's queue) and renames it into
    place, then deletes all but the newest `keep` (0 keeps all)."""
    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(f".{final.name}.tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a kill
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    noise = logging.getLogger("accelerate.utils.other")
    noise.addFilter(_tied_embeddings_note)
    try:
        accelerator.save_state(str(tmp))
    finally:
        noise.removeFilter(_tied_embeddings_note)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json_atomic(tmp / STATE_FILE, {**trainer_state, "num_processes": accelerator.num_processes})
        if tensors:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / TASK_STATE_FILE))
        if final.exists():  # the same step again, after a resume from an older checkpoint
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old)
        else:
            tmp.rename(final)
        if keep > 0:
            for old in complete_checkpoints(run_dir)[:-keep]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


class CheckpointError(ValueError):
    """A checkpoint the run cannot go on from as it was (the message says why and what to do)."""


def load_task_state(path: Path) -> dict[str, torch.Tensor]:
    """The task's tensors saved with the checkpoint at `path` (empty if it has none)."""
    f = path / TASK_STATE_FILE
    return load_file(str(f)) if f.is_file() else {}


def load_checkpoint(accelerator: Accelerator, path: Path) -> dict[str, Any]:
    """Restore the prepared model and optimizer and every rank's RNG states from `path`; returns
    its trainer state (the caller restores the `TrainState` from it)."""
    saved = read_checkpoint_state(path)
    if saved.get("num_processes") != accelerator.num_processes:
        _say(f"{path} was written by {saved.get('num_processes')} process(es), resumed by "
             f"{accelerator.num_processes}: batches are the same, RNG states of new ranks start fresh")
    accelerator.load_state(str(path))
    return saved


def truncate_log(path: Path, size: int) -> None:
    """Cut `path` back to its first `size` bytes: what was logged after the checkpoint is logged again."""
    path = Path(path)
    if path.exists() and path.stat().st_size > size:
        with path.open("r+b") as f:
            f.truncate(size)


# ---------------------------------------------------------------------------------- word milestones


def parse_milestones(spec: str) -> list[int]:
    """`babylm` (1M..10M, 20M..100M, 200M..1B), `none`, or a comma list such as `100k,250k,1M`."""
    spec = spec.strip().lower()
    if spec == "babylm":
        return list(BABYLM_MILESTONES)
    if spec in ("none", ""):
        return []
    scale = {"k": 1_000, "m": 1_000_000, "b": 1_000_000_000}
    out = []
    for part in spec.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+(?:\.\d+)?)([kmb]?)", part)
        if not m or float(m.group(1)) * scale.get(m.group(2), 1) <= 0:
            raise ValueError(f"--word_milestones: {part!r} is not a positive word count; use babylm, none, "
                             "or a comma list such as 500k,1M,2M")
        out.append(round(float(m.group(1)) * scale.get(m.group(2), 1)))
    return sorted(set(out))


def milestone_name(words: int) -> str:
    """`chck_1M`, `chck_20M`, `chck_500k`: the BabyLM 2025 revision names (M for whole millions)."""
    if words % 1_000_000 == 0:
        return f"chck_{words // 1_000_000}M"
    if words % 1_000 == 0:
        return f"chck_{words // 1_000}k"
    return f"chck_{words}"


def crossed(milestones: list[int], before: int, after: int) -> list[int]:
    """The milestones passed by going from `before` to `after` words seen."""
    return [m for m in milestones if before < m <= after]


def save_milestone(run_dir: Path, milestone: int, save_model: Callable[[Path], None],
                   info: dict[str, Any]) -> Path:
    """Write `milestones/<name>/` atomically: `save_model(dir)` exports the model and tokenizer."""
    out = Path(run_dir) / MILESTONES / milestone_name(milestone)
    with atomic_dir(out) as tmp:
        save_model(tmp)
        write_json_atomic(tmp / "milestone.json", {"milestone_words": milestone, **info})
    return out


def milestone_dirs(run_dir: Path) -> list[Path]:
    """A run's exported milestones, in order of words seen."""
    root = Path(run_dir) / MILESTONES
    dirs = [d for d in root.glob("chck_*") if (d / "milestone.json").is_file()] if root.is_dir() else []
    return sorted(dirs, key=lambda d: json.loads((d / "milestone.json").read_text())["milestone_words"])

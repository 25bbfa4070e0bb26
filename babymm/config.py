"""Typed run configuration, parsed by `HfArgumentParser` from flags and an optional YAML file.

`--config run.yaml` supplies defaults (keys are the field names below); flags override it.
The resolved configuration is saved beside the run as `run_config.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

DEFAULT_DATA_DIR = "data/world"


@dataclass
class DataArguments:
    data_dir: str = field(default=DEFAULT_DATA_DIR, metadata={
        "help": "BabyLM-format data directory. The built-in world is generated here if missing."})
    curriculum: str = field(default="length", metadata={
        "help": "Curriculum name (curricula/NAME.yaml) or a path to a YAML spec."})
    word_budget: int = field(default=500_000, metadata={
        "help": "Words of the built-in world (text + captions) when it has to be generated."})
    image_size: int = field(default=32, metadata={"help": "Images are resized to this square size."})
    vocab_size: int = field(default=2048, metadata={"help": "Requested SentencePiece vocabulary size."})
    block_size: int = field(default=64, metadata={"help": "Tokens per text-only training chunk."})
    max_caption_tokens: int = field(default=40, metadata={"help": "Captions are cut to this many tokens."})


@dataclass
class ModelArguments:
    model_type: str = field(default="git", metadata={"help": "Model type (see babymm.models.MODEL_TYPES)."})
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 384
    vision_encoder: str = field(default="conv", metadata={
        "help": "conv: small CNN on raw pixels, trained from scratch; features: precomputed vectors."})
    vision_width: int = field(default=128, metadata={"help": "Channels of the vision encoder's tokens."})
    embed_dim: int = field(default=128, metadata={"help": "Dimension of the contrastive embedding."})


@dataclass
class LossArguments:
    caption_weight: float = field(default=1.0, metadata={"help": "Captioning LM loss weight."})
    text_weight: float = field(default=0.25, metadata={"help": "Mixed-in text-only LM loss weight."})
    clip_weight: float = 1.0
    uniform_weight: float = field(default=1.0, metadata={"help": "L_Uniform weight; 0 with align 0 = plain CLIP."})
    align_weight: float = field(default=1.0, metadata={"help": "L_Align weight."})
    xuniform_weight: float = field(default=0.0, metadata={"help": "L_XUniform weight (CUAXU variant)."})
    temperature: float = field(default=0.07, metadata={"help": "Initial softmax temperature of the CLIP loss."})
    learn_temperature: bool = field(default=True, metadata={
        "help": "Learn the logit scale (clamped at 100) or keep it fixed."})


@dataclass
class TrainArguments:
    output_dir: str | None = field(default=None, metadata={
        "help": "Where the run is written; default runs/<model_type>-<curriculum>-s<seed>."})
    seed: int = 0
    text_pretrain_steps: int = field(default=600, metadata={"help": "Stage 1 steps; 0 skips text-only pretraining."})
    multimodal_steps: int = field(default=1000, metadata={"help": "Stage 2 steps."})
    batch_size: int = field(default=64, metadata={"help": "Image-caption pairs per step (global)."})
    text_batch_size: int = field(default=32, metadata={"help": "Text chunks per step (global)."})
    learning_rate: float = 2e-3
    weight_decay: float = 0.1
    warmup_steps: int = 100
    lr_schedule: str = field(default="cosine", metadata={"help": "cosine or constant (after warmup)."})
    max_grad_norm: float = 1.0
    use_cpu: bool = field(default=False, metadata={"help": "Train on the CPU even if an accelerator is present."})
    mixed_precision: str = field(default="no", metadata={"help": "no or bf16 (Accelerate autocast)."})
    logging_steps: int = 50
    eval_steps: int = field(default=100, metadata={
        "help": "Every N multimodal steps (and at its first and last), log eval/gap/* on a fixed sample "
                "of held-out pairs (eval/captions/heldout.jsonl); 0 switches it off."})
    eval_gap_pairs: int = field(default=500, metadata={
        "help": "Held-out pairs in that sample: the first N of the file."})
    run_eval: bool = field(default=True, metadata={"help": "Score the saved model when training ends."})
    eval_batch_size: int = 64
    report_to: str = field(default="none", metadata={"help": "Accelerate tracker (tensorboard, wandb, ...)."})
    overwrite_output_dir: bool = False


@dataclass
class RunConfig:
    data: DataArguments
    model: ModelArguments
    loss: LossArguments
    train: TrainArguments

    def to_dict(self) -> dict[str, Any]:
        return {k: dataclasses.asdict(getattr(self, k)) for k in ("data", "model", "loss", "train")}


ARG_CLASSES = (DataArguments, ModelArguments, LossArguments, TrainArguments)


def parse_config(argv: list[str] | None = None) -> RunConfig:
    """Flags over an optional `--config FILE.yaml` (flat keys, or nested by section)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path)
    known, rest = pre.parse_known_args(argv)
    parser = HfArgumentParser(ARG_CLASSES)
    parser.add_argument("--config", type=Path, help="YAML file of defaults; flags override it.")
    if known.config is not None:
        parser.set_defaults(**_read_config_file(known.config, parser))
    # outputs: the four dataclasses, a namespace holding --config, then unparsed strings
    *outputs, extra = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    data, model, loss, train = outputs[:4]
    return RunConfig(data, model, loss, train)


def _read_config_file(path: Path, parser: HfArgumentParser) -> dict[str, Any]:
    if not path.exists():
        raise SystemExit(f"error: config file {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("data", "model", "loss", "train") and isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    known = {a.dest for a in parser._actions}
    unknown = sorted(set(flat) - known)
    if unknown:
        raise SystemExit(f"error: {path}: unknown keys {unknown}; see `babymm/train.py --help`")
    return flat

"""Typed run configuration, parsed by `HfArgumentParser` from flags and an optional YAML file.

Four dataclasses: data and training flags (here), the model type's own config class (beside
its model in `babymm.models`) and the loss flags of its task (`babymm.tasks`). Precedence:
flags over `--config run.yaml` (keys are field names, flat or by section) over `--preset`.
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

from babymm.checkpoint import parse_milestones
from babymm.models import DEFAULT_PRESET, MODEL_TYPES, PRESETS, DecoderConfig, model_class
from babymm.models.vision import VisionConfig
from babymm.tasks import (
    ContrastiveLossArguments,
    LMLossArguments,
    loss_problems,
    model_problems,
    recipe_defaults,
    task_for,
)
from babymm.training import stage_warmup

DEFAULT_DATA_DIR = "data/world"


@dataclass
class DataArguments:
    data_dir: str = field(default=DEFAULT_DATA_DIR, metadata={
        "help": "BabyLM-format data directory. The built-in world is generated here if missing."})
    curriculum: str = field(default="length", metadata={
        "help": "Curriculum name (curricula/NAME.yaml) or a path to a YAML spec."})
    word_budget: int | None = field(default=None, metadata={
        "help": "Train on exactly this many words (text + captions, whitespace tokens), drawn from --data_dir "
                "by whole lines and whole images (data_prep.budget); prepared apart from every other budget and "
                "seed. A missing or empty --data_dir gets a built-in world of this size. Default: the data as it is."})
    text_fraction: float = field(default=0.5, metadata={
        "help": "Share of --word_budget for the text-only portion (the BabyLM tracks: 0.5); the rest is captions."})
    data_seed: int | None = field(default=None, metadata={
        "help": "Seed of the --word_budget draw; default: --seed, so each seed's run sees its own draw (pass one "
                "number to hold the data fixed across seeds)."})
    image_size: int = field(default=32, metadata={"help": "Images are resized to this square size."})
    vocab_size: int = field(default=2048, metadata={"help": "Requested SentencePiece vocabulary size (preset)."})
    block_size: int = field(default=64, metadata={"help": "Tokens per text-only training chunk."})
    max_caption_tokens: int = field(default=40, metadata={"help": "Captions are cut to this many tokens."})
    on_bad_record: str = field(default="error", metadata={
        "help": "error: a bad text line or caption record stops data prep, naming file and line; skip: "
                "it is left out, counted in the ingest manifest and reported."})
    image_root: str | None = field(default=None, metadata={
        "help": "Directory the relative image paths of --data_dir's captions/*.jsonl resolve against, and the only "
                "place images may come from (like LLaVA's --image_folder: a COCO or CC3M image store kept once, "
                "outside the data). Default: paths relative to each jsonl file, inside --data_dir."})


@dataclass
class TrainArguments:
    output_dir: str | None = field(default=None, metadata={
        "help": "Where the run is written; default runs/<model_type>-<curriculum>-s<seed>."})
    seed: int = 0
    text_pretrain_steps: int = field(default=600, metadata={"help": "Stage 1 steps; 0 skips text-only pretraining."})
    multimodal_steps: int | None = field(default=None, metadata={
        "help": "Stage 2 steps; default 1000, or what the curriculum's epochs_per_stage gives (then this flag is "
                "refused: the spec sets the length)."})
    batch_size: int = field(default=64, metadata={"help": "Image-caption pairs per step (global)."})
    text_batch_size: int = field(default=32, metadata={"help": "Text chunks per step (global)."})
    learning_rate: float = 2e-3
    weight_decay: float = 0.1
    warmup_steps: int = field(default=100, metadata={
        "help": "Linear warmup of each stage, capped at a tenth of the stage + 1 (printed when it bites)."})
    lr_schedule: str = field(default="cosine", metadata={"help": "cosine or constant (after warmup)."})
    max_grad_norm: float = 1.0
    num_threads: int = field(default=0, metadata={
        "help": "CPU threads per process; 0: every core for a lone CPU process (`accelerate launch` "
                "would give it one), what the launcher set for several."})
    use_cpu: bool = field(default=False, metadata={"help": "Train on the CPU even if an accelerator is present."})
    mixed_precision: str = field(default="no", metadata={
        "help": "no or bf16 (Accelerate autocast). fp16 is refused: its loss scaler's skipped steps are not "
                "handled."})
    compile: bool = field(default=False, metadata={
        "help": "torch.compile the model's repeated blocks in place (decoder layers, vision encoder, "
                "cross-attention blocks): the same weights and checkpoints, the same losses as eager within "
                "float tolerance (tested), faster steps on a GPU after a first slow one."})
    tf32: bool = field(default=True, metadata={
        "help": "On CUDA: float32 matmuls on TF32 tensor cores (torch.set_float32_matmul_precision('high')), "
                "the usual choice for fp32 training on A100/H100; --tf32 false for exact fp32. CPUs have no TF32: "
                "there it changes nothing (environment.json records whether it was in force)."})
    dataloader_num_workers: int = field(default=0, metadata={
        "help": "Processes that build batches ahead of the step (0: in the training process). The batches are "
                "the same either way (a pure function of seed and step); see README's data loading benchmark."})
    dataloader_pin_memory: bool = field(default=True, metadata={
        "help": "On CUDA: batches in page-locked memory, copied to the GPU without blocking the step."})
    logging_steps: int = 50
    checkpointing_steps: int = field(default=500, metadata={
        "help": "Save a resumable checkpoint (model, optimizer, schedule, RNG, step, words seen) every N "
                "steps and at the end, in OUTPUT_DIR/checkpoints/; 0: never."})
    save_total_limit: int = field(default=1, metadata={
        "help": "Keep the newest N checkpoints (0: all). Word-milestone exports are always kept."})
    resume_from_checkpoint: str | None = field(default=None, metadata={
        "help": "auto: go on from the newest complete checkpoint in --output_dir (start if there is none); "
                "or a checkpoint directory. The run's configuration must match the one it was started with."})
    word_milestones: str = field(default="babylm", metadata={
        "help": "Export the model when the words trained on (text + captions) pass each milestone, into "
                "OUTPUT_DIR/milestones/chck_<words>: babylm (1M..10M, 20M..100M, 200M..1B, as the 2025 "
                "rules ask), none, or a comma list such as 100k,250k."})
    skip_nonfinite: int = field(default=0, metadata={
        "help": "Steps with a non-finite loss or gradient that may be skipped (counted in the log) "
                "before the run stops; 0: stop at the first."})
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
    """A run: data, the model type's own config, the loss flags its task honours, training."""

    data: DataArguments
    model: DecoderConfig
    loss: LMLossArguments
    train: TrainArguments
    preset: str = DEFAULT_PRESET

    @property
    def model_type(self) -> str:
        return self.model.model_type

    def to_dict(self) -> dict[str, Any]:
        return {"data": dataclasses.asdict(self.data),
                "model": {"model_type": self.model_type, "preset": self.preset, **self.model.flags()},
                "loss": dataclasses.asdict(self.loss), "train": dataclasses.asdict(self.train)}


    def _loss_numbers(self) -> list[tuple[str, float]]:
        """The loss section's numeric flags (weights, rates, sizes), which must not be negative."""
        return [(k, v) for k, v in dataclasses.asdict(self.loss).items()
                if isinstance(v, int | float) and not isinstance(v, bool)]

    def problems(self, num_processes: int) -> list[str]:
        """Everything wrong with this configuration for `num_processes` processes, one line each,
        found before any work is done. Empty when the run can start."""
        d, t = self.data, self.train
        found = []

        def need(ok: bool, msg: str) -> None:
            if not ok:
                found.append(msg)

        for name, value in [("learning_rate", t.learning_rate), ("weight_decay", t.weight_decay),
                            ("warmup_steps", t.warmup_steps), ("text_pretrain_steps", t.text_pretrain_steps),
                            ("multimodal_steps", t.multimodal_steps or 0), ("eval_steps", t.eval_steps),
                            ("checkpointing_steps", t.checkpointing_steps), ("save_total_limit", t.save_total_limit),
                            ("skip_nonfinite", t.skip_nonfinite), ("num_threads", t.num_threads),
                            ("dataloader_num_workers", t.dataloader_num_workers), *self._loss_numbers()]:
            need(value >= 0, f"--{name} {value} is negative")
        for name, value in [("batch_size", t.batch_size), ("text_batch_size", t.text_batch_size),
                            ("logging_steps", t.logging_steps), ("max_grad_norm", t.max_grad_norm),
                            ("eval_batch_size", t.eval_batch_size), ("eval_gap_pairs", t.eval_gap_pairs),
                            ("block_size", d.block_size), ("max_caption_tokens", d.max_caption_tokens),
                            ("image_size", d.image_size), ("vocab_size", d.vocab_size)]:
            need(value > 0, f"--{name} {value} must be positive")
        for name, value in [("batch_size", t.batch_size), ("text_batch_size", t.text_batch_size)]:
            need(value <= 0 or value % num_processes == 0,
                 f"--{name} {value} is not divisible by the {num_processes} processes; each must get an equal share")
        need((t.multimodal_steps is None or t.multimodal_steps > 0) or t.text_pretrain_steps > 0,
             "--text_pretrain_steps and --multimodal_steps are both 0")
        need(d.word_budget is None or d.word_budget > 0, f"--word_budget {d.word_budget} must be positive")
        need(0 <= d.text_fraction <= 1, f"--text_fraction {d.text_fraction} must be in [0, 1]")
        need(d.word_budget is not None or (d.text_fraction == 0.5 and d.data_seed is None),
             "--text_fraction and --data_seed shape a --word_budget draw; pass --word_budget too")
        need(d.on_bad_record in ("error", "skip"), f"--on_bad_record {d.on_bad_record!r}: use error or skip")
        need(t.lr_schedule in ("cosine", "constant"), f"--lr_schedule {t.lr_schedule!r}: use cosine or constant")
        need(t.mixed_precision != "fp16", "--mixed_precision fp16 is not supported: its loss scaler skips steps "
             "that overflow, which this loop would count as trained or stop on as non-finite; use bf16 (CPUs, "
             "A100/H100) or no")
        need(t.mixed_precision in ("no", "bf16", "fp16"), f"--mixed_precision {t.mixed_precision!r}: use no or bf16")
        if isinstance(self.loss, ContrastiveLossArguments):  # the recipe's rules, alone and against the model
            found += loss_problems(self.loss) + model_problems(self.loss, self.model)
        if all(v >= 0 for _, v in self._loss_numbers()) and not found:
            try:  # the loss weights' own rules (a stage 2 that reads no captions is refused)
                task_for(model_class(self.model_type))(self.loss)
            except ValueError as e:
                found.append(str(e))
        try:
            parse_milestones(t.word_milestones)
        except ValueError as e:
            found.append(str(e))
        try:  # the architecture's own rules (heads divide the width, the temperature above the clamp, ...)
            model = self.model
            if isinstance(model, VisionConfig):
                model = model.resolve(image_size=d.image_size)
            model.check()
        except ValueError as e:
            found.append(str(e))
        return found

    def warnings(self) -> list[str]:
        """What the run does differently from what a flag might be read to say."""
        t, notes = self.train, []
        for stage, steps in (("text", t.text_pretrain_steps), ("multimodal", t.multimodal_steps or 0)):
            if steps and stage_warmup(t.warmup_steps, steps) < t.warmup_steps:
                notes.append(f"--warmup_steps {t.warmup_steps} is cut to {stage_warmup(t.warmup_steps, steps)} "
                             f"for the {steps}-step {stage} stage (at most a tenth of a stage + 1)")
        return notes


# fields a resumed run may change: where and how it is written and watched, not what it learns
RESUME_MAY_CHANGE = {"output_dir", "overwrite_output_dir", "resume_from_checkpoint", "num_threads", "report_to",
                     "run_eval", "eval_batch_size", "checkpointing_steps", "save_total_limit", "skip_nonfinite",
                     "compile", "tf32", "dataloader_num_workers", "dataloader_pin_memory"}


def resume_differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """`section.field saved -> now` for each field (of `RunConfig.to_dict`) a resume may not change."""
    diffs = []
    for section in sorted(set(saved) | set(now)):
        a, b = saved.get(section) or {}, now.get(section) or {}
        diffs += [f"{section}.{k} {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
                  if k not in RESUME_MAY_CHANGE and a.get(k) != b.get(k)]
    return diffs


SECTIONS = ("data", "model", "loss", "train")


def argument_classes(model_type: str) -> tuple[type, ...]:
    """The dataclasses a run of `model_type` is parsed into: data, the type's config, its task's
    loss flags, training. Raises ValueError for an unknown type."""
    model_cls = model_class(model_type)
    return DataArguments, model_cls.config_class, task_for(model_cls).Arguments, TrainArguments


def parse_config(argv: list[str] | None = None) -> RunConfig:
    """Flags over an optional `--config FILE.yaml` (flat keys, or nested by section) over the
    `--preset`'s sizes. `--model_type` picks the config and loss classes parsed, so a flag of
    another type is refused, never ignored."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path)
    pre.add_argument("--model_type")
    pre.add_argument("--preset")
    pre.add_argument("--loss")
    known, _ = pre.parse_known_args(argv)
    from_file = _read_config_file(known.config) if known.config is not None else {}
    file_type, file_preset = from_file.pop("model_type", None), from_file.pop("preset", None)
    recipe = known.loss or from_file.get("loss")
    model_type = known.model_type or file_type or "git"
    preset = known.preset or file_preset or DEFAULT_PRESET
    try:
        classes = argument_classes(model_type)
    except ValueError as e:
        raise SystemExit(f"error: --model_type: {e}") from None
    if preset not in PRESETS:
        raise SystemExit(f"error: --preset {preset!r} unknown; use one of {sorted(PRESETS)}")
    model_cls = model_class(model_type)
    parser = HfArgumentParser(classes)
    parser.add_argument("--config", type=Path, help="YAML file of defaults; flags override it.")
    parser.add_argument("--model_type", choices=sorted(MODEL_TYPES), default="git",
                        help="git, flamingo, coca, or text (the same decoder with no vision).")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET,
                        help="Size defaults: tiny (tests), small (CPU), base (BabyLM baselines' scale).")
    dests = {a.dest for a in parser._actions}
    parser.set_defaults(**{k: v for k, v in PRESETS[preset].items() if k in dests})
    if recipe is not None and "loss" in dests:  # the recipe's weights and flags, under the file's and the flags'
        try:
            parser.set_defaults(**recipe_defaults(recipe))
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
    if not model_cls.has_vision:
        parser.set_defaults(eval_steps=0)  # no image embeddings to probe
    unknown = sorted(set(from_file) - dests)
    if unknown:
        raise SystemExit(f"error: {known.config}: unknown keys {unknown} for --model_type {model_type}; "
                         f"see `babymm/train.py --model_type {model_type} --help`")
    parser.set_defaults(**from_file)
    # outputs: the four dataclasses, a namespace holding the extra flags, then unparsed strings
    *outputs, extra = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)} (for --model_type {model_type}; "
                     f"see --model_type {model_type} --help)")
    data, model, loss, train = outputs[:4]
    if not model_cls.has_vision and train.eval_steps:
        parser.error(f"--eval_steps {train.eval_steps}: the text type has no image embeddings to probe; use 0")
    return RunConfig(data, model, loss, train, preset)


def _read_config_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise SystemExit(f"error: config file {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if key in SECTIONS and isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat

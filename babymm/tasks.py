"""Training recipes as values: a task turns one batch into named, weighted loss terms.

Each model type names its task (`BabyModel.task`, a key of `TASKS`), and each task carries the dataclass of the
loss flags it honours, so `--model_type text --uniform_weight 0` is refused rather than
ignored. The training loop only sums the terms a task returns and calls `after_step`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from babymm.losses import ContrastiveLoss, LossWeights
from babymm.models.base import BabyModel, lm_loss

Batch = dict[str, torch.Tensor]


@dataclass
class LMLossArguments:
    caption_weight: float = field(default=1.0, metadata={"help": "Captioning LM loss weight."})
    text_weight: float = field(default=0.25, metadata={"help": "Mixed-in text-only LM loss weight."})


@dataclass
class ContrastiveLossArguments(LMLossArguments):
    clip_weight: float = field(default=1.0, metadata={"help": "CLIP (InfoNCE) loss weight."})
    uniform_weight: float = field(default=1.0, metadata={"help": "L_Uniform weight; 0 with align 0 = plain CLIP."})
    align_weight: float = field(default=1.0, metadata={"help": "L_Align weight."})
    xuniform_weight: float = field(default=0.0, metadata={"help": "L_XUniform weight (CUAXU variant)."})


def _check_weights(args: LMLossArguments) -> None:
    negative = {k: v for k, v in vars(args).items() if v < 0}
    if negative:
        raise ValueError(f"loss weights must be >= 0, got {negative}")


class TextPretraining:
    """Stage 1: the decoder alone as a causal LM on text blocks."""

    def loss_terms(self, decoder: torch.nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        ids, mask = batch["text_input_ids"], batch["text_attention_mask"]
        return {"text_loss": lm_loss(decoder(input_ids=ids, attention_mask=mask).logits, ids, mask)}

    def after_step(self, model: BabyModel) -> None:
        pass


class TextCaptioning:
    """Stage 2 of the `text` type: captions as plain text, text batches mixed in."""

    Arguments: ClassVar[type] = LMLossArguments
    reads_images: ClassVar[bool] = False

    def __init__(self, args: LMLossArguments):
        _check_weights(args)
        self.args = args

    def loss_terms(self, model: torch.nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        out = model(batch["input_ids"], batch["attention_mask"], text_input_ids=batch["text_input_ids"],
                    text_attention_mask=batch["text_attention_mask"])
        return {"caption_loss": self.args.caption_weight * out["caption_loss"],
                "text_loss": self.args.text_weight * out["text_loss"]}

    def after_step(self, model: BabyModel) -> None:
        pass


class ContrastiveCaptioning(TextCaptioning):
    """Stage 2 of every image-reading type: captioning LM given the image, text batches mixed
    in, and the gap-closing contrastive loss (CLIP + uniformity + alignment) on the embeddings."""

    Arguments: ClassVar[type] = ContrastiveLossArguments
    reads_images: ClassVar[bool] = True

    def __init__(self, args: ContrastiveLossArguments):
        super().__init__(args)
        self.contrastive = ContrastiveLoss(LossWeights(args.clip_weight, args.uniform_weight,
                                                       args.align_weight, args.xuniform_weight))

    def loss_terms(self, model: torch.nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        out = model(batch["input_ids"], batch["attention_mask"], images=batch["images"],
                    text_input_ids=batch["text_input_ids"], text_attention_mask=batch["text_attention_mask"])
        terms = {"caption_loss": self.args.caption_weight * out["caption_loss"],
                 "text_loss": self.args.text_weight * out["text_loss"]}
        terms.update(self.contrastive(out["image_embeds"].float(), out["text_embeds"].float(), out["logit_scale"]))
        return terms

    def after_step(self, model: BabyModel) -> None:
        model.clamp_logit_scale()


TASKS: dict[str, type[TextCaptioning]] = {
    "text_captioning": TextCaptioning, "contrastive_captioning": ContrastiveCaptioning}


def task_for(model_cls: type[BabyModel]) -> type[TextCaptioning]:
    """The stage-2 task class a model type trains with (its `Arguments` are the loss flags)."""
    if model_cls.task not in TASKS:
        raise ValueError(f"{model_cls.__name__}.task {model_cls.task!r} unknown; registered: {sorted(TASKS)}")
    return TASKS[model_cls.task]

"""Training recipes as values: a task turns one batch into named loss terms, and weighs them.

Each model type names its task (`BabyModel.task`, a key of `TASKS`), and each task carries the dataclass of the
loss flags it honours, so `--model_type text --uniform_weight 0` is refused rather than
ignored. A task returns its terms unweighted and names their `weights`; the training loop logs
each term under its own name, sums them by weight into `loss`, and calls `after_step`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from babymm.losses import ContrastiveLoss, LossWeights
from babymm.models.base import BabyModel, lm_loss
from babymm.speed import DecoderPass

Batch = dict[str, torch.Tensor]
NumItems = dict[str, float | torch.Tensor]  # "caption" / "text": what each LM loss's token sum is divided by


def _text_pass(batch: Batch) -> list[DecoderPass]:
    return [DecoderPass(*batch["text_input_ids"].shape)] if "text_input_ids" in batch else []


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


def _normaliser(num_items: NumItems | None, key: str) -> float | torch.Tensor | None:
    return None if num_items is None else num_items.get(key)


class TextPretraining:
    """Stage 1: the decoder alone as a causal LM on text blocks."""

    weights: ClassVar[dict[str, float]] = {"text_loss": 1.0}

    def loss_terms(self, decoder: torch.nn.Module, batch: Batch,
                   num_items: NumItems | None = None) -> dict[str, torch.Tensor]:
        ids, mask = batch["text_input_ids"], batch["text_attention_mask"]
        if isinstance(decoder, BabyModel):  # the whole model (FSDP: its forward, the root's, gathers the weights)
            return {"text_loss": decoder(None, None, text_input_ids=ids, text_attention_mask=mask,
                                         text_items=_normaliser(num_items, "text"))["text_loss"]}
        return {"text_loss": lm_loss(decoder(input_ids=ids, attention_mask=mask, use_cache=False).logits, ids, mask,
                                     _normaliser(num_items, "text"))}

    def decoder_passes(self, model: torch.nn.Module, batch: Batch) -> list[DecoderPass]:
        """The decoder passes `loss_terms` runs on `batch` (what the model FLOPs count)."""
        return _text_pass(batch)

    def after_step(self, model: BabyModel) -> None:
        pass


class TextCaptioning:
    """Stage 2 of the `text` type: captions as plain text, text batches mixed in.

    `loss_terms` returns each term UNWEIGHTED (logged on its own scale, the same in every stage)
    and `weights` says how the training loop sums them into `loss`. A term weighted 0 is not
    computed: with `--text_weight 0` no text batch is read (`uses_text`), so its words are not
    counted as seen either.
    """

    Arguments: ClassVar[type] = LMLossArguments
    reads_images: ClassVar[bool] = False

    def __init__(self, args: LMLossArguments):
        _check_weights(args)
        self.args = args
        if not self.captioning:
            raise ValueError("--caption_weight 0: stage 2 of the text type would read no captions; to train on "
                             "text alone use --multimodal_steps 0 and more --text_pretrain_steps")
        self.weights = {k: v for k, v in self._lm_weights().items() if v}

    def _lm_weights(self) -> dict[str, float]:
        return {"caption_loss": self.args.caption_weight, "text_loss": self.args.text_weight}

    @property
    def captioning(self) -> bool:
        return self.args.caption_weight > 0

    @property
    def uses_text(self) -> bool:
        """Whether stage 2 reads text-only batches (their words then count as seen)."""
        return self.args.text_weight > 0

    @property
    def leaves_parameters_unused(self) -> bool:
        """A term switched off leaves parameters without gradient (DDP must be told)."""
        return False

    def _text_inputs(self, batch: Batch, num_items: NumItems | None) -> dict:
        if not self.uses_text:
            return {}
        return {"text_input_ids": batch["text_input_ids"], "text_attention_mask": batch["text_attention_mask"],
                "text_items": _normaliser(num_items, "text")}

    def loss_terms(self, model: torch.nn.Module, batch: Batch,
                   num_items: NumItems | None = None) -> dict[str, torch.Tensor]:
        out = model(batch["input_ids"], batch["attention_mask"], caption_items=_normaliser(num_items, "caption"),
                    **self._text_inputs(batch, num_items))
        return {k: out[k] for k in self.weights}

    def decoder_passes(self, model: BabyModel, batch: Batch) -> list[DecoderPass]:
        """The decoder passes `loss_terms` runs on `batch`: the captions, the text batch."""
        return [DecoderPass(*batch["input_ids"].shape), *(_text_pass(batch) if self.uses_text else [])]

    def after_step(self, model: BabyModel) -> None:
        pass


class ContrastiveCaptioning(TextCaptioning):
    """Stage 2 of every image-reading type: captioning LM given the image, text batches mixed
    in, and the gap-closing contrastive loss (CLIP + uniformity + alignment) on the embeddings.
    With every contrastive weight 0 the embeddings are not computed (captioning only, as the
    curriculum study trained); with `--caption_weight 0` the captioning pass is not run."""

    Arguments: ClassVar[type] = ContrastiveLossArguments
    reads_images: ClassVar[bool] = True

    def __init__(self, args: ContrastiveLossArguments):
        _check_weights(args)
        self.args = args
        self.contrastive = ContrastiveLoss(LossWeights(args.clip_weight, args.uniform_weight,
                                                       args.align_weight, args.xuniform_weight))
        if not (self.captioning or self.embeddings):
            raise ValueError("--caption_weight and every contrastive weight are 0: stage 2 would train on no "
                             "captions; to train on text alone use --multimodal_steps 0")
        self.weights = {**{k: v for k, v in self._lm_weights().items() if v}, **self.contrastive.term_weights()}

    @property
    def embeddings(self) -> bool:
        return bool(self.contrastive.term_weights())

    @property
    def leaves_parameters_unused(self) -> bool:
        return not (self.captioning and self.embeddings)

    def loss_terms(self, model: torch.nn.Module, batch: Batch,
                   num_items: NumItems | None = None) -> dict[str, torch.Tensor]:
        out = model(batch["input_ids"], batch["attention_mask"], images=batch["images"],
                    caption_items=_normaliser(num_items, "caption"), captioning=self.captioning,
                    embeddings=self.embeddings, **self._text_inputs(batch, num_items))
        terms = {k: out[k] for k in ("caption_loss", "text_loss") if k in self.weights}
        if self.embeddings:
            terms.update(self.contrastive(out["image_embeds"].float(), out["text_embeds"].float(),
                                          out["logit_scale"]))
        return terms

    def decoder_passes(self, model: BabyModel, batch: Batch) -> list[DecoderPass]:
        """The captioning pass (GIT's image prefix and CoCa's CLS in its sequence), the part of
        the no-image embedding pass it does not share (`embedding_pass_fraction`), the text batch."""
        rows, length = batch["input_ids"].shape
        passes = [DecoderPass(rows, length + model.prefix_tokens)] if self.captioning else []
        fraction = model.embedding_pass_fraction if self.captioning else 1.0
        if self.embeddings and fraction:
            passes.append(DecoderPass(rows, length, fraction))
        return passes + (_text_pass(batch) if self.uses_text else [])

    def after_step(self, model: BabyModel) -> None:
        model.clamp_logit_scale()


TASKS: dict[str, type[TextCaptioning]] = {
    "text_captioning": TextCaptioning, "contrastive_captioning": ContrastiveCaptioning}


def task_for(model_cls: type[BabyModel]) -> type[TextCaptioning]:
    """The stage-2 task class a model type trains with (its `Arguments` are the loss flags)."""
    if model_cls.task not in TASKS:
        raise ValueError(f"{model_cls.__name__}.task {model_cls.task!r} unknown; registered: {sorted(TASKS)}")
    return TASKS[model_cls.task]

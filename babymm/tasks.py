"""Training recipes as values: a task turns one batch into named loss terms, and weighs them.

Each model type names its task (`BabyModel.task`, a key of `TASKS`), and each task carries the dataclass of the
loss flags it honours, so `--model_type text --uniform_weight 0` is refused rather than
ignored. A task returns its terms unweighted and names their `weights`; the training loop logs
each term under its own name, sums them by weight into `loss`, and calls `after_step`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from babymm.losses import ContrastiveLoss, LossWeights, simsiam_loss
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
    siglip_weight: float = field(default=0.0, metadata={
        "help": "SigLIP's pairwise sigmoid loss weight; needs the model's --logit_bias (--loss siglip sets both)."})
    nn_weight: float = field(default=0.0, metadata={
        "help": "DeCLIP's nearest-neighbour supervision weight: each image's extra positive is the queued text "
                "nearest its caption's."})
    simsiam_weight: float = field(default=0.0, metadata={
        "help": "DeCLIP's image self-supervision (SimSiam on two image views) weight; needs --image_views 2 and "
                "--simsiam_dim."})
    label_smoothing: float = field(default=0.0, metadata={
        "help": "Label smoothing of the CLIP and nearest-neighbour cross-entropies (Fini et al. 2023: 0.1)."})
    nn_queue_size: int = field(default=65536, metadata={
        "help": "Text embeddings in the nearest-neighbour queue (DeCLIP: 65,536), the same on every process."})
    image_views: int = field(default=1, metadata={
        "help": "Image views per pair: 2 adds a second augmented view, and the contrastive terms are averaged over "
                "every (image view, caption view) pair (DeCLIP's multi-view supervision). Needs augmentation."})
    image_augment: str = field(default="none", metadata={
        "help": "Pixel augmentations of every image view: none, moco (crop, flip, jitter, gray, blur: MoCo v2 / "
                "DeCLIP, sized for the image), or a comma list of those. Refused on precomputed features."})
    feature_dropout: float = field(default=0.0, metadata={
        "help": "Precomputed features only: element dropout of each image view (the views features allow)."})
    feature_noise: float = field(default=0.0, metadata={
        "help": "Precomputed features only: Gaussian noise of each image view, in units of each vector's std."})
    caption_augment: float = field(default=0.0, metadata={
        "help": "EDA strength alpha (DeCLIP, Fini et al.: 0.1): adds an augmented caption view (word deletion, "
                "swap, synonym replacement) to the contrastive terms; the captioning loss reads the caption as is."})
    synonyms: str | None = field(default=None, metadata={
        "help": "JSON {word: [synonyms]} for EDA's synonym replacement (offline; the world's: "
                "data_prep/synonyms_world.json). Default: no synonym replacement."})
    loss: str = field(default="cua", metadata={
        "help": "The contrastive recipe: captioning (none), clip, cua, cuaxu, siglip or declip (README: Objectives). "
                "It sets the weights above (and, for siglip and declip, model and view flags) as defaults; any "
                "flag given still wins. Recorded as the recipe the defaults came from; the weights are what trained."})


# The study's loss conditions beyond the recipes (scripts/sweep.py's loss axis, the benchmarks): a
# recipe plus flags. cua_aug: CUA with Fini et al.'s augmentations (image views, EDA caption views
# without synonyms, whose list is data-specific; label smoothing 0.1). The _safe variants keep only
# the image views that leave the built-in world's captions true (crop and blur: no colour jitter,
# grayscale or flip, which change the colour and left/right words a caption names).
LOSS_VARIANTS: dict[str, list[str]] = {
    "cua_aug": ["--loss", "cua", "--image_augment", "moco", "--caption_augment", "0.1", "--label_smoothing", "0.1"],
    "cua_aug_safe": ["--loss", "cua", "--image_augment", "crop,blur", "--caption_augment", "0.1",
                     "--label_smoothing", "0.1"],
    "declip_safe": ["--loss", "declip", "--image_augment", "crop,blur"],
    # cua_aug_safe taken apart: its image views alone (both, crop, blur), its caption views alone
    "cua_image_views": ["--loss", "cua", "--image_augment", "crop,blur"],
    "cua_crop_views": ["--loss", "cua", "--image_augment", "crop"],
    "cua_blur_views": ["--loss", "cua", "--image_augment", "blur"],
    "cua_caption_views": ["--loss", "cua", "--caption_augment", "0.1"],
}


def loss_flags(name: str) -> list[str]:
    """train.py's flags of a loss condition: a recipe (`--loss NAME`) or one of `LOSS_VARIANTS`."""
    if name in LOSS_VARIANTS:
        return list(LOSS_VARIANTS[name])
    if name in RECIPES:
        return ["--loss", name]
    raise ValueError(f"loss {name!r} unknown; use one of {[*RECIPES, *LOSS_VARIANTS]}")


# Each recipe names every contrastive weight, so that a recipe is the whole contrastive part. The LM
# weights (captioning, text) are the same in every recipe: recipes differ only where they differ.
_OFF = {"clip_weight": 0.0, "uniform_weight": 0.0, "align_weight": 0.0, "xuniform_weight": 0.0,
        "siglip_weight": 0.0, "nn_weight": 0.0, "simsiam_weight": 0.0}
RECIPES: dict[str, dict[str, Any]] = {
    "captioning": dict(_OFF),  # no contrastive term: the curriculum study's and the 2024 baselines' training
    "clip": {**_OFF, "clip_weight": 1.0},
    "cua": {**_OFF, "clip_weight": 1.0, "uniform_weight": 1.0, "align_weight": 1.0},
    "cuaxu": {**_OFF, "clip_weight": 1.0, "uniform_weight": 1.0, "align_weight": 1.0, "xuniform_weight": 1.0},
    # Zhai et al. 2023: t = exp(t'), t' = log 10 (temperature 0.1), b = -10
    "siglip": {**_OFF, "siglip_weight": 1.0, "temperature": 0.1, "logit_bias": -10.0},
    # DeCLIP's config: CLIP/MVS 0.4, NNS 0.2, SimSiam 0.2 (its MLM 0.2 has no causal counterpart: the
    # captioning and text LM losses are the text self-supervision here); 2 image views x {caption, EDA caption}
    "declip": {**_OFF, "clip_weight": 0.4, "nn_weight": 0.2, "simsiam_weight": 0.2, "image_views": 2,
               "image_augment": "moco", "caption_augment": 0.1, "simsiam_dim": 128},
}


def _check_weights(args: LMLossArguments) -> None:
    negative = {k: v for k, v in vars(args).items() if isinstance(v, int | float) and not isinstance(v, bool) and v < 0}
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

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors the task keeps between steps, which a checkpoint must carry: none here."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pass

    def decoder_passes(self, model: BabyModel, batch: Batch) -> list[DecoderPass]:
        """The decoder passes `loss_terms` runs on `batch`: the captions, the text batch."""
        return [DecoderPass(*batch["input_ids"].shape), *(_text_pass(batch) if self.uses_text else [])]

    def after_step(self, model: BabyModel) -> None:
        pass


class ContrastiveCaptioning(TextCaptioning):
    """Stage 2 of every image-reading type: captioning LM given the image, text batches mixed
    in, and the contrastive recipe (`--loss`: CLIP, the gap-closing terms, SigLIP, DeCLIP's) on
    the embeddings. With every contrastive weight 0 the embeddings are not computed (captioning
    only, as the curriculum study trained); with `--caption_weight 0` the captioning pass is not run.

    Views (`ViewMaker`, applied to each batch before the step): the captioning loss reads the
    first image view and the caption as it is; the contrastive terms also read the second
    image view (`--image_views 2`) and the augmented caption (`--caption_augment`)."""

    Arguments: ClassVar[type] = ContrastiveLossArguments
    reads_images: ClassVar[bool] = True

    def __init__(self, args: ContrastiveLossArguments):
        _check_weights(args)
        self.args = args
        problems = loss_problems(args)
        if problems:
            raise ValueError(problems[0])
        self.contrastive = ContrastiveLoss(LossWeights(
            args.clip_weight, args.uniform_weight, args.align_weight, args.xuniform_weight, args.siglip_weight,
            args.nn_weight, args.label_smoothing, args.nn_queue_size))
        if not (self.captioning or self.embeddings):
            raise ValueError("--caption_weight and every contrastive weight are 0: stage 2 would train on no "
                             "captions; to train on text alone use --multimodal_steps 0")
        simsiam = {"simsiam_loss": args.simsiam_weight} if args.simsiam_weight else {}
        self.weights = {**{k: v for k, v in self._lm_weights().items() if v}, **self.contrastive.term_weights(),
                        **simsiam}

    @property
    def embeddings(self) -> bool:
        return bool(self.contrastive.term_weights()) or bool(self.args.simsiam_weight)

    @property
    def leaves_parameters_unused(self) -> bool:
        return not (self.captioning and self.embeddings)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint must carry beyond the model for a resumed run to go on exactly: the
        nearest-neighbour queue (empty without that term)."""
        queue = self.contrastive.queue
        return {} if queue is None else {f"nn_queue.{k}": v for k, v in queue.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if self.contrastive.queue is not None:
            if not state:
                raise ValueError("the checkpoint holds no nearest-neighbour queue (task_state.safetensors), so the "
                                 "run cannot go on as it was; resume from a checkpoint this version wrote, or start over")
            self.contrastive.queue.load_state_dict({k.removeprefix("nn_queue."): v for k, v in state.items()})

    def loss_terms(self, model: torch.nn.Module, batch: Batch,
                   num_items: NumItems | None = None) -> dict[str, torch.Tensor]:
        views = {}
        if "image_view" in batch:
            views = {"image_view": batch["image_view"], "simsiam": bool(self.args.simsiam_weight)}
        if "view_input_ids" in batch:
            views.update(view_input_ids=batch["view_input_ids"], view_attention_mask=batch["view_attention_mask"])
        out = model(batch["input_ids"], batch["attention_mask"], images=batch["images"],
                    caption_items=_normaliser(num_items, "caption"), captioning=self.captioning,
                    embeddings=self.embeddings, **self._text_inputs(batch, num_items), **views)
        terms = {k: out[k] for k in ("caption_loss", "text_loss") if k in self.weights}
        if self.contrastive.term_weights():
            images = [out[k].float() for k in ("image_embeds", "image_view_embeds") if k in out]
            texts = [out[k].float() for k in ("text_embeds", "text_view_embeds") if k in out]
            terms.update(self.contrastive(images, texts, out["logit_scale"], out.get("logit_bias")))
        if self.args.simsiam_weight:
            z, p = out["simsiam_z"], out["simsiam_p"]
            terms["simsiam_loss"] = simsiam_loss(p[0], p[1], z[0], z[1])
        return terms

    def decoder_passes(self, model: BabyModel, batch: Batch) -> list[DecoderPass]:
        """The captioning pass (GIT's image prefix and CoCa's CLS in its sequence), the part of
        the no-image embedding pass it does not share (`embedding_pass_fraction`), the augmented
        captions' embedding pass, the text batch."""
        rows, length = batch["input_ids"].shape
        passes = [DecoderPass(rows, length + model.prefix_tokens)] if self.captioning else []
        fraction = model.embedding_pass_fraction if self.captioning else 1.0
        if self.embeddings and fraction:
            passes.append(DecoderPass(rows, length, fraction))
        if "view_input_ids" in batch:
            passes.append(DecoderPass(*batch["view_input_ids"].shape))
        return passes + (_text_pass(batch) if self.uses_text else [])

    def after_step(self, model: BabyModel) -> None:
        model.clamp_logit_scale()


def _augments_images(args: ContrastiveLossArguments, ops: tuple[str, ...]) -> bool:
    """Whether two views of one image differ: pixel ops (`ops`, parsed from --image_augment), or
    feature dropout or noise."""
    return bool(ops) or args.feature_dropout > 0 or args.feature_noise > 0


def loss_problems(args: ContrastiveLossArguments) -> list[str]:
    """What is wrong with the contrastive flags on their own, one line each (the rules that need
    the model's flags are `model_problems`)."""
    from babymm.augment import parse_image_ops

    a, found = args, []
    if a.loss not in RECIPES:
        found.append(f"--loss {a.loss!r} unknown; use one of {', '.join(RECIPES)}")
    if a.image_views not in (1, 2):
        found.append(f"--image_views {a.image_views}: use 1 or 2")
    try:
        ops = parse_image_ops(a.image_augment)
    except ValueError as e:
        found.append(f"--image_augment: {e}")
        ops = ()
    for name in ("label_smoothing", "feature_dropout", "caption_augment"):
        if not 0 <= getattr(a, name) < 1:
            found.append(f"--{name} {getattr(a, name)} must be in [0, 1)")
    if a.nn_queue_size < 1:
        found.append(f"--nn_queue_size {a.nn_queue_size} must be positive")
    contrastive = a.clip_weight or a.siglip_weight or a.nn_weight
    views = _augments_images(a, ops)
    if a.image_views == 2 and not views:
        found.append("--image_views 2 with no augmentation would contrast two identical views; pass --image_augment "
                     "(pixels) or --feature_dropout / --feature_noise (features)")
    if a.image_views == 2 and not (contrastive or a.simsiam_weight):
        found.append("--image_views 2: no contrastive or SimSiam term reads a second view")
    if a.simsiam_weight and a.image_views != 2:
        found.append(f"--simsiam_weight {a.simsiam_weight} needs two image views: pass --image_views 2")
    if (views or a.caption_augment) and not (contrastive or a.simsiam_weight):
        found.append("image or caption augmentation: no contrastive term reads the views (they only feed the "
                     "contrastive terms); set a contrastive weight or drop the augmentation")
    if a.label_smoothing and not (a.clip_weight or a.nn_weight):
        found.append(f"--label_smoothing {a.label_smoothing}: no cross-entropy term (CLIP or nearest-neighbour) "
                     "is weighted above 0")
    if a.nn_queue_size != 65536 and not a.nn_weight:
        found.append(f"--nn_queue_size {a.nn_queue_size}: the nearest-neighbour term is off (--nn_weight 0)")
    if a.synonyms is not None and not a.caption_augment:
        found.append("--synonyms is read by caption augmentation only: pass --caption_augment too")
    if a.synonyms is not None and not Path(a.synonyms).is_file():
        found.append(f"--synonyms {a.synonyms}: no such file")
    return found


def model_problems(args: ContrastiveLossArguments, model: Any) -> list[str]:
    """The contrastive flags against the model type's own (its vision input, its heads): a term
    the model or its input cannot have is refused, not ignored."""
    found = []
    pixels = model.vision_encoder != "features"
    if args.image_augment != "none" and not pixels:
        found.append(f"--image_augment {args.image_augment}: precomputed features have no pixels to augment; use "
                     "--image_augment none and views of the features (--feature_dropout 0.1 and/or --feature_noise)")
    if (args.feature_dropout or args.feature_noise) and pixels:
        found.append(f"--feature_dropout/--feature_noise act on precomputed features; --vision_encoder "
                     f"{model.vision_encoder} reads pixels: use --image_augment")
    if args.siglip_weight and model.logit_bias is None:
        found.append(f"--siglip_weight {args.siglip_weight} needs the model's learned bias: pass --logit_bias -10 "
                     "(or --loss siglip)")
    if model.logit_bias is not None and not args.siglip_weight:
        found.append(f"--logit_bias {model.logit_bias}: only the SigLIP term reads it (--siglip_weight 0)")
    if args.simsiam_weight and not model.simsiam_dim:
        found.append(f"--simsiam_weight {args.simsiam_weight} needs the SimSiam heads: pass --simsiam_dim 128")
    if model.simsiam_dim and not args.simsiam_weight:
        found.append(f"--simsiam_dim {model.simsiam_dim}: the SimSiam heads would never train (--simsiam_weight 0)")
    if args.simsiam_weight and model.freeze_vision:
        found.append("--simsiam_weight with --freeze_vision: SimSiam trains the vision encoder, which is frozen")
    return found


class ViewMaker:
    """The views a contrastive recipe reads, made on the host from each caption batch: a pure
    function of (seed, step, process), so resumed and multi-worker runs see the same views.
    Without augmentation flags it is not built (`for_task` gives None) and batches pass untouched."""

    def __init__(self, args: ContrastiveLossArguments, captions: Any | None, seed: int, rank: int = 0):
        """`captions`: the `babymm.augment.CaptionAugmenter` of the caption views (None without)."""
        from babymm.augment import parse_image_ops

        self.args, self.captions, self.seed, self.rank = args, captions, seed, rank
        self.image_ops = parse_image_ops(args.image_augment)

    @classmethod
    def for_task(cls, task: TextCaptioning, tokenizer: Any, max_tokens: int, seed: int,
                 rank: int = 0) -> ViewMaker | None:
        """The task's views, or None when its recipe reads none. `max_tokens`: the run's
        --max_caption_tokens, which an augmented caption (a synonym of more pieces) must not outgrow."""
        from babymm.augment import CaptionAugmenter, load_synonyms, parse_image_ops

        a = getattr(task, "args", None)
        if not isinstance(a, ContrastiveLossArguments):
            return None
        if not (_augments_images(a, parse_image_ops(a.image_augment)) or a.caption_augment or a.image_views > 1):
            return None
        synonyms = load_synonyms(Path(a.synonyms)) if a.synonyms else None
        captions = (CaptionAugmenter.from_tokenizer(tokenizer, a.caption_augment, synonyms, max_tokens=max_tokens)
                    if a.caption_augment else None)
        return cls(a, captions, seed, rank)

    def _image_view(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        from babymm.augment import augment_features, augment_pixels

        if self.image_ops:
            return augment_pixels(images, self.image_ops, generator)
        if self.args.feature_dropout or self.args.feature_noise:
            return augment_features(images, self.args.feature_dropout, self.args.feature_noise, generator)
        return images

    def __call__(self, batch: Batch, step: int) -> Batch:
        """`batch` with its first image view in place of `images`, plus `image_view` (a second) and
        `view_input_ids`/`view_attention_mask` (the augmented captions) where the recipe has them."""
        state = np.random.SeedSequence([self.seed, step, self.rank]).generate_state(2)
        generator = torch.Generator().manual_seed(int(state[0]))
        out = dict(batch)
        if "images" in batch:
            out["images"] = self._image_view(batch["images"], generator)
            if self.args.image_views == 2:
                out["image_view"] = self._image_view(batch["images"], generator)
        if self.captions is not None:
            out["view_input_ids"], out["view_attention_mask"] = self.captions(
                batch["input_ids"], batch["attention_mask"], np.random.default_rng(int(state[1])))
        return out


def with_views(batches: Any, views: ViewMaker | None, start_step: int) -> Any:
    """Caption batches from stage step `start_step` on, each with its views (`ViewMaker`)."""
    if views is None:
        yield from batches
        return
    for step, batch in enumerate(batches, start=start_step):
        yield views(batch, step)


def recipe_defaults(name: str) -> dict[str, Any]:
    """The flag defaults `--loss NAME` sets (`RECIPES`), with the recipe's name."""
    if name not in RECIPES:
        raise ValueError(f"--loss {name!r} unknown; use one of {', '.join(RECIPES)}")
    return {**RECIPES[name], "loss": name}


TASKS: dict[str, type[TextCaptioning]] = {
    "text_captioning": TextCaptioning, "contrastive_captioning": ContrastiveCaptioning}


def task_for(model_cls: type[BabyModel]) -> type[TextCaptioning]:
    """The stage-2 task class a model type trains with (its `Arguments` are the loss flags)."""
    if model_cls.task not in TASKS:
        raise ValueError(f"{model_cls.__name__}.task {model_cls.task!r} unknown; registered: {sorted(TASKS)}")
    return TASKS[model_cls.task]

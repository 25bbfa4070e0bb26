"""What every model type shares: the text decoder and the config contract.

Every type is a plain `LlamaForCausalLM` decoder plus what the type adds around it, and the
decoder alone is exactly the model's text path: whatever a type adds only acts when an image is
given. Saving and loading are in babymm.models.saving (this file travels inside exported
checkpoints, so it imports only torch and transformers).

A type's config is a dataclass whose init fields are its flags (parsed straight into it by
`HfArgumentParser`, no second copy in the run config), and whose `init=False` fields are
derived from the tokenizer and data by `resolve`.

Every decoder call in babymm passes `use_cache=False`: training and scoring never generate, and a
KV cache built in each forward is work and memory for nothing (it also made torch.compile
recompile per layer).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .vision import VisionConfig, build_vision_encoder

MAX_LOGIT_SCALE = 100.0


@dataclass
class DecoderConfig:
    """The text decoder all types share; also the whole config of the `text` type."""

    model_type: ClassVar[str] = "text"
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 384
    max_positions: int = field(default=256, metadata={
        "help": "Longest sequence the saved decoder advertises (lm-eval truncates to it); "
                "training sequences must fit."})
    # set from the tokenizer by `resolve`, never flags
    vocab_size: int = field(default=0, init=False)
    bos_token_id: int = field(default=2, init=False)
    eos_token_id: int = field(default=3, init=False)
    pad_token_id: int = field(default=0, init=False)

    def resolve(self, **derived: Any) -> DecoderConfig:
        """A copy with the derived (`init=False`) fields set; a flag field here is an error."""
        settable = {f.name for f in dataclasses.fields(self) if not f.init}
        bad = sorted(set(derived) - settable)
        if bad:
            raise TypeError(f"{type(self).__name__}: {bad} are not derived fields")
        out = copy.copy(self)
        for k, v in derived.items():
            setattr(out, k, v)
        return out

    def flags(self) -> dict[str, Any]:
        """The user-settable fields (what `run_config.json` records)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": self.model_type, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DecoderConfig:
        d = {k: v for k, v in d.items() if k != "model_type"}
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown config keys {unknown}")
        cfg = cls(**{k: v for k, v in d.items() if fields[k].init})
        return cfg.resolve(**{k: v for k, v in d.items() if not fields[k].init})

    @classmethod
    def from_text_config(cls, text: LlamaConfig) -> DecoderConfig:
        """The config of a saved decoder (`text_config`'s inverse)."""
        cfg = cls(hidden_size=text.hidden_size, num_layers=text.num_hidden_layers, num_heads=text.num_attention_heads,
                  intermediate_size=text.intermediate_size, max_positions=text.max_position_embeddings)
        return cfg.resolve(vocab_size=text.vocab_size, bos_token_id=text.bos_token_id,
                           eos_token_id=text.eos_token_id, pad_token_id=text.pad_token_id)

    def check(self) -> None:
        """Raise ValueError naming the flag if the architecture cannot be built."""
        if self.hidden_size % self.num_heads:
            raise ValueError(f"--hidden_size {self.hidden_size} is not divisible by --num_heads {self.num_heads}")

    def text_config(self) -> LlamaConfig:
        return LlamaConfig(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers, num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_heads, intermediate_size=self.intermediate_size,
            max_position_embeddings=self.max_positions, tie_word_embeddings=True,
            bos_token_id=self.bos_token_id, eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
        )


@dataclass
class VisionLanguageConfig(DecoderConfig, VisionConfig):
    """Decoder + vision encoder + the contrastive embedding every image-reading type has."""

    model_type: ClassVar[str] = ""
    embed_dim: int = field(default=128, metadata={"help": "Dimension of the contrastive embedding."})
    temperature: float = field(default=0.07, metadata={"help": "Initial softmax temperature of the CLIP loss."})
    learn_temperature: bool = field(default=True, metadata={
        "help": "Learn the logit scale (clamped at 100) or keep it fixed."})
    logit_bias: float | None = field(default=None, metadata={
        "help": "Initial value of the learned bias SigLIP adds to every image-text logit (its paper: -10, set by "
                "--loss siglip); only the SigLIP term reads it. Default: no bias parameter."})
    simsiam_dim: int = field(default=0, metadata={
        "help": "Width of the SimSiam projector and predictor on the pooled vision tokens (DeCLIP's image "
                "self-supervision; --loss declip sets it to 128); 0: no such heads."})

    def check(self) -> None:
        super().check()
        self.check_vision()
        if not 1.0 / MAX_LOGIT_SCALE <= self.temperature:
            raise ValueError(f"--temperature {self.temperature} is below 1/{MAX_LOGIT_SCALE:g}, the logit-scale clamp")
        if self.simsiam_dim < 0 or self.simsiam_dim % 4:
            raise ValueError(f"--simsiam_dim {self.simsiam_dim} must be 0 or a positive multiple of 4 (the "
                             "predictor's bottleneck is a quarter of it)")


class SimSiamHead(nn.Module):
    """SimSiam's projector (3 linear layers, batch norm after each, ReLU after the first two) and
    predictor (a bottleneck MLP, a quarter as wide), as DeCLIP applies them to its image encoder's
    pooled output. Batch statistics are each process's own batch (no SyncBatchNorm: it has no CPU
    path); the head only shapes training, nothing downstream reads it."""

    def __init__(self, width: int, dim: int):
        super().__init__()
        self.projector = nn.Sequential(
            nn.Linear(width, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True),
            nn.Linear(dim, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True),
            nn.Linear(dim, dim, bias=False), nn.BatchNorm1d(dim, affine=False))
        self.predictor = nn.Sequential(
            nn.Linear(dim, dim // 4, bias=False), nn.BatchNorm1d(dim // 4), nn.ReLU(inplace=True),
            nn.Linear(dim // 4, dim))

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled vision tokens [B, W] -> (projection z, prediction p), each [B, dim]."""
        z = self.projector(pooled)
        return z, self.predictor(z)


def lm_targets(mask: torch.Tensor) -> torch.Tensor:
    """How many next-token targets `lm_loss` sums over: every real position after the first."""
    return (mask[:, 1:] != 0).sum()


def lm_loss(logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor,
            num_items: float | torch.Tensor | None = None) -> torch.Tensor:
    """Next-token cross-entropy over the real (unmasked) positions. logits [B, T, V].

    The summed cross-entropy is divided by `num_items`; by default this batch's own target count
    (`lm_targets(mask)`), i.e. the token mean. Under data parallelism pass the global batch's
    count divided by the number of processes (transformers' `num_items_in_batch`, scaled for
    DDP's gradient averaging): the mean over processes is then the global batch's token mean,
    whatever the share of real tokens each process got.
    """
    targets = input_ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    total = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=-100,
                            reduction="sum")
    if num_items is None:
        num_items = lm_targets(mask).clamp(min=1)
    return total / num_items


def last_token_state(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """hidden [B, T, H] at each row's last real token (right padding) -> [B, H]."""
    last = attention_mask.sum(dim=1) - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class BabyModel(nn.Module):
    """A decoder and, per type, what lets images reach it. The base is the `text` type's whole
    model: no vision, captions are read as plain text."""

    config_class: ClassVar[type[DecoderConfig]] = DecoderConfig
    has_vision: ClassVar[bool] = False
    task: ClassVar[str] = "text_captioning"  # its training recipe, by name in babymm.tasks.TASKS

    def __init__(self, config: DecoderConfig, decoder: PreTrainedModel | None = None):
        super().__init__()
        config.check()
        self.config = config
        self.decoder = decoder if decoder is not None else LlamaForCausalLM(config.text_config())

    def text_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    def image_context(self, images: torch.Tensor | None) -> torch.Tensor | None:
        """What the type conditions the decoder on; None for no image (the text path)."""
        return None

    def decode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, context: torch.Tensor | None = None,
               output_hidden_states: bool = False) -> CausalLMOutputWithPast:
        """The decoder's output on the caption tokens given `image_context(images)` (None: no
        image, the plain decoder): logits [B, T, V] at the caption positions only, and with
        `output_hidden_states` every layer's states over the whole sequence the decoder ran
        (for GIT the image prefix first). Each type with vision overrides it."""
        return self.decoder(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=output_hidden_states,
                            use_cache=False)

    def caption_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       context: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, T, V] of the caption tokens given `image_context(images)` (None: no image)."""
        return self.decode(input_ids, attention_mask, context).logits

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                images: torch.Tensor | None = None, text_input_ids: torch.Tensor | None = None,
                text_attention_mask: torch.Tensor | None = None, caption_items: float | None = None,
                text_items: float | None = None) -> dict[str, torch.Tensor]:
        """One training step's forward: a caption batch and, optionally, a text-only batch, in
        one call so that data-parallel wrappers see every use of the parameters. `*_items`
        normalise the LM losses (`lm_loss`'s `num_items`)."""
        if input_ids is None:  # the text batch alone: stage 1 under FSDP, which runs it through the root
            return {"text_loss": self.text_loss(text_input_ids, text_attention_mask, text_items)}
        out = {"caption_loss": lm_loss(self.caption_logits(input_ids, attention_mask), input_ids, attention_mask,
                                       caption_items)}
        if text_input_ids is not None:
            out["text_loss"] = self.text_loss(text_input_ids, text_attention_mask, text_items)
        return out

    def text_loss(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  num_items: float | None = None) -> torch.Tensor:
        """The text-only LM loss of a text batch (the decoder alone, no image)."""
        return lm_loss(self.text_logits(input_ids, attention_mask), input_ids, attention_mask, num_items)

    @property
    def prefix_tokens(self) -> int:
        """Extra positions the type puts into the decoder's own sequence beside the caption (GIT's
        image prefix, CoCa's CLS); they count against `max_positions`."""
        return 0

    def clamp_logit_scale(self) -> None:
        """Nothing to clamp without a contrastive head."""

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


class VisionLanguageModel(BabyModel):
    """A type that reads images: vision encoder, contrastive heads and logit scale. Subclasses
    define `image_context` (what the decoder is conditioned on) and `caption_logits`."""

    config_class: ClassVar[type[DecoderConfig]] = VisionLanguageConfig
    has_vision: ClassVar[bool] = True
    task: ClassVar[str] = "contrastive_captioning"
    config: VisionLanguageConfig

    def __init__(self, config: VisionLanguageConfig, decoder: PreTrainedModel | None = None):
        super().__init__(config, decoder)
        self.vision = build_vision_encoder(config)
        self.image_head = nn.Linear(config.vision_width, config.embed_dim, bias=False)
        self.text_head = nn.Linear(config.hidden_size, config.embed_dim, bias=False)
        # log of the logit scale, open_clip style; a buffer when the temperature is fixed
        init = torch.tensor(math.log(1.0 / config.temperature))
        if config.learn_temperature:
            self.log_logit_scale = nn.Parameter(init)
        else:
            self.register_buffer("log_logit_scale", init)
        if config.logit_bias is not None:
            self.logit_bias = nn.Parameter(torch.tensor(float(config.logit_bias)))
        if config.simsiam_dim:
            self.simsiam = SimSiamHead(config.vision_width, config.simsiam_dim)

    @property
    def num_image_tokens(self) -> int:
        return self.vision.num_tokens

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def clamp_logit_scale(self) -> None:
        """Keep the learned scale in [1, 100] after an optimizer step (CLIP's clamp)."""
        with torch.no_grad():
            self.log_logit_scale.clamp_(0.0, math.log(MAX_LOGIT_SCALE))

    def condition(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """Vision tokens [B, P, W] -> what the decoder is conditioned on."""
        raise NotImplementedError

    def image_context(self, images: torch.Tensor | None) -> torch.Tensor | None:
        return None if images is None else self.condition(self.vision(images))

    def embed_images(self, images: torch.Tensor | None = None,
                     image_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalised image embeddings [B, E] from mean-pooled vision tokens."""
        if image_tokens is None:
            image_tokens = self.vision(images)
        return F.normalize(self.image_head(image_tokens.mean(dim=1)), dim=-1)

    def text_state(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The decoder's state at the last real token (EOS) read with no image: CLIP's EOT token."""
        hidden = self.decoder.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                            use_cache=False).last_hidden_state
        return last_token_state(hidden, attention_mask)

    def embed_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """L2-normalised text embeddings [B, E]."""
        return F.normalize(self.text_head(self.text_state(input_ids, attention_mask)), dim=-1)

    @property
    def embedding_pass_fraction(self) -> float:
        """The share of the decoder's layers that the no-image text-embedding pass adds to a
        training step's captioning pass: 1 for a whole second pass; less where `caption_pass`
        reuses layers (Flamingo's below its first block; CoCa's unimodal layers: 0). What the
        model FLOPs count (babymm.speed)."""
        return 1.0

    def caption_pass(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Caption logits and text embeddings of one training batch. A type whose captioning
        pass already computes the unimodal text state (CoCa) overrides this to reuse it."""
        return (self.caption_logits(input_ids, attention_mask, context),
                self.embed_texts(input_ids, attention_mask))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                images: torch.Tensor | None = None, text_input_ids: torch.Tensor | None = None,
                text_attention_mask: torch.Tensor | None = None, caption_items: float | None = None,
                text_items: float | None = None, captioning: bool = True,
                embeddings: bool = True, image_view: torch.Tensor | None = None,
                view_input_ids: torch.Tensor | None = None, view_attention_mask: torch.Tensor | None = None,
                simsiam: bool = False) -> dict[str, torch.Tensor]:
        """Also returns both embeddings and the logit scale (and bias), so the contrastive loss is
        computed outside (where features are gathered across processes) without unwrapping the
        model. `captioning=False` skips the captioning pass and `embeddings=False` the contrastive
        embeddings, for a task whose weight on them is 0 (a term that is not trained is not run).

        Second views, for DeCLIP's multi-view supervision, in the same call so that data-parallel
        wrappers see every use of the parameters: `image_view` (another view of `images`) gives
        `image_view_embeds`, and with `simsiam` both views' SimSiam projections and predictions
        (`simsiam_z`, `simsiam_p`: [2, B, dim]); `view_input_ids`/`view_attention_mask` (another
        view of the captions) give `text_view_embeds`."""
        if input_ids is None:  # the text batch alone: stage 1 under FSDP, which runs it through the root
            return {"text_loss": self.text_loss(text_input_ids, text_attention_mask, text_items)}
        if not (captioning or embeddings):
            raise ValueError("nothing to compute: captioning and embeddings are both off")
        image_tokens = self.vision(images)  # [B, P, W]
        out: dict[str, torch.Tensor] = {}
        if captioning and embeddings:
            logits, out["text_embeds"] = self.caption_pass(input_ids, attention_mask, self.condition(image_tokens))
        elif captioning:
            logits = self.caption_logits(input_ids, attention_mask, self.condition(image_tokens))
        else:
            out["text_embeds"] = self.embed_texts(input_ids, attention_mask)
        if captioning:
            out["caption_loss"] = lm_loss(logits, input_ids, attention_mask, caption_items)
        if embeddings:
            out["image_embeds"] = self.embed_images(image_tokens=image_tokens)
            out["logit_scale"] = self.logit_scale
            if hasattr(self, "logit_bias"):
                out["logit_bias"] = self.logit_bias.reshape(())  # held [1] under FSDP
        if image_view is not None:
            view_tokens = self.vision(image_view)
            out["image_view_embeds"] = self.embed_images(image_tokens=view_tokens)
            if simsiam:
                # each view through the head alone, as SimSiam does: batch norm sees one view's batch
                (z1, p1), (z2, p2) = self.simsiam(image_tokens.mean(dim=1)), self.simsiam(view_tokens.mean(dim=1))
                out["simsiam_z"], out["simsiam_p"] = torch.stack([z1, z2]), torch.stack([p1, p2])
        elif simsiam:
            raise ValueError("SimSiam needs a second image view (image_view)")
        if view_input_ids is not None:
            out["text_view_embeds"] = self.embed_texts(view_input_ids, view_attention_mask)
        if text_input_ids is not None:
            out["text_loss"] = self.text_loss(text_input_ids, text_attention_mask, text_items)
        return out

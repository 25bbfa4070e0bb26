"""babymm's image-reading models as transformers models: the checkpoint the field loads.

A run's final model and each word-milestone export are saved through these classes with
`save_pretrained`. Because they are registered for the auto classes (`register_for_auto_class`,
done in babymm.models.saving), the checkpoint's `config.json` carries an `auto_map` and this file
is copied beside the weights together with every file it imports relatively (base.py, vision.py,
git.py, ...). Those files import only torch and transformers, so the checkpoint loads with
`AutoModelForCausalLM.from_pretrained(DIR)` with remote code trusted where babymm is not
installed: that is how the official BabyLM 2025 pipeline loads it. Inside babymm the classes are
registered with the auto classes on import, so no `trust_remote_code` is needed there.

The wrapped model (`.babymm`) is the very `BabyModel` babymm trains, so the exported forward is
the trained computation, not a re-implementation of it:

- `BabymmForCausalLM.forward(input_ids, attention_mask, pixel_values=None, labels=None)`: with no
  image, exactly the text decoder (what the text benchmarks score); with `pixel_values`, the
  captioning decoder conditioned on the image. Logits are returned for the text positions only
  (GIT's image prefix is not in them); `hidden_states`, when asked for, cover the whole sequence
  the decoder ran (GIT: the image prefix first), as transformers' GIT returns them. The loss is
  the mean next-token cross-entropy over the real text targets (`labels` -100 and padding are
  left out).
- A run trained on precomputed features of a frozen vision model (`--vision_encoder features
  --vision_model DIR`) carries that frozen model in the checkpoint (`image_features`), so the
  export takes pixels like any other; a run on features with no vision model named cannot take
  pixels and says so.
- `<image>` (`config.image_token_id`) marks where the image goes in a prompt, as the 2024
  baselines' tokenizers have it (the official DevBench wrapper puts `<image> ` before the prompts
  of cross-attention models). In babymm the image always conditions the whole text (GIT: as a
  prefix; Flamingo and CoCa: through cross-attention at every text position), so the marker
  carries nothing and is removed before the decoder runs; every row must hold the same number.
- DevBench's wrapper finds the image encoder at `model.git.image_encoder` (the prefix type, git)
  or `model.model.decoder.img_encoder` (the cross-attention types, flamingo and coca).
- `BabymmModel` (AutoModel: the decoder's last hidden states, what the official GLUE fine-tuning
  reads) and `BabymmForSequenceClassification` (a linear head on the last real token, as
  `LlamaForSequenceClassification`) use the text path.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    SequenceClassifierOutputWithPast,
)

from .base import BabyModel, last_token_state, lm_loss
from .coca import CocaModel
from .cross_attention import CrossAttentionBlock  # noqa: F401 - every file a direct import: transformers < 4.52 copies only those
from .flamingo import FlamingoModel
from .git import GitModel
from .vision import pool_tokens

# the image-reading types, by the name their config records (the `text` type is saved as a plain
# Llama checkpoint: it needs no code of its own)
IMAGE_TYPES: dict[str, type[BabyModel]] = {"git": GitModel, "flamingo": FlamingoModel, "coca": CocaModel}
PREFIX_TYPES = ("git",)  # the image is part of the decoder's sequence; the others cross-attend


class BabymmConfig(PretrainedConfig):
    """`babymm_type` and its babymm config (`babymm`, the dict `DecoderConfig.to_dict` gives), the
    frozen vision model's config if the run read one (`image_features`: {"config", "pooling",
    "prefix_tokens"}), and the decoder's sizes under transformers' usual names for tools that read
    them (lm-eval reads `max_position_embeddings`)."""

    model_type = "babymm"

    def __init__(self, babymm_type: str = "git", babymm: dict[str, Any] | None = None,
                 image_features: dict[str, Any] | None = None, image_token_id: int | None = None,
                 **kwargs: Any):
        self.babymm_type = babymm_type
        self.babymm = dict(babymm or {})
        self.image_features = image_features
        self.image_token_id = image_token_id
        d = self.babymm
        for name, key in (("vocab_size", "vocab_size"), ("hidden_size", "hidden_size"),
                          ("num_hidden_layers", "num_layers"), ("num_attention_heads", "num_heads"),
                          ("max_position_embeddings", "max_positions")):
            if key in d:
                kwargs.setdefault(name, d[key])
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if name in d:
                kwargs.setdefault(name, d[name])
        kwargs.setdefault("tie_word_embeddings", True)
        super().__init__(**kwargs)

    def babymm_config(self):
        """The wrapped model's babymm config."""
        if self.babymm_type not in IMAGE_TYPES:
            raise ValueError(f"babymm model type {self.babymm_type!r} unknown; known: {sorted(IMAGE_TYPES)}")
        return IMAGE_TYPES[self.babymm_type].config_class.from_dict({**self.babymm, "model_type": self.babymm_type})


class FrozenImageFeatures(nn.Module):
    """The frozen vision model a features run was trained on (e.g. DINOv2), pooled as its
    training features were: pixels [B, 3, H, W] -> features [B, D] or [B, T, D]."""

    def __init__(self, spec: dict[str, Any]):
        super().__init__()
        config = dict(spec["config"])
        self.model = AutoModel.from_config(AutoConfig.for_model(config.pop("model_type"), **config))
        self.model.requires_grad_(False)
        self.pooling = spec["pooling"]
        self.prefix_tokens = int(spec.get("prefix_tokens", 1))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.model(pixel_values=pixel_values.float()).last_hidden_state
        return pool_tokens(hidden, self.pooling, self.prefix_tokens)


class BabymmPreTrainedModel(PreTrainedModel):
    config_class = BabymmConfig
    base_model_prefix = "babymm"
    supports_gradient_checkpointing = False
    _supports_sdpa = True
    # the decoder's output embedding is its input embedding (saved once, tied again on load)
    _tied_weights_keys = {"babymm.decoder.lm_head.weight": "babymm.decoder.model.embed_tokens.weight"}

    def __init__(self, config: BabymmConfig, model: BabyModel | None = None):
        super().__init__(config)
        self.babymm = model if model is not None else IMAGE_TYPES[config.babymm_type](config.babymm_config())
        self.image_features = FrozenImageFeatures(config.image_features) if config.image_features else None
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Every weight of the babymm model is in the checkpoint or set by its own constructor,
        and transformers must not re-initialise any; the one weight a checkpoint lacks is a new
        task head (`score`), which `from_pretrained` builds on the meta device and fills here."""
        if module is getattr(self, "score", None):
            nn.init.normal_(module.weight, std=0.02)

    def get_input_embeddings(self) -> nn.Module:
        return self.babymm.decoder.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.babymm.decoder.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        """The decoder's head, tied to its input embedding in every class (transformers 4 ties
        through these two methods)."""
        return self.babymm.decoder.get_output_embeddings()

    # -- DevBench's paths to the image encoder ----------------------------------------------
    @property
    def git(self) -> SimpleNamespace | None:
        """`model.git.image_encoder`: where DevBench's wrapper finds a prefix model's encoder."""
        if self.config.babymm_type in PREFIX_TYPES:
            return SimpleNamespace(image_encoder=self.babymm.vision)
        return None

    @property
    def model(self) -> SimpleNamespace | None:
        """`model.model.decoder.img_encoder`: where it finds a cross-attention model's encoder."""
        if self.config.babymm_type in PREFIX_TYPES:
            return None
        return SimpleNamespace(decoder=SimpleNamespace(img_encoder=self.babymm.vision))

    # -- inputs -------------------------------------------------------------------------------
    def image_context(self, pixel_values: torch.Tensor | None,
                      image_features: torch.Tensor | None) -> torch.Tensor | None:
        """What the decoder is conditioned on, from pixels (through the frozen vision model if
        the run read features) or from precomputed features; None for no image."""
        if pixel_values is None and image_features is None:
            return None
        if pixel_values is not None and image_features is not None:
            raise ValueError("pass pixel_values or image_features, not both")
        encoder = self.babymm.config.vision_encoder
        if pixel_values is not None and encoder == "features":
            if self.image_features is None:
                raise ValueError("this model was trained on precomputed image features and carries no vision model "
                                 "to compute them from pixels; pass image_features=, or export it again with the "
                                 "vision model that made the features (python -m babymm.export --run_dir RUN --vision_model DIR)")
            image_features = self.image_features(pixel_values)
            pixel_values = None
        if image_features is not None and encoder != "features":
            raise ValueError(f"this model reads pixels (--vision_encoder {encoder}); pass pixel_values")
        images = pixel_values if pixel_values is not None else image_features
        return self.babymm.condition(self.babymm.vision(images))

    def drop_image_markers(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Remove the `<image>` marker positions (the same number in every row)."""
        marker = self.config.image_token_id
        if marker is None:
            return input_ids, attention_mask, labels
        keep = input_ids != marker
        if bool(keep.all()):
            return input_ids, attention_mask, labels
        counts = (~keep).sum(dim=1)
        if not bool((counts == counts[0]).all()):
            raise ValueError("rows hold different numbers of <image> markers; put one before each text or none")
        rows = input_ids.shape[0]
        labels = labels[keep].view(rows, -1) if labels is not None else None
        return input_ids[keep].view(rows, -1), attention_mask[keep].view(rows, -1), labels

    def run_decoder(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                    pixel_values: torch.Tensor | None, image_features: torch.Tensor | None,
                    labels: torch.Tensor | None, token_type_ids: torch.Tensor | None,
                    output_hidden_states: bool) -> tuple[Any, torch.Tensor, torch.Tensor | None]:
        """The decoder's output, the attention mask it used, and the labels, markers removed."""
        if token_type_ids is not None and bool((token_type_ids != 0).any()):
            raise ValueError("token_type_ids must be all 0: babymm's decoder has one segment")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        input_ids, attention_mask, labels = self.drop_image_markers(input_ids, attention_mask, labels)
        context = self.image_context(pixel_values, image_features)
        out = self.babymm.decode(input_ids, attention_mask, context, output_hidden_states=output_hidden_states)
        return out, attention_mask, labels


class BabymmForCausalLM(BabymmPreTrainedModel):
    """The captioning decoder: text, or text given an image."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                pixel_values: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None,
                token_type_ids: torch.Tensor | None = None, image_features: torch.Tensor | None = None,
                use_cache: bool | None = None) -> CausalLMOutputWithPast | tuple:
        """`use_cache` is accepted for callers that always pass it; no cache is kept."""
        out, mask, labels = self.run_decoder(input_ids, attention_mask, pixel_values, image_features, labels,
                                             token_type_ids, bool(output_hidden_states))
        loss = None
        if labels is not None:
            targets = mask * (labels != -100)
            loss = lm_loss(out.logits, labels.masked_fill(labels == -100, 0), targets)
        result = CausalLMOutputWithPast(loss=loss, logits=out.logits, hidden_states=out.hidden_states)
        return result if return_dict is not False else result.to_tuple()


class BabymmModel(BabymmPreTrainedModel):
    """The decoder's final hidden states at the text positions (AutoModel)."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                pixel_values: torch.Tensor | None = None, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, token_type_ids: torch.Tensor | None = None,
                image_features: torch.Tensor | None = None,
                use_cache: bool | None = None) -> BaseModelOutputWithPast | tuple:
        out, mask, _ = self.run_decoder(input_ids, attention_mask, pixel_values, image_features, None,
                                        token_type_ids, True)
        last = out.hidden_states[-1][:, -mask.shape[1]:]  # the text positions
        result = BaseModelOutputWithPast(last_hidden_state=last,
                                         hidden_states=out.hidden_states if output_hidden_states else None)
        return result if return_dict is not False else result.to_tuple()


class BabymmForSequenceClassification(BabymmPreTrainedModel):
    """A linear head on the decoder's final state at each row's last real token (right padding),
    as transformers' `LlamaForSequenceClassification`; the loss follows `config.problem_type`."""

    def __init__(self, config: BabymmConfig, model: BabyModel | None = None):
        super().__init__(config, model)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self._init_weights(self.score)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, return_dict: bool | None = None,
                token_type_ids: torch.Tensor | None = None,
                use_cache: bool | None = None) -> SequenceClassifierOutputWithPast | tuple:
        out, mask, _ = self.run_decoder(input_ids, attention_mask, None, None, None, token_type_ids, True)
        logits = self.score(last_token_state(out.hidden_states[-1], mask))
        loss = None
        if labels is not None:
            loss = self.classification_loss(logits, labels)
        result = SequenceClassifierOutputWithPast(loss=loss, logits=logits)
        return result if return_dict is not False else result.to_tuple()

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.config.problem_type is None:
            if self.config.num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        if self.config.problem_type == "regression":
            return nn.functional.mse_loss(logits.squeeze(-1), labels.float().view(-1))
        if self.config.problem_type == "single_label_classification":
            return nn.functional.cross_entropy(logits, labels.view(-1))
        return nn.functional.binary_cross_entropy_with_logits(logits, labels.float())

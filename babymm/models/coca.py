"""CoCa (Yu et al. 2022): the decoder's lower layers are a unimodal text encoder, the upper layers
cross-attend to the image tokens for captioning, and the contrastive loss reads two pooled
embeddings:

- text: a learned CLS embedding (a parameter of this model, not a vocabulary entry, so the saved
  decoder and tokenizer are those of a plain LM) is placed right after each caption's last real
  token; the unimodal layers' output there, layer-normed and projected, is the text embedding.
  The CLS sits after the caption, so under causal attention no caption token sees it, and it is
  never a target, so it is outside the captioning loss;
- image: an attentional pooler (one learned query, multi-head attention over the vision tokens,
  then a LayerNorm) and the image projection.

One captioning pass gives the caption logits and the CLS state together: the CLS is part of the
sequence, its state is read where it enters the first multimodal layer (before any
cross-attention, so it never depends on the image), and its logits land on a pad position the
loss masks. The multimodal layers attend to every vision token (CoCa's paper first pools them
with a 256-query attentional pooler). With no image the upper layers run without
cross-attention: that is the saved decoder, trained by the text batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .base import VisionLanguageConfig, VisionLanguageModel
from .cross_attention import CrossAttentionBlock, CrossAttentionHooks


@dataclass
class CocaConfig(VisionLanguageConfig):
    model_type: ClassVar[str] = "coca"
    unimodal_layers: int | None = field(default=None, metadata={
        "help": "Lower decoder layers without image cross-attention (the text encoder); "
                "default half the layers."})

    @property
    def num_unimodal(self) -> int:
        return self.unimodal_layers if self.unimodal_layers is not None else self.num_layers // 2

    def check(self) -> None:
        super().check()
        if not 1 <= self.num_unimodal < self.num_layers:
            raise ValueError(f"--unimodal_layers {self.num_unimodal} must be in [1, --num_layers {self.num_layers})")
        if self.vision_width % self.vision_heads:  # the attentional pooler's heads
            raise ValueError(f"--vision_width {self.vision_width} is not divisible by --vision_heads {self.vision_heads}")


class AttentionalPooler(nn.Module):
    """CoCa's attentional pooling: learned queries attend to the vision tokens (one multi-head
    attention layer), [B, P, W] -> [B, Q, W], then a LayerNorm. open_clip's `AttentionalPooler` also
    layer-norms the keys and the queries: every babymm vision encoder already ends in a LayerNorm,
    and a LayerNorm of a learned constant query is only a reparametrisation, so both are left out."""

    def __init__(self, width: int, heads: int, num_queries: int = 1):
        super().__init__()
        self.query = nn.Parameter(torch.randn(num_queries, width))  # open_clip's init
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm = nn.LayerNorm(width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        query = self.query.to(tokens.dtype).expand(tokens.shape[0], -1, -1)
        return self.norm(self.attn(query, tokens, tokens, need_weights=False)[0])


class CocaModel(VisionLanguageModel):
    config_class = CocaConfig
    config: CocaConfig

    def __init__(self, config: CocaConfig, decoder=None):
        super().__init__(config, decoder)
        # the text CLS, initialised as the decoder's token embeddings are
        self.cls_embedding = nn.Parameter(torch.randn(config.hidden_size) * self.decoder.config.initializer_range)
        self.text_norm = nn.LayerNorm(config.hidden_size)  # the unimodal state is pre-final-norm
        self.image_pool = AttentionalPooler(config.vision_width, config.vision_heads)
        self.cross_blocks = nn.ModuleDict({
            str(i): CrossAttentionBlock(config.hidden_size, config.num_heads, config.vision_width, gated=False)
            for i in range(config.num_unimodal, config.num_layers)})
        self._unimodal: torch.Tensor | None = None
        self._hooks = CrossAttentionHooks(self.decoder, self.cross_blocks, on_enter=self._record)

    @property
    def prefix_tokens(self) -> int:
        """The CLS: training sequences are one token longer than the caption."""
        return 1

    @property
    def embedding_pass_fraction(self) -> float:
        return 0.0  # the captioning pass reads the text embedding at its CLS

    def _record(self, index: int, hidden: torch.Tensor) -> None:
        if index == self.config.num_unimodal:
            self._unimodal = hidden

    def condition(self, image_tokens: torch.Tensor) -> torch.Tensor:
        return image_tokens  # [B, P, W]: the multimodal layers attend to every vision token

    def embed_images(self, images=None, image_tokens=None):
        """L2-normalised image embeddings [B, E]: the attentional pooler's one query, projected."""
        if image_tokens is None:
            image_tokens = self.vision(images)
        return F.normalize(self.image_head(self.image_pool(image_tokens)[:, 0]), dim=-1)

    def decode(self, input_ids, attention_mask, context=None, output_hidden_states=False):
        if context is None:
            return super().decode(input_ids, attention_mask, None, output_hidden_states)
        with self._hooks.attending(context):
            return super().decode(input_ids, attention_mask, None, output_hidden_states)

    def with_cls(self, input_ids: torch.Tensor,
                 attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-padded captions [B, T] -> input embeddings and mask [B, T+1] with the CLS embedding
        at position len_i of row i (just after its last real token, so its position is the same
        padded or not), and the CLS positions [B]."""
        embeds = self.decoder.get_input_embeddings()(input_ids)  # [B, T, H]
        cls_pos = attention_mask.sum(dim=1).long()
        at_cls = F.one_hot(cls_pos, input_ids.shape[1] + 1).bool()  # [B, T+1]
        embeds = torch.cat([embeds, embeds.new_zeros(embeds.shape[0], 1, embeds.shape[2])], dim=1)
        embeds = torch.where(at_cls[..., None], self.cls_embedding.to(embeds.dtype), embeds)
        mask = torch.cat([attention_mask, attention_mask.new_zeros(attention_mask.shape[0], 1)], dim=1)
        return embeds, mask.masked_fill(at_cls, 1), cls_pos

    def _embed_state(self, unimodal: torch.Tensor, cls_pos: torch.Tensor) -> torch.Tensor:
        """The unimodal layers' output [B, T+1, H] at the CLS -> L2-normalised text embeddings [B, E]."""
        cls_state = unimodal[torch.arange(unimodal.shape[0], device=unimodal.device), cls_pos]
        return F.normalize(self.text_head(self.text_norm(cls_state)), dim=-1)

    def embed_texts(self, input_ids, attention_mask):
        embeds, mask, cls_pos = self.with_cls(input_ids, attention_mask)
        hidden = self.decoder.get_decoder()(inputs_embeds=embeds, attention_mask=mask, use_cache=False,
                                            output_hidden_states=True).hidden_states
        return self._embed_state(hidden[self.config.num_unimodal], cls_pos)  # after the lower layers

    def caption_pass(self, input_ids, attention_mask, context):
        """One pass over caption + CLS. Logits [B, T, V] at the caption positions: each real one
        equals `caption_logits` there (causal: no caption token sees the CLS); the CLS's own logits
        sit at row i's position len_i, a pad whose target the loss masks (or at T, cut off)."""
        embeds, mask, cls_pos = self.with_cls(input_ids, attention_mask)
        try:
            with self._hooks.attending(context):
                logits = self.decoder(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits
            return logits[:, :-1], self._embed_state(self._unimodal, cls_pos)
        finally:
            self._unimodal = None

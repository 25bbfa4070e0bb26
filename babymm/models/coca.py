"""CoCa (Yu et al. 2022): the decoder's lower layers are a unimodal text encoder whose state at
the last token is the text embedding for the contrastive loss; the upper layers cross-attend
to the image tokens for captioning. One captioning pass gives both. With no image the upper
layers run without cross-attention: that is the saved decoder, trained by the text batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from babymm.models.base import VisionLanguageConfig, VisionLanguageModel, last_token_state
from babymm.models.cross_attention import CrossAttentionBlock, CrossAttentionHooks


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


class CocaModel(VisionLanguageModel):
    config_class = CocaConfig
    config: CocaConfig

    def __init__(self, config: CocaConfig, decoder=None):
        super().__init__(config, decoder)
        self.text_norm = nn.LayerNorm(config.hidden_size)  # the unimodal state is pre-final-norm
        self.cross_blocks = nn.ModuleDict({
            str(i): CrossAttentionBlock(config.hidden_size, config.num_heads, config.vision_width, gated=False)
            for i in range(config.num_unimodal, config.num_layers)})
        self._unimodal: torch.Tensor | None = None
        self._hooks = CrossAttentionHooks(self.decoder, self.cross_blocks, on_enter=self._record)

    def _record(self, index: int, hidden: torch.Tensor) -> None:
        if index == self.config.num_unimodal:
            self._unimodal = hidden

    def condition(self, image_tokens: torch.Tensor) -> torch.Tensor:
        return image_tokens  # [B, P, W]: the multimodal layers attend to every vision token

    def caption_logits(self, input_ids, attention_mask, context=None):
        if context is None:
            return self.text_logits(input_ids, attention_mask)
        with self._hooks.attending(context):
            return self.text_logits(input_ids, attention_mask)

    def _embed_state(self, unimodal: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = last_token_state(unimodal, attention_mask)
        return F.normalize(self.text_head(self.text_norm(pooled)), dim=-1)

    def embed_texts(self, input_ids, attention_mask):
        hidden = self.decoder.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                            output_hidden_states=True).hidden_states
        return self._embed_state(hidden[self.config.num_unimodal], attention_mask)  # after the lower layers

    def caption_pass(self, input_ids, attention_mask, context):
        try:
            logits = self.caption_logits(input_ids, attention_mask, context)
            return logits, self._embed_state(self._unimodal, attention_mask)
        finally:
            self._unimodal = None

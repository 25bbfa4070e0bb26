"""GIT (Wang et al. 2022): projected image tokens are a prefix of the decoder's input sequence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from babymm.models.base import VisionLanguageConfig, VisionLanguageModel


@dataclass
class GitConfig(VisionLanguageConfig):
    model_type: ClassVar[str] = "git"


class GitModel(VisionLanguageModel):
    config_class = GitConfig

    def __init__(self, config: GitConfig, decoder=None):
        super().__init__(config, decoder)
        self.projector = nn.Sequential(
            nn.Linear(config.vision_width, config.hidden_size), nn.GELU(),
            nn.Linear(config.hidden_size, config.hidden_size),
        )

    @property
    def prefix_tokens(self) -> int:
        return self.num_image_tokens

    def condition(self, image_tokens: torch.Tensor) -> torch.Tensor:
        return self.projector(image_tokens)  # [B, P, H]

    def caption_logits(self, input_ids, attention_mask, context=None):
        if context is None:
            return self.text_logits(input_ids, attention_mask)
        text = self.decoder.get_input_embeddings()(input_ids)  # [B, T, H]
        embeds = torch.cat([context.to(text.dtype), text], dim=1)  # [B, P+T, H]
        mask = torch.cat([attention_mask.new_ones(context.shape[:2]), attention_mask], dim=1)
        logits = self.decoder(inputs_embeds=embeds, attention_mask=mask).logits
        return logits[:, context.shape[1]:]  # [B, T, V]: text positions only

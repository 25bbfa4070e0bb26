"""GIT-style model: projected image tokens are a prefix of the decoder's input sequence."""

from __future__ import annotations

import torch
from torch import nn

from babymm.models.base import MultimodalConfig, MultimodalModel


class GitModel(MultimodalModel):
    def __init__(self, config: MultimodalConfig, decoder=None):
        super().__init__(config, decoder)
        self.projector = nn.Sequential(
            nn.Linear(config.vision.width, config.hidden_size), nn.GELU(),
            nn.Linear(config.hidden_size, config.hidden_size),
        )

    def caption_logits(self, image_tokens: torch.Tensor, input_ids: torch.Tensor,
                       attention_mask: torch.Tensor) -> torch.Tensor:
        prefix = self.projector(image_tokens)  # [B, P, H]
        text = self.decoder.get_input_embeddings()(input_ids)  # [B, T, H]
        embeds = torch.cat([prefix.to(text.dtype), text], dim=1)  # [B, P+T, H]
        mask = torch.cat([attention_mask.new_ones(prefix.shape[:2]), attention_mask], dim=1)
        logits = self.decoder(inputs_embeds=embeds, attention_mask=mask).logits
        return logits[:, prefix.shape[1]:]  # [B, T, V]: text positions only

"""GIT (Wang et al. 2022): projected image tokens are a prefix of the decoder's input sequence.

Attention follows GIT (and transformers' `GitModel`): the image tokens attend to each other in
both directions and never to the text; each text token attends to every image token and
causally to the text (itself and the real tokens before it). Padding keys are masked. The
decoder gets this as a ready 4-D mask, which transformers' Llama uses as given (a 4-D mask is
not combined with its causal mask). With no image the decoder runs exactly as the plain causal
LM the run saves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .base import VisionLanguageConfig, VisionLanguageModel

# attention implementations whose kernels take a dense 4-D mask: sdpa a boolean one (True:
# attend), eager an additive float one (0 or the dtype's minimum), as transformers builds them
DENSE_MASK_ATTENTION = ("sdpa", "eager")


def prefix_attention(num_prefix: int, attention_mask: torch.Tensor) -> torch.Tensor:
    """Which keys each query may attend to, [B, 1, P+T, P+T] boolean (True: attend), for P image
    tokens followed by the text of `attention_mask` [B, T] (1: real token): an image token sees
    every image token; a text token sees every image token and the real text up to itself."""
    B, T = attention_mask.shape
    n = num_prefix + T
    pos = torch.arange(n, device=attention_mask.device)
    causal = pos[None, :] <= pos[:, None]  # [q, k]: k is not after q
    image_key = pos[None, :] < num_prefix  # every query sees every image key, an image query nothing else
    allowed = causal | image_key  # [P+T, P+T]
    real_key = torch.cat([attention_mask.new_ones(B, num_prefix), attention_mask], dim=1).bool()  # [B, P+T]
    return (allowed[None] & real_key[:, None, :])[:, None]  # [B, 1, P+T, P+T]


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

    def prefix_mask(self, num_prefix: int, attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """`prefix_attention` in the form the decoder's attention implementation takes as a custom mask."""
        impl = self.decoder.config._attn_implementation
        if impl not in DENSE_MASK_ATTENTION:
            raise ValueError(f"GIT builds its own attention mask (bidirectional over the image prefix), which the "
                             f"decoder's attention implementation {impl!r} does not take; use one of "
                             f"{DENSE_MASK_ATTENTION}")
        allowed = prefix_attention(num_prefix, attention_mask)
        if impl == "sdpa":
            return allowed
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(dtype).min)

    def decode(self, input_ids, attention_mask, context=None, output_hidden_states=False):
        if context is None:
            return super().decode(input_ids, attention_mask, None, output_hidden_states)
        text = self.decoder.get_input_embeddings()(input_ids)  # [B, T, H]
        embeds = torch.cat([context.to(text.dtype), text], dim=1)  # [B, P+T, H]
        mask = self.prefix_mask(context.shape[1], attention_mask, embeds.dtype)
        # the head reads the text positions only: [B, T, V]; hidden states cover prefix and text
        return self.decoder(inputs_embeds=embeds, attention_mask=mask, logits_to_keep=input_ids.shape[1], use_cache=False,
                            output_hidden_states=output_hidden_states)

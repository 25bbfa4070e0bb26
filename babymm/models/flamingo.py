"""Flamingo (Alayrac et al. 2022): a Perceiver resampler turns the image tokens into a fixed
number of latents, and gated cross-attention blocks before every k-th decoder layer let the
text attend to them. The gates start at tanh(0) = 0, so training starts from the text model;
with no image the blocks are skipped and the decoder is exactly the text path.

The layers below the first cross-attention block never see the image, so the no-image pass that
gives the contrastive text embedding shares them with the captioning pass: a training step runs
them once and only the layers from the first block up twice (`caption_pass`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .base import VisionLanguageConfig, VisionLanguageModel, last_token_state
from .cross_attention import CrossAttentionBlock, CrossAttentionHooks, FeedForward


@dataclass
class FlamingoConfig(VisionLanguageConfig):
    model_type: ClassVar[str] = "flamingo"
    cross_attn_every: int = field(default=2, metadata={
        "help": "A gated cross-attention block before every k-th decoder layer (layers k-1, 2k-1, ...)."})
    num_latents: int = field(default=16, metadata={"help": "Perceiver resampler latents per image."})
    resampler_layers: int = field(default=2, metadata={"help": "Perceiver resampler layers."})

    def check(self) -> None:
        super().check()
        if not 1 <= self.cross_attn_every <= self.num_layers:
            raise ValueError(f"--cross_attn_every {self.cross_attn_every} must be in [1, --num_layers {self.num_layers}]")

    def cross_attn_layers(self) -> list[int]:
        return [i for i in range(self.num_layers) if (i + 1) % self.cross_attn_every == 0]


class PerceiverResampler(nn.Module):
    """Latents [L, W] attend to (image tokens ; latents), as Flamingo's resampler: [B, P, W] -> [B, L, W]."""

    def __init__(self, width: int, heads: int, num_latents: int, num_layers: int):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, width) * 0.02)
        self.layers = nn.ModuleList(nn.ModuleDict({
            "norm_media": nn.LayerNorm(width), "norm_latents": nn.LayerNorm(width),
            "attn": nn.MultiheadAttention(width, heads, batch_first=True), "ff": FeedForward(width),
        }) for _ in range(num_layers))
        self.norm = nn.LayerNorm(width)

    def forward(self, image_tokens: torch.Tensor) -> torch.Tensor:
        x = self.latents.expand(image_tokens.shape[0], -1, -1)
        for layer in self.layers:
            media, q = layer["norm_media"](image_tokens), layer["norm_latents"](x)
            kv = torch.cat([media, q], dim=1)
            x = x + layer["attn"](q, kv, kv, need_weights=False)[0]
            x = x + layer["ff"](x)
        return self.norm(x)


class FlamingoModel(VisionLanguageModel):
    config_class = FlamingoConfig
    config: FlamingoConfig

    def __init__(self, config: FlamingoConfig, decoder=None):
        super().__init__(config, decoder)
        self.resampler = PerceiverResampler(config.vision_width, config.vision_heads, config.num_latents,
                                            config.resampler_layers)
        self.cross_blocks = nn.ModuleDict({
            str(i): CrossAttentionBlock(config.hidden_size, config.num_heads, config.vision_width, gated=True)
            for i in config.cross_attn_layers()})
        self._entering: dict[int, torch.Tensor] | None = None  # set while caption_pass records
        self._hooks = CrossAttentionHooks(self.decoder, self.cross_blocks, on_enter=self._record)

    @property
    def first_cross_layer(self) -> int:
        return min(int(k) for k in self.cross_blocks)

    @property
    def embedding_pass_fraction(self) -> float:
        """The no-image text pass runs only the layers from the first cross-attention block up."""
        return 1.0 - self.first_cross_layer / self.config.num_layers

    def _record(self, index: int, hidden: torch.Tensor) -> None:
        if self._entering is not None and index == self.first_cross_layer:
            self._entering[index] = hidden  # the text path's states: the block has not run yet

    def condition(self, image_tokens: torch.Tensor) -> torch.Tensor:
        return self.resampler(image_tokens)  # [B, L, W]

    def decode(self, input_ids, attention_mask, context=None, output_hidden_states=False):
        if context is None:
            return super().decode(input_ids, attention_mask, None, output_hidden_states)
        with self._hooks.attending(context):
            return super().decode(input_ids, attention_mask, None, output_hidden_states)

    @contextlib.contextmanager
    def _layers_from(self, start: int) -> Iterator[None]:
        """The decoder runs its layers from `start` on (its input then being the states entering
        layer `start`); everything else in its forward (positions, mask, final norm) is as usual."""
        body = self.decoder.get_decoder()
        layers = body.layers
        body.layers = layers[start:]
        try:
            yield
        finally:
            body.layers = layers

    def caption_pass(self, input_ids, attention_mask, context):
        """Caption logits and text embeddings with the layers below the first block run once: the
        states entering it in the captioning pass are exactly those of the no-image pass, which
        goes on from there (equal to `embed_texts`, tested)."""
        first = self.first_cross_layer
        if first == 0:
            return super().caption_pass(input_ids, attention_mask, context)
        self._entering = {}
        try:
            logits = self.caption_logits(input_ids, attention_mask, context)
            shared = self._entering[first]
        finally:
            self._entering = None
        with self._layers_from(first):
            hidden = self.decoder.get_decoder()(inputs_embeds=shared, attention_mask=attention_mask,
                                                    use_cache=False).last_hidden_state
        return logits, F.normalize(self.text_head(last_token_state(hidden, attention_mask)), dim=-1)

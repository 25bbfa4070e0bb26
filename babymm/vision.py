"""Vision encoders: everything that turns the model's image input into a sequence of tokens.

The image input is one interface, `images -> [B, P, width]` tokens, whatever the source:
raw uint8 pixels through a small CNN trained from scratch (the built-in world has no
pretrained encoder to lean on), or precomputed features such as the BabyLM corpus's global
DINOv2 vectors ([B, D]) or patch tokens ([B, P, D]).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class VisionConfig:
    kind: str = "conv"  # conv | features
    width: int = 128  # channels of the output tokens
    image_size: int = 32  # conv only
    feature_dim: int = 768  # features only: D of the precomputed vectors


class ConvEncoder(nn.Module):
    """Strided CNN on uint8 pixels: [B, 3, S, S] -> [B, (S/8)^2, width] grid tokens."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        w = cfg.width
        self.net = nn.Sequential(
            nn.Conv2d(3, w // 4, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(w // 4, w // 2, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(w // 2, w, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(w, w, 1),
        )
        grid = -(-cfg.image_size // 8)
        self.num_tokens = grid * grid
        self.pos = nn.Parameter(torch.zeros(1, self.num_tokens, w))
        nn.init.normal_(self.pos, std=0.02)
        self.norm = nn.LayerNorm(w)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 127.5 - 1.0  # uint8 [0, 255] -> [-1, 1]
        x = self.net(x)  # [B, w, g, g]
        x = x.flatten(2).transpose(1, 2)  # [B, g*g, w]
        return self.norm(x + self.pos)


class FeatureEncoder(nn.Module):
    """Precomputed features: [B, D] (one token) or [B, P, D] -> [B, P, width]."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.proj = nn.Linear(cfg.feature_dim, cfg.width)
        self.norm = nn.LayerNorm(cfg.width)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() == 2:
            features = features[:, None, :]  # [B, 1, D]
        return self.norm(self.proj(features.float()))


VISION_ENCODERS: dict[str, type[nn.Module]] = {"conv": ConvEncoder, "features": FeatureEncoder}


def build_vision_encoder(cfg: VisionConfig) -> nn.Module:
    if cfg.kind not in VISION_ENCODERS:
        raise ValueError(f"vision encoder {cfg.kind!r} unknown; use one of {sorted(VISION_ENCODERS)}")
    return VISION_ENCODERS[cfg.kind](cfg)

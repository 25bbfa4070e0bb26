"""Vision encoders: everything that turns the model's image input into a sequence of tokens.

One interface, `images -> [B, P, width]` tokens, whatever the source: raw uint8 pixels through
a small CNN or a small ViT trained from scratch (the built-in world has no pretrained encoder
to lean on), or precomputed features such as the BabyLM corpus's global DINOv2 vectors
([B, D]) or patch tokens ([B, P, D]). Every encoder says how many tokens it gives
(`num_tokens`), so model types derive their sequence lengths instead of assuming them.
Features can also come from a frozen pretrained model in a local directory (`--vision_model`,
babymm.frozen_vision): data prep encodes the raw training images once, eval its own images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from torch import nn

VISION_ENCODERS = ("conv", "vit", "features")
PIXEL_ENCODERS = ("conv", "vit")
POOLINGS = ("cls", "mean", "patch")  # babymm.frozen_vision's, without importing transformers here


@dataclass
class VisionConfig:
    """The vision side of every image-reading model type (flags: `--vision_encoder` etc.)."""

    vision_encoder: str = field(default="conv", metadata={
        "help": "conv: small CNN on raw pixels; vit: small ViT on raw pixels (both from scratch); "
                "features: precomputed vectors [N, D] or patch tokens [N, P, D].",
        "choices": VISION_ENCODERS})
    vision_width: int = field(default=128, metadata={"help": "Width of the vision encoder's tokens."})
    vision_layers: int = field(default=2, metadata={"help": "Transformer layers of the vit encoder."})
    vision_heads: int = field(default=4, metadata={"help": "Attention heads of the vit encoder."})
    patch_size: int = field(default=8, metadata={"help": "Patch side in pixels of the vit encoder."})
    freeze_vision: bool = field(default=False, metadata={
        "help": "Keep the vision encoder's weights fixed (its random or given initialisation)."})
    vision_model: str | None = field(default=None, metadata={
        "help": "Local directory of a frozen pretrained vision model loaded with AutoModel (e.g. DINOv2) and "
                "its image processor; nothing is downloaded. With --vision_encoder features it turns the raw "
                "training images into features once (data prep) and computes the eval images' features; with "
                "precomputed-feature data it is used for the eval images only (the model that made the "
                "training features, with the same --vision_pooling)."})
    vision_pooling: str = field(default="cls", metadata={
        "help": "How --vision_model's tokens become features: cls (the layer-normed CLS token, DINOv2's "
                "pooler_output), mean (mean of the patch tokens), patch (every token, [T, D]).",
        "choices": POOLINGS})
    # set from the data by `resolve`, never flags
    image_size: int = field(default=32, init=False)  # pixels: side of the square images
    feature_dim: int = field(default=768, init=False)  # features: D
    feature_tokens: int = field(default=1, init=False)  # features: P (1 for global vectors)
    # features: babymm.frozen_vision.model_key of --vision_model when the run was built, so that
    # eval refuses a model directory that has changed since
    vision_model_key: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.vision_model:  # saved with the model: eval may run from another directory
            self.vision_model = os.path.abspath(os.path.expanduser(self.vision_model))

    def check_vision(self) -> None:
        if self.vision_encoder not in VISION_ENCODERS:
            raise ValueError(f"vision encoder {self.vision_encoder!r} unknown; use one of {VISION_ENCODERS}")
        if self.vision_pooling not in POOLINGS:
            raise ValueError(f"--vision_pooling {self.vision_pooling!r} unknown; use one of {', '.join(POOLINGS)}")
        if self.vision_model and self.vision_encoder in PIXEL_ENCODERS:
            raise ValueError(f"--vision_model is read through --vision_encoder features (the frozen model's "
                             f"features, projected); --vision_encoder {self.vision_encoder} learns from raw pixels "
                             "and would ignore it: pass --vision_encoder features, or drop --vision_model")
        if self.vision_encoder == "vit":
            if self.image_size % self.patch_size:
                raise ValueError(f"--patch_size {self.patch_size} does not divide the image size {self.image_size}")
            if self.vision_width % self.vision_heads:
                raise ValueError(f"--vision_width {self.vision_width} is not divisible by --vision_heads {self.vision_heads}")


class ConvEncoder(nn.Module):
    """Strided CNN on uint8 pixels: [B, 3, S, S] -> [B, ceil(S/8)^2, width] grid tokens."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        w = cfg.vision_width
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


class ViTEncoder(nn.Module):
    """A small pre-norm ViT on uint8 pixels: [B, 3, S, S] -> [B, (S/patch)^2, width] patch tokens."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        w = cfg.vision_width
        self.patch = nn.Conv2d(3, w, cfg.patch_size, stride=cfg.patch_size)
        self.num_tokens = (cfg.image_size // cfg.patch_size) ** 2
        self.pos = nn.Parameter(torch.zeros(1, self.num_tokens, w))
        nn.init.normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(w, cfg.vision_heads, 4 * w, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, cfg.vision_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(w)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 127.5 - 1.0
        x = self.patch(x).flatten(2).transpose(1, 2)  # [B, P, w]
        return self.norm(self.blocks(x + self.pos))


class FeatureEncoder(nn.Module):
    """Precomputed features: [B, D] (one token) or [B, P, D] -> [B, P, width]."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.num_tokens = cfg.feature_tokens
        self.proj = nn.Linear(cfg.feature_dim, cfg.vision_width)
        self.norm = nn.LayerNorm(cfg.vision_width)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() == 2:
            features = features[:, None, :]  # [B, 1, D]
        return self.norm(self.proj(features.float()))


def pool_tokens(last_hidden_state: torch.Tensor, pooling: str, prefix_tokens: int = 1) -> torch.Tensor:
    """A frozen vision model's [B, T, D] tokens -> [B, D] (cls, mean) or [B, T, D] (patch);
    `prefix_tokens`: CLS and register tokens before the patches (see babymm.frozen_vision)."""
    if pooling == "cls":
        return last_hidden_state[:, 0]
    if pooling == "mean":
        return last_hidden_state[:, prefix_tokens:].mean(dim=1)
    if pooling == "patch":
        return last_hidden_state
    raise ValueError(f"vision pooling {pooling!r} unknown; use one of {', '.join(POOLINGS)}")


_ENCODERS: dict[str, type[nn.Module]] = {"conv": ConvEncoder, "vit": ViTEncoder, "features": FeatureEncoder}


def build_vision_encoder(cfg: VisionConfig) -> nn.Module:
    cfg.check_vision()
    encoder = _ENCODERS[cfg.vision_encoder](cfg)
    if cfg.freeze_vision:
        encoder.requires_grad_(False)
    return encoder

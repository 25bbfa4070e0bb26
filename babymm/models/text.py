"""The text-only baseline: the same decoder with no vision at all. Captions are trained on as
plain text; scored with no image it is the "no vision" control for Winoground and VQA."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import BabyModel, DecoderConfig


@dataclass
class TextConfig(DecoderConfig):
    model_type: ClassVar[str] = "text"


class TextModel(BabyModel):
    config_class = TextConfig

"""Model types behind one interface: `--model_type {git,flamingo,coca,text}`.

Each type is a model class with its own config class beside it (`config_class`); training
and eval only use the shared interface (`BabyModel`, `VisionLanguageModel`). Add a type by
writing its module and registering its class here (and, for an image type, in
modeling_babymm.IMAGE_TYPES, which exported checkpoints use). Saving and loading: saving.py.
"""

from __future__ import annotations

from babymm.models.base import (
    BabyModel,
    DecoderConfig,
    VisionLanguageConfig,
    VisionLanguageModel,
)
from babymm.models.coca import CocaConfig, CocaModel
from babymm.models.flamingo import FlamingoConfig, FlamingoModel
from babymm.models.git import GitConfig, GitModel
from babymm.models.presets import DEFAULT_PRESET, PRESETS
from babymm.models.saving import load_model, register, save_model
from babymm.models.text import TextConfig, TextModel

MODEL_TYPES: dict[str, type[BabyModel]] = {
    "git": GitModel, "flamingo": FlamingoModel, "coca": CocaModel, "text": TextModel}


def model_class(model_type: str) -> type[BabyModel]:
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model type {model_type!r} unknown; use one of {sorted(MODEL_TYPES)}")
    return MODEL_TYPES[model_type]


def build_model(config: DecoderConfig) -> BabyModel:
    return model_class(config.model_type)(config)


register()  # importing babymm lets the auto classes load its checkpoints without remote code

__all__ = ["DEFAULT_PRESET", "MODEL_TYPES", "PRESETS", "BabyModel", "CocaConfig", "DecoderConfig",
           "FlamingoConfig", "GitConfig", "TextConfig", "VisionLanguageConfig", "VisionLanguageModel",
           "build_model", "load_model", "model_class", "save_model"]

"""Model types behind one interface (`MultimodalModel`); add a type by registering it here."""

from __future__ import annotations

from pathlib import Path

from babymm.models.base import MultimodalConfig, MultimodalModel, load_multimodal
from babymm.models.git import GitModel

MODEL_TYPES: dict[str, type[MultimodalModel]] = {"git": GitModel}


def build_model(config: MultimodalConfig) -> MultimodalModel:
    if config.model_type not in MODEL_TYPES:
        raise ValueError(f"model type {config.model_type!r} unknown; use one of {sorted(MODEL_TYPES)}")
    return MODEL_TYPES[config.model_type](config)


def load_model(path: str | Path) -> MultimodalModel:
    return load_multimodal(path, MODEL_TYPES)


__all__ = ["MODEL_TYPES", "MultimodalConfig", "MultimodalModel", "build_model", "load_model"]

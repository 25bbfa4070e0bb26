"""Saving and loading babymm models as transformers checkpoints.

An image-reading model is saved through `BabymmForCausalLM` (babymm.models.modeling_babymm) with
its modeling code, tokenizer and processor beside the weights, so the directory is what the
official BabyLM pipeline loads (`AutoModelForCausalLM` / `AutoProcessor`, remote code trusted).
The `text` type is saved as the plain `LlamaForCausalLM` it is: no code of its own to ship.

The processor is transformers' `GitProcessor`, as the 2024 baselines ship: the tokenizer (fast,
for offset mappings; emitting `token_type_ids`, which DevBench's wrapper pops; with `<image>` as
a special token) and an image processor that prepares pixels exactly as babymm's training does:
for the pixel encoders a `ViTImageProcessor` that resizes to the run's image size (bicubic, as
babymm.images.load_image) and keeps values in [0, 255] (the encoders rescale them); for a run on
features of a frozen vision model, that model's own image processor.

Runs saved before this format (`babymm_config.json` + `multimodal.safetensors` beside a Llama
decoder) still load.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path
from typing import Any

from PIL import Image
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    GitProcessor,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
)

from babymm.models.base import BabyModel, VisionLanguageModel
from babymm.models.modeling_babymm import (
    BabymmConfig,
    BabymmForCausalLM,
    BabymmForSequenceClassification,
    BabymmModel,
    FrozenImageFeatures,
)
from babymm.models.text import TextConfig, TextModel
from babymm.tokenizer import IMAGE_TOKEN

LEGACY_CONFIG, LEGACY_WEIGHTS = "babymm_config.json", "multimodal.safetensors"
TOKENIZER_INPUTS = ["input_ids", "token_type_ids", "attention_mask"]
AUTO_MAP = {"AutoConfig": "modeling_babymm.BabymmConfig", "AutoModel": "modeling_babymm.BabymmModel",
            "AutoModelForCausalLM": "modeling_babymm.BabymmForCausalLM",
            "AutoModelForSequenceClassification": "modeling_babymm.BabymmForSequenceClassification"}


def register() -> None:
    """Let the auto classes load babymm checkpoints in this process without remote code, and
    make `save_pretrained` ship the modeling code with an `auto_map`."""
    AutoConfig.register(BabymmConfig.model_type, BabymmConfig, exist_ok=True)
    for auto, cls in ((AutoModel, BabymmModel), (AutoModelForCausalLM, BabymmForCausalLM),
                      (AutoModelForSequenceClassification, BabymmForSequenceClassification)):
        auto.register(BabymmConfig, cls, exist_ok=True)
    BabymmConfig.register_for_auto_class()
    BabymmForCausalLM.register_for_auto_class("AutoModelForCausalLM")


def _say(msg: str) -> None:
    print(f"[export] {msg}", file=sys.stderr, flush=True)


def export_tokenizer(tokenizer: PreTrainedTokenizerBase) -> tuple[PreTrainedTokenizerBase, int]:
    """A copy of the run's tokenizer as the checkpoint ships it, and the `<image>` id."""
    tok = copy.deepcopy(tokenizer)
    tok.model_input_names = list(TOKENIZER_INPUTS)
    tok.init_kwargs["model_input_names"] = list(TOKENIZER_INPUTS)  # what tokenizer_config.json records
    if IMAGE_TOKEN not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    return tok, tok.convert_tokens_to_ids(IMAGE_TOKEN)


def pixel_processor(image_size: int) -> Any:
    """Pixels as the conv/vit encoders are trained on them: RGB, resized to the run's image side
    with bicubic resampling (babymm.images.load_image), values kept in [0, 255]. (Imported here:
    without torchvision, transformers warns on import that it falls back to the PIL backend.)"""
    from transformers import ViTImageProcessor

    return ViTImageProcessor(do_resize=True, size={"height": image_size, "width": image_size},
                             resample=Image.Resampling.BICUBIC, do_rescale=False, do_normalize=False)


def frozen_vision_of(model: VisionLanguageModel) -> Any | None:
    """The run's frozen vision model, if it read features made by one that is still as it was;
    None (and why, said once) if the export cannot carry one."""
    cfg = model.config
    if cfg.vision_encoder != "features":
        return None
    if not cfg.vision_model:
        _say("this run was trained on precomputed features and names no --vision_model, so its export takes "
             "image_features= but no pixels (the official pipeline feeds pixels); export it with the model that "
             "made the features: python -m babymm.export --run_dir RUN --vision_model DIR")
        return None
    from babymm.frozen_vision import load_frozen_vision

    frozen = load_frozen_vision(cfg.vision_model, cfg.vision_pooling, device="cpu")
    problem = frozen_mismatch(cfg, frozen)
    if problem:
        _say(f"{problem}: the export carries no vision model; name the original with "
             "python -m babymm.export --run_dir RUN --vision_model DIR")
        return None
    return frozen


def frozen_mismatch(cfg: Any, frozen: Any) -> str | None:
    """Why `frozen` is not the vision model that made the training features of the run with
    config `cfg` (another content key than the run recorded, or another feature width); None
    if nothing says it is not."""
    if cfg.vision_model_key and frozen.key != cfg.vision_model_key:
        return f"{frozen.path} has key {frozen.key}, but the run's features were made by {cfg.vision_model_key}"
    width = frozen.model.config.hidden_size
    if width != cfg.feature_dim:
        return f"{frozen.path} gives {width}-dim features, but the run was trained on {cfg.feature_dim}-dim ones"
    return None


def to_hf(model: VisionLanguageModel, image_token_id: int | None = None,
          frozen: Any | None = None) -> BabymmForCausalLM:
    """The transformers model around `model` (sharing its parameters), carrying `frozen`'s
    vision model if given."""
    spec = None
    if frozen is not None:
        spec = {"config": frozen.model.config.to_dict(), "pooling": frozen.pooling,
                "prefix_tokens": frozen.prefix_tokens}
    config = BabymmConfig(babymm_type=model.config.model_type,
                          babymm={k: v for k, v in model.config.to_dict().items() if k != "model_type"},
                          image_features=spec, image_token_id=image_token_id)
    config.auto_map = dict(AUTO_MAP)
    hf = BabymmForCausalLM(config, model=model)
    if frozen is not None:
        hf.image_features.model.load_state_dict(frozen.model.state_dict())
    return hf


def save_model(model: BabyModel, tokenizer: PreTrainedTokenizerBase | None, out_dir: str | Path,
               frozen: Any | None = None) -> None:
    """Write `model` with its tokenizer (and, for an image type, its modeling code and processor)
    into `out_dir` as one transformers checkpoint. `frozen`: the vision model a features run is
    exported with (default: the run's own `--vision_model`). With no tokenizer only the model is
    written (tests; a checkpoint the official pipeline loads needs the tokenizer)."""
    out_dir = Path(out_dir)
    if not model.has_vision:  # a plain decoder and the run's own tokenizer, as any causal LM ships
        model.decoder.save_pretrained(out_dir)
        if tokenizer is not None:
            tokenizer.save_pretrained(out_dir)
            _portable_tokenizer_config(out_dir / "tokenizer_config.json")
        return
    tok, image_token_id = export_tokenizer(tokenizer) if tokenizer is not None else (None, None)
    register()
    frozen = frozen if frozen is not None else frozen_vision_of(model)
    hf = to_hf(model, image_token_id, frozen)
    hf.save_pretrained(out_dir)
    if tok is None:
        return
    if model.config.vision_encoder != "features":
        image_processor = pixel_processor(model.config.image_size)
    elif frozen is not None:
        image_processor = frozen.processor
    else:
        image_processor = None  # no pixels to process: AutoProcessor gives the tokenizer
    if image_processor is None:
        tok.save_pretrained(out_dir)
    else:
        # the layout the 2024 baselines ship and every transformers reads: the image processor's
        # preprocessor_config.json naming the processor class (transformers 5's processor_config.json,
        # which nests the image processor, is not readable by transformers 4)
        GitProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(out_dir)
        (out_dir / "processor_config.json").unlink(missing_ok=True)
        image_processor.save_pretrained(out_dir)
        kind = type(image_processor).__name__.removesuffix("Fast").removesuffix("Pil")
        # the slow class's name, which transformers 4 has (its fast classes need torchvision)
        _add_json(out_dir / "preprocessor_config.json", {"processor_class": "GitProcessor", "image_processor_type": kind})
    _portable_tokenizer_config(out_dir / "tokenizer_config.json")


def _add_json(path: Path, fields: dict[str, Any]) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}, indent=2) + "\n")


def _portable_tokenizer_config(path: Path) -> None:
    """tokenizer_config.json as transformers 4 reads it too (the official pipeline pins 4.51): the
    fast tokenizer's class by its long-standing name, and `<image>` as an additional special
    token (transformers 5 writes `extra_special_tokens` as a list, which 4 reads as a dict)."""
    cfg = json.loads(path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    extra = cfg.pop("extra_special_tokens", None)
    if isinstance(extra, list):
        cfg["additional_special_tokens"] = extra
    elif extra:
        cfg["extra_special_tokens"] = extra
    path.write_text(json.dumps(cfg, indent=2) + "\n")


# files a checkpoint of another form or version may have left in a directory saved into again
STALE = (LEGACY_CONFIG, LEGACY_WEIGHTS, "processor_config.json", "special_tokens_map.json",
         "generation_config.json", "preprocessor_config.json", "modeling_babymm.py")


def move_into(staged: str | Path, out: str | Path) -> None:
    """Rename every file `save_model` wrote into `staged` into `out`, each whole, then remove what
    an earlier save there wrote that this one did not (old format, another processor layout)."""
    staged, out = Path(staged), Path(out)
    written = {f.name for f in staged.iterdir()}
    for f in staged.iterdir():
        os.replace(f, out / f.name)
    for name in STALE:
        if name not in written:
            (out / name).unlink(missing_ok=True)


def load_model(path: str | Path) -> BabyModel:
    """The babymm model saved in `path` (any type, this format or the one before it)."""
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file} not found: {path} is not a saved babymm model")
    model_type = json.loads(cfg_file.read_text()).get("model_type")
    if model_type != BabymmConfig.model_type and (path / LEGACY_CONFIG).is_file():
        return _load_legacy(path)
    if model_type == BabymmConfig.model_type:
        register()
        model = BabymmForCausalLM.from_pretrained(path).babymm
        if model.config.freeze_vision:  # loading makes every parameter trainable again
            model.vision.requires_grad_(False)
        return model
    if model_type == "llama":  # the text type
        decoder = LlamaForCausalLM.from_pretrained(path)
        return TextModel(TextConfig.from_text_config(decoder.config), decoder=decoder)
    raise ValueError(f"{cfg_file}: model type {model_type!r} is not a babymm model (babymm or llama)")


def _load_legacy(path: Path) -> BabyModel:
    """A model saved before transformers checkpoints: the decoder at the root, the rest in
    `multimodal.safetensors`, the type's config in `babymm_config.json`."""
    from babymm.models import model_class

    saved = json.loads((path / LEGACY_CONFIG).read_text())
    cls = model_class(saved.get("model_type"))
    model = cls(cls.config_class.from_dict(saved), decoder=AutoModelForCausalLM.from_pretrained(path))
    if (path / LEGACY_WEIGHTS).is_file():
        missing, unexpected = model.load_state_dict(load_file(str(path / LEGACY_WEIGHTS)), strict=False)
        missing = [k for k in missing if not k.startswith("decoder.")]
        if missing or unexpected:
            raise ValueError(f"{path / LEGACY_WEIGHTS}: missing {missing}, unexpected {unexpected}")
    return model


__all__ = ["FrozenImageFeatures", "export_tokenizer", "load_model", "move_into", "pixel_processor", "register",
           "save_model", "to_hf"]

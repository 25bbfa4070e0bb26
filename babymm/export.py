"""Export a run (or one of its word milestones) again as the checkpoint the official pipeline loads.

    python -m babymm.export --run_dir RUN [--vision_model DIR] [--output_dir OUT]

Two uses. A run trained on precomputed features (the BabyLM corpus's DINOv2 vectors) names no
vision model, so its export cannot take pixels; `--vision_model` names the frozen model that made
the features (a local `save_pretrained` directory, e.g. DINOv2) and the export carries it, read
with the run's `--vision_pooling`. And a run saved in babymm's earlier format
(`multimodal.safetensors` + `babymm_config.json`) is rewritten as a transformers checkpoint.
Without `--output_dir` the run directory is rewritten in place, each file renamed into place
whole; files of the previous format or processor layout are then removed.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from transformers import HfArgumentParser

from babymm.files import DataError
from babymm.models import load_model, save_model
from babymm.models.saving import frozen_mismatch, move_into
from babymm.tokenizer import load_tokenizer


@dataclass
class ExportArguments:
    run_dir: str = field(metadata={"help": "A run directory or a milestone directory (milestones/chck_*)."})
    vision_model: str | None = field(default=None, metadata={
        "help": "Local directory of the frozen vision model that made the run's training features; the export "
                "carries it so that the checkpoint takes pixels."})
    output_dir: str | None = field(default=None, metadata={"help": "Where to write (default: the run, in place)."})


def frozen_for(model, vision_model: str):
    """The frozen vision model to carry, checked against what the run was trained on."""
    from babymm.frozen_vision import load_frozen_vision

    cfg = model.config
    if not model.has_vision or cfg.vision_encoder != "features":
        raise DataError(f"--vision_model applies to a run trained on features; this one is "
                        f"{cfg.model_type} with --vision_encoder {getattr(cfg, 'vision_encoder', None)}")
    frozen = load_frozen_vision(vision_model, cfg.vision_pooling, device="cpu")
    problem = frozen_mismatch(cfg, frozen)
    if problem:
        raise DataError(f"--vision_model: {problem}; name the model that made its features")
    return frozen


def carried_frozen(run_dir: Path) -> SimpleNamespace | None:
    """The frozen vision model a checkpoint already carries (`image_features`), in the form
    `save_model` takes, so that exporting it again keeps it; None if it carries none."""
    config = json.loads((run_dir / "config.json").read_text())
    if config.get("model_type") != "babymm" or not config.get("image_features"):
        return None
    from transformers import AutoImageProcessor, AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(run_dir)
    spec = config["image_features"]
    return SimpleNamespace(model=hf.image_features.model, pooling=spec["pooling"],
                           prefix_tokens=spec["prefix_tokens"], processor=AutoImageProcessor.from_pretrained(run_dir))


def export(run_dir: str | Path, vision_model: str | None = None, output_dir: str | Path | None = None) -> Path:
    """Write the model in `run_dir` as a checkpoint into `output_dir` (default: in place), with
    `vision_model`'s frozen model, or the one the checkpoint already carries."""
    run_dir = Path(run_dir)
    model = load_model(run_dir)
    tokenizer = load_tokenizer(run_dir)
    frozen = frozen_for(model, vision_model) if vision_model else carried_frozen(run_dir)
    out = Path(output_dir) if output_dir else run_dir
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as staged:
        save_model(model, tokenizer, staged, frozen=frozen)
        move_into(staged, out)
    return out


def main(argv: list[str] | None = None) -> int:
    (args,) = HfArgumentParser(ExportArguments).parse_args_into_dataclasses(argv)
    try:
        out = export(args.run_dir, args.vision_model, args.output_dir)
    except (DataError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"[export] {out}: a transformers checkpoint (AutoModelForCausalLM / AutoProcessor, trust_remote_code)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

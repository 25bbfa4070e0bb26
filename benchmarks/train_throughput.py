"""Training-step throughput per model type and size preset, on synthetic batches.

    python benchmarks/train_throughput.py [--types git flamingo coca text] [--presets tiny small]
        [--device cpu|cuda] [--precision fp32] [--steps 20] [--out results/throughput.md]

Each step is exactly a stage-2 training step of `babymm/train.py`: the type's task builds the
loss terms of a caption batch with a text batch mixed in (for image types: captioning LM,
text LM and the gap-closing contrastive loss), then backward, gradient clipping, AdamW and the
task's after-step. Sizes come from the presets, so the table matches what `--preset` trains.
Prints one JSON line per setting and a Markdown table: parameters, step time, steps/s,
tokens/s (every token through the decoder: image prefix, caption, text batch) and pairs/s.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import pandas as pd
import torch

from babymm.config import parse_config
from babymm.files import write_json_atomic, write_text_atomic
from babymm.models import MODEL_TYPES, PRESETS, VisionLanguageModel, build_model, model_class
from babymm.optim import build_optimizer
from babymm.tasks import task_for


def preset_model(model_type: str, preset: str, image_size: int):
    """The model `--model_type T --preset P` trains, at the preset's nominal vocabulary size
    (a small corpus may support fewer pieces), on conv pixels."""
    cfg = parse_config(["--model_type", model_type, "--preset", preset])
    derived = {"vocab_size": cfg.data.vocab_size}
    if model_class(model_type).has_vision:
        derived["image_size"] = image_size
    return cfg, build_model(cfg.model.resolve(**derived))


def param_counts(types: list[str], presets: list[str], image_size: int) -> pd.DataFrame:
    """Millions of parameters (total; trainable is the same unless --freeze_vision) per type and preset."""
    rows = {}
    for preset in presets:
        for t in types:
            torch.manual_seed(0)
            rows[(preset, t)] = round(preset_model(t, preset, image_size)[1].num_parameters() / 1e6, 2)
    return pd.Series(rows).unstack().reindex(index=presets, columns=types)


def bench(model_type: str, preset: str, args: argparse.Namespace, precision: str) -> dict:
    torch.manual_seed(0)
    dev = torch.device(args.device)
    cfg, model = preset_model(model_type, preset, args.image_size)
    model = model.to(dev)
    vocab = cfg.data.vocab_size
    task = task_for(type(model))(cfg.loss)
    opt = build_optimizer(model, 1e-4, 0.1)
    B, T, TB, L = args.batch, args.caption_tokens, args.text_batch, cfg.data.block_size
    ids = torch.randint(4, vocab, (B, T), device=dev)
    text = torch.randint(4, vocab, (TB, L), device=dev)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
             "text_input_ids": text, "text_attention_mask": torch.ones_like(text)}
    if model.has_vision:
        batch["images"] = torch.randint(0, 256, (B, 3, args.image_size, args.image_size), dtype=torch.uint8, device=dev)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32

    def step() -> None:
        with torch.autocast(dev.type, dtype=dtype, enabled=precision == "bf16"):
            loss = sum(task.loss_terms(model, batch).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        task.after_step(model)

    for _ in range(args.warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    secs = (time.perf_counter() - start) / args.steps
    # caption pass (+ GIT's image prefix); a separate no-image pass for the text embedding unless the
    # type reads it inside its captioning pass (CoCa overrides `caption_pass`); the text batch
    separate_embed_pass = model.has_vision and type(model).caption_pass is VisionLanguageModel.caption_pass
    tokens = B * (T + model.prefix_tokens) + (B * T if separate_embed_pass else 0) + TB * L
    return {"type": model_type, "preset": preset, "device": args.device,
            "name": torch.cuda.get_device_name() if dev.type == "cuda" else platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "precision": precision,
            "params_M": round(model.num_parameters() / 1e6, 2), "batch": B, "text_batch": TB,
            "step_ms": round(1000 * secs, 1), "steps_per_s": round(1 / secs, 2),
            "tokens_per_s": round(tokens / secs), "pairs_per_s": round(B / secs, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--types", nargs="+", default=sorted(MODEL_TYPES), choices=sorted(MODEL_TYPES))
    p.add_argument("--presets", nargs="+", default=["tiny", "small"], choices=sorted(PRESETS))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=64, help="image-caption pairs per step")
    p.add_argument("--text_batch", type=int, default=32, help="text blocks per step")
    p.add_argument("--caption_tokens", type=int, default=16)
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--out", type=Path, help="also write the table as Markdown (and .json) here")
    p.add_argument("--params_only", action="store_true", help="print parameter counts (M) per preset and type")
    args = p.parse_args(argv)
    if args.params_only:
        print(param_counts(args.types, args.presets, args.image_size).to_markdown())
        return 0
    rows = []
    for preset in args.presets:
        for model_type in args.types:
            for precision in args.precision:
                rows.append(bench(model_type, preset, args, precision))
                print(json.dumps(rows[-1]), flush=True)
    table = pd.DataFrame(rows).to_markdown(index=False)
    print(table)
    if args.out:
        write_text_atomic(args.out, table + "\n")
        write_json_atomic(args.out.with_suffix(".json"), rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Training-step throughput and MFU per model type and size preset, on synthetic batches.

    python benchmarks/train_throughput.py [--types git flamingo coca text] [--presets tiny small]
        [--device cpu|cuda] [--precision fp32 bf16] [--compile] [--vision_encoder conv|features]
        [--losses cua siglip declip ...] [--steps 20] [--out results/throughput.md]

Each step is exactly a stage-2 training step of `babymm/train.py`: the type's task builds the
loss terms of a caption batch with a text batch mixed in (for image types: captioning LM,
text LM and the gap-closing contrastive loss), then backward, gradient clipping, AdamW (fused on
CUDA, as training builds it) and the task's after-step. Sizes come from the presets, so the table
matches what `--preset` trains. Prints one JSON line per setting and a Markdown table:
parameters, step time, steps/s, tokens/s (every token through the decoder: image prefix,
caption, the no-image embedding pass's unshared layers, text batch), pairs/s, and the model
FLOPs utilisation (babymm.speed: nanoGPT's count over the device's matmul peak, measured here
in the step's dtype). `--compile` adds a row per setting with the model's blocks compiled
(`--compile` of train.py; its first steps, the compilation, are in the warm-up). `--losses` times
each image type under each loss condition (babymm.tasks.loss_flags: a `--loss` recipe, or cua_aug),
views included: a step then also makes its image and caption views on the host, as training does
(`babymm.tasks.ViewMaker`), and runs the passes they need.

    python benchmarks/train_throughput.py --types coca --presets tiny \
        --losses clip cua cuaxu siglip declip cua_aug --out results/objective_cost_cpu.md
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
from babymm.models import MODEL_TYPES, PRESETS, build_model, model_class
from babymm.optim import build_optimizer
from babymm.speed import compile_blocks, decoder_shape, measure_matmul_peak, step_flops
from babymm.tasks import ViewMaker, loss_flags, task_for


class _OneWordPerToken:
    """A stand-in tokenizer for caption views of synthetic ids: every non-special id is a word."""

    all_special_ids, pad_token_id = [0, 1, 2, 3], 0

    def __init__(self, vocab: int):
        self.vocab = vocab

    def __len__(self) -> int:
        return self.vocab

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [f"\u2581w{i}" for i in ids]


def preset_model(model_type: str, preset: str, image_size: int, vision_encoder: str = "conv",
                 feature_tokens: int = 1, loss: str | None = None):
    """The model `--model_type T --preset P` trains, at the preset's nominal vocabulary size
    (a small corpus may support fewer pieces), on conv pixels or on 768-d precomputed features
    (`feature_tokens` 1: the BabyLM corpus's global DINOv2 vectors; 197: ViT-B/16 patch tokens),
    under the loss condition `loss` (image types; default the default recipe)."""
    has_vision = model_class(model_type).has_vision
    flags = ["--vision_encoder", vision_encoder, *(loss_flags(loss) if loss else [])] if has_vision else []
    cfg = parse_config(["--model_type", model_type, "--preset", preset, *flags])
    derived = {"vocab_size": cfg.data.vocab_size}
    if has_vision:
        derived.update(image_size=image_size, feature_dim=768, feature_tokens=feature_tokens)
    return cfg, build_model(cfg.model.resolve(**derived))


def param_counts(types: list[str], presets: list[str], image_size: int) -> pd.DataFrame:
    """Millions of parameters (total; trainable is the same unless --freeze_vision) per type and preset."""
    rows = {}
    for preset in presets:
        for t in types:
            torch.manual_seed(0)
            rows[(preset, t)] = round(preset_model(t, preset, image_size)[1].num_parameters() / 1e6, 2)
    return pd.Series(rows).unstack().reindex(index=presets, columns=types)


def bench(model_type: str, preset: str, args: argparse.Namespace, precision: str, compiled: bool = False,
          peaks: dict[str, float] | None = None, loss: str | None = None) -> dict:
    torch.manual_seed(0)
    dev = torch.device(args.device)
    cfg, model = preset_model(model_type, preset, args.image_size, args.vision_encoder, args.feature_tokens, loss)
    model = model.to(dev)
    if compiled:
        compile_blocks(model)
    vocab = cfg.data.vocab_size
    task = task_for(type(model))(cfg.loss)
    opt = build_optimizer(model, 1e-4, 0.1, fused=dev.type == "cuda")  # as training builds it
    B, T, TB, L = args.batch, args.caption_tokens, args.text_batch, args.block_size or cfg.data.block_size
    ids = torch.randint(4, vocab, (B, T), device=dev)
    text = torch.randint(4, vocab, (TB, L), device=dev)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
             "text_input_ids": text, "text_attention_mask": torch.ones_like(text)}
    ids[:, 0], ids[:, -1] = cfg.model.bos_token_id, cfg.model.eos_token_id  # `<s> caption </s>`, as views expect
    if model.has_vision and args.vision_encoder == "features":
        shape = (B, 768) if args.feature_tokens == 1 else (B, args.feature_tokens, 768)
        batch["images"] = torch.randn(shape, device=dev)
    elif model.has_vision:
        batch["images"] = torch.randint(0, 256, (B, 3, args.image_size, args.image_size), dtype=torch.uint8, device=dev)
    host = {k: v.cpu() for k, v in batch.items()}  # what the loader hands the views (training makes them on the host)
    views = ViewMaker.for_task(task, _OneWordPerToken(vocab), T, seed=0)
    steps = iter(range(1 << 30))
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    peaks = {} if peaks is None else peaks
    if precision not in peaks:
        peaks[precision] = measure_matmul_peak(dev, dtype)

    def step() -> None:
        viewed = batch if views is None else {k: v.to(dev) for k, v in views(host, next(steps)).items()}
        with torch.autocast(dev.type, dtype=dtype, enabled=precision == "bf16"):
            terms = task.loss_terms(model, viewed)
            loss = sum(task.weights.get(k, 1.0) * v for k, v in terms.items())
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
    # the passes the task runs: caption (+ GIT's prefix, CoCa's CLS), the no-image embedding pass's
    # unshared layers (none for CoCa), the text batch
    passes = task.decoder_passes(model, batch if views is None else views(host, 0))
    tokens = sum(p.tokens * p.layer_fraction for p in passes)
    flops = step_flops(decoder_shape(model), passes)
    return {"type": model_type, "preset": preset, "loss": loss or "-", "device": args.device,
            "name": torch.cuda.get_device_name() if dev.type == "cuda" else platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "precision": precision + ("+compile" if compiled else ""),
            "vision": args.vision_encoder + (f"[{args.feature_tokens}]" if args.vision_encoder == "features" else ""),
            "params_M": round(model.num_parameters() / 1e6, 2), "batch": B, "text_batch": TB,
            "step_ms": round(1000 * secs, 1), "steps_per_s": round(1 / secs, 2),
            "tokens_per_s": round(tokens / secs), "pairs_per_s": round(B / secs, 1),
            "tflops": round(flops / secs / 1e12, 3), "peak_tflops": round(peaks[precision] / 1e12, 2),
            "mfu": round(flops / secs / peaks[precision], 4)}


def median_rows(rows: list[dict]) -> list[dict]:
    """One row per setting: the repeat with the median step time, and the range over repeats."""
    settings: dict[tuple, list[dict]] = {}
    for r in rows:
        settings.setdefault((r["type"], r["preset"], r["loss"], r["precision"], r["vision"]), []).append(r)
    out = []
    for repeats in settings.values():
        ranked = sorted(repeats, key=lambda r: r["step_ms"])
        out.append({**ranked[(len(ranked) - 1) // 2], "repeats": len(ranked),
                    "step_ms_range": f"{ranked[0]['step_ms']}-{ranked[-1]['step_ms']}"})
    return out


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
    p.add_argument("--block_size", type=int, help="tokens per text block (default: the run default, 64)")
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--vision_encoder", default="conv", choices=["conv", "features"],
                   help="conv pixels, or 768-d precomputed features (the BabyLM corpus's input)")
    p.add_argument("--feature_tokens", type=int, default=1, help="features per image: 1 (global) or 197 (patches)")
    p.add_argument("--compile", action="store_true", help="also time each setting with the blocks compiled")
    p.add_argument("--repeats", type=int, default=1, help="time every setting this many times, interleaved "
                   "(each a fresh model), and report the median step with its range: steps of a few 100 ms "
                   "vary by 10%% between back-to-back runs on a CPU")
    p.add_argument("--losses", nargs="+", default=[None], help="loss conditions of the image types (babymm.tasks."
                   "loss_flags: clip cua cuaxu siglip declip cua_aug); default: the default recipe")
    p.add_argument("--out", type=Path, help="also write the table as Markdown (and .json) here")
    p.add_argument("--params_only", action="store_true", help="print parameter counts (M) per preset and type")
    args = p.parse_args(argv)
    if args.params_only:
        print(param_counts(args.types, args.presets, args.image_size).to_markdown())
        return 0
    rows, peaks = [], {}
    for _ in range(args.repeats):
        for preset in args.presets:
            for model_type in args.types:
                for precision in args.precision:
                    for compiled in (False, True) if args.compile else (False,):
                        for loss in args.losses if model_class(model_type).has_vision else [None]:
                            rows.append(bench(model_type, preset, args, precision, compiled, peaks, loss))
                            print(json.dumps(rows[-1]), flush=True)
    rows = median_rows(rows) if args.repeats > 1 else rows
    table = pd.DataFrame(rows).to_markdown(index=False)
    print(table)
    if args.out:
        write_text_atomic(args.out, table + "\n")
        write_json_atomic(args.out.with_suffix(".json"), rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

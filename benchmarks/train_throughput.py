"""Training-step throughput of the multimodal model on synthetic batches.

    python benchmarks/train_throughput.py [--device cpu|cuda] [--precision fp32 bf16] [--steps 20]

Measures what a stage-2 step costs (caption batch + text batch + contrastive loss, forward,
backward, AdamW), so that the default run's size can be chosen from numbers, not guesses.
Prints one JSON line per setting: steps/s, image-caption pairs/s and tokens/s.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from babymm.losses import ContrastiveLoss, LossWeights
from babymm.models import MultimodalConfig, build_model
from babymm.optim import build_optimizer
from babymm.vision import VisionConfig


def bench(args: argparse.Namespace, precision: str) -> dict:
    torch.manual_seed(0)
    dev = torch.device(args.device)
    cfg = MultimodalConfig(vocab_size=args.vocab, hidden_size=args.hidden, num_layers=args.layers,
                           num_heads=args.heads, intermediate_size=3 * args.hidden,
                           vision=VisionConfig(width=args.vision_width, image_size=args.image_size))
    model = build_model(cfg).to(dev)
    opt = build_optimizer(model, 1e-3, 0.1)
    loss_fn = ContrastiveLoss(LossWeights())
    B, T, TB, L = args.batch, args.caption_tokens, args.text_batch, args.block
    images = torch.randint(0, 256, (B, 3, args.image_size, args.image_size), dtype=torch.uint8, device=dev)
    ids = torch.randint(4, args.vocab, (B, T), device=dev)
    text = torch.randint(4, args.vocab, (TB, L), device=dev)
    ones, tones = torch.ones_like(ids), torch.ones_like(text)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32

    def step() -> None:
        with torch.autocast(dev.type, dtype=dtype, enabled=precision == "bf16"):
            out = model(images, ids, ones, text, tones)
        losses = loss_fn(out["image_embeds"].float(), out["text_embeds"].float(), model.logit_scale)
        loss = out["caption_loss"] + 0.25 * out["text_loss"] + sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

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
    n_vis = model.vision.num_tokens if hasattr(model.vision, "num_tokens") else 1
    tokens = B * (T + n_vis) + B * T + TB * L  # caption pass, text-embedding pass, text batch
    return {"device": args.device, "name": torch.cuda.get_device_name() if dev.type == "cuda" else platform.processor(),
            "threads": torch.get_num_threads(), "precision": precision,
            "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
            "batch": B, "text_batch": TB, "hidden": args.hidden, "layers": args.layers,
            "step_ms": round(1000 * secs, 1), "steps_per_s": round(1 / secs, 2),
            "pairs_per_s": round(B / secs, 1), "tokens_per_s": round(tokens / secs)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--text_batch", type=int, default=32)
    p.add_argument("--caption_tokens", type=int, default=16)
    p.add_argument("--block", type=int, default=64)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vision_width", type=int, default=128)
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--vocab", type=int, default=600)
    args = p.parse_args(argv)
    for precision in args.precision:
        print(json.dumps(bench(args, precision)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

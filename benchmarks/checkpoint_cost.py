"""What a resumable checkpoint and a word-milestone export cost, per model type and preset.

    python benchmarks/checkpoint_cost.py [--types git] [--presets tiny small base] [--repeats 3]

Times `babymm.checkpoint.save_checkpoint` (model + AdamW state with its moments filled by one
step + RNG + trainer state, written to a temporary directory and renamed), `load_checkpoint`,
and a milestone export (`babymm.models.save_model`, tokenizer-free), on the local disk, and reports the
size on disk: what `--checkpointing_steps` costs a run. Median of `--repeats`.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from accelerate import Accelerator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import preset_model  # noqa: E402

from babymm.checkpoint import load_checkpoint, save_checkpoint, save_milestone  # noqa: E402
from babymm.models import save_model  # noqa: E402
from babymm.optim import build_optimizer  # noqa: E402


def size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def measure(model_type: str, preset: str, repeats: int, root: Path) -> dict:
    torch.manual_seed(0)
    _, model = preset_model(model_type, preset, image_size=32)
    acc = Accelerator(cpu=True)
    opt = build_optimizer(model, 1e-4, 0.1)
    model, opt = acc.prepare(model, opt)
    for p in model.parameters():  # one step, so the optimizer holds both moments
        p.grad = torch.randn_like(p) * 1e-3
    opt.step()
    run = root / f"{model_type}-{preset}"
    save, load, export = [], [], []
    for i in range(repeats):
        t0 = time.perf_counter()
        ckpt = save_checkpoint(acc, run, i, {"train_state": {"step": i}, "metrics_bytes": 0}, keep=1)
        save.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        load_checkpoint(acc, ckpt)
        load.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        out = save_milestone(run, 1_000_000 * (i + 1), lambda d: save_model(model, None, d), {"words_seen": 0})
        export.append(time.perf_counter() - t0)
    row = {"type": model_type, "preset": preset, "params (M)": round(model.num_parameters() / 1e6, 2),
           "checkpoint (MB)": round(size_mb(ckpt), 1), "save (s)": round(statistics.median(save), 2),
           "load (s)": round(statistics.median(load), 2), "milestone (MB)": round(size_mb(out), 1),
           "export (s)": round(statistics.median(export), 2)}
    acc.free_memory()
    shutil.rmtree(run)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--types", nargs="+", default=["git"])
    p.add_argument("--presets", nargs="+", default=["tiny", "small", "base"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir on local disk)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        rows = [measure(t, preset, args.repeats, Path(tmp)) for preset in args.presets for t in args.types]
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(pd.DataFrame(rows).to_markdown(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Score a saved run on the whole suite and write `results.json` and `results.md`.

    python -m eval.run --run_dir runs/git-length-s0 [--data_dir data/world]

Text benchmarks (BLiMP-format minimal pairs, EWoK-format items when present) go through
lm-eval with the `BabymmLM` adapter on the text decoder alone; Winoground- and VQA-format
items through the multimodal model; the contrastive-gap metrics and retrieval on held-out
image-caption pairs. Missing eval sets are reported as skipped, never silently.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from babymm.models import load_model
from data_prep.stage import write_json_atomic
from data_prep.train_tokenizer import load_tokenizer
from eval import multimodal
from eval.lm_adapter import BabymmLM
from eval.text_tasks import run_text_tasks, write_blimp_tasks, write_ewok_tasks

# name in the summary table -> (section, key)
SUMMARY = {
    "BLiMP": ("blimp", "acc"),
    "EWoK": ("ewok", "acc"),
    "Winoground": ("winoground", "acc"),
    "Winoground (shuffled img)": ("winoground", "acc_shuffled_images"),
    "VQA": ("vqa", "acc"),
    "VQA (shuffled img)": ("vqa", "acc_shuffled_images"),
    "R@1 i->t": ("embeddings", "i2t_r1"),
    "R@1 t->i": ("embeddings", "t2i_r1"),
    "centroid dist": ("embeddings", "centroid_distance"),
    "separability": ("embeddings", "linear_separability"),
    "matched cos": ("embeddings", "matched_cosine"),
}
CHANCE = {"BLiMP": 0.5, "EWoK": 0.5, "Winoground": 0.5, "VQA": 0.125}


def _text_suite(run_dir: Path, eval_dir: Path, work: Path, batch_size: int) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    results: dict[str, Any] = {}
    lm = BabymmLM.from_pretrained(run_dir, batch_size=batch_size)
    for name, writer in (("blimp", write_blimp_tasks), ("ewok", write_ewok_tasks)):
        src = eval_dir / name
        if not src.is_dir() or not any(src.glob("*.jsonl")):
            results[name] = {"skipped": f"no {src}/*.jsonl"}
            continue
        writer(src, work / name, prefix=f"babymm_{name}")
        scores = run_text_tasks(lm, work / name, [f"babymm_{name}"])
        results[name] = {**scores.pop(f"babymm_{name}"), "subtasks": scores}
    return results


def evaluate_run(run_dir: str | Path, data_dir: str | Path, batch_size: int = 64) -> dict[str, Any]:
    run_dir, data_dir = Path(run_dir), Path(data_dir)
    eval_dir = data_dir / "eval"
    if not eval_dir.is_dir():
        raise FileNotFoundError(f"{eval_dir}: no eval sets; the data directory must hold eval/ "
                                "(the built-in world writes it)")
    started = time.perf_counter()
    tok = load_tokenizer(run_dir)
    with tempfile.TemporaryDirectory(prefix="babymm-tasks-") as work:
        results: dict[str, Any] = _text_suite(run_dir, eval_dir, Path(work), batch_size)
    model = load_model(run_dir).eval()
    with torch.no_grad():
        for name, fn, src in (("winoground", multimodal.winoground, eval_dir / "winoground"),
                              ("vqa", multimodal.vqa, eval_dir / "vqa")):
            results[name] = fn(model, tok, src, batch_size) if src.is_dir() else {"skipped": f"no {src}"}
        pairs = eval_dir / "captions" / "heldout.jsonl"
        results["embeddings"] = (multimodal.embedding_metrics(model, tok, pairs, batch_size)
                                 if pairs.exists() else {"skipped": f"no {pairs}"})
    results["summary"] = summarize(results)
    results["meta"] = {"run_dir": str(run_dir), "data_dir": str(data_dir),
                       "eval_seconds": round(time.perf_counter() - started, 1)}
    write_json_atomic(run_dir / "results.json", results)
    table = summary_table({run_dir.name: results["summary"]})
    (run_dir / "results.md").write_text(table + "\n")
    print(table)
    return results


def summarize(results: dict[str, Any]) -> dict[str, float]:
    return {name: results[sec][key] for name, (sec, key) in SUMMARY.items()
            if isinstance(results.get(sec), dict) and key in results[sec]}


def summary_table(rows: dict[str, dict[str, float]]) -> str:
    """A Markdown table: one row per run, one column per summary metric, plus chance."""
    df = pd.DataFrame.from_dict(rows, orient="index")
    chance = {c: CHANCE.get(c) for c in df.columns}
    if any(v is not None for v in chance.values()):
        df = pd.concat([df, pd.DataFrame([chance], index=["chance"])])
    return df.to_markdown(floatfmt=".3f")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run_dir", type=Path, required=True)
    p.add_argument("--data_dir", type=Path, default=None,
                   help="default: the data_dir in the run's run_config.json")
    p.add_argument("--batch_size", type=int, default=64)
    args = p.parse_args(argv)
    data_dir = args.data_dir
    if data_dir is None:
        cfg_path = args.run_dir / "run_config.json"
        if not cfg_path.exists():
            print(f"error: {cfg_path} not found; pass --data_dir", file=sys.stderr)
            return 2
        data_dir = Path(json.loads(cfg_path.read_text())["data"]["data_dir"])
    try:
        evaluate_run(args.run_dir, data_dir, args.batch_size)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

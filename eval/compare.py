"""Compare runs: one row per run with the settings that differ and the summary scores.

    python -m eval.compare runs/* [--out comparison.md] [--plot comparison.png]

Reads each run's `results.json` and `run_config.json`. The columns that describe a run
(model type, curriculum, text pretraining, loss weights, word budget, seed) are the ones the
paper's questions vary; only those that differ between the runs are shown.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from eval.run import CHANCE

SETTINGS = {
    "model": ("model", "model_type"),
    "curriculum": ("data", "curriculum"),
    "text_pretrain_steps": ("train", "text_pretrain_steps"),
    "uniform_w": ("loss", "uniform_weight"),
    "align_w": ("loss", "align_weight"),
    "xuniform_w": ("loss", "xuniform_weight"),
    "word_budget": ("data", "word_budget"),
    "seed": ("train", "seed"),
}


def load_runs(run_dirs: list[Path]) -> pd.DataFrame:
    rows = []
    for d in run_dirs:
        res, cfg = d / "results.json", d / "run_config.json"
        if not res.exists() or not cfg.exists():
            print(f"warning: {d}: no results.json or run_config.json, left out", file=sys.stderr)
            continue
        config = json.loads(cfg.read_text())
        row = {"run": d.name}
        row.update({k: config[s][f] for k, (s, f) in SETTINGS.items()})
        row.update(json.loads(res.read_text())["summary"])
        rows.append(row)
    if not rows:
        raise ValueError("no run had results.json and run_config.json")
    df = pd.DataFrame(rows).set_index("run")
    varying = [c for c in SETTINGS if c in df and df[c].nunique() > 1]
    return df[varying + [c for c in df.columns if c not in SETTINGS]]


def plot(df: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in CHANCE if m in df.columns]
    ax = df[metrics].plot.bar(figsize=(max(6, 1.5 * len(df)), 4), rot=0)
    for i, m in enumerate(metrics):
        ax.axhline(CHANCE[m], ls="--", lw=0.8, color=f"C{i}")
    ax.set_ylabel("accuracy (dashed: chance)")
    ax.set_ylim(0, 1)
    plt.tight_layout()
    plt.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dirs", type=Path, nargs="+")
    p.add_argument("--out", type=Path, help="write the table as Markdown here")
    p.add_argument("--csv", type=Path, help="write the table as CSV here")
    p.add_argument("--plot", type=Path, help="bar chart of the accuracies (PNG)")
    args = p.parse_args(argv)
    try:
        df = load_runs(args.run_dirs)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table = df.to_markdown(floatfmt=".3f")
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    if args.csv:
        df.to_csv(args.csv)
    if args.plot:
        plot(df, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Compare runs: a row per run, and a row per condition with mean and spread over seeds.

    python -m eval.compare runs/* [--out table.md] [--csv table.csv] [--plot table.png]

Reads each run's `results.json` and `run_config.json`. Every config field that changes what a
run learns (model type, curriculum, text pretraining, loss weights, word budget, sizes, rates,
...) describes its condition; only the fields that differ between the runs are shown. Runs that differ
only in seed are one condition: its scores are reported as mean ± standard deviation (ddof 1)
over its seeds, with the number of seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from eval.run import SUMMARY, chance_of

SETTINGS = {
    "model": ("model", "model_type"),
    "preset": ("model", "preset"),
    "curriculum": ("data", "curriculum"),
    "text_pretrain_steps": ("train", "text_pretrain_steps"),
    "multimodal_steps": ("train", "multimodal_steps"),
    "uniform_w": ("loss", "uniform_weight"),
    "align_w": ("loss", "align_weight"),
    "xuniform_w": ("loss", "xuniform_weight"),
    "temperature": ("model", "temperature"),
    "learn_temperature": ("model", "learn_temperature"),
    "word_budget": ("data", "word_budget"),
    "seed": ("train", "seed"),
}
# config fields that do not change what a run learns; every other field separates conditions
NOT_A_CONDITION = {"seed", "output_dir", "overwrite_output_dir", "run_eval", "report_to", "logging_steps",
                   "eval_steps", "eval_gap_pairs", "eval_batch_size", "use_cpu", "data_dir", "num_threads"}


def load_runs(run_dirs: list[Path]) -> tuple[pd.DataFrame, dict[str, float]]:
    """A row per run (the settings that vary, then the summary scores), and chance per score."""
    rows, chance = [], {}
    for d in run_dirs:
        res, cfg = d / "results.json", d / "run_config.json"
        if not res.exists() or not cfg.exists():
            print(f"warning: {d}: no results.json or run_config.json, left out", file=sys.stderr)
            continue
        config, results = json.loads(cfg.read_text()), json.loads(res.read_text())
        row = {"run": d.name}
        # a setting a run's type does not have (the text type's contrastive weights) is None
        row.update({k: config.get(s, {}).get(f) for k, (s, f) in SETTINGS.items()})
        listed = set(SETTINGS.values())
        row.update({f: v for s, section in config.items() for f, v in section.items()
                    if (s, f) not in listed and f not in NOT_A_CONDITION})
        row.update(results.get("summary", {}))
        rows.append(row)
        chance.update({c: v for c in SUMMARY if (v := chance_of(results, c)) is not None})
    if not rows:
        raise ValueError("no run had results.json and run_config.json")
    df = pd.DataFrame(rows).set_index("run")
    varying = [c for c in df.columns if c not in SUMMARY and df[c].map(repr).nunique() > 1]  # repr: None and NaN count as values
    out = df[varying + [c for c in SUMMARY if c in df.columns]]
    out.attrs["settings"] = varying
    return out, chance


def condition_labels(df: pd.DataFrame, settings: list[str]) -> pd.Series:
    """Each run's condition, `a=1, b=x`, from its `settings`; a setting its type does not have
    (NaN, None) is left out of the label."""
    if not settings:
        return pd.Series("all runs", index=df.index)
    return df[settings].apply(lambda r: ", ".join(f"{c}={v}" for c, v in r.items() if not pd.isna(v)), axis=1)


def by_condition(df: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and seed count of every score per condition (runs equal but for the seed)."""
    settings = df.attrs.get("settings", [c for c in df.columns if c in SETTINGS])
    conds = [c for c in settings if c != "seed"]
    scores = [c for c in df.columns if c not in settings]
    grouped = df[scores].groupby(condition_labels(df, conds).rename("condition"), sort=False)
    out = pd.concat({"mean": grouped.mean(), "std": grouped.std(ddof=1)}, axis=1)
    out[("n", "seeds")] = grouped.size()
    return out


def condition_table(agg: pd.DataFrame, chance: dict[str, float]) -> str:
    """Markdown: `mean ± std` per score and condition, then chance."""
    scores = list(agg["mean"].columns)
    cells = pd.DataFrame(index=agg.index)
    cells["seeds"] = agg[("n", "seeds")].astype(object)
    for c in scores:
        m, s = agg[("mean", c)], agg[("std", c)]
        # a score a condition does not have (the text type's retrieval) is an empty cell
        cells[c] = ["" if pd.isna(a) else f"{a:.3f} ± {b:.3f}" if pd.notna(b) else f"{a:.3f}"
                    for a, b in zip(m, s, strict=True)]
    chance_row = {"seeds": ""} | {c: f"{chance[c]:.3f}" if c in chance else "" for c in scores}
    cells.loc["chance"] = chance_row
    return cells.to_markdown(disable_numparse=True)  # keep the cells' own formatting


def plot(agg: pd.DataFrame, chance: dict[str, float], path: Path) -> None:
    """Bar chart of the accuracies per condition, with ± one standard deviation over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in agg["mean"].columns if m in chance]
    means, stds = agg["mean"][metrics].T, agg["std"][metrics].T.fillna(0)
    ax = means.plot.bar(yerr=stds, capsize=2, figsize=(max(7, 1.2 * len(metrics)), 4.5), rot=30)
    for i, m in enumerate(metrics):
        ax.hlines(chance[m], i - 0.4, i + 0.4, colors="k", linestyles="--", lw=0.8)
    ax.set_ylabel("score (dashed: chance; bars: ± 1 s.d. over seeds)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    plt.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    plt.savefig(tmp, dpi=120)
    plt.close()
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dirs", type=Path, nargs="+")
    p.add_argument("--out", type=Path, help="write both tables as Markdown here")
    p.add_argument("--csv", type=Path, help="write the per-run table as CSV here (and *_conditions.csv)")
    p.add_argument("--plot", type=Path, help="bar chart of the scores per condition (PNG)")
    args = p.parse_args(argv)
    try:
        df, chance = load_runs(args.run_dirs)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    agg = by_condition(df)
    text = (f"Per condition, mean ± s.d. over seeds:\n\n{condition_table(agg, chance)}\n\n"
            f"Per run:\n\n{df.to_markdown(floatfmt='.3f')}\n")
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.csv:
        df.to_csv(args.csv)
        agg.to_csv(args.csv.with_name(args.csv.stem + "_conditions.csv"))
    if args.plot:
        plot(agg, chance, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Compare runs: a row per run, and a row per condition with mean and spread over seeds.

    python -m eval.compare runs/* [--out table.md] [--csv table.csv] [--plot table.png]
                                  [--by_words curve.png]

Reads each run's `results.json` and `run_config.json`. Every config field that changes what a
run learns (model type, curriculum, text pretraining, loss weights, word budget, sizes, rates,
...) describes its condition; only the fields that differ between the runs are shown. Runs that differ
only in seed are one condition: its scores are reported as mean ± standard deviation (ddof 1)
over its seeds, with the number of seeds. `--by_words` plots each score against the words a
model had seen, over each run's scored word milestones (`python -m eval.run --milestones`) and
its final model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from babymm.checkpoint import milestone_dirs
from babymm.files import write_text_atomic
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
                   "eval_steps", "eval_gap_pairs", "eval_batch_size", "use_cpu", "data_dir", "num_threads",
                   "checkpointing_steps", "save_total_limit", "resume_from_checkpoint", "word_milestones",
                   "skip_nonfinite", "data_seed"}  # data_seed: which draw of a budget, a seed like --seed


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


def final_words_seen(run_dir: Path) -> int | None:
    """Words the run's final model had seen: the last `train/words_seen` it logged."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return None
    seen = [r["train/words_seen"] for r in map(json.loads, path.read_text().splitlines()) if "train/words_seen" in r]
    return seen[-1] if seen else None


def words_curve(run_dirs: list[Path]) -> pd.DataFrame:
    """A row per scored model: each run's word milestones, then its final model, with the words
    it had seen and its summary scores. Unscored milestones are counted and named, not dropped quietly."""
    rows, unscored = [], []
    for d in run_dirs:
        points = [(m, json.loads((m / "milestone.json").read_text())["words_seen"]) for m in milestone_dirs(d)]
        points.append((d, final_words_seen(d)))
        for path, words in points:
            if not (path / "results.json").exists() or words is None:
                unscored.append(str(path))
                continue
            results = json.loads((path / "results.json").read_text())
            rows.append({"run": d.name, "model": path.name if path != d else "final", "words_seen": words,
                         **results.get("summary", {})})
    if unscored:
        print(f"warning: {len(unscored)} model(s) without results.json or words seen, left out of the curve: "
              f"{', '.join(unscored[:5])}{' ...' if len(unscored) > 5 else ''} (python -m eval.run --milestones)",
              file=sys.stderr)
    if not rows:
        raise ValueError("no scored milestone or final model to plot against words seen")
    return pd.DataFrame(rows)


def plot_by_words(curve: pd.DataFrame, chance: dict[str, float], path: Path) -> None:
    """One panel per score: each run's score against words seen (log scale), chance dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = [c for c in SUMMARY if c in curve.columns and curve[c].notna().any()]
    cols = min(4, len(scores))
    rows = -(-len(scores) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), squeeze=False)
    for ax, score in zip(axes.flat, scores, strict=False):
        for run, points in curve.groupby("run", sort=False):
            points = points.sort_values("words_seen")
            ax.plot(points["words_seen"], points[score], marker=".", label=run)
        if score in chance:
            ax.axhline(chance[score], color="k", ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(score, fontsize=9)
        ax.set_xlabel("words seen", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(scores):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dirs", type=Path, nargs="+")
    p.add_argument("--out", type=Path, help="write both tables as Markdown here")
    p.add_argument("--csv", type=Path, help="write the per-run table as CSV here (and *_conditions.csv)")
    p.add_argument("--plot", type=Path, help="bar chart of the scores per condition (PNG)")
    p.add_argument("--by_words", type=Path,
                   help="each score against words seen, over the runs' scored word milestones (PNG, + .csv)")
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
        write_text_atomic(args.out, text)
    if args.csv:
        write_text_atomic(args.csv, df.to_csv())
        write_text_atomic(args.csv.with_name(args.csv.stem + "_conditions.csv"), agg.to_csv())
    if args.plot:
        plot(agg, chance, args.plot)
    if args.by_words:
        try:
            curve = words_curve(args.run_dirs)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        write_text_atomic(args.by_words.with_suffix(".csv"), curve.to_csv(index=False))
        plot_by_words(curve, chance, args.by_words)
        print(f"Against words seen:\n\n{curve.to_markdown(index=False, floatfmt='.3f')}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

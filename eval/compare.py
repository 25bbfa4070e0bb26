"""Compare runs: a row per run, and a row per condition with mean and spread over seeds.

    python -m eval.compare runs/* [--out table.md] [--csv table.csv] [--plot table.png]
                                  [--by_words curve.png]

Reads each run's `results.json` and `run_config.json`. Every config field that changes what a
run learns (model type, curriculum, text pretraining, loss weights, word budget, sizes, rates,
...) describes its condition, and so does the data it trained on (column `data`, see
`run_data`); only the fields that differ between the runs are shown. Runs that differ only in
seed (`--seed`, and `--data_seed`, the draw of a word budget) are one condition: its scores are
reported as mean ± standard deviation (ddof 1) over its seeds, with the number of seeds. Two
runs of one condition with the same seeds are an error naming both: a seed counts once.
`--by_words` plots each score against the words a model had seen, over each run's scored word
milestones (`python -m eval.run --milestones`) and its final model.

The data a run trained on is identified by what it is, not by how its path was spelled: the
ingest fingerprint of the prepared data (`data_fingerprint` in the run's
`curriculum_manifest.json`) and its budget subset. A seeded draw of a word budget counts as
its whole data and budget (the draw is a seed, `data_seed`), found through the data
directory's subset manifest. A run that records no fingerprint (or whose draw cannot be traced
to its whole data) is identified by its resolved data directory and budget, and says so.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from babymm.checkpoint import milestone_dirs
from babymm.config import DEFAULT_DATA_DIR
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
    "data_seed": ("data", "data_seed"),
}
# the settings that are seeds: runs differing only in them are one condition (data_seed: which
# draw of a word budget, a seed like --seed)
SEEDS = ("seed", "data_seed")
# config fields that do not change what a run learns; every other field separates conditions.
# data_dir is the path as spelled: the data itself separates conditions, compared by what it
# is (the `data` column, `run_data`), never by the spelling of its path
NOT_A_CONDITION = {"seed", "output_dir", "overwrite_output_dir", "run_eval", "report_to", "logging_steps",
                   "eval_steps", "eval_gap_pairs", "eval_batch_size", "use_cpu", "data_dir", "num_threads",
                   "checkpointing_steps", "save_total_limit", "resume_from_checkpoint", "word_milestones",
                   "skip_nonfinite", "data_seed"}
DRAW_SEED = re.compile(r"-seed\d+$")  # a seeded budget draw's name ends in its seed (data_prep.budget.Budget.name)


@dataclass(frozen=True)
class RunData:
    """The data a run trained on. `key` is what makes two runs' data the same: ("data",
    fingerprint) for the whole data or a budget subset that is not a draw; ("draws", the whole
    data's fingerprint, subset name without its seed) for a seeded draw; ("path", resolved data
    directory, budget) when no fingerprint identifies it."""

    key: tuple
    path: Path  # the data directory, resolved
    subset: str | None  # the budget subset (a draw's seed left out), None for the data as it is
    fingerprint: str | None  # the key's fingerprint, None when only the path is known

    def label(self, long: bool = False) -> str:
        """`world/budget-250000w-all@1a2b3c4d`; `long`: the full path and fingerprint."""
        where = (str(self.path) if long else self.path.name) + (f"/{self.subset}" if self.subset else "")
        if self.fingerprint is None:
            return f"{where} (path only)"
        return f"{where}@{self.fingerprint if long else self.fingerprint[:8]}"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _whole_data_fingerprint(data_dir: Path, subset: str, fingerprint: str) -> str | None:
    """The whole data's ingest fingerprint of budget subset `subset` of `data_dir`, if the subset's
    manifest there is still the one the run trained on (its fingerprint is the run's)."""
    # data_prep.stage's layout, spelled out: eval does not import data_prep (tests/test_layout.py);
    # runs made since train.py writes data_manifest.json do not need this
    manifest = _read_json(Path(data_dir) / "prepared" / "subsets" / subset / "ingest" / "manifest.json")
    if manifest is None or manifest.get("fingerprint") != fingerprint:
        return None
    return manifest.get("whole_data_fingerprint")


def run_data(run_dir: Path, config: dict[str, Any]) -> RunData:
    """The data `run_dir` trained on, from what the run directory records: the ingest
    fingerprint and subset of the data in `data_manifest.json` (a copy of the data's ingest
    manifest) or, as train.py writes today, `data_fingerprint` and `subset` in
    `curriculum_manifest.json`. A relative data_dir is resolved from the current directory, as
    train.py read it from its own."""
    data = config.get("data") or {}
    path = Path(data.get("data_dir") or DEFAULT_DATA_DIR).expanduser().resolve()
    budget = None
    if data.get("word_budget") is not None:  # a budget subset's name, less a draw's seed
        budget = f"budget-{data['word_budget']}w-text{float(data.get('text_fraction', 0.5)):g}"
    fingerprint = subset = whole = None
    if (m := _read_json(run_dir / "data_manifest.json")) and m.get("fingerprint"):
        fingerprint, subset, whole = m["fingerprint"], m.get("subset"), m.get("whole_data_fingerprint")
    elif (m := _read_json(run_dir / "curriculum_manifest.json")) and m.get("data_fingerprint"):
        fingerprint, subset = m["data_fingerprint"], m.get("subset")
    if fingerprint is None:
        return RunData(("path", str(path), budget), path, budget, None)
    if subset is None or not DRAW_SEED.search(subset):  # the data as it is, or all of it under a budget
        return RunData(("data", fingerprint), path, subset, fingerprint)
    # a seeded draw: its fingerprint holds the draw's seed, a seed of the condition, not its data
    base = DRAW_SEED.sub("", subset)
    whole = whole or _whole_data_fingerprint(path, subset, fingerprint)
    if whole is None:
        return RunData(("path", str(path), base), path, base, None)
    return RunData(("draws", whole, base), path, base, whole)


def data_labels(data: dict[str, RunData]) -> dict[str, str]:
    """Each run's data as a short readable label, one per distinct data: the long form where two
    data would otherwise read alike. Warns of what a label cannot show: runs identified by
    their path only, and one data directory holding other data for other runs."""
    short: dict[str, set[tuple]] = {}
    for d in data.values():
        short.setdefault(d.label(), set()).add(d.key)
    labels = {run: d.label(long=len(short[d.label()]) > 1) for run, d in data.items()}
    by_path = [run for run, d in data.items() if d.fingerprint is None]
    if by_path:
        print(f"warning: {len(by_path)} run(s) record no fingerprint of their data (curriculum_manifest.json "
              "data_fingerprint), or their budget draw's subset manifest is gone from the data directory: their "
              f"data is identified by its resolved path only: {', '.join(by_path[:5])}"
              f"{' ...' if len(by_path) > 5 else ''}", file=sys.stderr)
    places: dict[tuple, set[tuple]] = {}
    for d in data.values():
        if d.fingerprint is not None:
            places.setdefault((d.path, d.subset), set()).add(d.key)
    for (path, subset), keys in places.items():
        if len(keys) > 1:
            print(f"warning: {path}{'/' + subset if subset else ''} held {len(keys)} different data (fingerprints "
                  f"{', '.join(sorted(k[1][:8] for k in keys))}) for these runs: they are kept apart. Either the "
                  "data changed between the runs, or its path was spelled two ways (relative and absolute: the "
                  "ingest fingerprint covers the paths as spelled)", file=sys.stderr)
    return labels


def load_runs(run_dirs: list[Path]) -> tuple[pd.DataFrame, dict[str, float]]:
    """A row per run (the settings that vary, the data among them, then the summary scores), and
    chance per score. The rows are named by run directory name (by path where two names clash);
    `attrs["run_dirs"]` gives each row's directory, `attrs["data"]` its data's label."""
    rows, chance, found, data = [], {}, {}, {}
    for d in run_dirs:
        res, cfg = d / "results.json", d / "run_config.json"
        if not res.exists() or not cfg.exists():
            print(f"warning: {d}: no results.json or run_config.json, left out", file=sys.stderr)
            continue
        if d.resolve() in found:
            print(f"warning: {d}: named twice (also as {found[d.resolve()]}), counted once", file=sys.stderr)
            continue
        found[d.resolve()] = d
        config, results = json.loads(cfg.read_text()), json.loads(res.read_text())
        row: dict[str, Any] = {"run": d}
        # a setting a run's type does not have (the text type's contrastive weights) is None
        row.update({k: (config.get(s) or {}).get(f) for k, (s, f) in SETTINGS.items()})
        data[d] = run_data(d, config)
        listed = set(SETTINGS.values())
        row.update({f: v for s, section in config.items() for f, v in section.items()
                    if (s, f) not in listed and f not in NOT_A_CONDITION})
        row.update(results.get("summary", {}))
        rows.append(row)
        chance.update({c: v for c in SUMMARY if (v := chance_of(results, c)) is not None})
    if not rows:
        raise ValueError("no run had results.json and run_config.json")
    names = [r["run"].name for r in rows]
    name_of = {r["run"]: (str(r["run"]) if names.count(r["run"].name) > 1 else r["run"].name) for r in rows}
    labels = data_labels({name_of[d]: v for d, v in data.items()})
    for r in rows:
        r["data"] = labels[name_of[r["run"]]]
        r["run"] = name_of[r["run"]]
    df = pd.DataFrame(rows).set_index("run")
    first = [c for c in SETTINGS if c not in SEEDS] + ["data"]  # the data before the other fields, the seeds after
    df = df[[*first, *(c for c in df.columns if c not in first and c not in SEEDS), *SEEDS]]
    varying = [c for c in df.columns if c not in SUMMARY and df[c].map(repr).nunique() > 1]  # repr: None and NaN count as values
    out = df[varying + [c for c in SUMMARY if c in df.columns]]
    out.attrs["settings"] = varying
    out.attrs["run_dirs"] = {name: str(d) for d, name in name_of.items()}
    out.attrs["data"] = df["data"].to_dict()  # each run's data, a column of its own only where it varies
    return out, chance


def condition_labels(df: pd.DataFrame, settings: list[str]) -> pd.Series:
    """Each run's condition, `a=1, b=x`, from its `settings`; a setting its type does not have
    (NaN, None) is left out of the label."""
    if not settings:
        return pd.Series("all runs", index=df.index)
    return df[settings].apply(lambda r: ", ".join(f"{c}={v}" for c, v in r.items() if not pd.isna(v)), axis=1)


def check_seeds(df: pd.DataFrame, conditions: pd.Series, seeds: list[str]) -> None:
    """Raises ValueError naming both run directories if two runs of one condition have the same
    seeds (`seeds`: the seed columns of `df`; none: every run has the same ones)."""
    where = df.attrs.get("run_dirs", {})
    first: dict[tuple, str] = {}
    for run, condition in conditions.items():
        values = tuple(None if pd.isna(v := df.at[run, c]) else v for c in seeds)
        other = first.setdefault((condition, values), run)
        if other != run:
            same = ", ".join(f"{c}={v}" for c, v in zip(seeds, values, strict=True) if v is not None) or "all runs share it"
            raise ValueError(f"runs {where.get(other, other)} and {where.get(run, run)} are one condition ({condition}) "
                             f"with the same seed ({same}): a seed counts once, not twice; leave one of them out, "
                             "or find what should set them apart")


def by_condition(df: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and seed count of every score per condition (runs equal but for their seeds).
    Raises ValueError if two runs of a condition have the same seeds."""
    settings = df.attrs.get("settings", [c for c in df.columns if c in SETTINGS])
    conds = [c for c in settings if c not in SEEDS]
    scores = [c for c in df.columns if c not in settings]
    conditions = condition_labels(df, conds).rename("condition")
    check_seeds(df, conditions, [c for c in settings if c in SEEDS])
    grouped = df[scores].groupby(conditions, sort=False)
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
        agg = by_condition(df)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
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

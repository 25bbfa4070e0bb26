"""Regenerate every result table in README from scratch: each row at 3+ seeds, mean and spread.

    python scripts/reproduce.py [--seeds 0 1 2] [--out results] [--runs runs/reproduce]

Rows (README "Results"): the default run (`--curriculum length`, gap-closing CUA loss) and
the same with plain CLIP (`--loss clip`: `--uniform_weight 0 --align_weight 0`), on the built-in world.
Each run trains through `accelerate launch babymm/train.py` (skipped when its model is already
saved; `--retrain` forces it), is then scored by `python -m eval.run`, and
`python -m eval.compare` writes the tables: `OUT/reproduce.md` (with the machine and the
commands), `OUT/reproduce.csv`, `OUT/reproduce.png` (scores) and `OUT/reproduce_gap.png` (the gap during
training, per row).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROWS: dict[str, list[str]] = {
    "cua": [],  # the default: length curriculum, L_CLIP + L_Uniform + L_Align
    "clip": ["--loss", "clip"],  # the same weights as the runs made before recipes: --uniform_weight 0 --align_weight 0
}
ROOT = Path(__file__).resolve().parent.parent


def run(cmd: list[str]) -> float:
    print("+ " + shlex.join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    return time.perf_counter() - t0


def machine() -> str:
    """The machine line of reproduce.md: babymm.environment's one-line summary (each run's own
    RUN/environment.json has the full record)."""
    from babymm.environment import describe, environment

    return describe(environment())


def plot_gap_curves(runs: dict[str, list[Path]], path: Path) -> None:
    """The gap metrics logged during training (`eval/gap/*`), mean ± s.d. over seeds, per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    keys = ["centroid_distance", "linear_separability", "matched_cosine", "uniformity_cross"]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.2))
    for row, dirs in runs.items():
        frames = []
        for d in dirs:
            rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
            frames.append(pd.DataFrame([r for r in rows if "eval/gap/centroid_distance" in r]).set_index("step"))
        for ax, k in zip(axes, keys, strict=True):
            values = pd.concat([f[f"eval/gap/{k}"] for f in frames], axis=1)
            mean, std = values.mean(axis=1), values.std(axis=1).fillna(0)
            ax.plot(mean.index, mean, label=f"{row} ({len(dirs)} seeds)")
            ax.fill_between(mean.index, mean - std, mean + std, alpha=0.25)
            ax.set_title(k, fontsize=9)
            ax.set_xlabel("step", fontsize=8)
    axes[0].legend(fontsize=8)
    fig.suptitle("held-out gap metrics during stage 2 (mean ± s.d. over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--runs", type=Path, default=Path("runs/reproduce"))
    p.add_argument("--out", type=Path, default=Path("results"))
    p.add_argument("--retrain", action="store_true", help="train again even if a run's model is saved")
    p.add_argument("--skip_eval", action="store_true",
                   help="keep each run's results.json (only remake the tables and plots)")
    p.add_argument("extra", nargs="*", help="more train.py flags for every run, after --")
    args = p.parse_args(argv)
    if len(args.seeds) < 3:
        print("warning: fewer than 3 seeds; README's tables use at least 3", file=sys.stderr)
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    args.out.mkdir(parents=True, exist_ok=True)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1",
              "--num_cpu_threads_per_process", str(os.cpu_count() or 1)]
    timings, run_dirs = {}, []
    for seed in args.seeds:
        for row in args.rows:
            out = args.runs / f"{row}-s{seed}"
            run_dirs.append(out)
            if args.retrain or not (out / "model.safetensors").exists():  # the final save (checkpoints are below)
                flags = ["--seed", str(seed), "--output_dir", str(out), "--overwrite_output_dir", "true",
                         "--run_eval", "false", *ROWS[row], *args.extra]
                timings[out.name] = {"train_s": round(run([*launch, "babymm/train.py", *flags]), 1)}
            if not (args.skip_eval and (out / "results.json").exists()):
                t = run([sys.executable, "-m", "eval.run", "--run_dir", str(out)])
                timings.setdefault(out.name, {})["eval_s"] = round(t, 1)
    table = args.out / "reproduce"
    run([sys.executable, "-m", "eval.compare", *map(str, run_dirs), "--out", f"{table}.md.tmp",
         "--csv", f"{table}.csv", "--plot", f"{table}.png"])
    plot_gap_curves({r: [d for d in run_dirs if d.name.startswith(f"{r}-")] for r in args.rows},
                    Path(f"{table}_gap.png"))
    body = Path(f"{table}.md.tmp").read_text()
    Path(f"{table}.md.tmp").unlink()
    header = (f"# babymm results, regenerated\n\nCommand: `python scripts/reproduce.py "
              f"{shlex.join(argv if argv is not None else sys.argv[1:])}`\n\nMachine: {machine()}\n\n"
              f"Rows: " + "; ".join(f"`{r}` = train.py {shlex.join(ROWS[r]) or '(defaults)'}" for r in args.rows)
              + f"\n\nSeconds per run (this invocation): `{json.dumps(timings) if timings else 'none, all trained and scored earlier'}`\n\n")
    Path(f"{table}.md").write_text(header + body)
    print(f"wrote {table}.md, {table}.csv, {table}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

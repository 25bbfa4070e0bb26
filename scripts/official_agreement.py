"""Score babymm runs with the official BabyLM 2025 pipeline beside babymm's own eval, item by item.

    python scripts/official_agreement.py --official DIR --runs runs/a runs/b [--data_dir data/world]
        [--official_python PY] [--out results/official_agreement]

DIR is a checkout of babylm/evaluation-pipeline-2025 (babymm never ships its code); PY the Python
that runs it (default this one; the pipeline pins transformers 4.51, so a venv with its
requirements is the faithful choice). Each official step runs in its own process where `import
babymm` fails, so it loads the checkpoint the way a participant's machine does: from the files
alone, trusting the code shipped in them.

For each run: babymm's eval (`eval.run --tasks winoground vqa devbench`, protocol 2025); the
official sentence zero-shot runner on the data's `eval/babylm2025/{winoground,vqa}` (2025 layout,
local image dataset); and the official DevBench wrapper (`BabyLMEvalModel`) on the data's
`eval/devbench` sets. It then compares every item: Winoground and VQA picks, DevBench's image-text
scores and picks (image 1 strictly best, the official accuracy rule) and THINGS image features.
Writes `<out>.json` and `<out>.md` (the table README shows).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from eval.devbench import image1_wins

REPO = Path(__file__).resolve().parent.parent

NO_BABYMM = "import sys\nfor _m in ('babymm', 'data_prep', 'eval'):\n    sys.modules[_m] = None\n"

DEVBENCH_DRIVER = NO_BABYMM + textwrap.dedent('''
    import numpy as np, torch
    from transformers import AutoModelForCausalLM, AutoProcessor
    from evaluation_pipeline.devbench import data_handling
    from evaluation_pipeline.devbench.model_classes.babylm_models import BabyLMEvalModel
    model_dir, devbench, out = sys.argv[1], sys.argv[2], sys.argv[3]
    torch.set_num_threads(1)
    model = BabyLMEvalModel(model=AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True).eval(),
                            processor=AutoProcessor.from_pretrained(model_dir, trust_remote_code=True))
    for task in ("lex-viz_vocab", "gram-trog"):
        loader = data_handling.make_dataloader(data_handling.DevBenchDataset(f"{devbench}/assets/{task}/"))
        np.save(f"{out}/{task}.npy", model.get_all_sim_scores(loader))
    loader = data_handling.make_dataloader(data_handling.DevBenchDataset(f"{devbench}/assets/sem-things/"))
    np.save(f"{out}/sem-things.npy", model.get_all_image_feats(loader))
''')


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-4000:]}")


def official_zero_shot(py: str, official: Path, run_dir: Path, data: Path, task: str, out: Path,
                       env: dict[str, str]) -> dict[str, str]:
    """The official runner's predictions {id: pred} for one task of the 2025-layout copy."""
    src = data / "eval" / "babylm2025" / task
    code = NO_BABYMM + ("import runpy; runpy.run_module('evaluation_pipeline.sentence_zero_shot.run', "
                        "run_name='__main__')")
    run([py, "-c", code, "--model_path_or_name", str(run_dir.resolve()), "--backend", "causal", "--task", task,
         "--data_path", str(src), "--images_path", str(src / "images"), "--image_split", "test",
         "--batch_size", "1", "--save_predictions", "--output_dir", str(out)], official, env)
    path = out / run_dir.resolve().name / "main" / "zero_shot" / "causal" / task / src.name / "predictions.json"
    preds = json.loads(path.read_text())[task]["predictions"]
    return {p["id"]: p["pred"] for p in preds}


def babymm_records(run_dir: Path, task: str) -> list[dict]:
    lines = (run_dir / "predictions" / f"{task}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def compare_run(run_dir: Path, data: Path, official: Path, py: str, scratch: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(official)}
    run([sys.executable, "-m", "eval.run", "--run_dir", str(run_dir), "--data_dir", str(data),
         "--tasks", "winoground", "vqa", "devbench", "--protocol", "2025"], REPO,
        {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    results = json.loads((run_dir / "results.json").read_text())
    row: dict = {"run": str(run_dir), "model_type": json.loads((run_dir / "config.json").read_text())["babymm_type"]}
    for task in ("winoground", "vqa"):
        theirs = official_zero_shot(py, official, run_dir, data, task, scratch / "results", env)
        ours = babymm_records(run_dir, task)
        lead = " " if task == "vqa" else ""
        same = sum(theirs.get(r["id"]) == lead + r["pred"] for r in ours)
        row[task] = {"items": len(ours), "same_pick": same, "official_acc": float(np.mean(
            [theirs[r["id"]] == lead + r["target"] for r in ours])), "babymm_acc": results[task]["acc"],
            "babymm_acc_strict": results[task]["acc_strict"]}
    out = scratch / "devbench" / run_dir.name
    out.mkdir(parents=True, exist_ok=True)
    run([py, "-c", DEVBENCH_DRIVER, str(run_dir.resolve()), str((data / "eval" / "devbench").resolve()), str(out)],
        official, env)
    ours_dir = run_dir / "predictions" / "devbench"
    for task in ("lex-viz_vocab", "gram-trog"):
        theirs, ours = np.load(out / f"{task}.npy"), np.load(ours_dir / f"{task}.npy")
        won_theirs, won_ours = image1_wins(theirs[:, :, 0]), image1_wins(ours[:, :, 0])  # the official accuracy rule
        row[task] = {"trials": len(ours), "same_outcome": int((won_theirs == won_ours).sum()),
                     "same_argmax": int((theirs[:, :, 0].argmax(1) == ours[:, :, 0].argmax(1)).sum()),
                     "max_abs_score_diff": float(np.abs(theirs - ours).max()),
                     "official_acc": float(won_theirs.mean()), "babymm_acc": results["devbench"][f"{task}/acc"]}
    theirs, ours = np.load(out / "sem-things.npy"), np.load(ours_dir / "sem-things.npy")
    row["sem-things"] = {"images": len(ours), "max_abs_feature_diff": float(np.abs(theirs - ours).max()),
                         "babymm_rsa": results["devbench"]["sem-things/rsa"]}
    return row


def table(rows: list[dict]) -> str:
    lines = ["| run | type | Winoground same pick | VQA same pick | vocab same outcome | TROG same outcome | "
             "max DevBench score diff | max THINGS feature diff | Winoground acc (official / babymm) | "
             "VQA acc (official / babymm) |", "|" + "---|" * 10]
    for r in rows:
        w, v, lv, tr = r["winoground"], r["vqa"], r["lex-viz_vocab"], r["gram-trog"]
        lines.append(f"| {Path(r['run']).name} | {r['model_type']} | {w['same_pick']}/{w['items']} | "
                     f"{v['same_pick']}/{v['items']} | {lv['same_outcome']}/{lv['trials']} | "
                     f"{tr['same_outcome']}/{tr['trials']} | "
                     f"{max(lv['max_abs_score_diff'], tr['max_abs_score_diff']):.1e} | "
                     f"{r['sem-things']['max_abs_feature_diff']:.1e} | {w['official_acc']:.3f} / {w['babymm_acc']:.3f} | "
                     f"{v['official_acc']:.3f} / {v['babymm_acc']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--official", type=Path, required=True, help="a checkout of babylm/evaluation-pipeline-2025")
    p.add_argument("--runs", type=Path, nargs="+", required=True)
    p.add_argument("--data_dir", type=Path, default=REPO / "data" / "world")
    p.add_argument("--official_python", default=sys.executable)
    p.add_argument("--scratch", type=Path, default=Path("/tmp/babymm-official-agreement"))
    p.add_argument("--out", type=Path, default=REPO / "results" / "official_agreement")
    args = p.parse_args(argv)
    if not (args.official / "evaluation_pipeline" / "sentence_zero_shot").is_dir():
        p.error(f"--official {args.official}: not a checkout of babylm/evaluation-pipeline-2025")
    rows = []
    for run_dir in args.runs:
        rows.append(compare_run(run_dir, args.data_dir, args.official.resolve(), args.official_python, args.scratch))
        print(table(rows[-1:]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(table(rows) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

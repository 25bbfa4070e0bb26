"""Score a saved run on every eval set in the data directory.

    python -m eval.run --run_dir runs/git-length-s0 [--data_dir data/world] [--submission]
    python -m eval.run --run_dir runs/git-length-s0 --milestones   # + every word milestone
    python -m eval.run --run_dir runs/git-length-s0 --protocol 2024  # Winoground/VQA as in 2024

Text benchmarks (BLiMP and BLiMP-supplement format minimal pairs, EWoK-format items) go
through lm-eval with the `BabymmLM` adapter on the text decoder alone; Winoground-, VQA- and
zero-shot-format items and the held-out pairs (gap metrics, retrieval) through the multimodal
model; Winoground and VQA under `--protocol` (the official 2025 pipeline's rule by default,
recorded in each task's entry), ranked by the official rule (`acc`) and the strict one
(`acc_strict`). Every task is scored, skipped with its reason, or fails alone with its error:
`results.json` is rewritten after each task, so it always holds what was scored. Every
accuracy comes with its 95% interval; per-item predictions go to `predictions/<task>.jsonl`.
DevBench is scored through the exported checkpoint as the official wrapper scores it, on the
data's eval/devbench or `--devbench_dir`. Multimodal arithmetic (`arithmetic`) is scored as SIMAT
scores it (`eval.arithmetic`), on the data's eval/arithmetic or SIMAT's own files (`--simat_dir`).
`--submission` writes the BabyLM 2024 predictions file
`submission.json.gz` and, under the 2025 protocol, the 2025 pipeline's results tree
(`babylm2025_results/`, `write_submission_2025`) for the final model or milestone.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from babymm.data import caption_max_tokens
from babymm.files import write_json_atomic, write_text_atomic
from babymm.tokenizer import load_tokenizer
from eval import arithmetic, multimodal
from eval.multimodal import Records, TaskSkipped

# name in the summary table -> (section, key); accuracies also get their 95% interval
SUMMARY = {
    "BLiMP": ("blimp", "acc"),
    "BLiMP supp.": ("blimp_supplement", "acc"),
    "EWoK": ("ewok", "acc"),
    "Winoground": ("winoground", "acc"),
    "Winoground (strict)": ("winoground", "acc_strict"),
    "Winoground (shuffled img)": ("winoground", "acc_shuffled_images"),
    "VQA": ("vqa", "acc"),
    "VQA (strict)": ("vqa", "acc_strict"),
    "VQA (shuffled img)": ("vqa", "acc_shuffled_images"),
    "DevBench": ("devbench", "score"),
    "vocab acc": ("devbench", "lex-viz_vocab/acc"),
    "TROG acc": ("devbench", "gram-trog/acc"),
    "THINGS RSA": ("devbench", "sem-things/rsa"),
    "zero-shot (emb)": ("zeroshot", "acc_embedding"),
    "zero-shot (LL)": ("zeroshot", "acc_likelihood"),
    "arithmetic": ("arithmetic", "accuracy"),
    "arithmetic (no delta)": ("arithmetic", "no_delta"),
    "arithmetic (shuffled)": ("arithmetic", "shuffled"),
    "R@1 i->t": ("embeddings", "i2t_r1"),
    "R@1 t->i": ("embeddings", "t2i_r1"),
    "centroid dist": ("embeddings", "centroid_distance"),
    "separability": ("embeddings", "linear_separability"),
    "matched cos": ("embeddings", "matched_cosine"),
}
# chance for a summary column: a number, or (section, key) where the task reports it
CHANCE: dict[str, float | tuple[str, str]] = {
    "BLiMP": 0.5, "BLiMP supp.": 0.5, "EWoK": 0.5, "Winoground": 0.5, "Winoground (strict)": 0.5,
    "VQA": 0.125, "VQA (strict)": 0.125,
    "zero-shot (emb)": ("zeroshot", "chance"), "zero-shot (LL)": ("zeroshot", "chance"),
    "arithmetic": ("arithmetic", "chance"), "arithmetic (no delta)": ("arithmetic", "chance"),
    "arithmetic (shuffled)": ("arithmetic", "chance"),
    "R@1 i->t": ("embeddings", "i2t_r1_chance"), "R@1 t->i": ("embeddings", "t2i_r1_chance"),
    "separability": 0.5,
}
SUBMISSION_TASKS = ("blimp", "blimp_supplement", "ewok", "winoground", "vqa")  # BabyLM 2024's, and 2025's with devbench
TaskFn = Callable[[], tuple[dict[str, Any], Records]]


def _tasks(run_dir: Path, eval_dir: Path, work: Path, batch_size: int,
           protocol: str = multimodal.DEFAULT_PROTOCOL, devbench_dir: Path | None = None,
           simat_dir: Path | None = None) -> dict[str, TaskFn]:
    """Each eval set as a thunk; the models are loaded once, on first use. `protocol`: how
    Winoground and VQA are scored (`eval.multimodal.PROTOCOLS`); `devbench_dir`: DevBench's
    assets/ and evals/ (default: the data's own eval/devbench); `simat_dir`: SIMAT's simat_db
    files and rebuilt images (default: the data's own eval/arithmetic)."""
    devbench = Path(devbench_dir) if devbench_dir is not None else eval_dir / "devbench"
    from babymm.models import load_model
    from eval.lm_adapter import BabymmLM
    from eval.text_tasks import SUITES, score_suite

    cache: dict[str, Any] = {}

    def lm() -> BabymmLM:
        if "lm" not in cache:
            cache["lm"] = BabymmLM.from_pretrained(run_dir, batch_size=batch_size)
        return cache["lm"]

    def model() -> Any:
        if "model" not in cache:
            cache["model"] = load_model(run_dir).eval()
            cache["tok"] = load_tokenizer(run_dir)
        return cache["model"], cache["tok"]

    def text(kind: str) -> TaskFn:
        src = eval_dir / kind
        if not src.is_dir() or not any(src.glob("*.jsonl")):
            return _skip(f"no {src}/*.jsonl")
        return lambda: score_suite(lm(), kind, src, work)

    def image(fn: Callable[..., tuple[dict[str, Any], Records]], src: Path, embeds_text: bool = False) -> TaskFn:
        if not src.exists():
            return _skip(f"no {src}")
        if embeds_text:  # captions become tokens as the run's training made them: its --max_caption_tokens
            return lambda: fn(*model(), src, batch_size, max_tokens=caption_max_tokens(run_dir))
        return lambda: fn(*model(), src, batch_size)

    tasks = {kind: text(kind) for kind in SUITES}
    def devbench_task() -> tuple[dict[str, Any], Records]:
        """DevBench through the exported checkpoint, as the official wrapper scores it."""
        from transformers import AutoModelForCausalLM, AutoProcessor

        from babymm.models.saving import LEGACY_CONFIG
        from eval.devbench import evaluate_devbench

        if json.loads((run_dir / "config.json").read_text()).get("model_type") != "babymm":
            legacy = run_dir / LEGACY_CONFIG
            if legacy.is_file() and json.loads(legacy.read_text()).get("model_type") != "text":
                raise TaskSkipped("saved in babymm's earlier format, which the official wrapper cannot load; "
                                  f"python -m babymm.export --run_dir {run_dir} rewrites it")
            raise TaskSkipped("not an image-reading model (DevBench scores image-text pairs)")
        hf = AutoModelForCausalLM.from_pretrained(run_dir)
        if hf.config.babymm.get("vision_encoder") == "features" and hf.image_features is None:
            raise TaskSkipped("trained on precomputed features with no vision model to read DevBench's images; "
                              "export it with one: python -m babymm.export --run_dir RUN --vision_model DIR")
        metrics, records = evaluate_devbench(hf, AutoProcessor.from_pretrained(run_dir), devbench)
        save_devbench_arrays(run_dir / "predictions" / "devbench", records)
        for r in records.get("sem-things", []):
            r.pop("features")
        return {k.removeprefix("devbench/"): v for k, v in metrics.items()}, records

    def arithmetic_task() -> tuple[dict[str, Any], Records]:
        """SIMAT's score and its controls on the data's eval/arithmetic or SIMAT's own files."""
        src = Path(simat_dir) if simat_dir is not None else eval_dir / "arithmetic"
        if simat_dir is None and not (src / arithmetic.WORLD_FILE).is_file():
            raise TaskSkipped(f"no {src / arithmetic.WORLD_FILE}; {_add_arithmetic_hint(eval_dir.parent)}")
        m, tok = model()
        metrics, records = arithmetic.arithmetic(m, tok, src, batch_size, max_tokens=caption_max_tokens(run_dir),
                                                 simat=simat_dir is not None)
        return {**metrics, "data": str(src)}, records

    tasks.update({
        "winoground": image(partial(multimodal.winoground, protocol=protocol), eval_dir / "winoground"),
        "vqa": image(partial(multimodal.vqa, protocol=protocol), eval_dir / "vqa"),
        "zeroshot": image(multimodal.zero_shot, eval_dir / "zeroshot", embeds_text=True),
        "embeddings": image(multimodal.embedding_metrics, eval_dir / "captions" / "heldout.jsonl", embeds_text=True),
        "devbench": devbench_task if (devbench / "assets").is_dir() else _skip(f"no {devbench}/assets"),
        "arithmetic": arithmetic_task,
    })
    return tasks


def _add_arithmetic_hint(data_dir: Path) -> str:
    """How a data directory gets the arithmetic set: a built-in world written before the set
    existed gets it, and nothing else changes, from the world generator run with its own
    parameters (read from its world.json); other data names SIMAT's files."""
    try:
        params = json.loads((data_dir / "world.json").read_text())["params"]
        args = " ".join(f"--{k} {params[k]}" for k in ("word_budget", "seed", "image_size", "caption_fraction",
                                                        "eval_scale"))
    except (OSError, ValueError, KeyError, TypeError):
        return "pass --simat_dir (SIMAT's own files)"
    return (f"the world predates the arithmetic set: `python -m data_prep.world --out {data_dir} {args}` adds it "
            "and leaves the rest as it is")


def save_devbench_arrays(out: Path, records: Records) -> None:
    """DevBench's outputs as the official `devbench.eval` saves them, which the 2025 collation
    reads: `<task>.npy` image-text scores [trials, 4, 1] of the two choice tasks, and for THINGS
    the image features [N, D] (`sem-things.npy`) and their cosine similarities [N, N]
    (`sem-things_pairwise_sims.npy`)."""
    from sklearn.metrics.pairwise import cosine_similarity

    out.mkdir(parents=True, exist_ok=True)
    for task, recs in records.items():
        if task == "sem-things":
            feats = np.stack([np.asarray(r["features"], dtype=np.float32) for r in recs])
            np.save(out / "sem-things.npy", feats)
            np.save(out / "sem-things_pairwise_sims.npy", cosine_similarity(feats))
        else:
            np.save(out / f"{task}.npy", np.array([r["scores"] for r in recs], dtype=np.float64)[:, :, None])


def _skip(reason: str) -> TaskFn:
    def fn() -> tuple[dict[str, Any], Records]:
        raise TaskSkipped(reason)
    return fn


def evaluate_run(run_dir: str | Path, data_dir: str | Path, batch_size: int = 64,
                 submission: bool = False, tasks: list[str] | None = None,
                 protocol: str = multimodal.DEFAULT_PROTOCOL, devbench_dir: str | Path | None = None,
                 simat_dir: str | Path | None = None) -> dict[str, Any]:
    """Score the run on every task, or only on `tasks`: then the other tasks' entries of an
    existing `results.json` are kept as they are. Winoground and VQA are scored under
    `protocol`, which their entries record; DevBench from `devbench_dir` (the real DevBench's
    assets/ and evals/; default the data's eval/devbench); multimodal arithmetic from `simat_dir`
    (SIMAT's simat_db files and images; default the data's eval/arithmetic). Returns and writes
    `results.json`."""
    multimodal.check_protocol(protocol)
    run_dir, data_dir = Path(run_dir), Path(data_dir)
    eval_dir = data_dir / "eval"
    if not eval_dir.is_dir():
        raise FileNotFoundError(f"{eval_dir}: no eval sets; the data directory must hold eval/ "
                                "(the built-in world writes it)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    started = time.perf_counter()
    results: dict[str, Any] = {}
    if tasks and (run_dir / "results.json").exists():
        results = json.loads((run_dir / "results.json").read_text())
    results["meta"] = {"run_dir": str(run_dir), "data_dir": str(data_dir)}
    predictions = run_dir / "predictions"
    predictions.mkdir(exist_ok=True)
    (run_dir / "submission.json.gz").unlink(missing_ok=True)  # never beside newer scores
    submitted: dict[str, Records] = {}
    with tempfile.TemporaryDirectory(prefix="babymm-tasks-") as work, torch.no_grad():
        all_tasks = _tasks(run_dir, eval_dir, Path(work), batch_size, protocol,
                           Path(devbench_dir) if devbench_dir is not None else None,
                           Path(simat_dir) if simat_dir is not None else None)
        unknown = sorted(set(tasks or []) - set(all_tasks))
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; choose from {sorted(all_tasks)}")
        for name, fn in all_tasks.items():
            if tasks and name not in tasks:
                continue
            t0 = time.perf_counter()
            if name == "devbench":  # its arrays are rewritten by a success only, never left from before
                shutil.rmtree(predictions / "devbench", ignore_errors=True)
            try:
                metrics, records = fn()
            except TaskSkipped as e:
                results[name] = {"skipped": str(e)}
                (predictions / f"{name}.jsonl").unlink(missing_ok=True)  # an older run's
                print(f"[eval] {name}: skipped, {e}", file=sys.stderr)
            except Exception as e:  # noqa: BLE001 - one task's failure must not lose the others
                results[name] = {"error": f"{type(e).__name__}: {e}"}
                (predictions / f"{name}.jsonl").unlink(missing_ok=True)
                print(f"[eval] {name}: FAILED, {type(e).__name__}: {e}", file=sys.stderr)
                traceback.print_exc()
            else:
                results[name] = {**metrics, "seconds": round(time.perf_counter() - t0, 1)}
                _write_predictions(predictions / f"{name}.jsonl", records)
                if name in SUBMISSION_TASKS:
                    submitted[name] = records
            results["summary"] = summarize(results)
            write_json_atomic(run_dir / "results.json", results)
    results["meta"]["eval_seconds"] = round(time.perf_counter() - started, 1)
    write_json_atomic(run_dir / "results.json", results)
    if submission:
        write_submission(run_dir / "submission.json.gz", submitted)
        if protocol == "2025":
            write_submission_2025(run_dir, submitted, devbench="score" in results.get("devbench", {}))
        else:
            print(f"[eval] no 2025 results files: Winoground and VQA were scored under the {protocol} protocol, "
                  "not the one the 2025 leaderboard uses", file=sys.stderr)
    table = summary_table({run_dir.name: results})
    write_text_atomic(run_dir / "results.md", table + "\n")
    print(table)
    if plot_gap_over_training(run_dir / "metrics.jsonl", run_dir / "gap_over_training.png"):
        print(f"[eval] wrote {run_dir / 'gap_over_training.png'}")
    return results


def _write_predictions(path: Path, records: Records) -> None:
    if not records:
        return
    write_text_atomic(path, "".join(json.dumps({"subtask": subtask, **r}) + "\n"
                                    for subtask, recs in records.items() for r in recs))


def write_submission(path: Path, predictions: dict[str, Records]) -> None:
    """BabyLM 2024's file: gzipped `{task: {subtask: {"predictions": [{"id", "pred"}]}}}`,
    ids `<subtask>_<i>` in file order, `pred` the chosen option's text."""
    out = {task: {sub: {"predictions": [{"id": r["id"], "pred": r["pred"]} for r in recs]}
                  for sub, recs in subs.items()}
           for task, subs in predictions.items()}
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as f:
        json.dump(out, f)
    tmp.replace(path)
    counts = ", ".join(f"{t}: {sum(len(r['predictions']) for r in s.values())} items" for t, s in out.items())
    print(f"[eval] wrote {path} ({counts})")


# babymm task -> (the official results tree's task folder, dataset folder) in the 2025 layout
OFFICIAL_2025 = {"blimp": ("blimp", "blimp_filtered"), "blimp_supplement": ("blimp", "supplement_filtered"),
                 "ewok": ("ewok", "ewok_filtered"), "winoground": ("winoground", "winoground_filtered"),
                 "vqa": ("vqa", "vqa_filtered")}


def results_tree_2025(model_dir: Path) -> tuple[Path, str]:
    """Where a model's 2025 predictions go and its revision name: the run's own
    `babylm2025_results/<run name>/<revision>/` with revision `main` for the final model and
    `chck_*` for a word milestone, the official pipeline's `results/<model>/<revision>/` layout."""
    model_dir = Path(model_dir).resolve()
    if model_dir.parent.name == "milestones":
        run, revision = model_dir.parent.parent, model_dir.name
    else:
        run, revision = model_dir, "main"
    return run / "babylm2025_results" / run.name / revision, revision


def write_submission_2025(model_dir: Path, predictions: dict[str, Records], devbench: bool) -> Path:
    """The 2025 pipeline's files for what babymm scores, where its collation
    (`evaluation_pipeline.collate_preds --results_dir RUN/babylm2025_results --model_path_or_name
    RUN_NAME --backend causal --track multimodal`) reads them: `zero_shot/causal/<task>/<dataset>/
    predictions.json` as `{uid: {"predictions": [{"id", "pred"}]}}` (VQA's `pred` is the scored
    continuation, " " + answer, as the official runner writes it) and `zero_shot/devbench/*.npy`.
    The official runner adds what babymm does not score (GLUE fine-tuning, entity tracking, ...).
    The revision's babymm-written files are replaced whole, so none is left from an earlier
    scoring; `devbench`: whether DevBench was scored in full this time (its arrays go in only then)."""
    root, _ = results_tree_2025(model_dir)
    for folder, dataset in OFFICIAL_2025.values():
        (root / "zero_shot" / "causal" / folder / dataset / "predictions.json").unlink(missing_ok=True)
    shutil.rmtree(root / "zero_shot" / "devbench", ignore_errors=True)
    for task, (folder, dataset) in OFFICIAL_2025.items():
        if task not in predictions:
            continue
        lead = " " if task == "vqa" else ""
        out = {uid: {"predictions": [{"id": r["id"], "pred": lead + r["pred"]} for r in recs]}
               for uid, recs in predictions[task].items()}
        path = root / "zero_shot" / "causal" / folder / dataset / "predictions.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, out)
    arrays = Path(model_dir) / "predictions" / "devbench"
    if devbench and arrays.is_dir():
        target = root / "zero_shot" / "devbench"
        target.mkdir(parents=True, exist_ok=True)
        for f in arrays.glob("*.npy"):
            shutil.copyfile(f, target / f.name)
    print(f"[eval] wrote {root} (the 2025 pipeline's results layout: {', '.join(sorted(predictions))}"
          f"{', devbench' if devbench and arrays.is_dir() else ''})")
    return root


def summarize(results: dict[str, Any]) -> dict[str, float]:
    return {name: results[sec][key] for name, (sec, key) in SUMMARY.items()
            if isinstance(results.get(sec), dict) and key in results[sec]}


def chance_of(results: dict[str, Any], name: str) -> float | None:
    c = CHANCE.get(name)
    if isinstance(c, tuple):
        sec = results.get(c[0])
        return sec.get(c[1]) if isinstance(sec, dict) else None
    return c


def _cell(results: dict[str, Any], name: str) -> str:
    sec, key = SUMMARY[name]
    task = results.get(sec, {})
    if key not in task:
        return ""
    low, high = None, None
    if key.startswith("acc"):
        low, high = task.get(key.replace("acc", "ci95_low", 1)), task.get(key.replace("acc", "ci95_high", 1))
    if low is None:
        low, high = task.get(f"{key}_ci95_low"), task.get(f"{key}_ci95_high")
    if low is not None:
        return f"{task[key]:.3f} [{low:.3f}, {high:.3f}]"
    return f"{task[key]:.3f}"


def summary_table(runs: dict[str, dict[str, Any]]) -> str:
    """Markdown: a row per run (accuracies with their 95% interval), then chance."""
    cols = [c for c in SUMMARY if any(c in r.get("summary", {}) for r in runs.values())]
    rows = {name: {c: _cell(r, c) for c in cols} for name, r in runs.items()}
    first = next(iter(runs.values()))
    rows["chance"] = {c: "" if chance_of(first, c) is None else f"{chance_of(first, c):.3f}" for c in cols}
    return pd.DataFrame.from_dict(rows, orient="index").to_markdown()


def plot_gap_over_training(metrics_jsonl: Path, out: Path) -> bool:
    """A PNG of the `eval/gap/*` metrics logged during training, one panel each, against step."""
    if not metrics_jsonl.exists():
        return False
    rows = [json.loads(line) for line in metrics_jsonl.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if any(k.startswith("eval/gap/") for k in r)]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = pd.DataFrame(rows).set_index("step")
    keys = [k for k in df.columns if k.startswith("eval/gap/") and not k.endswith("_std")]
    fig, axes = plt.subplots(2, (len(keys) + 1) // 2, figsize=(3.2 * ((len(keys) + 1) // 2), 5.5), squeeze=False)
    for ax, k in zip(axes.flat, keys, strict=False):
        ax.plot(df.index, df[k], marker=".")
        if f"{k}_std" in df:  # the spread over the separability's splits
            ax.fill_between(df.index, df[k] - df[f"{k}_std"], df[k] + df[f"{k}_std"], alpha=0.25)
        ax.set_title(k.removeprefix("eval/gap/"), fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.suptitle(f"modality gap on held-out pairs during training ({metrics_jsonl.parent.name})", fontsize=10)
    fig.tight_layout()
    tmp = out.with_name(out.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run_dir", type=Path, required=True)
    p.add_argument("--data_dir", type=Path, default=None,
                   help="default: the data_dir in the run's run_config.json")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--submission", action="store_true",
                   help="also write submission.json.gz (BabyLM 2024 predictions format)")
    p.add_argument("--tasks", nargs="+", default=None,
                   help="score only these tasks, keeping the others' entries in results.json")
    p.add_argument("--protocol", choices=multimodal.PROTOCOLS, default=None,
                   help=f"how Winoground and VQA are scored (default {multimodal.DEFAULT_PROTOCOL}): 2025, the "
                        "official 2025 pipeline's rule (VQA: ' answer' after the bare question); 2024, the "
                        "2024 pipeline's VQA prompt 'Question: q Answer:'. Recorded in results.json")
    p.add_argument("--devbench_dir", type=Path, default=None,
                   help="the real DevBench data, in the official layout (assets/<task>/manifest.csv, "
                        "evals/<task>/human.csv, evals/sem-things/spose_similarity.mat); default: the data "
                        "directory's eval/devbench (the built-in world writes its own)")
    p.add_argument("--simat_dir", type=Path, default=None,
                   help="the real SIMAT benchmark for the arithmetic task: SIMAT's simat_db/ (or a checkout holding "
                        "it) with transfos.csv, triplets.csv, oscar_similarity_matrix.pt and images/<region_id>.png "
                        "rebuilt from Visual Genome by SIMAT's prepare_dataset.py; scored on its dev split. Default: "
                        "the data directory's eval/arithmetic (the built-in world writes its own)")
    p.add_argument("--milestones", action="store_true",
                   help="score the run's exported word milestones (milestones/chck_*) not yet scored, and the "
                        "run itself if it has no results.json; `eval.compare --by_words` plots them")
    args = p.parse_args(argv)
    if args.submission and args.tasks:
        p.error("--submission needs every task's predictions; leave out --tasks")
    if args.protocol and args.tasks and not {"winoground", "vqa"} & set(args.tasks):
        p.error("--protocol only changes winoground and vqa, and --tasks names neither")
    protocol = args.protocol or multimodal.DEFAULT_PROTOCOL
    if args.devbench_dir is not None:
        if args.tasks and "devbench" not in args.tasks:
            p.error("--devbench_dir only changes the devbench task, and --tasks does not name it")
        if not (args.devbench_dir / "assets").is_dir():
            p.error(f"--devbench_dir {args.devbench_dir}: no assets/ folder; pass the directory holding "
                    "DevBench's assets/ and evals/")
    if args.simat_dir is not None:
        if args.tasks and "arithmetic" not in args.tasks:
            p.error("--simat_dir only changes the arithmetic task, and --tasks does not name it")
        if arithmetic.simat_root(args.simat_dir) is None:
            p.error(f"--simat_dir {args.simat_dir}: no transfos.csv there or in its simat_db/; pass SIMAT's "
                    "simat_db directory")
    data_dir = args.data_dir
    if data_dir is None:
        cfg_path = args.run_dir / "run_config.json"
        if not cfg_path.exists():
            print(f"error: {cfg_path} not found; pass --data_dir", file=sys.stderr)
            return 2
        data_dir = Path(json.loads(cfg_path.read_text())["data"]["data_dir"])
    models = [args.run_dir]
    if args.milestones:
        from babymm.checkpoint import milestone_dirs

        models = [m for m in [*milestone_dirs(args.run_dir), args.run_dir] if not (m / "results.json").exists()]
        print(f"[eval] {len(models)} model(s) to score in {args.run_dir}", file=sys.stderr)
    status = 0
    for model_dir in models:
        try:
            results = evaluate_run(model_dir, data_dir, args.batch_size, args.submission, args.tasks, protocol,
                                   args.devbench_dir, args.simat_dir)
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {model_dir}: {e}", file=sys.stderr)
            return 2
        failed = [k for k, v in results.items() if isinstance(v, dict) and "error" in v]
        if failed:
            print(f"error: task(s) {failed} failed; the others are in {model_dir / 'results.json'}",
                  file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())

"""Text-only zero-shot benchmarks as local lm-eval tasks: BLiMP (and supplement) and EWoK formats.

Each `*.jsonl` file becomes one lm-eval task YAML (as lm-eval's own `blimp` task, but with
`dataset_path: json` on the absolute local file, so nothing is fetched). Inputs are validated
first so a bad line fails with `file:line: what is wrong`, not deep inside lm-eval.

lm-eval computes the per-choice log-likelihoods; babymm reads them back per item (lm-eval's
`log_samples`) and scores them with the one choice rule of `eval.choices` (a tie is not a
hit; lm-eval's `acc` would credit a tie to the first choice, the correct one), with a Wilson
interval per subtask and the unweighted mean over subtasks, as BLiMP is reported.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from babymm.files import DataError, read_jsonl
from eval.choices import choice_metrics, choice_records
from eval.stats import macro_accuracy

# how a file of each format becomes a two-way choice: (fields checked, context, choices)
# whole-sentence log P(sentence | BOS): empty context, no delimiter before the sentence
_MINIMAL_PAIRS = {"fields": ("sentence_good", "sentence_bad"), "doc_to_text": "", "target_delimiter": "",
                  "choices": ("sentence_good", "sentence_bad")}
FORMATS: dict[str, dict[str, Any]] = {
    "blimp": _MINIMAL_PAIRS,
    "blimp_supplement": _MINIMAL_PAIRS,
    # log P(Target | BOS, Context1), as the official BabyLM 2025 pipeline scores EWoK
    "ewok": {"fields": ("Context1", "Target1", "Target2"), "doc_to_text": "{{Context1}}",
             "target_delimiter": " ", "choices": ("Target1", "Target2")},
}
SUITES = tuple(FORMATS)  # eval/<suite>/*.jsonl


def validate_jsonl(path: Path, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    docs = read_jsonl(path, required=fields)
    if not docs:
        raise DataError(f"{path}: no items")
    return docs


def write_tasks(kind: str, data_dir: Path, task_dir: Path, prefix: str) -> list[str]:
    """One task YAML per jsonl file in data_dir (task `prefix_<stem>`). Returns the task names."""
    fmt = FORMATS[kind]
    task_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for path in sorted(Path(data_dir).glob("*.jsonl")):
        validate_jsonl(path, fmt["fields"])
        name = f"{prefix}_{path.stem}"
        task = {
            "task": name, "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(path.resolve())}},
            "test_split": "test", "output_type": "multiple_choice",
            "doc_to_text": fmt["doc_to_text"], "target_delimiter": fmt["target_delimiter"],
            "doc_to_target": 0, "doc_to_choice": "{{[" + ", ".join(fmt["choices"]) + "]}}",
            "num_fewshot": 0,
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1.0},
        }
        (task_dir / f"{name}.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
        names.append(name)
    if not names:
        raise ValueError(f"{data_dir}: no *.jsonl files")
    return names


def run_text_tasks(lm: Any, task_dir: Path, tasks: list[str], limit: int | None = None
                   ) -> dict[str, tuple[np.ndarray, list[dict[str, Any]]]]:
    """Run local tasks offline; returns {task: (hits [N], per-item records)} in document order,
    ids `<task>_<i>`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    out = lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=limit,
                                  log_samples=True, bootstrap_iters=0)
    results = {}
    for task, samples in out["samples"].items():
        samples = sorted(samples, key=lambda r: r["doc_id"])
        scores = np.array([[float(resp[0]) for resp in r["filtered_resps"]] for r in samples])
        options = [[str(cont).strip() for _, cont in r["arguments"]] for r in samples]
        ids = [f"{task}_{r['doc_id']}" for r in samples]
        results[task] = choice_records(ids, options, scores, [0] * len(samples))
    return results


def score_suite(lm: Any, kind: str, data_dir: Path, work_dir: Path
                ) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Score every file of one suite: (metrics with per-subtask entries, records by subtask)."""
    prefix = f"babymm_{kind}"
    names = write_tasks(kind, data_dir, work_dir / kind, prefix)
    scored = run_text_tasks(lm, work_dir / kind, names)
    subtasks, records = {}, {}
    for name in names:
        hits, recs = scored[name]
        sub = name.removeprefix(prefix + "_")
        subtasks[sub] = choice_metrics(hits)
        records[sub] = [{**r, "id": f"{sub}_{i}"} for i, r in enumerate(recs)]
    metrics = macro_accuracy({s: scored[n][0] for s, n in zip(subtasks, names, strict=True)})
    return {**metrics, "subtasks": subtasks}, records

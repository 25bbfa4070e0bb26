"""Text-only zero-shot benchmarks as local lm-eval tasks: BLiMP format and EWoK format.

Each `*.jsonl` file becomes one lm-eval task YAML (as lm-eval's own `blimp` task, but with
`dataset_path: json` on the absolute local file, so nothing is fetched), and a group YAML
averages the subtasks unweighted, as BLiMP is reported. Inputs are validated first so a bad
line fails with `file:line: what is wrong`, not deep inside lm-eval.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

FORMATS = {
    "blimp": {"fields": ("sentence_good", "sentence_bad"), "doc_to_text": "",
              "doc_to_choice": "{{[sentence_good, sentence_bad]}}"},
    # EWoK: log P(Target1 | Context1) vs log P(Target2 | Context1)
    "ewok": {"fields": ("Context1", "Target1", "Target2"), "doc_to_text": "{{Context1}}",
             "doc_to_choice": "{{[Target1, Target2]}}"},
}


def validate_jsonl(path: Path, fields: tuple[str, ...]) -> int:
    n = 0
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: malformed JSON ({e.msg})") from e
        missing = [f for f in fields if not isinstance(doc, dict) or not isinstance(doc.get(f), str) or not doc[f].strip()]
        if missing:
            raise ValueError(f"{path}:{lineno}: missing or empty field(s) {missing}")
        n += 1
    if n == 0:
        raise ValueError(f"{path}: no items")
    return n


def write_tasks(kind: str, data_dir: Path, task_dir: Path, prefix: str) -> list[str]:
    """One task YAML per jsonl file in data_dir, plus a group `prefix`. Returns the task names."""
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
            "doc_to_text": fmt["doc_to_text"], "doc_to_target": 0, "doc_to_choice": fmt["doc_to_choice"],
            "num_fewshot": 0,
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1.0},
        }
        (task_dir / f"{name}.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
        names.append(name)
    if not names:
        raise ValueError(f"{data_dir}: no *.jsonl files")
    group = {"group": prefix, "task": names,
             "aggregate_metric_list": [{"metric": "acc", "aggregation": "mean", "weight_by_size": False}],
             "metadata": {"version": 1.0}}
    (task_dir / f"_{prefix}.yaml").write_text(yaml.safe_dump(group, sort_keys=False))
    return names


def write_blimp_tasks(data_dir: Path, task_dir: Path, prefix: str = "babymm_blimp") -> list[str]:
    return write_tasks("blimp", data_dir, task_dir, prefix)


def write_ewok_tasks(data_dir: Path, task_dir: Path, prefix: str = "babymm_ewok") -> list[str]:
    return write_tasks("ewok", data_dir, task_dir, prefix)


def run_text_tasks(lm: Any, task_dir: Path, tasks: list[str], limit: int | None = None,
                   samples: dict[str, list] | None = None) -> dict[str, dict[str, float]]:
    """Run tasks (or groups) offline; returns {name: {acc, acc_stderr, n}} for groups and
    subtasks. If `samples` is given, it receives lm-eval's per-item records by task."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import lm_eval
    from lm_eval.tasks import TaskManager

    out = lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=TaskManager(include_path=str(task_dir)),
                                  limit=limit, log_samples=samples is not None, bootstrap_iters=0)
    n = {k: v.get("effective", v.get("original")) for k, v in out.get("n-samples", {}).items()}
    results = {}
    for name, metrics in out["results"].items():
        results[name] = {"acc": float(metrics["acc,none"]),
                         "acc_stderr": _float(metrics.get("acc_stderr,none")), "n": n.get(name)}
    for name, metrics in out.get("groups", {}).items():
        results[name] = {"acc": float(metrics["acc,none"]), "acc_stderr": _float(metrics.get("acc_stderr,none")),
                         "n": sum(v or 0 for k, v in n.items() if k.startswith(name + "_"))}
    if samples is not None:
        samples.update(out.get("samples", {}))
    return results


def _float(x: Any) -> float | None:
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def to_submission_predictions(samples: dict[str, list], prefix: str) -> dict[str, dict]:
    """BabyLM's predictions format: {subtask: {"predictions": [{"id": "<subtask>_<i>", "pred": ...}]}}
    with `pred` the chosen sentence (the highest-likelihood choice)."""
    out: dict[str, dict] = {}
    for task, records in samples.items():
        sub = task.removeprefix(prefix + "_")
        preds = []
        for r in sorted(records, key=lambda r: r["doc_id"]):
            scores = [resp[0] for resp in r["filtered_resps"]]
            choice = max(range(len(scores)), key=scores.__getitem__)
            preds.append({"id": f"{sub}_{r['doc_id']}", "pred": r["arguments"][choice][1].strip()
                          if "arguments" in r else choice})
        out[sub] = {"predictions": preds}
    return out

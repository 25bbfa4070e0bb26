"""Run the study's grid of conditions × seeds, then tabulate and plot it.

    python scripts/sweep.py [--config sweeps/default.yaml] [--out runs/sweep] [--seeds 0 1 2]
                            [--dry_run] [--collect_only] [--rerun_stale] [KEY=VALUE ...]

The YAML config names the grid's axes and what every run shares:

    model_type: [git, flamingo, coca, text]   # babymm model types
    curriculum: [length, random]              # names of curricula/*.yaml
    text_pretrain: [true, matched]            # matched (or false), unmatched: --text_pretrain_steps 0
    loss: [cua, clip]                         # --loss recipes (clip cua cuaxu siglip declip), or cua_aug
    word_budget: [null, 250000]               # null: the data as it is
    seed: [0, 1, 2]
    train_flags: {preset: tiny, multimodal_steps: 300}   # train.py flags for every run
    data_dir: data/world                      # default; relative paths are from the repository root
    launch: {num_processes: 1, num_cpu_threads_per_process: <nproc>, mixed_precision: "no"}
    plot_scores: [BLiMP, Winoground, arithmetic]   # optional: the plots' panels (eval.run.SUMMARY columns)

Every axis is a non-empty list. The runs are the Cartesian product of the axes, except that a
type without a contrastive loss (`text`) has no loss axis: it runs once per remaining
condition, with its loss recorded as "none" (not once per loss value, which would train the
same model twice). `--seeds` replaces the seed axis; `KEY=VALUE` arguments (VALUE in YAML)
replace a top-level key, or one entry with `train_flags.KEY=VALUE` / `launch.KEY=VALUE`.

A `train_flags` key goes to the runs of the types that have that flag (`vision_encoder` to the
image-reading types only; `eval_steps`, the gap probe, not to `text`); a key no type in the
grid has is refused. Keys the grid or `launch` sets (seed, curriculum, loss weights,
data_dir, word_budget, output_dir, num_threads, mixed_precision, ...) are refused there.

Text pretraining, compared at equal words: `true` runs stage 1 (P = text_pretrain_steps steps of
B = text_batch_size text blocks) then stage 2 (M = multimodal_steps steps, B text blocks each, with
the captions). `matched` (what `false` means) skips stage 1 and mixes its P*B text blocks into
stage 2, as the BabyLM tracks count words: `--text_pretrain_steps 0 --text_batch_size B'`, B' the
multiple of launch.num_processes nearest B + P*B/M, so it trains on as much text (the rounding's
residual, in blocks and tokens, is printed by --dry_run and in conditions.md) in P fewer
optimizer steps. `unmatched` skips stage 1 with nothing in its place (`--text_pretrain_steps 0`
alone): P*B fewer text blocks and P fewer steps, so pretraining is confounded with words and
compute; kept for that comparison by name. A curriculum that sets stage 2's length from the data
(epochs_per_stage) cannot be matched (a ConfigError). Runs are named `pre`, `nopre_matched` or
`nopre_unmatched`, and so labelled in the tables; runs.csv also gives each run's planned
`text_blocks` and the `words_seen` it logged (text + captions). A run directory named `-nopre-`
(made before matched existed: unmatched) is never read as either; the sweep says so.

Word budgets: on the built-in world, budget N trains on its own world, `<data_dir>-Nw` (e.g.
data/world-250000w), generated on first use with the parameters of the world in data_dir
(seed, image size, eval scale), so a budget's text comes from the same generator at that size.
On real data (no world.json in data_dir, and data_dir not the default data/world), train.py
gets the data_dir itself and `--word_budget N`: an exact draw of N words (data_prep.budget),
seeded by the run's seed unless train_flags sets `data_seed`.

Each run is named from its settings,
`<type>-<curriculum>-<pre|nopre_matched|nopre_unmatched>-<loss>[-b<budget>]-s<seed>`
(e.g. git-length-pre-cua-b250000-s0), in OUT/<name>. A run whose directory holds results.json
is skipped; one whose run_config.json differs from what the config asks now in a field that
changes what a run learns (steps, sizes, rates, ...: all but `eval.compare.NOT_A_CONDITION`) is
reported stale, left out of the tables and counted as a failure, unless `--rerun_stale` trains
it again. A partial run (killed, or failed) of the same settings goes on from its newest
checkpoint (`--resume_from_checkpoint auto`); any other run is (re)trained, replacing its
directory, through `accelerate launch ... babymm/train.py --overwrite_output_dir true`, one at
a time (launch.num_cpu_threads_per_process also goes to train.py as `--num_threads`, which a
lone CPU process would otherwise override, and launch.mixed_precision as `--mixed_precision`,
which train.py's Accelerator would otherwise override); its output goes to OUT/<name>/train.log
and a one-line status with the elapsed time to stdout. A failed run is reported and the sweep goes on; the exit code is 1 if any run failed
(or is stale), 2 for a bad config.

Then (and with `--collect_only`, which trains nothing) every run of the grid with results.json
is read with `eval.compare.load_runs`, and OUT gets: runs.csv (a row per run), conditions.csv
and conditions.md (a row per condition: mean ± s.d. over its seeds, ddof 1, and the number of
seeds; its header says what each text_pretrain value trained on and the machines, from
babymm.environment and each run's environment.json), by_model_type.png (a panel per main score, bars per model type grouped by curriculum,
error bars ± 1 s.d. over seeds, chance dashed) and, with more than one word budget,
by_word_budget.png (score against budget per model type). Files are written atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import yaml

from babymm.files import write_text_atomic

ROOT = Path(__file__).resolve().parent.parent

DEFAULT_CONFIG = ROOT / "sweeps" / "default.yaml"
DEFAULT_DATA_DIR = "data/world"
AXES = ("model_type", "curriculum", "text_pretrain", "loss", "word_budget", "seed")
KEYS = (*AXES, "train_flags", "data_dir", "launch", "plot_scores")
# the loss axis: train.py's --loss recipes and the study's variants (babymm.tasks.loss_flags; named
# here so that a config is checked without importing torch)
LOSSES = ("captioning", "clip", "cua", "cuaxu", "siglip", "declip", "cua_aug", "cua_aug_safe", "declip_safe",
          "cua_image_views", "cua_crop_views", "cua_blur_views", "cua_caption_views")
LOSS_LABELS = {"captioning": "no contrastive term (captioning and text LM only)", "clip": "plain CLIP", "cua": "CLIP + uniformity + alignment (the default)",
               "cuaxu": "CUA + cross-modal uniformity", "siglip": "SigLIP's sigmoid loss",
               "declip": "DeCLIP's multi-view CLIP 0.4 + nearest-neighbour 0.2 + SimSiam 0.2",
               "cua_aug": "CUA with image augmentation (moco), EDA caption views 0.1 and label smoothing 0.1",
               "cua_aug_safe": "cua_aug with crop and blur only (no colour jitter, grayscale or flip)",
               "declip_safe": "declip with crop and blur only (no colour jitter, grayscale or flip)",
               "cua_image_views": "CUA with crop and blur image views alone",
               "cua_crop_views": "CUA with crop image views alone", "cua_blur_views": "CUA with blur image views alone",
               "cua_caption_views": "CUA with EDA caption views (0.1) alone"}
NO_LOSS = "none"  # the loss recorded for a type without a contrastive loss
LAUNCH_DEFAULTS: dict[str, Any] = {"num_processes": 1, "num_cpu_threads_per_process": None, "mixed_precision": "no"}
MIXED_PRECISION = ("no", "bf16")  # what train.py's Accelerator accepts here
# train.py flags the sweep sets itself, and where to set them instead
SET_BY_SWEEP = {
    "model_type": "the model_type axis", "curriculum": "the curriculum axis", "seed": "the seed axis",
    "word_budget": "the word_budget axis", "data_dir": "the top-level data_dir key",
    **{k: "the loss axis" for k in ("loss", "clip_weight", "uniform_weight", "align_weight", "xuniform_weight",
                                    "siglip_weight", "nn_weight", "simsiam_weight", "image_augment",
                                    "caption_augment", "label_smoothing", "image_views", "logit_bias",
                                    "simsiam_dim")},
    "output_dir": "the sweep (--out)", "overwrite_output_dir": "the sweep", "config": "the sweep",
    "resume_from_checkpoint": "the sweep (it resumes a partial run)",
    "num_threads": "launch.num_cpu_threads_per_process", "mixed_precision": "launch.mixed_precision",
}
# no flag of a type without vision: the gap probe during training needs image embeddings
VISION_ONLY = {"eval_steps"}
MAIN_SCORES = ("BLiMP", "EWoK", "Winoground", "VQA", "zero-shot (LL)", "R@1 i->t")
AS_IS = "as-is"  # how a null word budget (the data as it is) reads in the tables
RESUME, RETRAIN = "partial run, resumed from its newest checkpoint", "partial run of other settings, retrained"
# the text_pretrain axis: each value's label, in run names and tables
PRE, MATCHED, UNMATCHED = "pre", "nopre_matched", "nopre_unmatched"
LEGACY_NOPRE = "nopre"  # the name of a no-pretraining run before matched existed (it was unmatched)
PRETRAIN_HELP = ("true (stage 1 runs), matched or false (no stage 1; its text blocks are mixed into stage 2: "
                 "equal words seen) or unmatched (no stage 1 and nothing in its place: fewer words and steps)")


class ConfigError(ValueError):
    """A bad sweep config: the message is one line and names the key."""


@dataclass(frozen=True)
class Run:
    model_type: str
    curriculum: str
    text_pretrain: str  # PRE, MATCHED or UNMATCHED (see pretrain_label)
    loss: str  # cua, clip, or "none" for a type without a contrastive loss
    word_budget: int | None
    seed: int

    @property
    def name(self) -> str:
        budget = "" if self.word_budget is None else f"-b{self.word_budget}"
        return f"{self.model_type}-{self.curriculum}-{self.text_pretrain}-{self.loss}{budget}-s{self.seed}"

    def row(self) -> dict[str, Any]:
        return {"model_type": self.model_type, "curriculum": self.curriculum, "text_pretrain": self.text_pretrain,
                "loss": self.loss, "word_budget": AS_IS if self.word_budget is None else self.word_budget,
                "seed": self.seed}


@dataclass(frozen=True)
class TextPlan:
    """The text blocks (block_size tokens each) a run trains on, beside the pretraining run of its
    condition (same type, curriculum and flags): stage 1 of P steps and stage 2 of M steps, each
    taking B blocks a step. A matched run skips stage 1 and takes B' blocks a stage-2 step, the
    multiple of the processes nearest B + P*B/M; the rounding's residual is `residual` blocks."""

    label: str  # PRE, MATCHED or UNMATCHED
    pretrain_steps: int  # P
    multimodal_steps: int  # M
    text_batch_size: int  # B
    stage2_batch: int  # this run's stage-2 text batch: B' if matched, else B
    block_size: int

    @property
    def blocks(self) -> int:
        stage1 = self.pretrain_steps * self.text_batch_size if self.label == PRE else 0
        return stage1 + self.multimodal_steps * self.stage2_batch

    @property
    def pre_blocks(self) -> int:
        return (self.pretrain_steps + self.multimodal_steps) * self.text_batch_size

    @property
    def residual(self) -> int:
        """This run's text blocks less the pretraining run's (0 for it; rounding for a matched one)."""
        return self.blocks - self.pre_blocks

    def describe(self) -> str:
        B, M, P = self.text_batch_size, self.multimodal_steps, self.pretrain_steps
        total = f"{self.blocks:,} text blocks of {self.block_size} tokens"
        if self.label == PRE:
            return f"{PRE} = stage 1 ({P} steps x {B} text blocks), then stage 2 ({M} steps x {B}): {total}"
        r = self.residual
        diff = "as many as pre" if not r else (f"{abs(r):,} {'more' if r > 0 else 'fewer'} than pre "
                                               f"({abs(r) * self.block_size:,} tokens")
        if self.label == MATCHED:
            return (f"{MATCHED} = no stage 1, its text mixed into stage 2 ({M} steps x {self.stage2_batch} text "
                    f"blocks, raised from {B}): {total}, {diff}{', from rounding)' if r else ''}; "
                    f"{P} fewer optimizer steps")
        return (f"{UNMATCHED} = no stage 1 and nothing in its place (stage 2: {M} steps x {B}): {total}, "
                f"{diff}{')' if r else ''} and {P} fewer optimizer steps")


@dataclass
class Sweep:
    axes: dict[str, list[Any]]
    train_flags: dict[str, Any]
    data_dir: Path
    launch: dict[str, Any]
    source: str  # the config file, for messages
    flags_of: dict[str, set[str]] = field(default_factory=dict)  # model type -> its train.py flags
    plans: dict[tuple[str, str, str], TextPlan | None] = field(default_factory=dict, repr=False)  # text_plan's
    plot_scores: tuple[str, ...] = MAIN_SCORES  # the plots' panels: columns of the tables

    def run_data_dir(self, run: Run) -> Path:
        if run.word_budget is None or not is_builtin_world(self.data_dir):
            return self.data_dir
        return budget_world(self.data_dir, run.word_budget)

    def argv(self, run: Run, run_dir: Path, resume: bool = False) -> list[str]:
        """train.py's flags for `run`, writing into `run_dir` (going on from its newest checkpoint
        with `resume`, else replacing it)."""
        shared = [f for k, v in self.train_flags.items() if self.applies(k, run.model_type)
                  for f in (f"--{k}", flag_value(v))]
        argv = [*shared, "--model_type", run.model_type, "--curriculum", run.curriculum,
                "--seed", str(run.seed), "--data_dir", str(self.run_data_dir(run))]
        if run.word_budget is not None:
            argv += ["--word_budget", str(run.word_budget)]
        if run.text_pretrain != PRE:
            argv += ["--text_pretrain_steps", "0"]
        if run.text_pretrain == MATCHED:  # stage 1's text, mixed into stage 2
            argv += ["--text_batch_size", str(self.text_plan(run).stage2_batch)]
        if run.loss != NO_LOSS:
            from babymm.tasks import loss_flags

            argv += loss_flags(run.loss)
        argv += ["--num_threads", str(self.launch["num_cpu_threads_per_process"]),
                 "--mixed_precision", self.launch["mixed_precision"],
                 "--output_dir", str(run_dir)]
        argv += ["--resume_from_checkpoint", "auto"] if resume else ["--overwrite_output_dir", "true"]
        return argv

    def text_plan(self, run: Run) -> TextPlan | None:
        """The text `run` trains on, against the pretraining run of its condition; None when stage 2's
        length is known only once the data is (a curriculum with epochs_per_stage), which a matched
        run cannot be planned without (a ConfigError)."""
        key = (run.model_type, run.curriculum, run.text_pretrain)
        if key in self.plans:
            return self.plans[key]
        from babymm.curriculum import load_curriculum
        from babymm.train import DEFAULT_MULTIMODAL_STEPS

        pre = dataclasses.replace(run, text_pretrain=PRE)
        cfg = parse_run_config(self, self.argv(pre, Path("plan")), run.model_type)
        t, plan = cfg.train, None
        steps = t.multimodal_steps
        if steps is None and load_curriculum(run.curriculum).pacing.epochs_per_stage is None:
            steps = DEFAULT_MULTIMODAL_STEPS
        if steps is None:
            if run.text_pretrain == MATCHED:
                raise ConfigError(f"{self.source}: text_pretrain: matched: curriculum {run.curriculum!r} sets stage 2's "
                                  "length from the data (epochs_per_stage), so the text batch that takes in stage 1's "
                                  "text is not known before the run; use unmatched, or another curriculum")
        else:
            P, B, n = t.text_pretrain_steps, t.text_batch_size, self.launch["num_processes"]
            batch = B
            if run.text_pretrain == MATCHED:  # M * B' = (P + M) * B, B' rounded to a multiple of n
                q, r = divmod((P + steps) * B, steps * n)
                batch = n * max(1, q + (2 * r >= steps * n))
            plan = TextPlan(run.text_pretrain, P, steps, B, batch, cfg.data.block_size)
        self.plans[key] = plan
        return plan

    def applies(self, key: str, model_type: str) -> bool:
        if key == "preset":
            return True
        if key in VISION_ONLY and not has_vision(model_type):
            return False
        return key in self.flags_of[model_type]


def flag_value(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def budget_world(data_dir: Path, budget: int) -> Path:
    return data_dir.with_name(f"{data_dir.name}-{budget}w")


def has_vision(model_type: str) -> bool:
    from babymm.models import model_class

    return model_class(model_type).has_vision


def has_contrastive_loss(model_type: str) -> bool:
    import dataclasses

    from babymm.models import model_class
    from babymm.tasks import task_for

    names = {f.name for f in dataclasses.fields(task_for(model_class(model_type)).Arguments)}
    return {"uniform_weight", "align_weight"} <= names


def type_flags(model_type: str) -> set[str]:
    """The flag names (dests) train.py parses for `model_type`."""
    from transformers import HfArgumentParser

    from babymm.config import argument_classes

    return {a.dest for a in HfArgumentParser(argument_classes(model_type))._actions if a.dest != "help"}


def is_builtin_world(data_dir: Path) -> bool:
    return (data_dir / "world.json").exists() or data_dir.resolve() == (ROOT / DEFAULT_DATA_DIR).resolve()


def curricula() -> list[str]:
    return sorted(p.stem for p in (ROOT / "curricula").glob("*.yaml"))


# ----------------------------------------------------------------------------------------- config


def load_config(path: Path, seeds: list[int] | None = None, overrides: list[str] = ()) -> Sweep:
    """Read, override and check a sweep config; every error is a one-line ConfigError naming the key."""
    src = str(path)
    if not path.exists():
        raise ConfigError(f"{src}: no such config file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{src}: not valid YAML: {' '.join(str(e).split())}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{src}: must be a mapping of keys {list(KEYS)}")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: write KEY=VALUE (VALUE in YAML), e.g. seed=[0,1]")
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"override {key}: {value!r} is not valid YAML") from None
        section, dot, sub = key.partition(".")
        if dot:
            if section not in ("train_flags", "launch"):
                raise ConfigError(f"override {key}: only train_flags.KEY and launch.KEY take a dotted key")
            raw[section] = {**(raw.get(section) or {}), sub: value}
        else:
            raw[key] = value
    if seeds is not None:
        raw["seed"] = list(seeds)
    unknown = sorted(map(str, set(raw) - set(KEYS)))
    if unknown:
        raise ConfigError(f"{src}: unknown key(s) {unknown}; the keys are {list(KEYS)}")
    missing = [a for a in AXES if a not in raw]
    if missing:
        raise ConfigError(f"{src}: {missing[0]}: missing; every axis of {list(AXES)} needs a list")
    axes = {a: _axis(src, a, raw[a]) for a in AXES}

    from babymm.models import MODEL_TYPES, PRESETS

    for mt in axes["model_type"]:
        if mt not in MODEL_TYPES:
            raise ConfigError(f"{src}: model_type: {mt!r} unknown; use some of {sorted(MODEL_TYPES)}")
    known = curricula()
    for c in axes["curriculum"]:
        if c not in known:
            raise ConfigError(f"{src}: curriculum: {c!r} is not in curricula/; use some of {known}")
    labels = [pretrain_label(src, v) for v in axes["text_pretrain"]]
    if len(set(labels)) < len(labels):
        raise ConfigError(f"{src}: text_pretrain: {axes['text_pretrain']} names a condition twice (false is matched)")
    axes["text_pretrain"] = labels
    for v in axes["loss"]:
        if v not in LOSSES:
            raise ConfigError(f"{src}: loss: {v!r} unknown; use some of {list(LOSSES)}")
    for v in axes["word_budget"]:
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ConfigError(f"{src}: word_budget: {v!r} is neither a positive integer nor null (the data as it is)")
    for v in axes["seed"]:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ConfigError(f"{src}: seed: {v!r} is not a non-negative integer")

    data_dir = raw.get("data_dir", DEFAULT_DATA_DIR)
    if not isinstance(data_dir, str) or not data_dir:
        raise ConfigError(f"{src}: data_dir: {data_dir!r} is not a path")
    data_dir = Path(data_dir) if Path(data_dir).is_absolute() else ROOT / data_dir
    builtin = is_builtin_world(data_dir)
    if not builtin and not data_dir.is_dir():
        raise ConfigError(f"{src}: data_dir: {data_dir} does not exist (only the default {DEFAULT_DATA_DIR} "
                          "is generated when missing)")

    launch = raw.get("launch") or {}
    if not isinstance(launch, dict):
        raise ConfigError(f"{src}: launch: must be a mapping of {list(LAUNCH_DEFAULTS)}")
    bad = sorted(map(str, set(launch) - set(LAUNCH_DEFAULTS)))
    if bad:
        raise ConfigError(f"{src}: launch.{bad[0]}: unknown; launch takes {list(LAUNCH_DEFAULTS)}")
    launch = {**LAUNCH_DEFAULTS, **{k: v for k, v in launch.items() if v is not None}}
    if launch["num_cpu_threads_per_process"] is None:
        launch["num_cpu_threads_per_process"] = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                                 else os.cpu_count() or 1)
    for k in ("num_processes", "num_cpu_threads_per_process"):
        if isinstance(launch[k], bool) or not isinstance(launch[k], int) or launch[k] < 1:
            raise ConfigError(f"{src}: launch.{k}: {launch[k]!r} is not a positive integer")
    if launch["mixed_precision"] not in MIXED_PRECISION:
        raise ConfigError(f"{src}: launch.mixed_precision: {launch['mixed_precision']!r}; use one of "
                          f"{list(MIXED_PRECISION)}")

    flags = raw.get("train_flags") or {}
    if not isinstance(flags, dict):
        raise ConfigError(f"{src}: train_flags: must be a mapping of train.py flags to values")
    if "preset" in flags and flags["preset"] not in PRESETS:
        raise ConfigError(f"{src}: train_flags.preset: {flags['preset']!r} unknown; use one of {sorted(PRESETS)}")
    from eval.run import SUMMARY

    plot_scores = raw.get("plot_scores", list(MAIN_SCORES))
    if not isinstance(plot_scores, list) or not plot_scores or any(s not in SUMMARY for s in plot_scores):
        raise ConfigError(f"{src}: plot_scores: {plot_scores!r}; give a list of table columns from {list(SUMMARY)}")
    sweep = Sweep(axes, dict(flags), data_dir, launch, src,
                  {mt: type_flags(mt) for mt in axes["model_type"]}, plot_scores=tuple(plot_scores))
    for k, v in flags.items():
        if k in SET_BY_SWEEP:
            raise ConfigError(f"{src}: train_flags.{k}: set by {SET_BY_SWEEP[k]}, not train_flags")
        if not any(sweep.applies(k, mt) for mt in axes["model_type"]):
            raise ConfigError(f"{src}: train_flags.{k}: not a train.py flag of any model type in the grid "
                              f"({', '.join(axes['model_type'])}); see babymm/train.py --model_type TYPE --help")
        if v is None or isinstance(v, (list, dict)):
            raise ConfigError(f"{src}: train_flags.{k}: {v!r} is not a single value")
    if flags.get("run_eval") is False:
        raise ConfigError(f"{src}: train_flags.run_eval: the sweep collects each run's results.json; leave it true")
    if flags.get("text_pretrain_steps") == 0 and PRE in axes["text_pretrain"]:
        raise ConfigError(f"{src}: train_flags.text_pretrain_steps: 0 contradicts text_pretrain: true; "
                          "use the text_pretrain axis")
    return sweep


def pretrain_label(src: str, value: Any) -> str:
    """A text_pretrain axis value's label: true -> PRE; false or matched -> MATCHED; unmatched -> UNMATCHED."""
    if isinstance(value, bool):
        return PRE if value else MATCHED
    if value in ("matched", "unmatched"):
        return MATCHED if value == "matched" else UNMATCHED
    raise ConfigError(f"{src}: text_pretrain: {value!r} unknown; use {PRETRAIN_HELP}")


def _axis(src: str, key: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(f"{src}: {key}: must be a list, e.g. {key}: [{value}]")
    if not value:
        raise ConfigError(f"{src}: {key}: empty; an axis needs at least one value")
    if len(set(map(repr, value))) < len(value):
        raise ConfigError(f"{src}: {key}: repeats a value in {value}")
    return value


def expand(sweep: Sweep) -> list[Run]:
    """The grid: the axes' Cartesian product, with one loss ("none") for a type without a contrastive loss."""
    runs: list[Run] = []
    ax = sweep.axes
    for mt, cur, pre, loss, budget, seed in product(*(ax[a] for a in AXES)):
        if not has_contrastive_loss(mt):
            if loss != ax["loss"][0]:
                continue  # its one run is made at the first loss value
            loss = NO_LOSS
        runs.append(Run(mt, cur, pre, loss, budget, seed))
    return runs


def expected_config(sweep: Sweep, run: Run, run_dir: Path) -> dict[str, Any]:
    """What train.py will write as run_config.json for `run`; a flag it refuses is a ConfigError."""
    cfg = parse_run_config(sweep, sweep.argv(run, run_dir), run.model_type)
    return json.loads(json.dumps(cfg.to_dict()))


def parse_run_config(sweep: Sweep, argv: list[str], model_type: str):
    """train.py's parse of `argv` (a babymm.config.RunConfig); a flag it refuses is a ConfigError."""
    from babymm.config import parse_config

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parse_config(argv)
    except SystemExit as e:
        lines = [ln for ln in (err.getvalue() + "\n" + ("" if isinstance(e.code, int) else str(e.code))).splitlines()
                 if ln.strip()]
        msg = lines[-1].split("error:", 1)[-1].strip() if lines else f"exit {e.code}"
        raise ConfigError(f"{sweep.source}: train_flags (for {model_type} runs): {msg}") from None


def field_defaults(model_type: str) -> dict[str, dict[str, Any]]:
    """Each config section's field defaults for `model_type`: what a run made before a field
    existed behaved as."""
    from babymm.config import SECTIONS, argument_classes

    out = {}
    for section, cls in zip(SECTIONS, argument_classes(model_type), strict=True):
        out[section] = {f.name: f.default for f in dataclasses.fields(cls)
                        if f.default is not dataclasses.MISSING}
    return out


def config_differences(stored: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """Fields that change what a run learns and differ between a run's run_config.json and `expected`.
    A field the stored config lacks (added since the run was made) differs only if `expected`
    sets it to something other than its default."""
    from eval.compare import NOT_A_CONDITION

    model_type = (expected.get("model") or {}).get("model_type")
    defaults = field_defaults(model_type) if model_type else {}
    diffs = []
    for section in sorted(set(stored) | set(expected)):
        a, b = stored.get(section) or {}, expected.get(section) or {}
        for k in sorted(set(a) | set(b)):
            if section == "loss" and k == "loss" and k not in a:
                continue  # a run made before recipe names: its weights say which it was
            was = a[k] if k in a else defaults.get(section, {}).get(k, a.get(k))
            if k not in NOT_A_CONDITION and was != b.get(k):
                diffs.append(f"{k} {a.get(k)!r} (now {b.get(k)!r})")
    return diffs


def run_state(run_dir: Path, expected: dict[str, Any]) -> tuple[str, str]:
    """("done", ""), ("stale", what differs) or ("todo", why)."""
    if not (run_dir / "results.json").exists():
        if not run_dir.exists():
            return "todo", "new"
        try:  # killed or failed: resumed from its newest checkpoint if it was this same run
            stored = json.loads((run_dir / "run_config.json").read_text())
        except (OSError, ValueError):
            return "todo", RETRAIN
        return "todo", RETRAIN if config_differences(stored, expected) else RESUME
    try:
        stored = json.loads((run_dir / "run_config.json").read_text())
    except (OSError, ValueError):
        return "stale", "no readable run_config.json"
    diffs = config_differences(stored, expected)
    return ("stale", "; ".join(diffs)) if diffs else ("done", "")


# ----------------------------------------------------------------------------------------- running


def fmt_time(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def launch_command(sweep: Sweep, argv: list[str]) -> list[str]:
    la = sweep.launch
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(la["num_processes"]),
            "--num_cpu_threads_per_process", str(la["num_cpu_threads_per_process"]),
            "--mixed_precision", la["mixed_precision"], "--num_machines", "1", "--dynamo_backend", "no",
            # several processes: the torchrun-style launcher (train.py runs them on gloo on a CPU)
            *(["--multi_gpu"] if la["num_processes"] > 1 else []),
            "babymm/train.py", *argv]


def train_one(cmd: list[str], run_dir: Path, resume: bool = False) -> tuple[int, str]:
    """Run `cmd` (which replaces `run_dir`, or resumes it), its output into run_dir/train.log;
    (exit code, last line).

    A new run: train.py deletes and recreates the run directory first, so the log is held back
    until the new run's run_config.json is there, then written as it comes, and rewritten whole
    at the end. A resumed run's output is appended to its log."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "TQDM_MININTERVAL": "10"}  # progress bars: a log line per 10 s, not per step
    if not resume:
        shutil.rmtree(run_dir, ignore_errors=True)  # never read an old run's files as this one's
    log_path, lines, live = run_dir / "train.log", [f"$ {shlex.join(cmd)}\n"], None
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, errors="replace", start_new_session=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if live is None and (run_dir / "run_config.json").exists():
                live = log_path.open("a" if resume else "w")
                live.writelines(lines)
            elif live is not None:
                live.write(line)
                live.flush()
        rc = proc.wait()
    except BaseException:  # KeyboardInterrupt: stop the launcher and the training process it started
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
        raise
    finally:
        if live is not None:
            live.close()
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        write_text_atomic(log_path, "".join(lines))
    elif live is None:  # stopped before it got going
        with log_path.open("a") as f:
            f.writelines(lines)
    return rc, failure_line(lines)[:300]


def failure_line(lines: list[str]) -> str:
    """The line that says why a run failed: train.py's `error: ...`, else the training process's
    exception (not the launcher's CalledProcessError about it), else the last line."""
    text = [ln.strip() for ln in lines if ln.strip()]
    for ln in text:
        if ln.startswith("error: "):
            return ln
    for ln in reversed(text):
        if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b", ln) and "CalledProcessError" not in ln:
            return ln
    return text[-1] if text else ""


def ensure_world(sweep: Sweep, budget: int) -> None:
    """Generate `<data_dir>-<budget>w` with the parameters of data_dir's world, unless it is there."""
    target = budget_world(sweep.data_dir, budget)
    # the world's text share is the run's --text_fraction (train.py refuses data used whole at another share)
    caption_fraction = round(1 - float(sweep.train_flags.get("text_fraction", 0.5)), 12)
    if (target / "world.json").exists():
        made = json.loads((target / "world.json").read_text())["params"].get("caption_fraction")
        if made is not None and abs(made - caption_fraction) > 1e-9:
            raise ConfigError(f"{target}: generated with caption fraction {made}, the grid's text_fraction asks "
                              f"{caption_fraction}; remove {target} to regenerate it")
        return
    from data_prep import world

    params: dict[str, Any] = {}
    if (sweep.data_dir / "world.json").exists():
        old = json.loads((sweep.data_dir / "world.json").read_text())["params"]
        params = {k: old[k] for k in ("seed", "image_size", "eval_scale") if k in old}
    params["caption_fraction"] = caption_fraction
    if "image_size" in sweep.train_flags:
        params["image_size"] = int(sweep.train_flags["image_size"])
    print(f"sweep: generating the built-in world at {budget:,} words in {target}", flush=True)
    world.generate_world(target, word_budget=budget, **params)


# ----------------------------------------------------------------------------------------- results


def collect(sweep: Sweep, runs: list[Run], out: Path, expected: dict[str, dict[str, Any]]) -> list[Path]:
    """Tables and plots of the grid's finished runs in `out`; returns the files written."""
    import pandas as pd

    from babymm.environment import describe, environment
    from eval.compare import (
        by_condition,
        condition_labels,
        condition_table,
        final_words_seen,
        load_runs,
    )
    from eval.run import SUMMARY

    finished = [r for r in runs if run_state(out / r.name, expected[r.name])[0] == "done"]
    if not finished:
        print(f"sweep: no run of the grid in {out} has results.json (matching this config); no tables",
              file=sys.stderr)
        return []
    df, chance = load_runs([out / r.name for r in finished])
    scores = [c for c in SUMMARY if c in df.columns]
    table = pd.DataFrame([r.row() for r in finished], index=pd.Index([r.name for r in finished], name="run"))
    plans = {r.name: sweep.text_plan(r) for r in finished}
    table["text_blocks"] = [None if plans[r.name] is None else plans[r.name].blocks for r in finished]  # planned
    table["words_seen"] = pd.to_numeric(pd.Series([final_words_seen(out / r.name) for r in finished],
                                                  index=table.index, dtype=object))  # counted: text + captions
    table = table.join(df[scores])
    written = [out / "runs.csv"]
    _to_csv_atomic(table, written[0])

    axes = [a for a in AXES if a != "seed"]
    varying = [a for a in axes if table[a].astype(str).nunique() > 1]
    frame = table[[*varying, "seed", *scores]].copy()
    frame.attrs["settings"] = [*varying, "seed"]
    agg = by_condition(frame)
    groups = condition_labels(table, varying)
    first = table[[*axes, "text_blocks"]].groupby(groups, sort=False).first()
    flat = pd.DataFrame(index=agg.index)
    for a in [*axes, "text_blocks"]:
        flat[a] = first.loc[agg.index, a].values
    flat["words_seen mean"] = table["words_seen"].groupby(groups, sort=False).mean().loc[agg.index].values
    flat["seeds"] = agg[("n", "seeds")].values
    for c in scores:
        flat[f"{c} mean"] = agg[("mean", c)].values
        flat[f"{c} sd"] = agg[("std", c)].values
    written.append(out / "conditions.csv")
    _to_csv_atomic(flat, written[-1])

    shared = {a: table[a].iloc[0] for a in axes if a not in varying}
    seeds = sorted(set(table["seed"]))
    header = [
        "# Sweep results",
        "",
        f"Config: `{sweep.source}`; runs in `{out}`. {len(finished)} of {len(runs)} runs of the grid have results.",
        f"Each condition: mean ± s.d. (ddof 1) over its seeds (column `seeds`: n seeds; seeds {seeds}); "
        "a single seed has no s.d.",
        "Shared by every run: " + (", ".join(f"{k}={v}" for k, v in shared.items()) or "nothing else") + "; "
        "train flags: " + (" ".join(f"--{k} {flag_value(v)}" for k, v in sweep.train_flags.items()) or "defaults")
        + ".",
        "Loss: " + "; ".join(f"{k} = {LOSS_LABELS[k]}" for k in dict.fromkeys(table["loss"]) if k in LOSS_LABELS)
        + (f"; {NO_LOSS} = the text type (no contrastive loss)" if NO_LOSS in set(table["loss"]) else "") + ".",
        *([f"Text pretraining (text_pretrain; runs.csv: text_blocks planned, words_seen counted): {'; '.join(known)}."]
          if (known := list(dict.fromkeys(p.describe() for p in plans.values() if p is not None))) else []),
        f"Machine: tables made on {describe(environment())}; runs trained on: {trained_on(out, finished)}.",
        "",
    ]
    written.append(out / "conditions.md")
    write_text_atomic(written[-1], "\n".join(header) + "\n" + condition_table(agg, chance) + "\n")

    png = out / "by_model_type.png"
    if plot_by_model_type(table, varying, chance, png, sweep.plot_scores):
        written.append(png)
    budgets = {r.word_budget for r in finished}
    png = out / "by_word_budget.png"
    if len(budgets) > 1 and plot_by_word_budget(sweep, table, varying, chance, png):
        written.append(png)
    return written


def trained_on(out: Path, runs: list[Run]) -> str:
    """The machines the runs' RUN/environment.json name, with how many runs each; or that none says."""
    from babymm.environment import describe

    seen: dict[str, int] = {}
    for r in runs:
        try:
            line = describe(json.loads((out / r.name / "environment.json").read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            line = "not recorded (no environment.json)"
        seen[line] = seen.get(line, 0) + 1
    return "; ".join(f"{line} ({n} run{'s' if n > 1 else ''})" for line, n in seen.items())


def _to_csv_atomic(df, path: Path) -> None:
    write_text_atomic(path, df.to_csv())


def _stats(table, keys: list[str], scores: list[str]):
    grouped = table.groupby(keys, sort=False)[scores]
    return grouped.mean(), grouped.std(ddof=1)


def _series_label(row, cols: list[str]) -> str:
    return ", ".join(str(row[c]) if c == "model_type" else f"{c}={row[c]}" for c in cols)


def _figure(n: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return plt, fig, list(axes.flat[:n])


def _save(plt, fig, ax0, path: Path, title: str) -> None:
    """One legend under the panels (from the first panel's series), then an atomic PNG."""
    handles, labels = ax0.get_legend_handles_labels()
    ncol = min(4, max(1, len(labels)))
    rows = math.ceil(len(labels) / ncol)
    height = fig.get_figheight()
    fig.set_figheight(height + 0.25 * rows + 0.4)
    bottom = (0.25 * rows + 0.2) / fig.get_figheight()
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    tmp.replace(path)


def plot_by_model_type(table, varying: list[str], chance: dict[str, float], path: Path,
                       plot_scores: tuple[str, ...] = MAIN_SCORES) -> bool:
    """A panel per score: bars per model type (and other varying settings) grouped by curriculum."""
    import numpy as np

    scores = [s for s in plot_scores if s in table.columns and table[s].notna().any()]
    if not scores:
        return False
    series_cols = ["model_type", *[c for c in varying if c not in ("model_type", "curriculum")]]
    t = table.copy()
    t["_series"] = [_series_label(r, series_cols) for _, r in t.iterrows()]
    mean, std = _stats(t, ["curriculum", "_series"], scores)
    groups = list(dict.fromkeys(t["curriculum"]))
    series = list(dict.fromkeys(t["_series"]))
    width = 0.8 / len(series)
    plt, fig, axes = _figure(len(scores))
    # matplotlib's default cycle has 10 colours: more series would repeat them
    palette = plt.get_cmap("tab10" if len(series) <= 10 else "tab20")
    for ax, score in zip(axes, scores, strict=True):
        for i, s in enumerate(series):
            m = [mean[score].get((g, s), np.nan) for g in groups]
            e = [std[score].get((g, s), np.nan) for g in groups]
            x = np.arange(len(groups)) - 0.4 + width * (i + 0.5)
            ax.bar(x, m, width, yerr=np.nan_to_num(e), capsize=2, label=s, color=palette(i))
        if score in chance:
            ax.axhline(chance[score], color="k", ls="--", lw=0.8)
        ax.set_xticks(np.arange(len(groups)), groups)
        ax.set_title(score, fontsize=10)
        ax.set_ylim(0, max(1.0, float(np.nanmax(table[score].to_numpy(dtype=float)))))  # centroid distance: 0..2
    axes[0].set_ylabel("score (± 1 s.d. over seeds)")
    _save(plt, fig, axes[0], path, "by model type and curriculum; dashed: chance; seeds per bar: "
          f"{sorted(set(t.groupby(['curriculum', '_series']).size()))}")
    return True


def plot_by_word_budget(sweep: Sweep, table, varying: list[str], chance: dict[str, float], path: Path) -> bool:
    """A panel per main score: mean ± s.d. over seeds against the word budget, a line per model type."""
    scores = [s for s in sweep.plot_scores if s in table.columns and table[s].notna().any()]
    t = table.copy()
    as_is = None  # the budget of "the data as it is", when that is a world that says it
    if (sweep.data_dir / "world.json").exists():
        as_is = json.loads((sweep.data_dir / "world.json").read_text())["params"].get("word_budget")
    t["_words"] = [as_is if b == AS_IS else b for b in t["word_budget"]]
    t = t[t["_words"].notna()]
    if not scores or t["_words"].nunique() < 2:
        return False
    t["_words"] = t["_words"].astype(int)
    series_cols = ["model_type", *[c for c in varying if c not in ("model_type", "word_budget")]]
    t["_series"] = [_series_label(r, series_cols) for _, r in t.iterrows()]
    mean, std = _stats(t, ["_series", "_words"], scores)
    plt, fig, axes = _figure(len(scores))
    for ax, score in zip(axes, scores, strict=True):
        for s in dict.fromkeys(t["_series"]):
            m = mean[score].xs(s, level="_series").sort_index()
            e = std[score].xs(s, level="_series").reindex(m.index).fillna(0)
            if m.notna().any():
                ax.errorbar(m.index, m.values, yerr=e.values, marker="o", capsize=2, label=s)
        if score in chance:
            ax.axhline(chance[score], color="k", ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(score, fontsize=10)
        ax.set_xlabel("training words")
    axes[0].set_ylabel("score (± 1 s.d. over seeds)")
    note = f"; {AS_IS} = {as_is:,} words" if as_is and (table["word_budget"] == AS_IS).any() else ""
    _save(plt, fig, axes[0], path, f"by word budget; dashed: chance{note}; seeds per point: "
          f"{sorted(set(t.groupby(['_series', '_words']).size()))}")
    return True


# ----------------------------------------------------------------------------------------- main


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def train_all(sweep: Sweep, runs: list[Run], states: dict[str, tuple[str, str]], out: Path,
              rerun_stale: bool) -> list[str]:
    """Train the runs that are not done, one at a time; returns the failed (and stale) ones."""
    failed: list[str] = []
    out.mkdir(parents=True, exist_ok=True)
    started, trained, skipped = time.perf_counter(), 0, 0
    for i, r in enumerate(runs, 1):
        run_dir = out / r.name
        state, why = states[r.name]
        tag = f"[{i}/{len(runs)}] {r.name}:"
        if state == "done":
            print(f"{tag} skipped (results.json exists)", flush=True)
            skipped += 1
            continue
        if state == "stale" and not rerun_stale:
            print(f"{tag} STALE, left out: its results were made with other settings: {why}; "
                  "pass --rerun_stale to retrain it, or use another --out", flush=True)
            failed.append(r.name)
            continue
        t0 = time.perf_counter()
        try:
            if r.word_budget is not None and is_builtin_world(sweep.data_dir):
                ensure_world(sweep, r.word_budget)  # before the status line: it logs as it goes
            print(f"{tag} training ... ", end="", flush=True)
            resume = why == RESUME
            rc, last = train_one(launch_command(sweep, sweep.argv(r, run_dir, resume)), run_dir, resume)
        except (OSError, ValueError, RuntimeError) as e:
            print(f"{tag} ", end="")
            rc, last = None, f"{type(e).__name__}: {e}"
        took = fmt_time(time.perf_counter() - t0)
        if rc == 0 and (run_dir / "results.json").exists():
            print(f"ok in {took}", flush=True)
            trained += 1
        else:
            why = "error" if rc is None else f"exit {rc}" if rc else "no results.json"
            print(f"FAILED ({why}) after {took}: {last} [log: {run_dir / 'train.log'}]", flush=True)
            failed.append(r.name)
    print(f"sweep: {trained} trained, {skipped} skipped, {len(failed)} failed in "
          f"{fmt_time(time.perf_counter() - started)}", flush=True)
    return failed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Config keys and grid rules: see the docstring of scripts/sweep.py.")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="sweep YAML (default sweeps/default.yaml)")
    p.add_argument("--out", type=Path, default=Path("runs/sweep"), help="run directories and tables go here")
    p.add_argument("--seeds", type=int, nargs="+", help="replace the config's seed axis")
    p.add_argument("--dry_run", action="store_true", help="list the expanded grid and what would run; run nothing")
    p.add_argument("--collect_only", action="store_true", help="train nothing; tabulate the finished runs")
    p.add_argument("--rerun_stale", action="store_true",
                   help="retrain runs whose results were made with other settings than the config's")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="replace a config key (VALUE in YAML): seed=[0,1], train_flags.multimodal_steps=50")
    args = p.parse_args(argv)
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    out = args.out.resolve()
    try:
        sweep = load_config(args.config, args.seeds, args.overrides)
        runs = expand(sweep)
        expected = {r.name: expected_config(sweep, r, out / r.name) for r in runs}
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    states = {r.name: run_state(out / r.name, expected[r.name]) for r in runs}
    old = sorted(p.name for p in out.glob(f"*-{LEGACY_NOPRE}-*") if p.is_dir()) if out.is_dir() else []
    if old:
        print(f"sweep: {len(old)} run(s) in {out} named -{LEGACY_NOPRE}- ({old[0]}{', ...' if len(old) > 1 else ''}) "
              f"predate the matched/unmatched text_pretrain axis: they skipped stage 1 with nothing in its place "
              f"(unmatched) and are not used; rename them -{UNMATCHED}- to reuse them as that", flush=True)
    dedup = [mt for mt in sweep.axes["model_type"] if not has_contrastive_loss(mt)]
    print(f"sweep: {len(runs)} runs from {sweep.source}"
          + (f" ({', '.join(dedup)}: no contrastive loss, one run per condition, loss {NO_LOSS})" if dedup else "")
          + f" -> {out}", flush=True)

    if args.dry_run:
        for i, r in enumerate(runs, 1):
            state, why = states[r.name]
            note = {"done": "done, skipped", "stale": f"STALE ({why})", "todo": f"to run ({why})"}[state]
            world = ("" if r.word_budget is None or (sweep.run_data_dir(r) / "world.json").exists()
                     else f"; generates {sweep.run_data_dir(r)}")
            flags = sweep.argv(r, out / r.name, resume=why == RESUME)
            plan = sweep.text_plan(r) if r.text_pretrain != PRE else None
            text = f"; text: {plan.describe().split(' = ', 1)[1]}" if plan else ""
            print(f"[{i}/{len(runs)}] {r.name}: {note}{world}{text}\n    train.py {shlex.join(flags)}")
        counts = {s: sum(st == s for st, _ in states.values()) for s in ("done", "stale", "todo")}
        print(f"dry run: {len(runs)} runs in the grid; {counts['done']} done, {counts['todo']} to run, "
              f"{counts['stale']} stale")
        return 0

    failed: list[str] = []
    if not args.collect_only:
        # the training runs in a session of its own: a SIGTERM here must stop it too (see train_one)
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            failed = train_all(sweep, runs, states, out, args.rerun_stale)
        except KeyboardInterrupt:
            print("\nsweep: interrupted; the run in progress was stopped (it is retrained next time)",
                  file=sys.stderr)
            return 130
        finally:
            signal.signal(signal.SIGTERM, previous)
    if out.is_dir():
        written = collect(sweep, runs, out, expected)
        if written:
            print("sweep: wrote " + ", ".join(str(w) for w in written))
    if args.collect_only:
        missing = [r.name for r in runs if run_state(out / r.name, expected[r.name])[0] != "done"]
        if missing:
            print(f"sweep: {len(missing)} run(s) of the grid not collected (not finished, or stale): "
                  + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
    if failed:
        print(f"sweep: {len(failed)} run(s) failed or stale: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

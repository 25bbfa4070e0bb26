"""Train a babymm model: text-only pretraining, then curriculum multimodal training.

    accelerate launch babymm/train.py --curriculum length [--model_type git] [--preset small]
                                      [--config run.yaml] [flags]

Stage 1 (optional, `--text_pretrain_steps 0` skips it) trains the text decoder alone as a
causal LM. Stage 2 trains the whole model on caption batches in curriculum order with text
batches mixed in, on its type's task: for image-reading types, caption LM + text_weight *
text LM + the gap-closing contrastive loss (CLIP + uniformity + alignment; zero their
weights for plain CLIP); for `text`, the captions as plain text. The optimizer is rebuilt
between stages. The run directory ends up holding the model as a transformers checkpoint
(`babymm.models.save_model`: modeling code, weights, tokenizer and processor, what the official
BabyLM pipeline loads), `run_config.json`, the curriculum and word-count manifests,
`metrics.jsonl`, and, unless `--run_eval false`, `results.json`.

Nothing is lost to a kill: `checkpoints/step-N/` is written every `--checkpointing_steps` (and
at the end) and `--resume_from_checkpoint auto` goes on from the newest one, exactly (the same
losses as a run never stopped); the model is exported at each word milestone into
`milestones/chck_<words>/` (BabyLM 2025: 1M..10M, 20M..100M, ...). A resumed run never deletes
its directory and refuses a configuration other than the one it was started with.

This entry point wires the three parts together: data_prep makes the data, the babymm
library trains, eval scores.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, set_seed
from tqdm.auto import tqdm

from babymm.checkpoint import (
    CheckpointError,
    crossed,
    latest_checkpoint,
    load_checkpoint,
    load_task_state,
    parse_milestones,
    read_checkpoint_state,
    save_checkpoint,
    save_milestone,
    truncate_log,
)
from babymm.config import RunConfig, parse_config, resume_differences
from babymm.curriculum import CurriculumSpec, PacingSpec, load_curriculum, pacing_function
from babymm.data import CaptionData, TextBlocks
from babymm.environment import environment
from babymm.files import DataError, atomic_dir, read_json, write_json_atomic
from babymm.models import BabyModel, build_model, model_class, save_model
from babymm.models.saving import move_into
from babymm.models.vision import PIXEL_ENCODERS, VisionConfig
from babymm.speed import compile_blocks, measure_matmul_peak
from babymm.tasks import TextPretraining, ViewMaker, task_for, with_views
from babymm.tokenizer import load_tokenizer, word_starts
from babymm.training import (
    MetricsLog,
    NonFiniteError,
    TrainState,
    run_stage,
    step_loader,
    text_only,
    with_text,
)
from data_prep import budget as budget_stage
from data_prep.build_curriculum import build_curriculum
from data_prep.pipeline import Prepared, prepare
from eval.multimodal import TaskSkipped
from eval.probe import GapProbe

DEFAULT_MULTIMODAL_STEPS = 1000


def stage2_length(cfg: RunConfig, spec: CurriculumSpec) -> None:
    """Stage 2's steps: --multimodal_steps (default 1000), unless the curriculum sets them by
    epochs (`epochs_per_stage`), which is resolved once the data is known (`epoch_steps`). A run
    given both is refused: one of them would be ignored."""
    t, epochs = cfg.train, spec.pacing.epochs_per_stage
    if epochs is None:
        t.multimodal_steps = DEFAULT_MULTIMODAL_STEPS if t.multimodal_steps is None else t.multimodal_steps
    elif t.multimodal_steps is not None:
        raise ValueError(f"curriculum {spec.name!r} sets stage 2 to {epochs:g} epochs a stage (epochs_per_stage in "
                         "its spec), so --multimodal_steps would be ignored; drop it, or copy the spec without "
                         "epochs_per_stage and pass the copy's path to --curriculum")


def epoch_steps(manifest: dict, epochs: float, batch_size: int) -> int:
    """Steps for `epochs` passes over every stage's pool: stage k lasts in proportion to its pool,
    so this gives each stage the same number of epochs (the curriculum study: 2)."""
    return max(1, math.ceil(epochs * sum(manifest["stage_sizes"]) / batch_size))


def default_output_dir(cfg: RunConfig) -> Path:
    name = Path(cfg.data.curriculum).stem
    pre = "" if cfg.train.text_pretrain_steps > 0 else "-nopretrain"
    return Path("runs") / f"{cfg.model_type}-{name}{pre}-s{cfg.train.seed}"


def build(cfg: RunConfig, prepared: Prepared, tokenizer, captions: CaptionData) -> BabyModel:
    """The model of `cfg`'s type, its derived fields set from the tokenizer and the data."""
    m, d = cfg.model, cfg.data
    derived = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                   eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if isinstance(m, VisionConfig):
        wants = "features" if m.vision_encoder == "features" else "pixels"
        if captions.image_input != wants:
            fix = "features" if captions.image_input == "features" else f"one of {PIXEL_ENCODERS}"
            raise ValueError(f"data in {prepared.data_dir} has {captions.image_input} image input but "
                             f"--vision_encoder is {m.vision_encoder!r}; use {fix}")
        derived.update(image_size=d.image_size)
        if m.vision_model:  # which frozen encoder made the features: eval refuses another
            from babymm.frozen_vision import model_key

            derived.update(vision_model_key=model_key(m.vision_model, m.vision_pooling))
        if captions.image_input == "features":
            derived.update(feature_dim=captions.feature_dim, feature_tokens=captions.feature_tokens)
    model = build_model(m.resolve(**derived))
    longest = max(d.block_size, d.max_caption_tokens + model.prefix_tokens)
    if longest > m.max_positions:
        raise ValueError(f"sequences of {longest} tokens (block size, or caption plus {model.prefix_tokens} extra "
                         f"positions: image prefix or CLS) exceed --max_positions {m.max_positions}")
    return model


def whole_model(model: BabyModel, accelerator: Accelerator) -> BabyModel | None:
    """`model` with whole tensors, to export: itself, or under FSDP (its parameters sharded across
    the processes) a copy on the main process loaded from the gathered state dict, None on the
    others. Every process must call it: the gather is collective."""
    if accelerator.distributed_type != DistributedType.FSDP:
        return model
    state = accelerator.get_state_dict(model)
    if not accelerator.is_main_process:
        return None
    whole = build_model(model.config)
    shapes = {k: v.shape for k, v in whole.state_dict().items()}  # scalars, made [1] by `unscalar`
    whole.load_state_dict({k: v.reshape(shapes[k]) if k in shapes else v for k, v in state.items()})
    return whole


def unscalar(model: torch.nn.Module) -> None:
    """Make each 0-dim parameter (the logit scale, Flamingo's gates) [1], in place: FSDP2 shards
    no scalar. The model computes the same (they broadcast alike); `whole_model` exports them as
    they were, so saved models keep their shapes."""
    for p in model.parameters():
        if p.dim() == 0:
            p.data = p.data.reshape(1)


def resume_point(cfg: RunConfig, out: Path) -> tuple[bool, Path | None, dict | None]:
    """(resuming, checkpoint, its trainer state): whether this run goes on in `out` (never
    deleting it), and from which checkpoint (None: from step 0). Raises ValueError when it may
    not start at all."""
    t = cfg.train
    has_run = out.exists() and any(out.iterdir())
    if t.resume_from_checkpoint is None:
        if has_run and not t.overwrite_output_dir:
            raise ValueError(f"{out} already holds a run; pass --resume_from_checkpoint auto to go on with it, "
                             "--overwrite_output_dir true to replace it, or another --output_dir")
        return False, None, None
    if t.overwrite_output_dir:
        raise ValueError("--resume_from_checkpoint and --overwrite_output_dir true contradict each other; pass one")
    if t.resume_from_checkpoint == "auto":
        if not has_run:
            return False, None, None  # nothing to go on from: a new run
        ckpt = latest_checkpoint(out)
        saved = read_checkpoint_state(ckpt) if ckpt is not None else None
    else:
        ckpt = Path(t.resume_from_checkpoint)
        saved = read_checkpoint_state(ckpt)
        if ckpt.resolve().parent.parent != out.resolve():
            raise ValueError(f"{ckpt} is a checkpoint of {ckpt.resolve().parent.parent}, not of --output_dir {out}")
    saved_path = out / "run_config.json"
    if not saved_path.exists():
        raise ValueError(f"{out} holds no run_config.json: not a babymm run to resume; pass another --output_dir")
    started = json.loads(saved_path.read_text())
    now = json.loads(json.dumps(cfg.to_dict(), default=str))
    if now["train"]["multimodal_steps"] is None:  # set by the curriculum's epochs: checked once the data is known
        now["train"]["multimodal_steps"] = started["train"].get("multimodal_steps")
    diffs = resume_differences(started, now)
    if diffs:
        raise ValueError(f"{saved_path}: the run was started with another configuration ({'; '.join(diffs)}); "
                         "resume with the same flags or start a new --output_dir")
    return True, ckpt, saved


def gap_probe(cfg: RunConfig, data_dir: Path, model: BabyModel, tokenizer) -> GapProbe | None:
    """The held-out sample for `eval/gap/*` during training, or None with `--eval_steps 0`."""
    if cfg.train.eval_steps <= 0:
        return None
    pairs = data_dir / "eval" / "captions" / "heldout.jsonl"
    if not pairs.exists():
        raise FileNotFoundError(f"the gap metrics during training need held-out pairs in {pairs}")
    return GapProbe(model, tokenizer, pairs, cfg.train.eval_gap_pairs, cfg.train.eval_batch_size,
                    max_tokens=cfg.data.max_caption_tokens)


def set_threads(cfg: RunConfig, accelerator: Accelerator) -> None:
    """`accelerate launch` gives a CPU process one thread unless told otherwise; a lone CPU
    process should use every core, several share what their launcher gave them."""
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    elif accelerator.device.type == "cpu" and accelerator.num_processes == 1:
        torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())


def speed_setup(cfg: RunConfig, accelerator: Accelerator) -> dict:
    """TF32 on CUDA if asked, then this device's measured matmul peak in the training dtype (what
    `train/mfu` is measured against). Returns what environment.json records of both."""
    t, cuda = cfg.train, accelerator.device.type == "cuda"
    if cuda and t.tf32:
        torch.set_float32_matmul_precision("high")
    dtype = torch.bfloat16 if t.mixed_precision == "bf16" else torch.float32
    peak = measure_matmul_peak(accelerator.device, dtype, seconds=0.5 if cuda else 0.1)
    return {"tf32": cuda and t.tf32, "matmul_peak_dtype": str(dtype).removeprefix("torch."),
            "matmul_peak_tflops": float(f"{peak / 1e12:.4g}")}


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(argv)
    t = cfg.train
    try:
        spec = load_curriculum(cfg.data.curriculum)
        stage2_length(cfg, spec)
        if spec.scores_run_model and t.text_pretrain_steps == 0:
            raise ValueError(f"curriculum {spec.name!r} scores captions with the run's stage-1 text model "
                             "(scorer_args.model: stage1), and --text_pretrain_steps 0 trains none; pretrain, or "
                             "give the spec a model directory")
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if cfg.data.word_budget is not None and cfg.data.data_seed is None:
        cfg.data.data_seed = t.seed  # recorded as resolved in run_config.json
    if t.output_dir is None and t.resume_from_checkpoint not in (None, "auto"):
        t.output_dir = str(Path(t.resume_from_checkpoint).resolve().parent.parent)  # the run it belongs to
    out = Path(t.output_dir) if t.output_dir else default_output_dir(cfg)
    t.output_dir = str(out)
    # Accelerate treats torchrun's processes as MULTI_CPU (gloo) only when told it is on the CPU
    has_accelerator = torch.cuda.is_available() or torch.backends.mps.is_available()
    try:
        task = task_for(model_class(cfg.model_type))(cfg.loss)
    except ValueError:
        task = None  # cfg.problems says why, below
    # `accelerate launch --mixed_precision X` (or its config file) reaches here as an environment
    # variable that the Accelerator below would override with --mixed_precision: refuse a mismatch
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if launched != t.mixed_precision and launched != "no":
        print(f"error: accelerate launch asks for mixed precision {launched!r} but train.py's --mixed_precision is "
              f"{t.mixed_precision!r}; pass --mixed_precision {launched} to train.py (it is recorded in the run)",
              file=sys.stderr)
        return 2
    # a loss term switched off leaves parameters without gradient, which DDP must be told of
    ddp = DistributedDataParallelKwargs(find_unused_parameters=task is not None and task.leaves_parameters_unused)
    accelerator = Accelerator(cpu=t.use_cpu or not has_accelerator, mixed_precision=t.mixed_precision,
                              log_with=None if t.report_to == "none" else t.report_to, project_dir=str(out),
                              kwargs_handlers=[ddp])
    # every rank decides (before any rank writes), so none is left waiting for one that quit
    problems = cfg.problems(accelerator.num_processes)
    if accelerator.distributed_type == DistributedType.FSDP and not accelerator.is_fsdp2:
        problems.append("FSDP1 (fsdp_version 1) is not supported: its flattened parameters are not the ones the "
                        "optimizer was built on, and the model's own parameters cannot be read outside its forward "
                        "(the export, the logit-scale clamp); use fsdp_version: 2 (configs/accelerate/fsdp.yaml)")
    try:
        resuming, ckpt, saved = resume_point(cfg, out) if not problems else (False, None, None)
    except ValueError as e:
        problems.append(str(e))
    if problems:
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        return 2
    set_threads(cfg, accelerator)
    speed = speed_setup(cfg, accelerator)
    if accelerator.is_main_process:
        for note in cfg.warnings():
            print(f"note: {note}", file=sys.stderr)
        if not resuming:
            shutil.rmtree(out, ignore_errors=True)  # empty, or a run we were told to overwrite
            out.mkdir(parents=True)
        else:  # what was logged after the checkpoint is logged again
            truncate_log(out / "metrics.jsonl", saved["metrics_bytes"] if saved else 0)
            with (out / "resumed.jsonl").open("a") as f:
                f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "checkpoint": str(ckpt),
                                    "step": saved["train_state"]["step"] if saved else 0,
                                    "environment": {**environment(), **speed}}) + "\n")  # a resume may run elsewhere
            print(f"[train] resuming {out} from " + (f"{ckpt} (step {saved['train_state']['step']})" if saved
                  else "step 0: it holds no complete checkpoint"), flush=True)
    accelerator.wait_for_everyone()
    try:
        with accelerator.main_process_first():
            d = cfg.data
            prepared = prepare(d.data_dir, d.curriculum, word_budget=d.word_budget, text_fraction=d.text_fraction,
                               data_seed=d.data_seed or 0, seed=t.seed, image_size=d.image_size,
                               vocab_size=d.vocab_size, on_bad_record=d.on_bad_record, image_root=d.image_root,
                               vision_model=getattr(cfg.model, "vision_model", None),
                               vision_pooling=getattr(cfg.model, "vision_pooling", "cls"))
        check_budget(cfg, prepared)
        tokenizer = load_tokenizer(prepared.tokenizer)
        captions = CaptionData(prepared.ingest, tokenizer, cfg.data.max_caption_tokens,
                               with_images=task.reads_images, features_dir=prepared.features,
                               tokens_dir=prepared.tokens)
        captions.advise_random_reads()
        text = TextBlocks(prepared.tokens / "text.npy", cfg.data.block_size, word_starts(tokenizer))
        order = load_order(prepared) if prepared.curriculum is not None else None
        if order is not None and t.multimodal_steps is None:
            t.multimodal_steps = epoch_steps(read_json(prepared.curriculum / "manifest.json"),
                                             spec.pacing.epochs_per_stage, t.batch_size)
        elif t.multimodal_steps is None:
            raise ValueError(f"curriculum {spec.name!r} is built after stage 1 and cannot set stage 2 by epochs; "
                             "remove epochs_per_stage from its spec")
        started = read_json(out / "run_config.json")["train"]["multimodal_steps"] if resuming else None
        if resuming and t.multimodal_steps != started:
            raise ValueError(f"stage 2 now comes to {t.multimodal_steps} steps, the run was started with "
                             f"{started}; start a new --output_dir")
        check_data_fits(cfg, prepared, captions, text)
        set_seed(t.seed)
        model = build(cfg, prepared, tokenizer, captions)
        if accelerator.distributed_type == DistributedType.FSDP:
            unscalar(model)
        if t.compile:
            compile_blocks(model)
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        probe = gap_probe(cfg, prepared.data_dir, model, tokenizer)
    except (TaskSkipped, FileNotFoundError, ValueError) as e:
        print(f"error: --eval_steps {t.eval_steps}: {e}; provide them or pass --eval_steps 0", file=sys.stderr)
        return 2
    if probe is not None and accelerator.distributed_type == DistributedType.FSDP:
        gap = probe

        def probe(m: BabyModel) -> dict[str, float]:  # every process: the weights are gathered, the main one measures
            whole = whole_model(m, accelerator)
            return gap(whole.to(accelerator.device)) if whole is not None else {}
    if accelerator.is_main_process:
        if not resuming:
            write_json_atomic(out / "run_config.json", cfg.to_dict())
            # packages, torch's build, CPU/GPU, the matmul peak MFU is measured against
            write_json_atomic(out / "environment.json", {**environment(), **speed})
        # what it trained on: the data's ingest manifest (fingerprint, subset), how it was ordered, its words
        for name, src in (("data_manifest.json", prepared.ingest), ("curriculum_manifest.json", prepared.curriculum),
                          ("word_counts.json", prepared.words)):
            if src is not None:
                shutil.copy(src / "manifest.json", out / name)
        print(f"[train] {cfg.model_type} ({cfg.preset}): {model.num_parameters() / 1e6:.2f}M parameters, "
              f"{model.num_parameters(trainable_only=True) / 1e6:.2f}M trainable; {len(captions):,} captions, "
              f"{len(text):,} text blocks, curriculum {spec.name!r}, {accelerator.num_processes} process(es) x "
              f"{torch.get_num_threads()} threads on {accelerator.device} -> {out}")
    accelerator.init_trackers("babymm", config={f"{s}.{k}": v for s, d in cfg.to_dict().items()
                                                 for k, v in d.items() if v is not None})
    log = MetricsLog(out / "metrics.jsonl", accelerator)
    state = TrainState()
    text_order = np.arange(len(text))
    everything = pacing_function(PacingSpec())  # "none": all data from the first step
    milestones = parse_milestones(t.word_milestones)
    loading = {"num_workers": t.dataloader_num_workers, "pin_memory": t.dataloader_pin_memory}

    def text_batches(start: int):
        return text_only(step_loader(text, text_order, everything, t.text_pretrain_steps, t.text_batch_size,
                                     t.seed + 1, accelerator, start, **loading))

    def multimodal_batches(start: int):
        fractions = read_json(curriculum_dir / "manifest.json").get("stage_fractions")
        cap = step_loader(captions, order, pacing_function(spec.pacing, fractions), t.multimodal_steps, t.batch_size,
                          t.seed + 2, accelerator, start, **loading)
        cap = with_views(cap, ViewMaker.for_task(task, tokenizer, cfg.data.max_caption_tokens, t.seed + 4,
                                                 accelerator.process_index), start)
        if not task.uses_text:  # --text_weight 0: no text batch is read, and none of its words counted
            return cap
        txt = step_loader(text, text_order, everything, t.multimodal_steps, t.text_batch_size, t.seed + 3,
                          accelerator, start, **loading)
        return with_text(cap, txt)

    # only the decoder is prepared in stage 1, so DDP sees no unused vision parameters
    # under FSDP the whole model in both stages: FSDP2 fixes its root at the first forward, and a
    # decoder sharded as stage 1's root could not be sharded again inside the whole model for stage 2
    stage1 = model if accelerator.distributed_type == DistributedType.FSDP else model.decoder
    stages = [s for s in (("text", stage1, t.text_pretrain_steps, text_batches, TextPretraining(), None),
                          ("multimodal", model, t.multimodal_steps, multimodal_batches, task, probe)) if s[2] > 0]
    total_steps = sum(s[2] for s in stages)

    def export(whole: BabyModel, d: Path) -> None:
        save_model(whole, tokenizer, d)
        write_json_atomic(d / "run_config.json", cfg.to_dict())

    def end_of_step(st: TrainState, words_before: int) -> None:
        passed = crossed(milestones, words_before, st.words_seen)
        whole = whole_model(model, accelerator) if passed else None
        if passed and accelerator.is_main_process:
            for m in passed:
                path = save_milestone(out, m, lambda d: export(whole, d),
                                      {"words_seen": st.words_seen, "step": st.step, "stage": st.stage, **st.seen})
                tqdm.write(f"[train] {st.words_seen:,} words seen: exported {path}")
        if passed:
            accelerator.wait_for_everyone()
        if t.checkpointing_steps and (st.step % t.checkpointing_steps == 0 or st.step == total_steps):
            save_checkpoint(accelerator, out, st.step, {"train_state": st.state_dict(), "metrics_bytes": log.size()},
                            t.save_total_limit, tensors=task.state_dict() if st.stage == "multimodal" else None)

    first = [s[0] for s in stages].index(saved["train_state"]["stage"]) if saved else 0
    curriculum_dir = prepared.curriculum
    try:
        for i, (name, module, steps, batches, stage_task, stage_probe) in enumerate(stages):
            if i < first:
                continue
            if name == "multimodal" and order is None:  # scored by this run's stage-1 model
                curriculum_dir = curriculum_from_stage1(cfg, prepared, model, tokenizer, accelerator, out)
                order = load_order(prepared, curriculum_dir)

            def resume() -> None:
                state.load_state_dict(load_checkpoint(accelerator, ckpt)["train_state"])
                if state.stage == "multimodal":
                    try:
                        task.load_state_dict(load_task_state(ckpt))
                    except ValueError as e:
                        raise CheckpointError(f"{ckpt}: {e}") from None

            run_stage(state, name, accelerator, module, steps, batches, stage_task, t, log, probe=stage_probe,
                      resume=resume if saved and i == first else None, end_of_step=end_of_step,
                      peak_flops=speed["matmul_peak_tflops"] * 1e12)
    except (NonFiniteError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    accelerator.wait_for_everyone()
    whole = whole_model(model, accelerator)
    if accelerator.is_main_process:
        # the module itself (accelerate's wrapper only ever wraps it), each file renamed into place whole
        with tempfile.TemporaryDirectory(dir=out, prefix=".final-") as staged:
            save_model(whole, tokenizer, staged)
            move_into(staged, out)
        print(f"[train] {state.words_seen:,} words seen in {state.step} steps; saved model and tokenizer to {out}")
        if t.run_eval:
            from eval.run import evaluate_run

            evaluate_run(out, prepared.data_dir, batch_size=t.eval_batch_size)
    accelerator.end_training()
    return 0


def check_data_fits(cfg: RunConfig, prepared: Prepared, captions: CaptionData, text: TextBlocks) -> None:
    """A batch must fit in the data: a tiny --word_budget can leave fewer captions than one batch."""
    t, budget = cfg.train, cfg.data.word_budget
    why = f"at --word_budget {budget:,}" if budget else f"in {prepared.data_dir}"
    if t.multimodal_steps and len(captions) < t.batch_size:
        raise ValueError(f"{len(captions):,} captions {why}, fewer than one batch of --batch_size {t.batch_size}; "
                         "raise the budget or lower the batch size")
    reads_text = t.text_pretrain_steps > 0 or cfg.loss.text_weight > 0
    if reads_text and len(text) < t.text_batch_size:
        raise ValueError(f"{len(text):,} text blocks of {cfg.data.block_size} tokens {why}, fewer than one batch of "
                         f"--text_batch_size {t.text_batch_size}; raise the budget or lower the batch size")


def check_budget(cfg: RunConfig, prepared: Prepared) -> None:
    """The prepared data is the draw this run asked for: its budget report names the same budget,
    split and seed (a run never trains on another budget's data under its own label)."""
    d = cfg.data
    if d.word_budget is None:
        if prepared.subset is not None:
            raise DataError(f"{prepared.ingest}: a budgeted subset, but the run names no --word_budget")
        return
    report = budget_stage.read_report(prepared.data_dir, prepared.subset)
    asked = (d.word_budget, d.text_fraction, d.data_seed)
    got = (report["word_budget"], report["text_fraction"], report["seed"] if report["sampled"] else d.data_seed)
    if asked != got:
        raise DataError(f"{prepared.ingest}: prepared for budget, text fraction, seed {got}, not {asked}; "
                        "re-run data prep (python -m data_prep.budget --overwrite)")


def curriculum_from_stage1(cfg: RunConfig, prepared: Prepared, model: BabyModel, tokenizer, accelerator: Accelerator,
                           out: Path) -> Path:
    """Score the captions with this run's stage-1 text model and order them: the model is exported
    to OUT/stage1 (a causal LM directory) and the order written to OUT/curriculum (it belongs to
    the run, not to the data). A resumed run finds both up to date."""
    target = out / "curriculum"
    whole = whole_model(model, accelerator)
    if accelerator.is_main_process:
        stage1 = out / "stage1"
        if not (stage1 / "config.json").exists():
            with atomic_dir(stage1) as staged:
                whole.decoder.save_pretrained(staged)
                tokenizer.save_pretrained(staged)
        build_curriculum(prepared.data_dir, cfg.data.curriculum, seed=cfg.train.seed, subset=prepared.subset,
                         scorer_args={"model": str(stage1.resolve())}, out=target)
        shutil.copy(target / "manifest.json", out / "curriculum_manifest.json")
    accelerator.wait_for_everyone()
    return target


def load_order(prepared: Prepared, curriculum: Path | None = None) -> np.ndarray:
    """The curriculum's caption order, refused unless it was built from these very captions."""
    curriculum = curriculum or prepared.curriculum
    manifest = json.loads((curriculum / "manifest.json").read_text())
    ingested = json.loads((prepared.ingest / "manifest.json").read_text())
    order = np.load(curriculum / "order.npy")
    if manifest.get("data_fingerprint") != ingested["fingerprint"]:
        raise DataError(f"{curriculum}: built for other data (fingerprint {manifest.get('data_fingerprint')}, "
                        f"the ingested data's is {ingested['fingerprint']}); rebuild it: python -m "
                        f"data_prep.build_curriculum --data_dir {prepared.data_dir} --overwrite")
    if len(order) != ingested["captions"] or not np.array_equal(np.sort(order), np.arange(len(order))):
        raise DataError(f"{curriculum / 'order.npy'}: not a permutation of the {ingested['captions']:,} "
                        "captions; rebuild it with --overwrite")
    return order


if __name__ == "__main__":
    sys.exit(main())

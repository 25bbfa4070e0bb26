"""Train a babymm model: text-only pretraining, then curriculum multimodal training.

    accelerate launch babymm/train.py --curriculum length [--model_type git] [--preset small]
                                      [--config run.yaml] [flags]

Stage 1 (optional, `--text_pretrain_steps 0` skips it) trains the text decoder alone as a
causal LM. Stage 2 trains the whole model on caption batches in curriculum order with text
batches mixed in, on its type's task: for image-reading types, caption LM + text_weight *
text LM + the gap-closing contrastive loss (CLIP + uniformity + alignment; zero their
weights for plain CLIP); for `text`, the captions as plain text. The optimizer is rebuilt
between stages. The run directory ends up holding the model (`save_pretrained`,
safetensors), the tokenizer, `run_config.json`, the curriculum and word-count manifests,
`metrics.jsonl`, and, unless `--run_eval false`, `results.json`.

This entry point wires the three parts together: data_prep makes the data, the babymm
library trains, eval scores.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from babymm.config import RunConfig, parse_config
from babymm.curriculum import PacingSpec, load_curriculum, pacing_function
from babymm.data import CaptionData, TextBlocks
from babymm.files import DataError, write_json_atomic
from babymm.models import BabyModel, build_model, model_class
from babymm.tasks import TextPretraining, task_for
from babymm.tokenizer import load_tokenizer
from babymm.training import MetricsLog, TrainState, run_stage, step_loader, text_only, with_text
from babymm.vision import PIXEL_ENCODERS, VisionConfig
from data_prep.pipeline import Prepared, prepare
from eval.multimodal import TaskSkipped
from eval.probe import GapProbe


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
        if captions.image_input == "features":
            derived.update(feature_dim=captions.feature_dim, feature_tokens=captions.feature_tokens)
    model = build_model(m.resolve(**derived))
    longest = max(d.block_size, d.max_caption_tokens + model.prefix_tokens)
    if longest > m.max_positions:
        raise ValueError(f"sequences of {longest} tokens (block size, or caption plus {model.prefix_tokens} image "
                         f"tokens) exceed --max_positions {m.max_positions}")
    return model


def gap_probe(cfg: RunConfig, data_dir: Path, model: BabyModel, tokenizer) -> GapProbe | None:
    """The held-out sample for `eval/gap/*` during training, or None with `--eval_steps 0`."""
    if cfg.train.eval_steps <= 0:
        return None
    pairs = data_dir / "eval" / "captions" / "heldout.jsonl"
    if not pairs.exists():
        raise FileNotFoundError(f"the gap metrics during training need held-out pairs in {pairs}")
    return GapProbe(model, tokenizer, pairs, cfg.train.eval_gap_pairs, cfg.train.eval_batch_size)


def set_threads(cfg: RunConfig, accelerator: Accelerator) -> None:
    """`accelerate launch` gives a CPU process one thread unless told otherwise; a lone CPU
    process should use every core, several share what their launcher gave them."""
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    elif accelerator.device.type == "cpu" and accelerator.num_processes == 1:
        torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(argv)
    try:
        spec = load_curriculum(cfg.data.curriculum)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(cfg.train.output_dir) if cfg.train.output_dir else default_output_dir(cfg)
    cfg.train.output_dir = str(out)
    # every rank decides (before any rank writes), so none is left waiting for one that quit
    if out.exists() and any(out.iterdir()) and not cfg.train.overwrite_output_dir:
        print(f"error: {out} already holds a run; pass --overwrite_output_dir true or another "
              "--output_dir", file=sys.stderr)
        return 2
    # Accelerate treats torchrun's processes as MULTI_CPU (gloo) only when told it is on the CPU
    has_accelerator = torch.cuda.is_available() or torch.backends.mps.is_available()
    accelerator = Accelerator(cpu=cfg.train.use_cpu or not has_accelerator,
                              mixed_precision=cfg.train.mixed_precision,
                              log_with=None if cfg.train.report_to == "none" else cfg.train.report_to,
                              project_dir=str(out))
    set_threads(cfg, accelerator)
    if accelerator.is_main_process:
        shutil.rmtree(out, ignore_errors=True)  # empty, or a run we were told to overwrite
        out.mkdir(parents=True)
    accelerator.wait_for_everyone()
    task = task_for(model_class(cfg.model_type))(cfg.loss)
    try:
        with accelerator.main_process_first():
            prepared = prepare(cfg.data.data_dir, cfg.data.curriculum, word_budget=cfg.data.word_budget,
                               image_size=cfg.data.image_size, vocab_size=cfg.data.vocab_size)
        tokenizer = load_tokenizer(prepared.tokenizer)
        captions = CaptionData(prepared.ingest, tokenizer, cfg.data.max_caption_tokens,
                               with_images=task.reads_images)
        text = TextBlocks(prepared.tokens / "text.npy", cfg.data.block_size)
        set_seed(cfg.train.seed)
        model = build(cfg, prepared, tokenizer, captions)
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        probe = gap_probe(cfg, prepared.data_dir, model, tokenizer)
    except (TaskSkipped, FileNotFoundError, ValueError) as e:
        print(f"error: --eval_steps {cfg.train.eval_steps}: {e}; provide them or pass --eval_steps 0",
              file=sys.stderr)
        return 2
    if accelerator.is_main_process:
        write_json_atomic(out / "run_config.json", cfg.to_dict())
        for name, src in (("curriculum_manifest.json", prepared.curriculum),
                          ("word_counts.json", prepared.data_dir / "prepared" / "words")):
            shutil.copy(src / "manifest.json", out / name)
        print(f"[train] {cfg.model_type} ({cfg.preset}): {model.num_parameters() / 1e6:.2f}M parameters, "
              f"{model.num_parameters(trainable_only=True) / 1e6:.2f}M trainable; {len(captions):,} captions, "
              f"{len(text):,} text blocks, curriculum {spec.name!r}, {accelerator.num_processes} process(es) x "
              f"{torch.get_num_threads()} threads on {accelerator.device} -> {out}")
    accelerator.init_trackers("babymm", config={f"{s}.{k}": v for s, d in cfg.to_dict().items()
                                                 for k, v in d.items() if v is not None})
    log = MetricsLog(out / "metrics.jsonl", accelerator)
    t = cfg.train
    state = TrainState()
    text_order = np.arange(len(text))
    everything = pacing_function(PacingSpec())  # "none": all data from the first step
    if t.text_pretrain_steps > 0:
        # only the decoder is prepared, so DDP sees no unused vision parameters
        batches = step_loader(text, text_order, everything, t.text_pretrain_steps, t.text_batch_size,
                              t.seed + 1, accelerator)
        run_stage(state, "text", accelerator, model.decoder, t.text_pretrain_steps, text_only(batches),
                  TextPretraining(), t, log)

    order = np.load(prepared.curriculum / "order.npy")
    cap_batches = step_loader(captions, order, pacing_function(spec.pacing), t.multimodal_steps,
                              t.batch_size, t.seed + 2, accelerator)
    text_batches = step_loader(text, text_order, everything, t.multimodal_steps, t.text_batch_size,
                               t.seed + 3, accelerator)
    run_stage(state, "multimodal", accelerator, model, t.multimodal_steps, with_text(cap_batches, text_batches),
              task, t, log, probe=probe)

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        model.save_pretrained(out)  # the module itself: accelerate's wrapper only ever wraps it
        tokenizer.save_pretrained(out)
        print(f"[train] saved model and tokenizer to {out}")
        if t.run_eval:
            from eval.run import evaluate_run

            evaluate_run(out, prepared.data_dir, batch_size=t.eval_batch_size)
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())

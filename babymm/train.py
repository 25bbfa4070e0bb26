"""Train a babymm model: text-only pretraining, then curriculum multimodal training.

    accelerate launch babymm/train.py --curriculum length [--config run.yaml] [flags]

Stage 1 (optional, `--text_pretrain_steps 0` skips it) trains the text decoder alone as a
causal LM. Stage 2 trains the whole model on image-caption batches in curriculum order,
with loss = caption LM + text_weight * text LM (text batches keep mixing in) + the
gap-closing contrastive loss (CLIP + uniformity + alignment; zero their weights for plain
CLIP). The optimizer is rebuilt between stages. The run directory ends up holding the
model (`save_pretrained`, safetensors), the tokenizer, `run_config.json`, the curriculum
and word-count manifests, `metrics.jsonl`, and, unless `--run_eval false`, `results.json`.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # run as a script: keep babymm/*.py from shadowing top-level modules

import json
import math
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from babymm.config import RunConfig, parse_config
from babymm.curriculum import PacingSpec, StepBatchSampler, load_curriculum, pacing_function
from babymm.data import CaptionData, TextBlocks, identity_collate
from babymm.losses import ContrastiveLoss, LossWeights
from babymm.models import MultimodalConfig, MultimodalModel, build_model
from babymm.models.base import MAX_LOGIT_SCALE, lm_loss
from babymm.optim import build_optimizer, build_scheduler
from babymm.vision import VisionConfig
from data_prep.pipeline import Prepared, prepare
from data_prep.stage import DataError, write_json_atomic
from data_prep.train_tokenizer import load_tokenizer
from eval.multimodal import TaskSkipped
from eval.probe import GapProbe

Batch = dict[str, torch.Tensor]
StepFn = Callable[[torch.nn.Module, Batch], dict[str, torch.Tensor]]


class MetricsLog:
    """Appends metric dicts as JSON lines (main process) and forwards them to trackers."""

    def __init__(self, path: Path, accelerator: Accelerator):
        self.path, self.accelerator = path, accelerator

    def __call__(self, metrics: dict[str, float], step: int) -> None:
        if self.accelerator.is_main_process:
            with self.path.open("a") as f:
                f.write(json.dumps({"step": step, **metrics}) + "\n")
        self.accelerator.log(metrics, step=step)


def default_output_dir(cfg: RunConfig) -> Path:
    name = Path(cfg.data.curriculum).stem
    pre = "" if cfg.train.text_pretrain_steps > 0 else "-nopretrain"
    return Path("runs") / f"{cfg.model.model_type}-{name}{pre}-s{cfg.train.seed}"


def loader(dataset: torch.utils.data.Dataset, order: np.ndarray, pacing: Callable[[float], float],
           num_steps: int, global_batch: int, seed: int, accelerator: Accelerator) -> DataLoader:
    n = accelerator.num_processes
    if global_batch % n:
        raise ValueError(f"batch size {global_batch} is not divisible by {n} processes")
    sampler = StepBatchSampler(order, pacing, num_steps, global_batch // n, seed,
                               rank=accelerator.process_index, world_size=n)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=identity_collate)


def run_stage(stage: str, accelerator: Accelerator, module: torch.nn.Module, num_steps: int,
              batches: Iterable[Batch], step_fn: StepFn, cfg: RunConfig, log: MetricsLog,
              step_offset: int, after_step: Callable[[], None] | None = None,
              probe: Callable[[torch.nn.Module], dict[str, float]] | None = None) -> int:
    """One training stage with a fresh optimizer; returns the global step reached. `probe`
    (main process, no gradient) is logged before the first step, every `eval_steps` and
    after the last."""
    t = cfg.train

    def measure(done: int) -> None:
        if probe is not None and accelerator.is_main_process:
            log(probe(module), step_offset + done)

    optimizer = build_optimizer(module, t.learning_rate, t.weight_decay)
    warmup = min(t.warmup_steps, num_steps // 10 + 1)  # a short stage still spends most steps at full lr
    scheduler = build_scheduler(optimizer, warmup, num_steps, t.lr_schedule)
    wrapped, optimizer = accelerator.prepare(module, optimizer)
    sums: dict[str, float] = defaultdict(float)
    seen = {"caption_words": 0.0, "text_tokens": 0.0}
    started, count = time.perf_counter(), 0
    bar = tqdm(total=num_steps, desc=stage, disable=not accelerator.is_local_main_process, dynamic_ncols=True)
    measure(0)
    for step, batch in enumerate(batches):
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        losses = step_fn(wrapped, batch)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{stage} step {step}: non-finite loss {({k: v.item() for k, v in losses.items()})}")
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        grad_norm = accelerator.clip_grad_norm_(wrapped.parameters(), t.max_grad_norm)
        optimizer.step()
        scheduler.step()
        if after_step is not None:
            after_step()
        for k, v in losses.items():
            sums[k] += v.detach().item()
        sums["loss"] += loss.detach().item()
        sums["grad_norm"] += float(grad_norm)
        count += 1
        seen["caption_words"] += float(batch["num_words"].sum()) if "num_words" in batch else 0.0
        seen["text_tokens"] += float(batch["text_input_ids"].numel()) if "text_input_ids" in batch else 0.0
        bar.update(1)
        if (step + 1) % t.logging_steps == 0 or step + 1 == num_steps:
            means = accelerator.reduce(torch.tensor([v / count for v in sums.values()],
                                                    device=accelerator.device), reduction="mean")
            totals = accelerator.reduce(torch.tensor(list(seen.values()), device=accelerator.device,
                                                     dtype=torch.float64), reduction="sum")
            metrics = {f"train/{k}": round(float(v), 5) for k, v in zip(sums, means.tolist(), strict=True)}
            metrics.update({f"train/{k}_seen": int(v) for k, v in zip(seen, totals.tolist(), strict=True)})
            metrics.update({"train/stage": stage, "train/lr": scheduler.get_last_lr()[0],
                            "train/steps_per_s": round(count / (time.perf_counter() - started), 3)})
            if hasattr(accelerator.unwrap_model(wrapped), "logit_scale"):
                metrics["train/logit_scale"] = round(accelerator.unwrap_model(wrapped).logit_scale.item(), 3)
            log(metrics, step_offset + step + 1)
            bar.set_postfix(loss=f"{metrics['train/loss']:.3f}")
            sums.clear()
            started, count = time.perf_counter(), 0
        if t.eval_steps and ((step + 1) % t.eval_steps == 0 or step + 1 == num_steps):
            measure(step + 1)
    bar.close()
    return step_offset + num_steps


def text_step(decoder: torch.nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
    ids, mask = batch["text_input_ids"], batch["text_attention_mask"]
    return {"text_loss": lm_loss(decoder(input_ids=ids, attention_mask=mask).logits, ids, mask)}


def multimodal_step(cfg: RunConfig, contrastive: ContrastiveLoss) -> StepFn:
    lw = cfg.loss

    def step(model: torch.nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        out = model(batch["images"], batch["input_ids"], batch["attention_mask"],
                    batch["text_input_ids"], batch["text_attention_mask"])
        scale = (model.module if hasattr(model, "module") else model).logit_scale
        losses = {"caption_loss": lw.caption_weight * out["caption_loss"],
                  "text_loss": lw.text_weight * out["text_loss"]}
        losses.update(contrastive(out["image_embeds"].float(), out["text_embeds"].float(), scale))
        return losses

    return step


def zip_batches(captions: Iterable[Batch], text: Iterable[Batch]) -> Iterable[Batch]:
    for cap, txt in zip(captions, text, strict=True):
        yield {**cap, "text_input_ids": txt["input_ids"], "text_attention_mask": txt["attention_mask"]}


def renamed_text(batches: Iterable[Batch]) -> Iterable[Batch]:
    for b in batches:
        yield {"text_input_ids": b["input_ids"], "text_attention_mask": b["attention_mask"]}


def build(cfg: RunConfig, prepared: Prepared, tokenizer, captions: CaptionData) -> MultimodalModel:
    m = cfg.model
    vision = VisionConfig(kind=m.vision_encoder, width=m.vision_width, image_size=cfg.data.image_size,
                          feature_dim=captions.feature_dim or 768)
    if (captions.image_input == "features") != (m.vision_encoder == "features"):
        raise ValueError(f"data in {prepared.data_dir} has {captions.image_input} image input but "
                         f"--vision_encoder is {m.vision_encoder!r}; use "
                         f"{'features' if captions.image_input == 'features' else 'conv'}")
    config = MultimodalConfig(
        model_type=m.model_type, vocab_size=len(tokenizer), hidden_size=m.hidden_size,
        num_layers=m.num_layers, num_heads=m.num_heads, intermediate_size=m.intermediate_size,
        max_positions=max(256, cfg.data.block_size, cfg.data.max_caption_tokens + 64),
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, embed_dim=m.embed_dim,
        temperature=cfg.loss.temperature, learn_temperature=cfg.loss.learn_temperature, vision=vision,
    )
    return build_model(config)


def gap_probe(cfg: RunConfig, data_dir: Path, model: MultimodalModel, tokenizer) -> GapProbe | None:
    """The held-out sample for `eval/gap/*` during training, or None with `--eval_steps 0`."""
    if cfg.train.eval_steps <= 0:
        return None
    pairs = data_dir / "eval" / "captions" / "heldout.jsonl"
    if not pairs.exists():
        raise FileNotFoundError(f"the gap metrics during training need held-out pairs in {pairs}")
    return GapProbe(model, tokenizer, pairs, cfg.train.eval_gap_pairs, cfg.train.eval_batch_size)


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
    if accelerator.is_main_process:
        shutil.rmtree(out, ignore_errors=True)  # empty, or a run we were told to overwrite
        out.mkdir(parents=True)
    accelerator.wait_for_everyone()
    try:
        with accelerator.main_process_first():
            prepared = prepare(cfg.data.data_dir, cfg.data.curriculum, word_budget=cfg.data.word_budget,
                               image_size=cfg.data.image_size, vocab_size=cfg.data.vocab_size)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    tokenizer = load_tokenizer(prepared.tokenizer)
    captions = CaptionData(prepared.ingest, tokenizer, cfg.data.max_caption_tokens)
    text = TextBlocks(prepared.tokens / "text.npy", cfg.data.block_size)
    set_seed(cfg.train.seed)
    model = build(cfg, prepared, tokenizer, captions)
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
        n_params = sum(p.numel() for p in model.parameters())
        print(f"[train] {cfg.model.model_type}: {n_params / 1e6:.2f}M parameters, "
              f"{len(captions):,} captions, {len(text):,} text blocks, curriculum {spec.name!r}, "
              f"{accelerator.num_processes} process(es) x {torch.get_num_threads()} threads on "
              f"{accelerator.device} -> {out}")
    accelerator.init_trackers("babymm", config={f"{s}.{k}": v for s, d in cfg.to_dict().items()
                                                 for k, v in d.items() if v is not None})
    log = MetricsLog(out / "metrics.jsonl", accelerator)
    t = cfg.train
    text_order = np.arange(len(text))
    everything = pacing_function(PacingSpec())  # "none": all data from the first step
    step = 0
    if t.text_pretrain_steps > 0:
        # only the decoder is prepared, so DDP sees no unused vision parameters
        text_batches = loader(text, text_order, everything, t.text_pretrain_steps, t.text_batch_size,
                              t.seed + 1, accelerator)
        step = run_stage("text", accelerator, model.decoder, t.text_pretrain_steps,
                         renamed_text(text_batches), text_step, cfg, log, step)

    order = np.load(prepared.curriculum / "order.npy")
    cap_batches = loader(captions, order, pacing_function(spec.pacing), t.multimodal_steps,
                         t.batch_size, t.seed + 2, accelerator)
    text_batches = loader(text, text_order, everything, t.multimodal_steps, t.text_batch_size,
                          t.seed + 3, accelerator)
    contrastive = ContrastiveLoss(LossWeights(cfg.loss.clip_weight, cfg.loss.uniform_weight,
                                              cfg.loss.align_weight, cfg.loss.xuniform_weight))

    def clamp_logit_scale() -> None:
        with torch.no_grad():
            model.log_logit_scale.clamp_(0.0, math.log(MAX_LOGIT_SCALE))

    step = run_stage("multimodal", accelerator, model, t.multimodal_steps,
                     zip_batches(cap_batches, text_batches), multimodal_step(cfg, contrastive),
                     cfg, log, step, after_step=clamp_logit_scale, probe=probe)

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.save_pretrained(out)
        tokenizer.save_pretrained(out)
        print(f"[train] saved model and tokenizer to {out}")
        if t.run_eval:
            from eval.run import evaluate_run

            evaluate_run(out, prepared.data_dir, batch_size=t.eval_batch_size)
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GPU-hours for one base-preset run and for the default study grid, at 10M and 100M words.

    python benchmarks/compute_plan.py [--throughput results/gpu/throughput_cuda.json] [--mfu 0.40 0.15]
        [--peak_tflops 989] [--out results/compute_plan.md]

A run is the 2024 baselines' recipe (`configs/baseline2024_git.yaml`: 12 x 768, vocabulary
32,768, batch 128 image-caption pairs + 128 text blocks of 128 tokens, caption loss + 0.25 text
loss, no contrastive term) on the BabyLM multimodal corpus scaled to the budget: half the words
text, half captions, the real corpus's 2.9M captions per 50M caption words (17.2 words each),
captions cut at 128 tokens as the recipe does and padded to `--caption_tokens` (94: the mean
padded width of a batch of 128 that benchmarks/data_loading.py measured on the real-layout
corpus, where the longest caption of a batch sets it; the mean caption is ~23 tokens), text at
`--tokens_per_word` tokens a word, one image token (the global DINOv2 vector). Stage 1 trains on text blocks only; stage 2
on caption batches with a text batch mixed into each step.

Step time: measured on a GPU when `--throughput` names `benchmarks/train_throughput.py`'s JSON
from a CUDA device at the base preset (its best setting per type); otherwise the step's model
FLOPs (babymm.speed: the passes the task really runs, nanoGPT's count) at each `--mfu` of
`--peak_tflops` (989: H100 SXM bf16 dense; 40% is babymm's goal, 15% what its first version
measured). Schedules, by words seen (text + captions, as BabyLM counts them): as many as the
budget; the BabyLM 2025 cap of 10 x the budget (1B words at 100M); and the curriculum study's
epochs (20 text epochs of stage 1, then 8 caption epochs, each step with its text batch: far
past the cap, shown for scale). The default study grid is
`sweeps/default.yaml`'s design: 4 model types x 2 curricula x 3 seeds = 24 runs (6 per type).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from babymm.files import write_text_atomic  # noqa: E402
from babymm.speed import DecoderPass, decoder_shape, step_flops  # noqa: E402
from babymm.tasks import task_for  # noqa: E402
from benchmarks.train_throughput import preset_model  # noqa: E402

TYPES = ["git", "flamingo", "coca", "text"]
CAPTIONS_PER_CAPTION_WORD = 2.9e6 / 50e6  # the real corpus: 2.9M captions, 50M caption words
BATCH, TEXT_BATCH, BLOCK = 128, 128, 128
RUNS_PER_TYPE = 2 * 3  # curricula x seeds in sweeps/default.yaml


def recipe_flops(model_type: str, caption_tokens: int) -> tuple[float, float, int]:
    """Model FLOPs of a stage-1 step and a stage-2 step of the 2024 recipe, and the parameters."""
    cfg, model = preset_model(model_type, "base", 32, "features", 1)
    task = task_for(type(model))(task_for(type(model)).Arguments(
        **({"clip_weight": 0, "uniform_weight": 0, "align_weight": 0} if model.has_vision else {})))
    shape = decoder_shape(model)
    batch = {"input_ids": _shape(BATCH, caption_tokens), "text_input_ids": _shape(TEXT_BATCH, BLOCK)}
    stage2 = step_flops(shape, task.decoder_passes(model, batch))
    stage1 = step_flops(decoder_shape(model.decoder), [DecoderPass(TEXT_BATCH, BLOCK)])
    return stage1, stage2, model.num_parameters()


class _shape:
    """Just the `.shape` the tasks' `decoder_passes` read."""

    def __init__(self, *shape: int):
        self.shape = shape


def schedules(budget: float, tokens_per_word: float) -> dict[str, tuple[int, int]]:
    """(stage-1 steps, stage-2 steps) per schedule for a corpus of `budget` words. A stage-2 step
    of the recipe reads 128 captions (17.2 words each) and 128 text blocks (128 / tokens_per_word
    words each): the text batch is most of the words seen."""
    words_per_step = BATCH / CAPTIONS_PER_CAPTION_WORD + TEXT_BATCH * BLOCK / tokens_per_word
    caption_epoch = math.ceil(budget / 2 * CAPTIONS_PER_CAPTION_WORD / BATCH)
    text_epoch = math.ceil(budget / 2 * tokens_per_word / BLOCK / TEXT_BATCH)
    return {"words seen = budget": (0, math.ceil(budget / words_per_step)),
            "words seen = 10 x budget (2025 cap)": (0, math.ceil(10 * budget / words_per_step)),
            "20 text + 8 caption epochs (curriculum study; past the cap)": (20 * text_epoch, 8 * caption_epoch)}


def measured_step_ms(path: Path | None) -> dict[str, float]:
    """Per type, the fastest base-preset CUDA step in a train_throughput JSON (empty if none)."""
    if path is None or not path.is_file():
        return {}
    rows = [r for r in json.loads(path.read_text()) if r.get("device") == "cuda" and r.get("preset") == "base"]
    return {t: min(r["step_ms"] for r in rows if r["type"] == t) for t in TYPES if any(r["type"] == t for r in rows)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--throughput", type=Path, default=Path("results/gpu/throughput_cuda.json"))
    p.add_argument("--mfu", type=float, nargs="+", default=[0.40, 0.15])
    p.add_argument("--peak_tflops", type=float, default=989.0)
    p.add_argument("--caption_tokens", type=int, default=94)
    p.add_argument("--tokens_per_word", type=float, default=1.3)
    p.add_argument("--budgets", type=float, nargs="+", default=[10e6, 100e6])
    p.add_argument("--out", type=Path, default=Path("results/compute_plan.md"))
    args = p.parse_args(argv)
    measured = measured_step_ms(args.throughput)
    rows = []
    for t in TYPES:
        stage1, stage2, params = recipe_flops(t, args.caption_tokens)
        sources = {f"{m:.0%} MFU": (stage1 / (m * args.peak_tflops * 1e12), stage2 / (m * args.peak_tflops * 1e12))
                   for m in args.mfu}
        if t in measured:  # the stage-1 step scaled by FLOPs from the measured stage-2 step
            s2 = measured[t] / 1000
            sources = {"measured": (s2 * stage1 / stage2, s2), **sources}
        for budget in args.budgets:
            for name, (s1_steps, s2_steps) in schedules(budget, args.tokens_per_word).items():
                row = {"type": t, "params_M": round(params / 1e6, 1), "words": f"{budget / 1e6:g}M",
                       "schedule": name, "steps": s1_steps + s2_steps,
                       "stage2_TFLOP_per_step": round(stage2 / 1e12, 2)}
                for src, (t1, t2) in sources.items():
                    hours = (s1_steps * t1 + s2_steps * t2) / 3600
                    row[f"run GPU-h ({src})"] = round(hours, 2)
                    row[f"grid GPU-h ({src})"] = round(hours * RUNS_PER_TYPE, 2)
                rows.append(row)
    table = pd.DataFrame(rows)
    totals = table.groupby(["words", "schedule"], sort=False)[[c for c in table if c.startswith("grid")]].sum()
    source = (f"step times measured ({args.throughput})" if measured else
              f"no GPU measurement ({args.throughput} absent): step times from the model FLOPs at "
              f"{', '.join(f'{m:.0%}' for m in args.mfu)} MFU of {args.peak_tflops:g} TFLOP/s")
    text = (f"# Compute plan\n\n`python {' '.join(sys.argv)}`\n\n{source}; grid = {RUNS_PER_TYPE} runs per type "
            f"(2 curricula x 3 seeds), 4 types.\n\n{table.to_markdown(index=False)}\n\n"
            f"## The whole default grid (24 runs)\n\n{totals.round(1).to_markdown()}\n")
    print(text)
    write_text_atomic(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

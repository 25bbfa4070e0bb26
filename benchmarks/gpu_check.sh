#!/usr/bin/env bash
# The one GPU session's script (issue 16): under 10 minutes on one H100/H200, run from the
# repository root with the project installed. Writes into $OUT (the device tool's output folder)
# or results/gpu/, then `git add` those files under results/:
#   1. the step of each type at the base preset on the corpus's input (global 768-d features),
#      batch 128 pairs + 128 text blocks of 128 tokens: fp32, bf16, and bf16 + --compile, with MFU
#      against the measured matmul peak (benchmarks/train_throughput.py);
#   2. the reference comparison (benchmarks/reference.py --device cuda --preset base);
#   3. 50 steps of a base-preset run on world-format data (train.py, bf16), its metrics.jsonl
#      (train/mfu, train/tokens_per_s) kept;
#   4. the compute plan from the measured step times (benchmarks/compute_plan.py).
# Each part has its own time limit (270 + 120 + 180 s), so one that overruns leaves the others' output.
# The run in 3. generates and prepares the built-in world first (about a minute of CPU).
set -u
OUT_DIR=${OUT:-results/gpu}
mkdir -p "$OUT_DIR"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi > "$OUT_DIR/nvidia_smi.txt" 2>&1
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" > "$OUT_DIR/torch.txt" 2>&1

timeout 270 python benchmarks/train_throughput.py --device cuda --presets base --types git flamingo coca text \
    --precision fp32 bf16 --compile --vision_encoder features --batch 128 --text_batch 128 --block_size 128 \
    --caption_tokens 94 --steps 20 --warmup 5 --out "$OUT_DIR/throughput_cuda.md" > "$OUT_DIR/throughput.log" 2>&1

timeout 120 python benchmarks/reference.py --device cuda --preset base --out_dir "$OUT_DIR" \
    > "$OUT_DIR/reference.log" 2>&1

timeout 180 python babymm/train.py --model_type git --preset base --vocab_size 8192 --mixed_precision bf16 \
    --text_pretrain_steps 0 --multimodal_steps 50 --batch_size 128 --text_batch_size 128 --block_size 128 \
    --logging_steps 10 --eval_steps 0 --run_eval false --word_milestones none --checkpointing_steps 0 \
    --output_dir /tmp/gpu_run > "$OUT_DIR/run50.log" 2>&1
cp /tmp/gpu_run/metrics.jsonl "$OUT_DIR/run50_metrics.jsonl" 2>/dev/null
cp /tmp/gpu_run/environment.json "$OUT_DIR/run50_environment.json" 2>/dev/null

python benchmarks/compute_plan.py --throughput "$OUT_DIR/throughput_cuda.json" --out "$OUT_DIR/compute_plan.md" \
    > "$OUT_DIR/compute_plan.log" 2>&1
ls -la "$OUT_DIR"

#!/usr/bin/env bash
# The study's contrasts on one data directory: curriculum vs none, text pretraining vs none,
# gap-closing loss vs plain CLIP; one run each per seed, then one comparison table.
#   bash scripts/sweep.sh "0 1 2" [extra train.py flags, e.g. --data_dir DIR --run_eval false]
set -euo pipefail
seeds=${1:-0}; shift || true
runs=()
for seed in $seeds; do
    for variant in "length:cua" "length:clip" "random:cua" "length:cua:nopretrain"; do
        IFS=: read -r curriculum loss pre <<<"$variant"
        name="git-${curriculum}-${loss}${pre:+-$pre}-s${seed}"
        flags=(--curriculum "$curriculum" --seed "$seed" --output_dir "runs/sweep/$name" --overwrite_output_dir true)
        [ "$loss" = clip ] && flags+=(--uniform_weight 0 --align_weight 0)
        [ -n "$pre" ] && flags+=(--text_pretrain_steps 0)
        accelerate launch --num_processes 1 --num_cpu_threads_per_process "$(nproc)" babymm/train.py "${flags[@]}" "$@"
        runs+=("runs/sweep/$name")
    done
done
if ls "${runs[0]}/results.json" >/dev/null 2>&1; then
    python -m eval.compare "${runs[@]}" --out runs/sweep/comparison.md --csv runs/sweep/comparison.csv
fi

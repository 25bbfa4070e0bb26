#!/usr/bin/env bash
# Set up babymm on a fresh machine and run the main job end to end on the built-in world:
# generate and prepare data/world, train `--curriculum length` (text pretraining, then
# curriculum multimodal training with the gap-closing loss), evaluate, print the table.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install -q -U pip
    .venv/bin/pip install -q torch==2.13.0        # the CPU build; a GPU machine may use its own
    .venv/bin/pip install -q -c constraints.txt -e ".[dev,nouns,frequency]"  # pinned versions; the extras: the nouns and frequency scorers
fi
. .venv/bin/activate
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
# a lone CPU process uses every core (train.py overrides accelerate's one-thread default; --num_threads N pins it)
accelerate launch babymm/train.py --curriculum length "$@"

"""The tokenizer contract every part of babymm relies on: special tokens and how to load one.

data_prep trains the tokenizer (SentencePiece Unigram, saved as a fast HF tokenizer); training
and eval only load it. The ids are fixed so that a model and its tokenizer always agree.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

SPECIALS = {"pad": ("<pad>", 0), "unk": ("<unk>", 1), "bos": ("<s>", 2), "eos": ("</s>", 3)}
IMAGE_TOKEN = "<image>"


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """A saved fast tokenizer (`tokenizer.json`); fast because the official BabyLM evaluation
    pipeline asks for offset mappings."""
    tok = AutoTokenizer.from_pretrained(str(path))
    if not tok.is_fast:
        raise ValueError(f"{path}: expected a fast tokenizer (tokenizer.json)")
    return tok


WORD_START = "▁"  # SentencePiece's marker of a piece that follows whitespace


def word_starts(tokenizer: PreTrainedTokenizerBase) -> np.ndarray:
    """[vocab] bool: the token begins a whitespace word. Every word of a SentencePiece-tokenized
    line starts with exactly one such piece, so counting them counts words as BabyLM does
    (`tokenize_text` checks this against the ingested word count)."""
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    special = set(tokenizer.all_special_ids)
    return np.array([i not in special and p.startswith(WORD_START) for i, p in enumerate(pieces)], dtype=bool)

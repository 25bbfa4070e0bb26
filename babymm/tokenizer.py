"""The tokenizer contract every part of babymm relies on: special tokens and how to load one.

data_prep trains the tokenizer (SentencePiece Unigram, saved as a fast HF tokenizer); training
and eval only load it. The ids are fixed so that a model and its tokenizer always agree.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerFast

SPECIALS = {"pad": ("<pad>", 0), "unk": ("<unk>", 1), "bos": ("<s>", 2), "eos": ("</s>", 3)}
IMAGE_TOKEN = "<image>"


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """A saved fast tokenizer (`tokenizer.json`); fast because the official BabyLM evaluation
    pipeline asks for offset mappings."""
    tok = AutoTokenizer.from_pretrained(str(path))
    if not tok.is_fast:
        raise ValueError(f"{path}: expected a fast tokenizer (tokenizer.json)")
    return tok

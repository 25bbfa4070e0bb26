"""Stage: tokenize the text-only portion into one flat token array for training.

Each line becomes `<s> pieces </s>`, concatenated into `prepared/tokens/text.npy` (int32),
which training memory-maps and cuts into fixed blocks (nanoGPT style): tokenization
happens once, not in every run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from babymm.files import DataError, atomic_dir
from babymm.text import count_words
from babymm.tokenizer import load_tokenizer, word_starts
from data_prep import ingest as ingest_stage
from data_prep import train_tokenizer as tokenizer_stage
from data_prep.stage import (
    fingerprint,
    is_up_to_date,
    log,
    prepared_dir,
    read_manifest,
    run_cli,
    stage_parser,
    write_manifest,
)

STAGE = "tokens"


def out_dir(data_dir: Path, subset: str | None = None) -> Path:
    return prepared_dir(data_dir, subset) / STAGE


def tokenize_text(data_dir: Path, overwrite: bool = False, subset: str | None = None) -> Path:
    data_dir = Path(data_dir)
    tok_dir = tokenizer_stage.out_dir(data_dir, subset)
    tok_manifest = read_manifest(tok_dir)
    ingested = ingest_stage.require_ingested(data_dir, subset=subset)
    if tok_manifest is None:
        raise DataError(f"{tok_dir}: no tokenizer; run python -m data_prep.train_tokenizer --data_dir {data_dir}")
    fp = fingerprint(STAGE, ingested["fingerprint"], tok_manifest["fingerprint"])
    out = out_dir(data_dir, subset)
    if not overwrite and is_up_to_date(out, fp):
        log(STAGE, f"{out} is up to date")
        return out
    tok = load_tokenizer(tok_dir)
    text = ingest_stage.load_text(data_dir, subset)
    if text is None:
        raise DataError(f"{data_dir / 'text'}: no text lines to tokenize")
    chunks: list[np.ndarray] = []
    for batch in tqdm(text.iter(batch_size=2048), total=-(-text.num_rows // 2048), desc="tokenize", unit="batch"):
        for ids in tok(batch["text"], add_special_tokens=False)["input_ids"]:
            chunks.append(np.asarray([tok.bos_token_id, *ids, tok.eos_token_id], dtype=np.int32))
    tokens = np.concatenate(chunks)
    # training counts the words it has seen by their first pieces: say how far that is from the text's words
    words = sum(count_words(t) for t in text["text"])
    counted = int(word_starts(tok)[tokens].sum())
    with atomic_dir(out) as tmp:
        np.save(tmp / "text.npy", tokens)
        write_manifest(tmp, STAGE, fp, tokens=int(tokens.size), lines=text.num_rows,
                       tokens_per_line=float(tokens.size / text.num_rows), words=words,
                       words_counted_by_word_start_tokens=counted)
    log(STAGE, f"{tokens.size:,} tokens from {text.num_rows:,} lines -> {out}"
               + ("" if counted == words else f"; word-start tokens count {counted:,} of its {words:,} words"))
    return out


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    return run_cli(p, argv, lambda a: tokenize_text(a.data_dir, a.overwrite, a.subset))


if __name__ == "__main__":
    sys.exit(main())

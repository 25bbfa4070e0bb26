"""Stage: tokenize the text-only portion and the captions once, for training.

Each text line becomes `<s> pieces </s>`, concatenated into `prepared/tokens/text.npy` (int32),
which training memory-maps and cuts into fixed blocks (nanoGPT style). Each caption, in the
ingested row order, becomes `<s> pieces` exactly as the tokenizer's own call gives it
(`babymm.data.tokenize_captions` cuts it and adds `</s>` per run, by `--max_caption_tokens`),
concatenated into `captions.npy` (int32) with `caption_offsets.npy` (int64, [N + 1]): a training
batch slices them instead of tokenizing its captions, which was most of the input pipeline's
time (README, data loading benchmark). Tokenization happens once, not in every run.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import datasets
import numpy as np
from tokenizers import Tokenizer
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
CAPTION_FORMAT = "captions: <s> pieces, flat int32 + int64 offsets"  # in the fingerprint: older tokens are redone


def out_dir(data_dir: Path, subset: str | None = None) -> Path:
    return prepared_dir(data_dir, subset) / STAGE


def tokenize_text(data_dir: Path, overwrite: bool = False, subset: str | None = None) -> Path:
    data_dir = Path(data_dir)
    tok_dir = tokenizer_stage.out_dir(data_dir, subset)
    tok_manifest = read_manifest(tok_dir)
    ingested = ingest_stage.require_ingested(data_dir, subset=subset)
    if tok_manifest is None:
        raise DataError(f"{tok_dir}: no tokenizer; run python -m data_prep.train_tokenizer --data_dir {data_dir}")
    fp = fingerprint(STAGE, ingested["fingerprint"], tok_manifest["fingerprint"], CAPTION_FORMAT)
    out = out_dir(data_dir, subset)
    if not overwrite and is_up_to_date(out, fp):
        log(STAGE, f"{out} is up to date")
        return out
    tok = load_tokenizer(tok_dir)
    text = ingest_stage.load_text(data_dir, subset)
    if text is None:
        raise DataError(f"{data_dir / 'text'}: no text lines to tokenize")
    # the Rust tokenizer `tok(texts, add_special_tokens=False)` runs, called without its per-line Python wrappers
    backend = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    backend.encode_special_tokens = bool(tok.split_special_tokens)
    chunks: list[np.ndarray] = []
    for batch in tqdm(text.iter(batch_size=2048), total=-(-text.num_rows // 2048), desc="tokenize", unit="batch"):
        ids = [e.ids for e in backend.encode_batch(batch["text"], add_special_tokens=False)]
        chunks.append(_with_bos_eos(ids, tok.bos_token_id, tok.eos_token_id))
    tokens = np.concatenate(chunks)
    captions, offsets = _caption_tokens(backend, ingest_stage.out_dir(data_dir, subset))
    # training counts the words it has seen by their first pieces: say how far that is from the text's words
    words = (int(text.data.column("num_words").to_numpy().sum(dtype=np.int64)) if "num_words" in text.column_names
             else sum(count_words(t) for t in text["text"][:]))
    counted = int(word_starts(tok)[tokens].sum())
    with atomic_dir(out) as tmp:
        np.save(tmp / "text.npy", tokens)
        np.save(tmp / "captions.npy", captions)
        np.save(tmp / "caption_offsets.npy", offsets)
        write_manifest(tmp, STAGE, fp, tokens=int(tokens.size), lines=text.num_rows,
                       tokens_per_line=float(tokens.size / text.num_rows), words=words,
                       words_counted_by_word_start_tokens=counted, captions=int(offsets.size - 1),
                       caption_tokens=int(captions.size))
    log(STAGE, f"{tokens.size:,} tokens from {text.num_rows:,} lines, {captions.size:,} from "
               f"{offsets.size - 1:,} captions -> {out}"
               + ("" if counted == words else f"; word-start tokens count {counted:,} of its {words:,} words"))
    return out


def _caption_tokens(backend: Tokenizer, ingest_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every ingested caption's `<s> pieces` (the tokenizer's call with its special tokens),
    flat int32, and the offsets [N + 1] of each caption in it; empty when there are no captions."""
    captions_dir = ingest_dir / "captions"
    if not captions_dir.exists():
        return np.empty(0, dtype=np.int32), np.zeros(1, dtype=np.int64)
    ds = datasets.load_from_disk(str(captions_dir)).select_columns(["caption"])
    chunks, lengths = [], []
    for batch in tqdm(ds.iter(batch_size=8192), total=-(-ds.num_rows // 8192), desc="tokenize captions",
                      unit="batch"):
        ids = [e.ids for e in backend.encode_batch([str(c) for c in batch["caption"]], add_special_tokens=True)]
        lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        lengths.append(lens)
        chunks.append(np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(lens.sum())))
    offsets = np.zeros(ds.num_rows + 1, dtype=np.int64)
    if lengths:
        np.cumsum(np.concatenate(lengths), out=offsets[1:])
    return (np.concatenate(chunks) if chunks else np.empty(0, dtype=np.int32)), offsets


def _with_bos_eos(ids: list[list[int]], bos: int, eos: int) -> np.ndarray:
    """int32 `<s> ids </s>` of each line, concatenated."""
    lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    out = np.empty(int(lens.sum()) + 2 * len(ids), dtype=np.int32)
    starts = np.cumsum(lens + 2) - (lens + 2)
    body = np.ones(out.size, dtype=bool)
    body[starts] = body[starts + lens + 1] = False
    out[starts], out[starts + lens + 1] = bos, eos
    out[body] = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(lens.sum()))
    return out


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    return run_cli(p, argv, lambda a: tokenize_text(a.data_dir, a.overwrite, a.subset))


if __name__ == "__main__":
    sys.exit(main())

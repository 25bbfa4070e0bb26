"""The tokenizer stage: SentencePiece Unigram -> fast HF tokenizer that splits identically."""

import json
import shutil

import pytest
import sentencepiece as spm
from transformers import AutoTokenizer

from babymm.files import DataError
from data_prep import ingest, train_tokenizer


@pytest.fixture(scope="module")
def tok_dir(tiny_world, tmp_path_factory):
    root = tmp_path_factory.mktemp("tok") / "world"
    shutil.copytree(tiny_world, root, ignore=shutil.ignore_patterns("prepared"))
    ingest.ingest(root)
    return train_tokenizer.train_tokenizer(root, vocab_size=4096)


def test_fast_tokenizer_matches_sentencepiece(tok_dir, tiny_world):
    tok = AutoTokenizer.from_pretrained(tok_dir)
    assert tok.is_fast
    sp = spm.SentencePieceProcessor(model_file=str(tok_dir / "spm.model"))
    held_out = [json.loads(line)["sentence_good"]
                for f in sorted((tiny_world / "eval" / "blimp").glob("*.jsonl"))
                for line in f.read_text().splitlines()[:20]]
    for text in held_out + train_tokenizer.TRICKY + ["Question: what COLOR is the   star? Answer: red"]:
        assert tok(text, add_special_tokens=False)["input_ids"] == sp.encode(text), text


def test_special_tokens_and_offsets(tok_dir):
    tok = AutoTokenizer.from_pretrained(tok_dir)
    assert (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2, 3)
    ids = tok("a red star <image>")["input_ids"]
    assert ids[0] == 2 and ids[-1] == tok.convert_tokens_to_ids("<image>")
    enc = tok("The red star", return_offsets_mapping=True)
    assert len(enc["offset_mapping"]) == len(enc["input_ids"])
    assert tok.decode(tok("The Red  star.")["input_ids"], skip_special_tokens=True) == "the red star."
    manifest = json.loads((tok_dir / "manifest.json").read_text())
    assert manifest["vocab_size"] == len(tok) and manifest["requested_vocab_size"] == 4096


def test_idempotent_and_overwrite(tok_dir):
    root = tok_dir.parent.parent
    mtime = (tok_dir / "manifest.json").stat().st_mtime_ns
    train_tokenizer.train_tokenizer(root, vocab_size=4096)
    assert (tok_dir / "manifest.json").stat().st_mtime_ns == mtime
    train_tokenizer.train_tokenizer(root, vocab_size=4096, overwrite=True)
    assert (tok_dir / "manifest.json").stat().st_mtime_ns != mtime


def test_missing_ingest_is_an_error(tmp_path, capsys):
    with pytest.raises(DataError, match="run the ingest stage first"):
        train_tokenizer.train_tokenizer(tmp_path)
    assert train_tokenizer.main(["--data_dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert not (tmp_path / "prepared" / "tokenizer").exists()

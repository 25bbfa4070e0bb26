"""Captions tokenized once in data prep give exactly the batches of tokenizing each batch, on
pixel data and on precomputed features split across files; stale tokens are refused."""

import json

import numpy as np
import pytest
import torch

from babymm.data import CaptionData, TextBlocks
from babymm.files import DataError
from babymm.tokenizer import load_tokenizer
from data_prep import pipeline, tokenize_text

pytestmark = pytest.mark.usefixtures("one_thread")


def _same_batches(a: CaptionData, b: CaptionData, batches: list[list[int]]) -> None:
    for idx in batches:
        x, y = a.__getitems__(idx), b.__getitems__(idx)
        assert x.keys() == y.keys()
        for k in x:
            assert x[k].dtype == y[k].dtype and torch.equal(x[k], y[k]), (idx[:3], k)


@pytest.fixture(scope="module")
def prepared_world(tiny_world):
    return pipeline.prepare(tiny_world, "length")


@pytest.mark.parametrize("max_tokens", [40, 6, 2])
def test_pretokenized_captions_give_the_batches_of_the_tokenizer(prepared_world, max_tokens):
    tok = load_tokenizer(prepared_world.tokenizer)
    per_batch = CaptionData(prepared_world.ingest, tok, max_tokens)
    once = CaptionData(prepared_world.ingest, tok, max_tokens, tokens_dir=prepared_world.tokens)
    n = len(per_batch)
    rng = np.random.default_rng(0)
    # every caption once (in order), and random batches that mix short and long ones
    batches = [list(range(i, min(n, i + 512))) for i in range(0, n, 512)]
    batches += [rng.choice(n, 64, replace=False).tolist() for _ in range(5)]
    _same_batches(per_batch, once, batches)
    if max_tokens == 6:  # some captions were cut: the cut keeps </s> last, as tokenize_captions does
        ids = once.__getitems__(list(range(n)))["input_ids"]
        assert ids.shape[1] == 6 and (ids[:, -1] == tok.eos_token_id).any()


def test_pretokenized_captions_on_features_across_files(tmp_path):
    root = tmp_path / "d"
    (root / "captions").mkdir(parents=True)
    (root / "text").mkdir()
    (root / "text" / "child.train").write_text("the ball is red .\nlook at the dog !\n" * 20)
    caps = ["a red circle", "a dog", "two cats sit on a very long mat with a hat", "a cup", "the end"]
    (root / "captions" / "cc_captions.json").write_text(json.dumps(caps))
    feats = np.arange(5 * 6, dtype=np.float32).reshape(5, 6)
    np.save(root / "captions" / "cc_dino_v2_states_1of2.npy", feats[:3])
    np.save(root / "captions" / "cc_dino_v2_states_2of2.npy", feats[3:])
    prepared = pipeline.prepare(root, "length", vocab_size=40, build_world=False)
    tok = load_tokenizer(prepared.tokenizer)
    once = CaptionData(prepared.ingest, tok, 5, tokens_dir=prepared.tokens)
    once.advise_random_reads()
    _same_batches(CaptionData(prepared.ingest, tok, 5), once, [[4, 0, 3, 1, 2], [2, 2, 3]])
    # the rows of both files, in the batch's order: checked against the arrays themselves
    np.testing.assert_array_equal(once.__getitems__([4, 0, 3])["images"].numpy(), feats[[4, 0, 3]])
    # tokens made for other captions are refused, naming the stage to re-run
    np.save(prepared.tokens / "caption_offsets.npy", np.array([0, 3, 5], dtype=np.int64))
    with pytest.raises(DataError, match="caption_offsets.npy: offsets for 2 captions.*tokenize_text --overwrite"):
        CaptionData(prepared.ingest, tok, 5, tokens_dir=prepared.tokens)
    (prepared.tokens / "captions.npy").unlink()
    with pytest.raises(DataError, match="no captions.npy"):
        CaptionData(prepared.ingest, tok, 5, tokens_dir=prepared.tokens)
    assert tokenize_text.tokenize_text(root, overwrite=True) == prepared.tokens
    _same_batches(CaptionData(prepared.ingest, tok, 5), CaptionData(prepared.ingest, tok, 5,
                                                                     tokens_dir=prepared.tokens), [[0, 1, 2, 3, 4]])


def test_text_blocks_are_slices_of_the_token_array(tmp_path):
    tokens = np.arange(40, dtype=np.int32)
    np.save(tmp_path / "text.npy", tokens)
    batch = TextBlocks(tmp_path / "text.npy", 8).__getitems__([3, 0])
    assert batch["input_ids"].tolist() == [list(range(24, 32)), list(range(0, 8))]

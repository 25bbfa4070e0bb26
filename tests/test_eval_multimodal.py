"""Winoground- and VQA-format scoring against a naive per-item computation, plus known answers."""

import json
import shutil

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from babymm.images import load_image
from babymm.models import load_model
from eval import multimodal


def naive_logprob(model, tok, image_path, context, continuation):
    """log P(continuation | image, context), one item at a time, no padding, no batching."""
    whole = tok(context + continuation)["input_ids"]
    n_ctx = len(tok(context)["input_ids"])
    image = torch.from_numpy(load_image(image_path, model.config.vision.image_size))[None]
    with torch.no_grad():
        logits = model.caption_logits(model.vision(image), torch.tensor([whole]), torch.ones(1, len(whole)).long())
    logp = torch.log_softmax(logits[0].float(), -1)
    return sum(logp[i - 1, whole[i]].item() for i in range(n_ctx, len(whole)))


@pytest.fixture(scope="module")
def model_and_tok(tiny_run):
    return load_model(tiny_run).eval(), AutoTokenizer.from_pretrained(tiny_run)


def _subset(src, dst, n, mirror=False):
    shutil.copytree(src / "images", dst / "images")
    items = [json.loads(line) for line in (src / "winoground.jsonl").read_text().splitlines()[:n]]
    if mirror:
        items += [{**it, "caption_0": it["caption_1"], "caption_1": it["caption_0"]} for it in items]
    (dst / "winoground.jsonl").write_text("".join(json.dumps(it) + "\n" for it in items))
    return items


def test_winoground_matches_naive(model_and_tok, tiny_world, tmp_path):
    model, tok = model_and_tok
    src = tiny_world / "eval" / "winoground"
    items = _subset(src, tmp_path, 12)
    res = multimodal.winoground(model, tok, tmp_path, batch_size=5)
    correct = [naive_logprob(model, tok, src / "images" / f"{it['image_key']}.png", "", it["caption_0"])
               > naive_logprob(model, tok, src / "images" / f"{it['image_key']}.png", "", it["caption_1"])
               for it in items]
    assert res["acc"] == pytest.approx(np.mean(correct)) and res["n"] == 12


def test_winoground_mirrored_is_exactly_half(model_and_tok, tiny_world, tmp_path):
    model, tok = model_and_tok
    _subset(tiny_world / "eval" / "winoground", tmp_path, 10, mirror=True)
    res = multimodal.winoground(model, tok, tmp_path)
    assert res["acc"] == 0.5 and res["acc_shuffled_images"] == 0.5


def test_vqa_matches_naive(model_and_tok, tiny_world, tmp_path):
    model, tok = model_and_tok
    src = tiny_world / "eval" / "vqa"
    items = json.loads((src / "vqa.json").read_text())[:10]
    shutil.copytree(src / "images", tmp_path / "images")
    (tmp_path / "vqa.json").write_text(json.dumps(items))
    res = multimodal.vqa(model, tok, tmp_path, batch_size=7)
    correct = []
    for it in items:
        image = src / "images" / f"{it['image_id']}.png"
        scores = [naive_logprob(model, tok, image, f"Question: {it['question']} Answer:", f" {a}")
                  for a in [it["target_ans"], *it["distractors"]]]
        correct.append(int(np.argmax(scores)) == 0)
    assert res["acc"] == pytest.approx(np.mean(correct)) and res["n"] == 10
    bad = [{**items[0], "distractors": items[0]["distractors"][:3]}]
    (tmp_path / "vqa.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="record 0 has 3 distractors, not 7"):
        multimodal.vqa(model, tok, tmp_path)


def test_embedding_metrics(model_and_tok, tiny_world):
    model, tok = model_and_tok
    image, text = multimodal.embed_pairs(model, tok, tiny_world / "eval" / "captions" / "heldout.jsonl")
    assert image.shape == text.shape == (500, model.config.embed_dim)
    assert torch.allclose(image.norm(dim=-1), torch.ones(500), atol=1e-5)

"""Winoground, VQA, zero-shot and held-out-pair scoring against naive per-item computations
(one item at a time, no batching, no padding), under both ranking rules: the official one (a
tie goes to the first option, the target) and the strict one (a tie is a miss)."""

import json
import shutil

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from babymm.images import load_image
from babymm.models import load_model
from eval import multimodal
from eval.gap_metrics import gap_report


def naive_logprob(model, tok, image_path, context, continuation):
    """log P(continuation | image, context), one item at a time, no padding, no batching."""
    whole = tok(context + continuation)["input_ids"]
    n_ctx = len(tok(context)["input_ids"])
    image = torch.from_numpy(load_image(image_path, model.config.image_size))[None]
    with torch.no_grad():
        logits = model.caption_logits(torch.tensor([whole]), torch.ones(1, len(whole)).long(), model.image_context(image))
    logp = torch.log_softmax(logits[0].float(), -1)
    return sum(logp[i - 1, whole[i]].item() for i in range(n_ctx, len(whole)))


def naive_text_embedding(model, tok, text):
    ids = tok(text)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        return model.embed_texts(torch.tensor([ids]), torch.ones(1, len(ids)).long())[0]


def naive_image_embedding(model, path):
    image = torch.from_numpy(load_image(path, model.config.image_size))[None]
    with torch.no_grad():
        return model.embed_images(image)[0]


def strictly_best(scores, target=0):
    return all(scores[target] > s for i, s in enumerate(scores) if i != target)


def first_best(scores):
    """The official pipeline's hit with the target first: no option above it."""
    return all(scores[0] >= s for s in scores[1:])


@pytest.fixture(scope="module")
def model_and_tok(tiny_run):
    return load_model(tiny_run).eval(), AutoTokenizer.from_pretrained(tiny_run)


def test_winoground_matches_naive(model_and_tok, tiny_world, tmp_path):
    model, tok = model_and_tok
    src = tiny_world / "eval" / "winoground"
    shutil.copytree(src / "images", tmp_path / "images")
    items = [json.loads(line) for line in (src / "winoground.jsonl").read_text().splitlines()[:12]]
    (tmp_path / "winoground.jsonl").write_text("".join(json.dumps(it) + "\n" for it in items))
    metrics, records = multimodal.winoground(model, tok, tmp_path, batch_size=5)
    own_scores, other_scores = [], []
    for i, it in enumerate(items):
        own = src / "images" / f"{it['image_key']}.png"
        # rows come in pairs (an item with each of its images), so the shuffle skips the pair
        other = src / "images" / f"{items[(i + 2) % len(items)]['image_key']}.png"
        own_scores.append([naive_logprob(model, tok, own, "", it[k]) for k in ("caption_0", "caption_1")])
        other_scores.append([naive_logprob(model, tok, other, "", it[k]) for k in ("caption_0", "caption_1")])
    recs = records["winoground"]
    assert [r["scores"] for r in recs] == [pytest.approx(s, abs=1e-4) for s in own_scores]
    assert [r["hit"] for r in recs] == [first_best(s) for s in own_scores]
    assert [r["hit_strict"] for r in recs] == [strictly_best(s) for s in own_scores]
    assert metrics["acc"] == pytest.approx(np.mean([first_best(s) for s in own_scores])) and metrics["n"] == 12
    assert metrics["acc_strict"] == pytest.approx(np.mean([strictly_best(s) for s in own_scores]))
    assert metrics["acc_shuffled_images"] == pytest.approx(np.mean([first_best(s) for s in other_scores]))
    assert metrics["acc_shuffled_images_strict"] == pytest.approx(np.mean([strictly_best(s) for s in other_scores]))


def _vqa_dir(tiny_world, tmp_path, items):
    shutil.copytree(tiny_world / "eval" / "vqa" / "images", tmp_path / "images")
    (tmp_path / "vqa.json").write_text(json.dumps(items))
    return tmp_path


@pytest.mark.parametrize("protocol, context", [("2025", "{q}"), ("2024", "Question: {q} Answer:")])
def test_vqa_matches_naive(model_and_tok, tiny_world, tmp_path, protocol, context):
    model, tok = model_and_tok
    src = tiny_world / "eval" / "vqa"
    items = json.loads((src / "vqa.json").read_text())[:10]
    metrics, records = multimodal.vqa(model, tok, _vqa_dir(tiny_world, tmp_path, items), batch_size=7,
                                      protocol=protocol)
    all_scores = []
    for it in items:
        image = src / "images" / f"{it['image_id']}.png"
        all_scores.append([naive_logprob(model, tok, image, context.format(q=it["question"]), f" {a}")
                           for a in [it["target_ans"], *it["distractors"]]])
    assert [r["scores"] for r in records["vqa"]] == [pytest.approx(s, abs=1e-4) for s in all_scores]
    assert [r["pick"] for r in records["vqa"]] == [int(np.argmax(s)) for s in all_scores]
    assert [r["hit_strict"] for r in records["vqa"]] == [strictly_best(s) for s in all_scores]
    assert metrics["acc"] == pytest.approx(np.mean([first_best(s) for s in all_scores])) and metrics["n"] == 10
    assert metrics["chance"] == 0.125 and metrics["protocol"] == protocol


def test_vqa_tie_is_a_hit_officially_and_a_miss_strictly(model_and_tok, tiny_world, tmp_path):
    """Every option the same answer: equal scores. The official rule (torch.max) picks index 0,
    the target; the strict rule counts a tie as a miss."""
    model, tok = model_and_tok
    items = json.loads((tiny_world / "eval" / "vqa" / "vqa.json").read_text())[:4]
    items = [{**it, "distractors": [it["target_ans"]] * 7} for it in items]
    metrics, records = multimodal.vqa(model, tok, _vqa_dir(tiny_world, tmp_path, items))
    assert metrics["acc"] == 1.0 and metrics["acc_shuffled_images"] == 1.0
    assert metrics["acc_strict"] == 0.0 and metrics["acc_shuffled_images_strict"] == 0.0
    assert all(len(set(r["scores"])) == 1 and r["pick"] == 0 for r in records["vqa"])


def test_vqa_needs_seven_distractors(model_and_tok, tiny_world, tmp_path):
    model, tok = model_and_tok
    items = json.loads((tiny_world / "eval" / "vqa" / "vqa.json").read_text())[:1]
    items[0]["distractors"] = items[0]["distractors"][:3]
    with pytest.raises(ValueError, match="record 0 has 3 distractors, not 7"):
        multimodal.vqa(model, tok, _vqa_dir(tiny_world, tmp_path, items))


def test_zero_shot_matches_naive(model_and_tok, tiny_world, tmp_path):
    model, tok = model_and_tok
    pairs = [json.loads(line) for line in
             (tiny_world / "eval" / "captions" / "heldout.jsonl").read_text().splitlines()[:6]]
    classes = ["red", "blue", "star"]
    shutil.copytree(tiny_world / "eval" / "captions" / "images", tmp_path / "images")  # images stay inside the set
    rows = [{"image": p["image"], "label": classes[i % 3], "labels": classes} for i, p in enumerate(pairs)]
    (tmp_path / "toy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    templates = ("{}.", "there is {}.")
    metrics, records = multimodal.zero_shot(model, tok, tmp_path, batch_size=4, templates=templates)
    hits_e, hits_l = [], []
    for i, r in enumerate(rows):
        img = naive_image_embedding(model, tmp_path / r["image"])
        sims = []
        for c in classes:
            mean = torch.stack([naive_text_embedding(model, tok, t.format("a " + c)) for t in templates]).mean(0)
            sims.append(float(img @ (mean / mean.norm())))
        lls = [np.mean([naive_logprob(model, tok, tmp_path / r["image"], "", t.format("a " + c)) for t in templates])
               for c in classes]
        hits_e.append(strictly_best(sims, i % 3))
        hits_l.append(strictly_best(lls, i % 3))
        assert records["toy"][i]["scores"] == pytest.approx(sims, abs=1e-4)
    sub = metrics["subtasks"]["toy"]
    assert sub["acc_embedding"] == pytest.approx(np.mean(hits_e))
    assert sub["acc_likelihood"] == pytest.approx(np.mean(hits_l))
    assert sub["chance"] == pytest.approx(1 / 3) and sub["n_embedding"] == 6
    bad = [{**rows[0], "label": "green"}]
    (tmp_path / "toy.jsonl").write_text(json.dumps(bad[0]) + "\n")
    with pytest.raises(ValueError, match=r"toy.jsonl:1: label 'green'"):
        multimodal.zero_shot(model, tok, tmp_path)


def test_embedding_metrics_match_per_item_embeddings(model_and_tok, tiny_world, tmp_path):
    """Batched, padded embedding of the held-out pairs gives the gap metrics of embeddings
    computed one item at a time."""
    model, tok = model_and_tok
    src = tiny_world / "eval" / "captions"
    pairs = [json.loads(line) for line in (src / "heldout.jsonl").read_text().splitlines()[:40]]
    shutil.copytree(src / "images", tmp_path / "images")  # images stay inside the set's directory
    rows = [{**p, "image": str(tmp_path / p["image"])} for p in pairs]  # absolute paths inside it are fine
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    metrics, _ = multimodal.embedding_metrics(model, tok, tmp_path / "pairs.jsonl", batch_size=16)
    image = torch.stack([naive_image_embedding(model, r["image"]) for r in rows])
    text = torch.stack([naive_text_embedding(model, tok, r["caption"]) for r in rows])
    expected = gap_report(image, text, texts=[r["caption"] for r in rows])
    for key in ("centroid_distance", "matched_cosine", "unmatched_cosine", "alignment", "uniformity_image",
                "uniformity_text", "num_unique_captions"):
        assert metrics[key] == pytest.approx(expected[key], abs=1e-5), key
    assert metrics["num_unique_captions"] == len({r["caption"] for r in rows})


def test_a_cut_caption_keeps_its_end_token_in_training_and_eval(model_and_tok, tiny_world):
    """A caption longer than --max_caption_tokens loses its last words, not its `</s>`, in the
    training batch and in eval's tokens alike; eval's embedding of it is the training batch's."""
    from babymm.data import CaptionData, tokenize_captions

    model, tok = model_and_tok
    train8 = CaptionData(tiny_world / "prepared" / "ingest", tok, 8, with_images=False)
    captions = [str(c) for c in train8.ds["caption"]]
    index = [i for i, c in enumerate(captions) if len(tok(c)["input_ids"]) >= 8][:6]  # 8+ tokens before </s>
    texts = [captions[i] for i in index]
    assert len(index) == 6
    batch = train8.__getitems__(index)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert mask.tolist() == [[1] * 8] * 6
    assert ids[:, 7].tolist() == [tok.eos_token_id] * 6  # the end token kept
    assert ids[:, :7].tolist() == [tok(t)["input_ids"][:7] for t in texts]  # <s> and the first words
    eval_ids, eval_mask = tokenize_captions(tok, texts, 8)
    assert torch.equal(eval_ids, ids) and torch.equal(eval_mask, mask)
    with torch.no_grad():
        trained = model.embed_texts(ids, mask)
    assert torch.equal(multimodal.embed_texts(model, tok, texts, batch_size=6, max_tokens=8), trained)
    # a short caption is whole: `<s> caption </s>`, padded
    short_ids, short_mask = tokenize_captions(tok, ["a star.", texts[0]], 40)
    whole = tok("a star.")["input_ids"] + [tok.eos_token_id]
    assert short_ids[0, : len(whole)].tolist() == whole and int(short_mask[0].sum()) == len(whole)
    assert set(short_ids[0, len(whole):].tolist()) <= {tok.pad_token_id}
    with pytest.raises(ValueError, match="at least 2 tokens"):
        tokenize_captions(tok, texts, 1)

"""The built-in world: determinism, budget, formats, held-out compositions."""

import hashlib
import json
from collections import defaultdict

import pytest
from PIL import Image

from data_prep import world

BUDGET = 20_000


def _hashes(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    out = tmp_path_factory.mktemp("w") / "world"
    world.generate_world(out, word_budget=BUDGET, seed=0)
    return out


def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_deterministic_given_seed(small_world, tmp_path):
    again = tmp_path / "again"
    world.generate_world(again, word_budget=BUDGET, seed=0)
    assert _hashes(again) == _hashes(small_world)
    other = tmp_path / "other"
    world.generate_world(other, word_budget=BUDGET, seed=1)
    assert _hashes(other) != _hashes(small_world)


def test_eval_sets_do_not_depend_on_budget(small_world, tmp_path):
    bigger = tmp_path / "bigger"
    world.generate_world(bigger, word_budget=2 * BUDGET, seed=0)
    evals = lambda h: {k: v for k, v in h.items() if k.startswith("eval/")}  # noqa: E731
    assert evals(_hashes(bigger)) == evals(_hashes(small_world))


def test_word_budget(small_world):
    m = json.loads((small_world / "world.json").read_text())
    text = sum(len(line.split()) for f in (small_world / "text").glob("*.train") for line in f.read_text().splitlines())
    captions = sum(len(r["caption"].split()) for r in _read_jsonl(small_world / "captions" / "train.jsonl"))
    assert text + captions <= BUDGET and text + captions == m["total_words"]
    assert captions >= 0.9 * 0.4 * BUDGET and text >= 0.9 * 0.6 * BUDGET


def test_captions_resolve_and_vary(small_world):
    rows = _read_jsonl(small_world / "captions" / "train.jsonl")
    for r in rows[:50]:
        with Image.open(small_world / "captions" / r["image"]) as im:
            assert im.size == (32, 32) and im.mode == "RGB"
    lengths = {len(r["caption"].split()) for r in rows}
    assert len(lengths) >= 6
    by_level = defaultdict(list)
    for r in rows:
        by_level[r["level"]].append(len(r["caption"].split()))
    mean = {k: sum(v) / len(v) for k, v in by_level.items()}
    assert mean[1] < mean[2] < mean[3] and mean[1] < mean[5]


def test_heldout_compositions_never_in_training(small_world):
    m = json.loads((small_world / "world.json").read_text())
    held = m["heldout_compositions"]
    assert len(held) == world.HELDOUT_COUNT
    pairs = {tuple(h.split()) for h in held}
    # the text corpus never even mentions a held-out colour with its shape
    text = [line for f in (small_world / "text").glob("*.train") for line in f.read_text().splitlines()]
    assert all(world._in_text_ok(line, pairs) for line in text)
    # captions never name a held-out object, nor deny one ("the star is not yellow")
    phrases = [f"{c} {s}" for c, s in pairs] + [f"{c} {world.PLURAL[s]}" for c, s in pairs]
    phrases += [f"the {s} is not {c}" for c, s in pairs]
    for r in _read_jsonl(small_world / "captions" / "train.jsonl"):
        assert not any(p in r["caption"] for p in phrases), r
    heldout_items = [r for r in _read_jsonl(small_world / "eval" / "captions" / "heldout.jsonl") if r["heldout_composition"]]
    assert len(heldout_items) >= 50


def test_eval_formats(small_world):
    ev = small_world / "eval"
    text = {line for f in (small_world / "text").glob("*.train") for line in f.read_text().splitlines()}
    for f in (ev / "blimp").glob("*.jsonl"):
        for r in _read_jsonl(f):
            assert {"sentence_good", "sentence_bad", "field", "UID", "linguistics_term"} <= set(r)
            assert r["sentence_good"] != r["sentence_bad"]
            assert r["sentence_good"] not in text and r["sentence_bad"] not in text
    for r in _read_jsonl(ev / "winoground" / "winoground.jsonl"):
        assert sorted(r["caption_0"].split()) == sorted(r["caption_1"].split()) and r["caption_0"] != r["caption_1"]
        assert (ev / "winoground" / "images" / f"{r['image_key']}.png").exists()
    vqa = json.loads((ev / "vqa" / "vqa.json").read_text())
    assert len(vqa) == world.EVAL_SIZES["vqa"]
    for r in vqa:
        assert len(r["distractors"]) == 7 == len(set(r["distractors"])) and r["target_ans"] not in r["distractors"]
        assert (ev / "vqa" / "images" / f"{r['image_id']}.png").exists()


def test_relation_and_questions_are_true():
    a = world.Obj("circle", "red", "big", 0, 0)
    b = world.Obj("square", "blue", "small", 0, 1)
    c = world.Obj("star", "green", "small", 1, 0)
    assert world.relation(a, b) == "above" and world.relation(b, a) == "below"
    assert world.relation(a, c) == "to the left of" and world.relation(b, c) is None
    import random

    rng = random.Random(0)
    for _ in range(200):
        made = world.question([a, c], rng)
        if made:
            q, ans, kind = made
            expected = {"what color is the circle?": "red", "what color is the star?": "green",
                        "what shape is red?": "circle", "what shape is green?": "star",
                        "how many circles are there?": "one", "how many stars are there?": "one",
                        "where is the red circle?": "left", "where is the green star?": "right"}
            assert expected[q] == ans


def test_idempotent(small_world):
    mtime = (small_world / "world.json").stat().st_mtime_ns
    world.generate_world(small_world, word_budget=BUDGET, seed=0)
    assert (small_world / "world.json").stat().st_mtime_ns == mtime

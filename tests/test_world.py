"""The built-in world: determinism, budget, formats, truthful captions, held-out compositions."""

import hashlib
import json
import random
import re
from collections import defaultdict

import pytest
from PIL import Image

from data_prep import world

BUDGET = 20_000
BLIMP_FIELDS = {"sentence_good", "sentence_bad", "field", "UID", "linguistics_term", "pair_id"}


def _hashes(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _text_lines(root):
    return [line for f in sorted((root / "text").glob("*.train")) for line in f.read_text().splitlines()]


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    out = tmp_path_factory.mktemp("w") / "world"
    world.generate_world(out, word_budget=BUDGET, seed=0)
    return out


# ---------------------------------------------------------------------------- an independent truth check
# Reads a caption back into claims about the scene, without the generator's code paths.

NUM = {n: i + 1 for i, n in enumerate(world.NUMBERS)}
SINGULAR = {p: s for s, p in world.PLURAL.items()}


def _named(objs, phrase):
    """Objects matching "[a|an] [size] colour shape"."""
    words = phrase.split()
    if words[0] in ("a", "an"):
        words = words[1:]
    size, (color, shape) = (words[0], words[1:]) if len(words) == 3 else (None, words)
    return [o for o in objs if o.color == color and o.shape == shape and size in (None, o.size)]


def _only(objs, phrase):
    found = _named(objs, phrase)
    return found[0] if len(found) == 1 else None


def _true_of(objs, caption):
    """Whether the caption (or question-answer pair) is true of, and unambiguous about, the scene."""
    if m := re.fullmatch(r"question: (.*) answer: (.*)\.", caption):
        q, ans = m.groups()
        if m := re.fullmatch(r"what color is the (\w+)\?", q):
            found = [o for o in objs if o.shape == m[1]]
            return len(found) == 1 and found[0].color == ans
        if m := re.fullmatch(r"what shape is (\w+)\?", q):
            found = [o for o in objs if o.color == m[1]]
            return len(found) == 1 and found[0].shape == ans
        if m := re.fullmatch(r"how many (\w+) are there\?", q):
            return sum(o.shape == SINGULAR[m[1]] for o in objs) == NUM.get(ans)
        if m := re.fullmatch(r"where is the (\w+ \w+)\?", q):
            o = _only(objs, m[1])
            others = [x for x in objs if x is not o]
            return (o is not None and ans == ["left", "right"][o.col]
                    and all(x.col != o.col and x.row == o.row for x in others))
        return False
    if m := re.fullmatch(r"there (?:is|are) (\w+) (\w+) (\w+)", caption):
        shape = m[3] if m[3] in world.SHAPES else SINGULAR[m[3]]
        return sum(o.color == m[2] and o.shape == shape for o in objs) == NUM[m[1]]
    if m := re.fullmatch(r"there is (an? \w+ \w+) and no (\w+ \w+)", caption):
        return bool(_named(objs, m[1])) and not _named(objs, m[2])
    if m := re.fullmatch(r"the (\w+) is not (\w+)", caption):
        found = [o for o in objs if o.shape == m[1]]
        return len(found) == 1 and found[0].color != m[2]
    if m := re.fullmatch(r"(.+) is (above|below|to the left of|to the right of) (.+)", caption):
        a, b = _only(objs, m[1]), _only(objs, m[3])
        if a is None or b is None:
            return False
        dx, dy = b.col - a.col, b.row - a.row
        return {"above": dx == 0 and dy > 0, "below": dx == 0 and dy < 0,
                "to the left of": dy == 0 and dx > 0, "to the right of": dy == 0 and dx < 0}[m[2]]
    if m := re.fullmatch(r"(an? \w+ \w+) and (an? \w+ \w+)", caption):
        return len(objs) == 2 and _only(objs, m[1]) is not None and _only(objs, m[2]) is not None
    if m := re.fullmatch(r"(.+) (on the left|on the right|at the top|at the bottom)", caption):
        o = _only(objs, m[1])
        if o is None:
            return False
        axis, side = ("col", 0) if m[2] == "on the left" else ("col", 1) if m[2] == "on the right" else \
            ("row", 0) if m[2] == "at the top" else ("row", 1)
        return getattr(o, axis) == side and all(getattr(x, axis) != side for x in objs if x is not o)
    return len(objs) == 1 and _only(objs, caption) is not None


def test_every_caption_level_is_true_of_its_scene():
    w = world.World(world.choose_heldout(0))
    rng = random.Random(0)
    for level in range(1, 9):
        for i in range(300):
            objs, caption = w.caption(rng, level, heldout=i % 3 == 0)
            assert _true_of(objs, caption), (level, caption, objs)


def test_truth_check_is_not_vacuous():
    scene = [world.Obj("circle", "red", "big", 0, 0), world.Obj("square", "blue", "small", 0, 1)]
    true = ["a red circle and a blue square", "a big red circle is above a small blue square",
            "a red circle at the top", "there is one red circle", "the circle is not blue",
            "question: what color is the circle? answer: red."]
    false = ["a red circle", "a blue square is above a red circle", "a small red circle at the top",
             "a red circle on the left", "there are two red circles", "the circle is not red",
             "there is a red circle and no blue square", "question: what color is the circle? answer: blue.",
             "question: where is the red circle? answer: left."]
    assert all(_true_of(scene, c) for c in true) and not any(_true_of(scene, c) for c in false)


def test_winoground_foil_is_never_true():
    w = world.World(world.choose_heldout(0))
    rng = random.Random(0)
    for i in range(500):
        objs, c0, c1 = world.winoground_item(w, rng, heldout=i % 4 == 0)
        assert _true_of(objs, c0) and not _true_of(objs, c1), (c0, c1, objs)


def test_questions_have_one_true_answer():
    w = world.World(world.choose_heldout(0))
    rng = random.Random(0)
    kinds = set()
    for _ in range(2000):
        objs = w.scene(rng, rng.choice([1, 2, 3]))
        made = world.question(objs, rng)
        if made:
            q, ans, kind = made
            kinds.add(kind)
            assert _true_of(objs, f"question: {q} answer: {ans}."), (q, ans, objs)
            wrong = world.distractors(ans, kind, rng)
            assert not any(_true_of(objs, f"question: {q} answer: {d}.") for d in wrong)
    assert kinds == {"color", "shape", "count", "position"}


def test_relation_and_questions_are_true():
    a = world.Obj("circle", "red", "big", 0, 0)
    b = world.Obj("square", "blue", "small", 0, 1)
    c = world.Obj("star", "green", "small", 1, 0)
    assert world.relation(a, b) == "above" and world.relation(b, a) == "below"
    assert world.relation(a, c) == "to the left of" and world.relation(b, c) is None
    rng = random.Random(0)
    expected = {"what color is the circle?": "red", "what color is the star?": "green",
                "what shape is red?": "circle", "what shape is green?": "star",
                "how many circles are there?": "one", "how many stars are there?": "one",
                "where is the red circle?": "left", "where is the green star?": "right"}
    for _ in range(200):
        made = world.question([a, c], rng)
        if made:
            q, ans, _ = made
            assert expected[q] == ans


# ---------------------------------------------------------------------------- the written world


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
    text = sum(len(line.split()) for line in _text_lines(small_world))
    captions = sum(len(r["caption"].split()) for r in _read_jsonl(small_world / "captions" / "train.jsonl"))
    assert text + captions <= BUDGET and text + captions == m["total_words"]
    assert captions >= 0.9 * 0.4 * BUDGET and text >= 0.9 * 0.6 * BUDGET
    assert sum(m["text_words"].values()) == text and m["caption_words"] == captions


def test_training_images_resolve(small_world):
    rows = _read_jsonl(small_world / "captions" / "train.jsonl")
    assert len(rows) == json.loads((small_world / "world.json").read_text())["train_images"]
    for r in rows:
        assert r["image"].startswith("../images/train/")
        with Image.open(small_world / "captions" / r["image"]) as im:
            assert im.format == "PNG" and im.size == (32, 32) and im.mode == "RGB"


def test_caption_length_varies_with_level(small_world):
    rows = _read_jsonl(small_world / "captions" / "train.jsonl")
    assert len({len(r["caption"].split()) for r in rows}) >= 6
    by_level = defaultdict(list)
    for r in rows:
        by_level[r["level"]].append(len(r["caption"].split()))
    assert set(by_level) == set(range(1, 9))
    mean = {k: sum(v) / len(v) for k, v in by_level.items()}
    assert mean[1] < mean[2] < mean[3] < mean[5] and mean[1] < mean[4] < mean[5]
    assert min(min(v) for v in by_level.values()) <= 3 and max(max(v) for v in by_level.values()) >= 12
    assert 0.05 < len(by_level[8]) / len(rows) < 0.2  # question-answer captions, about a tenth


def test_heldout_compositions_never_in_training(small_world):
    m = json.loads((small_world / "world.json").read_text())
    held = m["heldout_compositions"]
    assert len(held) == world.HELDOUT_COUNT
    pairs = {tuple(h.split()) for h in held}
    # the text corpus never even mentions a held-out colour with its shape
    assert all(world._in_text_ok(line, pairs) for line in _text_lines(small_world))
    # captions never name a held-out object, nor deny one ("the star is not yellow")
    phrases = [f"{c} {s}" for c, s in pairs] + [f"{c} {world.PLURAL[s]}" for c, s in pairs]
    phrases += [f"the {s} is not {c}" for c, s in pairs]
    for r in _read_jsonl(small_world / "captions" / "train.jsonl"):
        assert not any(p in r["caption"] for p in phrases), r
    # the eval sets mark the items that use them, and the manifest counts them
    ev = small_world / "eval"
    flagged = {
        "captions": sum(r["heldout_composition"] for r in _read_jsonl(ev / "captions" / "heldout.jsonl")),
        "winoground": sum(r["heldout_composition"] for r in _read_jsonl(ev / "winoground" / "winoground.jsonl")),
        "vqa": sum(r["heldout_composition"] for r in json.loads((ev / "vqa" / "vqa.json").read_text())),
    }
    assert flagged == m["eval_heldout_composition"]
    assert flagged["captions"] >= 0.15 * world.EVAL_SIZES["captions"]
    assert flagged["winoground"] > 0 and flagged["vqa"] > 0


def test_blimp_format(small_world):
    text = set(_text_lines(small_world))
    files = sorted((small_world / "eval" / "blimp").glob("*.jsonl"))
    assert {f.stem for f in files} >= {"subject_verb_agreement", "subject_verb_agreement_attractor",
                                       "determiner_noun_agreement", "adjective_order", "negation_auxiliary"}
    for f in files:
        rows = _read_jsonl(f)
        assert len(rows) == world.EVAL_SIZES["blimp"]
        assert len({(r["sentence_good"], r["sentence_bad"]) for r in rows}) == len(rows)
        for r in rows:
            assert set(r) == BLIMP_FIELDS and r["UID"] == f.stem and r["field"] in ("syntax", "morphology")
            assert r["sentence_good"] != r["sentence_bad"]
            assert r["sentence_good"] not in text and r["sentence_bad"] not in text


def test_winoground_format(small_world):
    ev = small_world / "eval" / "winoground"
    rows = _read_jsonl(ev / "winoground.jsonl")
    assert len(rows) == world.EVAL_SIZES["winoground"]
    for i, r in enumerate(rows):
        assert r["image_idx"] == i and isinstance(r["heldout_composition"], bool)
        assert sorted(r["caption_0"].split()) == sorted(r["caption_1"].split()) and r["caption_0"] != r["caption_1"]
        assert (ev / "images" / f"{r['image_key']}.png").exists()


def test_vqa_format(small_world):
    ev = small_world / "eval" / "vqa"
    items = json.loads((ev / "vqa.json").read_text())
    assert len(items) == world.EVAL_SIZES["vqa"]
    assert {it["question_type"] for it in items} == {"color", "shape", "count", "position"}
    for i, it in enumerate(items):
        assert it["idx_in_hf_dataset"] == it["question_id"] == i
        assert len(it["distractors"]) == 7 == len(set(it["distractors"])) and it["target_ans"] not in it["distractors"]
        assert (ev / "images" / f"{it['image_id']}.png").exists()


def test_idempotent(small_world, capsys):
    mtime = (small_world / "world.json").stat().st_mtime_ns
    world.generate_world(small_world, word_budget=BUDGET, seed=0)
    assert world.main(["--out", str(small_world), "--word_budget", str(BUDGET)]) == 0
    assert "up to date" in capsys.readouterr().out
    assert (small_world / "world.json").stat().st_mtime_ns == mtime


def test_cli_refuses_bad_parameters(tmp_path):
    with pytest.raises(SystemExit) as e:
        world.main(["--out", str(tmp_path / "w"), "--caption_fraction", "1.5"])
    assert e.value.code == 2 and not (tmp_path / "w").exists()

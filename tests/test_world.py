"""The built-in world: determinism, budget, formats (babymm's and the official BabyLM 2025
pipeline's, which `datasets` loads offline), truthful captions, Winoground items both ways,
held-out compositions, grammatical eval pairs, EWoK-format inferences, zero-shot labels, eval
sizes."""

import hashlib
import json
import random
import re
from collections import Counter, defaultdict

import numpy as np
import pytest
from PIL import Image

from data_prep import world

BUDGET = 20_000
SCALE = 0.1  # eval sets at a tenth of their size keep these tests fast
SIZES = {k: max(10, round(n * SCALE)) for k, n in world.EVAL_SIZES.items()}  # items per eval file
BLIMP_FIELDS = {"sentence_good", "sentence_bad", "field", "UID", "linguistics_term", "pair_id"}
# ContextType/ContextDiff/TargetDiff: required by the official BabyLM 2025 pipeline's EWoK reader
EWOK_FIELDS = {"Context1", "Context2", "Target1", "Target2", "Domain", "TemplateName", "item_id",
               "ContextType", "ContextDiff", "TargetDiff"}
NEW_BLIMP = ("subject_verb_agreement_long_attractor", "anaphor_agreement", "npi_licensing")
# what the official pipeline's read_files.decode_winoground / decode_vqa read (and babymm's flag)
OFFICIAL_WINOGROUND_FIELDS = {"caption_0", "caption_1", "tag", "secondary_tag", "collapsed_tag", "image_idx",
                              "image_key", "heldout_composition"}
OFFICIAL_VQA_FIELDS = {"question", "target_ans", "distractors", "idx_in_hf_dataset"}


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
    world.generate_world(out, word_budget=BUDGET, seed=0, eval_scale=SCALE)
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


def test_winoground_each_caption_is_true_of_its_own_scene_only():
    w = world.World(world.choose_heldout(0))
    rng = random.Random(0)
    tags = Counter()
    for i in range(500):
        item = world.winoground_item(w, rng, heldout=i % 4 == 0)
        a, b = item.scene_a, item.scene_b
        assert _true_of(a, item.caption_a) and not _true_of(a, item.caption_b), item
        assert _true_of(b, item.caption_b) and not _true_of(b, item.caption_a), item
        assert sorted(item.caption_a.split()) == sorted(item.caption_b.split()) != item.caption_a.split()
        # a held-out item shows a held-out composition in scene A; any other, in neither scene
        assert any(w.is_heldout(o) for o in a) == (i % 4 == 0) and (i % 4 == 0 or not any(map(w.is_heldout, b)))
        tags[item.tag, item.collapsed_tag] += 1
    assert set(tags) == {("Adjective-Color", "Relation"), ("Noun Phrase", "Object")} and min(tags.values()) > 100


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
    world.generate_world(again, word_budget=BUDGET, seed=0, eval_scale=SCALE)
    assert _hashes(again) == _hashes(small_world)
    other = tmp_path / "other"
    world.generate_world(other, word_budget=BUDGET, seed=1, eval_scale=SCALE)
    assert _hashes(other) != _hashes(small_world)


def test_eval_sets_do_not_depend_on_budget(small_world, tmp_path):
    bigger = tmp_path / "bigger"
    world.generate_world(bigger, word_budget=2 * BUDGET, seed=0, eval_scale=SCALE)
    evals = lambda h: {k: v for k, v in h.items() if k.startswith("eval/")}  # noqa: E731
    assert evals(_hashes(bigger)) == evals(_hashes(small_world))
    assert json.loads((bigger / "world.json").read_text())["eval"] == \
        json.loads((small_world / "world.json").read_text())["eval"]


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
        "zeroshot": {a: sum(r["heldout_composition"] for r in _read_jsonl(ev / "zeroshot" / f"{a}.jsonl"))
                     for a in ("shape", "color")},
        "arithmetic": sum(r["heldout_composition"] for r in _read_jsonl(ev / "arithmetic" / "arithmetic.jsonl")),
    }
    assert flagged == m["eval_heldout_composition"]
    assert flagged["captions"] >= 0.15 * SIZES["captions"]
    assert flagged["winoground"] >= 0.2 * SIZES["winoground"] and flagged["vqa"] >= 0.2 * SIZES["vqa"]
    assert all(n >= 0.15 * SIZES["zeroshot"] for n in flagged["zeroshot"].values())


def test_blimp_format(small_world):
    text = set(_text_lines(small_world))
    files = sorted((small_world / "eval" / "blimp").glob("*.jsonl"))
    assert {f.stem for f in files} == {"subject_verb_agreement", "subject_verb_agreement_attractor",
                                       "determiner_noun_agreement", "adjective_order", "negation_auxiliary",
                                       *NEW_BLIMP}
    for f in files:
        rows = _read_jsonl(f)
        assert len(rows) == SIZES["blimp"]
        assert len({(r["sentence_good"], r["sentence_bad"]) for r in rows}) == len(rows)
        for r in rows:
            assert set(r) == BLIMP_FIELDS and r["UID"] == f.stem
            assert r["field"] in ("syntax", "morphology", "semantics")
            assert r["sentence_good"] != r["sentence_bad"]
            assert r["sentence_good"] not in text and r["sentence_bad"] not in text


def test_winoground_format(small_world):
    ev = small_world / "eval" / "winoground"
    rows = _read_jsonl(ev / "winoground.jsonl")
    assert len(rows) == SIZES["winoground"]
    for i, r in enumerate(rows):
        assert r["image_idx"] == i // 2 and r["image_key"] == f"wino_{i // 2:05d}_{i % 2}"
        assert isinstance(r["heldout_composition"], bool)
        assert sorted(r["caption_0"].split()) == sorted(r["caption_1"].split()) and r["caption_0"] != r["caption_1"]
        assert (ev / "images" / f"{r['image_key']}.png").exists()


def test_winoground_items_appear_both_ways(small_world):
    """Row 2i: image A with (caption A, caption B); row 2i + 1: image B with (B, A). So a model
    that ignores the image, and never ties, scores exactly 50% under the strict rule."""
    rows = _read_jsonl(small_world / "eval" / "winoground" / "winoground.jsonl")
    a_rows, b_rows = rows[0::2], rows[1::2]
    assert len(a_rows) == len(b_rows) == SIZES["winoground"] // 2
    for a, b in zip(a_rows, b_rows, strict=True):
        assert (b["caption_0"], b["caption_1"]) == (a["caption_1"], a["caption_0"])
        assert a["image_idx"] == b["image_idx"] and a["image_key"] != b["image_key"]
        assert a["heldout_composition"] == b["heldout_composition"]
        assert {k: a[k] for k in ("tag", "secondary_tag", "collapsed_tag")} == \
            {k: b[k] for k in ("tag", "secondary_tag", "collapsed_tag")}
    ignoring = [r["caption_0"] > r["caption_1"] for r in rows]  # any image-blind score: one fixed order
    assert sum(ignoring) == len(rows) // 2
    assert len({(r["caption_0"], r["caption_1"]) for r in rows}) == len(rows)  # no item twice the same way
    assert {r["collapsed_tag"] for r in rows} == {"Object", "Relation"}


def test_vqa_format(small_world):
    ev = small_world / "eval" / "vqa"
    items = json.loads((ev / "vqa.json").read_text())
    assert len(items) == SIZES["vqa"]
    assert {it["question_type"] for it in items} == {"color", "shape", "count", "position"}
    for i, it in enumerate(items):
        assert it["idx_in_hf_dataset"] == it["question_id"] == i
        assert len(it["distractors"]) == 7 == len(set(it["distractors"])) and it["target_ans"] not in it["distractors"]
        assert (ev / "images" / f"{it['image_id']}.png").exists()


def _pixels(image):
    return np.asarray(image.convert("RGB"))


def test_official_layout_loads_offline_and_indexes_babymm_images(small_world, tmp_path, monkeypatch):
    """`eval/babylm2025/{winoground,vqa}`: the jsonl in the official fields, and `images/` that
    `datasets.load_dataset(dir, split="test")` opens offline and the official readers index
    (`images[image_idx][image_key]`, `images[idx_in_hf_dataset]["image"]`), giving babymm's own
    PNGs, byte for byte."""
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ev = small_world / "eval"
    official = ev / world.OFFICIAL_DIR
    assert sorted(p.name for p in official.iterdir()) == ["vqa", "winoground"]

    own = _read_jsonl(ev / "winoground" / "winoground.jsonl")
    rows = _read_jsonl(official / "winoground" / "winoground.jsonl")
    assert [{**r, "image_key": None} for r in rows] == [{**r, "image_key": None} for r in own]  # the same items
    assert all(set(r) == OFFICIAL_WINOGROUND_FIELDS for r in rows)
    assert all(isinstance(r[k], str) for r in rows for k in ("tag", "secondary_tag", "collapsed_tag"))
    images = datasets.load_dataset(str(official / "winoground" / "images"), split="test", cache_dir=str(tmp_path))
    assert len(images) == len(rows) // 2 and set(images.column_names) == {"id", "image_0", "image_1"}
    assert images.features["image_0"] == datasets.Image()
    for r, mine in zip(rows, own, strict=True):
        assert r["image_key"] in ("image_0", "image_1")
        png = ev / "winoground" / "images" / f"{mine['image_key']}.png"
        image = images[r["image_idx"]][r["image_key"]]
        assert np.array_equal(_pixels(image), _pixels(Image.open(png)))
    raw = images.cast_column("image_1", datasets.Image(decode=False))[3]["image_1"]["bytes"]
    assert raw == (ev / "winoground" / "images" / "wino_00003_1.png").read_bytes()

    items = json.loads((ev / "vqa" / "vqa.json").read_text())
    lines = _read_jsonl(official / "vqa" / "vqa.jsonl")
    assert lines == items and all(OFFICIAL_VQA_FIELDS <= set(it) for it in lines)
    assert all(len(it["distractors"]) == 7 and all(isinstance(d, str) for d in it["distractors"]) for it in lines)
    images = datasets.load_dataset(str(official / "vqa" / "images"), split="test", cache_dir=str(tmp_path))
    assert len(images) == len(items) and "image" in images.column_names
    for it in items:
        png = ev / "vqa" / "images" / f"{it['image_id']}.png"
        assert np.array_equal(_pixels(images[it["idx_in_hf_dataset"]]["image"]), _pixels(Image.open(png)))
    # another image is told apart: the check can fail
    assert not np.array_equal(_pixels(images[0]["image"]), _pixels(images[1]["image"]))


def test_idempotent(small_world, capsys):
    mtime = (small_world / "world.json").stat().st_mtime_ns
    world.generate_world(small_world, word_budget=BUDGET, seed=0, eval_scale=SCALE)
    assert world.main(["--out", str(small_world), "--word_budget", str(BUDGET), "--eval_scale", str(SCALE)]) == 0
    assert "up to date" in capsys.readouterr().out
    assert (small_world / "world.json").stat().st_mtime_ns == mtime


def test_cli_refuses_bad_parameters(tmp_path):
    with pytest.raises(SystemExit) as e:
        world.main(["--out", str(tmp_path / "w"), "--caption_fraction", "1.5"])
    assert e.value.code == 2 and not (tmp_path / "w").exists()


def test_cli_refuses_bad_eval_scale(tmp_path):
    with pytest.raises(SystemExit) as e:
        world.main(["--out", str(tmp_path / "w"), "--eval_scale", "0"])
    assert e.value.code == 2 and not (tmp_path / "w").exists()


# ---------------------------------------------------------------------------- eval sizes


def test_eval_sizes_follow_the_scale():
    assert world.eval_sizes(1.0) == world.EVAL_SIZES
    assert world.EVAL_SIZES["winoground"] >= 1000 and world.EVAL_SIZES["vqa"] >= 1000
    assert world.EVAL_SIZES["captions"] >= 1000 and world.EVAL_SIZES["blimp"] >= 300
    assert world.eval_sizes(0.5)["winoground"] == 500 and world.eval_sizes(0.5)["blimp"] == 150
    assert world.eval_sizes(0.1234)["winoground"] == 124  # 123.4 rows: whole items, two rows each
    assert set(world.eval_sizes(0.0001).values()) == {10}  # never fewer than 10 items


def _eval_counts(root):
    """Items in every eval file, counted from the files."""
    ev = root / "eval"
    return {
        "blimp": {f.stem: len(_read_jsonl(f)) for f in (ev / "blimp").glob("*.jsonl")},
        "ewok": {f.stem: len(_read_jsonl(f)) for f in (ev / "ewok").glob("*.jsonl")},
        "winoground": len(_read_jsonl(ev / "winoground" / "winoground.jsonl")),
        "vqa": len(json.loads((ev / "vqa" / "vqa.json").read_text())),
        "captions": len(_read_jsonl(ev / "captions" / "heldout.jsonl")),
        "arithmetic": len(_read_jsonl(ev / "arithmetic" / "arithmetic.jsonl")),
        "zeroshot": {f.stem: len(_read_jsonl(f)) for f in (ev / "zeroshot").glob("*.jsonl")},
        "devbench": {f"n_{k}": len((ev / "devbench" / "assets" / task / "manifest.csv").read_text().splitlines()) - 1
                     for k, task in (("vocab", "lex-viz_vocab"), ("trog", "gram-trog"), ("things", "sem-things"))},
    }


def test_eval_sizes_honour_eval_scale_and_smaller_scales_are_prefixes(small_world, tmp_path):
    m = json.loads((small_world / "world.json").read_text())
    assert m["params"]["eval_scale"] == SCALE
    counts = _eval_counts(small_world)
    assert counts == m["eval"]
    assert set(counts["blimp"].values()) == {SIZES["blimp"]} and len(counts["blimp"]) == 8
    assert set(counts["ewok"].values()) == {SIZES["ewok"]} and len(counts["ewok"]) >= 2
    assert set(counts["zeroshot"].values()) == {SIZES["zeroshot"]} and set(counts["zeroshot"]) == {"shape", "color"}
    assert [counts[k] for k in ("winoground", "vqa", "captions", "arithmetic")] == \
        [SIZES[k] for k in ("winoground", "vqa", "captions", "arithmetic")]

    half = tmp_path / "half"
    world.generate_world(half, word_budget=BUDGET, seed=0, eval_scale=SCALE / 2)
    assert _eval_counts(half)["winoground"] == world.eval_sizes(SCALE / 2)["winoground"] < SIZES["winoground"]
    small, other = _hashes(small_world), _hashes(half)
    # training data does not depend on the scale of the eval sets...
    assert {k: v for k, v in other.items() if not k.startswith("eval/") and k != "world.json"} == \
        {k: v for k, v in small.items() if not k.startswith("eval/") and k != "world.json"}
    # ...and a smaller scale writes a prefix of every eval file, and the same images
    for rel, digest in other.items():
        if rel.endswith(".png"):
            assert small[rel] == digest, rel
        elif rel.endswith(".jsonl"):
            lines = (half / rel).read_text().splitlines()
            assert lines == (small_world / rel).read_text().splitlines()[:len(lines)], rel
    vqa = json.loads((half / "eval" / "vqa" / "vqa.json").read_text())
    assert vqa == json.loads((small_world / "eval" / "vqa" / "vqa.json").read_text())[:len(vqa)]
    import pyarrow.parquet as pq

    for task in ("winoground", "vqa"):  # the official layout's images too
        rel = f"eval/{world.OFFICIAL_DIR}/{task}/images/test.parquet"
        part, full = pq.read_table(half / rel).to_pylist(), pq.read_table(small_world / rel).to_pylist()
        assert 0 < len(part) < len(full) and part == full[:len(part)], rel


# ---------------------------------------------------------------------------- a hand-written grammar
# Parses the new BLiMP-format sentences with its own lexicon of number, gender and agreement.

GENDER = {"boy": "m", "girl": "f", "man": "m", "woman": "f", "mom": "f", "dad": "m"}
THIRD_PERSON = {"see": "sees", "like": "likes", "want": "wants", "have": "has", "find": "finds",
                "help": "helps", "wash": "washes"}
PARTICIPLE = {"seen", "liked", "wanted", "had", "found", "helped", "washed"}
ANIMATE = set(GENDER) | {"dog", "cat", "bird", "duck", "bear", "frog"}
ADJECTIVES = set(world.SIZES) | set(world.COLORS)
PREDICATES = set(world.TRAITS) | set(world.COLORS)


def _plural_of(noun):
    return {"man": "men", "woman": "women"}.get(noun, noun + ("es" if noun.endswith(("s", "x")) else "s"))


NOUN_FORMS = {form: (noun, form != noun) for noun in [*world.THINGS, *GENDER] for form in (noun, _plural_of(noun))}


def _tokens(sentence):
    assert sentence.endswith((".", "?")), sentence
    return sentence[:-1].replace("next to", "next_to").split() + [sentence[-1]]


def _np(toks, i, dets=("the", "a", "an")):
    """(noun, plural, next index) for a noun phrase at toks[i]: determiner, up to two adjectives
    in size-colour order (none on people), noun; the article agrees in number and sound."""
    if i >= len(toks) or toks[i] not in dets:
        return None
    j = i + 1
    while j < len(toks) and toks[j] in ADJECTIVES:
        j += 1
    if j >= len(toks) or toks[j] not in NOUN_FORMS:
        return None
    noun, plural = NOUN_FORMS[toks[j]]
    adjs = toks[i + 1:j]
    if len(adjs) > 2 or (adjs and noun in GENDER):
        return None
    if len(adjs) == 2 and not (adjs[0] in world.SIZES and adjs[1] in world.COLORS):
        return None
    if toks[i] in ("a", "an") and (plural or toks[i] != ("an" if toks[i + 1][0] in "aeiou" else "a")):
        return None
    return noun, plural, j + 1


def _agrees(verb, plural):
    return verb in (THIRD_PERSON if plural else THIRD_PERSON.values())


def _pp_np(toks, i):
    """A prepositional phrase at toks[i]: (noun, plural, next index) of its object."""
    if i < len(toks) and toks[i] in ("near", "behind", "next_to", "under", "on"):
        return _np(toks, i + 1)
    return None


def _end(toks, i):
    return i == len(toks) - 1 and toks[i] == "."


def _long_attractor(sentence):
    """Positions a bad sentence may change (the main verb), or None if ungrammatical: the head
    noun agrees with the main verb across a relative clause or two PPs whose last noun has the
    other number."""
    toks = _tokens(sentence)
    head = _np(toks, 0)
    if head is None:
        return None
    _, plural, i = head
    if i < len(toks) and toks[i] == "that":
        inner = _np(toks, i + 1)
        if inner is None or inner[0] not in ANIMATE or inner[1] == plural or not _agrees(toks[inner[2]], inner[1]):
            return None
        i = inner[2] + 1
    else:
        mid = _pp_np(toks, i)
        last = mid and _pp_np(toks, mid[2])
        if not last or last[1] == plural:
            return None
        i = last[2]
    if toks[i] in ("is", "are"):
        ok = (toks[i] == "are") == plural and toks[i + 1] in PREDICATES and _end(toks, i + 2)
    else:
        obj = _np(toks, i + 1)
        ok = _agrees(toks[i], plural) and obj is not None and _end(toks, obj[2])
    return {i} if ok else None


def _anaphor(sentence):
    """The reflexive's position, or None: "the N [PREP NP] V REFL." with V agreeing with N and the
    reflexive matching N's number and (for people) gender, whatever the attractor is."""
    toks = _tokens(sentence)
    head = _np(toks, 0, dets=("the",))
    if head is None or head[0] not in ANIMATE:
        return None
    noun, plural, i = head
    attractor = _pp_np(toks, i)
    if attractor:
        i = attractor[2]
    expected = "themselves" if plural else {"m": "himself", "f": "herself"}.get(GENDER.get(noun), "itself")
    ok = i + 2 < len(toks) and _agrees(toks[i], plural) and toks[i + 1] == expected and _end(toks, i + 2)
    return {i + 1} if ok else None


def _npi(sentence):
    """Where "no" may be, or None: "no N [that the M V] has/have ever PARTICIPLE NP." - only "no"
    on the subject licenses "ever"; not "the"/"a", nor "no" inside the relative clause."""
    toks = _tokens(sentence)
    head = _np(toks, 0, dets=("no",))
    if head is None or head[0] not in ANIMATE:
        return None
    _, plural, i = head
    where = {0}
    if toks[i] == "that":
        inner = _np(toks, i + 1, dets=("the",))
        if inner is None or inner[0] not in ANIMATE or not _agrees(toks[inner[2]], inner[1]):
            return None
        where.add(i + 1)
        i = inner[2] + 1
    obj = _np(toks, i + 3)
    ok = (toks[i] == ("have" if plural else "has") and toks[i + 1] == "ever" and toks[i + 2] in PARTICIPLE
          and obj is not None and _end(toks, obj[2]))
    return where if ok else None


GRAMMAR = {"subject_verb_agreement_long_attractor": _long_attractor, "anaphor_agreement": _anaphor,
           "npi_licensing": _npi}


def _check_pair(subtask, good, bad):
    """The good sentence parses; the bad one does not, and differs only where intended."""
    parse = GRAMMAR[subtask]
    where = parse(good)
    assert where is not None, (subtask, good)
    assert parse(bad) is None, (subtask, bad)
    g, b = _tokens(good), _tokens(bad)
    assert len(g) == len(b) and {k for k in range(len(g)) if g[k] != b[k]} == where, (good, bad)
    if len(where) == 2:  # "no" moved into the relative clause: the same words
        assert sorted(g) == sorted(b) and b[max(where)] == "no", (good, bad)


def test_grammar_check_is_not_vacuous():
    good = {"subject_verb_agreement_long_attractor": [
                "the dog that the cats see is happy.", "the cups near the boxes behind the ball are red.",
                "a small ball that the girls like has the boxes."],
            "anaphor_agreement": ["the boys see themselves.", "the girl near the boys likes herself.",
                                  "the dog behind the cats finds itself."],
            "npi_licensing": ["no dog has ever seen the ball.", "no men that the cat likes have ever had a cup."]}
    bad = {"subject_verb_agreement_long_attractor": [
                "the dog that the cats see are happy.", "the cups near the boxes behind the ball is red.",
                "the dog that the cat sees is happy.", "the cup near the box behind the boxes are red.",
                "the cup near the boxes behind the ball is red.", "a balls that the girl likes are red."],
           "anaphor_agreement": ["the boys see himself.", "the girl near the boys likes themselves.",
                                 "the boy sees herself.", "the dog sees themselves.", "the boy see himself.",
                                 "the red boy sees himself."],
           "npi_licensing": ["the dog has ever seen the ball.", "a dog has ever seen the ball.",
                             "the dog that no cat likes has ever seen the ball.", "no dogs has ever seen the ball.",
                             "no dog has seen ever the ball.", "no dog that the cats likes has ever seen the ball."]}
    for subtask, parse in GRAMMAR.items():
        assert all(parse(s) is not None for s in good[subtask]), subtask
        assert not any(parse(s) is not None for s in bad[subtask]), subtask


def test_new_blimp_pairs_are_grammatical_minimal_pairs(small_world):
    for subtask in NEW_BLIMP:
        rows = world.blimp_rows(1, subtask, world.EVAL_SIZES["blimp"]) + \
            _read_jsonl(small_world / "eval" / "blimp" / f"{subtask}.jsonl")
        for r in rows:
            _check_pair(subtask, r["sentence_good"], r["sentence_bad"])


def test_new_blimp_pairs_are_varied():
    """Each new subtask mixes its constructions (not one template that a model could memorise)."""
    rows = {s: world.blimp_rows(0, s, world.EVAL_SIZES["blimp"]) for s in NEW_BLIMP}
    goods = {s: [r["sentence_good"] for r in rs] for s, rs in rows.items()}
    assert 0.3 < sum(" that " in g for g in goods["subject_verb_agreement_long_attractor"]) / 300 < 0.7
    assert 0.3 < sum(" that " in g for g in goods["npi_licensing"]) / 300 < 0.7
    refl = Counter(g.split()[-1] for g in goods["anaphor_agreement"])
    assert set(refl) == {"himself.", "herself.", "itself.", "themselves."}
    assert 0.3 < sum(len(g.split()) > 4 for g in goods["anaphor_agreement"]) / 300  # with an attractor


# ---------------------------------------------------------------------------- EWoK format, checked independently

RELATION = {"to the left of": ("x", 1), "to the right of": ("x", -1), "above": ("y", 1), "below": ("y", -1),
            "in front of": ("z", 1), "behind": ("z", -1)}  # (axis, +1: subject comes first on it)
SPATIAL_FACT = re.compile(r"(the (?:\w+ )?\w+) is (to the left of|to the right of|above|below|in front of|behind) "
                          r"(the (?:\w+ )?\w+)")


def _sentences(text):
    assert text.endswith("."), text
    return text[:-1].split(". ")


def _spatial(context, target):
    """True if the target relation follows from the context's, False if its opposite does."""
    after = defaultdict(set)  # (axis, a) -> things right after a on that axis

    def follows(axis, a, b):  # is b after a, directly or through others?
        todo, seen = [a], set()
        while todo:
            x = todo.pop()
            if b in after[axis, x]:
                return True
            seen.add(x)
            todo += [y for y in after[axis, x] if y not in seen]
        return False

    def fact(sentence):
        a, rel, b = re.fullmatch(SPATIAL_FACT, sentence).groups()
        axis, sign = RELATION[rel]
        return (axis, a, b) if sign > 0 else (axis, b, a)

    for s in _sentences(context):
        axis, first, second = fact(s)
        after[axis, first].add(second)
    axis, first, second = fact(_sentences(target)[0])
    if follows(axis, first, second):
        return True
    assert follows(axis, second, first), (context, target)  # the context decides every target
    return False


def _person(context, pronoun):
    """The one person in the context a pronoun can name (by gender)."""
    gender = {"he": "m", "him": "m", "she": "f", "her": "f"}[pronoun]
    named = {w for w in context.replace(".", " ").split() if GENDER.get(w) == gender}
    assert len(named) == 1, (context, pronoun)
    return named.pop()


def _holdings(context):
    """Who has what after the context: {person: Counter((colour or None, thing))}."""
    has = defaultdict(Counter)
    last_thing = None
    for clause in (c for s in _sentences(context) for c in s.split(" and ")):
        if m := re.fullmatch(r"the (\w+) is (\w+)", clause):  # "the ball is red" (nobody holds it yet)
            last_thing = (m[2], m[1])
        elif m := re.fullmatch(r"then the (\w+) gives it to the (\w+)", clause):
            has[m[2]][last_thing] += 1
        elif m := re.fullmatch(r"the (\w+) has the (\w+) (\w+)", clause):  # "the boy has the red ball"
            has[m[1]][(m[2], m[3])] += 1
        elif clause == "then they trade":
            (p, a), (q, b) = [(who, next(iter(h))) for who, h in has.items()]
            has[p], has[q] = Counter([b]), Counter([a])
        elif m := re.fullmatch(r"the (\w+) has (\w+) (?:(\w+) )?(\w+)", clause):  # "the boy has three (red) balls"
            noun = m[4] if m[2] == "one" else SINGULAR_THING[m[4]]
            has[m[1]][(m[3], noun)] += NUM[m[2]]
        elif m := re.fullmatch(r"then (he|she) gives one to the (\w+)", clause):
            p = _person(context, m[1])
            (kind,) = has[p]
            has[p][kind] -= 1
        elif m := re.fullmatch(r"then the (\w+) gives one to (him|her)", clause):
            p = _person(context, m[2])
            (kind,) = has[p]
            has[p][kind] += 1
        else:
            raise AssertionError(f"unparsed: {clause!r}")
    return has


SINGULAR_THING = {p: s for s, p in world.THING_PLURAL.items()}


def _possession(context, target):
    """Whether "now the P has the C T.", "now the P has N [C] Ts." or "the P has more [C] Ts than
    the Q." is true after the context."""
    has = _holdings(context)
    if m := re.fullmatch(r"now the (\w+) has the (\w+) (\w+)\.", target):
        return has[m[1]][(m[2], m[3])] > 0
    if m := re.fullmatch(r"the (\w+) has more (?:(\w+) )?(\w+) than the (\w+)\.", target):
        kind = (m[2], SINGULAR_THING[m[3]])
        return has[m[1]][kind] > has[m[4]][kind]
    m = re.fullmatch(r"now the (\w+) has (\w+) (?:(\w+) )?(\w+)\.", target)
    assert m, target
    noun = m[4] if m[2] == "one" else SINGULAR_THING[m[4]]
    assert m[4] == (noun if m[2] == "one" else world.THING_PLURAL[noun]), target  # number agreement
    return has[m[1]][(m[3], noun)] == NUM[m[2]]


def _ewok_true(domain, context, target):
    return _spatial(context, target) if domain == "spatial_relations" else _possession(context, target)


def _check_ewok(r):
    d = r["Domain"]
    assert _ewok_true(d, r["Context1"], r["Target1"]) and not _ewok_true(d, r["Context2"], r["Target1"]), r
    assert _ewok_true(d, r["Context2"], r["Target2"]) and not _ewok_true(d, r["Context1"], r["Target2"]), r


def test_ewok_check_is_not_vacuous():
    assert _spatial("the ball is to the left of the cup.", "the cup is to the right of the ball.")
    assert not _spatial("the ball is to the left of the cup.", "the cup is to the left of the ball.")
    assert _spatial("the ball is above the cup. the cup is above the box.", "the ball is above the box.")
    assert not _spatial("the ball is above the cup. the cup is above the box.", "the box is above the ball.")
    assert not _spatial("the ball is behind the cup. the cup is behind the box.", "the ball is in front of the box.")
    give = "the ball is red. then the boy gives it to the girl."
    assert _possession(give, "now the girl has the red ball.") and not _possession(give, "now the girl has the blue ball.")
    trade = "the boy has the red ball and the girl has the blue ball. then they trade."
    assert _possession(trade, "now the girl has the red ball.") and not _possession(trade, "now the boy has the red ball.")
    count = "the boy has three red balls. then he gives one to the girl."
    assert _possession(count, "now the boy has two red balls.")
    assert not _possession(count, "now the boy has four red balls.")
    assert not _possession("the boy has two cups. then the girl gives one to him.", "now the boy has one cup.")
    more = "the boy has one cup and the girl has three cups."
    assert _possession(more, "the girl has more cups than the boy.")
    assert not _possession(more, "the boy has more cups than the girl.")


def test_ewok_targets_follow_from_their_contexts(small_world):
    files = sorted((small_world / "eval" / "ewok").glob("*.jsonl"))
    assert {f.stem for f in files} >= {"spatial_relations", "property_persistence", "quantity"}
    for f in files:
        rows = _read_jsonl(f)
        assert len(rows) == SIZES["ewok"] and len({(r["Context1"], r["Target1"]) for r in rows}) == len(rows)
        assert [r["item_id"] for r in rows] == list(range(len(rows)))
        assert all(set(r) == EWOK_FIELDS and r["Domain"] == f.stem for r in rows)
        full = world.ewok_rows(1, f.stem, world.EVAL_SIZES["ewok"])
        assert len({r["TemplateName"] for r in full}) >= 2  # more than one kind of inference per domain
        for r in rows + full:
            _check_ewok(r)


# ---------------------------------------------------------------------------- eval items vs the text corpus


def test_no_eval_item_in_the_text_corpus(small_world):
    """No BLiMP-format sentence and no EWoK-format context-target line (of the full-size sets,
    which a smaller eval_scale still leaves out) occurs in the text."""
    lines = _text_lines(small_world)
    text = set(lines)
    corpus = "\n".join(lines)
    for subtask in world.BLIMP:
        for r in world.blimp_rows(0, subtask, world.EVAL_SIZES["blimp"]):
            assert r["sentence_good"] not in text and r["sentence_bad"] not in text, r
    for domain in world.EWOK:
        for r in world.ewok_rows(0, domain, world.EVAL_SIZES["ewok"]):
            for c in (r["Context1"], r["Context2"]):
                for t in (r["Target1"], r["Target2"]):
                    assert f"{c} {t}" not in corpus, (c, t)


def _licensed_ever(line):
    """ "ever" appears only where licensed: "no" on the subject, "not ever", or a question."""
    toks = _tokens(line)
    if "ever" not in toks:
        return True
    k = toks.index("ever")
    subject_no = toks[0] == "no" and "no" not in toks[1:]
    return subject_no or toks[k - 1] == "not" or toks[-1] == "?"


def test_text_corpus_teaches_the_new_phenomena(small_world):
    text = small_world / "text"
    narration = (text / "narration.train").read_text().splitlines()
    reflexive = [s for s in narration if s.split()[-1].rstrip(".").endswith(("self", "selves"))]
    relative = [s for s in narration if " that " in s and "ever" not in s and s.split()[0] != "no"
                and "that no" not in s]
    ever = [s for s in narration if " ever " in s]
    assert len(reflexive) > 20 and len(relative) > 20 and len(ever) > 10
    assert all(_anaphor(s) is not None for s in reflexive)
    assert all(_long_attractor(s) is not None for s in relative)
    assert all(_licensed_ever(s) for s in narration)
    assert any(s.startswith("no ") and " ever " in s for s in narration)
    assert any("that no" in s for s in narration)  # "no" in a relative clause, without "ever"
    assert not _licensed_ever("the dog that no cat likes has ever seen the ball.")
    # stories: a context and its consequence on one line, for every EWoK-format domain
    stories = (text / "stories.train").read_text().splitlines()
    kinds = Counter("trade" if "they trade" in s else "gives one" if "gives one" in s else "more" if " more " in s
                    else "give" if "gives it" in s else "spatial" for s in stories)
    assert min(kinds.values()) > 0.05 * len(stories) and len(kinds) == 5
    for s in stories[:300]:
        *context, target = _sentences(s)
        domain = "spatial_relations" if SPATIAL_FACT.fullmatch(target) else "possession"
        assert _ewok_true(domain, ". ".join(context) + ".", target + "."), s


# ---------------------------------------------------------------------------- zero-shot classification


def _object_pixels(path):
    """The colours drawn over the background, and the share of its bounding box the object fills."""
    with Image.open(path) as im:
        px = im.convert("RGB").load()
        size = im.size
    pts = [(x, y) for x in range(size[0]) for y in range(size[1]) if px[x, y] != world.BACKGROUND]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    fill = len(pts) / ((max(xs) - min(xs) + 1) * (max(ys) - min(ys) + 1))
    return {px[p] for p in pts}, fill


def test_zeroshot_labels_are_the_drawn_object(small_world):
    ev = small_world / "eval" / "zeroshot"
    held = world.choose_heldout(0)
    w = world.World(held)
    for attr, classes in (("shape", world.SHAPES), ("color", list(world.COLORS))):
        rows = _read_jsonl(ev / f"{attr}.jsonl")
        assert len(rows) == SIZES["zeroshot"]
        assert all(r["labels"] == classes and r["label"] in classes for r in rows)
        per_class = Counter(r["label"] for r in rows)
        assert set(per_class) == set(classes) and max(per_class.values()) - min(per_class.values()) <= 1
        rng = random.Random(f"zeroshot-{attr}-0")
        for i, r in enumerate(rows):
            path = ev / r["image"]
            colours, fill = _object_pixels(path)
            assert len(colours) == 1, (path, colours)  # one object, one colour
            colour = next(name for name, rgb in world.COLORS.items() if colours == {rgb})
            if attr == "color":
                assert r["label"] == colour, r
            # re-generate the scene: the label is the drawn object's, bytes and all
            obj = world.zeroshot_object(w, rng, attr, i)
            assert world.render([obj], 32, rng) == path.read_bytes()
            assert obj.color == colour and getattr(obj, attr) == r["label"]
            assert r["heldout_composition"] == ((obj.color, obj.shape) in held)
            assert (fill == 1.0) == (obj.shape == "square"), (r, fill)  # only a square fills its box
            if obj.shape == "circle":
                assert fill > 0.7, (r, fill)

"""SIMAT-style multimodal arithmetic: the score against hand computations on hand-made
embeddings, the world's transformations read back from their pixels and words, an existing
world gaining the set alone, SIMAT's own layout (and the refusals of a bad one), and the task
end to end through `eval.run` against a naive per-item recomputation."""

import dataclasses
import hashlib
import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from babymm.files import DataError
from babymm.images import load_image
from babymm.models import DecoderConfig, build_model, load_model, save_model
from babymm.tokenizer import load_tokenizer
from data_prep import world
from eval import arithmetic as ar
from eval import run as eval_run
from eval.multimodal import TaskSkipped

SCALE = 0.1  # the tiny world's (tests/conftest.py)
N_ITEMS = 12  # transformations of the end-to-end subset
R2 = math.sqrt(2)


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------------- the math by hand
# Database of four images in 2-d (already unit length), and the word embeddings:
#   0 [1, 0]     "red circle"      red   [1, 0]
#   1 [0, 1]     "blue circle"     blue  [0, 1]
#   2 [.8, .6]   "red circle"      green [.6, .8]
#   3 [-.6, .8]  "green circle"
# item 0: image 0, red -> blue: query [1,0] + [-1,1] = [0,1]: image 1 (1.0) -> blue circle, a hit
# item 1: image 2, red -> green: query [.8,.6] + [-.4,.8] = [.4,1.4]: image 1 (1.4) beats image 3
#         (.88) -> blue circle, not green: a miss
# item 2: image 1, blue -> red: query [0,1] + [1,-1] = [1,0]: image 0 (1.0) -> red circle, a hit
# no delta: item 0 [1,0] -> image 2 (.8, red); item 1 [.8,.6] -> image 0 (.8, red); item 2
#   [0,1] -> image 3 (.8, green): all misses
# weights 1/sqrt(count of old word): red twice, blue once: (1/R2, 1/R2, 1) / (R2 + 1)
IMAGES = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6], [-0.6, 0.8]])
CAPTIONS = ["red circle", "blue circle", "red circle", "green circle"]
CLASSES = ["blue circle", "green circle", "red circle"]
SHOWS = np.array([[c == k for k in CLASSES] for c in CAPTIONS])
WORDS = {"red": [1.0, 0.0], "blue": [0.0, 1.0], "green": [0.6, 0.8]}
SOURCE = np.array([0, 2, 1])
OLD, NEW = ["red", "red", "blue"], ["blue", "green", "red"]
TARGET = np.array([CLASSES.index(c) for c in ("blue circle", "green circle", "red circle")])
WEIGHTS = np.array([1 / R2, 1 / R2, 1.0]) / (R2 + 1)


def _emb(words, scale=1.0):
    return torch.tensor([WORDS[w] for w in words]) * scale


def test_weights_chance_and_queries_by_hand():
    assert ar.simat_weights(OLD) == pytest.approx(WEIGHTS)
    # chance: the other images showing the target / 3: blue 1 (image 1), green 1 (3), red 2 (0 and 2)
    assert ar.exact_chance(SHOWS, SOURCE, TARGET) == pytest.approx([1 / 3, 1 / 3, 2 / 3])
    # every input is normalised first, so a scaled word or image changes nothing
    q = ar.simat_queries(IMAGES[SOURCE] * 3, _emb(OLD, 5.0), _emb(NEW, 0.5), lam=1.0)
    assert q.numpy() == pytest.approx(np.array([[0, 1], [0.4, 1.4], [1, 0]]))
    assert ar.simat_queries(IMAGES[SOURCE], _emb(OLD), _emb(NEW), lam=0.0).numpy() == pytest.approx(IMAGES[SOURCE].numpy())


def test_score_against_a_hand_computation():
    metrics, items = ar.score_arithmetic(IMAGES, _emb(OLD), _emb(NEW), SOURCE, SHOWS, TARGET, WEIGHTS,
                                         kinds=["color", "color", "other"], donors=np.array([1, 0, 0]))
    assert items["hit"].tolist() == [True, False, True]  # the delta makes item 0 and 2 right, not item 1
    assert items["retrieved"].tolist() == [1, 1, 0]
    assert metrics["accuracy"] == pytest.approx(1 / R2)  # (1/R2 + 1) / (R2 + 1)
    assert metrics["accuracy_unweighted"] == pytest.approx(2 / 3)
    assert metrics["no_delta"] == 0.0 and items["hit_no_delta"].tolist() == [False] * 3
    # chance: (1/R2 * 1/3 + 1/R2 * 1/3 + 2/3) / (R2 + 1)
    assert metrics["chance"] == pytest.approx((R2 / 3 + 2 / 3) / (R2 + 1))
    # shuffled: item 0 borrows item 1's delta (green - red): [.6,.8] -> image 2 (.96), red: miss;
    # items 1 and 2 borrow item 0's (blue - red): [-.2,1.6] -> image 1, blue: miss; [-1,2] ->
    # image 3, green: miss
    assert metrics["shuffled"] == 0.0 and items["hit_shuffled"].tolist() == [False] * 3
    assert metrics["n"] == 3 and metrics["database_size"] == 4 and metrics["lambda"] == 1.0
    assert metrics["by_lambda"]["1"] == metrics["accuracy"] and metrics["by_lambda"]["0"] == 0.0
    # lambda 2: item 0 [-1,2] -> image 3 green (miss); item 1 [0,2.2] -> image 1 blue (miss); item 2
    # [2,-1] -> image 0 red (hit): 1 / (R2 + 1)
    assert metrics["by_lambda"]["2"] == pytest.approx(1 / (R2 + 1))
    assert metrics["kinds"]["color"] == pytest.approx({"accuracy": 0.5, "chance": 1 / 3, "no_delta": 0.0,
                                                       "shuffled": 0.0, "n": 2})
    assert metrics["kinds"]["other"]["accuracy"] == 1.0 and metrics["kinds"]["other"]["n"] == 1
    assert metrics["accuracy_ci95_low"] <= metrics["accuracy"] <= metrics["accuracy_ci95_high"]
    assert "heldout_composition" not in metrics


def test_the_source_is_never_retrieved_and_ties_go_against_the_target():
    # the query is the source image itself (lambda 0): without the exclusion it would find itself
    hits, picked = ar.retrieve(IMAGES[[0]], IMAGES, np.array([0]), SHOWS, np.array([CLASSES.index("red circle")]))
    assert picked.tolist() == [2] and hits.tolist() == [True]  # image 2, the other red circle
    # a collapsed model: every image the same embedding, every one tied: no hit, though two of
    # the three others show the target, and chance says 2/3
    same = torch.ones(4, 2)
    hits, picked = ar.retrieve(same[[1]], same, np.array([1]), SHOWS, np.array([CLASSES.index("red circle")]))
    assert hits.tolist() == [False] and picked.tolist() == [3]  # the tied image that is wrong
    # a tie between right images only is a hit
    two = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, -1.0]])
    hits, _ = ar.retrieve(torch.tensor([[1.0, 0.0]]), two, np.array([1]), SHOWS, np.array([CLASSES.index("red circle")]))
    assert hits.tolist() == [True]
    # NaN embeddings retrieve nothing
    nan = torch.full((4, 2), float("nan"))
    hits, picked = ar.retrieve(nan[[0]], nan, np.array([0]), SHOWS, np.array([0]))
    assert hits.tolist() == [False] and picked.tolist() == [-1]


def test_shuffled_donors_are_fixed_same_kind_and_another_word():
    kinds = ["color", "color", "color", "shape", "shape", "odd"]
    new = ["blue", "blue", "red", "star", "ring", "blue"]
    donors = ar.shuffled_donors(kinds, new)
    assert donors.tolist() == ar.shuffled_donors(kinds, new).tolist()  # seeded
    assert donors[0] == 2 and donors[1] == 2 and donors[2] in (0, 1)  # the only same-kind donors with another word
    assert donors[3] == 4 and donors[4] == 3
    assert new[donors[5]] != "blue"  # no other "odd" item: any kind, another word
    assert ar.shuffled_donors(["color"], ["blue"]).tolist() == [0]  # nothing to borrow


# ---------------------------------------------------------------------------- the world's set


def _pixels(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).reshape(-1, 3)


def _count(pixels, color):
    return int((pixels == np.array(world.COLORS[color])).all(axis=1).sum())


def test_world_items_show_the_swap(tiny_world):
    """Every target shows the new word and differs from its source only there: read from the
    captions' words and from the images' own pixels."""
    d = tiny_world / "eval" / "arithmetic"
    rows = _jsonl(d / "arithmetic.jsonl")
    heldout = set(json.loads((tiny_world / "world.json").read_text())["heldout_compositions"])
    assert len(rows) == max(10, round(400 * SCALE)) == 40
    assert len({r["source"] for r in rows} | {r["target"] for r in rows}) == 2 * len(rows)
    assert len(list((d / "images").glob("*.png"))) == 2 * len(rows)
    for i, r in enumerate(rows):
        assert r["kind"] == ("color", "shape")[i % 2]
        src, tgt = r["source_caption"].split(), r["target_caption"].split()
        assert len(src) == len(tgt) == 3 and src[0] in ("a", "an") and tgt[0] in ("a", "an")
        at = 1 if r["kind"] == "color" else 2
        assert (src[at], tgt[at]) == (r["old"], r["new"]) and r["old"] != r["new"]
        assert src[3 - at] == tgt[3 - at]  # the other attribute is the same
        assert r["old"] in (world.COLORS if r["kind"] == "color" else world.SHAPES)
        assert r["new"] in (world.COLORS if r["kind"] == "color" else world.SHAPES)
        # the pixels: the target is painted in its colour, and a colour swap removes the old one
        before, after = _pixels(d / r["source"]), _pixels(d / r["target"])
        colour = tgt[1]
        assert _count(after, colour) > 0 and _count(before, src[1]) > 0
        if r["kind"] == "color":
            assert _count(after, r["old"]) == 0 and _count(before, r["new"]) == 0
        else:
            assert src[1] == colour
        # a quarter of the items turn a seen composition into a held-out one
        assert (" ".join(tgt[1:]) in heldout) == r["heldout_composition"] == ((i // 2) % 4 == 1)
        assert " ".join(src[1:]) not in heldout
    assert sum(r["heldout_composition"] for r in rows) == 10


def test_a_world_made_before_the_set_gets_it_and_nothing_else_changes(tiny_world, tmp_path):
    """Same parameters: the set is added alone, as a fresh world writes it; training files keep
    their bytes and modification times, and the manifest becomes a fresh world's."""
    old = tmp_path / "world"
    for part in ("captions", "eval", "images", "text"):
        shutil.copytree(tiny_world / part, old / part)
    shutil.rmtree(old / "eval" / "arithmetic")
    fresh = json.loads((tiny_world / "world.json").read_text())
    before = {**fresh, "eval": {k: v for k, v in fresh["eval"].items() if k != "arithmetic"},
              "eval_heldout_composition": {k: v for k, v in fresh["eval_heldout_composition"].items()
                                           if k != "arithmetic"}, "sha256": "from before the set"}
    (old / "world.json").write_text(json.dumps(before))
    (old / "prepared").mkdir()
    (old / "prepared" / "stage.json").write_text("{}")
    stamps = {p: p.stat().st_mtime_ns for p in old.rglob("*") if p.is_file() and p.name != "world.json"}

    from data_prep.pipeline import _world_for

    _world_for(old, None, 32, build_world=True)  # what training does with such a world: adds the set
    manifest = json.loads((old / "world.json").read_text())

    assert manifest == fresh
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    digest = lambda root: {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
                           for p in sorted((root / "eval" / "arithmetic").rglob("*")) if p.is_file()}
    assert digest(old) == digest(tiny_world) and len(digest(old)) == 81
    # and a second call changes nothing
    mtime = (old / "world.json").stat().st_mtime_ns
    world.generate_world(old, word_budget=20_000, seed=0, eval_scale=SCALE)
    assert (old / "world.json").stat().st_mtime_ns == mtime


def test_an_oracle_embedding_solves_the_world_set_and_its_controls_do_not(tiny_world):
    """Images embedded as one-hot colour + one-hot shape and words as their one-hot: adding
    new - old lands exactly on the target's description, so the set is solvable as built; the
    source alone (lambda 0) never is, and another item's delta does worse."""
    s = ar.read_world_set(tiny_world / "eval" / "arithmetic")
    vocab = {w: i for i, w in enumerate([*world.COLORS, *world.SHAPES])}

    def one_hot(words):
        v = torch.zeros(len(vocab))
        v[[vocab[w] for w in words]] = 1.0
        return v

    images = torch.stack([one_hot(t.split()[1:]) for t in s.image_text])  # "a red circle" -> red + circle
    old, new = torch.stack([one_hot([w]) for w in s.old]), torch.stack([one_hot([w]) for w in s.new])
    metrics, _ = ar.score_arithmetic(images, old, new, s.source, s.shows, s.target_class, s.weights, s.kinds,
                                     ar.shuffled_donors(s.kinds, s.new), s.heldout)
    assert metrics["accuracy"] == 1.0 and metrics["heldout_composition"]["accuracy"] == 1.0
    assert metrics["no_delta"] == 0.0
    assert metrics["shuffled"] < 0.5 and 0 < metrics["chance"] < 0.1


def test_world_reader(tiny_world):
    s = ar.read_world_set(tiny_world / "eval" / "arithmetic")
    rows = _jsonl(tiny_world / "eval" / "arithmetic" / "arithmetic.jsonl")
    assert s.layout == "world" and len(s.ids) == len(rows) and len(s.images) == 2 * len(rows)
    assert s.images[:4] == [rows[0]["source"], rows[0]["target"], rows[1]["source"], rows[1]["target"]]
    for i, r in enumerate(rows):
        assert s.images[s.source[i]] == r["source"]
        right = {s.images[j] for j in np.flatnonzero(s.shows[:, s.target_class[i]])}
        assert right == {x[k] for x in rows for k, c in (("source", "source_caption"), ("target", "target_caption"))
                         if x[c] == r["target_caption"]}
    counts = {w: sum(r["old"] == w for r in rows) for w in {r["old"] for r in rows}}
    w = np.array([1 / math.sqrt(counts[r["old"]]) for r in rows])
    assert s.weights == pytest.approx(w / w.sum())


# ---------------------------------------------------------------------------- SIMAT's layout


TRANSFOS = """,transfo_id,region_id,field,value,target,norm,query_ids,target_ids,dataset_id,norm2,is_test
0,0,61,obj,pillow,rug,2,0,1,9,4,False
1,1,61,subj,dog,cat,2,0,2,9,1,False
2,2,70,obj,rug,pillow,2,1,0,9,9,False
3,3,70,obj,rug,bed,2,1,0,9,9,True
"""
TRIPLETS = "region_id,subj,rel,obj,dataset_id\n70,dog,laying in,rug,2\n61,dog,laying in,pillow,0\n80,cat,laying in,pillow,1\n"
# OSCAR [images by dataset_id, captions]: captions 0 "dog pillow", 1 "dog rug", 2 "cat pillow"
OSCAR = np.array([[0.9, 0.1, 0.2],   # 0: region 61, a dog on a pillow
                  [0.3, 0.2, 0.8],   # 1: region 80, a cat on a pillow
                  [0.1, 0.5, 0.0]])  # 2: region 70, a dog on a rug: 0.5 is not above 0.5


def _simat_dir(root, images=True, oscar=True):
    root.mkdir(parents=True, exist_ok=True)
    (root / "transfos.csv").write_text(TRANSFOS)
    (root / "triplets.csv").write_text(TRIPLETS)
    if oscar:
        np.save(root / "oscar_similarity_matrix.npy", OSCAR)
    if images:
        (root / "images" / "images").mkdir(parents=True)
        for rid in (61, 70, 80):
            Image.new("RGB", (8, 8), (rid, 0, 0)).save(root / "images" / "images" / f"{rid}.png")
    return root


def test_simat_reader_by_hand(tmp_path):
    s = ar.read_simat(_simat_dir(tmp_path / "SIMAT" / "simat_db").parent)  # a checkout holding simat_db/
    assert s.layout == "simat" and s.split == "dev" and s.root == tmp_path / "SIMAT" / "simat_db"
    assert s.images == ["images/images/61.png", "images/images/80.png", "images/images/70.png"]  # dataset_id order
    assert s.image_text == ["dog laying in pillow", "cat laying in pillow", "dog laying in rug"]
    assert s.ids == ["simat_0", "simat_1", "simat_2"]  # the dev split: is_test False
    assert s.kinds == ["obj", "subj", "obj"] and s.old == ["pillow", "dog", "rug"] and s.new == ["rug", "cat", "pillow"]
    assert s.source.tolist() == [0, 0, 2] and s.target_class.tolist() == [1, 2, 0]
    assert s.shows.tolist() == [[True, False, False], [False, False, True], [False, False, False]]
    w = np.array([1 / 2, 1, 1 / 3])  # 1 / sqrt(norm2)
    assert s.weights == pytest.approx(w / w.sum())
    assert s.target_text == ["dog laying in rug", "cat laying in pillow", "dog laying in pillow"]
    test = ar.read_simat(tmp_path / "SIMAT", split="test")
    assert test.ids == ["simat_3"] and test.old == ["rug"] and test.new == ["bed"]


@pytest.mark.parametrize("case, expected", [
    ("empty", r"transfos\.csv: not found; a SIMAT directory holds"),
    ("no triplets", r"triplets\.csv: not found"),
    ("no oscar", r"oscar_similarity_matrix\.pt: not found"),
    ("no images", r"simat_db/images: 3 of 3 images missing \(first images/\d+\.png\); rebuild them from "
                  r"Visual Genome with SIMAT's prepare_dataset\.py"),
    ("bad column", r"transfos\.csv: missing column\(s\) \['norm2'\]"),
    ("bad region", r"transfos\.csv:2: region_id 99 is not in triplets\.csv"),
    ("bad oscar", r"oscar_similarity_matrix\.npy: 2 rows, but triplets\.csv has 3 images"),
])
def test_simat_reader_refuses_a_bad_directory_in_one_line(tmp_path, case, expected):
    d = tmp_path / "simat_db"
    if case != "empty":
        _simat_dir(d, images=case != "no images", oscar=case != "no oscar")
    if case == "no triplets":
        (d / "triplets.csv").unlink()
    if case == "bad column":
        (d / "transfos.csv").write_text(TRANSFOS.replace(",norm2,", ",n2,"))
    if case == "bad region":
        (d / "transfos.csv").write_text(TRANSFOS.replace("0,0,61,", "0,0,99,"))
    if case == "bad oscar":
        np.save(d / "oscar_similarity_matrix.npy", OSCAR[:2])
    if case == "empty":
        d.mkdir()
    with pytest.raises(DataError, match=expected) as e:
        ar.read_simat(d)
    assert "\n" not in str(e.value) and str(d) in str(e.value)


def test_world_reader_refuses_in_one_line(tmp_path):
    with pytest.raises(DataError, match=r"arithmetic\.jsonl: not found") as e:
        ar.read_world_set(tmp_path)
    assert "\n" not in str(e.value)
    row = {"kind": "color", "old": "red", "new": "red", "source": "images/a.png", "target": "images/b.png",
           "source_caption": "a red circle", "target_caption": "a red circle"}
    (tmp_path / "arithmetic.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=r"arithmetic\.jsonl:1: old and new are both 'red'"):
        ar.read_world_set(tmp_path)
    two = [{**row, "new": "blue", "target_caption": "a blue circle"},
           {**row, "new": "blue", "source": "images/b.png", "source_caption": "a green circle",
            "target": "images/c.png"}]
    (tmp_path / "arithmetic.jsonl").write_text("".join(json.dumps(r) + "\n" for r in two))
    with pytest.raises(DataError, match=r"arithmetic\.jsonl:2: image 'images/b.png' is described as 'a green circle'"):
        ar.read_world_set(tmp_path)


def test_cli_refuses_a_simat_dir_without_its_files(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        eval_run.main(["--run_dir", str(tmp_path), "--data_dir", str(tmp_path), "--simat_dir", str(tmp_path)])
    assert e.value.code == 2 and "no transfos.csv there or in its simat_db/" in capsys.readouterr().err


# ---------------------------------------------------------------------------- end to end


def _naive_image(model, path):
    image = torch.from_numpy(load_image(path, model.config.image_size))[None]
    with torch.no_grad():
        return model.embed_images(image)[0].double()


def _naive_word(model, tok, word):
    ids = tok(word)["input_ids"] + [tok.eos_token_id]  # <s> word </s>, as captions are embedded
    with torch.no_grad():
        return model.embed_texts(torch.tensor([ids]), torch.ones(1, len(ids)).long())[0].double()


@pytest.fixture(scope="module")
def subset(tiny_world, tmp_path_factory):
    """A data directory whose eval/arithmetic holds the first N_ITEMS transformations."""
    src = tiny_world / "eval" / "arithmetic"
    out = tmp_path_factory.mktemp("arith") / "data"
    rows = _jsonl(src / "arithmetic.jsonl")[:N_ITEMS]
    d = out / "eval" / "arithmetic"
    (d / "images").mkdir(parents=True)
    (d / "arithmetic.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for r in rows:
        for k in ("source", "target"):
            shutil.copy(src / r[k], d / r[k])
    return out, rows


def test_end_to_end_matches_a_naive_computation(tiny_run, subset, tmp_path):
    data, rows = subset
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir, ignore=shutil.ignore_patterns("predictions", "results.*"))
    results = eval_run.evaluate_run(run_dir, data, batch_size=5, tasks=["arithmetic"])
    got = results["arithmetic"]
    for key in ("accuracy", "chance", "no_delta", "shuffled", "n", "accuracy_ci95_low", "accuracy_ci95_high",
                "by_lambda", "database_size", "kinds", "layout", "rule"):
        assert key in got, key
    assert set(got["kinds"]) == {"color", "shape"} and got["n"] == N_ITEMS and got["database_size"] == 2 * N_ITEMS
    assert got["kinds"]["color"]["n"] == got["kinds"]["shape"]["n"] == N_ITEMS // 2
    assert results["summary"]["arithmetic"] == got["accuracy"]
    assert results["summary"]["arithmetic (no delta)"] == got["no_delta"]

    # naive: one image, one word at a time; the query, the retrieval and the weights by hand
    model, tok = load_model(run_dir).eval(), load_tokenizer(run_dir)
    d = data / "eval" / "arithmetic"
    db = [(r[k], r[f"{k}_caption"]) for r in rows for k in ("source", "target")]
    emb = {key: _naive_image(model, d / key) for key, _ in db}
    old_counts = {w: sum(r["old"] == w for r in rows) for w in {r["old"] for r in rows}}
    weights = np.array([1 / math.sqrt(old_counts[r["old"]]) for r in rows])
    records = {r["id"]: r for r in _jsonl(run_dir / "predictions" / "arithmetic.jsonl")}
    hits, none, chance = [], [], []
    for r in rows:
        query = emb[r["source"]] + _naive_word(model, tok, r["new"]) - _naive_word(model, tok, r["old"])
        scores = {key: float(query @ e) for key, e in emb.items() if key != r["source"]}
        plain = {key: float(emb[r["source"]] @ e) for key, e in emb.items() if key != r["source"]}
        best, best_plain = max(scores, key=scores.get), max(plain, key=plain.get)
        caption = dict(db)
        hits.append(caption[best] == r["target_caption"])
        none.append(caption[best_plain] == r["target_caption"])
        chance.append(sum(c == r["target_caption"] for k, c in db if k != r["source"]) / (len(db) - 1))
        rec = records[r["id"]]
        assert rec["pred"] == best and rec["hit"] == hits[-1] and rec["hit_no_delta"] == none[-1]
    w = weights / weights.sum()
    assert got["accuracy"] == pytest.approx(float(np.dot(w, hits)))
    assert got["no_delta"] == pytest.approx(float(np.dot(w, none)))
    assert got["chance"] == pytest.approx(float(np.dot(w, chance)))
    assert got["accuracy_unweighted"] == pytest.approx(np.mean(hits))
    assert 0 <= got["shuffled"] <= 1


def test_skipped_for_a_text_model_and_without_the_set(tiny_run, subset, tiny_world, tmp_path):
    data, _ = subset
    tok = load_tokenizer(tiny_run)
    saved = json.loads((tiny_run / "config.json").read_text())["babymm"]
    names = {f.name for f in dataclasses.fields(DecoderConfig)}
    text = build_model(DecoderConfig.from_dict({k: v for k, v in saved.items() if k in names}))
    run_dir = tmp_path / "text-run"
    save_model(text, tok, run_dir)
    results = eval_run.evaluate_run(run_dir, data, tasks=["arithmetic"])
    assert results["arithmetic"] == {"skipped": "a text model has no image embeddings"}
    with pytest.raises(TaskSkipped, match="no image embeddings"):
        ar.arithmetic(text, tok, data / "eval" / "arithmetic")

    bare = tmp_path / "bare"
    (bare / "eval").mkdir(parents=True)
    (bare / "world.json").write_text((tiny_world / "world.json").read_text())
    results = eval_run.evaluate_run(run_dir, bare, tasks=["arithmetic"])
    reason = results["arithmetic"]["skipped"]
    assert "arithmetic.jsonl" in reason and "--word_budget 20000 --seed 0" in reason and "--eval_scale 0.1" in reason

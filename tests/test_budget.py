"""Exact word budgets: the seeded draw, the budget report, keyed subsets, and training's refusal
of data drawn for another budget. Expected values are hand counts of tiny corpora."""

import json

import numpy as np
import pytest
from PIL import Image

from babymm.files import DataError
from data_prep import budget, ingest, pipeline
from data_prep.stage import prepared_dir


def test_select_fills_the_share_exactly_with_whole_items():
    words = np.array([5, 3, 2, 4, 1, 6, 2, 2])
    units = np.array([0, 0, 1, 1, 2, 3, 3, 4])  # unit words 8, 6, 1, 8, 2
    for seed in range(20):
        keep = budget.select(words, units, 9, seed, fill_items=True)
        left = 9 - words[keep].sum()
        assert left >= 0 and (words[~keep] > left).all(), seed  # nothing left out would still fit
        ones = np.r_[words, [1] * 9], np.r_[units, np.arange(5, 14)]  # with 1-word lines to spare: exact
        assert ones[0][budget.select(*ones, 9, seed, fill_items=True)].sum() == 9
        keep = budget.select(words, units, 9, seed, fill_items=False)
        assert words[keep].sum() <= 9
        for u in np.unique(units):  # whole units: all of a unit's items or none
            assert keep[units == u].all() or not keep[units == u].any()
    a = budget.select(words, units, 9, 3, fill_items=False)
    assert np.array_equal(a, budget.select(words, units, 9, 3, fill_items=False))  # seeded
    assert len({budget.select(words, units, 9, s, fill_items=False).tobytes() for s in range(20)}) > 1


def test_select_whole_units_by_hand():
    # units 0..4 have 8, 6, 1, 8, 2 words; with the seed's permutation fixed, the prefix that fits
    # is taken, then later units that still fit
    words = np.array([5, 3, 2, 4, 1, 6, 2, 2])
    units = np.array([0, 0, 1, 1, 2, 3, 3, 4])
    perm = np.random.default_rng(7).permutation(5)
    unit_words = np.array([8, 6, 1, 8, 2])
    left, chosen = 10, []
    for u in perm:  # the rule, spelled out
        if unit_words[u] <= left:
            chosen.append(u)
            left -= unit_words[u]
    keep = budget.select(words, units, 10, 7, fill_items=False)
    assert sorted(np.unique(units[keep]).tolist()) == sorted(chosen)


def test_text_units_never_cross_a_file(monkeypatch):
    monkeypatch.setattr(budget, "TEXT_RUN_LINES", 2)
    sources = np.array([0, 0, 0, 1, 1, 0, 0])
    assert budget.text_units(sources).tolist() == [0, 0, 1, 2, 2, 3, 3]


@pytest.fixture
def corpus(tmp_path):
    """Two text files (lines of 1..4 words) and 12 images with 1 or 2 captions each."""
    d = tmp_path / "real"
    (d / "text").mkdir(parents=True)
    (d / "captions" / "img").mkdir(parents=True)
    (d / "text" / "a.train").write_text("".join(" ".join(["w"] * (1 + i % 4)) + "\n" for i in range(40)))
    (d / "text" / "b.train").write_text("".join(" ".join(["v"] * (1 + i % 3)) + "\n" for i in range(30)))
    rows = []
    for i in range(12):
        Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(d / "captions" / "img" / f"{i}.png")
        rows.append({"image": f"img/{i}.png", "caption": " ".join(["red"] * (2 + i % 3))})
        if i % 2 == 0:  # a second caption of the same image
            rows.append({"image": f"img/{i}.png", "caption": "a red square"})
    (d / "captions" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def _words(ds, column):
    return sum(len(t.split()) for t in ds[column])


def test_budget_report_and_subset(corpus):
    import datasets

    ingest.ingest(corpus)
    # text: a has 10 * (1+2+3+4) = 100 words, b has 10 * (1+2+3) = 60; captions: 12 images,
    # 4 * (2+3+4) = 36 words + 6 second captions * 3 = 18 -> 54
    name = budget.make_budget(corpus, budget.Budget(60, text_fraction=0.5, seed=1))
    assert name == "budget-60w-text0.5-seed1"
    root = prepared_dir(corpus, name) / "ingest"
    report = json.loads((root / "manifest.json").read_text())["budget"]
    text = datasets.load_from_disk(str(root / "text"))
    caps = datasets.load_from_disk(str(root / "captions"))
    assert report["data_words"] == {"text": 160, "captions": 54}
    assert report["words"]["text"] == _words(text, "text") == 30  # exact: lines of 1..4 words fill it
    assert report["words"]["captions"] == _words(caps, "caption") <= 30
    assert report["words"]["captions"] >= 30 - 5  # within one image's words of the share
    assert report["text_lines"] == text.num_rows and report["captions"] == caps.num_rows
    assert report["images"] == len(set(caps["image_id"]))
    assert sum(report["text_words_by_source"].values()) == 30
    # captions of one image are kept together
    whole = datasets.load_from_disk(str(ingest.out_dir(corpus) / "captions"))
    per_image = {i: whole["image_id"].count(i) for i in set(whole["image_id"])}
    assert all(caps["image_id"].count(i) == per_image[i] for i in set(caps["image_id"]))
    # the same budget and seed draws the same lines; another seed lives beside it
    other = budget.make_budget(corpus, budget.Budget(60, text_fraction=0.5, seed=2))
    assert other != name and prepared_dir(corpus, name).exists()
    again = budget.make_budget(corpus, budget.Budget(60, text_fraction=0.5, seed=1), overwrite=True)
    assert datasets.load_from_disk(str(prepared_dir(corpus, again) / "ingest" / "text"))["text"] == text["text"]


def test_short_portion_gives_the_rest_to_the_other(corpus):
    ingest.ingest(corpus)
    # asked: text 10, captions 90; captions hold only 54, so text gets 100 - 54 = 46
    name = budget.make_budget(corpus, budget.Budget(100, text_fraction=0.1, seed=0))
    report = budget.read_report(corpus, name)
    assert report["words"] == {"text": 46, "captions": 54, "total": 100}
    assert report["requested_words"] == {"text": 10, "captions": 90}


def test_data_within_the_budget_is_used_whole_and_short_data_refused(corpus):
    ingest.ingest(corpus)
    name = budget.make_budget(corpus, budget.Budget(214, seed=5))  # 160 + 54 words: all of it
    assert name == "budget-214w-all"
    assert budget.read_report(corpus, name)["words"]["total"] == 214
    with pytest.raises(DataError, match=r"holds 214 words .*less than --word_budget 1,000"):
        budget.make_budget(corpus, budget.Budget(1000))


def test_prepare_keys_every_later_stage_by_the_subset(corpus):
    a = pipeline.prepare(corpus, "length", word_budget=60, data_seed=1, vocab_size=40)
    b = pipeline.prepare(corpus, "length", word_budget=80, data_seed=1, vocab_size=40)
    for p in (a.tokenizer, a.tokens, a.curriculum, a.words):
        assert str(prepared_dir(corpus, "budget-60w-text0.5-seed1")) in str(p)
    assert a.tokenizer != b.tokenizer and a.curriculum != b.curriculum
    words = json.loads((a.words / "manifest.json").read_text())
    assert words["budget"] == 60 and words["total_words"] <= 60


def test_training_refuses_data_drawn_for_another_budget(corpus):
    from babymm import train
    from babymm.config import parse_config

    prepared = pipeline.prepare(corpus, "length", word_budget=60, data_seed=1, vocab_size=40)
    cfg = parse_config(["--data_dir", str(corpus), "--word_budget", "60", "--data_seed", "1"])
    train.check_budget(cfg, prepared)  # the draw asked for
    for flags in (["--word_budget", "60", "--data_seed", "2"], ["--word_budget", "60", "--data_seed", "1",
                                                                 "--text_fraction", "0.4"]):
        cfg = parse_config(["--data_dir", str(corpus), *flags])
        with pytest.raises(DataError, match="prepared for budget"):
            train.check_budget(cfg, prepared)
    with pytest.raises(DataError, match="names no --word_budget"):
        train.check_budget(parse_config(["--data_dir", str(corpus)]), prepared)


def test_budget_flags_without_a_budget_are_refused():
    from babymm.config import parse_config

    for flags in (["--text_fraction", "0.3"], ["--data_seed", "4"]):
        problems = parse_config(flags).problems(1)
        assert any("pass --word_budget too" in p for p in problems), problems


def test_feature_parts_are_ordered_by_number(tmp_path):
    d = tmp_path / "feat"
    (d / "captions").mkdir(parents=True)
    captions = [f"caption number {i}" for i in range(24)]
    (d / "captions" / "x_captions.json").write_text(json.dumps(captions))
    rows = np.arange(24, dtype=np.float32)[:, None].repeat(4, axis=1)
    for part in range(12):  # _10of12 sorts before _2of12 as a string
        np.save(d / "captions" / f"x_dino_v2_states_{part + 1}of12.npy", rows[2 * part : 2 * part + 2])
    ingest.ingest(d)
    import datasets

    from babymm.files import load_npy

    ds = datasets.load_from_disk(str(ingest.out_dir(d) / "captions"))
    files = json.loads((ingest.out_dir(d) / "manifest.json").read_text())["feature_files"]
    for i in range(24):
        row = load_npy(__import__("pathlib").Path(files[ds[i]["feature_file"]]))[ds[i]["feature_row"]]
        assert ds[i]["caption"] == f"caption number {i}" and row[0] == i


def test_feature_parts_missing_or_mixed_are_refused(tmp_path):
    d = tmp_path / "feat"
    (d / "captions").mkdir(parents=True)
    (d / "captions" / "x_captions.json").write_text(json.dumps(["a b", "c d", "e f"]))
    np.save(d / "captions" / "x_dino_v2_states_1of3.npy", np.zeros((1, 4), np.float32))
    np.save(d / "captions" / "x_dino_v2_states_3of3.npy", np.zeros((2, 4), np.float32))
    with pytest.raises(DataError, match=r"expected _1ofN \.\.\. _NofN"):
        ingest.ingest(d)
    (d / "captions" / "x_dino_v2_states_3of3.npy").unlink()
    (d / "captions" / "x_dino_v2_states_1of3.npy").unlink()
    np.save(d / "captions" / "x_dino_v2_states.npy", np.zeros((3, 4), np.float32))
    np.save(d / "captions" / "x_clip_states.npy", np.zeros((3, 4), np.float32))
    with pytest.raises(DataError, match="more than one set of feature files"):
        ingest.ingest(d)


def test_ingest_redone_when_a_feature_file_or_an_image_changes(tmp_path, corpus):
    import os

    first = json.loads((ingest.ingest(corpus) / "manifest.json").read_text())["fingerprint"]
    image = corpus / "captions" / "img" / "3.png"
    Image.new("RGB", (8, 8), (0, 0, 255)).save(image)
    os.utime(image, ns=(1, 1))  # a new mtime and the same size would do; both change here
    second = json.loads((ingest.ingest(corpus) / "manifest.json").read_text())["fingerprint"]
    assert second != first
    d = tmp_path / "feat"
    (d / "captions").mkdir(parents=True)
    (d / "captions" / "x_captions.json").write_text(json.dumps(["a b", "c d"]))
    np.save(d / "captions" / "x_states.npy", np.zeros((2, 4), np.float32))
    fp1 = json.loads((ingest.ingest(d) / "manifest.json").read_text())["fingerprint"]
    np.save(d / "captions" / "x_states.npy", np.ones((2, 4), np.float32))
    os.utime(d / "captions" / "x_states.npy", ns=(2, 2))
    fp2 = json.loads((ingest.ingest(d) / "manifest.json").read_text())["fingerprint"]
    assert fp1 != fp2


def test_a_budgeted_run_trains_on_its_draw(tiny_world, tmp_path):
    """train.py --word_budget: the run's word report is the draw's, the data seed defaults to the
    run's seed, and the curriculum's ties are broken by that seed too."""
    import shutil

    from babymm import train

    data = tmp_path / "world"
    shutil.copytree(tiny_world, data, ignore=shutil.ignore_patterns("prepared"))
    out = tmp_path / "run"
    rc = train.main(["--data_dir", str(data), "--word_budget", "12000", "--seed", "3", "--output_dir", str(out),
                     "--preset", "tiny", "--text_pretrain_steps", "2", "--multimodal_steps", "2", "--batch_size", "8",
                     "--text_batch_size", "4", "--eval_steps", "0", "--run_eval", "false",
                     "--word_milestones", "none", "--checkpointing_steps", "0"])
    assert rc == 0
    words = json.loads((out / "word_counts.json").read_text())
    assert words["budget"] == 12000 and 12000 - 20 <= words["total_words"] <= 12000
    assert json.loads((out / "run_config.json").read_text())["data"]["data_seed"] == 3
    curriculum = json.loads((out / "curriculum_manifest.json").read_text())
    assert curriculum["seed"] == 3 and curriculum["subset"] == "budget-12000w-text0.5-seed3"

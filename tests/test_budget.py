"""Exact word budgets: the seeded draw, the budget report, keyed subsets, and training's refusal
of data drawn for another budget. Expected values are hand counts of tiny corpora."""

import itertools
import json
from types import SimpleNamespace

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
    # is taken, then later units that still fit; a remainder is made up by the exact fill
    words = np.array([5, 3, 2, 4, 1, 6, 2, 2])
    units = np.array([0, 0, 1, 1, 2, 3, 3, 4])
    unit_words = np.array([8, 6, 1, 8, 2])

    def greedy(seed):  # the greedy rule, spelled out
        left, chosen = 10, []
        for u in np.random.default_rng(seed).permutation(5):
            if unit_words[u] <= left:
                chosen.append(int(u))
                left -= unit_words[u]
        return chosen, left

    def kept(seed):
        return sorted(np.unique(units[budget.select(words, units, 10, seed, fill_items=False)]).tolist())

    assert greedy(1) == ([4, 0], 0) and kept(1) == [0, 4]  # greedy lands: the draw is the greedy one
    # seed 7 draws units 2, 0, 4, 1, 3: 2 and 0 fit (9 words), nothing of 4, 1, 3 fits the 1 left;
    # the exact fill releases 2 and 0 and picks from [1, 8 | 2, 6, 8] (released first) 8 + 2 = 10
    assert np.random.default_rng(7).permutation(5).tolist() == [2, 0, 4, 1, 3]
    assert greedy(7) == ([2, 0], 1) and kept(7) == [0, 4]
    for seed in range(20):
        assert unit_words[kept(seed)].sum() == 10, seed


@pytest.mark.parametrize("fill_items, units", [(True, [0, 1, 2]), (True, [0, 0, 0]), (False, [0, 1, 2])])
def test_select_lands_on_the_share_of_3_5_4(fill_items, units):
    """Items of 3, 5 and 4 words and a share of 9: the greedy pass keeps 7, 8 or 9 words by seed
    (3+4, 3+5, 5+4); only 5 + 4 is exact, and every seed lands on it."""
    words, units = np.array([3, 5, 4]), np.array(units)
    greedy = set()
    for seed in range(20):
        keep = budget.select(words, units, 9, seed, fill_items=fill_items)
        assert keep.tolist() == [False, True, True], seed
        if fill_items is False:  # the greedy rule by hand, for the record: not always 9
            left = 9
            for u in np.random.default_rng(seed).permutation(3):
                left -= words[u] if words[u] <= left else 0
            greedy.add(9 - left)
    assert fill_items or greedy == {7, 8, 9}


def _best(pieces, share):
    """The largest sum <= share of a subset of `pieces`, by brute force."""
    return max(sum(c) for r in range(len(pieces) + 1) for c in itertools.combinations(pieces, r) if sum(c) <= share)


def test_select_is_exact_whenever_whole_items_can_be_by_brute_force():
    """Small instances (within REPAIR_ITEMS pieces): the kept words are exactly the share whenever
    some set of whole lines (fill_items) or whole units sums to it, else the closest below."""
    rng = np.random.default_rng(0)
    exact = 0
    for trial in range(400):
        n = int(rng.integers(1, 10))
        words = rng.integers(1, 14, n)
        units = np.unique(np.sort(rng.integers(0, n, n)), return_inverse=True)[1]
        share = int(rng.integers(0, words.sum() + 3))
        fill_items, seed = bool(trial % 2), int(rng.integers(1000))
        keep = budget.select(words, units, share, seed, fill_items=fill_items)
        pieces = words if fill_items else np.bincount(units, weights=words).astype(int)
        best = _best(pieces.tolist(), share)
        assert words[keep].sum() == best, (words, units, share, seed, fill_items)
        exact += best == share
        if not fill_items:
            assert all(keep[units == u].all() or not keep[units == u].any() for u in np.unique(units))
    assert 100 < exact < 380  # both kinds of instance were tried


def test_subset_sum_by_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(200):
        weights = rng.integers(0, 20, int(rng.integers(0, 9))).tolist()
        target = int(rng.integers(0, 60))
        best, chosen = budget.subset_sum(weights, target)
        assert best == _best(weights, target) and sum(np.array(weights, dtype=int)[chosen]) == best


def test_select_beyond_the_pool_stays_under_the_share(monkeypatch):
    """Past REPAIR_ITEMS the fill is exact only where the pool can make it: 40 items of 2 words
    and one of 3 can make 41 words only with the 3, which is outside a pool of 2 + 2 items."""
    monkeypatch.setattr(budget, "REPAIR_ITEMS", 2)
    words = np.r_[[2] * 40, 3]
    units = np.arange(41)
    keep = budget.select(words, units, 41, 0, fill_items=False)
    assert words[keep].sum() <= 41
    monkeypatch.setattr(budget, "REPAIR_ITEMS", 512)
    assert words[budget.select(words, units, 41, 0, fill_items=False)].sum() == 41


def test_select_at_scale_is_exact_and_fast():
    """A million lines of 1..30 words: exact, and the fill's pool keeps it cheap."""
    import time

    rng = np.random.default_rng(2)
    words = rng.integers(4, 31, 1_000_000)  # no 1-3 word lines: the greedy pass often leaves a remainder
    units = budget.text_units(np.repeat(np.arange(50), 20_000))
    for seed in range(3):
        start = time.perf_counter()
        keep = budget.select(words, units, 5_000_001, seed, fill_items=True)
        assert words[keep].sum() == 5_000_001
        assert time.perf_counter() - start < 20


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
    # images of 5, 3, 7, 2, 6, 4, 5, 3, 7, 2, 6, 4 words: whole images can make 30, so it does
    assert report["words"]["captions"] == _words(caps, "caption") == 30
    assert report["shortfall"] == {"text": 0, "captions": 0, "total": 0}
    assert report["target_words"] == report["requested_words"] == {"text": 30, "captions": 30}
    assert report["text_fraction"] == 0.5 and report["text_fraction_taken"] == 0.5
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
    assert report["target_words"] == {"text": 46, "captions": 54}
    assert report["text_fraction"] == 0.1 and report["text_fraction_taken"] == 0.46
    assert report["shortfall"] == {"text": 0, "captions": 0, "total": 0}


def test_data_within_the_budget_is_used_whole_and_short_data_refused(corpus):
    ingest.ingest(corpus)
    name = budget.make_budget(corpus, budget.Budget(214, text_fraction=0.75, seed=5))  # 160 + 54 words: all
    assert name == "budget-214w-all"
    report = budget.read_report(corpus, name)
    assert report["words"]["total"] == 214 and report["shortfall"]["total"] == 0
    assert report["text_fraction"] == 0.75 and report["text_fraction_taken"] == round(160 / 214, 6)
    with pytest.raises(DataError, match=r"holds 214 words .*less than --word_budget 1,000"):
        budget.make_budget(corpus, budget.Budget(1000))


def test_data_used_whole_with_another_text_share_is_refused(corpus, capsys):
    """Asked for 0.5 of data that is used whole (no more words than the budget) and is 0.748
    text: refused, naming the share it has, never reported as 0.5."""
    from babymm import train
    from babymm.config import parse_config

    ingest.ingest(corpus)
    for fraction in (0.5, 0.9, 0.73):
        with pytest.raises(DataError, match=rf"holds 214 words, no more than --word_budget 214, so it would be used "
                                            rf"whole, and its text share is 0\.7477 \(160 text, 54 caption words\), not "
                                            rf"--text_fraction {fraction}; pass --text_fraction 0\.7477 to use it whole, "
                                            r"or a --word_budget under 214 to draw"):
            budget.make_budget(corpus, budget.Budget(214, text_fraction=fraction))
    assert not (prepared_dir(corpus) / "subsets").exists()
    # the share it names is taken; a request within the tolerance is reported as asked
    name = budget.make_budget(corpus, budget.Budget(214, text_fraction=0.7477))
    prepared = SimpleNamespace(data_dir=corpus, subset=name, ingest=budget.out_dir(corpus, name))
    train.check_budget(parse_config(["--data_dir", str(corpus), "--word_budget", "214", "--text_fraction", "0.7477"]),
                       prepared)
    fp = json.loads((prepared.ingest / "manifest.json").read_text())["fingerprint"]
    budget.make_budget(corpus, budget.Budget(214, text_fraction=0.74))
    assert budget.read_report(corpus, "budget-214w-all")["text_fraction"] == 0.74
    assert json.loads((prepared.ingest / "manifest.json").read_text())["fingerprint"] == fp  # the same data
    with pytest.raises(DataError, match="prepared for budget"):
        train.check_budget(parse_config(["--data_dir", str(corpus), "--word_budget", "214", "--text_fraction",
                                         "0.7477"]), prepared)
    with pytest.raises(DataError, match=r"text share is 0\.7477"):
        pipeline.prepare(corpus, "length", word_budget=214, vocab_size=40)


def test_a_shortfall_is_reported_per_portion(corpus, monkeypatch, capsys):
    """Where the exact fill cannot land (its pool cut to nothing here), the report says by how
    much each portion fell short, and the log says so."""
    ingest.ingest(corpus)
    monkeypatch.setattr(budget, "REPAIR_ITEMS", 0)
    shorts = set()
    for seed in range(12):
        report = budget.read_report(corpus, budget.make_budget(corpus, budget.Budget(61, seed=seed)))
        short = report["shortfall"]
        assert short["text"] == report["target_words"]["text"] - report["words"]["text"] >= 0
        assert short["captions"] == report["target_words"]["captions"] - report["words"]["captions"] >= 0
        assert short["total"] == 61 - report["words"]["total"] == short["text"] + short["captions"]
        shorts.add(short["captions"])
    assert shorts != {0}
    assert "short: no whole images the exact fill could reach made up the rest" in capsys.readouterr().out


def test_a_world_generated_at_a_budget_has_the_text_fraction_asked(tmp_path, monkeypatch):
    """A missing --data_dir named with a budget gets a world of that size whose text share is
    --text_fraction, so the budget stage, which uses it whole, takes what it reports."""
    from data_prep import world

    generate = world.generate_world
    monkeypatch.setattr(world, "generate_world", lambda *a, **k: generate(*a, **k, eval_scale=0.02))
    d = tmp_path / "world-6000w"
    pipeline._world_for(d, 6000, 32, None, text_fraction=0.9)
    assert json.loads((d / "world.json").read_text())["params"]["caption_fraction"] == 0.1
    ingest.ingest(d)
    report = budget.read_report(d, budget.make_budget(d, budget.Budget(6000, text_fraction=0.9)))
    assert not report["sampled"] and report["text_fraction"] == 0.9
    assert abs(report["text_fraction_taken"] - 0.9) < 0.005
    assert report["words"]["total"] >= 6000 * 0.99
    with pytest.raises(DataError, match=r"its text share is 0\.9\d* .* not --text_fraction 0\.5; .*, or name a "
                                        r"new --data_dir, where the built-in world is generated at the --text_fraction "
                                        r"asked$"):
        budget.make_budget(d, budget.Budget(6000))
    with pytest.raises(DataError, match=r"--text_fraction 1: the built-in world always has text and captions"):
        pipeline._world_for(tmp_path / "world-7000w", 7000, 32, None, text_fraction=1.0)


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

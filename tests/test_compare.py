"""`eval.compare` on fake run directories: per-condition mean and s.d. over seeds, the tables
and the plot. The expected numbers are worked out by hand from the scores chosen here."""

import json
import math
import shutil

import pandas as pd
import pytest

from babymm.config import parse_config
from eval import compare

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# (name, flags, Winoground, BLiMP); two conditions, differing only in a loss weight
RUNS = [
    ("gap-s0", ["--seed", "0"], 0.5, 0.60),
    ("gap-s1", ["--seed", "1"], 0.6, 0.62),
    ("gap-s2", ["--seed", "2"], 0.7, 0.64),
    ("clip-s0", ["--seed", "0", "--uniform_weight", "0"], 0.40, 0.70),
    ("clip-s1", ["--seed", "1", "--uniform_weight", "0"], 0.50, 0.70),
]
# by hand: gap Winoground mean 0.6, s.d. sqrt((0.01 + 0 + 0.01) / 2) = 0.1;
#          gap BLiMP 0.62, s.d. sqrt((0.0004 + 0 + 0.0004) / 2) = 0.02;
#          clip Winoground 0.45, s.d. sqrt((0.0025 + 0.0025) / 1) = 0.0707107; BLiMP 0.70, s.d. 0
EXPECTED = {3: {"Winoground": (0.6, 0.1), "BLiMP": (0.62, 0.02)},
            2: {"Winoground": (0.45, math.sqrt(0.005)), "BLiMP": (0.70, 0.0)}}


def make_run(root, name, flags, wino, blimp, with_results=True):
    d = root / name
    d.mkdir()
    cfg = parse_config(["--output_dir", str(d), *flags]).to_dict()
    (d / "run_config.json").write_text(json.dumps(cfg))
    if with_results:
        results = {"summary": {"Winoground": wino, "BLiMP": blimp},
                   "winoground": {"acc": wino, "n": 100}, "blimp": {"acc": blimp, "n": 1000}}
        (d / "results.json").write_text(json.dumps(results))
    return d


@pytest.fixture
def runs(tmp_path):
    return [make_run(tmp_path, *r) for r in RUNS]


def test_by_condition_mean_std_and_seeds(runs):
    df, chance = compare.load_runs(runs)
    assert list(df.index) == [name for name, *_ in RUNS]
    assert chance["Winoground"] == 0.5 and chance["BLiMP"] == 0.5
    agg = compare.by_condition(df)
    assert len(agg) == 2  # the loss weight separates the conditions; the seed does not
    assert sorted(agg[("n", "seeds")]) == [2, 3]
    for _, row in agg.iterrows():
        for score, (mean, std) in EXPECTED[row[("n", "seeds")]].items():
            assert row[("mean", score)] == pytest.approx(mean, abs=1e-12)
            assert row[("std", score)] == pytest.approx(std, abs=1e-12)


def test_single_seed_condition_has_no_spread(tmp_path):
    runs = [make_run(tmp_path, "a-s0", ["--seed", "0"], 0.55, 0.6),
            make_run(tmp_path, "b-s0", ["--seed", "0", "--align_weight", "0"], 0.45, 0.6)]
    agg = compare.by_condition(compare.load_runs(runs)[0])
    assert list(agg[("n", "seeds")]) == [1, 1]
    assert agg[("std", "Winoground")].isna().all()
    assert sorted(agg[("mean", "Winoground")]) == pytest.approx([0.45, 0.55])


def test_main_writes_markdown_csv_and_png(runs, tmp_path, capsys):
    no_results = make_run(tmp_path, "crashed-s3", ["--seed", "3"], 0.0, 0.0, with_results=False)
    md, csv, png = tmp_path / "t.md", tmp_path / "t.csv", tmp_path / "t.png"
    rc = compare.main([*map(str, runs), str(no_results), "--out", str(md), "--csv", str(csv),
                       "--plot", str(png)])
    assert rc == 0
    err = capsys.readouterr().err
    assert "warning" in err and "crashed-s3" in err
    text = md.read_text()
    assert "0.600 ± 0.100" in text and "0.620 ± 0.020" in text
    assert "0.450 ± 0.071" in text and "0.700 ± 0.000" in text
    assert "crashed-s3" not in text
    rows = csv.read_text().splitlines()
    assert rows[0].split(",")[0] == "run" and len(rows) == 1 + len(RUNS)
    assert {r.split(",")[0] for r in rows[1:]} == {name for name, *_ in RUNS}
    cond = csv.with_name("t_conditions.csv")
    assert cond.exists() and "0.6" in cond.read_text()
    data = png.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000


def test_no_run_with_results_is_an_error(tmp_path, capsys):
    d = make_run(tmp_path, "empty-s0", ["--seed", "0"], 0.0, 0.0, with_results=False)
    assert compare.main([str(d)]) == 2
    assert "no run had results.json" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--uniform_weight", "--align_weight", "--xuniform_weight",
                                  "--clip_weight", "--text_weight", "--caption_weight", "--learning_rate"])
def test_every_loss_weight_separates_conditions(tmp_path, flag):
    runs = [make_run(tmp_path, f"{w}-s{s}", ["--seed", str(s), flag, w], 0.5 + 0.1 * s, 0.6)
            for w in ("0.5", "2.0") for s in (0, 1)]
    agg = compare.by_condition(compare.load_runs(runs)[0])
    assert list(agg[("n", "seeds")]) == [2, 2]
    assert list(agg[("mean", "Winoground")]) == pytest.approx([0.55, 0.55])


def test_runs_sharing_a_seed_are_never_one_condition(tmp_path):
    """Two seed-0 runs of different model sizes are two conditions, not one of two seeds."""
    runs = [make_run(tmp_path, "small-s0", ["--seed", "0"], 0.5, 0.6),
            make_run(tmp_path, "big-s0", ["--seed", "0", "--hidden_size", "256"], 0.7, 0.6)]
    agg = compare.by_condition(compare.load_runs(runs)[0])
    assert list(agg[("n", "seeds")]) == [1, 1]


def test_text_runs_compare_beside_image_runs(tmp_path):
    """A text run has no loss weights and no retrieval: its settings read None, its cells empty."""
    img = make_run(tmp_path, "git-s0", ["--seed", "0"], 0.6, 0.7)
    results = json.loads((img / "results.json").read_text())
    results["summary"]["R@1 i->t"] = 0.25
    (img / "results.json").write_text(json.dumps(results))
    text = make_run(tmp_path, "text-s0", ["--seed", "0", "--model_type", "text"], 0.5, 0.72)
    df, chance = compare.load_runs([img, text])
    assert df.loc["text-s0", "model"] == "text" and df.loc["git-s0", "model"] == "git"
    assert pd.isna(df.loc["text-s0", "uniform_w"]) and df.loc["git-s0", "uniform_w"] == 1.0
    table = compare.condition_table(compare.by_condition(df), chance)
    text_row = next(line for line in table.splitlines() if "model=text" in line)
    assert "nan" not in text_row and "0.720" in text_row
    assert "0.250" in next(line for line in table.splitlines() if "model=git" in line)


# ---------------------------------------------------------------- the data a run trained on


def on_data(run_dir, fingerprint, subset=None):
    """Record what train.py copies beside a run: the curriculum manifest with the fingerprint of
    the ingested data (of its budget subset, if any) it was built from."""
    manifest = {"stage": "curricula", "fingerprint": "c" * 16, "data_fingerprint": fingerprint, "subset": subset}
    (run_dir / "curriculum_manifest.json").write_text(json.dumps(manifest))
    return run_dir


@pytest.mark.parametrize("fingerprints", [True, False], ids=["fingerprint", "path-only"])
def test_runs_on_other_data_are_other_conditions(tmp_path, fingerprints):
    """Issue 14's example: the same seed on two data sets is two conditions, not 0.800 ± 0.141
    over 2 seeds. Both data directories are called `world`: the labels still tell them apart."""
    runs = [make_run(tmp_path, name, ["--seed", "0", "--data_dir", str(tmp_path / where / "world")], 0.5, blimp)
            for name, where, blimp in (("x-s0", "x", 0.70), ("y-s0", "y", 0.90))]
    if fingerprints:
        on_data(runs[0], "1a2b3c4d" * 2), on_data(runs[1], "5e6f7a8b" * 2)
    df, chance = compare.load_runs(runs)
    agg = compare.by_condition(df)
    assert list(agg[("n", "seeds")]) == [1, 1]
    assert sorted(agg[("mean", "BLiMP")]) == pytest.approx([0.70, 0.90])
    table = compare.condition_table(agg, chance)
    assert "0.800" not in table and "0.141" not in table
    if fingerprints:  # the directory's name and a short fingerprint, not a hash alone
        assert {"data=world@1a2b3c4d", "data=world@5e6f7a8b"} <= set(df["data"].radd("data="))
        assert "data=world@1a2b3c4d" in table and "1a2b3c4d" * 2 not in table
    else:  # two directories of one name: the label gives the whole path
        assert set(df["data"]) == {f"{tmp_path / w / 'world'} (path only)" for w in "xy"}


def test_same_seed_twice_in_a_condition_is_an_error(tmp_path, capsys):
    """Two runs of one condition with one seed (a rerun, a copy) are never counted as two seeds;
    the error names both run directories, even when they share a name."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    runs = [on_data(make_run(tmp_path / p, "git-s0", ["--seed", "0"], 0.5, blimp), "1a2b3c4d" * 2)
            for p, blimp in (("a", 0.70), ("b", 0.90))]
    df, _ = compare.load_runs(runs)
    with pytest.raises(ValueError, match="same seed") as e:
        compare.by_condition(df)
    assert str(runs[0]) in str(e.value) and str(runs[1]) in str(e.value)
    assert compare.main([str(r) for r in runs]) == 2
    err = capsys.readouterr().err
    assert str(runs[0]) in err and str(runs[1]) in err
    # a third run of another seed does not hide the clash
    third = on_data(make_run(tmp_path / "a", "git-s1", ["--seed", "1"], 0.5, 0.8), "1a2b3c4d" * 2)
    with pytest.raises(ValueError, match="same seed"):
        compare.by_condition(compare.load_runs([*runs, third])[0])


def test_one_run_named_twice_counts_once(tmp_path, capsys):
    run = make_run(tmp_path, "git-s0", ["--seed", "0"], 0.5, 0.7)
    df, _ = compare.load_runs([run, tmp_path / "." / "git-s0"])
    assert list(df.index) == ["git-s0"] and "named twice" in capsys.readouterr().err


@pytest.mark.parametrize("fingerprints", [True, False], ids=["fingerprint", "path-only"])
def test_same_data_named_by_two_paths_is_one_condition(tmp_path, monkeypatch, fingerprints):
    """Relative, absolute with a trailing slash, `./`: one data directory, one condition of two
    seeds; other data beside it with one of those seeds is its own condition."""
    monkeypatch.chdir(tmp_path)
    spelled = ["data/world", f"{tmp_path / 'data' / 'world'}/", "./data/world"]
    runs = [make_run(tmp_path, f"w-s{s}", ["--seed", str(s), "--data_dir", p], 0.5, 0.6 + 0.1 * s)
            for s, p in enumerate(spelled)]
    other = make_run(tmp_path, "o-s0", ["--seed", "0", "--data_dir", "data/other"], 0.5, 0.2)
    if fingerprints:
        for r in runs:
            on_data(r, "1a2b3c4d" * 2)
        on_data(other, "5e6f7a8b" * 2)
    df, _ = compare.load_runs([*runs, other])
    agg = compare.by_condition(df)
    assert sorted(agg[("n", "seeds")]) == [1, 3]
    label = "world@1a2b3c4d" if fingerprints else "world (path only)"
    assert set(df.loc[[r.name for r in runs], "data"]) == {label}
    assert agg.loc[f"data={label}", ("n", "seeds")] == 3
    assert agg.loc[f"data={label}", ("mean", "BLiMP")] == pytest.approx(0.7)


def test_budget_draws_of_one_data_are_seeds_of_one_condition(tmp_path, monkeypatch, capsys):
    """Each seed's own draw of a word budget (data_seed = seed) has its own fingerprint; they
    are one condition, the whole data's, traced through the data directory's subset manifests.
    The same seed on another draw (data_seed) is another seed, not a duplicate."""
    monkeypatch.chdir(tmp_path)
    whole = "feedc0de" * 2
    runs = []
    for seed, data_seed in ((0, 0), (1, 1), (0, 1)):
        subset = f"budget-1000w-text0.5-seed{data_seed}"
        fp = f"{data_seed:016d}"
        manifest = tmp_path / "data" / "real" / "prepared" / "subsets" / subset / "ingest" / "manifest.json"
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps({"fingerprint": fp, "subset": subset, "whole_data_fingerprint": whole}))
        run = make_run(tmp_path, f"r-s{seed}-d{data_seed}", ["--seed", str(seed), "--data_seed", str(data_seed),
                                                            "--word_budget", "1000", "--data_dir", "data/real"],
                       0.5, 0.6 + 0.1 * seed)
        runs.append(on_data(run, fp, subset))
    df, _ = compare.load_runs(runs)
    assert set(df.attrs["data"].values()) == {"real/budget-1000w-text0.5@feedc0de"}
    agg = compare.by_condition(df)
    assert list(agg[("n", "seeds")]) == [3]
    # a draw whose subset manifest is gone: identified by path, and said so
    shutil.rmtree(tmp_path / "data" / "real" / "prepared")
    df, _ = compare.load_runs(runs)
    assert set(df.attrs["data"].values()) == {"real/budget-1000w-text0.5 (path only)"}
    assert "path only" in capsys.readouterr().err
    assert list(compare.by_condition(df)[("n", "seeds")]) == [3]


def test_data_manifest_beside_the_run_is_read_first(tmp_path):
    """A copy of the data's ingest manifest in the run directory (`data_manifest.json`) names
    the whole data of a draw without the data directory."""
    runs = []
    for seed in (0, 1):
        subset = f"budget-1000w-text0.5-seed{seed}"
        run = make_run(tmp_path, f"r-s{seed}", ["--seed", str(seed), "--word_budget", "1000"], 0.5, 0.6)
        (run / "data_manifest.json").write_text(json.dumps({"fingerprint": f"{seed:016d}", "subset": subset,
                                                            "whole_data_fingerprint": "feedc0de" * 2}))
        runs.append(on_data(run, f"{seed:016d}", subset))
    df, _ = compare.load_runs(runs)
    assert set(df.attrs["data"].values()) == {"world/budget-1000w-text0.5@feedc0de"}
    assert list(compare.by_condition(df)[("n", "seeds")]) == [2]

"""Ingest, word counting, scoring and curriculum stages on hand-made BabyLM-format data."""

import json

import datasets
import numpy as np
import pytest
from PIL import Image

from babymm.files import DataError
from data_prep import build_curriculum, count_words, ingest, score


def make_data(root, captions=None, text_lines=None):
    (root / "text").mkdir(parents=True)
    (root / "captions").mkdir()
    (root / "images").mkdir()
    lines = text_lines or ["the ball is red .", "", "look at the dog !", "   ", "where is the cup ?"]
    (root / "text" / "child.train").write_text("\n".join(lines) + "\n")
    captions = captions or ["a red circle", "a big blue square on the left", "two green stars",
                            "a small red circle is above a big blue square"]
    rows = []
    for i, cap in enumerate(captions):
        Image.new("RGB", (40, 40), (i * 40, 10, 200)).save(root / "images" / f"{i}.png")
        rows.append(json.dumps({"image": f"../images/{i}.png", "caption": cap}))
    (root / "captions" / "train.jsonl").write_text("\n".join(rows) + "\n")
    return root


def test_ingest_reads_text_and_images(tmp_path, capsys):
    root = make_data(tmp_path / "d")
    out = ingest.ingest(root, image_size=16)
    text = datasets.load_from_disk(str(out / "text"))
    caps = datasets.load_from_disk(str(out / "captions")).with_format("numpy")
    assert text["text"] == ["the ball is red .", "look at the dog !", "where is the cup ?"]
    assert caps.num_rows == 4 and caps[0]["pixel_values"].shape == (3, 16, 16)
    assert caps[1]["num_words"] == 7
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["blank_text_lines_skipped"] == {"child.train": 2}  # counted, and reported
    assert "2 blank text lines skipped" in capsys.readouterr().out
    # idempotent: the second call does nothing
    mtime = (out / "manifest.json").stat().st_mtime_ns
    ingest.ingest(root, image_size=16)
    assert (out / "manifest.json").stat().st_mtime_ns == mtime


@pytest.mark.parametrize("bad_line, message", [
    ('{"image": "../images/0.png", "caption": "a red', r"train.jsonl:3: malformed JSON"),
    ('{"image": "../images/0.png", "caption": "   "}', r"train.jsonl:3: empty caption"),
    ('{"image": "../images/nope.png", "caption": "a cat"}', r"train.jsonl:3: .*nope.png"),
    ('{"image": "../images/junk.png", "caption": "a cat"}', r"train.jsonl:3: .*junk.png: unreadable image"),
    ('{"caption": "a cat"}', r"train.jsonl:3: record needs 'image' and 'caption'"),
])
def test_ingest_errors_name_file_and_line(tmp_path, bad_line, message):
    root = make_data(tmp_path / "d", captions=["a red circle", "a blue square"])
    (root / "images" / "junk.png").write_bytes(b"not a png")
    with (root / "captions" / "train.jsonl").open("a") as f:
        f.write(bad_line + "\n")
    with pytest.raises(DataError, match=message):
        ingest.ingest(root)
    assert not ingest.out_dir(root).exists()  # nothing half-written
    assert not [p for p in (root / "prepared").iterdir()] if (root / "prepared").exists() else True


def test_ingest_main_reports_one_line_error(tmp_path, capsys):
    assert ingest.main(["--data_dir", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "missing" in err and "\n" not in err


def test_precomputed_features(tmp_path):
    root = tmp_path / "d"
    (root / "captions").mkdir(parents=True)
    caps = ["a red circle", "a dog", "two cats", "a cup"]
    (root / "captions" / "cc_captions.json").write_text(json.dumps(caps))
    feats = np.arange(4 * 6, dtype=np.float32).reshape(4, 6)
    np.save(root / "captions" / "cc_dino_v2_states_1of2.npy", feats[:3])
    np.save(root / "captions" / "cc_dino_v2_states_2of2.npy", feats[3:])
    out = ingest.ingest(root)
    ds = datasets.load_from_disk(str(out / "captions"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["image_input"] == "features" and len(manifest["feature_files"]) == 2
    assert ds["feature_file"] == [0, 0, 0, 1] and ds["feature_row"] == [0, 1, 2, 0]
    np.save(root / "captions" / "cc_dino_v2_states_2of2.npy", feats[3:].repeat(2, axis=0))
    with pytest.raises(DataError, match="4 captions but 5 feature rows"):
        ingest.ingest(root, overwrite=True)


def test_word_count_and_budget(tmp_path):
    root = make_data(tmp_path / "d")
    ingest.ingest(root)
    m = count_words.count_words(root, word_budget=1000)
    assert m["text_words"] == 5 + 5 + 5 and m["caption_words"] == 3 + 7 + 3 + 10
    with pytest.raises(DataError, match="exceed the budget of 20"):
        count_words.count_words(root, word_budget=20)


def test_length_curriculum_orders_short_first(tmp_path):
    root = make_data(tmp_path / "d")
    ingest.ingest(root)
    out = build_curriculum.build_curriculum(root, "length")
    order = np.load(out / "order.npy")
    scores = np.load(score.out_dir(root, "length") / "scores.npy")
    assert list(scores[order]) == sorted(scores)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["curriculum"]["scorer"] == "length" and manifest["captions"] == 4
    anti = np.load(build_curriculum.build_curriculum(root, "anti_length") / "order.npy")
    assert list(scores[anti]) == sorted(scores, reverse=True)
    with pytest.raises(DataError, match="unknown curriculum 'nope'"):
        build_curriculum.build_curriculum(root, "nope")

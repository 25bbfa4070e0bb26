"""Every reader of input data on bad input: a one-line DataError naming the file, the line or
record and the problem, or with `on_bad_record="skip"` a skip that is counted, never silent.

Readers: ingest (text/*.train, captions/*.jsonl with images, captions/X_captions.json + .npy),
the tokenizer stage (very long lines), and the eval readers (text-task and image-task jsonl,
vqa.json and their image paths)."""

import json
import os
import random
import re
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
from PIL import Image

from babymm.files import DataError, read_json, read_jsonl
from babymm.text import normalize_text
from babymm.tokenizer import load_tokenizer
from data_prep import ingest, pipeline, train_tokenizer
from eval import multimodal, text_tasks

SIZE = 8  # image size: tiny images keep these tests fast
GOOD_TEXT = ["the ball is red .", "look at the dog !", "where is the cup ?"]
GOOD_CAPS = ["a red circle", "a blue square", "two green stars"]


# --- builders ------------------------------------------------------------------------------


def write_text(root, content: bytes, name="child.train"):
    (root / "text").mkdir(parents=True, exist_ok=True)
    (root / "text" / name).write_bytes(content)
    return root


def save_image(path, i=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (SIZE, SIZE), (i * 40 % 256, 10, 200)).save(path)


def write_jsonl_captions(root, lines, n_images=3):
    """captions/train.jsonl from `lines` (str or raw bytes), with images/0..n-1.png."""
    (root / "captions").mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        save_image(root / "images" / f"{i}.png", i)
    raw = b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines)
    (root / "captions" / "train.jsonl").write_bytes(raw)
    return root


def cap(i, caption=None, image=None):
    return json.dumps({"image": image or f"../images/{i}.png", "caption": caption or GOOD_CAPS[i]})


def write_features(root, captions, arrays, raw_json: bytes | None = None):
    """captions/cc_captions.json (the list, or raw bytes) and cc_feat_{k}of{n}.npy."""
    (root / "captions").mkdir(parents=True, exist_ok=True)
    path = root / "captions" / "cc_captions.json"
    path.write_bytes(raw_json if raw_json is not None else json.dumps(captions).encode())
    for k, arr in enumerate(arrays, 1):
        np.save(root / "captions" / f"cc_feat_{k}of{len(arrays)}.npy", arr)
    return root


def feats(n, d=4, dtype=np.float32, start=0):
    return (np.arange(n * d, dtype=np.float64).reshape(n, d) + start * d).astype(dtype)


def manifest(out):
    return json.loads((out / "manifest.json").read_text())


def ingested_text(out):
    return datasets.load_from_disk(str(out / "text"))["text"]


def ingested_captions(out):
    return datasets.load_from_disk(str(out / "captions"))["caption"]


def pixel_model(encoder="conv"):
    """What eval's image readers ask of a model, and no more: they fail before it is run."""
    return SimpleNamespace(has_vision=True, config=SimpleNamespace(vision_encoder=encoder, image_size=SIZE))


# --- 1. bytes that are not UTF-8 ------------------------------------------------------------


def test_text_not_utf8_names_line_and_byte(tmp_path):
    root = write_text(tmp_path / "d", b"the ball is red .\nlook at the d\xf6g !\nwhere is the cup ?\n")
    with pytest.raises(DataError, match=r"child\.train:2: not valid UTF-8 \(byte 0xf6 at column 14\); "
                                        r"save the file as UTF-8, or pass --on_bad_record skip$"):
        ingest.ingest(root)
    assert not ingest.out_dir(root).exists()
    out = ingest.ingest(root, on_bad_record="skip")
    assert ingested_text(out) == ["the ball is red .", "where is the cup ?"]
    assert manifest(out)["skipped_records"] == {"child.train": {"not valid UTF-8": 1}}


def test_captions_jsonl_not_utf8(tmp_path):
    root = write_jsonl_captions(tmp_path / "d", [cap(0), b'{"image": "../images/1.png", "caption": "a bl\xe9 square"}',
                                                 cap(2)])
    with pytest.raises(DataError, match=r"train\.jsonl:2: not valid UTF-8 \(byte 0xe9 at column 46\)"):
        ingest.ingest(root, image_size=SIZE)
    out = ingest.ingest(root, image_size=SIZE, on_bad_record="skip")
    assert ingested_captions(out) == [GOOD_CAPS[0], GOOD_CAPS[2]]
    assert manifest(out)["skipped_records"] == {"train.jsonl": {"not valid UTF-8": 1}}


@pytest.mark.parametrize("on_bad_record", ["error", "skip"])  # a whole file is never skipped
def test_captions_json_not_utf8(tmp_path, on_bad_record):
    raw = b'[\n "a red circle",\n "a d\xf6g",\n "two cats"\n]\n'
    root = write_features(tmp_path / "d", None, [feats(3)], raw_json=raw)
    with pytest.raises(DataError, match=r"cc_captions\.json:3: not valid UTF-8 \(byte 0xf6 at column 6\)"):
        ingest.ingest(root, on_bad_record=on_bad_record)


def test_eval_jsonl_not_utf8(tmp_path):
    d = tmp_path / "blimp"
    d.mkdir()
    good = json.dumps({"sentence_good": "the dog runs", "sentence_bad": "the dog run"})
    (d / "agr.jsonl").write_bytes(f"{good}\n".encode() + b'{"sentence_good": "caf\xe9", "sentence_bad": "x"}\n')
    with pytest.raises(DataError, match=r"agr\.jsonl:2: not valid UTF-8 \(byte 0xe9 at column 23\)"):
        text_tasks.write_tasks("blimp", d, tmp_path / "tasks", "t")
    wino = tmp_path / "winoground"
    save_image(wino / "images" / "w0.png")
    row = {"image_key": "w0", "caption_0": "a red circle", "caption_1": "a circle red"}
    (wino / "winoground.jsonl").write_bytes(f"{json.dumps(row)}\n\n".encode() + b'{"image_key": "\xff"}\n')
    with pytest.raises(DataError, match=r"winoground\.jsonl:3: not valid UTF-8 \(byte 0xff"):
        multimodal.winoground(pixel_model(), None, wino)


def test_read_json_not_utf8_and_bom(tmp_path):
    path = tmp_path / "x.json"
    path.write_bytes(b'["ok",\n"also ok",\n"bad \xc3("]')
    with pytest.raises(DataError, match=r"x\.json:3: not valid UTF-8 \(byte 0xc3 at column 6\)"):
        read_json(path)
    path.write_bytes(b'\xef\xbb\xbf["a byte-order mark is fine"]')
    assert read_json(path) == ["a byte-order mark is fine"]
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\r\n{"b": 2}\r\n')
    assert read_jsonl(path) == [{"a": 1}, {"b": 2}]


# --- 2. truncated and malformed JSON ----------------------------------------------------------


@pytest.mark.parametrize("on_bad_record", ["error", "skip"])
def test_captions_json_cut_in_the_middle(tmp_path, on_bad_record):
    caps = ["a red circle", "a dog", "two cats", "a cup"]
    text = json.dumps(caps, indent=1)
    cut = text.index("two ca") + 3
    root = write_features(tmp_path / "d", None, [feats(4)], raw_json=text[:cut].encode())
    line = text[:cut].count("\n") + 1
    with pytest.raises(DataError, match=rf"cc_captions\.json:{line}: malformed or truncated JSON "
                                        r"\(Unterminated string starting at column 2\); fix or regenerate"):
        ingest.ingest(root, on_bad_record=on_bad_record)


def test_captions_json_not_a_list(tmp_path):
    root = write_features(tmp_path / "d", {"captions": ["a dog"]}, [feats(1)])
    with pytest.raises(DataError, match=r"cc_captions\.json: expected a JSON list of caption strings, got dict"):
        ingest.ingest(root)


@pytest.mark.parametrize("bad_line, message, reason", [
    ('{"image": "../images/1.png", "capt', r"train\.jsonl:2: malformed JSON \(Unterminated string starting at "
                                          r"column 30\); each line must be one object", "malformed JSON"),
    ('["../images/1.png", "a blue square"]', r"train\.jsonl:2: expected a JSON object, got list", "not a JSON object"),
    ('"a blue square"', r"train\.jsonl:2: expected a JSON object, got str", "not a JSON object"),
    ('{"image": "../images/1.png"}', r"train\.jsonl:2: record needs 'image' and 'caption' keys", "missing key"),
    ('{"image": 7, "caption": "a cat"}', r"train\.jsonl:2: 'image' must be a path, got 7", "bad image path"),
    ('{"image": "../images/1.png", "caption": ["a", "cat"]}', r"train\.jsonl:2: caption must be a string, got list",
     "caption not a string"),
    ("", r"train\.jsonl:2: blank line in a jsonl file", "blank line"),
])
def test_captions_jsonl_bad_line(tmp_path, bad_line, message, reason):
    root = write_jsonl_captions(tmp_path / "d", [cap(0), bad_line, cap(2)])
    with pytest.raises(DataError, match=message + r".*, or pass --on_bad_record skip$"):
        ingest.ingest(root, image_size=SIZE)
    out = ingest.ingest(root, image_size=SIZE, on_bad_record="skip")
    assert ingested_captions(out) == [GOOD_CAPS[0], GOOD_CAPS[2]]
    assert manifest(out)["skipped_records"] == {"train.jsonl": {reason: 1}}


def test_captions_jsonl_last_line_cut(tmp_path):
    """A file cut mid-line, with no final newline."""
    root = write_jsonl_captions(tmp_path / "d", [cap(0), cap(1)])
    path = root / "captions" / "train.jsonl"
    path.write_bytes(path.read_bytes() + cap(2).encode()[:20])
    with pytest.raises(DataError, match=r"train\.jsonl:3: malformed JSON \(Unterminated string"):
        ingest.ingest(root, image_size=SIZE)


@pytest.mark.parametrize("bad_line, message", [
    ('{"sentence_good": "the dog', r"agr\.jsonl:2: malformed JSON \(Unterminated string starting at column 19\)"),
    ('["the dog runs", "the dog run"]', r"agr\.jsonl:2: expected a JSON object, got list"),
])
def test_eval_jsonl_malformed(tmp_path, bad_line, message):
    d = tmp_path / "ewok"
    d.mkdir()
    good = json.dumps({"Context1": "a", "Target1": "b", "Target2": "c"})
    (d / "agr.jsonl").write_text(f"{good}\n{bad_line}\n")
    with pytest.raises(DataError, match=message):
        text_tasks.write_tasks("ewok", d, tmp_path / "tasks", "t")
    zs = tmp_path / "zeroshot"
    save_image(zs / "images" / "0.png")
    row = json.dumps({"image": "images/0.png", "label": "red", "labels": ["red", "blue"]})
    (zs / "agr.jsonl").write_text(f"{row}\n{bad_line}\n")
    with pytest.raises(DataError, match=message):
        multimodal.zero_shot(pixel_model(), None, zs)


def test_vqa_json_truncated(tmp_path):
    d = tmp_path / "vqa"
    d.mkdir()
    item = {"question": "what color?", "target_ans": "red", "distractors": ["b"] * 7, "image_id": "v0"}
    text = json.dumps([item, item], indent=1)
    (d / "vqa.json").write_text(text[: len(text) // 2])
    with pytest.raises(DataError, match=r"vqa\.json:\d+: malformed or truncated JSON"):
        multimodal.vqa(pixel_model(), None, d)
    (d / "vqa.json").write_text(json.dumps([item, {"question": "where?"}]))
    with pytest.raises(DataError, match=r"vqa\.json: record 1: missing field\(s\) \['target_ans', 'distractors', "
                                        r"'image_id'\]"):
        multimodal.vqa(pixel_model(), None, d)


# --- 3. feature .npy files: shape, dtype, truncation ---------------------------------------


@pytest.mark.parametrize("on_bad_record", ["error", "skip"])
@pytest.mark.parametrize("array, message", [
    (np.arange(3, dtype=np.float32), r"cc_feat_1of1\.npy: features must be \[N, D\] or \[N, P, D\], got shape \(3,\)"),
    (np.zeros((3, 2, 2, 2), np.float32), r"cc_feat_1of1\.npy: features must be \[N, D\] or \[N, P, D\], got shape"),
    (np.arange(12).reshape(3, 4), r"cc_feat_1of1\.npy: features must be floating point \(float16/32/64\), got int64"),
    (np.zeros((3, 4), bool), r"cc_feat_1of1\.npy: features must be floating point .*, got bool"),
])
def test_features_of_wrong_shape_or_dtype(tmp_path, array, message, on_bad_record):
    root = write_features(tmp_path / "d", GOOD_CAPS, [array])
    with pytest.raises(DataError, match=message):
        ingest.ingest(root, on_bad_record=on_bad_record)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_features_of_any_float_dtype(tmp_path, dtype):
    root = write_features(tmp_path / "d", GOOD_CAPS, [feats(3, dtype=dtype)])
    out = ingest.ingest(root)
    assert ingested_captions(out) == GOOD_CAPS


@pytest.mark.parametrize("on_bad_record", ["error", "skip"])
@pytest.mark.parametrize("cut, message", [
    ("half", r"cc_feat_1of1\.npy: truncated or not a \.npy file \(mmap length is greater than file size\); "
             r"regenerate it$"),
    ("header", r"cc_feat_1of1\.npy: truncated or not a \.npy file \(EOF: reading array header"),
    ("zero", r"cc_feat_1of1\.npy: empty file \(0 bytes\): truncated or not a \.npy file; regenerate it$"),
    ("text", r"cc_feat_1of1\.npy: truncated or not a \.npy file"),
])
def test_truncated_npy(tmp_path, cut, message, on_bad_record):
    root = write_features(tmp_path / "d", GOOD_CAPS, [feats(3, d=64)])
    npy = root / "captions" / "cc_feat_1of1.npy"
    data = npy.read_bytes()
    npy.write_bytes({"half": data[: len(data) // 2], "header": data[:60], "zero": b"",
                     "text": b"not an array at all\n"}[cut])
    with pytest.raises(DataError, match=message):
        ingest.ingest(root, on_bad_record=on_bad_record)


def test_feature_files_must_share_row_shape(tmp_path):
    root = write_features(tmp_path / "d", GOOD_CAPS, [feats(2, d=4), feats(1, d=5)])
    with pytest.raises(DataError, match=r"cc_feat_2of2\.npy: feature rows of shape \(5,\), but cc_feat_1of2\.npy "
                                        r"has \(4,\); all feature files must share one row shape"):
        ingest.ingest(root)


def test_eval_features_truncated(tmp_path):
    d = tmp_path / "winoground"
    d.mkdir()
    (d / "features.npy").write_bytes(b"")
    (d / "feature_ids.json").write_text('["images/w0.png"]')
    with pytest.raises(DataError, match=r"features\.npy: empty file \(0 bytes\)"):
        multimodal.EvalImages(pixel_model("features"), d)


# --- 4. captions and feature rows that do not align --------------------------------------


@pytest.mark.parametrize("on_bad_record", ["error", "skip"])
@pytest.mark.parametrize("n_caps, rows", [(4, [3, 2]), (6, [3, 2])])
def test_caption_and_row_count_mismatch(tmp_path, n_caps, rows, on_bad_record):
    caps = [f"caption {i}" for i in range(n_caps)]
    root = write_features(tmp_path / "d", caps, [feats(n) for n in rows])
    with pytest.raises(DataError, match=rf"cc_captions\.json: {n_caps} captions but 5 feature rows in its \.npy "
                                        r"files \(cc_feat_1of2\.npy, cc_feat_2of2\.npy\); they must align row by row"):
        ingest.ingest(root, on_bad_record=on_bad_record)
    assert not ingest.out_dir(root).exists()


# --- 5. images that are not images --------------------------------------------------------


@pytest.mark.parametrize("content, message", [
    (b"not a png", r"train\.jsonl:2: .*junk\.png: unreadable image \(UnidentifiedImageError"),
    (b"", r"train\.jsonl:2: .*junk\.png: empty image file \(0 bytes\); fix or remove it"),
    (None, r"train\.jsonl:2: image .*junk\.png not found; fix the path or remove the record"),
])
def test_captions_image_not_an_image(tmp_path, content, message):
    root = write_jsonl_captions(tmp_path / "d", [cap(0), cap(1, image="../images/junk.png"), cap(2)])
    if content is not None:
        (root / "images" / "junk.png").write_bytes(content)
    with pytest.raises(DataError, match=message + r".*, or pass --on_bad_record skip$"):
        ingest.ingest(root, image_size=SIZE)
    out = ingest.ingest(root, image_size=SIZE, on_bad_record="skip")
    reason = "image not found" if content is None else "unreadable image"
    assert manifest(out)["skipped_records"] == {"train.jsonl": {reason: 1}}
    assert ingested_captions(out) == [GOOD_CAPS[0], GOOD_CAPS[2]]


@pytest.mark.parametrize("content, message", [
    (b"not a png", r"zs\.jsonl:2: .*junk\.png: unreadable image"),
    (b"", r"zs\.jsonl:2: .*junk\.png: empty image file \(0 bytes\)"),
    (None, r"zs\.jsonl:2: image .*junk\.png not found; fix the path or remove the item"),
])
def test_eval_image_not_an_image(tmp_path, content, message):
    d = tmp_path / "zeroshot"
    save_image(d / "images" / "0.png")
    if content is not None:
        (d / "images" / "junk.png").write_bytes(content)
    rows = [{"image": p, "label": "red", "labels": ["red", "blue"]} for p in ("images/0.png", "images/junk.png")]
    (d / "zs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=message):
        multimodal.zero_shot(pixel_model(), None, d)


def test_eval_missing_image_or_feature_names_line(tmp_path):
    d = tmp_path / "captions"
    save_image(d / "images" / "0.png")
    rows = [{"image": "images/0.png", "caption": "a dog"}, {"image": "images/nope.png", "caption": "a cat"}]
    (d / "heldout.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(DataError, match=r"heldout\.jsonl:2: image .*nope\.png not found"):
        multimodal.heldout_pairs(pixel_model(), d / "heldout.jsonl")
    items, images = multimodal.heldout_pairs(pixel_model(), d / "heldout.jsonl", limit=1)  # line 2 never read
    assert len(items) == 1 and tuple(images.shape) == (1, 3, SIZE, SIZE)
    np.save(d / "features.npy", feats(1))
    (d / "feature_ids.json").write_text('["images/0.png"]')
    with pytest.raises(DataError, match=r"heldout\.jsonl:2: no features for image 'images/nope\.png' in "
                                        r".*feature_ids\.json \(1 missing\)"):
        multimodal.heldout_pairs(pixel_model("features"), d / "heldout.jsonl")


# --- 6. zero-byte files -----------------------------------------------------------------


def test_zero_byte_text_file_is_reported(tmp_path, capsys):
    root = write_text(tmp_path / "d", "\n".join(GOOD_TEXT).encode() + b"\n")
    write_text(root, b"", name="empty.train")
    out = ingest.ingest(root)
    assert ingested_text(out) == GOOD_TEXT
    m = manifest(out)
    assert m["empty_text_files"] == ["empty.train"] and m["text_lines"] == 3
    assert "empty text files: empty.train" in capsys.readouterr().out


def test_only_zero_byte_text_files(tmp_path):
    root = write_text(tmp_path / "d", b"", name="empty.train")
    out = ingest.ingest(root)
    assert manifest(out)["empty_text_files"] == ["empty.train"] and manifest(out)["text_lines"] == 0
    assert ingest.load_text(root) is None


@pytest.mark.parametrize("on_bad_record", ["error", "skip"])
@pytest.mark.parametrize("kind", ["jsonl", "json"])
def test_zero_byte_captions_file(tmp_path, kind, on_bad_record):
    root = tmp_path / "d"
    if kind == "jsonl":
        write_jsonl_captions(root, [])
        name = r"train\.jsonl"
    else:
        write_features(root, None, [feats(0)], raw_json=b"")
        name = r"cc_captions\.json"
    (root / "captions" / ("train.jsonl" if kind == "jsonl" else "cc_captions.json")).write_bytes(b"")
    with pytest.raises(DataError, match=rf"{name}: empty file \(0 bytes\); a captions file needs at least one "
                                        r"record: fill it or remove it$"):
        ingest.ingest(root, on_bad_record=on_bad_record)


def test_whitespace_only_captions_json(tmp_path):
    root = write_features(tmp_path / "d", None, [feats(1)], raw_json=b"\n  \n")
    with pytest.raises(DataError, match=r"cc_captions\.json: empty file \(4 bytes\); expected JSON"):
        ingest.ingest(root)


def test_zero_byte_eval_jsonl(tmp_path):
    d = tmp_path / "winoground"
    d.mkdir()
    (d / "winoground.jsonl").write_bytes(b"")
    with pytest.raises(DataError, match=r"winoground\.jsonl: no items; fill it or remove it"):
        multimodal.winoground(pixel_model(), None, d)
    (d / "vqa.json").write_bytes(b"")
    with pytest.raises(DataError, match=r"vqa\.json: empty file \(0 bytes\)"):
        multimodal.vqa(pixel_model(), None, d)


# --- 7. a very long line: ingested whole, and not dropped by SentencePiece --------------------


NORMAL = ["the ball is red .", "look at the dog !", "where is the cup ?", "a big blue square",
          "the cat sat on the mat", "two green stars"] * 5


def make_long_line(chars=200_000):
    """Words of NORMAL with 'zqxjvw' every fourth word (not one word repeated: SentencePiece
    takes minutes over a 200,000-character periodic line)."""
    rng, words, out = random.Random(0), " ".join(NORMAL).split(), []
    while sum(map(len, out)) + len(out) < chars:
        out += [rng.choice(words) for _ in range(3)] + ["zqxjvw"]
    return " ".join(out)


def test_long_line_is_ingested_and_trained_on(tmp_path):
    """SentencePiece skips lines over max_sentence_length bytes (4192 by default) without a
    word; the only occurrences of 'zqxjvw' are in one 200,000-character line."""
    long_line = make_long_line()
    assert len(long_line) >= 200_000 and not any("zqxjvw" in line for line in NORMAL)
    root = write_text(tmp_path / "d", ("\n".join(NORMAL + [long_line]) + "\n").encode())
    ingest.ingest(root)
    assert ingested_text(ingest.out_dir(root))[-1] == long_line
    out = train_tokenizer.train_tokenizer(root, vocab_size=64)
    vocab = load_tokenizer(out).get_vocab()
    assert "▁zqxjvw" in vocab


def test_normal_lines_keep_sentencepiece_default(tmp_path, monkeypatch):
    seen = []
    real = train_tokenizer.spm.SentencePieceTrainer.train
    monkeypatch.setattr(train_tokenizer.spm.SentencePieceTrainer, "train",
                        lambda **kw: seen.append(kw["max_sentence_length"]) or real(**kw))
    train_tokenizer._train_spm(NORMAL, 30, tmp_path / "spm")
    assert seen == [4192]
    train_tokenizer._train_spm(NORMAL + ["é" * 5000], 30, tmp_path / "spm2")
    assert seen[-1] == 10_000  # bytes, not characters


# --- 8. paths outside the data directory ------------------------------------------------------


@pytest.mark.parametrize("image", ["../../outside.png", "ABSOLUTE", "../images/../../outside.png"])
def test_image_outside_data_dir(tmp_path, image):
    save_image(tmp_path / "outside.png")
    image = str(tmp_path / "outside.png") if image == "ABSOLUTE" else image
    root = write_jsonl_captions(tmp_path / "d", [cap(0), cap(1, image=image), cap(2)])
    with pytest.raises(DataError, match=rf"train\.jsonl:2: image path '{image}' is outside the data directory "
                                        rf"{tmp_path / 'd'}; move the image under it \(a symlink inside it is fine\), "
                                        r"or pass --on_bad_record skip$"):
        ingest.ingest(root, image_size=SIZE)
    out = ingest.ingest(root, image_size=SIZE, on_bad_record="skip")
    assert manifest(out)["skipped_records"] == {"train.jsonl": {"image outside the data directory": 1}}
    assert ingested_captions(out) == [GOOD_CAPS[0], GOOD_CAPS[2]]


def test_symlink_inside_data_dir_is_allowed(tmp_path):
    """Users symlink image folders: the check is by name, the symlink is not followed."""
    elsewhere = tmp_path / "elsewhere"
    for i in range(3):
        save_image(elsewhere / f"{i}.png", i)
    root = tmp_path / "d"
    (root / "captions").mkdir(parents=True)
    os.symlink(elsewhere, root / "linked")
    rows = [cap(0, image="../linked/0.png"), cap(1, image=str(root / "linked" / "1.png")),
            cap(2, image="../images/../linked/2.png")]
    (root / "captions" / "train.jsonl").write_text("\n".join(rows) + "\n")
    out = ingest.ingest(root, image_size=SIZE)
    assert ingested_captions(out) == GOOD_CAPS


def test_feature_files_are_absolute_but_not_resolved(tmp_path, monkeypatch):
    real = write_features(tmp_path / "real", GOOD_CAPS, [feats(2), feats(1, start=2)])
    os.symlink(real, tmp_path / "link")
    monkeypatch.chdir(tmp_path)
    out = ingest.ingest("link")  # relative, through a symlink
    files = manifest(out)["feature_files"]
    assert files == [str(tmp_path / "link" / "captions" / f"cc_feat_{k}of2.npy") for k in (1, 2)]
    monkeypatch.chdir("/")
    np.testing.assert_array_equal(np.load(files[1]), feats(1, start=2))  # what CaptionData does with them


FOURTH = "a fourth caption"  # a curriculum needs four


def image_store(tmp_path, name="coco", shade=0):
    """An image store outside the data directory (COCO-style: train2017/N.png)."""
    store = tmp_path / name
    for i in range(4):
        save_image(store / "train2017" / f"{i}.png", i + shade)
    return store


def store_captions(tmp_path, store, text_lines=150):
    """A data directory whose captions name images of `store`: relative to it, absolute inside it,
    and through a `..` that stays inside it; and enough text for a tokenizer."""
    root = tmp_path / "d"
    (root / "captions").mkdir(parents=True)
    rows = [cap(0, image="train2017/0.png"), cap(1, image=str(store / "train2017" / "1.png")),
            cap(2, image="train2017/sub/../2.png"), cap(3, caption=FOURTH, image="train2017/3.png")]
    (root / "captions" / "train.jsonl").write_text("\n".join(rows) + "\n")
    write_text(root, ("\n".join((NORMAL * 5)[:text_lines]) + "\n").encode())
    return root


def test_image_root_outside_the_data_dir_is_ingested_and_read_by_training(tmp_path):
    """--image_root: caption files whose images live in a store outside the data directory (COCO
    downloaded once) resolve their relative paths against it; training reads those images."""
    from babymm.config import parse_config
    from babymm.data import CaptionData
    from babymm.images import load_image

    store = image_store(tmp_path)
    root = store_captions(tmp_path, store)
    # without --image_root, paths are relative to the jsonl file and the store is outside the data
    # directory: refused, as before
    save_image(root / "captions" / "train2017" / "0.png", 7)  # what line 1 names, relative to the jsonl file
    with pytest.raises(DataError, match=r"train\.jsonl:2: image path '.*1\.png' is outside the data directory"):
        ingest.ingest(root, image_size=SIZE, on_bad_record="error")
    out = ingest.ingest(root, image_size=SIZE, on_bad_record="skip")
    assert manifest(out)["skipped_records"] == {"train.jsonl": {"image not found": 2,
                                                                "image outside the data directory": 1}}
    assert manifest(out)["image_root"] is None and ingested_captions(out) == [GOOD_CAPS[0]]
    # with it, every record is read from the store
    prepared = pipeline.prepare(root, image_size=SIZE, vocab_size=40, image_root=store)
    m = manifest(prepared.ingest)
    assert m["image_root"] == str(store) and m["skipped_records"] == {} and m["captions"] == 4
    ds = datasets.load_from_disk(str(prepared.ingest / "captions"))
    assert ds["image_id"] == [f"train2017/{i}.png" for i in range(4)]  # relative to the root
    data = CaptionData(prepared.ingest, load_tokenizer(prepared.tokenizer), 8)
    images = data.__getitems__([0, 1, 2, 3])["images"].numpy()
    expected = np.stack([load_image(store / "train2017" / f"{i}.png", SIZE) for i in range(4)])
    np.testing.assert_array_equal(images, expected)
    assert not (expected[0] == expected[1]).all()  # the images differ, so each was read from its own file
    # the root is part of the data: the same root is up to date, another is other data
    fp = m["fingerprint"]
    assert manifest(ingest.ingest(root, image_size=SIZE, image_root=store))["fingerprint"] == fp
    other = image_store(tmp_path, "coco_other", shade=3)
    out = ingest.ingest(root, image_size=SIZE, image_root=other, on_bad_record="skip")  # line 2 is absolute, in coco
    assert manifest(out)["fingerprint"] != fp and manifest(out)["image_root"] == str(other)
    assert manifest(out)["skipped_records"] == {"train.jsonl": {"image outside the image root": 1}}
    pixels = np.asarray(datasets.load_from_disk(str(out / "captions")).with_format("numpy")["pixel_values"])
    np.testing.assert_array_equal(pixels[0], load_image(other / "train2017" / "0.png", SIZE))
    # train.py's flag
    assert parse_config(["--image_root", str(store)]).data.image_root == str(store)
    assert parse_config([]).data.image_root is None


@pytest.mark.parametrize("image", ["../outside.png", "ABSOLUTE", "train2017/../../outside.png", "IN_DATA_DIR"])
def test_image_escaping_the_image_root_is_refused(tmp_path, image):
    """Under --image_root every image path is confined to it: an absolute path or a `..` leading
    out of it (even into the data directory) is a bad record naming file and line."""
    store = image_store(tmp_path)
    save_image(tmp_path / "outside.png")
    root = store_captions(tmp_path, store)
    save_image(root / "images" / "0.png")
    image = {"ABSOLUTE": str(tmp_path / "outside.png"), "IN_DATA_DIR": str(root / "images" / "0.png")}.get(image, image)
    rows = (root / "captions" / "train.jsonl").read_text().splitlines()
    rows[1] = cap(1, image=image)
    (root / "captions" / "train.jsonl").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=rf"train\.jsonl:2: image path '{re.escape(image)}' is outside --image_root "
                                        rf"{re.escape(str(store))}; give it relative to that directory, without a "
                                        r"'\.\.' leading out of it, or pass --on_bad_record skip$"):
        ingest.ingest(root, image_size=SIZE, image_root=store)
    out = ingest.ingest(root, image_size=SIZE, image_root=store, on_bad_record="skip")
    assert manifest(out)["skipped_records"] == {"train.jsonl": {"image outside the image root": 1}}
    assert ingested_captions(out) == [GOOD_CAPS[0], GOOD_CAPS[2], FOURTH]


def test_image_root_cli_and_a_missing_root(tmp_path, capsys):
    store = image_store(tmp_path)
    root = store_captions(tmp_path, store)
    assert ingest.main(["--data_dir", str(root), "--image_size", str(SIZE), "--image_root", str(store)]) == 0
    assert manifest(ingest.out_dir(root))["image_root"] == str(store)
    assert ingest.main(["--data_dir", str(root), "--image_root", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"error: --image_root {tmp_path / 'nowhere'}: not a directory; pass the directory the caption "
                   "files' image paths are relative to")
    assert pipeline.main(["--data_dir", str(root), "--image_root", str(tmp_path / "nowhere")]) == 2


def test_features_are_extracted_from_the_image_root(tmp_path, monkeypatch):
    """Frozen-encoder features of raw images read each image from --image_root, as ingest did."""
    from babymm import frozen_vision
    from data_prep import extract_features

    class Mean:  # a stand-in frozen model: an image's mean colour
        def encode_batch(self, images):
            return np.stack([np.asarray(im.convert("RGB"), dtype=np.float32).mean(axis=(0, 1)) for im in images])

        def describe(self):
            return {"vision_model": "mean"}

    monkeypatch.setattr(frozen_vision, "model_key", lambda path, pooling="cls": "mean-cls")
    monkeypatch.setattr(frozen_vision, "load_frozen_vision", lambda path, pooling="cls", device=None: Mean())
    store = image_store(tmp_path)
    root = store_captions(tmp_path, store)
    ingest.ingest(root, image_size=SIZE, image_root=store)
    out = extract_features.extract_features(root, tmp_path / "model")
    ids = read_json(out / extract_features.IMAGE_IDS)
    assert ids == [f"train2017/{i}.png" for i in range(4)]
    expected = [np.asarray(Image.open(store / i).convert("RGB"), dtype=np.float32).mean(axis=(0, 1)) for i in ids]
    np.testing.assert_allclose(np.load(out / extract_features.FEATURES), np.stack(expected))


@pytest.mark.parametrize("image", ["../outside.png", "ABSOLUTE", "images/../../outside.png"])
def test_eval_image_outside_its_directory(tmp_path, image):
    save_image(tmp_path / "outside.png")
    image = str(tmp_path / "outside.png") if image == "ABSOLUTE" else image
    d = tmp_path / "zeroshot"
    save_image(d / "images" / "0.png")
    rows = [{"image": p, "label": "red", "labels": ["red", "blue"]} for p in ("images/0.png", image)]
    (d / "zs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=rf"zs\.jsonl:2: image path '{image}' is outside the data directory {d}; "
                                        r"move the image under it"):
        multimodal.zero_shot(pixel_model(), None, d)
    wino = tmp_path / "winoground"
    wino.mkdir()
    row = {"image_key": "../../outside", "caption_0": "a b", "caption_1": "b a"}
    (wino / "winoground.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=r"winoground\.jsonl:1: image path 'images/\.\./\.\./outside\.png' is outside"):
        multimodal.winoground(pixel_model(), None, wino)


def test_eval_symlink_inside_is_allowed(tmp_path):
    save_image(tmp_path / "elsewhere" / "0.png")
    d = tmp_path / "zeroshot"
    d.mkdir()
    os.symlink(tmp_path / "elsewhere", d / "images")
    images = multimodal.EvalImages(pixel_model(), d)(["images/0.png", str(d / "images" / "0.png")], ["a:1", "a:2"])
    assert tuple(images.shape) == (2, 3, SIZE, SIZE)


# --- 9. literal special-token strings ---------------------------------------------------


@pytest.mark.parametrize("written, token", [
    ("<pad>", "<pad>"), ("<unk>", "<unk>"), ("<s>", "<s>"), ("</s>", "</s>"), ("<image>", "<image>"),
    ("<S>", "<S>"), ("<Image>", "<Image>"),  # the fast tokenizer lowercases before it matches them
    ("＜image＞", "<image>"),  # fullwidth: NFKC makes it '<image>'
])
def test_special_token_string_in_text(tmp_path, written, token):
    root = write_text(tmp_path / "d", f"the ball is red .\nlook at {written} the dog !\nwhere is the cup ?\n".encode())
    with pytest.raises(DataError, match=rf"child\.train:2: literal special-token string '{token}' in training "
                                        r"text; remove it, or pass --on_bad_record skip$"):
        ingest.ingest(root)
    out = ingest.ingest(root, on_bad_record="skip")
    assert ingested_text(out) == ["the ball is red .", "where is the cup ?"]
    assert manifest(out)["skipped_records"] == {"child.train": {"special-token string": 1}}


def test_special_token_lookalikes_are_fine(tmp_path):
    lines = ["a < b and c > d", "< s > is spaced", "<images> and <imag>", "</ s> <sup> <p>"]
    root = write_text(tmp_path / "d", ("\n".join(lines) + "\n").encode())
    assert ingested_text(ingest.ingest(root)) == lines


def test_special_token_string_in_captions(tmp_path):
    root = write_jsonl_captions(tmp_path / "d", [cap(0), cap(1, caption="a <image> square"), cap(2)])
    with pytest.raises(DataError, match=r"train\.jsonl:2: literal special-token string '<image>' in training text"):
        ingest.ingest(root, image_size=SIZE)
    root = write_features(tmp_path / "f", ["a dog", "a </s> cat", "a cup"], [feats(3)])
    with pytest.raises(DataError, match=r"cc_captions\.json: record 1: literal special-token string '</s>' in "
                                        r"training text; remove it, or pass --on_bad_record skip$"):
        ingest.ingest(root)


# --- skip mode: exact counts, exactly the good records survive ---------------------------------


def test_skip_mode_jsonl_counts_every_reason(tmp_path, capsys):
    save_image(tmp_path / "outside.png")
    lines = [
        cap(0),
        b'{"image": "../images/1.png", "caption": "\xff"}',           # not valid UTF-8
        '{"image": "../images/1.png", "caption": "a b',               # malformed JSON
        '["../images/1.png", "a blue square"]',                       # not a JSON object
        '{"caption": "a cat"}',                                       # missing key
        cap(1, caption="   "),                                        # empty caption
        cap(1, caption="a <pad> cat"),                                # special-token string
        cap(1, image="../images/nope.png"),                           # image not found
        cap(1, image="../images/junk.png"),                           # unreadable image
        cap(1, image="../images/empty.png"),                          # unreadable image (0 bytes)
        cap(1, image="../../outside.png"),                            # outside the data directory
        "",                                                           # blank line
        cap(1),
        cap(2),
    ]
    root = write_jsonl_captions(tmp_path / "d", lines)
    (root / "images" / "junk.png").write_bytes(b"junk")
    (root / "images" / "empty.png").write_bytes(b"")
    write_text(root, b"the ball is red .\n\nbad \xfe\n<s> hi\nwhere is the cup ?\n")
    out = ingest.ingest(root, image_size=SIZE, on_bad_record="skip")
    caps = datasets.load_from_disk(str(out / "captions")).with_format("numpy")
    assert list(caps["caption"]) == GOOD_CAPS
    for i in range(3):
        assert caps[i]["pixel_values"].shape == (3, SIZE, SIZE)
    assert ingested_text(out) == ["the ball is red .", "where is the cup ?"]
    m = manifest(out)
    assert m["skipped_records"] == {
        "train.jsonl": {"not valid UTF-8": 1, "malformed JSON": 1, "not a JSON object": 1, "missing key": 1,
                        "empty caption": 1, "special-token string": 1, "image not found": 1, "unreadable image": 2,
                        "image outside the data directory": 1, "blank line": 1},
        "child.train": {"not valid UTF-8": 1, "special-token string": 1},
    }
    assert m["blank_text_lines_skipped"] == {"child.train": 1} and m["on_bad_record"] == "skip"
    assert m["captions"] == 3 and m["text_lines"] == 2
    assert "1 blank text lines skipped; 13 bad records skipped (" in capsys.readouterr().out


def test_skip_mode_features_stay_aligned(tmp_path):
    """A bad caption is skipped together with its feature row; the rows after it still match."""
    caps = ["a dog", "", "two cats", "<image> a cup", "a ball", 7]
    root = write_features(tmp_path / "d", caps, [feats(3), feats(3, start=3)])
    with pytest.raises(DataError, match=r"cc_captions\.json: record 1: empty caption; remove the record or give it "
                                        r"a caption, or pass --on_bad_record skip$"):
        ingest.ingest(root)
    out = ingest.ingest(root, on_bad_record="skip")
    ds = datasets.load_from_disk(str(out / "captions"))
    assert ds["caption"] == ["a dog", "two cats", "a ball"]
    assert list(zip(ds["feature_file"], ds["feature_row"], strict=True)) == [(0, 0), (0, 2), (1, 1)]
    files = [np.load(f) for f in manifest(out)["feature_files"]]
    all_rows = feats(6)
    for caption, f, r in zip(ds["caption"], ds["feature_file"], ds["feature_row"], strict=True):
        np.testing.assert_array_equal(files[f][r], all_rows[caps.index(caption)])
    assert manifest(out)["skipped_records"] == {
        "cc_captions.json": {"empty caption": 1, "special-token string": 1, "caption not a string": 1}}


def test_skip_mode_every_caption_bad(tmp_path):
    root = write_jsonl_captions(tmp_path / "d", [cap(0, caption=" "), cap(1, image="../images/nope.png")])
    with pytest.raises(DataError, match=r"captions: no caption records left \(skipped as bad: train\.jsonl: "
                                        r"1 empty caption, 1 image not found\); fix the data or remove the captions"):
        ingest.ingest(root, image_size=SIZE, on_bad_record="skip")


def test_on_bad_record_is_in_the_fingerprint_and_checked(tmp_path):
    root = write_jsonl_captions(tmp_path / "d", [cap(0), cap(1, caption=" "), cap(2)])
    ingest.ingest(root, image_size=SIZE, on_bad_record="skip")
    with pytest.raises(DataError, match=r"train\.jsonl:2: empty caption"):  # not "up to date"
        ingest.ingest(root, image_size=SIZE)
    with pytest.raises(DataError, match=r"on_bad_record 'ignore' unknown; use one of error, skip"):
        ingest.ingest(root, on_bad_record="ignore")


def test_cli_one_line_error_and_skip_flag(tmp_path, capsys):
    root = write_jsonl_captions(tmp_path / "d", [cap(0), cap(1, caption="a <unk>"), cap(2)])
    assert ingest.main(["--data_dir", str(root), "--image_size", str(SIZE)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # progress bars come before it
    assert err.startswith("error: ") and "train.jsonl:2: literal special-token string '<unk>'" in err
    assert err.endswith("or pass --on_bad_record skip")
    assert ingest.main(["--data_dir", str(root), "--image_size", str(SIZE), "--on_bad_record", "skip"]) == 0
    assert manifest(ingest.out_dir(root))["skipped_records"] == {"train.jsonl": {"special-token string": 1}}


def test_prepare_passes_on_bad_record(tmp_path):
    rows = [cap(0), cap(1), cap(1, caption="a <image>"), cap(2), cap(0, caption="a dog")]
    root = write_jsonl_captions(tmp_path / "d", rows)
    write_text(root, ("\n".join(NORMAL) + "\n").encode() + b"bad \x80 line\n")
    with pytest.raises(DataError, match=r"child\.train:31: not valid UTF-8"):
        pipeline.prepare(root, image_size=SIZE, vocab_size=40)
    prepared = pipeline.prepare(root, image_size=SIZE, vocab_size=40, on_bad_record="skip")
    m = manifest(prepared.ingest)
    assert m["skipped_records"] == {"train.jsonl": {"special-token string": 1}, "child.train": {"not valid UTF-8": 1}}
    assert manifest(prepared.curriculum)["captions"] == 4


def test_special_string_check_matches_the_tokenizer(tmp_path):
    """What ingest refuses is what the fast tokenizer would turn into special ids, and no more."""
    train_tokenizer._train_spm(NORMAL + ["< > / ＜ ＞ p s i m g e S I"], 40, tmp_path / "spm")
    fast = train_tokenizer.build_fast_tokenizer(tmp_path / "spm.model")
    special = set(fast.all_special_ids)
    for text in ["a <S> b", "x<image>y", "a <IMAGE> b", "a ＜image＞ b", "</s>", "<Pad>", "a <unk>"]:
        assert ingest.special_string(normalize_text(text)) is not None
        assert special & set(fast(text, add_special_tokens=False)["input_ids"]), text
    for text in ["a < s > b", "<images>", "< image >", "</ s>", "<sup>", "a <p> b"]:
        assert ingest.special_string(normalize_text(text)) is None
        assert not special & set(fast(text, add_special_tokens=False)["input_ids"]), text


def test_a_manifest_pointing_outside_the_data_dir_or_at_a_truncated_npy_is_refused_by_training(tmp_path):
    from babymm.data import CaptionData

    root = write_features(tmp_path / "d", GOOD_CAPS, [feats(2), feats(1, start=2)])
    out = ingest.ingest(root)
    tok = None  # the tokenizer is not read when the dataset is opened
    path = out / "manifest.json"
    m = json.loads(path.read_text())
    elsewhere = tmp_path / "elsewhere.npy"
    np.save(elsewhere, feats(2))
    m["feature_files"][1] = str(elsewhere)
    path.write_text(json.dumps(m))
    with pytest.raises(DataError, match=rf"manifest\.json: feature_files\[1\] {elsewhere} is outside the data "
                                        rf"directory {root}; re-run ingest"):
        CaptionData(out, tok, 8)
    m["feature_files"][1] = str(root / "captions" / "cc_feat_2of2.npy")
    path.write_text(json.dumps(m))
    (root / "captions" / "cc_feat_2of2.npy").write_bytes((root / "captions" / "cc_feat_2of2.npy").read_bytes()[:60])
    with pytest.raises(DataError, match=r"cc_feat_2of2\.npy: truncated or not a \.npy file"):
        CaptionData(out, tok, 8)

"""The features path with a frozen pretrained vision model read from a local directory.

A tiny randomly initialised DINOv2 (and its image processor) saved to a temp directory stands
in for a real checkpoint: nothing is downloaded. Covered: the poolings against the model
called directly, the extract_features stage (rows, memmap, idempotence, a changed model),
CaptionData reading the rows by image_id, EvalImages computing and caching eval features,
the errors, and one tiny training run on the built-in world end to end.
"""

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

from babymm import frozen_vision
from babymm.data import CaptionData
from babymm.files import DataError
from babymm.models import GitConfig
from data_prep import ingest
from data_prep.extract_features import extract_features
from eval import multimodal

DIM = 32  # the tiny DINOv2's hidden size
TOKENS = 1 + (32 // 8) ** 2  # CLS + 4x4 patches at 32 px, patch 8


def save_tiny_dinov2(path, seed=0):
    torch.manual_seed(seed)
    cfg = Dinov2Config(hidden_size=DIM, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8)
    Dinov2Model(cfg).save_pretrained(path)
    BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def dino(tmp_path_factory):
    return save_tiny_dinov2(tmp_path_factory.mktemp("models") / "tiny-dinov2")


def direct(model_dir, images):
    """The model called by hand: processor -> Dinov2Model -> (last_hidden_state, pooler_output)."""
    from transformers import AutoImageProcessor

    proc = AutoImageProcessor.from_pretrained(model_dir, local_files_only=True)
    model = Dinov2Model.from_pretrained(model_dir, local_files_only=True).eval()
    with torch.no_grad():
        out = model(pixel_values=proc(images=images, return_tensors="pt")["pixel_values"])
    return out.last_hidden_state.numpy(), out.pooler_output.numpy()


def random_image(rng, size=(48, 40)):
    """Bigger than 32 px and not square: the processor resizes and crops the original file."""
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def write_raw_data(root, n_images=5):
    """Raw-image data: captions/train.jsonl naming PNGs, image 0 shown by two captions."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "captions").mkdir()
    (root / "text").mkdir()
    (root / "text" / "child.train").write_text("the ball is red .\nwhere is the cup ?\n")
    for i in range(n_images):
        random_image(rng).save(root / "images" / f"{i}.png")
    records = [{"image": f"../images/{i}.png", "caption": f"picture number {i}"} for i in range(n_images)]
    records.insert(2, {"image": "../images/0.png", "caption": "the first picture again"})
    (root / "captions" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


class Tok:
    """What CaptionData asks of a tokenizer: one id per word, BOS, EOS and PAD."""

    bos_token_id, eos_token_id, pad_token_id = 2, 3, 0

    def __call__(self, texts, add_special_tokens=True):
        return {"input_ids": [[2] + [10 + len(w) for w in t.split()] for t in texts]}


@pytest.fixture(scope="module")
def raw_data(tmp_path_factory, dino):
    root = tmp_path_factory.mktemp("raw") / "data"
    records = write_raw_data(root)
    ingest.ingest(root)
    return root, records


# -- 1. poolings --------------------------------------------------------------------------------
def test_poolings_match_the_model_called_directly(dino, tmp_path):
    rng = np.random.default_rng(1)
    images = [random_image(rng, (40 + 3 * i, 36)) for i in range(5)]
    hidden, pooled = direct(dino, images)
    cls = frozen_vision.encode_images(images, dino, "cls", batch_size=2, device="cpu")
    mean = frozen_vision.encode_images(images, dino, "mean", batch_size=3, device="cpu")
    patch = frozen_vision.encode_images(images, dino, "patch", device="cpu")
    assert cls.dtype == mean.dtype == patch.dtype == np.float32
    assert cls.shape == mean.shape == (5, DIM) and patch.shape == (5, TOKENS, DIM)
    np.testing.assert_allclose(cls, pooled, atol=1e-5)  # DINOv2's pooler_output: the layer-normed CLS
    np.testing.assert_allclose(cls, hidden[:, 0], atol=1e-5)
    np.testing.assert_allclose(mean, hidden[:, 1:].mean(1), atol=1e-5)  # patch tokens only
    np.testing.assert_allclose(patch, hidden, atol=1e-5)
    # paths read as the PIL images they hold; the model is loaded once per process
    paths = []
    for i, im in enumerate(images[:2]):
        im.save(tmp_path / f"p{i}.png")
        paths.append(tmp_path / f"p{i}.png")
    np.testing.assert_allclose(frozen_vision.encode_images(paths, dino, "cls", device="cpu"), cls[:2], atol=1e-5)
    a, b = (frozen_vision.load_frozen_vision(dino, p, device="cpu") for p in ("cls", "mean"))
    assert a.model is b.model and not any(p.requires_grad for p in a.model.parameters()) and not a.model.training


def test_model_key_names_the_model_pooling_and_contents(dino, tmp_path):
    key = frozen_vision.model_key(dino, "cls")
    assert key.startswith("tiny-dinov2-cls-") and key == frozen_vision.model_key(str(dino), "cls")
    assert frozen_vision.model_key(dino, "mean") != key
    copy = shutil.copytree(dino, tmp_path / "tiny-dinov2")  # same bytes elsewhere: the same key
    assert frozen_vision.model_key(copy, "cls") == key
    save_tiny_dinov2(copy, seed=1)
    assert frozen_vision.model_key(copy, "cls") != key


# -- 2. the stage -------------------------------------------------------------------------------
def test_extract_features_writes_one_row_per_image(raw_data, dino):
    root, records = raw_data
    out = extract_features(root, dino, "cls", batch_size=2)
    assert out == root / "prepared" / "features" / frozen_vision.model_key(dino, "cls")
    feats = np.load(out / "features.npy", mmap_mode="r")
    assert isinstance(feats, np.memmap) and feats.dtype == np.float32
    ids = json.loads((out / "image_ids.json").read_text())
    assert ids == sorted({f"images/{i}.png" for i in range(5)}) and feats.shape == (5, DIM)
    # each row is its original file encoded directly (not the 32 px ingested pixels)
    _, pooled = direct(dino, [Image.open(root / i).convert("RGB") for i in ids])
    np.testing.assert_allclose(feats, pooled, atol=1e-5)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["vision_pooling"] == "cls" and manifest["feature_shape"] == [5, DIM]
    assert manifest["vision_model"] == str(dino) and manifest["images"] == 5 and manifest["captions"] == 6
    # idempotent: nothing is rewritten
    mtime = (out / "features.npy").stat().st_mtime_ns
    assert extract_features(root, dino, "cls") == out
    assert (out / "features.npy").stat().st_mtime_ns == mtime
    # patch pooling: its own directory, every token
    patch = extract_features(root, dino, "patch")
    assert patch != out and np.load(patch / "features.npy").shape == (5, TOKENS, DIM)


def test_extract_features_redone_for_a_changed_model(raw_data, dino, tmp_path):
    root, _ = raw_data
    model = shutil.copytree(dino, tmp_path / "tiny-dinov2")
    first = extract_features(root, model, "mean")
    rows = np.load(first / "features.npy")
    save_tiny_dinov2(model, seed=1)  # other weights in the same directory
    second = extract_features(root, model, "mean")
    assert second != first and second.name.startswith("tiny-dinov2-mean-")
    assert not np.allclose(np.load(second / "features.npy"), rows)
    ids = json.loads((second / "image_ids.json").read_text())
    hidden, _ = direct(model, [Image.open(root / i).convert("RGB") for i in ids])
    np.testing.assert_allclose(np.load(second / "features.npy"), hidden[:, 1:].mean(1), atol=1e-5)


def test_extract_features_names_a_missing_image(tmp_path, dino):
    root = tmp_path / "data"
    write_raw_data(root, n_images=3)
    ingest.ingest(root)
    (root / "images" / "1.png").unlink()
    with pytest.raises(DataError, match=r"image 'images/1\.png': image .*1\.png not found, shown by caption row 1 "
                                        r"of train \('picture number 1'\); restore the image"):
        extract_features(root, dino, "cls")
    assert not (root / "prepared" / "features" / frozen_vision.model_key(dino, "cls")).exists()
    random_image(np.random.default_rng(5)).save(root / "images" / "1.png")
    (root / "images" / "2.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"image 'images/2\.png': image .*2\.png is unreadable"):
        extract_features(root, dino, "cls", batch_size=1)


def test_extract_features_refuses_precomputed_feature_data(tmp_path, dino):
    root = tmp_path / "data"
    (root / "captions").mkdir(parents=True)
    (root / "captions" / "cc_captions.json").write_text(json.dumps(["a dog", "a cat"]))
    np.save(root / "captions" / "cc_feat.npy", np.zeros((2, 8), np.float32))
    ingest.ingest(root)
    with pytest.raises(DataError, match=r"precomputed image features .*no raw images to encode"):
        extract_features(root, dino)


def test_stage_cli(raw_data, dino, capsys):
    from data_prep.extract_features import main

    root, _ = raw_data
    assert main(["--data_dir", str(root), "--vision_model", str(dino), "--vision_pooling", "cls"]) == 0
    assert main(["--data_dir", str(root), "--vision_model", str(dino.parent / "nope")]) == 2
    assert "vision model directory does not exist" in capsys.readouterr().err


# -- 3. training data ---------------------------------------------------------------------------
def test_caption_data_reads_rows_by_image_id(raw_data, dino):
    root, records = raw_data
    features = extract_features(root, dino, "cls")
    table = np.load(features / "features.npy")
    ids = json.loads((features / "image_ids.json").read_text())
    data = CaptionData(ingest.out_dir(root), Tok(), 16, features_dir=features)
    assert data.image_input == "features" and data.feature_dim == DIM and data.feature_tokens == 1
    order = [5, 0, 2, 1]  # captions 0 and 2 show the same image
    batch = data.__getitems__(order)
    want = [ids.index(records[i]["image"].removeprefix("../")) for i in order]
    assert batch["images"].dtype == torch.float32 and batch["images"].shape == (4, DIM)
    np.testing.assert_array_equal(batch["images"].numpy(), table[want])
    np.testing.assert_array_equal(batch["images"][1], batch["images"][2])
    assert batch["input_ids"].shape[0] == 4
    # patch tokens: [B, P, D]
    patch = CaptionData(ingest.out_dir(root), Tok(), 16, features_dir=extract_features(root, dino, "patch"))
    assert patch.feature_tokens == TOKENS and patch.__getitems__([0, 1])["images"].shape == (2, TOKENS, DIM)
    # without features_dir: the pixels, as before; a text model reads no image at all
    plain = CaptionData(ingest.out_dir(root), Tok(), 16)
    assert plain.image_input == "pixels" and plain.__getitems__([0])["images"].dtype == torch.uint8
    assert "images" not in CaptionData(ingest.out_dir(root), Tok(), 16, False, features).__getitems__([0])


def test_caption_data_image_without_a_row(raw_data, dino, tmp_path):
    root, _ = raw_data
    features = shutil.copytree(extract_features(root, dino, "cls"), tmp_path / "features")
    ids = json.loads((features / "image_ids.json").read_text())
    np.save(features / "features.npy", np.load(features / "features.npy")[1:])
    (features / "image_ids.json").write_text(json.dumps(ids[1:]))
    with pytest.raises(DataError, match=r"no features for image 'images/0\.png' \(caption 0\); .*extract_features"):
        CaptionData(ingest.out_dir(root), Tok(), 16, features_dir=features)


# -- 4. eval images -----------------------------------------------------------------------------
def features_model(model_dir, pooling="cls", key=None, dim=DIM):
    return SimpleNamespace(has_vision=True, config=SimpleNamespace(
        vision_encoder="features", image_size=32, vision_model=str(model_dir), vision_pooling=pooling,
        vision_model_key=key, feature_dim=dim))


def eval_task(root, n=4):
    task = root / "eval" / "winoground"
    (task / "images").mkdir(parents=True)
    rng = np.random.default_rng(2)
    for i in range(n):
        random_image(rng, (36 + i, 44)).save(task / "images" / f"w{i}.png")
    return task


def test_eval_images_computes_and_caches_features(tmp_path, dino, monkeypatch):
    task = eval_task(tmp_path / "data")
    keys = ["images/w2.png", "images/w0.png", "images/w2.png"]
    feats = multimodal.EvalImages(features_model(dino), task)(keys, ["a:1", "a:2", "a:3"])
    _, pooled = direct(dino, [Image.open(task / k).convert("RGB") for k in keys])
    assert feats.dtype == torch.float32 and feats.shape == (3, DIM)
    np.testing.assert_allclose(feats.numpy(), pooled, atol=1e-5)
    cache = tmp_path / "data" / "prepared" / "eval_features" / frozen_vision.model_key(dino, "cls") / "winoground"
    assert json.loads((cache / "feature_ids.json").read_text()) == ["images/w0.png", "images/w2.png"]
    assert np.load(cache / "features.npy").shape == (2, DIM)
    # a second eval reads the cache; a new key is encoded and added
    calls = []
    real = frozen_vision.load_frozen_vision
    monkeypatch.setattr(frozen_vision, "load_frozen_vision", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = multimodal.EvalImages(features_model(dino), task)(keys)
    assert calls == [] and torch.equal(again, feats)
    more = multimodal.EvalImages(features_model(dino), task)(["images/w1.png", "images/w0.png"])
    assert len(calls) == 1 and torch.equal(more[1], feats[1])
    assert json.loads((cache / "feature_ids.json").read_text()) == [f"images/w{i}.png" for i in range(3)]
    # an image replaced in place is encoded again
    random_image(np.random.default_rng(9)).save(task / "images" / "w0.png")
    changed = multimodal.EvalImages(features_model(dino), task)(["images/w0.png"])
    assert len(calls) == 2 and not torch.allclose(changed[0], feats[1])
    # the precedence: the frozen model over shipped features
    np.save(task / "features.npy", np.zeros((1, DIM), np.float32))
    (task / "feature_ids.json").write_text('["images/w0.png"]')
    assert torch.equal(multimodal.EvalImages(features_model(dino), task)(["images/w0.png"]), changed)


def test_eval_images_errors(tmp_path, dino):
    task = eval_task(tmp_path / "data", n=1)
    with pytest.raises(DataError, match=r"wino\.jsonl:7: image .*nope\.png not found; fix the path or remove the item"):
        multimodal.EvalImages(features_model(dino), task)(["images/w0.png", "images/nope.png"], ["x:1", "wino.jsonl:7"])
    (task / "images" / "bad.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"wino\.jsonl:3: image .*bad\.png is an empty file"):
        multimodal.EvalImages(features_model(dino), task)(["images/bad.png"], ["wino.jsonl:3"])
    with pytest.raises(DataError, match=r"the vision model has changed since the run was trained"):
        multimodal.EvalImages(features_model(dino, key="tiny-dinov2-cls-000000000000"), task)
    with pytest.raises(DataError, match=r"vision model directory does not exist"):
        multimodal.EvalImages(features_model(tmp_path / "gone"), task)
    with pytest.raises(DataError, match=r"gives 32-dim features \(cls\) but the run was trained on 768-dim"):
        multimodal.EvalImages(features_model(dino, dim=768), task)(["images/w0.png"])
    # no vision_model: shipped features or the skip, as before
    model = features_model(dino)
    model.config.vision_model = None
    with pytest.raises(multimodal.TaskSkipped, match=r"features\.npy \+ feature_ids\.json"):
        multimodal.EvalImages(model, task)


# -- 5. errors and config -----------------------------------------------------------------------
def test_model_dir_errors(tmp_path, dino):
    with pytest.raises(DataError, match=r"nope: vision model directory does not exist; pass --vision_model"):
        frozen_vision.load_frozen_vision(tmp_path / "nope")
    bare = shutil.copytree(dino, tmp_path / "bare")
    (bare / "preprocessor_config.json").unlink()
    with pytest.raises(DataError, match=r"bare: no preprocessor_config\.json, .*save its image processor beside it"):
        frozen_vision.load_frozen_vision(bare)
    (bare / "model.safetensors").unlink()
    with pytest.raises(DataError, match=r"bare: no model weights \(model\.safetensors"):
        frozen_vision.model_key(bare)
    (bare / "config.json").unlink()
    with pytest.raises(DataError, match=r"bare: no config\.json, not a saved model"):
        frozen_vision.model_key(bare)
    with pytest.raises(DataError, match=r"vision pooling 'max' unknown; use one of cls, mean, patch"):
        frozen_vision.load_frozen_vision(dino, "max")
    assert issubclass(DataError, ValueError)  # one line on stderr and exit 2 from every stage's CLI


def test_vision_config_fields(dino):
    cfg = GitConfig(vision_encoder="conv", vision_model=str(dino))
    with pytest.raises(ValueError, match=r"--vision_model is read through --vision_encoder features .*"
                                         r"--vision_encoder conv learns from raw pixels"):
        cfg.check()
    with pytest.raises(ValueError, match=r"--vision_pooling 'max' unknown"):
        GitConfig(vision_encoder="features", vision_pooling="max").check()
    cfg = GitConfig(vision_encoder="features", vision_model="rel/dino", vision_pooling="mean")
    cfg.check()
    assert cfg.vision_model.endswith("/rel/dino") and cfg.vision_model.startswith("/")
    cfg = cfg.resolve(feature_dim=DIM, vision_model_key="k")
    back = GitConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert (back.vision_model, back.vision_pooling, back.vision_model_key, back.feature_dim) == \
        (cfg.vision_model, "mean", "k", DIM)
    assert {"vision_model", "vision_pooling"} <= set(cfg.flags()) and "vision_model_key" not in cfg.flags()
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("vision_model", "vision_pooling", "vision_model_key")}
    assert GitConfig.from_dict(old).vision_model is None  # a model saved before these fields


def test_flags_parse(dino):
    from babymm.config import parse_config

    cfg = parse_config(["--vision_encoder", "features", "--vision_model", str(dino), "--vision_pooling", "patch"])
    assert (cfg.model.vision_model, cfg.model.vision_pooling) == (str(dino), "patch")
    with pytest.raises(SystemExit):
        parse_config(["--vision_encoder", "features", "--vision_pooling", "max"])


# -- 6. end to end ------------------------------------------------------------------------------
def test_train_on_frozen_features_end_to_end(tiny_world, dino, tmp_path):
    from babymm import train

    data = shutil.copytree(tiny_world, tmp_path / "world", ignore=shutil.ignore_patterns("prepared"))
    out = tmp_path / "run"
    rc = train.main(["--data_dir", str(data), "--output_dir", str(out), "--preset", "tiny",
                     "--vision_encoder", "features", "--vision_model", str(dino),
                     "--text_pretrain_steps", "2", "--multimodal_steps", "2", "--batch_size", "8",
                     "--text_batch_size", "4", "--eval_steps", "0", "--run_eval", "true",
                     "--word_milestones", "none", "--checkpointing_steps", "0"])
    assert rc == 0
    key = frozen_vision.model_key(dino, "cls")
    exported = json.loads((out / "config.json").read_text())
    saved = exported["babymm"]
    assert saved["vision_encoder"] == "features" and saved["vision_model"] == str(dino)
    # the export carries the frozen model: pixels in, the same logits as its features in
    assert exported["image_features"]["pooling"] == "cls"
    from transformers import AutoModelForCausalLM, AutoProcessor

    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    processor = AutoProcessor.from_pretrained(out)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8))
    enc = processor(text="a red circle", images=image, return_tensors="pt")
    features = torch.from_numpy(frozen_vision.encode_images([image], dino, "cls", device="cpu"))
    with torch.no_grad():
        from_pixels = hf(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                         pixel_values=enc["pixel_values"]).logits
        from_features = hf(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                           image_features=features).logits
    torch.testing.assert_close(from_pixels, from_features, rtol=1e-5, atol=1e-5)
    assert saved["feature_dim"] == DIM and saved["feature_tokens"] == 1  # the frozen model's rows
    assert saved["vision_model_key"] == key  # eval refuses the model directory if it changes
    assert (data / "prepared" / "features" / key / "features.npy").exists()
    results = json.loads((out / "results.json").read_text())
    for task in ("winoground", "vqa"):
        assert "acc" in results[task] and "skipped" not in results[task], results[task]
        assert (data / "prepared" / "eval_features" / key / task / "features.npy").exists()


def test_babylm_feature_layout_with_a_budget_end_to_end(tiny_world, dino, tmp_path):
    """The real corpus's path: captions in `X_captions.json` aligned with DINOv2-style rows in
    `X_dino_v2_states_1of2.npy` / `_2of2.npy`, a word budget drawn from them, and the eval images
    (raw files) turned into features by the same frozen model that made the training rows."""
    from babymm import train
    from babymm.files import read_jsonl

    data = tmp_path / "babylm"
    shutil.copytree(tiny_world / "text", data / "text")
    shutil.copytree(tiny_world / "eval", data / "eval")
    records = read_jsonl(tiny_world / "captions" / "train.jsonl")[:600]
    rows = frozen_vision.encode_images([tiny_world / "captions" / r["image"] for r in records], dino)
    (data / "captions").mkdir()
    (data / "captions" / "cc_3M_captions.json").write_text(json.dumps([r["caption"] for r in records]))
    np.save(data / "captions" / "cc_3M_dino_v2_states_1of2.npy", rows[:350])
    np.save(data / "captions" / "cc_3M_dino_v2_states_2of2.npy", rows[350:])
    out = tmp_path / "run"
    rc = train.main(["--data_dir", str(data), "--output_dir", str(out), "--preset", "tiny",
                     "--word_budget", "8000", "--vision_encoder", "features", "--vision_model", str(dino),
                     "--text_pretrain_steps", "2", "--multimodal_steps", "2", "--batch_size", "8",
                     "--text_batch_size", "4", "--eval_steps", "0", "--run_eval", "true",
                     "--word_milestones", "none", "--checkpointing_steps", "0"])
    assert rc == 0
    words = json.loads((out / "word_counts.json").read_text())
    assert words["budget"] == 8000 and words["total_words"] > 7900
    assert not (data / "prepared" / "features").exists()  # the corpus's own rows, no extraction
    key = frozen_vision.model_key(dino, "cls")
    results = json.loads((out / "results.json").read_text())
    for task in ("winoground", "vqa"):
        assert "acc" in results[task] and "skipped" not in results[task], results[task]
        assert (data / "prepared" / "eval_features" / key / task / "features.npy").exists()


@pytest.mark.parametrize("pooling", ["cls", "patch"])
def test_export_a_corpus_features_run_with_the_model_that_made_them(dino, tmp_path, pooling, tiny_run, tiny_world):
    """A run on the corpus's precomputed features names no vision model: its checkpoint refuses
    pixels in one line; `python -m babymm.export RUN --vision_model DIR` makes it take pixels, with
    the logits its features would give."""
    from transformers import AutoModelForCausalLM, AutoProcessor

    from babymm.export import main as export_main
    from babymm.models import save_model
    from babymm.tokenizer import load_tokenizer
    tok_dir = tiny_world / "prepared" / "tokenizer"
    tokens = TOKENS if pooling == "patch" else 1
    cfg = GitConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, vision_encoder="features",
                    vision_width=32, vision_heads=2, embed_dim=16, vision_pooling=pooling)
    tok = load_tokenizer(tok_dir)
    cfg = cfg.resolve(vocab_size=len(tok), feature_dim=DIM, feature_tokens=tokens)
    torch.manual_seed(0)
    from babymm.models import build_model

    run = tmp_path / "run"
    save_model(build_model(cfg).eval(), tok, run)
    hf = AutoModelForCausalLM.from_pretrained(run).eval()
    ids = torch.tensor([[2, 5, 6]])
    with pytest.raises(ValueError, match="babymm.export"):
        hf(input_ids=ids, pixel_values=torch.zeros(1, 3, 32, 32))
    assert export_main(["--run_dir", str(run), "--vision_model", str(tmp_path / "nothing")]) == 1

    assert export_main(["--run_dir", str(run), "--vision_model", str(dino)]) == 0
    hf = AutoModelForCausalLM.from_pretrained(run).eval()
    processor = AutoProcessor.from_pretrained(run)
    image = random_image(np.random.default_rng(1))
    enc = processor(text="a red circle", images=image, return_tensors="pt")
    hidden, pooled = direct(dino, [image])
    features = torch.from_numpy(pooled if pooling == "cls" else hidden)
    with torch.no_grad():
        from_pixels = hf(input_ids=enc["input_ids"], pixel_values=enc["pixel_values"]).logits
        from_features = hf(input_ids=enc["input_ids"], image_features=features).logits
    torch.testing.assert_close(from_pixels, from_features, rtol=1e-5, atol=1e-5)
    # exported again without naming the model, it keeps the one it carries
    assert export_main(["--run_dir", str(run), "--output_dir", str(tmp_path / "again")]) == 0
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "again").eval()
    with torch.no_grad():
        assert torch.equal(again(input_ids=enc["input_ids"], pixel_values=enc["pixel_values"]).logits, from_pixels)

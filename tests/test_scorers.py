"""The caption difficulty scorers, each against a hand computation: noun counts against hand
tagging, AoA and frequency means by hand, perplexity against the model's own `labels=` loss
one caption at a time, alignment against embeddings computed one pair at a time, and the
combined scorer's rank average with ties worked out by hand. Also: every shipped curriculum
spec loads and names a registered scorer."""

import json
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from babymm.curriculum import CURRICULA_DIR, load_curriculum
from babymm.files import DataError
from data_prep import ingest, scorers
from data_prep.scorers import SCORERS, ScoringContext


def make_ctx(captions, image_ids=None, args=None, **kw):
    image_ids = image_ids if image_ids is not None else [f"img{i}" for i in range(len(captions))]
    ds = datasets.Dataset.from_dict({"caption": list(captions), "image_id": [str(i) for i in image_ids]})
    return ScoringContext(captions=ds, text=kw.pop("text", None), args=dict(args or {}), **kw)


pytestmark = pytest.mark.usefixtures("one_thread")


# -- nouns -------------------------------------------------------------------------------
# singular common and proper nouns (NN, NNP), counted by hand; plurals (NNS) and pronouns do not count
HAND_NOUNS = [
    ("a man with two dogs walks in the park near Paris.", 3),  # man, park, Paris
    ("the red circle is above the blue square", 2),  # circle, square (colours are adjectives)
    ("a red cross is above a white square", 2),  # a world caption: cross, square
    ("there are three green triangles", 0),  # triangles: NNS
    ("she gives him her book.", 1),  # book; she, him, her: pronouns
    ("two children eat apples on the grass.", 1),  # grass
    ("a cat sleeps on the sofa next to a lamp.", 3),
    ("people are waiting for the bus at the station.", 2),  # bus, station
    ("a woman holding an umbrella in the rain", 3),
    ("some boys play football in London.", 2),  # football, London
    ("we love it.", 0),
    ("a plate of food with a fork and a knife.", 4),
    ("the dogs chase the cats", 0),
    ("a big brown dog jumps over a fence.", 2),
    ("John and Mary sit on a bench.", 3),  # John, Mary, bench
    ("Mommy reads a story to the baby.", 3),
]


@pytest.fixture(scope="module")
def tagger():
    pytest.importorskip("spacy")
    pytest.importorskip(scorers.POS_MODEL, reason='the nouns extra: pip install -e ".[nouns]"')
    return scorers._tagger()


def test_nouns_match_hand_counts(tagger):
    captions, expected = zip(*HAND_NOUNS, strict=True)
    scores = SCORERS["nouns"](make_ctx(captions, args={"num_proc": 1}))
    assert scores.dtype == np.float32
    assert scores.tolist() == list(expected)


def test_nouns_take_the_image_maximum(tagger):
    captions = ["a dog", "a dog on a mat with a ball", "two dogs", "the cats", "a cat"]
    scores = SCORERS["nouns"](make_ctx(captions, image_ids=["x", "x", "y", "z", "z"]))
    # own counts 1, 3, 0, 0, 1 -> image x: 3, y: 0, z: 1
    assert scores.tolist() == [3, 3, 0, 1, 1]


def test_nouns_in_worker_processes_equal_in_process(tagger, monkeypatch):
    texts = [c for c, _ in HAND_NOUNS]
    monkeypatch.setattr(scorers, "POS_PARALLEL_MIN", 0)
    monkeypatch.setattr(scorers, "POS_CHUNK", 5)  # 4 chunks over 2 spawned workers
    assert scorers.count_singular_nouns(texts, num_proc=2).tolist() == [n for _, n in HAND_NOUNS]


def test_nouns_without_the_extra_is_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, scorers.POS_MODEL, None)  # import fails as if not installed
    scorers._tagger.cache_clear()
    try:
        with pytest.raises(DataError, match=r'pip install -e "\.\[nouns\]"') as e:
            SCORERS["nouns"](make_ctx(["a dog"]))
        assert "\n" not in str(e.value)
    finally:
        scorers._tagger.cache_clear()


# -- aoa ---------------------------------------------------------------------------------
AOA_CSV = """Word,OccurTotal,Rating.Mean,Rating.SD
the,100,3.5,1
dog,90,2.8,1
cat,80,3.0,1
red,70,4.0,1
nan,20,2.5,1
zebra,5,7.2,2
ball,50,NA,
quokka,1,#N/A,
"""


def aoa_ctx(tmp_path, captions, **args):
    (tmp_path / "norms").mkdir(exist_ok=True)
    (tmp_path / "norms" / "aoa.csv").write_text(AOA_CSV)
    return make_ctx(captions, args={"csv": "norms/aoa.csv", **args}, data_dir=tmp_path)


AOA_CAPTIONS = ["The dog.", "a red zebra", "Nan, cat!", "ball", "...", "quokka"]


def test_aoa_by_hand(tmp_path):
    with pytest.warns(UserWarning, match="2 of 8 rows skipped"):
        scores = SCORERS["aoa"](aoa_ctx(tmp_path, AOA_CAPTIONS))
    top = 7.2  # unknown words (a, ball, quokka: NA rows are skipped) count as the latest age
    expected = [(3.5 + 2.8) / 2, (top + 4.0 + 7.2) / 3, (2.5 + 3.0) / 2, top, top, top]
    np.testing.assert_allclose(scores, expected, rtol=1e-6)


def test_aoa_unknown_as_number_and_other_columns(tmp_path):
    with pytest.warns(UserWarning):
        scores = SCORERS["aoa"](aoa_ctx(tmp_path, AOA_CAPTIONS, unknown=0))
    np.testing.assert_allclose(scores, [3.15, (0 + 4.0 + 7.2) / 3, 2.75, 0, 0, 0], rtol=1e-6)
    (tmp_path / "sd.csv").write_text(AOA_CSV.replace("Word,", "word,"))
    ctx = make_ctx(["the zebra"], args={"csv": str(tmp_path / "sd.csv"), "word_column": "word",
                                        "value_column": "Rating.SD"}, data_dir=tmp_path / "elsewhere")
    with pytest.warns(UserWarning):
        np.testing.assert_allclose(SCORERS["aoa"](ctx), [(1 + 2) / 2])


def test_aoa_bad_inputs_are_one_line_errors(tmp_path):
    (tmp_path / "x.csv").write_text("Word,AoA\ndog,3\n")
    with pytest.raises(DataError, match=r"x\.csv: needs columns 'Word' and 'Rating\.Mean'.*it has \['Word', 'AoA'\]"):
        SCORERS["aoa"](make_ctx(["a dog"], args={"csv": "x.csv"}, data_dir=tmp_path))
    with pytest.raises(DataError, match="does not exist"):
        SCORERS["aoa"](make_ctx(["a dog"], args={"csv": "missing.csv"}, data_dir=tmp_path))
    with pytest.raises(DataError, match="unknown"), pytest.warns(UserWarning):
        SCORERS["aoa"](aoa_ctx(tmp_path, ["a dog"], unknown="min"))
    with pytest.raises(DataError, match="scorer_args.csv"):
        SCORERS["aoa"](make_ctx(["a dog"]))


# -- frequency ---------------------------------------------------------------------------
def test_frequency_by_wordfreq():
    wordfreq = pytest.importorskip("wordfreq", reason='the frequency extra: pip install -e ".[frequency]"')
    z = wordfreq.zipf_frequency
    scores = SCORERS["frequency"](make_ctx(["The dog, runs!", "the dog", "the quokka", "xqzvbnwq", "?!"]))
    expected = np.mean([8 - z("the", "en"), 8 - z("dog", "en"), 8 - z("runs", "en")])
    assert scores[0] == pytest.approx(expected, rel=1e-6)
    assert scores[1] < scores[2]  # quokka is rarer than dog
    assert z("xqzvbnwq", "en") == 0 and scores[3] == 8.0 and scores[4] == 8.0  # unknown word; no words


def test_frequency_without_the_extra_is_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "wordfreq", None)
    with pytest.raises(DataError, match=r'pip install -e "\.\[frequency\]"'):
        SCORERS["frequency"](make_ctx(["a dog"]))


# -- a tiny data directory, a tokenizer, a causal LM and a babymm model --------------------
CAPTIONS = [  # (image, caption): images 0 and 2 have two captions each
    (0, "a red square"), (0, "the red square is big"), (1, "a blue circle on the left"),
    (2, "two green triangles"), (2, "there are two green triangles and a ball"), (3, "a dog"),
]
COLOURS = [(220, 30, 30), (30, 30, 220), (30, 200, 30), (200, 200, 200)]
TEXT = ["the dog sees a red ball", "a big blue circle is on the left", "two green triangles and a square",
        "there is a small red square here", "the cat and the dog play with the ball"] * 20


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A data directory of 4 images and 6 captions, ingested, with a trained tokenizer."""
    from data_prep.train_tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("scorers") / "data"
    (root / "images").mkdir(parents=True)
    (root / "captions").mkdir()
    (root / "text").mkdir()
    for i, colour in enumerate(COLOURS):
        img = Image.new("RGB", (32, 32), colour)
        img.paste((255, 255, 255), (4 * i, 4 * i, 4 * i + 10, 4 * i + 10))
        img.save(root / "images" / f"{i}.png")
    rows = [{"image": f"../images/{i}.png", "caption": c} for i, c in CAPTIONS]
    (root / "captions" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "text" / "a.train").write_text("\n".join(TEXT) + "\n")
    ingest.ingest(root)
    tok_dir = train_tokenizer(root, vocab_size=60)
    return root, tok_dir


@pytest.fixture(scope="module")
def tokenizer(data):
    from babymm.tokenizer import load_tokenizer

    return load_tokenizer(data[1])


def test_ingested_order_is_the_captions_order(data):
    captions = datasets.load_from_disk(str(ingest.out_dir(data[0]) / "captions"))
    assert captions["caption"] == [c for _, c in CAPTIONS]
    ctx = ScoringContext(captions=captions, text=None)
    assert ctx.image_ids.tolist() == [0, 0, 1, 2, 2, 3]


def test_score_stage_runs_a_scorer_with_a_norms_file(data):
    from data_prep import score

    root, _ = data
    (root / "norms").mkdir(exist_ok=True)
    (root / "norms" / "aoa.csv").write_text(AOA_CSV)
    with pytest.warns(UserWarning):
        out = score.score_captions(root, "aoa", args={"csv": "norms/aoa.csv"})
        direct = SCORERS["aoa"](make_ctx([c for _, c in CAPTIONS], args={"csv": "norms/aoa.csv"}, data_dir=root))
    np.testing.assert_array_equal(np.load(out / "scores.npy"), direct)


def test_scores_are_recomputed_when_the_scorers_code_changes(data, tmp_path, monkeypatch, capsys):
    """The score stage's fingerprint holds the scorer's code version: scores of edited scorer code
    are recomputed, and unchanged code reuses them. Both kinds of code: a scorer in a module of
    its own (its file), and data_prep/scorers.py (a copy stands in for it: edited, every scorer
    defined there rescores)."""
    import importlib.util

    from data_prep import score

    root, _ = data
    src = tmp_path / "toy_scorer.py"
    src.write_text("import numpy as np\n\nCALLS = []\n\n\ndef toy(ctx):\n    \"\"\"Caption position.\"\"\"\n"
                   "    CALLS.append(1)\n    return np.arange(len(ctx.caption_texts), dtype=np.float32)\n")
    spec = importlib.util.spec_from_file_location("toy_scorer", src)
    toy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(toy)
    monkeypatch.setitem(SCORERS, "toy", toy.toy)

    def run(name):
        out = score.score_captions(root, name)
        m = json.loads((out / "manifest.json").read_text())
        return m["fingerprint"], m.get("code_version"), "is up to date" in capsys.readouterr().out

    first = run("toy")
    assert toy.CALLS == [1] and not first[2]
    assert run("toy") == (*first[:2], True) and toy.CALLS == [1]  # unchanged: reused
    length = run("length")
    src.write_text(src.read_text().replace("Caption position.", "Caption position, edited."))
    edited = run("toy")
    assert toy.CALLS == [1, 1] and not edited[2] and edited[:2] != first[:2]  # edited: recomputed
    assert run("toy") == (*edited[:2], True)
    assert run("length") == (*length[:2], True)  # another module's edit leaves length's scores alone

    copy = tmp_path / "scorers.py"
    copy.write_bytes(Path(scorers.__file__).read_bytes())
    monkeypatch.setattr(scorers, "__file__", str(copy))  # the same source: the same version, reused
    assert score.code_version("length") == length[1]
    assert run("length") == (*length[:2], True)
    copy.write_text(copy.read_text() + "\n# an edit\n")
    changed = run("length")
    assert not changed[2] and changed[1] != length[1]
    assert run("length") == (*changed[:2], True)


# -- perplexity --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def causal_lm(tokenizer, tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(cfg).eval()
    out = tmp_path_factory.mktemp("lm") / "stage1"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return model, out


def test_perplexity_equals_the_models_own_loss(causal_lm, tokenizer):
    model, path = causal_lm
    captions = ["a red square", "there are two green triangles and a ball", "the dog"]
    scores = SCORERS["perplexity"](make_ctx(captions, args={"model": str(path), "batch_size": 2, "device": "cpu"}))
    expected = []
    with torch.no_grad():
        for c in captions:  # one at a time, no padding: `<s> caption`, the tokenizer adding <s>
            ids = torch.tensor([tokenizer(c)["input_ids"]])
            assert ids[0, 0] == tokenizer.bos_token_id and ids.shape[1] > 2
            expected.append(model(input_ids=ids, labels=ids).loss.item())
    np.testing.assert_allclose(scores, expected, atol=1e-5, rtol=0)
    assert len(set(np.round(scores, 4))) == 3


def test_perplexity_bad_model_dir(tmp_path):
    with pytest.raises(DataError, match="no config.json"):
        SCORERS["perplexity"](make_ctx(["a dog"], args={"model": str(tmp_path)}))
    with pytest.raises(DataError, match="stage1 means the run's own"):
        SCORERS["perplexity"](make_ctx(["a dog"], args={"model": "stage1"}, data_dir=tmp_path))


# -- alignment ---------------------------------------------------------------------------
def tiny_babymm(model_type, tokenizer, out):
    from babymm.models import build_model, model_class, save_model

    cls = model_class(model_type)
    args = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_positions=64)
    derived = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                   eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if cls.has_vision:
        args.update(vision_encoder="conv", vision_width=32, vision_heads=2, vision_layers=1, embed_dim=16)
        derived.update(image_size=32)
    torch.manual_seed(1)
    model = build_model(cls.config_class(**args).resolve(**derived)).eval()
    save_model(model, tokenizer, out)
    return model


def test_alignment_by_hand(data, tokenizer, tmp_path):
    root, _ = data
    model = tiny_babymm("git", tokenizer, tmp_path / "run")
    captions = datasets.load_from_disk(str(ingest.out_dir(root) / "captions"))
    ctx = ScoringContext(captions=captions.select_columns(["caption", "image_id"]), text=None, data_dir=root,
                         args={"model": str(tmp_path / "run"), "batch_size": 4, "device": "cpu"},
                         ingest_dir=ingest.out_dir(root))
    scores = SCORERS["alignment"](ctx)
    expected = []
    with torch.no_grad():
        for row in captions:  # one pair at a time: `<s> caption </s>`, no padding
            image = torch.tensor(np.asarray(row["pixel_values"], dtype=np.uint8))[None]
            ids = torch.tensor([tokenizer(row["caption"])["input_ids"] + [tokenizer.eos_token_id]])
            i, t = model.embed_images(image)[0], model.embed_texts(ids, torch.ones_like(ids))[0]
            expected.append(1 - torch.dot(i, t).item() / (i.norm() * t.norm()).item())
    np.testing.assert_allclose(scores, expected, atol=1e-5, rtol=0)
    assert scores.shape == (6,) and np.all((scores >= 0) & (scores <= 2))


def test_alignment_of_a_text_model_is_an_error(data, tokenizer, tmp_path):
    root, _ = data
    tiny_babymm("text", tokenizer, tmp_path / "text_run")
    captions = datasets.load_from_disk(str(ingest.out_dir(root) / "captions"))
    ctx = ScoringContext(captions=captions, text=None, data_dir=root, args={"model": str(tmp_path / "text_run")})
    with pytest.raises(DataError, match="no image embeddings"):
        SCORERS["alignment"](ctx)


# -- combined ----------------------------------------------------------------------------
def test_combined_weighted_rank_average_with_ties(monkeypatch):
    monkeypatch.setitem(SCORERS, "fake_a", lambda ctx: np.array([1.0, 2.0, 2.0, 3.0]))
    monkeypatch.setitem(SCORERS, "fake_b", lambda ctx: np.asarray(ctx.args["values"], dtype=float))
    ctx = make_ctx(["w", "x", "y", "z"], args={"scorers": {
        "fake_a": 1, "fake_b": {"weight": 2, "args": {"values": [40, 30, 20, 10]}}}})
    # percentile ranks: a = 1/4, 2.5/4, 2.5/4, 4/4 (the tie shares ranks 2 and 3); b = 4/4, 3/4, 2/4, 1/4
    a = [0.25, 0.625, 0.625, 1.0]
    b = [1.0, 0.75, 0.5, 0.25]
    expected = [(1 * x + 2 * y) / 3 for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(SCORERS["combined"](ctx), expected, rtol=1e-6)


def test_combined_with_registered_scorers(tmp_path):
    captions = ["a dog", "the red zebra runs", "the cat", "a dog and a cat"]
    ctx = aoa_ctx(tmp_path, captions)
    ctx.args = {"scorers": {"length": 1.0, "aoa": {"args": {"csv": "norms/aoa.csv"}}}}
    with pytest.warns(UserWarning):
        scores = SCORERS["combined"](ctx)
    length = [1.5 / 4, 3 / 4, 1.5 / 4, 4 / 4]  # lengths 2, 4, 2, 5: the tied 2s share ranks 1 and 2
    # aoa (unknown a, runs, and = 7.2): (7.2+2.8)/2 = 5.0, (3.5+4+7.2+7.2)/4 = 5.475, (3.5+3)/2 = 3.25,
    # (7.2+2.8+7.2+7.2+3)/5 = 5.48 -> ranks 2, 3, 1, 4
    aoa = [2 / 4, 3 / 4, 1 / 4, 4 / 4]
    np.testing.assert_allclose(scores, [(x + y) / 2 for x, y in zip(length, aoa, strict=True)], rtol=1e-6)
    assert scorers.input_paths(ctx, "combined") == [tmp_path / "norms" / "aoa.csv"]


@pytest.mark.parametrize("spec", [None, {}, {"nope": 1}, {"length": 0}, {"length": "heavy"},
                                  {"length": {"weight": 1, "extra": 2}}, {"combined": 1}])
def test_combined_bad_specs(spec):
    with pytest.raises(DataError, match="combined"):
        SCORERS["combined"](make_ctx(["a"], args={} if spec is None else {"scorers": spec}))


# -- registry and shipped specs ------------------------------------------------------------
def test_path_args_name_registered_scorers():
    assert set(scorers.PATH_ARGS) <= set(SCORERS) and set(scorers.RUNTIME_ARGS) <= set(SCORERS)
    assert all(f.__doc__ for f in SCORERS.values())


@pytest.mark.parametrize("path", sorted(CURRICULA_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_curriculum_loads_and_names_a_scorer(path):
    spec = load_curriculum(str(path))
    assert spec.scorer is None or spec.scorer in SCORERS
    assert spec.description
    if spec.scorer == "combined":
        assert set(spec.scorer_args["scorers"]) <= set(SCORERS)


def test_the_study_spec():
    spec = load_curriculum("nouns_stages")
    assert (spec.scorer, spec.order, spec.pacing.function) == ("nouns", "ascending", "stages")
    assert spec.pacing.percentiles == [25, 50, 75] and spec.pacing.epochs_per_stage == 2


def test_a_run_orders_its_captions_by_its_own_stage1_model(tiny_world, tmp_path, capsys):
    """`--curriculum perplexity` (scorer_args.model: stage1): after text pretraining the run exports
    its decoder, scores every caption with it, and trains stage 2 on that order, kept in the run."""
    import shutil

    from babymm import train
    from data_prep.scorers import SCORERS, ScoringContext

    data = tmp_path / "world"
    shutil.copytree(tiny_world, data, ignore=shutil.ignore_patterns("prepared"))
    flags = ["--data_dir", str(data), "--curriculum", "perplexity", "--preset", "tiny", "--multimodal_steps", "2",
             "--batch_size", "8", "--text_batch_size", "4", "--eval_steps", "0", "--run_eval", "false",
             "--word_milestones", "none", "--checkpointing_steps", "0"]
    assert train.main([*flags, "--output_dir", str(tmp_path / "none"), "--text_pretrain_steps", "0"]) == 2
    assert "--text_pretrain_steps 0 trains none" in capsys.readouterr().err
    out = tmp_path / "run"
    assert train.main([*flags, "--output_dir", str(out), "--text_pretrain_steps", "3"]) == 0
    manifest = json.loads((out / "curriculum_manifest.json").read_text())
    assert manifest["curriculum"]["scorer_args"]["model"] == str((out / "stage1").resolve())
    order = np.load(out / "curriculum" / "order.npy")
    captions = datasets.load_from_disk(str(data / "prepared" / "ingest" / "captions"))
    ctx = ScoringContext(captions=captions, text=None, data_dir=data, args={"model": str(out / "stage1")})
    scores = SCORERS["perplexity"](ctx)  # the exported stage-1 model, scored again by hand
    assert np.all(np.diff(scores[order]) >= -1e-5)  # easiest (lowest loss) first

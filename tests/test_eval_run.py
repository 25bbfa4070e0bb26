"""`eval.run` end to end: the features path, one task failing alone, the BabyLM submission
file, the tie rule through lm-eval, and the gap metrics logged during training.

Every evaluation here runs on a small subset of the tiny world's eval sets (a few items per
file), so that the expected numbers can be recomputed item by item, naively, in the test.
"""

import gzip
import json
import shutil

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from babymm import train
from babymm.config import TrainArguments
from babymm.images import load_image
from babymm.models import GitConfig, build_model, load_model, save_model
from babymm.training import TIMING_METRICS
from eval import run as eval_run
from eval.gap_metrics import centroid_distance
from eval.lm_adapter import BabymmLM
from eval.text_tasks import SUITES, score_suite
from tests.conftest import TINY_MODEL, TINY_TRAIN

# per text suite, the first 7, 10 and 13 lines of its first three files: unequal sizes, so the
# mean over subtasks (how BLiMP is reported) differs from the mean over items
N_TEXT = (7, 10, 13)
N_IMAGE_ITEMS = 12  # Winoground and VQA items
N_PAIRS = 24  # held-out caption pairs
N_ZEROSHOT = 5  # lines per zero-shot file
FEATURE_DIM = 8
RUN_OUTPUTS = ("predictions", "results.json", "results.md", "submission.json.gz", "gap_over_training.png",
               "babylm2025_results")


# -- helpers --------------------------------------------------------------------------------
def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _copy_images(src_dir, dst_dir, rels):
    for rel in rels:
        (dst_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src_dir / rel, dst_dir / rel)


def subset_eval(world, dst):
    """A data dir whose eval/ holds the first few items of every eval set of `world`."""
    src, out = world / "eval", dst / "eval"
    for suite in SUITES:
        for f, n in zip(sorted((src / suite).glob("*.jsonl")), N_TEXT, strict=False):
            _write_jsonl(out / suite / f.name, _jsonl(f)[:n])
    wino = _jsonl(src / "winoground" / "winoground.jsonl")[:N_IMAGE_ITEMS]
    _write_jsonl(out / "winoground" / "winoground.jsonl", wino)
    _copy_images(src / "winoground", out / "winoground", [f"images/{it['image_key']}.png" for it in wino])
    vqa = json.loads((src / "vqa" / "vqa.json").read_text())[:N_IMAGE_ITEMS]
    (out / "vqa").mkdir(parents=True)
    (out / "vqa" / "vqa.json").write_text(json.dumps(vqa, indent=1))
    _copy_images(src / "vqa", out / "vqa", [f"images/{it['image_id']}.png" for it in vqa])
    pairs = _jsonl(src / "captions" / "heldout.jsonl")[:N_PAIRS]
    _write_jsonl(out / "captions" / "heldout.jsonl", pairs)
    _copy_images(src / "captions", out / "captions", [it["image"] for it in pairs])
    for f in sorted((src / "zeroshot").glob("*.jsonl")):
        rows = _jsonl(f)[:N_ZEROSHOT]
        _write_jsonl(out / "zeroshot" / f.name, rows)
        _copy_images(src / "zeroshot", out / "zeroshot", [r["image"] for r in rows])
    shutil.copytree(src / "devbench", out / "devbench")  # already small at the tiny world's scale
    return dst


def copy_run(run_dir, dst):
    """The saved model, tokenizer and logs of a run, without its eval outputs."""
    shutil.copytree(run_dir, dst, ignore=shutil.ignore_patterns(*RUN_OUTPUTS))
    return dst


def sentence_logprob(decoder, tok, text):
    """log P(text | BOS) from the decoder alone, one sentence, no batching or padding."""
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id
    with torch.no_grad():
        logits = decoder(input_ids=torch.tensor([ids])).logits[0]
    logp = torch.log_softmax(logits.float(), -1)
    return sum(logp[i - 1, ids[i]].item() for i in range(1, len(ids)))


def caption_logprob(model, tok, image_input, text):
    """log P(text | image, BOS) from `caption_logits`, one item: image_input is [D] or [3, S, S]."""
    ids = tok(text)["input_ids"]
    with torch.no_grad():
        context = model.image_context(torch.as_tensor(image_input)[None])
        logits = model.caption_logits(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), context)[0]
    logp = torch.log_softmax(logits.float(), -1)
    return sum(logp[i - 1, ids[i]].item() for i in range(1, len(ids)))


def predictions(run_dir, task):
    """predictions/<task>.jsonl as {(subtask, id): record}."""
    return {(r["subtask"], r["id"]): r for r in _jsonl(run_dir / "predictions" / f"{task}.jsonl")}


def read_results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def eval_data(tiny_world, tmp_path_factory):
    return subset_eval(tiny_world, tmp_path_factory.mktemp("evalsubset"))


@pytest.fixture(scope="module")
def scored(tiny_run, eval_data, tmp_path_factory):
    """A copy of the tiny run scored on the subset, with the submission file."""
    run_dir = copy_run(tiny_run, tmp_path_factory.mktemp("scored") / "run")
    results = eval_run.evaluate_run(run_dir, eval_data, batch_size=7, submission=True)
    return run_dir, results


# -- 1. a run on precomputed features --------------------------------------------------------
def test_features_run_skips_then_scores_by_feature_id(tiny_run, eval_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(eval_data / "eval", data / "eval")
    saved = json.loads((tiny_run / "config.json").read_text())["babymm"]
    cfg = GitConfig.from_dict({**saved, "vision_encoder": "features"}).resolve(feature_dim=FEATURE_DIM)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    run_dir = tmp_path / "features-run"
    run_dir.mkdir()
    tok = AutoTokenizer.from_pretrained(tiny_run)
    save_model(model, tok, run_dir)

    results = eval_run.evaluate_run(run_dir, data, batch_size=5)

    # BLiMP is scored on the text decoder, item for item as a naive log-prob comparison
    blimp_files = sorted((data / "eval" / "blimp").glob("*.jsonl"))
    assert blimp_files
    recs = predictions(run_dir, "blimp")
    sub_accs = []
    for f in blimp_files:
        hits = []
        for i, it in enumerate(_jsonl(f)):
            good = sentence_logprob(model.decoder, tok, it["sentence_good"])
            bad = sentence_logprob(model.decoder, tok, it["sentence_bad"])
            assert recs[(f.stem, f"{f.stem}_{i}")]["scores"] == pytest.approx([good, bad], abs=1e-3)
            hits.append(good > bad)
        assert results["blimp"]["subtasks"][f.stem]["acc"] == pytest.approx(np.mean(hits))
        sub_accs.append(np.mean(hits))
    assert results["blimp"]["acc"] == pytest.approx(np.mean(sub_accs))
    assert results["blimp"]["n"] == sum(len(_jsonl(f)) for f in blimp_files)
    # every image task is skipped, saying which file is missing
    for task in ("winoground", "vqa", "zeroshot", "embeddings"):
        assert set(results[task]) == {"skipped"}, (task, results[task])
        assert "features.npy" in results[task]["skipped"], (task, results[task])
    assert "Winoground" not in results["summary"] and "BLiMP" in results["summary"]

    # features for the Winoground images, rows shuffled, aligned by feature_ids.json
    wino_dir = data / "eval" / "winoground"
    items = _jsonl(wino_dir / "winoground.jsonl")
    keys = [f"images/{it['image_key']}.png" for it in items]
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((len(items), FEATURE_DIM)).astype(np.float32)  # row i: item i
    perm = rng.permutation(len(items))
    assert (perm != np.arange(len(items))).sum() >= len(items) // 2
    np.save(wino_dir / "features.npy", feats[perm])
    (wino_dir / "feature_ids.json").write_text(json.dumps([keys[p] for p in perm]))

    results = eval_run.evaluate_run(run_dir, data, batch_size=5, tasks=["winoground"])

    own = np.array([[caption_logprob(model, tok, feats[i], it[c]) for c in ("caption_0", "caption_1")]
                    for i, it in enumerate(items)])
    nxt = np.array([[caption_logprob(model, tok, feats[(i + 2) % len(items)], it[c])
                     for c in ("caption_0", "caption_1")] for i, it in enumerate(items)])
    assert np.abs(own - nxt).max() > 1e-3  # which row an item reads changes its scores
    recs = predictions(run_dir, "winoground")
    for i in range(len(items)):
        assert recs[("winoground", f"winoground_{i}")]["scores"] == pytest.approx(own[i], abs=1e-3)
    assert results["winoground"]["n"] == len(items)
    assert results["winoground"]["acc"] == pytest.approx(np.mean(own[:, 0] > own[:, 1]))
    assert results["winoground"]["acc_shuffled_images"] == pytest.approx(np.mean(nxt[:, 0] > nxt[:, 1]))

    # one image without features: Winoground fails, naming it; BLiMP is still written
    gone = keys[3]
    j = [keys[p] for p in perm].index(gone)
    np.save(wino_dir / "features.npy", np.delete(feats[perm], j, axis=0))
    (wino_dir / "feature_ids.json").write_text(json.dumps([keys[p] for p in perm if keys[p] != gone]))
    results = eval_run.evaluate_run(run_dir, data, batch_size=5, tasks=["blimp", "winoground"])
    on_disk = read_results(run_dir)
    assert set(on_disk["winoground"]) == {"error"} and gone in on_disk["winoground"]["error"]
    assert on_disk["blimp"]["acc"] == pytest.approx(np.mean(sub_accs))
    assert results["winoground"] == on_disk["winoground"]


# -- 2. one task's failure stays alone -------------------------------------------------------
def test_corrupt_vqa_fails_alone(tiny_run, eval_data, scored, tmp_path):
    ref_dir, ref = scored
    data = tmp_path / "data"
    shutil.copytree(eval_data / "eval", data / "eval")
    vqa = data / "eval" / "vqa" / "vqa.json"
    text = vqa.read_text()
    vqa.write_text(text[: len(text) // 2])  # cut mid-record
    run_dir = copy_run(tiny_run, tmp_path / "run")

    rc = eval_run.main(["--run_dir", str(run_dir), "--data_dir", str(data), "--batch_size", "7"])

    assert rc == 1
    res = read_results(run_dir)
    assert set(res["vqa"]) == {"error"}
    assert res["vqa"]["error"].startswith(f"DataError: {vqa}:") and "malformed or truncated JSON" in res["vqa"]["error"]
    assert "VQA" not in res["summary"]
    assert not (run_dir / "predictions" / "vqa.jsonl").exists()
    assert res["blimp"]["n"] == ref["blimp"]["n"] and res["winoground"]["n"] == ref["winoground"]["n"] == N_IMAGE_ITEMS
    assert res["blimp"]["acc"] == ref["blimp"]["acc"]
    assert res["zeroshot"]["acc_likelihood"] == ref["zeroshot"]["acc_likelihood"]
    assert res["winoground"]["acc"] == ref["winoground"]["acc"]
    assert res["winoground"]["acc_shuffled_images"] == ref["winoground"]["acc_shuffled_images"]
    assert res["embeddings"]["centroid_distance"] == pytest.approx(ref["embeddings"]["centroid_distance"])
    assert res["summary"]["BLiMP"] == ref["summary"]["BLiMP"]
    # the reference itself scored VQA, so the failure is the corruption's
    assert ref["vqa"]["n"] == N_IMAGE_ITEMS and "error" not in ref["vqa"]


def test_tasks_rescore_only_those_and_keep_the_rest(tiny_run, eval_data, scored, tmp_path):
    ref_dir, ref = scored
    run_dir = copy_run(tiny_run, tmp_path / "run")
    shutil.copy(ref_dir / "results.json", run_dir / "results.json")
    res = eval_run.evaluate_run(run_dir, eval_data, batch_size=7, tasks=["vqa"])
    on_disk = read_results(run_dir)
    assert on_disk["blimp"] == ref["blimp"] and on_disk["summary"]["BLiMP"] == ref["summary"]["BLiMP"]
    assert res["vqa"]["acc"] == ref["vqa"]["acc"] and on_disk["vqa"]["acc"] == ref["vqa"]["acc"]
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['nope'\]"):
        eval_run.evaluate_run(run_dir, eval_data, tasks=["nope"])


# -- 3. the BabyLM submission file -----------------------------------------------------------
def _source_items(eval_dir, task):
    """{subtask: [(options, correct option), ...]} read from the source files."""
    if task in ("blimp", "blimp_supplement"):
        return {f.stem: [([it["sentence_good"], it["sentence_bad"]], it["sentence_good"]) for it in _jsonl(f)]
                for f in sorted((eval_dir / task).glob("*.jsonl"))}
    if task == "ewok":
        return {f.stem: [([it["Target1"], it["Target2"]], it["Target1"]) for it in _jsonl(f)]
                for f in sorted((eval_dir / task).glob("*.jsonl"))}
    if task == "winoground":
        return {"winoground": [([it["caption_0"], it["caption_1"]], it["caption_0"])
                               for it in _jsonl(eval_dir / "winoground" / "winoground.jsonl")]}
    assert task == "vqa"
    items = json.loads((eval_dir / "vqa" / "vqa.json").read_text())
    return {"vqa": [([it["target_ans"], *it["distractors"]], it["target_ans"]) for it in items]}


def test_submission_file(scored, eval_data):
    run_dir, results = scored
    eval_dir = eval_data / "eval"
    with gzip.open(run_dir / "submission.json.gz", "rt", encoding="utf-8") as f:
        sub = json.load(f)
    expected = {"blimp", "winoground", "vqa"} | ({"ewok"} if (eval_dir / "ewok").is_dir() else set())
    assert set(sub) == expected
    for task in sorted(expected):
        source = _source_items(eval_dir, task)
        assert set(sub[task]) == set(source), task
        recs = predictions(run_dir, task)
        sub_accs = []
        for subtask, items in source.items():
            preds = sub[task][subtask]["predictions"]
            assert [p["id"] for p in preds] == [f"{subtask}_{i}" for i in range(len(items))]
            assert all(set(p) == {"id", "pred"} and isinstance(p["pred"], str) for p in preds)
            hits = []
            for p, (options, correct) in zip(preds, items, strict=True):
                rec = recs[(subtask, p["id"])]
                assert p["pred"] in options, (task, p)
                assert rec["pred"] == p["pred"] and rec["target"] == correct
                assert len(rec["scores"]) == len(options)
                assert rec["scores"][options.index(p["pred"])] == max(rec["scores"]), (task, rec)
                others = [s for o, s in zip(options, rec["scores"], strict=True) if o != correct]
                if rec["scores"][options.index(correct)] > max(others) + 1e-4:
                    assert p["pred"] == correct
                assert rec["hit"] == (p["pred"] == correct)
                hits.append(p["pred"] == correct)
            sub_accs.append(np.mean(hits))
        # the submission's picks are the ones the reported accuracy counts
        assert results[task]["acc"] == pytest.approx(np.mean(sub_accs)), task


def test_submission_2025_results_tree(scored, eval_data):
    """What the 2025 collation reads, where it reads it: the official uid/id scheme, VQA's
    continuation with its leading space, and DevBench's arrays in the official shapes."""
    run_dir, results = scored
    root = run_dir / "babylm2025_results" / run_dir.name / "main" / "zero_shot"
    wino = json.loads((root / "causal" / "winoground" / "winoground_filtered" / "predictions.json").read_text())
    recs = predictions(run_dir, "winoground")
    n = len(_jsonl(eval_data / "eval" / "winoground" / "winoground.jsonl"))
    assert [p["id"] for p in wino["winoground"]["predictions"]] == [f"winoground_{i}" for i in range(n)]
    assert all(p["pred"] == recs[("winoground", p["id"])]["pred"] for p in wino["winoground"]["predictions"])
    vqa = json.loads((root / "causal" / "vqa" / "vqa_filtered" / "predictions.json").read_text())
    vrecs = predictions(run_dir, "vqa")
    assert all(p["pred"] == " " + vrecs[("vqa", p["id"])]["pred"] for p in vqa["vqa"]["predictions"])
    assert (root / "causal" / "blimp" / "blimp_filtered" / "predictions.json").is_file()
    dev = results["devbench"]
    for task in ("lex-viz_vocab", "gram-trog"):
        scores = np.load(root / "devbench" / f"{task}.npy")
        rows = [r for r in _jsonl(run_dir / "predictions" / "devbench.jsonl") if r["subtask"] == task]
        assert scores.shape == (dev[f"{task}/n"], 4, 1)
        assert np.array_equal(scores[:, :, 0], np.array([r["scores"] for r in rows]))
        # accuracy by hand: image 1 strictly above the other three
        assert dev[f"{task}/acc"] == pytest.approx(np.mean(scores[:, 0, 0] > scores[:, 1:, 0].max(axis=1)))
    feats = np.load(root / "devbench" / "sem-things.npy")
    sims = np.load(root / "devbench" / "sem-things_pairwise_sims.npy")
    assert sims.shape == (len(feats), len(feats))
    a, b = feats[0].astype(np.float64), feats[1].astype(np.float64)
    assert sims[0, 1] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b), rel=1e-5)
    assert "features" not in _jsonl(run_dir / "predictions" / "devbench.jsonl")[-1]


# -- 4. ties are not hits, end to end through lm-eval ----------------------------------------
def test_identical_blimp_pair_is_never_a_hit(tiny_run, tiny_world, tmp_path):
    src = sorted((tiny_world / "eval" / "blimp").glob("*.jsonl"))[0]
    rows = [{**it, "sentence_bad": it["sentence_good"]} for it in _jsonl(src)[:6]]
    _write_jsonl(tmp_path / "blimp" / "tied.jsonl", rows)
    lm = BabymmLM.from_pretrained(tiny_run, batch_size=4)

    metrics, records = score_suite(lm, "blimp", tmp_path / "blimp", tmp_path / "work")

    assert metrics["acc"] == 0.0 and metrics["n"] == 6
    assert metrics["subtasks"]["tied"]["acc"] == 0.0
    assert len(records["tied"]) == 6
    for r, it in zip(records["tied"], rows, strict=True):
        assert r["scores"][0] == r["scores"][1] and r["scores"][0] < 0
        assert r["pred"] == it["sentence_good"] and r["hit"] is False


# -- 5. the modality gap logged during training ----------------------------------------------
def _flag(flags, name):
    return int(flags[flags.index(name) + 1])


def _rows(run_dir):
    return _jsonl(run_dir / "metrics.jsonl")


def _gap_steps(rows):
    return [r["step"] for r in rows if any(k.startswith("eval/gap/") for k in r)]


def _train_rows(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_METRICS} for r in rows if "train/loss" in r]


@pytest.fixture(scope="module")
def probed_runs(tiny_world, tmp_path_factory):
    """Two fresh tiny runs, the gap probe every 5 steps on 64 pairs and the probe off."""
    root = tmp_path_factory.mktemp("probed")
    common = ["--data_dir", str(tiny_world), "--curriculum", "length", *TINY_MODEL, *TINY_TRAIN,
              "--run_eval", "false"]
    assert train.main([*common, "--output_dir", str(root / "every5"), "--eval_steps", "5",
                       "--eval_gap_pairs", "64"]) == 0
    assert train.main([*common, "--output_dir", str(root / "off"), "--eval_steps", "0"]) == 0
    return root / "every5", root / "off"


def test_gap_rows_at_first_every_and_last_step(tiny_run, probed_runs):
    text, mm = _flag(TINY_TRAIN, "--text_pretrain_steps"), _flag(TINY_TRAIN, "--multimodal_steps")
    assert (text, mm) == (8, 12)  # the expected steps below are written out for these
    assert TrainArguments().eval_steps > mm  # the tiny run's default: only first and last
    assert _gap_steps(_rows(tiny_run)) == [8, 20]
    every5, off = probed_runs
    assert _gap_steps(_rows(every5)) == [8, 13, 18, 20]
    assert _gap_steps(_rows(off)) == []
    gap = [r for r in _rows(every5) if "eval/gap/centroid_distance" in r]
    assert all({"eval/gap/linear_separability", "eval/gap/matched_cosine"} <= set(r) for r in gap)
    assert len({r["eval/gap/centroid_distance"] for r in gap}) > 1  # measured with changing weights


def test_logged_centroid_distance_matches_saved_model(tiny_world, probed_runs):
    run_dir = probed_runs[0]
    cfg = json.loads((run_dir / "run_config.json").read_text())
    n = cfg["train"]["eval_gap_pairs"]
    assert n == 64
    model, tok = load_model(run_dir).eval(), AutoTokenizer.from_pretrained(run_dir)
    pairs_dir = tiny_world / "eval" / "captions"
    pairs = _jsonl(pairs_dir / "heldout.jsonl")
    size = model.config.image_size

    def embed(items):
        images = torch.from_numpy(np.stack([load_image(pairs_dir / it["image"], size) for it in items]))
        with torch.no_grad():
            image_emb = model.embed_images(images)
            text_emb = []
            for it in items:  # BOS + caption + EOS (kept when cut to 40), one caption at a time, no padding
                ids = tok(it["caption"])["input_ids"][:39] + [tok.eos_token_id]
                text_emb.append(model.embed_texts(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long)))
        return image_emb, torch.cat(text_emb)

    logged = [r for r in _rows(run_dir) if "eval/gap/centroid_distance" in r][-1]
    assert logged["step"] == 20
    mine = centroid_distance(*embed(pairs[:n]))
    assert logged["eval/gap/centroid_distance"] == pytest.approx(mine, abs=1e-4)
    # the sample size is the one configured: twice as many pairs give another distance
    assert abs(centroid_distance(*embed(pairs[: 2 * n])) - logged["eval/gap/centroid_distance"]) > 1e-4


def test_probe_does_not_change_training(tiny_run, probed_runs):
    every5, off = probed_runs
    losses = _train_rows(_rows(off))
    assert [r["step"] for r in losses] == [4, 8, 12, 16, 20]
    assert _train_rows(_rows(every5)) == losses
    assert _train_rows(_rows(tiny_run)) == losses  # probe at first and last step only
    # and the saved weights are the same
    a = AutoModelForCausalLM.from_pretrained(every5).state_dict()
    b = AutoModelForCausalLM.from_pretrained(off).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_eval_steps_without_heldout_pairs_stops_before_training(tiny_world, tmp_path, capsys):
    data = tmp_path / "world"
    shutil.copytree(tiny_world, data, ignore=shutil.ignore_patterns("eval"))
    out = tmp_path / "run"
    rc = train.main(["--data_dir", str(data), "--output_dir", str(out), "--curriculum", "length",
                     *TINY_MODEL, *TINY_TRAIN, "--eval_steps", "5", "--run_eval", "false"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--eval_steps" in err
    assert str(data / "eval" / "captions" / "heldout.jsonl") in err
    assert not (out / "metrics.jsonl").exists() and not (out / "model.safetensors").exists()


# -- captions tokenized as the run trained on them ------------------------------------------
def _long_training_captions(world, tok, n):
    """The run's training captions as a max_caption_tokens=8 run's batches hold them, and the
    indices of `n` captions longer than 8 tokens."""
    from babymm.data import CaptionData

    train8 = CaptionData(world / "prepared" / "ingest", tok, 8, with_images=False)
    captions = [str(c) for c in train8.ds["caption"]]
    index = [i for i, c in enumerate(captions) if len(tok(c)["input_ids"]) + 1 > 8][:n]
    assert len(index) == n
    return train8, index, [captions[i] for i in index]


def _pairs_with(world, dst, texts):
    """Held-out pairs of the world's first images with `texts` as their captions."""
    held = _jsonl(world / "eval" / "captions" / "heldout.jsonl")[: len(texts)]
    _copy_images(world / "eval" / "captions", dst, [p["image"] for p in held])
    _write_jsonl(dst / "heldout.jsonl", [{**p, "caption": t} for p, t in zip(held, texts, strict=True)])
    return dst / "heldout.jsonl"


def test_eval_embeds_captions_as_the_run_trained_on_them(tiny_run, tiny_world, tmp_path, monkeypatch):
    """A run trained with --max_caption_tokens 8: eval reads that from its run_config.json, and
    its embedding of a long caption is, bit for bit, the training batch's embedding of it."""
    from eval import multimodal

    run = tmp_path / "run8"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("checkpoints", "milestones", "stage1", *RUN_OUTPUTS,
                                                                  "metrics.jsonl"))
    cfg = json.loads((run / "run_config.json").read_text())
    cfg["data"]["max_caption_tokens"] = 8
    (run / "run_config.json").write_text(json.dumps(cfg))
    model, tok = load_model(run).eval(), AutoTokenizer.from_pretrained(run)
    train8, index, texts = _long_training_captions(tiny_world, tok, N_PAIRS)
    _pairs_with(tiny_world, tmp_path / "data" / "eval" / "captions", texts)
    embedded = []

    def spy(*args, **kwargs):
        embedded.append(real(*args, **kwargs))
        return embedded[-1]

    real = multimodal.embed_texts
    monkeypatch.setattr(multimodal, "embed_texts", spy)
    results = eval_run.evaluate_run(run, tmp_path / "data", batch_size=64, tasks=["embeddings"])
    assert "matched_cosine" in results["embeddings"], results["embeddings"]
    batch = train8.__getitems__(index)
    with torch.no_grad():
        trained = model.embed_texts(batch["input_ids"], batch["attention_mask"])
    assert len(embedded) == 1 and torch.equal(embedded[0], trained)


def test_gap_probe_embeds_captions_as_the_training_batch(tiny_run, tiny_world, tmp_path, monkeypatch):
    """The probe during training reads the run's max_caption_tokens (train.py passes it): its
    text embeddings are the training batch's, bit for bit."""
    from eval import probe

    model, tok = load_model(tiny_run).eval(), AutoTokenizer.from_pretrained(tiny_run)
    train8, index, texts = _long_training_captions(tiny_world, tok, 16)
    pairs = _pairs_with(tiny_world, tmp_path / "pairs", texts)
    embedded = []
    real = probe.embed_texts
    monkeypatch.setattr(probe, "embed_texts", lambda *a, **k: embedded.append(real(*a, **k)) or embedded[-1])
    gap = probe.GapProbe(model, tok, pairs, len(texts), batch_size=64, max_tokens=8)(model)
    assert "eval/gap/centroid_distance" in gap
    batch = train8.__getitems__(index)
    with torch.no_grad():
        trained = model.embed_texts(batch["input_ids"], batch["attention_mask"])
    assert len(embedded) == 1 and torch.equal(embedded[0], trained)


def test_caption_max_tokens_is_the_runs(tmp_path):
    from babymm.config import DataArguments
    from babymm.data import DEFAULT_MAX_CAPTION_TOKENS, caption_max_tokens
    from babymm.files import DataError

    assert DEFAULT_MAX_CAPTION_TOKENS == DataArguments().max_caption_tokens
    (tmp_path / "run_config.json").write_text(json.dumps({"data": {"max_caption_tokens": 8}}))
    assert caption_max_tokens(tmp_path) == 8
    (tmp_path / "run_config.json").write_text(json.dumps({"data": {"max_caption_tokens": 1}}))
    with pytest.raises(DataError, match="max_caption_tokens 1"):
        caption_max_tokens(tmp_path)
    with pytest.warns(UserWarning, match="no data.max_caption_tokens"):
        assert caption_max_tokens(tmp_path / "elsewhere") == DEFAULT_MAX_CAPTION_TOKENS


def test_submission_2025_leaves_nothing_from_an_earlier_scoring(scored, tmp_path):
    """A revision's files are replaced whole: DevBench's arrays go in only when DevBench was scored
    this time, and a task not scored now leaves no earlier predictions.json behind."""
    run_dir, _ = scored
    run = tmp_path / run_dir.name
    shutil.copytree(run_dir / "predictions", run / "predictions")
    shutil.copytree(run_dir / "babylm2025_results", run / "babylm2025_results")
    root = run / "babylm2025_results" / run_dir.name / "main" / "zero_shot"
    assert (root / "devbench" / "gram-trog.npy").is_file()
    wino = {"winoground": [{"id": "winoground_0", "pred": "a red star"}]}
    eval_run.write_submission_2025(run, {"winoground": wino}, devbench=False)
    assert not (root / "devbench").exists()
    assert not (root / "causal" / "vqa" / "vqa_filtered" / "predictions.json").exists()
    written = json.loads((root / "causal" / "winoground" / "winoground_filtered" / "predictions.json").read_text())
    assert written == {"winoground": {"predictions": [{"id": "winoground_0", "pred": "a red star"}]}}


def test_results_tree_2025_names_each_revision(tmp_path):
    """The final model is revision `main`, a word milestone its `chck_*` name, both under the run's
    own tree, as the official runner lays out `results/<model>/<revision>/`."""
    run = tmp_path / "my-run"
    (run / "milestones" / "chck_1M").mkdir(parents=True)
    root = run.resolve() / "babylm2025_results" / "my-run"
    assert eval_run.results_tree_2025(run) == (root / "main", "main")
    assert eval_run.results_tree_2025(run / "milestones" / "chck_1M") == (root / "chck_1M", "chck_1M")

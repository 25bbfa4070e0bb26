"""End to end at toy size: data prep, two-stage training, saving, eval, and its errors."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from babymm import train
from babymm.models import load_model
from eval.lm_adapter import BabymmLM
from tests.conftest import TINY_MODEL, TINY_TRAIN


def _train_rows(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "train/stage" in r]


def test_run_writes_everything(tiny_run):
    names = {p.name for p in tiny_run.iterdir()}
    assert {"config.json", "model.safetensors", "modeling_babymm.py", "preprocessor_config.json", "tokenizer.json",
            "run_config.json", "curriculum_manifest.json", "word_counts.json", "metrics.jsonl",
            "results.json", "results.md", "predictions", "gap_over_training.png"} <= names
    metrics = _train_rows(tiny_run)
    stages = [m["train/stage"] for m in metrics]
    assert stages[0] == "text" and stages[-1] == "multimodal"
    last = metrics[-1]
    assert {"train/caption_loss", "train/clip_loss", "train/uniform_loss", "train/align_loss",
            "train/text_loss"} <= set(last)
    assert json.loads((tiny_run / "curriculum_manifest.json").read_text())["curriculum"]["name"] == "length"


def test_results_cover_the_suite(tiny_run, tiny_world):
    """Every eval set the world ships is scored on every item it holds."""
    results = json.loads((tiny_run / "results.json").read_text())
    sizes = json.loads((tiny_world / "world.json").read_text())["eval"]
    for suite in ("blimp", "ewok"):
        assert {k: v["n"] for k, v in results[suite]["subtasks"].items()} == sizes[suite]
        assert results[suite]["n"] == sum(sizes[suite].values())
    for task in ("winoground", "vqa"):
        assert results[task]["n"] == results[task]["n_shuffled_images"] == sizes[task]
    assert {k: v["n_embedding"] for k, v in results["zeroshot"]["subtasks"].items()} == sizes["zeroshot"]
    assert results["embeddings"]["num_unique_captions"] <= sizes["captions"]
    assert "skipped" in results["blimp_supplement"]  # the built-in world ships none
    for task in ("blimp", "ewok", "winoground", "vqa"):
        lines = (tiny_run / "predictions" / f"{task}.jsonl").read_text().splitlines()
        assert len(lines) == (sum(sizes[task].values()) if isinstance(sizes[task], dict) else sizes[task])
    table = (tiny_run / "results.md").read_text()
    assert "BLiMP" in table and "EWoK" in table and "zero-shot (emb)" in table


def test_saved_model_loads_with_auto_classes_and_scores_the_same(tiny_run):
    """A standard causal-LM scorer (AutoModelForCausalLM + AutoTokenizer) gets the same
    sentence log-probabilities as babymm's own eval adapter."""
    tok = AutoTokenizer.from_pretrained(tiny_run)
    assert tok.is_fast
    enc = tok("the red balls are big.", return_offsets_mapping=True)
    assert enc["input_ids"][0] == tok.bos_token_id and len(enc["offset_mapping"]) == len(enc["input_ids"])
    model = AutoModelForCausalLM.from_pretrained(tiny_run).eval()
    sentences = ["the red balls are big.", "this dogs is happy.", "question: what color is the star? answer: red."]
    standard = []
    with torch.no_grad():
        for s in sentences:
            ids = torch.tensor([tok(s)["input_ids"]])
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
            standard.append(logp.gather(-1, ids[0, 1:, None]).sum().item())
    lm = BabymmLM(model, tok)

    class Req:
        def __init__(self, s):
            self.args = ("", " " + s)  # lm-eval's multiple-choice request for an empty context

    ours = [ll for ll, _ in lm.loglikelihood([Req(s) for s in sentences], disable_tqdm=True)]
    assert ours == pytest.approx(standard, abs=1e-4)
    # the multimodal model reloads with the same decoder weights
    mm = load_model(tiny_run)
    assert torch.equal(mm.decoder.lm_head.weight, model.get_output_embeddings().weight)


def test_unknown_curriculum_is_one_line_error(tiny_world, tmp_path, capsys):
    rc = train.main(["--data_dir", str(tiny_world), "--output_dir", str(tmp_path / "r"), "--curriculum", "nope"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: unknown curriculum 'nope'") and "\n" not in err
    assert not (tmp_path / "r").exists()


def test_missing_data_dir_is_one_line_error(tmp_path, capsys):
    rc = train.main(["--data_dir", str(tmp_path / "nowhere"), "--output_dir", str(tmp_path / "r")])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert rc == 2 and len(errors) == 1 and "nowhere: data directory does not exist" in errors[0]


def test_existing_run_is_not_overwritten(tiny_run, tiny_world, capsys):
    rc = train.main(["--data_dir", str(tiny_world), "--output_dir", str(tiny_run)])
    assert rc == 2 and "already holds a run" in capsys.readouterr().err


def test_no_pretraining_plain_clip_and_random_curriculum(tiny_world, tmp_path):
    out = tmp_path / "r"
    rc = train.main(["--data_dir", str(tiny_world), "--output_dir", str(out), "--curriculum", "random",
                     "--uniform_weight", "0", "--align_weight", "0", "--run_eval", "false",
                     *TINY_MODEL, *TINY_TRAIN, "--text_pretrain_steps", "0"])
    assert rc == 0
    metrics = _train_rows(out)
    assert all(m["train/stage"] == "multimodal" for m in metrics)
    assert "train/uniform_loss" not in metrics[-1] and "train/clip_loss" in metrics[-1]
    assert not (out / "results.json").exists()


def test_a_world_of_an_older_version_is_regenerated_with_its_parameters(tmp_path, monkeypatch, capsys):
    """Eval sets of another world version must never be scored as if they were this one's."""
    from data_prep import pipeline, world

    d = tmp_path / "world"
    monkeypatch.setattr(world, "VERSION", "world-0")
    world.generate_world(d, word_budget=3000, seed=1, eval_scale=0.02)
    monkeypatch.undo()

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(pipeline.ingest, "ingest", stop)  # the world is all this test is about
    with pytest.raises(Stop):
        pipeline.prepare(d, build_world=True)
    params = json.loads((d / "world.json").read_text())["params"]
    assert params == {"word_budget": 3000, "seed": 1, "image_size": 32, "caption_fraction": 0.4,
                      "eval_scale": 0.02, "version": world.VERSION}
    assert "holds world-0: regenerating it as " + world.VERSION in capsys.readouterr().out


def test_word_budget_is_honoured_or_refused(tmp_path, monkeypatch):
    """A budget never relabels data of another size: it is drawn from data that holds more, names
    the world to generate in a new directory, or is refused."""
    from babymm.files import DataError
    from data_prep import pipeline, world

    d = tmp_path / "world"
    world.generate_world(d, word_budget=3000, seed=1, eval_scale=0.02)
    with pytest.raises(DataError, match=r"holds 2,\d{3} words .* less than --word_budget 4,000"):
        pipeline.prepare(d, word_budget=4000)
    assert not (d / "prepared" / "subsets").exists()

    class Stop(Exception):
        pass

    made = []

    def fake_generate(out_dir, word_budget, **kwargs):
        made.append((out_dir, word_budget))
        raise Stop

    monkeypatch.setattr(world, "generate_world", fake_generate)
    with pytest.raises(Stop):  # a new directory named with a budget gets a world of that size
        pipeline.prepare(tmp_path / "world-5000w", word_budget=5000)
    assert made == [(tmp_path / "world-5000w", 5000)]

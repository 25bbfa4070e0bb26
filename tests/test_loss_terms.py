"""Loss terms as the loop trains and logs them: each term unweighted under its own name, the
weighted total as `train/loss`; a term weighted 0 is not computed and its words are not counted;
configurations a run cannot honour are refused before any work."""

import json
from pathlib import Path

import pytest
import torch

from babymm import train
from babymm.config import parse_config
from babymm.models import build_model
from babymm.models.base import VisionLanguageModel
from babymm.tasks import (
    ContrastiveCaptioning,
    ContrastiveLossArguments,
    LMLossArguments,
    TextCaptioning,
)
from tests.conftest import TINY_MODEL

SHORT = ["--batch_size", "16", "--text_batch_size", "8", "--warmup_steps", "1", "--eval_steps", "0",
         "--checkpointing_steps", "0", "--run_eval", "false", "--word_milestones", "none"]


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _train(tiny_world, out: Path, *flags: str) -> list[dict]:
    rc = train.main(["--data_dir", str(tiny_world), "--output_dir", str(out), "--curriculum", "length",
                     *TINY_MODEL, *SHORT, *flags])
    assert rc == 0
    return [r for r in _rows(out) if "train/stage" in r]


def test_terms_are_logged_unweighted_and_the_total_weighted(tiny_world, tmp_path):
    rows = _train(tiny_world, tmp_path / "run", "--text_pretrain_steps", "2", "--multimodal_steps", "2",
                  "--logging_steps", "1", "--text_weight", "0.5", "--clip_weight", "2", "--align_weight", "3")
    stage1, stage2 = [r for r in rows if r["train/stage"] == "text"], [r for r in rows if r["train/stage"] != "text"]
    assert len(stage1) == len(stage2) == 2
    for r in stage1:  # stage 1 trains the text loss alone, weight 1
        assert r["train/loss"] == pytest.approx(r["train/text_loss"], abs=1e-5)
    for r in stage2:  # the weights by hand: 1 caption + 0.5 text + 2 clip + 1 uniform + 3 align
        by_hand = (r["train/caption_loss"] + 0.5 * r["train/text_loss"] + 2 * r["train/clip_loss"]
                   + r["train/uniform_loss"] + 3 * r["train/align_loss"])
        assert r["train/loss"] == pytest.approx(by_hand, abs=5e-5)
    # the same unweighted text LM on both sides of the stage boundary: no fake 2x (1 / 0.5) drop
    assert stage2[0]["train/text_loss"] == pytest.approx(stage1[-1]["train/text_loss"], rel=0.1)


def test_text_weight_zero_reads_no_text_and_counts_no_text_words(tiny_world, tmp_path):
    rows = _train(tiny_world, tmp_path / "run", "--text_pretrain_steps", "0", "--multimodal_steps", "3",
                  "--logging_steps", "1", "--text_weight", "0")
    assert all("train/text_loss" not in r for r in rows)
    assert [r["train/text_words_seen"] for r in rows] == [0, 0, 0]
    assert [r["train/text_tokens_seen"] for r in rows] == [0, 0, 0]
    assert rows[-1]["train/words_seen"] == rows[-1]["train/caption_words_seen"] > 0


class _Spy:
    """Wraps a model's methods to record which passes a training step ran."""

    def __init__(self, model, names):
        self.calls = []
        for name in names:
            original = getattr(model, name)

            def wrapped(*a, _name=name, _original=original, **k):
                self.calls.append(_name)
                return _original(*a, **k)
            setattr(model, name, wrapped)


def _batch(V=50, B=4, T=6):
    g = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(4, V, (B, T), generator=g), "attention_mask": torch.ones(B, T, dtype=torch.long),
            "images": torch.rand(B, 3, 16, 16, generator=g),
            "text_input_ids": torch.randint(4, V, (B, 8), generator=g),
            "text_attention_mask": torch.ones(B, 8, dtype=torch.long)}


@pytest.fixture
def git_model():
    cfg = parse_config(["--model_type", "git", *TINY_MODEL, "--image_size", "16"])
    config = cfg.model.resolve(vocab_size=50, image_size=16)
    return build_model(config)


def test_a_term_weighted_zero_is_not_computed(git_model):
    assert isinstance(git_model, VisionLanguageModel)
    spy = _Spy(git_model, ["text_logits", "caption_logits", "caption_pass", "embed_texts", "embed_images"])
    terms = ContrastiveCaptioning(ContrastiveLossArguments(text_weight=0)).loss_terms(git_model, _batch())
    assert set(terms) == {"caption_loss", "clip_loss", "uniform_loss", "align_loss"}
    assert "text_logits" not in spy.calls  # no text batch forward at all
    spy.calls.clear()
    captioning_only = ContrastiveCaptioning(ContrastiveLossArguments(clip_weight=0, uniform_weight=0, align_weight=0))
    assert set(captioning_only.loss_terms(git_model, _batch())) == {"caption_loss", "text_loss"}
    assert "embed_texts" not in spy.calls and "embed_images" not in spy.calls and "caption_pass" not in spy.calls
    spy.calls.clear()
    contrastive_only = ContrastiveCaptioning(ContrastiveLossArguments(caption_weight=0))
    assert set(contrastive_only.loss_terms(git_model, _batch())) == {"text_loss", "clip_loss", "uniform_loss",
                                                                     "align_loss"}
    assert "caption_logits" not in spy.calls
    assert captioning_only.leaves_parameters_unused and contrastive_only.leaves_parameters_unused
    assert not ContrastiveCaptioning(ContrastiveLossArguments()).leaves_parameters_unused


@pytest.mark.parametrize(("model_type", "flags", "message"), [
    ("text", ["--caption_weight", "0"], "--caption_weight 0: stage 2 of the text type would read no captions"),
    ("git", ["--caption_weight", "0", "--clip_weight", "0", "--uniform_weight", "0", "--align_weight", "0"],
     "--caption_weight and every contrastive weight are 0"),
    ("git", ["--mixed_precision", "fp16"], "--mixed_precision fp16 is not supported"),
])
def test_configurations_a_run_cannot_honour_are_refused(model_type, flags, message):
    cfg = parse_config(["--model_type", model_type, *TINY_MODEL, *flags])
    assert any(p.startswith(message) for p in cfg.problems(1)), cfg.problems(1)


def test_text_captioning_weights_name_only_computed_terms():
    assert TextCaptioning(LMLossArguments(text_weight=0)).weights == {"caption_loss": 1.0}
    assert not TextCaptioning(LMLossArguments(text_weight=0)).uses_text

"""`--loss` recipes, the flags they set, what is refused, and the views a recipe's task reads."""

import json

import numpy as np
import pytest
import torch

from babymm.config import parse_config
from babymm.models import build_model
from babymm.tasks import RECIPES, ContrastiveCaptioning, ContrastiveLossArguments, ViewMaker

TINY = ["--preset", "tiny"]


def _problems(*argv):
    return parse_config([*TINY, *argv]).problems(1)


@pytest.mark.parametrize("name", list(RECIPES))
def test_each_recipe_parses_runs_clean_and_is_recorded(name):
    cfg = parse_config([*TINY, "--model_type", "coca", "--loss", name])
    assert cfg.problems(1) == []
    assert cfg.loss.loss == name and cfg.to_dict()["loss"]["loss"] == name
    # the recipe names every contrastive weight
    for k in ("clip_weight", "uniform_weight", "align_weight", "xuniform_weight", "siglip_weight", "nn_weight",
              "simsiam_weight"):
        assert getattr(cfg.loss, k) == RECIPES[name][k], k


def test_recipe_values_by_hand():
    siglip = parse_config([*TINY, "--loss", "siglip"])
    assert siglip.model.temperature == 0.1 and siglip.model.logit_bias == -10.0  # Zhai et al.: t = 10, b = -10
    assert (siglip.loss.siglip_weight, siglip.loss.clip_weight, siglip.loss.uniform_weight) == (1.0, 0.0, 0.0)
    declip = parse_config([*TINY, "--loss", "declip"])
    assert (declip.loss.clip_weight, declip.loss.nn_weight, declip.loss.simsiam_weight) == (0.4, 0.2, 0.2)
    assert declip.loss.image_views == 2 and declip.loss.image_augment == "moco" and declip.loss.caption_augment == 0.1
    assert declip.model.simsiam_dim == 128
    cuaxu = parse_config([*TINY, "--loss", "cuaxu"]).loss
    assert (cuaxu.clip_weight, cuaxu.uniform_weight, cuaxu.align_weight, cuaxu.xuniform_weight) == (1, 1, 1, 1)
    default = parse_config(TINY)
    assert default.loss.loss == "cua" and default.model.logit_bias is None and default.model.simsiam_dim == 0


def test_a_flag_beats_the_recipe_and_a_config_file(tmp_path):
    cfg = parse_config([*TINY, "--loss", "declip", "--clip_weight", "1.0", "--nn_weight", "0"])
    assert cfg.loss.clip_weight == 1.0 and cfg.loss.nn_weight == 0.0 and cfg.loss.simsiam_weight == 0.2
    f = tmp_path / "run.yaml"
    f.write_text("loss: siglip\nsiglip_weight: 0.5\n")
    from_file = parse_config([*TINY, "--config", str(f)])
    assert from_file.loss.siglip_weight == 0.5 and from_file.model.logit_bias == -10.0
    # a saved run's config reproduces it
    saved = tmp_path / "run_config.json"
    saved.write_text(json.dumps(cfg.to_dict()))
    assert parse_config(["--config", str(saved)]).to_dict() == cfg.to_dict()


def test_unknown_recipe_and_the_text_type_are_refused():
    with pytest.raises(SystemExit, match="--loss 'infonce' unknown"):
        parse_config([*TINY, "--loss", "infonce"])
    with pytest.raises(SystemExit):  # the text type has no contrastive loss, so no --loss flag
        parse_config([*TINY, "--model_type", "text", "--loss", "clip"])
    with pytest.raises(SystemExit):
        parse_config([*TINY, "--model_type", "text", "--caption_augment", "0.1"])


@pytest.mark.parametrize("argv, says", [
    (["--loss", "declip", "--vision_encoder", "features"], "precomputed features have no pixels"),
    (["--feature_dropout", "0.1", "--image_views", "2"], "act on precomputed features"),
    (["--logit_bias", "-10"], "only the SigLIP term reads it"),
    (["--siglip_weight", "1"], "needs the model's learned bias"),
    (["--simsiam_dim", "64"], "would never train"),
    (["--loss", "declip", "--simsiam_dim", "0"], "needs the SimSiam heads"),
    (["--loss", "declip", "--freeze_vision", "true"], "vision encoder, which is frozen"),
    (["--image_views", "2"], "two identical views"),
    (["--simsiam_weight", "0.2", "--simsiam_dim", "64"], "needs two image views"),
    (["--label_smoothing", "0.1", "--loss", "siglip"], "no cross-entropy term"),
    (["--nn_queue_size", "1024"], "nearest-neighbour term is off"),
    (["--synonyms", "data_prep/synonyms_world.json"], "pass --caption_augment too"),
    (["--caption_augment", "0.1", "--synonyms", "/no/such.json"], "no such file"),
    (["--image_augment", "crop,zoom"], "zoom"),
    (["--caption_augment", "0.1", "--clip_weight", "0", "--uniform_weight", "0", "--align_weight", "0"],
     "no contrastive term reads the views"),
    (["--image_views", "3"], "use 1 or 2"),
])
def test_a_term_the_model_or_input_cannot_have_is_refused(argv, says):
    found = _problems("--model_type", "git", *argv)
    assert any(says in p for p in found), found


def _batch(B=4, T=7, V=60, S=16):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, V, (B, T), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3
    return {"input_ids": ids, "attention_mask": torch.ones(B, T, dtype=torch.long),
            "images": torch.randint(0, 256, (B, 3, S, S), generator=g, dtype=torch.uint8),
            "num_words": torch.full((B,), 5), "index": torch.arange(B)}


class _Tokenizer:
    """Enough of a tokenizer for the caption augmenter: ids 5.. are one-piece words."""

    pad_token_id, eos_token_id, bos_token_id = 0, 3, 2
    all_special_ids = [0, 1, 2, 3]

    def __len__(self):
        return 60

    def convert_ids_to_tokens(self, ids):
        return ["<pad>", "<unk>", "<s>", "</s>", "x", *[f"\u2581w{i}" for i in range(5, 60)]][: len(ids)]


def test_views_are_a_pure_function_of_seed_step_and_rank():
    args = parse_config([*TINY, "--loss", "declip"]).loss
    task = ContrastiveCaptioning(args)
    make = ViewMaker.for_task(task, _Tokenizer(), max_tokens=40, seed=7)
    a, b = make(_batch(), step=3), make(_batch(), step=3)
    for k in ("images", "image_view", "view_input_ids"):
        assert torch.equal(a[k], b[k]), k
    assert not torch.equal(a["images"], a["image_view"])  # two different views of each image
    assert not torch.equal(a["images"], make(_batch(), step=4)["images"])
    assert not torch.equal(a["images"], ViewMaker.for_task(task, _Tokenizer(), 40, seed=7, rank=1)(_batch(), 3)["images"])
    assert torch.equal(a["input_ids"], _batch()["input_ids"])  # the captioning loss reads the caption as is
    assert ViewMaker.for_task(ContrastiveCaptioning(ContrastiveLossArguments()), _Tokenizer(), 40, 0) is None


def test_declip_task_computes_every_term_on_two_views():
    cfg = parse_config([*TINY, "--model_type", "coca", "--loss", "declip", "--image_size", "16", "--nn_queue_size", "32",
                        "--text_weight", "0"])
    torch.manual_seed(0)
    model = build_model(cfg.model.resolve(vocab_size=60, image_size=16))
    task = ContrastiveCaptioning(cfg.loss)
    batch = ViewMaker.for_task(task, _Tokenizer(), 40, seed=0)(_batch(), step=0)
    terms = task.loss_terms(model, batch)
    assert set(terms) == {"caption_loss", "clip_loss", "nn_loss", "simsiam_loss"}
    assert task.weights == {"caption_loss": 1.0, "clip_loss": 0.4, "nn_loss": 0.2, "simsiam_loss": 0.2}
    sum(task.weights[k] * v for k, v in terms.items()).backward()
    assert model.simsiam.predictor[0].weight.grad.abs().sum() > 0  # the SimSiam heads train
    assert int(task.contrastive.queue.filled) == 4  # the batch's captions joined the queue
    state = task.state_dict()
    fresh = ContrastiveCaptioning(cfg.loss)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.contrastive.queue.features, task.contrastive.queue.features)


def test_siglip_model_learns_its_bias():
    cfg = parse_config([*TINY, "--model_type", "git", "--loss", "siglip", "--image_size", "16", "--text_weight", "0"])
    model = build_model(cfg.model.resolve(vocab_size=60, image_size=16))
    assert model.logit_bias.item() == -10.0 and model.logit_scale.item() == pytest.approx(10.0)
    terms = ContrastiveCaptioning(cfg.loss).loss_terms(model, _batch())
    terms["siglip_loss"].backward()
    assert model.logit_bias.grad is not None and model.logit_bias.grad.item() != 0


def test_caption_views_never_outgrow_the_caption_length():
    task = ContrastiveCaptioning(parse_config([*TINY, "--caption_augment", "0.5"]).loss)
    out = ViewMaker.for_task(task, _Tokenizer(), max_tokens=7, seed=0)(_batch(T=7), step=0)
    assert out["view_input_ids"].shape[1] <= 7
    assert np.all(out["view_input_ids"][:, 0].numpy() == 2)


def test_declip_resumes_exactly_with_its_queue(tiny_world, tmp_path):
    """A DeCLIP run resumed from a stage-2 checkpoint logs what the unstopped run logs: its views
    are a function of (seed, step) and its text queue travels in the checkpoint. Without the
    queue file the resume is refused, not run with an empty queue."""
    import shutil
    import subprocess

    from tests.test_resume import ENV, _assert_same_log, _command, _rows, _run

    extra = ["--model_type", "git", "--loss", "declip", "--nn_queue_size", "40", "--save_total_limit", "0",
             "--word_milestones", "none"]
    reference = tmp_path / "reference"
    _run(tiny_world, reference, extra=extra)
    stage2 = [c for c in sorted((reference / "checkpoints").iterdir()) if int(c.name.split("-")[1]) > 12][0]
    assert (stage2 / "task_state.safetensors").is_file()
    for keep_queue in (True, False):
        out = tmp_path / f"resumed-{keep_queue}"
        shutil.copytree(reference, out)
        (out / "model.safetensors").unlink()
        checkpoint = out / "checkpoints" / stage2.name
        if not keep_queue:
            (checkpoint / "task_state.safetensors").unlink()
        if keep_queue:
            _run(tiny_world, out, extra=[*extra, "--resume_from_checkpoint", str(checkpoint)])
            _assert_same_log(_rows(out), _rows(reference), "declip resumed from stage 2")
        else:
            proc = subprocess.run(_command(tiny_world, out, 1, [*extra, "--resume_from_checkpoint", str(checkpoint)]),
                                  env=ENV, capture_output=True, text=True, timeout=600)
            assert proc.returncode == 1 and "holds no nearest-neighbour queue" in proc.stderr, proc.stderr[-2000:]
            assert "Traceback" not in proc.stderr  # one line, naming the checkpoint


def test_the_sweeps_loss_axis_is_every_recipe_and_variant():
    from babymm.tasks import LOSS_VARIANTS, loss_flags
    from tests.conftest import load_script

    sweep = load_script("scripts/sweep.py", "sweep_for_recipes")
    assert set(sweep.LOSSES) == set(RECIPES) | set(LOSS_VARIANTS)
    assert loss_flags("clip") == ["--loss", "clip"]
    for name in sweep.LOSSES:  # each condition's flags make a clean run
        assert parse_config([*TINY, "--model_type", "coca", *loss_flags(name)]).problems(1) == [], name


def test_declip_on_precomputed_features_takes_feature_views():
    """The BabyLM corpus's input: DINOv2 vectors, no pixels. DeCLIP's views come from feature
    dropout there; the recipe's pixel augmentation is refused with the flags to use instead."""
    refused = _problems("--model_type", "git", "--vision_encoder", "features", "--loss", "declip")
    assert any("--image_augment none" in p and "--feature_dropout" in p for p in refused), refused
    argv = [*TINY, "--model_type", "git", "--vision_encoder", "features", "--loss", "declip", "--image_augment",
            "none", "--feature_dropout", "0.1", "--text_weight", "0", "--nn_queue_size", "16"]
    cfg = parse_config(argv)
    assert cfg.problems(1) == []
    model = build_model(cfg.model.resolve(vocab_size=60, feature_dim=12, feature_tokens=1))
    task = ContrastiveCaptioning(cfg.loss)
    batch = {**_batch(), "images": torch.randn(4, 12, generator=torch.Generator().manual_seed(1))}
    viewed = ViewMaker.for_task(task, _Tokenizer(), 40, seed=0)(batch, step=0)
    dropped = (viewed["images"] == 0) & (batch["images"] != 0)
    assert 0 < dropped.float().mean() < 0.5  # about a tenth of the elements dropped
    kept = ~dropped
    assert torch.allclose(viewed["images"][kept], batch["images"][kept] / 0.9)  # the rest scaled as nn.Dropout
    assert not torch.equal(viewed["images"], viewed["image_view"])
    terms = task.loss_terms(model, viewed)
    assert set(terms) == {"caption_loss", "clip_loss", "nn_loss", "simsiam_loss"}

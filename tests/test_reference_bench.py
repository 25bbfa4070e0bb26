"""benchmarks/reference.py measures like for like: babymm's `run_stage` side and the bare loop
start from the same weights and train on the same batches (the same first-step loss), and the
transformers-GIT emulation really puts the image tokens in front of the caption. Tiny sizes, one
round: a few seconds."""

import sys

import pytest
import torch

from tests.conftest import load_script

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ref():
    yield load_script("benchmarks/reference.py", "bench_reference")
    sys.modules.pop("bench_reference", None)


def test_babymm_and_bare_do_the_same_work(ref, tmp_path):
    argv = ["--preset", "tiny", "--types", "git", "coca", "--threads", "1", "--rounds", "2", "--steps_per_round", "1",
            "--warmup", "1", "--out_dir", str(tmp_path)]
    bench = ref.build(ref.parse_args(argv))
    for tb in bench.types.values():
        a, b = tb.babymm.model.state_dict(), tb.bare.model.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert tb.babymm.model is not tb.bare.model
    first = {}  # type -> (babymm's first-step loss, the batch it was computed on)
    for name, tb in bench.types.items():
        task, real = tb.babymm.task, tb.babymm.task.loss_terms

        def recording(model, batch, num_items=None, _real=real, _name=name, _task=task):
            terms = _real(model, batch, num_items)
            loss = sum(_task.weights.get(k, 1.0) * v for k, v in terms.items())
            first.setdefault(_name, (loss.detach(), batch))
            return terms

        task.loss_terms = recording  # this instance only: the bare side has its own task
    ref.measure(bench, tmp_path)
    for name, tb in bench.types.items():
        loss, batch = first[name]
        bare_batch = tb.bare.batches[0]
        assert batch.keys() == bare_batch.keys()
        assert all(torch.equal(batch[k], bare_batch[k]) for k in batch)  # the sampler's first batch, both sides
        assert loss.item() == pytest.approx(tb.bare.first_loss.item(), rel=1e-6)
        assert len(tb.babymm.seconds) == len(tb.bare.seconds) == 2
    git = bench.types["git"]
    assert len(git.transformers) == 1 and len(git.transformers[0].seconds) == 2
    # every side counts the same tokens: image prefix + caption (padded) + text block
    b0 = git.bare.batches[1]
    assert git.tokens[1] == b0["input_ids"].shape[0] * (5 + b0["input_ids"].shape[1]) + b0["text_input_ids"].numel()

    result = ref.report(bench, argv)
    assert result["overhead_type"] == "git" and set(result["overhead"]) == {"git", "coca"}
    assert result["overhead_ratio"] > 0 and result["vs_transformers_git_ratio"] > 0
    assert {(r["type"], r["side"]) for r in result["sides"]} == {
        ("git", "babymm"), ("git", "bare"), ("git", "transformers_fp32"), ("coca", "babymm"), ("coca", "bare")}
    assert result["config"]["loss_weights"]["git"] == {"caption_loss": 1.0, "text_loss": 0.25}  # the 2024 recipe
    assert "| git" in ref.markdown(result)


def test_transformers_git_reads_the_image_tokens(ref):
    torch.manual_seed(0)
    model = ref.build_transformers_git(hidden=32, layers=2, heads=2, intermediate=128, vocab=512, image_tokens=5,
                                       feature_dim=48, max_positions=64, dropout=0.0)
    assert sum(p.numel() for p in model.git.image_encoder.parameters()) == 0
    assert model.git.visual_projection.visual_projection[0].in_features == 48
    ids = torch.randint(4, 512, (3, 7))
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    text = torch.randint(4, 512, (2, 9))
    batch = {"input_ids": ids, "attention_mask": mask, "images": torch.randn(3, 5, 48), "text_input_ids": text,
             "text_attention_mask": torch.ones_like(text)}
    hf = ref.transformers_batch(batch)
    assert hf["labels"][0, 5:].eq(-100).all() and hf["labels"][1].eq(ids[1]).all()
    out = model(input_ids=ids, attention_mask=mask, pixel_values=hf["pixel_values"], labels=hf["labels"])
    assert out.logits.shape == (3, 5 + 7, 512)  # the image tokens are decoder positions
    loss = ref.transformers_git_loss(model, hf, 0.25)
    other = ref.transformers_batch({**batch, "images": torch.randn(3, 5, 48)})
    assert abs(ref.transformers_git_loss(model, other, 0.25).item() - loss.item()) > 1e-5
    # the text loss is GIT's without an image: only the caption term changes with the features
    no_text = ref.transformers_git_loss(model, hf, 0.0)
    assert (loss - no_text).item() == pytest.approx((ref.transformers_git_loss(model, other, 0.25)
                                                    - ref.transformers_git_loss(model, other, 0.0)).item(), rel=1e-5)
    with pytest.raises(ValueError, match="square"):
        ref.build_transformers_git(32, 1, 2, 128, 512, image_tokens=6, feature_dim=48, max_positions=64)


def test_parameters_are_matched(ref):
    """GIT's 2-matrix GELU MLP at 4 x width against babymm's 3-matrix SwiGLU at 2/3 of it: the
    decoder layers hold about the same parameters (within 2% at width 256, 0.2% at 768)."""
    assert ref.swiglu_intermediate(768) == 2048 and ref.git_intermediate(768) == 3072
    args = ref.parse_args(["--preset", "tiny", "--hidden_size", "256", "--num_heads", "4", "--num_layers", "1"])
    s = ref.sizes(args)
    cfg = ref.run_config("git", s, args, 4)
    babymm = ref.build_model(cfg.model.resolve(vocab_size=s["vocab_size"], feature_dim=s["feature_dim"],
                                               feature_tokens=s["image_tokens"]))
    git = ref.build_transformers_git(256, 1, 4, s["git_intermediate"], s["vocab_size"], s["image_tokens"],
                                     s["feature_dim"], s["max_positions"])
    a, b = ref.parameter_groups(babymm), ref.parameter_groups(git)
    assert a["decoder_layers"] == pytest.approx(b["decoder_layers"], rel=0.02)
    assert a["embeddings"] == s["vocab_size"] * 256  # tied output layer, no position table
    assert b["embeddings"] == (s["vocab_size"] + s["max_positions"]) * 256 and "output_layer" in b  # its bias

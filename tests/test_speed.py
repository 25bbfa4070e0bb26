"""Speed without changing what is learned: the FLOP count behind `train/mfu` against hand
arithmetic, the decoder passes each type's step really runs, Flamingo's shared lower layers, the
fused optimizer, `--compile` and bf16 against eager fp32, and what a run logs and records."""

import json

import pytest
import torch

from babymm import train
from babymm.models import load_model
from babymm.speed import (
    DecoderPass,
    DecoderShape,
    Throughput,
    compile_blocks,
    flops_per_token,
    step_flops,
)
from babymm.tasks import task_for
from tests.conftest import TINY_MODEL
from tests.test_model_types import B, T, set_gates, tiny_config, tiny_model, toy_batch

pytestmark = pytest.mark.usefixtures("one_thread")


def test_flops_per_token_is_nanogpts_count():
    shape = DecoderShape(num_params=1000, num_layers=2, num_heads=4, head_dim=8)
    # 6N + 12 L H Q T = 6000 + 12 * 2 * 4 * 8 * 16
    assert flops_per_token(shape, 16) == 6000 + 12288


def test_step_flops_sums_passes_and_counts_part_of_a_pass_as_part():
    shape = DecoderShape(num_params=10, num_layers=1, num_heads=1, head_dim=1)
    passes = [DecoderPass(2, 3), DecoderPass(4, 5, layer_fraction=0.25)]
    # 2*3 tokens * (60 + 12*3) + 4*5 tokens * 0.25 * (60 + 12*5)
    assert step_flops(shape, passes) == 6 * 96 + 5 * 120


def test_throughput_reads_tokens_per_second_and_mfu_then_starts_afresh():
    meter = Throughput(peak_flops=4e12)
    meter.add(600, 3e12, 1.5)
    meter.add(400, 1e12, 0.5)
    assert meter.read() == {"tokens_per_s": 500.0, "tflops": 2.0, "mfu": 0.5}
    meter.add(10, 0.0, 2.0)
    assert meter.read() == {"tokens_per_s": 5.0}  # no FLOPs counted: no tflops, no mfu


def _task(model_type, **weights):
    cfg = tiny_config(model_type)
    args = task_for(type(tiny_model(model_type))).Arguments(**weights)
    return cfg, task_for(type(tiny_model(model_type)))(args)


@pytest.mark.parametrize("model_type, expected", [
    # captions [B, T] (+ GIT's image prefix of 16 conv tokens for 32x32 images, CoCa's CLS), the
    # no-image embedding pass (all of GIT's layers; none of Flamingo's with a block before layer 0
    # at cross_attn_every 1; CoCa none), the text batch [B, T + 2]
    ("git", [(B, T + 16, 1.0), (B, T, 1.0), (B, T + 2, 1.0)]),
    ("flamingo", [(B, T, 1.0), (B, T, 1.0), (B, T + 2, 1.0)]),
    ("coca", [(B, T + 1, 1.0), (B, T + 2, 1.0)]),
    ("text", [(B, T, 1.0), (B, T + 2, 1.0)]),
])
def test_decoder_passes_are_the_passes_a_step_runs(model_type, expected):
    model, (_, task) = tiny_model(model_type), _task(model_type)
    passes = task.decoder_passes(model, toy_batch())
    assert [(p.rows, p.seq_len, p.layer_fraction) for p in passes] == expected


def test_switched_off_terms_run_no_pass():
    model = tiny_model("git")
    _, captioning_only = _task("git", clip_weight=0, uniform_weight=0, align_weight=0)
    assert [(p.rows, p.seq_len) for p in captioning_only.decoder_passes(model, toy_batch())] == [
        (B, T + 16), (B, T + 2)]
    _, no_text = _task("git", text_weight=0)
    assert [(p.rows, p.seq_len) for p in no_text.decoder_passes(model, toy_batch())] == [(B, T + 16), (B, T)]


@pytest.mark.parametrize("every, first, fraction", [(2, 1, 0.5), (1, 0, 1.0)])
def test_flamingo_shares_the_layers_below_its_first_block(every, first, fraction):
    """The one-pass caption logits and text embeddings equal the two separate passes', values and
    gradients, with the gates open so the image changes the caption pass."""
    model = tiny_model("flamingo", cross_attn_every=every)
    set_gates(model, 0.7)
    assert (model.first_cross_layer, model.embedding_pass_fraction) == (first, fraction)
    b = toy_batch()
    ids, mask = b["input_ids"], b["attention_mask"]
    logits, embeds = model.caption_pass(ids, mask, model.image_context(b["images"]))
    ref_logits = model.caption_logits(ids, mask, model.image_context(b["images"]))
    ref_embeds = model.embed_texts(ids, mask)
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=0)
    torch.testing.assert_close(embeds, ref_embeds, rtol=1e-6, atol=1e-6)
    weights = torch.randn_like(embeds)
    params = [p for p in model.parameters() if p.requires_grad]
    one = torch.autograd.grad((embeds * weights).sum() + logits.mean(), params, allow_unused=True)
    two = torch.autograd.grad((ref_embeds * weights).sum() + ref_logits.mean(), params, allow_unused=True)
    for g1, g2 in zip(one, two, strict=True):
        assert (g1 is None) == (g2 is None)
        if g1 is not None:
            torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-6)
    assert len(model.decoder.get_decoder().layers) == 2  # the layers are put back


def test_adamw_is_fused_on_cuda_only(tmp_path):
    from types import SimpleNamespace

    from babymm.training import TrainState

    args = SimpleNamespace(learning_rate=1e-3, weight_decay=0.1, warmup_steps=0, lr_schedule="constant")
    state = TrainState()
    state.start_stage("s", tiny_model("git"), 10, args, torch.device("cpu"))
    assert not state.optimizer.defaults["fused"]  # CPU results reproduce bit for bit
    # on CUDA the fused kernel (constructing it needs no GPU: the kernel runs where the params go)
    state.start_stage("s", tiny_model("git"), 10, args, torch.device("cuda"))
    assert state.optimizer.defaults["fused"] is True


def test_compile_blocks_keeps_parameter_names():
    model = tiny_model("flamingo")
    names = list(model.state_dict())
    assert compile_blocks(model)[-3:] == ["vision", "cross_blocks", "resampler"]
    assert list(model.state_dict()) == names


RUN = ["--model_type", "git", *TINY_MODEL, "--text_pretrain_steps", "2", "--multimodal_steps", "3",
       "--batch_size", "8", "--text_batch_size", "4", "--logging_steps", "1", "--warmup_steps", "1",
       "--eval_steps", "0", "--run_eval", "false", "--word_milestones", "none", "--checkpointing_steps", "0"]


def _losses(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k.endswith("_loss") or k == "train/loss"} for r in rows if "train/loss" in r]


@pytest.fixture(scope="module")
def eager_run(tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("eager") / "run"
    assert train.main(["--data_dir", str(tiny_world), "--output_dir", str(out), *RUN]) == 0
    return out


def test_a_run_logs_tokens_per_second_and_mfu_against_its_measured_peak(eager_run):
    env = json.loads((eager_run / "environment.json").read_text())
    assert env["matmul_peak_dtype"] == "float32" and env["tf32"] is False and env["matmul_peak_tflops"] > 0
    rows = [json.loads(line) for line in (eager_run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "train/loss" in r]
    assert len(steps) == 5
    for r in steps:
        assert r["train/tokens_per_s"] > 0
        # the two are read from one meter: MFU is the achieved TFLOP/s over the recorded peak
        assert r["train/mfu"] == pytest.approx(r["train/tflops"] / env["matmul_peak_tflops"], rel=1e-3)


def test_compile_gives_the_losses_of_eager(eager_run, tmp_path, tiny_world):
    out = tmp_path / "compiled"
    assert train.main(["--data_dir", str(tiny_world), "--output_dir", str(out), *RUN, "--compile"]) == 0
    eager, compiled = _losses(eager_run), _losses(out)
    assert [sorted(r) for r in compiled] == [sorted(r) for r in eager]
    for a, b in zip(eager, compiled, strict=True):
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-5), k
    model = load_model(out)  # the compiled run saved plain parameter names
    assert not any("_orig_mod" in k for k in model.state_dict())


@pytest.fixture
def fresh_accelerator_state():
    """accelerate keeps one process-wide state; a run with another mixed precision needs it anew."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_bf16_trains_close_to_fp32(eager_run, tmp_path, tiny_world, fresh_accelerator_state):
    out = tmp_path / "bf16"
    assert train.main(["--data_dir", str(tiny_world), "--output_dir", str(out), *RUN,
                       "--mixed_precision", "bf16"]) == 0
    env = json.loads((out / "environment.json").read_text())
    assert env["matmul_peak_dtype"] == "bfloat16"
    first_fp32, first_bf16 = _losses(eager_run)[0], _losses(out)[0]
    # step 1 from the same weights: only bf16 rounding apart (about 3 significant digits)
    assert first_bf16["train/text_loss"] == pytest.approx(first_fp32["train/text_loss"], rel=2e-2)
    assert first_bf16["train/text_loss"] != first_fp32["train/text_loss"]  # bf16 was really in force


@pytest.mark.parametrize("model_type", ["git", "flamingo", "coca", "text"])
def test_every_decoder_attends_through_sdpa(model_type):
    assert tiny_model(model_type).decoder.config._attn_implementation == "sdpa"

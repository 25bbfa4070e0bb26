"""benchmarks/data_loading.py's demand arithmetic and breakdown against hand computations (no data,
no real model)."""

import sys
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import babymm.data
from babymm.tasks import ContrastiveCaptioning, ContrastiveLossArguments
from tests.conftest import load_script


@pytest.fixture(scope="module")
def bench():
    yield load_script("benchmarks/data_loading.py", "bench_data_loading")
    sys.modules.pop("bench_data_loading", None)


class TinyGit(nn.Module):
    """What the FLOP count reads of a model: 110 trained parameters, a decoder of 2 layers x 3
    heads x 4 (hidden 12), a 1-token image prefix, half the layers in the embedding pass."""

    prefix_tokens = 1
    embedding_pass_fraction = 0.5

    def __init__(self):
        super().__init__()
        self.decoder = nn.Linear(10, 10)  # 110 parameters
        self.decoder.config = SimpleNamespace(num_hidden_layers=2, num_attention_heads=3, hidden_size=12)
        self.frozen = nn.Parameter(torch.zeros(1000), requires_grad=False)  # not trained: not counted


def task(clip_weight: float = 0.0) -> ContrastiveCaptioning:
    return ContrastiveCaptioning(ContrastiveLossArguments(caption_weight=1.0, text_weight=0.25,
                                                          clip_weight=clip_weight, uniform_weight=0.0,
                                                          align_weight=0.0))


def test_mean_shape_batch_rounds_the_mean_width(bench):
    b = bench.mean_shape_batch(batch=5, caption_width=27.6, text_batch=5, block_size=16)
    assert b["input_ids"].shape == (5, 28) and b["text_input_ids"].shape == (5, 16)
    assert "text_input_ids" not in bench.mean_shape_batch(5, 27.4, 0, 16)


def test_step_demand_is_a_hand_count(bench):
    # per token of a sequence of T: 6 N + 12 L H Q T = 6 * 110 + 12 * 2 * 3 * 4 * T = 660 + 288 T
    captions = 5 * 29 * (660 + 288 * 29)  # 5 captions of 28 tokens + 1 image-prefix position: 1,306,740
    text = 5 * 16 * (660 + 288 * 16)  # 5 text blocks of 16: 421,440
    batch = bench.mean_shape_batch(5, 27.6, 5, 16)
    out = bench.step_demand(TinyGit(), task(), batch)
    assert (out["n_params"], out["n_layer"], out["n_head"], out["head_dim"]) == (110, 2, 3, 4)
    assert [(q["rows"], q["seq_len"]) for q in out["passes"]] == [(5, 29), (5, 16)]
    assert out["flops_per_step"] == pytest.approx(captions + text) == 1_728_180
    # a contrastive term on adds the no-image pass over half the layers: 5 x 28 tokens x 0.5
    embedding = 0.5 * 5 * 28 * (660 + 288 * 28)  # 610,680
    out = bench.step_demand(TinyGit(), task(clip_weight=1.0), batch)
    assert out["flops_per_step"] == pytest.approx(captions + embedding + text) == 2_338_860


def test_demand_pairs_per_s(bench):
    # 0.4 * 1e15 FLOP/s over 2e12 FLOPs per step of 100 pairs: 200 steps/s, 20,000 pairs/s
    assert bench.demand_pairs_per_s(2e12, 100, 1e15, 0.4) == pytest.approx(20_000)


def test_breakdown_leaves_the_rest_to_the_loader(bench):
    clock = {"caption_sampler": 0.1, "cut_captions": 0.2, "feature_rows": 0.3, "caption_items": 1.0,
             "text_sampler": 0.05, "text_blocks": 0.25}
    bd = bench.breakdown(clock, batches=10, wall=2.0)
    assert bd["caption_rest"]["ms_per_batch"] == pytest.approx(50.0)  # 1.0 - 0.2 - 0.3 s over 10 batches
    assert bd["loader_overhead"]["ms_per_batch"] == pytest.approx(60.0)  # 2.0 - 1.4 s
    assert sum(v["share"] for v in bd.values()) == pytest.approx(1.0, abs=2e-3)
    assert set(bd) == set(bench.BREAKDOWN)


def test_instrument_times_cut_captions_and_puts_it_back(bench):
    original = babymm.data.cut_captions
    clock = {k: 0.0 for k in ("caption_sampler", "cut_captions", "feature_rows", "caption_items")}
    loader = SimpleNamespace(batch_sampler=SimpleNamespace(global_batch=lambda: [0]))
    features = torch.arange(12.0).reshape(4, 3).numpy()
    captions = SimpleNamespace(features=[features], __getitems__=lambda idx: None)
    restore = bench.instrument(loader, None, captions, None, clock)
    assert babymm.data.cut_captions is not original
    assert (captions.features[0][[1, 3]] == features[[1, 3]]).all() and captions.features[0].shape == (4, 3)
    restore()
    assert babymm.data.cut_captions is original

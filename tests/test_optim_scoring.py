"""The learning-rate schedule, parameter groups, and the continuation scorer."""

import math

import pytest
import torch

from babymm.optim import build_optimizer, lr_multiplier
from eval.scoring import continuation_logprobs


def test_lr_multiplier_warmup_then_cosine():
    assert lr_multiplier(0, 10, 100) == pytest.approx(0.1)
    assert lr_multiplier(9, 10, 100) == pytest.approx(1.0)
    assert lr_multiplier(10, 10, 100) == pytest.approx(1.0)
    assert lr_multiplier(55, 10, 100) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway: cos = 0
    assert lr_multiplier(100, 10, 100) == pytest.approx(0.1)
    assert lr_multiplier(50, 10, 100, "constant") == 1.0
    with pytest.raises(ValueError):
        lr_multiplier(50, 10, 100, "linear")


def test_weight_decay_only_on_matrices():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    model.register_parameter("scale", torch.nn.Parameter(torch.tensor(1.0)))
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.1)
    decay, no_decay = opt.param_groups
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 3])]
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert len(no_decay["params"]) == 4  # linear bias, norm weight and bias, scale


def test_continuation_logprobs_against_hand_computation():
    torch.manual_seed(0)
    vocab = 7
    table = torch.randn(vocab, vocab)  # a bigram "model": logits of next token given this one

    def logits_fn(ids, mask, rows):
        return table[ids]  # [B, T, V]

    requests = [([1], [2, 3]), ([4, 5, 6], [0]), ([2], [2, 2, 2, 2])]
    got = continuation_logprobs(logits_fn, requests, batch_size=2)
    for (ctx, cont), (ll, greedy) in zip(requests, got, strict=True):
        seq = ctx + cont
        expected = sum(torch.log_softmax(table[seq[i - 1]], -1)[seq[i]].item()
                       for i in range(len(ctx), len(seq)))
        assert ll == pytest.approx(expected, abs=1e-5)
        is_greedy = all(table[seq[i - 1]].argmax().item() == seq[i] for i in range(len(ctx), len(seq)))
        assert greedy == is_greedy
    assert not math.isnan(got[0][0])
    with pytest.raises(ValueError, match="request 0"):
        continuation_logprobs(logits_fn, [([], [1])])

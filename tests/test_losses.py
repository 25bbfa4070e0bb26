"""Losses against naive loop computations, and exactness under 2-process data parallelism."""

import math
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from babymm.losses import (
    ContrastiveLoss,
    LossWeights,
    alignment,
    clip_loss,
    cross_uniformity,
    uniformity,
)


def _pairs(n=6, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1),
            F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1))


def naive_ce(logits_row, target):
    return -(logits_row[target] - math.log(sum(math.exp(v) for v in logits_row)))


def test_clip_loss_matches_hand_computation():
    I, T = _pairs()
    scale = 10.0
    n = len(I)
    sims = [[scale * float(I[a] @ T[b]) for b in range(n)] for a in range(n)]
    i2t = sum(naive_ce(sims[a], a) for a in range(n)) / n
    t2i = sum(naive_ce([sims[b][a] for b in range(n)], a) for a in range(n)) / n
    expected = 0.5 * (i2t + t2i)
    got = 0.5 * (clip_loss(I, T, scale) + clip_loss(T, I, scale))
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_uniformity_alignment_xuniformity_match_loops():
    I, T = _pairs(n=7)
    n = len(I)
    pairs = [(j, k) for j in range(n) for k in range(j + 1, n)]
    u_i = math.log(sum(math.exp(-2 * float(((I[j] - I[k]) ** 2).sum())) for j, k in pairs) / len(pairs))
    assert uniformity(I).item() == pytest.approx(u_i, rel=1e-6)
    off = [(j, k) for j in range(n) for k in range(n) if j != k]
    xu = math.log(sum(math.exp(-2 * float(((I[j] - T[k]) ** 2).sum())) for j, k in off) / len(off))
    assert cross_uniformity(I, T).item() == pytest.approx(xu, rel=1e-6)
    al = sum(float(((I[j] - T[j]) ** 2).sum()) for j in range(n)) / n
    assert alignment(I, T).item() == pytest.approx(al, rel=1e-6)


def test_known_values():
    x = F.normalize(torch.randn(4, 3, dtype=torch.float64), dim=-1)
    assert alignment(x, x).item() == 0.0
    # all points equal: every pairwise distance is 0, so uniformity = log 1 = 0 (its maximum)
    same = x[:1].repeat(5, 1)
    assert uniformity(same).item() == pytest.approx(0.0, abs=1e-7)
    # antipodal pair: distance^2 = 4
    pole = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert uniformity(pole).item() == pytest.approx(-8.0)


def test_contrastive_loss_terms_and_plain_clip():
    I, T = _pairs()
    scale = torch.tensor(100.0, dtype=torch.float64)
    cua = ContrastiveLoss(LossWeights())(I, T, scale)
    assert set(cua) == {"clip_loss", "uniform_loss", "align_loss"}
    assert cua["uniform_loss"].item() == pytest.approx(0.5 * (uniformity(I) + uniformity(T)).item())
    clip = ContrastiveLoss(LossWeights(uniform=0, align=0))(I, T, scale)
    assert set(clip) == {"clip_loss"}
    assert clip["clip_loss"].item() == pytest.approx(cua["clip_loss"].item())
    xu = ContrastiveLoss(LossWeights(xuniform=0.5))(I, T, scale)
    # terms come back unweighted (each is logged on its own scale); the weights are named beside them
    assert xu["xuniform_loss"].item() == pytest.approx(cross_uniformity(I, T).item())
    assert ContrastiveLoss(LossWeights(xuniform=0.5)).term_weights() == {
        "clip_loss": 1.0, "uniform_loss": 1.0, "align_loss": 1.0, "xuniform_loss": 0.5}


def _worker(rank, world, init_file, I, T, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    n = len(I) // world
    i_local = I[rank * n:(rank + 1) * n].clone().requires_grad_(True)
    t_local = T[rank * n:(rank + 1) * n].clone().requires_grad_(True)
    losses = ContrastiveLoss(LossWeights(xuniform=1.0))(i_local, t_local, torch.tensor(10.0, dtype=I.dtype))
    total = sum(losses.values())
    total.backward()
    # DDP would average parameter gradients over ranks; do the same for the inputs' gradients
    gi, gt = i_local.grad.clone(), t_local.grad.clone()
    values = torch.stack([v.detach() for v in losses.values()])
    dist.all_reduce(values)
    grads_i = [torch.zeros_like(gi) for _ in range(world)]
    grads_t = [torch.zeros_like(gt) for _ in range(world)]
    dist.all_gather(grads_i, gi / world)
    dist.all_gather(grads_t, gt / world)
    if rank == 0:
        save_file({"values": values / world, "gi": torch.cat(grads_i), "gt": torch.cat(grads_t)}, out_file)
    dist.barrier()  # no rank tears gloo down while another is still in a collective
    dist.destroy_process_group()
    # skip interpreter teardown: gloo's threads have aborted a child there ("terminate called
    # without an active exception") after the results were written
    os._exit(0)


def test_gathered_loss_equals_single_process():
    """Two gloo processes with half the batch each give the single-process loss and gradients."""
    I, T = _pairs(n=8, d=4, seed=1)
    with tempfile.TemporaryDirectory() as d:
        init, out = os.path.join(d, "init"), os.path.join(d, "out.safetensors")
        mp.spawn(_worker, args=(2, init, I, T, out), nprocs=2, join=True)
        got = load_file(out)
    i_full, t_full = I.clone().requires_grad_(True), T.clone().requires_grad_(True)
    ref = ContrastiveLoss(LossWeights(xuniform=1.0))(i_full, t_full, torch.tensor(10.0, dtype=I.dtype))
    sum(ref.values()).backward()
    # clip and alignment are means of per-row terms; uniformity terms are identical on each rank
    assert torch.allclose(got["values"], torch.stack([v.detach() for v in ref.values()]), atol=1e-10)
    assert torch.allclose(got["gi"], i_full.grad, atol=1e-10)
    assert torch.allclose(got["gt"], t_full.grad, atol=1e-10)


def test_lm_loss_normalised_by_global_count_is_the_global_token_mean():
    """Two 'ranks' with unequal real tokens: the mean over ranks of each rank's token sum over
    (global count / ranks) is the whole batch's token mean, by hand; a mean of per-rank means is not."""
    from babymm.models.base import lm_loss

    g = torch.Generator().manual_seed(0)
    V = 7
    logits = torch.randn(4, 5, V, generator=g, requires_grad=True)  # lm_loss computes in fp32
    ids = torch.randint(0, V, (4, 5), generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    # by hand: -log softmax at every real next-token target, averaged over all of them (4 + 1 + 2 + 3 = 10)
    logp = torch.log_softmax(logits.detach(), dim=-1)
    nll = [-logp[b, t, ids[b, t + 1]].item() for b in range(4) for t in range(4) if mask[b, t + 1]]
    assert len(nll) == 10
    want = sum(nll) / 10
    halves = [slice(0, 1), slice(1, 4)]  # rank 0: 4 targets, rank 1: 6
    per_rank = [lm_loss(logits[h], ids[h], mask[h], num_items=10 / 2) for h in halves]
    assert (sum(per_rank) / 2).item() == pytest.approx(want, rel=1e-6)
    mean_of_means = sum(lm_loss(logits[h], ids[h], mask[h]) for h in halves) / 2
    assert abs(mean_of_means.item() - want) > 1e-4  # what DDP averaged before: a different number
    assert lm_loss(logits, ids, mask).item() == pytest.approx(want, rel=1e-6)  # one process: the token mean
    # and the gradient DDP averages is the global mean's gradient
    (sum(per_rank) / 2).backward()
    g_ranks = logits.grad.clone()
    logits.grad = None
    lm_loss(logits, ids, mask).backward()
    assert torch.allclose(g_ranks, logits.grad, rtol=1e-5, atol=1e-8)

"""The objectives beyond CUA (SigLIP, label smoothing, multi-view, nearest-neighbour, SimSiam)
against hand loops, and the gathered ones against one process on the global batch."""

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
    TextQueue,
    clip_loss,
    nearest_neighbours,
    siglip_loss,
    simsiam_loss,
)


def _unit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)


def _log_sigmoid(x):
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def test_siglip_matches_loop_over_pairs():
    I, T = _unit(5, 4, 0), _unit(5, 4, 1)
    t, b = 10.0, -10.0
    total = 0.0
    for i in range(5):
        for j in range(5):
            z = 1.0 if i == j else -1.0
            total += -_log_sigmoid(z * (t * float(I[i] @ T[j]) + b))
    assert siglip_loss(I, T, t, b).item() == pytest.approx(total / 5, rel=1e-12)
    # normalised per image row, as the paper and open_clip: N times the mean over all N^2 pairs
    assert siglip_loss(I, T, t, b).item() == pytest.approx(5 * total / 25, rel=1e-12)


def test_siglip_known_value():
    # one matching pair at cosine 1 and one non-matching at cosine 0, t = 1, b = 0:
    # -(log sigmoid(1) + log sigmoid(-0)) over 1 row... two rows: by hand
    I = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    T = I.clone()
    # row 0: match cos 1 -> -log sig(1); non-match cos 0 -> -log sig(0) = log 2; same for row 1
    want = 2 * (math.log1p(math.exp(-1.0)) + math.log(2.0)) / 2
    assert siglip_loss(I, T, 1.0, 0.0).item() == pytest.approx(want, rel=1e-12)


def test_label_smoothing_matches_hand_formula():
    I, T = _unit(4, 3, 2), _unit(4, 3, 3)
    scale, eps = 7.0, 0.1
    want = 0.0
    for r in range(4):
        logits = [scale * float(I[r] @ T[c]) for c in range(4)]
        lse = math.log(sum(math.exp(v) for v in logits))
        logp = [v - lse for v in logits]
        # target: (1 - eps) on the positive, eps / M spread over every column (F.cross_entropy's definition)
        want += -((1 - eps) * logp[r] + eps / 4 * sum(logp))
    assert clip_loss(I, T, scale, label_smoothing=eps).item() == pytest.approx(want / 4, rel=1e-12)
    assert clip_loss(I, T, scale, label_smoothing=eps).item() != pytest.approx(clip_loss(I, T, scale).item())


def test_multi_view_clip_is_the_mean_over_view_pairs():
    I1, I2, T1, T2 = _unit(4, 3, 4), _unit(4, 3, 5), _unit(4, 3, 6), _unit(4, 3, 7)
    s = torch.tensor(5.0, dtype=torch.float64)
    terms = ContrastiveLoss(LossWeights(uniform=0, align=0))([I1, I2], [T1, T2], s)

    def sym(i, t):
        return 0.5 * (clip_loss(i, t, s) + clip_loss(t, i, s)).item()

    want = (sym(I1, T1) + sym(I1, T2) + sym(I2, T1) + sym(I2, T2)) / 4
    assert terms["clip_loss"].item() == pytest.approx(want, rel=1e-12)
    # the gap terms read the primary pair only
    cua = ContrastiveLoss(LossWeights())([I1, I2], [T1, T2], s)
    assert cua["align_loss"].item() == pytest.approx(((I1 - T1) ** 2).sum(1).mean().item(), rel=1e-6)  # alignment is fp32


def test_nearest_neighbours_by_hand():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    q = F.normalize(torch.tensor([[0.9, 0.1], [0.1, 0.9], [-0.8, 0.3]]), dim=-1)
    assert torch.equal(nearest_neighbours(q, bank), bank[[0, 1, 2]])


def test_text_queue_is_fifo_and_starts_with_the_query_itself():
    q = TextQueue(3)
    x = _unit(2, 2, 8)
    assert torch.equal(q.neighbours(x), x)  # empty: each caption's own embedding
    q.push(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    q.push(torch.tensor([[-1.0, 0.0], [0.0, -1.0]]))  # 4 rows into 3 slots: the first is overwritten
    assert int(q.filled) == 3 and int(q.pointer) == 1
    assert torch.equal(q.features, torch.tensor([[0.0, -1.0], [0.0, 1.0], [-1.0, 0.0]]))
    state = q.state_dict()
    fresh = TextQueue(3)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.features, q.features) and int(fresh.filled) == 3


def test_nn_loss_by_hand():
    I, T = _unit(3, 2, 9), _unit(3, 2, 10)
    s = torch.tensor(4.0, dtype=torch.float64)
    loss = ContrastiveLoss(LossWeights(clip=0, uniform=0, align=0, nn=1.0, queue_size=8))
    first = loss(I, T, s)["nn_loss"]  # empty queue: the image against the captions themselves, one direction
    assert first.item() == pytest.approx(clip_loss(I, T, s).item(), rel=1e-12)
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
    loss.queue.features[:3] = T  # what the first call queued, kept ...
    loss.queue.features[3:7] = bank  # ... and four more texts
    loss.queue.filled.fill_(7)
    nn = [max(range(7), key=lambda k: float(T[j] @ loss.queue.features[k])) for j in range(3)]
    positives = loss.queue.features[nn].clone()
    got = loss(I, T, s)["nn_loss"]
    want = sum(-math.log(math.exp(4 * float(I[j] @ positives[j]))
                         / sum(math.exp(4 * float(I[j] @ positives[c])) for c in range(3))) for j in range(3)) / 3
    assert got.item() == pytest.approx(want, rel=1e-10)


def test_simsiam_by_hand_and_stop_gradient():
    g = torch.Generator().manual_seed(11)
    p1, p2, z1, z2 = (torch.randn(4, 6, generator=g, requires_grad=True) for _ in range(4))
    cos = F.cosine_similarity
    want = 0.5 * (-cos(p1, z2, dim=-1).mean() - cos(p2, z1, dim=-1).mean())
    got = simsiam_loss(p1, p2, z1, z2)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    got.backward()
    assert z1.grad is None and z2.grad is None  # the projections get no gradient from this term
    assert p1.grad is not None and p1.grad.abs().sum() > 0
    # identical prediction and target: the minimum, -1
    x = torch.randn(3, 5, generator=g)
    assert simsiam_loss(x, x, x, x).item() == pytest.approx(-1.0, abs=1e-6)


WEIGHTS = LossWeights(clip=1.0, uniform=1.0, align=1.0, siglip=1.0, nn=1.0, label_smoothing=0.1, queue_size=64)


def _run(images, texts, queue_rows=None, rank=0, world=1):
    """Two calls of the full loss (the second sees the first's queue); values and input gradients."""
    n = len(images[0]) // world
    local = [[x[rank * n:(rank + 1) * n].clone().requires_grad_(True) for x in views] for views in (images, texts)]
    loss = ContrastiveLoss(WEIGHTS)
    s, b = torch.tensor(10.0, dtype=torch.float64), torch.tensor(-5.0, dtype=torch.float64)
    loss(local[0], local[1], s, b)  # fills the queue with the global batch
    terms = loss(local[0], local[1], s, b)
    sum(terms.values()).backward()
    return terms, [x.grad for x in local[0] + local[1]]


def _worker(rank, world, init_file, images, texts, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    terms, grads = _run(images, texts, rank=rank, world=world)
    values = torch.stack([v.detach() for v in terms.values()])
    dist.all_reduce(values)
    gathered = []
    for g in grads:  # DDP averages parameter gradients over ranks: the same for the inputs'
        parts = [torch.zeros_like(g) for _ in range(world)]
        dist.all_gather(parts, g / world)
        gathered.append(torch.cat(parts))
    if rank == 0:
        save_file({"values": values / world, **{f"g{i}": g for i, g in enumerate(gathered)}}, out_file)
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)


def test_gathered_objectives_equal_single_process():
    """SigLIP, label-smoothed multi-view CLIP, and nearest-neighbour supervision (with a queue
    filled by a first step) over two gloo processes give one process's values and gradients."""
    images, texts = [_unit(8, 4, 20), _unit(8, 4, 21)], [_unit(8, 4, 22), _unit(8, 4, 23)]
    with tempfile.TemporaryDirectory() as d:
        init, out = os.path.join(d, "init"), os.path.join(d, "out.safetensors")
        mp.spawn(_worker, args=(2, init, images, texts, out), nprocs=2, join=True)
        got = load_file(out)
    terms, grads = _run(images, texts)
    assert set(terms) == {"clip_loss", "siglip_loss", "nn_loss", "uniform_loss", "align_loss"}
    assert torch.allclose(got["values"], torch.stack([v.detach() for v in terms.values()]), atol=1e-10)
    for i, g in enumerate(grads):
        assert torch.allclose(got[f"g{i}"], g, atol=1e-10), i

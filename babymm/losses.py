"""Contrastive losses: CLIP, SigLIP, the gap-closing terms, and DeCLIP's data-efficient terms.

Pure functions on L2-normalised embeddings, plus `ContrastiveLoss`, which gathers features
across processes (with gradient) and returns a dict of named, unweighted terms like open_clip's
losses: the total is the weighted sum of the entries, so a new term is one more key, logged for free.

Definitions (Fahim, Murphy, Fyshe 2024; Wang and Isola 2020; Zhai et al. 2023; Li et al. 2022),
for a batch of N pairs:
  L_CLIP     = 0.5 CE(image->text) + 0.5 CE(text->image) over scale * I T^T (optionally label-smoothed)
  L_SigLIP   = -1/N sum_i sum_j log sigmoid(z_ij (t I_i.T_j + b)), z_ij = 1 if i = j else -1
  U(X)       = log mean_{j<k} exp(-2 ||x_j - x_k||^2)
  L_Uniform  = 0.5 (U(I) + U(T))                       (within each modality)
  L_XUniform = log mean_{j!=k} exp(-2 ||I_j - T_k||^2) (non-matching image-text pairs)
  L_Align    = mean_j ||I_j - T_j||^2
  L_CUA      = L_CLIP + L_Uniform + L_Align
  L_MVS      = L_CLIP (or L_SigLIP) averaged over every (image view, caption view) pair
  L_NNS      = CE(image->NN(T)) over scale * I NN(T)^T, NN(T_j) = the queue's nearest text to T_j
  L_SimSiam  = 0.5 D(p_1, sg(z_2)) + 0.5 D(p_2, sg(z_1)), D = -cosine
SigLIP is normalised as its paper and open_clip normalise it (sum over the texts, mean over the
images), which is N times the mean over all N^2 pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F


def clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor | float,
              labels: torch.Tensor | None = None, label_smoothing: float = 0.0) -> torch.Tensor:
    """One direction of InfoNCE: rows `image` [n, D] (local) against columns `text` [M, D] (all, M >= n).

    `labels[j]` is the column of row j's positive; by default row j matches column j. With
    gathered features, pass the local image rows against the gathered text columns (and the
    gathered image columns against local text rows) with labels offset by rank.
    `label_smoothing` (Fini et al.'s recipe: 0.1) spreads that share of each row's target over
    all M columns, as `F.cross_entropy` does: the same as one process on the global batch.
    """
    if labels is None:
        labels = torch.arange(image.shape[0], device=image.device)
    logits = logit_scale * image @ text.T  # [n, M]
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def siglip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor | float,
                logit_bias: torch.Tensor | float, labels: torch.Tensor | None = None) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss of local image rows [n, D] against all text columns [M, D]:
    -1/n sum_rows sum_columns log sigmoid(z (scale I.T + bias)), z = +1 at (j, labels[j]), else -1.

    Every image-text pair is one binary problem, so there is no softmax over the batch: the
    rows of different processes add up, and the mean over processes of their local values is
    the global batch's loss (each pair counted once, normalised by the global row count)."""
    n = image.shape[0]
    if labels is None:
        labels = torch.arange(n, device=image.device)
    logits = logit_scale * image @ text.T + logit_bias  # [n, M]
    signs = torch.full_like(logits, -1.0)
    signs[torch.arange(n, device=image.device), labels] = 1.0
    return -F.logsigmoid(signs * logits).sum() / n


def nearest_neighbours(queries: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """Each query's nearest row of `bank` [Q, D] by cosine (rows L2-normalised), no gradient."""
    with torch.no_grad():
        return bank[(queries @ bank.T).argmax(dim=1)]


def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """SimSiam's symmetric negative cosine: each view's prediction p against the other view's
    projection z with the gradient stopped (what keeps the two branches from collapsing)."""
    def d(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return -F.cosine_similarity(p.float(), z.detach().float(), dim=-1).mean()

    return 0.5 * (d(p1, z2) + d(p2, z1))


def _log_mean_exp(x: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(x, dim=0) - math.log(x.numel())


def uniformity(x: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """log mean_{j<k} exp(-t ||x_j - x_k||^2) over distinct pairs; fp32 for stability."""
    x = x.float()
    sq = torch.pdist(x, p=2).pow(2)  # [N(N-1)/2], pairs j<k
    return _log_mean_exp(-t * sq)


def cross_uniformity(image: torch.Tensor, text: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """log mean_{j!=k} exp(-t ||I_j - T_k||^2): uniformity over non-matching pairs."""
    d2 = torch.cdist(image.float(), text.float()).pow(2)  # [N, N]
    off = ~torch.eye(d2.shape[0], dtype=torch.bool, device=d2.device)
    return _log_mean_exp(-t * d2[off])


def alignment(image: torch.Tensor, text: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """mean_j ||I_j - T_j||^alpha."""
    return (image.float() - text.float()).norm(dim=-1).pow(alpha).mean()


@dataclass
class LossWeights:
    clip: float = 1.0
    uniform: float = 1.0
    align: float = 1.0
    xuniform: float = 0.0
    siglip: float = 0.0
    nn: float = 0.0  # DeCLIP's nearest-neighbour supervision
    label_smoothing: float = 0.0  # of the CLIP and nearest-neighbour cross-entropies
    queue_size: int = 65536  # text embeddings the nearest neighbours are drawn from


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather along dim 0 keeping the autograd graph (plain all_gather has none). torch 2.13
    marks this public function deprecated in favour of a private module's; it warns once per
    call, every step, so the warning is silenced here (tests pin the values and gradients)."""
    import warnings

    import torch.distributed.nn.functional as dist_nn

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "torch.distributed.nn.functional.all_gather is deprecated",
                                FutureWarning)
        return torch.cat(dist_nn.all_gather(x), dim=0)


def _gather(x: torch.Tensor) -> torch.Tensor:
    return _gather_with_grad(x) if _distributed() else x


class TextQueue(torch.nn.Module):
    """DeCLIP's FIFO queue of text embeddings, the same on every process: each step appends the
    gathered global batch (detached), oldest first out. `filled` rows are real; nearest
    neighbours are searched among them only (DeCLIP starts from random vectors instead; here an
    empty queue gives each caption its own embedding, so step 1's term is image->own-text).
    A buffer, so `state_dict` carries it into checkpoints and a resumed run has the same queue."""

    def __init__(self, size: int):
        super().__init__()
        if size < 1:
            raise ValueError(f"queue size {size} must be positive")
        self.size = size
        self.register_buffer("features", torch.zeros(0), persistent=True)
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    def neighbours(self, queries: torch.Tensor) -> torch.Tensor:
        """Each query's nearest queued text; the query itself while the queue is empty."""
        filled = int(self.filled)
        return queries.detach() if filled == 0 else nearest_neighbours(queries.detach(), self.features[:filled])

    @torch.no_grad()
    def push(self, texts: torch.Tensor) -> None:
        """Append `texts` [M, D] (the global batch), overwriting the oldest rows when full."""
        if self.features.numel() == 0:
            self.features = torch.zeros(self.size, texts.shape[1], dtype=texts.dtype, device=texts.device)
        texts = texts.detach().to(self.features.dtype)[-self.size:]
        rows = (int(self.pointer) + torch.arange(len(texts), device=texts.device)) % self.size
        self.features[rows] = texts
        self.pointer.fill_((int(self.pointer) + len(texts)) % self.size)
        self.filled.fill_(min(int(self.filled) + len(texts), self.size))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        key = prefix + "features"
        if key in state_dict:  # the saved queue's shape, not the empty placeholder's
            self.features = torch.empty_like(state_dict[key], device=self.features.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class ContrastiveLoss(torch.nn.Module):
    """The contrastive terms, exact under data parallelism. Terms come back unweighted, so each is
    logged on its own scale; `term_weights` gives the weights the total applies.

    Features are gathered with gradient; CLIP and SigLIP use the local rows against all columns
    (open_clip's "local loss"), with labels offset by rank. Uniformity terms are computed over the
    gathered batch so the value matches a single-process run on the same global batch; alignment
    is per pair and so is local. Under DDP the per-rank losses are averaged by the gradient
    all-reduce, which yields the global loss's gradient.

    With several views (DeCLIP's multi-view supervision) `images` and `texts` list them, first
    the primary pair (the image the caption is conditioned on, the caption itself): CLIP and
    SigLIP are averaged over every (image view, caption view) pair, nearest-neighbour supervision
    over the image views; the gap terms, which measure one embedding space, use the primary pair.
    """

    def __init__(self, weights: LossWeights):
        super().__init__()
        self.weights = weights
        self.queue = TextQueue(weights.queue_size) if weights.nn else None

    def forward(self, image: torch.Tensor | list[torch.Tensor], text: torch.Tensor | list[torch.Tensor],
                logit_scale: torch.Tensor, logit_bias: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """image, text: [n, D] L2-normalised local embeddings, or a list of views of each (the
        primary first). Returns the UNWEIGHTED terms whose weight is not 0 (a term weighted 0 is
        not computed); `term_weights` gives the weights."""
        w = self.weights
        images = image if isinstance(image, list) else [image]
        texts = text if isinstance(text, list) else [text]
        n = images[0].shape[0]
        rank = dist.get_rank() if _distributed() else 0
        labels = torch.arange(n, device=images[0].device) + n * rank
        all_images, all_texts = [_gather(x) for x in images], [_gather(x) for x in texts]
        view_pairs = [(a, b) for a in range(len(images)) for b in range(len(texts))]
        out: dict[str, torch.Tensor] = {}
        if w.clip:
            out["clip_loss"] = sum(
                0.5 * (clip_loss(images[a], all_texts[b], logit_scale, labels, w.label_smoothing)
                       + clip_loss(texts[b], all_images[a], logit_scale, labels, w.label_smoothing))
                for a, b in view_pairs) / len(view_pairs)
        if w.siglip:
            if logit_bias is None:
                raise ValueError("the SigLIP term needs the model's logit bias (--logit_bias)")
            out["siglip_loss"] = sum(siglip_loss(images[a], all_texts[b], logit_scale, logit_bias, labels)
                                     for a, b in view_pairs) / len(view_pairs)
        if w.nn:
            # each caption's nearest queued text (no gradient) is its image's extra positive,
            # contrasted with the other images' neighbours; then the global batch joins the queue
            neighbours = _gather(self.queue.neighbours(texts[0]))
            out["nn_loss"] = sum(clip_loss(x, neighbours, logit_scale, labels, w.label_smoothing)
                                 for x in images) / len(images)
            self.queue.push(all_texts[0])
        if w.uniform:
            out["uniform_loss"] = 0.5 * (uniformity(all_images[0]) + uniformity(all_texts[0]))
        if w.xuniform:
            out["xuniform_loss"] = cross_uniformity(all_images[0], all_texts[0])
        if w.align:
            out["align_loss"] = alignment(images[0], texts[0])
        return out

    def term_weights(self) -> dict[str, float]:
        """The weight of each term `forward` returns, by its name."""
        w = self.weights
        named = {"clip_loss": w.clip, "siglip_loss": w.siglip, "nn_loss": w.nn, "uniform_loss": w.uniform,
                 "xuniform_loss": w.xuniform, "align_loss": w.align}
        return {k: v for k, v in named.items() if v}

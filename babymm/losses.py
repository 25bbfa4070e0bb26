"""Contrastive losses: CLIP, and the gap-closing terms (uniformity, alignment).

Pure functions on L2-normalised embeddings, plus `ContrastiveLoss`, which gathers features
across processes (with gradient) and returns a dict of named, unweighted terms like open_clip's
losses: the total is the weighted sum of the entries, so a new term is one more key, logged for free.

Definitions (Fahim, Murphy, Fyshe 2024; Wang and Isola 2020), for a batch of N pairs:
  L_CLIP     = 0.5 CE(image->text) + 0.5 CE(text->image) over scale * I T^T
  U(X)       = log mean_{j<k} exp(-2 ||x_j - x_k||^2)
  L_Uniform  = 0.5 (U(I) + U(T))                       (within each modality)
  L_XUniform = log mean_{j!=k} exp(-2 ||I_j - T_k||^2) (non-matching image-text pairs)
  L_Align    = mean_j ||I_j - T_j||^2
  L_CUA      = L_CLIP + L_Uniform + L_Align
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F


def clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor | float,
              labels: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE. image [n, D] local rows; text [M, D] all columns (M >= n).

    `labels[j]` is the column of row j's positive; by default row j matches column j. With
    gathered features, pass the local image rows against the gathered text columns (and the
    gathered image columns against local text rows) with labels offset by rank.
    """
    if labels is None:
        labels = torch.arange(image.shape[0], device=image.device)
    logits = logit_scale * image @ text.T  # [n, M]
    return F.cross_entropy(logits, labels)


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


def _gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather along dim 0 keeping the autograd graph (plain all_gather has none)."""
    import torch.distributed.nn.functional as dist_nn

    return torch.cat(dist_nn.all_gather(x), dim=0)


class ContrastiveLoss(torch.nn.Module):
    """CLIP loss plus optional uniformity / alignment terms, exact under data parallelism.
    Terms come back unweighted, so each is logged on its own scale; `term_weights` gives the
    weights the total applies.

    Features are gathered with gradient; the CLIP loss uses the local rows against all
    columns (open_clip's "local loss"), and the labels are offset by rank. Uniformity terms
    are computed over the gathered batch so the value matches a single-process run on the
    same global batch; alignment is per pair and so is local. Under DDP the per-rank losses
    are averaged by the gradient all-reduce, which yields the global loss's gradient.
    """

    def __init__(self, weights: LossWeights):
        super().__init__()
        self.weights = weights

    def forward(self, image: torch.Tensor, text: torch.Tensor,
                logit_scale: torch.Tensor) -> dict[str, torch.Tensor]:
        """image, text: [n, D] L2-normalised local embeddings. Returns the UNWEIGHTED terms whose
        weight is not 0 (a term weighted 0 is not computed); `term_weights` gives the weights."""
        w = self.weights
        n = image.shape[0]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            rank = dist.get_rank()
            all_image, all_text = _gather_with_grad(image), _gather_with_grad(text)
        else:
            rank, all_image, all_text = 0, image, text
        labels = torch.arange(n, device=image.device) + n * rank
        out: dict[str, torch.Tensor] = {}
        if w.clip:
            out["clip_loss"] = 0.5 * (clip_loss(image, all_text, logit_scale, labels)
                                      + clip_loss(text, all_image, logit_scale, labels))
        if w.uniform:
            out["uniform_loss"] = 0.5 * (uniformity(all_image) + uniformity(all_text))
        if w.xuniform:
            out["xuniform_loss"] = cross_uniformity(all_image, all_text)
        if w.align:
            out["align_loss"] = alignment(image, text)
        return out

    def term_weights(self) -> dict[str, float]:
        """The weight of each term `forward` returns, by its name."""
        w = self.weights
        named = {"clip_loss": w.clip, "uniform_loss": w.uniform, "xuniform_loss": w.xuniform, "align_loss": w.align}
        return {k: v for k, v in named.items() if v}

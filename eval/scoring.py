"""Continuation log-likelihoods, the one scoring primitive behind every zero-shot task.

BLiMP, EWoK, Winoground and VQA all reduce to: sum of log P(continuation tokens | context
tokens [, image]). The model is reached through `logits_fn`, so the same code scores a plain
causal LM (through lm-eval's adapter) and the multimodal model (with an image prefix).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

# logits_fn(input_ids [B, T], attention_mask [B, T], rows) -> logits [B, T, V] over the text
# positions; `rows` are the request indices in the batch, so a multimodal caller can pick images.
LogitsFn = Callable[[torch.Tensor, torch.Tensor, list[int]], torch.Tensor]


@torch.no_grad()
def continuation_logprobs(
    logits_fn: LogitsFn,
    requests: Sequence[tuple[Sequence[int], Sequence[int]]],
    batch_size: int = 32,
    pad_id: int = 0,
    device: torch.device | str = "cpu",
) -> list[tuple[float, bool]]:
    """Sum log P(continuation | context) for each (context_ids, continuation_ids) request.

    Returns (log-likelihood, is_greedy) per request, in the input order. The context must hold
    at least one token (pass BOS for an unconditional score). Requests are run longest first
    so that padding is small and an out-of-memory error shows up on the first batch.
    """
    for i, (ctx, cont) in enumerate(requests):
        if len(ctx) == 0 or len(cont) == 0:
            raise ValueError(f"request {i}: context and continuation must each hold a token")
    order = sorted(range(len(requests)), key=lambda i: -(len(requests[i][0]) + len(requests[i][1])))
    out: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        seqs = [list(requests[i][0]) + list(requests[i][1]) for i in rows]
        # the last token is never an input: it is only predicted
        inputs = [s[:-1] for s in seqs]
        width = max(len(s) for s in inputs)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, s in enumerate(inputs):
            ids[b, : len(s)] = torch.tensor(s)
            mask[b, : len(s)] = 1
        logits = logits_fn(ids.to(device), mask.to(device), rows)  # [B, T, V]
        logp = F.log_softmax(logits.float(), dim=-1)
        for b, i in enumerate(rows):
            ctx, cont = requests[i]
            n_ctx, n_cont = len(ctx), len(cont)
            # position p predicts token p + 1: continuation tokens are predicted at n_ctx-1 ...
            pos = torch.arange(n_ctx - 1, n_ctx - 1 + n_cont, device=logp.device)
            target = torch.tensor(list(cont), device=logp.device)
            token_logp = logp[b, pos]  # [n_cont, V]
            ll = token_logp.gather(-1, target[:, None]).sum().item()
            greedy = bool((token_logp.argmax(-1) == target).all().item())
            out[i] = (ll, greedy)
    return out

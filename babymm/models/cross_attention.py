"""Cross-attention from the decoder's text positions to image tokens, inserted around the
layers of an unmodified `LlamaForCausalLM`.

The blocks are not spliced into the decoder: they are registered as forward pre-hooks on
chosen decoder layers and act only inside `attending(context)`. Outside it (text batches,
text benchmarks, the saved decoder) the decoder runs exactly as a plain causal LM, and the
saved decoder weights keep Llama's names.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import torch
from torch import nn


class FeedForward(nn.Sequential):
    def __init__(self, width: int, mult: int = 4):
        super().__init__(nn.LayerNorm(width), nn.Linear(width, mult * width), nn.GELU(), nn.Linear(mult * width, width))


class CrossAttentionBlock(nn.Module):
    """x + g_a * attn(LN x, context) then + g_f * FF(x). Gated (Flamingo): g = tanh(alpha) with
    alpha initialised at 0, so a new block starts as the identity. Ungated (CoCa): g = 1."""

    def __init__(self, width: int, heads: int, context_width: int, gated: bool):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, kdim=context_width, vdim=context_width, batch_first=True)
        self.ff = FeedForward(width)
        self.gated = gated
        if gated:
            self.attn_gate = nn.Parameter(torch.zeros(()))
            self.ff_gate = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x [B, T, H] text states; context [B, L, C] this row's own image tokens."""
        context = context.to(x.dtype)
        attended, _ = self.attn(self.norm(x), context, context, need_weights=False)
        ga, gf = (self.attn_gate.tanh(), self.ff_gate.tanh()) if self.gated else (1.0, 1.0)
        x = x + ga * attended
        return x + gf * self.ff(x)


class CrossAttentionHooks:
    """Runs `blocks[str(i)]` on the hidden states entering decoder layer i while a context is set.

    `on_enter(i, hidden)`, if given, sees the states entering each hooked layer before its block
    (CoCa reads its unimodal text embedding there).
    """

    def __init__(self, decoder: nn.Module, blocks: nn.ModuleDict,
                 on_enter: Callable[[int, torch.Tensor], None] | None = None):
        self.blocks, self.on_enter = blocks, on_enter
        self.context: torch.Tensor | None = None
        layers = decoder.get_decoder().layers
        for key in blocks:
            # a partial of a bound method, not a closure: `copy.deepcopy(model)` then gives hooks
            # that act on the copy's blocks and context
            layers[int(key)].register_forward_pre_hook(functools.partial(self._run, int(key)), with_kwargs=True)

    def _run(self, index: int, module: nn.Module, args: tuple, kwargs: dict):
        if self.context is None:
            return None  # no image: the plain decoder layer
        hidden = args[0] if args else kwargs["hidden_states"]
        if self.on_enter is not None:
            self.on_enter(index, hidden)
        hidden = self.blocks[str(index)](hidden, self.context)
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    @contextlib.contextmanager
    def attending(self, context: torch.Tensor) -> Iterator[None]:
        self.context = context
        try:
            yield
        finally:
            self.context = None

"""How fast a step is, against what the hardware could do: model FLOPs and utilisation (MFU).

FLOPs are counted as nanoGPT's `estimate_mfu` (after the PaLM paper's appendix B): each token
a decoder pass reads costs 6N FLOPs for the forward and backward of N parameters, plus
12 x layers x heads x head_dim x T for attention over a sequence of T positions. N is every
trained parameter of the model, as nanoGPT counts it. A pass that runs only part of the
decoder (Flamingo's no-image text-embedding pass, which reuses the layers below its first
cross-attention block from the captioning pass) counts only that part, so work saved is not
counted as work done. MFU is achieved FLOPs per second over the device's peak, and the peak
is measured (a large matmul in the training dtype), not taken from a data sheet: REFERENCE's
anchors (MPT-125M 44.8%, llm.c's GPT-2 124M ~55%) are against what the chip really gives.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class DecoderPass:
    """One pass of `rows` sequences of `seq_len` positions through `layer_fraction` of the decoder."""

    rows: int
    seq_len: int
    layer_fraction: float = 1.0

    @property
    def tokens(self) -> int:
        return self.rows * self.seq_len


@dataclass(frozen=True)
class DecoderShape:
    """What the FLOP count needs of a model: trained parameters and the decoder's attention shape."""

    num_params: int
    num_layers: int
    num_heads: int
    head_dim: int


def flops_per_token(shape: DecoderShape, seq_len: int) -> float:
    """nanoGPT's `estimate_mfu` count for one token of a sequence of `seq_len`: 6N + 12 L H Q T."""
    return 6.0 * shape.num_params + 12.0 * shape.num_layers * shape.num_heads * shape.head_dim * seq_len


def step_flops(shape: DecoderShape, passes: list[DecoderPass]) -> float:
    """Model FLOPs (forward and backward) of a training step made of `passes`."""
    return sum(p.tokens * p.layer_fraction * flops_per_token(shape, p.seq_len) for p in passes)


def decoder_shape(model: nn.Module) -> DecoderShape | None:
    """The shape of a babymm model (`.decoder`) or of a bare transformers decoder (stage 1);
    None for a module that is neither (nothing to count FLOPs by)."""
    config = getattr(getattr(model, "decoder", model), "config", None)
    if not all(hasattr(config, k) for k in ("num_hidden_layers", "num_attention_heads", "hidden_size")):
        return None
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return DecoderShape(params, config.num_hidden_layers, config.num_attention_heads,
                        config.hidden_size // config.num_attention_heads)


def measure_matmul_peak(device: torch.device | str, dtype: torch.dtype = torch.float32,
                        size: int | None = None, seconds: float = 0.5) -> float:
    """FLOP/s of a square matmul in `dtype` on `device`, the best of repeated timings: the
    denominator of MFU. 8192 on a GPU (large enough to saturate an H100's tensor cores), 1024
    on a CPU; a fraction of a second either way."""
    device = torch.device(device)
    n = size or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(2):  # warm-up: kernel selection, caches
        a @ b
    sync()
    best, spent = float("inf"), 0.0
    while spent < seconds:
        start = time.perf_counter()
        a @ b
        sync()
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
    return 2.0 * n**3 / best


@dataclass
class Throughput:
    """Tokens and model FLOPs of the steps since the last `read`, and the seconds they took."""

    peak_flops: float | None = None
    tokens: int = 0
    flops: float = 0.0
    seconds: float = 0.0

    def add(self, tokens: int, flops: float, seconds: float) -> None:
        self.tokens += tokens
        self.flops += flops
        self.seconds += seconds

    def read(self) -> dict[str, float]:
        """`tokens_per_s`; where FLOPs were counted, `tflops` achieved and, with a peak, `mfu`.
        Then starts afresh."""
        secs = max(self.seconds, 1e-12)
        out = {"tokens_per_s": round(self.tokens / secs, 1)}
        if self.flops:  # 4 significant digits: a tiny CPU model's TFLOP/s is far below 1e-4
            out["tflops"] = float(f"{self.flops / secs / 1e12:.4g}")
            if self.peak_flops:
                out["mfu"] = float(f"{self.flops / secs / self.peak_flops:.4g}")
        self.tokens, self.flops, self.seconds = 0, 0.0, 0.0
        return out


def compile_blocks(model: nn.Module, **compile_kwargs) -> list[str]:
    """torch.compile the model's repeated blocks in place, the regional compilation torch's
    recipes recommend: each decoder layer (one compiled graph serves them all), and the vision
    encoder, cross-attention blocks and resampler layers where the type has them. In place
    (`Module.compile`), so parameter names, checkpoints, exports and the hooks that insert
    cross-attention are untouched. Returns the names of the compiled modules."""
    decoder = model.decoder if hasattr(model, "decoder") else model
    blocks = [f"decoder layer {i}" for i, _ in enumerate(decoder.get_decoder().layers)]
    for layer in decoder.get_decoder().layers:
        layer.compile(**compile_kwargs)
    for name in ("vision", "cross_blocks", "resampler"):
        part = getattr(model, name, None)
        if part is None:
            continue
        children = list(part.values()) if isinstance(part, nn.ModuleDict) else [part]
        for child in children:
            child.compile(**compile_kwargs)
        blocks.append(name)
    return blocks

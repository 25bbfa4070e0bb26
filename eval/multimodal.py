"""Multimodal zero-shot tasks (Winoground, VQA) and embedding evals (gap metrics, retrieval).

Winoground and VQA are scored as the BabyLM pipeline does: log P(text | image) from the
captioning decoder. Each is also scored with the images shuffled among items, a control
that says how much of the score comes from looking at the image at all.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from babymm.data import tokenize_captions
from babymm.images import load_image
from babymm.models import MultimodalModel
from eval.gap_metrics import gap_report
from eval.scoring import continuation_logprobs


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    items = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: malformed JSON ({e.msg})") from e
    return items


def _images(model: MultimodalModel, paths: Sequence[Path]) -> torch.Tensor:
    size = model.config.vision.image_size
    return torch.from_numpy(np.stack([load_image(p, size) for p in paths]))  # [N, 3, S, S]


def image_conditioned_logprobs(model: MultimodalModel, images: torch.Tensor,
                               requests: Sequence[tuple[list[int], list[int]]], image_of: Sequence[int],
                               batch_size: int = 64) -> np.ndarray:
    """Sum log P(continuation | image, context) per request; request i uses images[image_of[i]]."""
    model.eval()
    dev = next(model.parameters()).device

    def logits_fn(ids: torch.Tensor, mask: torch.Tensor, rows: list[int]) -> torch.Tensor:
        tokens = model.vision(images[[image_of[r] for r in rows]].to(dev))
        return model.caption_logits(tokens, ids, mask)

    scores = continuation_logprobs(logits_fn, requests, batch_size=batch_size, device=dev)
    return np.array([s for s, _ in scores])


def _split_pair(tok: PreTrainedTokenizerBase, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's rule: encode the whole string, the continuation is what follows the context."""
    whole = tok(context + continuation, add_special_tokens=True)["input_ids"]
    ctx = tok(context, add_special_tokens=True)["input_ids"]
    return whole[: len(ctx)], whole[len(ctx):]


def _bos_request(tok: PreTrainedTokenizerBase, text: str) -> tuple[list[int], list[int]]:
    ids = tok(text, add_special_tokens=True)["input_ids"]  # [BOS, ...]
    return ids[:1], ids[1:]


def _derangement(n: int) -> list[int]:
    return [(i + 1) % n for i in range(n)] if n > 1 else [0]


def _accuracy(correct: np.ndarray, heldout: np.ndarray) -> dict[str, float]:
    out = {"acc": float(correct.mean()), "n": int(correct.size)}
    if heldout.any():
        out["acc_heldout_composition"] = float(correct[heldout].mean())
        out["n_heldout_composition"] = int(heldout.sum())
    return out


def winoground(model: MultimodalModel, tok: PreTrainedTokenizerBase, data_dir: Path,
               batch_size: int = 64) -> dict[str, float]:
    """2-way: is log P(caption_0 | image) > log P(caption_1 | image)?"""
    items = _read_jsonl(data_dir / "winoground.jsonl")
    images = _images(model, [data_dir / "images" / f"{it['image_key']}.png" for it in items])
    requests = [_bos_request(tok, it[k]) for it in items for k in ("caption_0", "caption_1")]
    heldout = np.array([bool(it.get("heldout_composition", False)) for it in items])
    result = {}
    for name, perm in (("", list(range(len(items)))), ("_shuffled_images", _derangement(len(items)))):
        image_of = [perm[i // 2] for i in range(len(requests))]
        s = image_conditioned_logprobs(model, images, requests, image_of, batch_size).reshape(-1, 2)
        acc = _accuracy(s[:, 0] > s[:, 1], heldout)
        result.update({f"{k}{name}": v for k, v in acc.items() if not (name and k.startswith("n"))})
    return result


def vqa(model: MultimodalModel, tok: PreTrainedTokenizerBase, data_dir: Path,
        batch_size: int = 64) -> dict[str, float]:
    """8-way: the answer with the highest log P(answer | image, 'Question: q Answer:')."""
    items = json.loads((data_dir / "vqa.json").read_text(encoding="utf-8"))
    images = _images(model, [data_dir / "images" / f"{it['image_id']}.png" for it in items])
    requests, owners = [], []
    for i, it in enumerate(items):
        if len(it["distractors"]) != 7:
            raise ValueError(f"{data_dir / 'vqa.json'}: record {i} has {len(it['distractors'])} distractors, not 7")
        for ans in [it["target_ans"], *it["distractors"]]:
            requests.append(_split_pair(tok, f"Question: {it['question']} Answer:", f" {ans}"))
            owners.append(i)
    heldout = np.array([bool(it.get("heldout_composition", False)) for it in items])
    result = {}
    for name, perm in (("", list(range(len(items)))), ("_shuffled_images", _derangement(len(items)))):
        s = image_conditioned_logprobs(model, images, requests, [perm[o] for o in owners], batch_size)
        acc = _accuracy(s.reshape(-1, 8).argmax(axis=1) == 0, heldout)
        result.update({f"{k}{name}": v for k, v in acc.items() if not (name and k.startswith("n"))})
    return result


@torch.no_grad()
def embed_pairs(model: MultimodalModel, tok: PreTrainedTokenizerBase, jsonl: Path,
                batch_size: int = 64, max_tokens: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised image and text embeddings [N, E] of held-out image-caption pairs."""
    model.eval()
    dev = next(model.parameters()).device
    items = _read_jsonl(jsonl)
    images = _images(model, [(jsonl.parent / it["image"]) for it in items])
    img, txt = [], []
    for i in range(0, len(items), batch_size):
        ids, mask = tokenize_captions(tok, [it["caption"] for it in items[i : i + batch_size]], max_tokens)
        img.append(model.embed_images(images[i : i + batch_size].to(dev)).cpu())
        txt.append(model.embed_texts(ids.to(dev), mask.to(dev)).cpu())
    return torch.cat(img), torch.cat(txt)


def embedding_metrics(model: MultimodalModel, tok: PreTrainedTokenizerBase, jsonl: Path,
                      batch_size: int = 64) -> dict[str, float]:
    image, text = embed_pairs(model, tok, jsonl, batch_size)
    return {k: float(v) for k, v in gap_report(image, text, seed=0).items()}

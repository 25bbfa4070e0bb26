"""Seeded batch augmentations: the image and text views of DeCLIP (Li et al. 2022) and of Fini et
al. 2023's improved CLIP baseline, who find that such views make up most of the data-efficiency gains.

Every function here is pure: a batch's views are a function of the batch and of the generator
(or rng) it is given, so a run that seeds the generator from (seed, step, process) sees the same
views after a resume and on every worker count. Nothing reads global random state.

- `augment_pixels`: MoCo v2's image views, as DeCLIP uses them (RandomResizedCrop, flip,
  ColorJitter, grayscale, Gaussian blur), vectorised over the batch in torch, on the images' device.
- `augment_features`: views of precomputed image features (a frozen vision tower's outputs have
  no pixels left to crop): element dropout and feature-scaled Gaussian noise.
- `CaptionAugmenter`: EDA (Wei and Zou 2019) on token ids, word by word, so pre-tokenized
  captions never go back to strings. Synonym replacement only uses a word list given offline
  (`data_prep/synonyms_world.json` for the built-in world, or the user's `--synonyms FILE`, read
  by `load_synonyms`); there is no WordNet lookup, and without a list it only swaps and deletes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from babymm.tokenizer import SPECIALS, word_starts

IMAGE_OPS = ("crop", "flip", "jitter", "gray", "blur")

# MoCo v2 (and DeCLIP's) settings
CROP_SCALE = (0.2, 1.0)  # area of the crop, as a share of the image's
CROP_RATIO = (3 / 4, 4 / 3)  # the crop's width / height, drawn log-uniform
CROP_TRIES = 10  # torchvision's RandomResizedCrop tries this many boxes before the fallback
FLIP_P = 0.5
JITTER_P = 0.8
BRIGHTNESS = CONTRAST = SATURATION = 0.4  # factor uniform in [1 - x, 1 + x]
HUE = 0.1  # hue shift uniform in [-x, x] turns of the colour wheel
GRAY_P = 0.2
BLUR_P = 0.5
BLUR_SIGMA = (0.1, 2.0)  # pixels, as MoCo's (its images are 224 px)
BLUR_KERNEL_FRACTION = 0.1  # MoCo's 23 px kernel at 224 px
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, PIL's and torchvision's grayscale
MAX = 255.0

# columns of uniform draws per image, per op: every op always gets its own columns of one
# draw, so an op's randomness for a given seed does not depend on which other ops run
_DRAWS = {"crop": 2 * CROP_TRIES + 2, "flip": 1, "jitter": 1 + 4 + 4, "gray": 1, "blur": 2}


# ---------------------------------------------------------------------------- image ops


def parse_image_ops(spec: str) -> tuple[str, ...]:
    """'none' or '' -> (); 'moco' -> IMAGE_OPS (MoCo v2 / DeCLIP's set); else a comma list of
    IMAGE_OPS names (a command-line flag's value); unknown name -> ValueError naming it and the choices."""
    spec = spec.strip().lower()
    if spec in ("", "none"):
        return ()
    if spec == "moco":
        return IMAGE_OPS
    names = [name.strip() for name in spec.split(",") if name.strip()]
    for name in names:
        if name not in IMAGE_OPS:
            raise ValueError(f"image augmentation {name!r} unknown; use 'none', 'moco' or a comma list of "
                             f"{', '.join(IMAGE_OPS)}")
    return tuple(dict.fromkeys(names))  # each op once, in the order given


def _check_ops(ops: Sequence[str]) -> None:
    unknown = [op for op in ops if op not in IMAGE_OPS]
    if unknown:
        raise ValueError(f"image augmentations {unknown} unknown; choose from {', '.join(IMAGE_OPS)}")


def crop_boxes(u: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """RandomResizedCrop's boxes from uniform draws u [B, 2 * CROP_TRIES + 2]: [B, 4] as
    (x0, y0, w, h), shares of the image's width and height. Like torchvision, up to CROP_TRIES
    (area, ratio) draws, the first that fits wins, else the whole image (torchvision's fallback
    for an image whose own ratio is within CROP_RATIO); unlike it the box is not rounded to
    whole pixels, since it is resampled bilinearly anyway."""
    t = CROP_TRIES
    area = CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * u[:, :t]
    lo, hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    ratio = torch.exp(lo + (hi - lo) * u[:, t: 2 * t])
    w = torch.sqrt(area * ratio * height / width)  # the crop's width in pixels over `width`
    h = torch.sqrt(area / ratio * width / height)
    fits = (w <= 1) & (h <= 1)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # the first try that fits
    found = fits.any(dim=1)
    w = torch.where(found, w.gather(1, first).squeeze(1), torch.ones_like(w[:, 0]))
    h = torch.where(found, h.gather(1, first).squeeze(1), torch.ones_like(h[:, 0]))
    x0 = u[:, 2 * t] * (1 - w)
    y0 = u[:, 2 * t + 1] * (1 - h)
    return torch.stack([x0, y0, w, h], dim=1)


def resized_crop(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Each image's box (`crop_boxes`) resampled to the full image size: one affine_grid and one
    grid_sample for the batch. Border padding, so a sample in the box's outer half pixel never
    blends in black."""
    x0, y0, w, h = boxes.unbind(dim=1)
    theta = torch.zeros(len(x), 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0], theta[:, 0, 2] = w, 2 * x0 + w - 1  # output [-1, 1] -> the box, normalised
    theta[:, 1, 1], theta[:, 1, 2] = h, 2 * y0 + h - 1
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] -> [N, 1, H, W] luma (LUMA weights)."""
    r, g, b = x.unbind(dim=1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)


def _per_image(factor: torch.Tensor) -> torch.Tensor:
    return factor.view(-1, 1, 1, 1)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's brightness: scale, clamp to [0, 255]."""
    return (x * _per_image(factor)).clamp(0, MAX)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's contrast: blend with the image's mean luma."""
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    f = _per_image(factor)
    return (f * x + (1 - f) * mean).clamp(0, MAX)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's saturation: blend with the image's own grayscale."""
    f = _per_image(factor)
    return (f * x + (1 - f) * grayscale(x)).clamp(0, MAX)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] RGB in [0, 1] -> HSV in [0, 1] (torchvision's formulas: hue 0 for gray)."""
    r, g, b = x.unbind(dim=1)
    maxc, minc = x.max(dim=1).values, x.min(dim=1).values
    gray = maxc == minc
    chroma = maxc - minc
    ones = torch.ones_like(maxc)
    s = chroma / torch.where(gray, ones, maxc)
    c = torch.where(gray, ones, chroma)
    rc, gc, bc = (maxc - r) / c, (maxc - g) / c, (maxc - b) / c
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack([h, s, maxc], dim=1)


# for each sextant of the hue circle, which of (v, q, p, t) each of R, G, B takes
_SEXTANT = torch.tensor([[0, 1, 2, 2, 3, 0], [3, 0, 0, 1, 2, 2], [2, 2, 3, 0, 0, 1]])


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """The inverse of `rgb_to_hsv` (the textbook sextant formulas, as torchvision's)."""
    h, s, v = x.unbind(dim=1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    p = (v * (1.0 - s)).clamp(0, 1)
    q = (v * (1.0 - s * f)).clamp(0, 1)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0, 1)
    sextant = i.long() % 6
    which = _SEXTANT.to(x.device)[:, sextant].transpose(0, 1)  # [N, 3, H, W]
    return torch.stack([v, q, p, t], dim=1).gather(1, which)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """torchvision's hue: rotate the hue by `shift` turns (in [-0.5, 0.5]) in HSV space; gray
    pixels (no saturation) stay as they are."""
    hsv = rgb_to_hsv(x / MAX)
    h = torch.remainder(hsv[:, 0] + shift.view(-1, 1, 1), 1.0)
    return hsv_to_rgb(torch.stack([h, hsv[:, 1], hsv[:, 2]], dim=1)) * MAX


_JITTERS: tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], ...] = (
    adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def jitter_factors(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ColorJitter's draws from uniform u [B, 8]: factors [B, 4] (brightness, contrast,
    saturation factors and the hue shift) and each image's order of the four [B, 4], which
    torchvision also draws anew per image."""
    spread = torch.tensor([BRIGHTNESS, CONTRAST, SATURATION, HUE], dtype=u.dtype, device=u.device)
    centre = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=u.dtype, device=u.device)
    factors = centre + spread * (2 * u[:, :4] - 1)
    order = u[:, 4:8].argsort(dim=1)
    return factors, order


def color_jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """The four adjustments in each image's own order: at step k, every image whose k-th op is
    op j gets op j, so each op runs once per step on its share of the batch."""
    x = x.clone()
    for step in range(4):
        for j, op in enumerate(_JITTERS):
            chosen = order[:, step] == j
            if chosen.any():
                x[chosen] = op(x[chosen], factors[chosen, j])
    return x


def blur_kernel_size(side: int) -> int:
    """The Gaussian kernel's width for an image side: odd, about BLUR_KERNEL_FRACTION of the
    side (23 at 224, MoCo's), at least 3."""
    return max(3, int(BLUR_KERNEL_FRACTION * side) // 2 * 2 + 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur with each image's own sigma [N] (pixels), normalised kernel and
    reflect padding, as torchvision's GaussianBlur: one grouped conv per axis for the batch."""
    n, c, height, width = x.shape
    half = kernel_size // 2
    taps = torch.arange(-half, half + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (taps[None, :] / sigma[:, None]) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # [N*C, k]
    flat = x.reshape(1, n * c, height, width)
    flat = F.conv2d(F.pad(flat, (half, half, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, half, half), mode="reflect"), kernel[:, None, :, None], groups=n * c)
    return flat.reshape(n, c, height, width)


def _draws(n: int, generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """One uniform draw [n, sum(_DRAWS)] from `generator` (on its own device, so a CPU generator
    gives the same views whatever the images' device), split into each op's columns."""
    u = torch.rand(n, sum(_DRAWS.values()), generator=generator, device=generator.device).to(device)
    return dict(zip(_DRAWS, u.split(list(_DRAWS.values()), dim=1), strict=True))


def augment_pixels(images: torch.Tensor, ops: Sequence[str], generator: torch.Generator) -> torch.Tensor:
    """images uint8 (or float in [0, 255]) [B, 3, S, S] -> float32 [B, 3, S, S] in [0, 255], on
    images' device: MoCo v2 / DeCLIP's view, each op with its own per-image draws from `generator`.

    crop: RandomResizedCrop(S, scale CROP_SCALE, ratio CROP_RATIO), bilinear (`crop_boxes`);
    flip: horizontal, p FLIP_P; jitter: ColorJitter(0.4, 0.4, 0.4, 0.1) with p JITTER_P, in a
    random order per image; gray: p GRAY_P; blur: p BLUR_P, sigma uniform in BLUR_SIGMA, kernel
    `blur_kernel_size(S)`. Ops not in `ops` are not applied; those that are run in IMAGE_OPS'
    order (MoCo flips last, but a flip commutes with the pointwise ops and the symmetric blur)."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images of shape {tuple(images.shape)}: expected [B, 3, H, W]")
    _check_ops(ops)
    x = images.to(dtype=torch.float32, copy=True)  # our own copy: the ops below write in place
    if not ops or len(x) == 0:
        return x
    u = _draws(len(x), generator, x.device)
    if "crop" in ops:
        x = resized_crop(x, crop_boxes(u["crop"], x.shape[2], x.shape[3]))
    if "flip" in ops:
        x = torch.where(_per_image(u["flip"][:, 0] < FLIP_P), x.flip(-1), x)
    if "jitter" in ops:
        chosen = u["jitter"][:, 0] < JITTER_P
        if chosen.any():
            factors, order = jitter_factors(u["jitter"][:, 1:])
            x[chosen] = color_jitter(x[chosen], factors[chosen], order[chosen])
    if "gray" in ops:
        x = torch.where(_per_image(u["gray"][:, 0] < GRAY_P), grayscale(x).expand_as(x), x)
    if "blur" in ops:
        chosen = u["blur"][:, 0] < BLUR_P
        if chosen.any():
            sigma = BLUR_SIGMA[0] + (BLUR_SIGMA[1] - BLUR_SIGMA[0]) * u["blur"][chosen, 1]
            x[chosen] = gaussian_blur(x[chosen], sigma, blur_kernel_size(min(x.shape[2:])))
    return x.clamp_(0, MAX)


# ---------------------------------------------------------------------------- feature views


def augment_features(features: torch.Tensor, dropout: float, noise: float,
                     generator: torch.Generator) -> torch.Tensor:
    """Views of precomputed features (no pixels to augment): [B, D] or [B, P, D] float, same
    shape and dtype back. Element dropout with prob `dropout` (kept ones scaled by 1/(1-p), like
    nn.Dropout, so the expected feature is unchanged), then Gaussian noise with std `noise` times
    each feature vector's own std over D (of the input, before dropout): noise scaled to each
    vector, so one setting suits features of any scale. dropout=noise=0 returns the input itself."""
    if not 0 <= dropout < 1:
        raise ValueError(f"feature dropout {dropout}: expected a probability in [0, 1)")
    if not noise >= 0:
        raise ValueError(f"feature noise {noise}: expected a std >= 0")
    if features.dim() not in (2, 3):
        raise ValueError(f"features of shape {tuple(features.shape)}: expected [B, D] or [B, P, D]")
    if dropout == 0 and noise == 0:
        return features
    x = features.float()
    out = x
    if dropout > 0:
        keep = torch.rand(x.shape, generator=generator, device=generator.device).to(x.device) >= dropout
        out = out * keep / (1 - dropout)
    if noise > 0:
        scale = noise * x.std(dim=-1, keepdim=True, correction=0)
        out = out + scale * torch.randn(x.shape, generator=generator, device=generator.device).to(x.device)
    return out.to(features.dtype)


# ---------------------------------------------------------------------------- caption views

Word = tuple[int, ...]  # the token ids of one word: a word-start piece and the pieces after it


def load_synonyms(path: Path) -> dict[str, list[str]]:
    """A JSON file {word: [synonym, ...]}: lower-case single words (no spaces; EDA replaces a
    word by a word). A bad file -> ValueError naming the file and what is wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable JSON synonyms file ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object {{word: [synonym, ...]}}, got {type(data).__name__}")

    def bad_word(w: Any) -> str | None:
        if not isinstance(w, str) or not w:
            return "not a non-empty string"
        if w != w.lower():
            return "not lower-case"
        if any(ch.isspace() for ch in w):
            return "not one word (multi-word phrases are not supported)"
        return None

    out: dict[str, list[str]] = {}
    for word, options in data.items():
        if why := bad_word(word):
            raise ValueError(f"{path}: key {word!r} is {why}")
        if not isinstance(options, list) or not options:
            raise ValueError(f"{path}: {word!r} maps to {options!r}; expected a non-empty list of words")
        for option in options:
            if why := bad_word(option):
                raise ValueError(f"{path}: synonym {option!r} of {word!r} is {why}")
        out[word] = list(dict.fromkeys(o for o in options if o != word))
    return {w: o for w, o in out.items() if o}


def split_words(body: Sequence[int], word_start: np.ndarray) -> list[Word]:
    """A caption's pieces -> its words: each word-start piece opens a word. Pieces before the
    first word start (none in a SentencePiece caption) make a word of their own."""
    starts = [i for i, t in enumerate(body) if i == 0 or word_start[t]]
    return [tuple(body[a:b]) for a, b in zip(starts, [*starts[1:], len(body)], strict=True)]


def replace_synonyms(words: Sequence[Word], synonyms: dict[Word, list[Word]], k: int,
                     rng: np.random.Generator) -> list[Word]:
    """EDA's synonym replacement: min(k, #words with synonyms) distinct such words, each
    replaced by one of its synonyms at random."""
    out = list(words)
    candidates = [i for i, w in enumerate(out) if w in synonyms]
    if not candidates or k < 1:
        return out
    for c in rng.choice(len(candidates), size=min(k, len(candidates)), replace=False):
        options = synonyms[out[candidates[c]]]
        out[candidates[c]] = options[int(rng.integers(len(options)))]
    return out


def swap_words(words: Sequence[Word], k: int, rng: np.random.Generator) -> list[Word]:
    """EDA's random swap: k times, two distinct positions trade words (nothing for < 2 words)."""
    out = list(words)
    if len(out) < 2:
        return out
    for _ in range(k):
        i, j = rng.choice(len(out), size=2, replace=False)
        out[i], out[j] = out[j], out[i]
    return out


def delete_words(words: Sequence[Word], p: float, rng: np.random.Generator) -> list[Word]:
    """EDA's random deletion: each word dropped with prob p, one random word kept if all would
    be (a caption never loses its whole body)."""
    if not words:
        return []
    keep = rng.random(len(words)) >= p
    if not keep.any():
        keep[rng.integers(len(words))] = True
    return [w for w, kept in zip(words, keep, strict=True) if kept]


def _fit(words: list[Word], room: int) -> list[int]:
    """The words' pieces in at most `room` tokens, words whole: in order, each word that still
    fits is kept and one that would overflow is dropped (one more deletion). Only where not even
    one word fits are the first word's last pieces cut."""
    kept: list[int] = []
    for w in words:
        if len(kept) + len(w) <= room:
            kept += w
    if not kept and words:
        kept = list(words[0][:room])
    return kept


class CaptionAugmenter:
    """EDA (Wei and Zou 2019) on token ids, word by word: synonym replacement, random swap,
    random deletion, all three on each caption in that order, with strength `alpha`.
    Works on tokenized captions so the pre-tokenized fast path stays (no strings).

    `synonyms` maps a word's pieces to its synonyms' pieces (`from_tokenizer` builds it from a
    word list). `pad_id` pads the results; None: the input's pad value (under mask 0), or
    babymm's pad id where the input has no padding. `max_tokens` caps a result's length (a
    synonym can have more pieces than its word): None, no cap, so a batch can come back wider
    than it went in; give the run's --max_caption_tokens to keep captions within it."""

    def __init__(self, word_start: np.ndarray, alpha: float,
                 synonyms: dict[tuple[int, ...], list[tuple[int, ...]]] | None = None, *,
                 pad_id: int | None = None, max_tokens: int | None = None):
        word_start = np.asarray(word_start)
        if word_start.ndim != 1 or word_start.dtype != bool:
            raise ValueError(f"word_start: expected a 1-D bool array over the vocabulary, got "
                             f"{word_start.dtype} {word_start.shape}")
        if not 0 <= alpha <= 1:
            raise ValueError(f"caption augmentation alpha {alpha}: expected a share in [0, 1]")
        if max_tokens is not None and max_tokens < 3:
            raise ValueError(f"max_tokens {max_tokens}: a caption with a word needs at least 3 tokens")
        self.word_start, self.alpha = word_start, float(alpha)
        self.synonyms = {tuple(k): [tuple(v) for v in vs] for k, vs in (synonyms or {}).items() if vs}
        self.pad_id, self.max_tokens = pad_id, max_tokens

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, alpha: float, synonyms: dict[str, list[str]] | None = None,
                       *, max_tokens: int | None = None) -> CaptionAugmenter:
        """Tokenizes each word and synonym as a word inside a caption would be (leading
        word-boundary piece), via babymm.tokenizer.word_starts for word_start; pads with the
        tokenizer's pad id."""
        word_start = word_starts(tokenizer)
        table: dict[Word, list[Word]] = {}
        for word, options in (synonyms or {}).items():
            key = _word_pieces(tokenizer, word, word_start)
            for option in options:
                pieces = _word_pieces(tokenizer, option, word_start)
                if pieces != key and pieces not in table.setdefault(key, []):
                    table[key].append(pieces)
        return cls(word_start, alpha, table, pad_id=tokenizer.pad_token_id, max_tokens=max_tokens)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T] right-padded `<s> body </s>` -> augmented, re-padded (width = longest result),
        same dtype and device. Per caption with n words: synonym replacement of
        max(1, round(alpha n)) words that have synonyms (if any), random swap of
        max(1, round(alpha n)) word pairs (n >= 2), random deletion of each word with prob alpha
        (at least one word kept). The first and last tokens (<s>, </s>) stay. alpha = 0 returns
        the input tensors themselves."""
        if self.alpha == 0:
            return input_ids, attention_mask
        ids = input_ids.detach().cpu().numpy()
        mask = attention_mask.detach().cpu().numpy() != 0
        lengths = mask.sum(axis=1)
        if not np.array_equal(mask, np.arange(ids.shape[1])[None, :] < lengths[:, None]):
            raise ValueError("captions must be right-padded: attention mask 1s, then 0s")
        pad = self.pad_id if self.pad_id is not None else int(ids[~mask][0]) if (~mask).any() else SPECIALS["pad"][1]
        rows = [self._augment(row[:n].tolist(), rng) for row, n in zip(ids, lengths, strict=True)]
        width = max(map(len, rows))
        out = np.full((len(rows), width), pad, dtype=np.int64)
        for i, row in enumerate(rows):
            out[i, : len(row)] = row
        new_mask = np.arange(width)[None, :] < np.array([len(r) for r in rows])[:, None]
        return (torch.from_numpy(out).to(device=input_ids.device, dtype=input_ids.dtype),
                torch.from_numpy(new_mask).to(device=attention_mask.device, dtype=attention_mask.dtype))

    def _augment(self, tokens: list[int], rng: np.random.Generator) -> list[int]:
        """One caption `<s> body </s>` (no padding) -> its EDA view."""
        if len(tokens) < 3:  # no body
            return tokens
        words = split_words(tokens[1:-1], self.word_start)
        k = max(1, round(self.alpha * len(words)))
        words = replace_synonyms(words, self.synonyms, k, rng)
        words = swap_words(words, k, rng)
        words = delete_words(words, self.alpha, rng)
        body = [t for w in words for t in w] if self.max_tokens is None else _fit(words, self.max_tokens - 2)
        return [tokens[0], *body, tokens[-1]]


def _word_pieces(tokenizer: Any, word: str, word_start: np.ndarray) -> Word:
    """`word`'s pieces as inside a caption: tokenized after another word and a space (pieces
    never cross whitespace), so it opens with its word-boundary piece."""
    before = tokenizer("x", add_special_tokens=False)["input_ids"]
    ids = tokenizer(f"x {word}", add_special_tokens=False)["input_ids"]
    pieces = tuple(ids[len(before):])
    if ids[: len(before)] != before or not pieces or not word_start[pieces[0]]:
        raise ValueError(f"synonym list word {word!r} does not tokenize as one word of a caption "
                         f"(pieces {tokenizer.convert_ids_to_tokens(list(pieces))})")
    return pieces

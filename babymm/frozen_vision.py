"""A frozen pretrained vision model (e.g. DINOv2) read from a local directory: images -> features.

The BabyLM corpus ships one global DINOv2 vector per image; the official baselines ran raw
images through a frozen DINO ViT instead. This module does the latter, offline, for the
`--vision_encoder features` path: data prep turns the raw training images into feature rows
once (data_prep.extract_features) and eval turns its images into rows the same way
(eval.multimodal.EvalImages), so the model never runs the frozen encoder per training step.

The directory is what `save_pretrained` writes for a vision model and its image processor:
`config.json`, the weights (`model.safetensors`, `pytorch_model.bin`, or a sharded index)
and `preprocessor_config.json`. It is loaded with `AutoModel` / `AutoImageProcessor`
(`local_files_only=True`: nothing is ever downloaded), in eval mode, without gradients, in
float32. The model must give `last_hidden_state` as a token sequence [B, T, D] (a ViT: CLS,
then any register tokens, then the patch tokens, after the final layer norm).

Poolings (`--vision_pooling`), all read from `last_hidden_state`:
  cls    token 0, the CLS token after the final layer norm: [D]. For DINOv2 this is exactly
         its `pooler_output` (Dinov2Model's pooler is the layer-normed CLS token); for other
         ViTs `pooler_output` may be an extra dense+tanh head (ViTModel), so it is never used.
  mean   the mean of the patch tokens after the final layer norm, CLS and register tokens
         (`config.num_register_tokens`) excluded: [D].
  patch  every token, CLS (and registers) first then the patches: [T, D] (the 197 tokens of
         a ViT-B/16 at 224 px, as the official baselines fed them).

`model_key(path, pooling)` names what a model and pooling produce (cached outputs live under
it): the directory's name, the pooling, and a hash of the directory's contents (relative
file names, sizes, and a SHA-256 of every byte), so a copied or moved model keeps its key
and a changed one gets a new key.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from babymm.files import DataError
from babymm.models.vision import POOLINGS, pool_tokens

CONFIG, PREPROCESSOR = "config.json", "preprocessor_config.json"
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_FIX = "pass --vision_model a directory written by save_pretrained (model and image processor)"


def check_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise DataError(f"vision pooling {pooling!r} unknown; use one of {', '.join(POOLINGS)}")
    return pooling


def check_model_dir(path: str | Path) -> Path:
    """`path` as an absolute Path if it holds a loadable model; a one-line DataError otherwise."""
    path = Path(os.path.abspath(os.path.expanduser(str(path))))
    if not path.is_dir():
        raise DataError(f"{path}: vision model directory does not exist; {_FIX}")
    if not (path / CONFIG).is_file():
        raise DataError(f"{path}: no {CONFIG}, not a saved model; {_FIX}")
    if not any((path / w).is_file() for w in WEIGHTS):
        raise DataError(f"{path}: no model weights ({', '.join(WEIGHTS)}); {_FIX}")
    if not (path / PREPROCESSOR).is_file():
        raise DataError(f"{path}: no {PREPROCESSOR}, so images cannot be prepared the way the model expects; "
                        "save its image processor beside it (AutoImageProcessor.from_pretrained(...)."
                        f"save_pretrained('{path}'))")
    return path


# -- the model's key ---------------------------------------------------------------------------
_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> SHA-256: each file read once


def _file_hash(path: Path) -> str:
    st = path.stat()
    memo = (str(path), st.st_size, st.st_mtime_ns)
    if memo not in _HASHES:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _HASHES[memo] = h.hexdigest()
    return _HASHES[memo]


def _model_files(path: Path) -> list[Path]:
    """Every regular file under `path` (symlinks followed), hidden files and folders (.git,
    .cache) left out."""
    out = []
    for root, dirs, files in os.walk(path, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [Path(root) / f for f in sorted(files) if not f.startswith(".") and (Path(root) / f).is_file()]
    return out


def model_fingerprint(path: str | Path) -> str:
    """A hash of the model directory's contents: relative names, sizes and bytes."""
    path = check_model_dir(path)
    h = hashlib.sha256()
    for f in _model_files(path):
        h.update(f"{f.relative_to(path).as_posix()}:{f.stat().st_size}:{_file_hash(f)}\n".encode())
    return h.hexdigest()[:12]


def _key(path: Path, pooling: str, fp: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", path.name).strip("._") or "model"
    return f"{name}-{pooling}-{fp}"


def model_key(path: str | Path, pooling: str = "cls") -> str:
    """`<dir name>-<pooling>-<content hash>`, e.g. `dinov2-base-cls-1a2b3c4d5e6f`: a folder name
    for what this model and pooling produce."""
    check_pooling(pooling)
    path = check_model_dir(path)
    return _key(path, pooling, model_fingerprint(path))


# -- images ------------------------------------------------------------------------------------
def read_image(path: str | Path) -> Image.Image:
    """An image file as a fully loaded RGB PIL image, at its own size. A missing, empty or
    unreadable file raises DataError naming it (callers add which record asked for it)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image {path} not found")
    if path.stat().st_size == 0:
        raise DataError(f"image {path} is an empty file (0 bytes)")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise DataError(f"image {path} is unreadable ({e.__class__.__name__}: {e})") from None


class ImageReadError(DataError):
    """An image of a batch that cannot be read; `index` is its position in the batch."""

    def __init__(self, message: str, index: int):
        super().__init__(message)
        self.index = index


def read_images(paths: Sequence[str | Path], where: Sequence[str] | None = None,
                pool: ThreadPoolExecutor | None = None) -> list[Image.Image]:
    """`read_image` of each path (decoded in `pool`'s threads if given). The first bad image
    raises ImageReadError, its message prefixed with `where[i]`."""
    where = list(where) if where is not None else [""] * len(paths)

    def one(i: int) -> Image.Image:
        try:
            return read_image(paths[i])
        except DataError as e:
            raise ImageReadError(f"{where[i]}: {e}" if where[i] else str(e), i) from None

    if pool is None or len(paths) <= 1:
        return [one(i) for i in range(len(paths))]
    return list(pool.map(one, range(len(paths))))


# -- the model ---------------------------------------------------------------------------------
def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class FrozenVision:
    """A loaded frozen vision model, its image processor, and the pooling it is read with."""

    path: Path
    pooling: str
    model: Any
    processor: Any
    device: torch.device
    fingerprint: str  # of the directory's contents when it was loaded

    @property
    def key(self) -> str:
        """`model_key(path, pooling)` as of loading."""
        return _key(self.path, self.pooling, self.fingerprint)

    @property
    def prefix_tokens(self) -> int:
        """Tokens before the patches: CLS, then DINOv2's register tokens if it has any."""
        return 1 + int(getattr(self.model.config, "num_register_tokens", 0) or 0)

    def describe(self) -> dict[str, Any]:
        """What a manifest records about it."""
        return {"vision_model": str(self.path), "vision_pooling": self.pooling, "vision_model_key": self.key,
                "model_class": type(self.model).__name__, "processor_class": type(self.processor).__name__}

    @torch.inference_mode()
    def encode_batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        """One batch of RGB PIL images -> float32 [B, D] (cls, mean) or [B, T, D] (patch)."""
        inputs = self.processor(images=list(images), return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.device, torch.float32)
        hidden = self.model(pixel_values=pixels).last_hidden_state
        if hidden.dim() != 3:
            raise DataError(f"{self.path}: the model's last_hidden_state has shape {tuple(hidden.shape)}, not "
                            "[batch, tokens, dim]; use a ViT-style vision model (e.g. DINOv2)")
        return pool_tokens(hidden, self.pooling, self.prefix_tokens).float().cpu().numpy()

    def encode(self, images: Sequence[Image.Image | str | Path], batch_size: int = 32,
               where: Sequence[str] | None = None,
               progress: Callable[[int], Any] | None = None) -> np.ndarray:
        """Images (PIL, or paths read with `read_image`, errors prefixed with `where[i]`) in
        batches -> float32 [N, D] or [N, T, D]. `progress(n)` is called after each batch."""
        if not images:
            raise ValueError("no images to encode")
        where = list(where) if where is not None else [""] * len(images)
        out = []
        for i in range(0, len(images), batch_size):
            chunk = list(images[i : i + batch_size])
            for j, im in enumerate(chunk):
                if not isinstance(im, Image.Image):
                    try:
                        chunk[j] = read_image(im)
                    except DataError as e:
                        raise ImageReadError(f"{where[i + j]}: {e}" if where[i + j] else str(e), i + j) from None
            out.append(self.encode_batch(chunk))
            if progress is not None:
                progress(len(chunk))
        return np.concatenate(out)


_LOADED: dict[tuple[str, str], tuple[str, Any, Any]] = {}  # (path, device) -> (fingerprint, model, processor)


def load_frozen_vision(path: str | Path, pooling: str = "cls", device: str | torch.device | None = None
                       ) -> FrozenVision:
    """The model in `path` frozen (eval mode, no gradients, float32) on `device` (default: cuda
    if there is one), with its image processor. Loaded once per process and device; a model
    directory changed since is loaded again."""
    check_pooling(pooling)
    path = check_model_dir(path)
    device = torch.device(device) if device is not None else default_device()
    fp = model_fingerprint(path)
    cached = _LOADED.get((str(path), str(device)))
    if cached is None or cached[0] != fp:
        from transformers import AutoImageProcessor, AutoModel

        try:
            processor = AutoImageProcessor.from_pretrained(str(path), local_files_only=True)
            model = AutoModel.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
        except (OSError, ValueError, KeyError, TypeError) as e:
            problem = " ".join(str(e).split())[:300]
            raise DataError(f"{path}: cannot load the vision model or its image processor "
                            f"({type(e).__name__}: {problem}); {_FIX}") from None
        model.requires_grad_(False)
        model.eval().to(device)
        cached = _LOADED[(str(path), str(device))] = (fp, model, processor)
    return FrozenVision(path, pooling, cached[1], cached[2], device, fp)


def clear_cache() -> None:
    """Forget the loaded models (frees their memory once nothing else holds them)."""
    _LOADED.clear()


def encode_images(images: Sequence[Image.Image | str | Path], path: str | Path, pooling: str = "cls",
                  batch_size: int = 32, device: str | torch.device | None = None) -> np.ndarray:
    """Images (PIL or paths) -> float32 features of the frozen model in `path`."""
    return load_frozen_vision(path, pooling, device).encode(images, batch_size)

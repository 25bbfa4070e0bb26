"""Image loading: one function so that ingest, training and eval see the same pixels."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from babymm.files import BadRecord, is_inside, lexical_path


class ImageError(ValueError):
    """An image that cannot be read; the message names the file."""


def load_image(path: str | Path, size: int) -> np.ndarray:
    """Read an image as uint8 RGB, resized to `size` x `size`. Returns [3, size, size]."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise ImageError(f"{path}: empty image file (0 bytes); fix or remove it")
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BICUBIC)
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise ImageError(f"{path}: unreadable image ({e.__class__.__name__}: {e}); fix or remove it") from e
    return np.ascontiguousarray(arr.transpose(2, 0, 1))  # [3, S, S]


def record_image_path(name: Any, base: Path, root: Path, where: str,
                      outside: tuple[str, str] | None = None) -> Path:
    """The image a record names (`name` relative to `base`, or absolute), which must lie under
    `root`, compared by name so a symlinked image folder inside it is fine. BadRecord naming
    `where` (file:line) otherwise; `outside` is (what to say of `root` and what to do, the skip
    reason), by default for `root` the data directory."""
    if not isinstance(name, str) or not name.strip():
        raise BadRecord(f"{where}: 'image' must be a path, got {name!r}; fix it", "bad image path")
    path = lexical_path(name, base)
    if not is_inside(path, root):
        said, reason = outside or (f"the data directory {os.path.abspath(root)}; move the image under it (a "
                                   "symlink inside it is fine)", "image outside the data directory")
        raise BadRecord(f"{where}: image path {name!r} is outside {said}", reason)
    return path


def load_record_image(path: Path, size: int, where: str, fix: str) -> np.ndarray:
    """`load_image`, with a missing or unreadable file a BadRecord naming `where` (file:line)."""
    if not path.is_file():
        raise BadRecord(f"{where}: image {path} not found; fix the path or {fix}", "image not found")
    try:
        return load_image(path, size)
    except ImageError as e:
        raise BadRecord(f"{where}: {e}", "unreadable image") from None

"""Image loading: one function so that ingest, training and eval see the same pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


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

"""Training data: caption batches (images + tokens) and text-only blocks, by index.

Both read what data_prep wrote, never the raw files: captions from the ingested `datasets`
dataset (pixels in Arrow, or rows of memory-mapped feature files), text from the flat token
array. Batches are built whole from a list of indices (`__getitems__`), so a step-indexed
batch sampler drives a plain `DataLoader`.
"""

from __future__ import annotations

import json
import mmap
import warnings
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedTokenizerBase

from babymm.files import DataError, is_inside, load_npy, read_json

DEFAULT_MAX_CAPTION_TOKENS = 40  # --max_caption_tokens's default (babymm.config.DataArguments)


class CaptionData(torch.utils.data.Dataset):
    """Ingested image-caption pairs -> {input_ids, attention_mask, num_words[, images]}."""

    def __init__(self, ingest_dir: Path, tokenizer: PreTrainedTokenizerBase, max_tokens: int,
                 with_images: bool = True, features_dir: Path | None = None, tokens_dir: Path | None = None):
        """`features_dir`: frozen-encoder features of raw-image data (data_prep.extract_features);
        each caption then reads its image's row of `features.npy` (by image_id), not its pixels.
        `tokens_dir`: data prep's tokens stage (`captions.npy`, `caption_offsets.npy`), made with
        this tokenizer: a batch slices its captions' tokens instead of tokenizing them, and reads
        its word counts and feature rows from arrays in memory instead of the Arrow table; the
        batches are the same (tested)."""
        manifest_path = Path(ingest_dir) / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        self.image_input: str = manifest["image_input"]
        self.ds = datasets.load_from_disk(str(Path(ingest_dir) / "captions")).with_format("numpy")
        # DATA/prepared/ingest, or a budgeted subset's DATA/prepared/subsets/NAME/ingest
        root = next((q.parent for q in Path(ingest_dir).absolute().parents if q.name == "prepared"),
                    Path(ingest_dir).absolute().parent.parent)
        for i, f in enumerate(manifest.get("feature_files", [])):
            if not is_inside(f, root):
                raise DataError(f"{manifest_path}: feature_files[{i}] {f} is outside the data directory {root}; "
                                "re-run ingest (python -m data_prep.ingest --overwrite)")
        self.features = [load_npy(Path(f)) for f in manifest.get("feature_files", [])]
        self.tokenizer, self.max_tokens = tokenizer, max_tokens
        self.with_images = with_images  # False: a text model never reads a pixel or feature row
        self.table: np.ndarray | None = None  # frozen-encoder features [N_images, D] / [N_images, P, D]
        self.table_row: np.ndarray | None = None  # caption index -> its image's row of `table`
        if features_dir is not None and with_images:
            if self.image_input != "pixels":
                raise DataError(f"{features_dir}: frozen-encoder features are made from raw images, but "
                                f"{ingest_dir} holds {self.image_input} image input; train on the data's own "
                                "features (no features_dir)")
            self.table, self.table_row = _image_rows(Path(features_dir), self.ds)
            self.image_input = "features"
        columns = ["caption", "num_words"]
        if with_images and self.table is None:
            columns += ["pixel_values"] if self.image_input == "pixels" else ["feature_file", "feature_row"]
        self.ds = self.ds.select_columns(columns)
        self.pretokenized: tuple[np.ndarray, np.ndarray] | None = None  # (flat `<s> pieces`, offsets [N + 1])
        self.columns: dict[str, np.ndarray] = {}  # num_words, feature_file, feature_row, in memory
        if tokens_dir is not None:
            self.pretokenized = _load_caption_tokens(Path(tokens_dir), self.ds.num_rows)
            arrow = self.ds.data.table  # whole columns, read once
            self.columns = {k: arrow.column(k).to_numpy() for k in ("num_words", "feature_file", "feature_row")
                            if k in columns}
            self.pixels = self.ds.select_columns(["pixel_values"]) if "pixel_values" in columns else None

    @property
    def _row_shape(self) -> tuple[int, ...] | None:
        """Shape of one image's features: (D,) or (P, D); None for pixel input."""
        if self.table is not None:
            return tuple(self.table.shape[1:])
        return tuple(self.features[0].shape[1:]) if self.features else None

    @property
    def feature_dim(self) -> int | None:
        shape = self._row_shape
        return int(shape[-1]) if shape else None

    @property
    def feature_tokens(self) -> int | None:
        """P of patch features [N, P, D]; 1 for global vectors [N, D]."""
        shape = self._row_shape
        return (int(shape[0]) if len(shape) == 2 else 1) if shape else None

    def __len__(self) -> int:
        return self.ds.num_rows

    def advise_random_reads(self) -> None:
        """Tell the kernel the feature memory maps are read at random rows (madvise MADV_RANDOM),
        as training's batches read them: no read-ahead of neighbouring pages a batch never uses.
        With a cold page cache a batch of 128 global feature rows then reads ~8x faster (README,
        data loading benchmark); a warm cache is unchanged. Not for a front-to-back scan (scorers)."""
        for array in [*self.features, *([] if self.table is None else [self.table])]:
            mapped = getattr(array, "_mmap", None)
            if mapped is not None and hasattr(mmap, "MADV_RANDOM"):
                mapped.madvise(mmap.MADV_RANDOM)

    def tokenize(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """`<s> caption </s>`, at most max_tokens, right-padded (`tokenize_captions`). Returns ids, mask [B, T]."""
        return tokenize_captions(self.tokenizer, captions, self.max_tokens)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        if self.pretokenized is not None:
            idx = np.asarray(indices, dtype=np.int64)
            ids, mask = cut_captions(*self.pretokenized, idx, self.max_tokens, self.tokenizer.eos_token_id,
                                     self.tokenizer.pad_token_id)
            # pixels still come from the Arrow table; feature rows by the in-memory columns
            rows = self.pixels[indices] if self.pixels is not None else {k: v[idx] for k, v in self.columns.items()}
            num_words = torch.from_numpy(self.columns["num_words"][idx].astype(np.int64))
        else:
            rows = self.ds[indices]
            ids, mask = self.tokenize([str(c) for c in rows["caption"]])
            num_words = torch.as_tensor(rows["num_words"]).long()
        batch = {"input_ids": ids, "attention_mask": mask, "num_words": num_words,
                 "index": torch.as_tensor(indices, dtype=torch.long)}
        if not self.with_images:
            return batch
        if self.table is not None:
            images = torch.from_numpy(_read_rows(self.table, self.table_row[np.asarray(indices)]))  # [B, D] / [B, P, D]
        elif self.image_input == "pixels":
            # the numpy format widens integer columns to int64: back to the uint8 they were stored as
            images = torch.from_numpy(np.ascontiguousarray(rows["pixel_values"], dtype=np.uint8))  # [B, 3, S, S]
        else:  # each feature file's rows in one read
            files, feature_rows = np.asarray(rows["feature_file"]), np.asarray(rows["feature_row"])
            images = np.empty((len(files), *self.features[0].shape[1:]), dtype=np.float32)
            for f in np.unique(files):
                sel = np.flatnonzero(files == f)
                images[sel] = _read_rows(self.features[f], feature_rows[sel])
            images = torch.from_numpy(images)  # [B, D] or [B, P, D]
        return {**batch, "images": images}


def _read_rows(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """float32 `array[rows]`, read in sorted row order so that a memory map is read front to back."""
    order = np.argsort(rows, kind="stable")
    out = np.empty((len(rows), *array.shape[1:]), dtype=np.float32)
    out[order] = array[rows[order]]
    return out


def _image_rows(features_dir: Path, captions: datasets.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The memory-mapped `features.npy` of `features_dir` and, per caption, its image's row:
    looked up once, by image_id, through a hash index (`image_ids.json` names the rows)."""
    table = load_npy(features_dir / "features.npy")
    ids = read_json(features_dir / "image_ids.json")
    fix = "re-run the features stage (python -m data_prep.extract_features --overwrite)"
    if not isinstance(ids, list) or len(ids) != len(table) or table.ndim not in (2, 3):
        raise DataError(f"{features_dir}: image_ids.json must list one image_id per row of features.npy "
                        f"({table.shape}); {fix}")
    index = pd.Index(ids)
    if not index.is_unique:
        raise DataError(f"{features_dir}/image_ids.json: an image_id is listed twice; {fix}")
    rows = np.empty(captions.num_rows, dtype=np.int64)
    start = 0
    for batch in captions.select_columns(["image_id"]).with_format(None).iter(batch_size=1 << 16):
        found = index.get_indexer(batch["image_id"])
        if (found < 0).any():
            j = int(np.flatnonzero(found < 0)[0])
            raise DataError(f"{features_dir}: no features for image {batch['image_id'][j]!r} (caption {start + j}); "
                            f"the images changed since the features were made: {fix}")
        rows[start : start + len(found)] = found
        start += len(found)
    return table, rows


def _load_caption_tokens(tokens_dir: Path, num_captions: int) -> tuple[np.ndarray, np.ndarray]:
    """The tokens stage's captions (memory-mapped) and offsets, checked against the captions."""
    fix = "re-run data prep's tokens stage (python -m data_prep.tokenize_text --overwrite)"
    flat_file, offsets_file = tokens_dir / "captions.npy", tokens_dir / "caption_offsets.npy"
    if not (flat_file.is_file() and offsets_file.is_file()):
        raise DataError(f"{tokens_dir}: no captions.npy / caption_offsets.npy (tokens made before captions were "
                        f"tokenized in data prep); {fix}")
    flat, offsets = load_npy(flat_file), np.load(offsets_file)
    if offsets.shape != (num_captions + 1,) or offsets[-1] != len(flat):
        raise DataError(f"{offsets_file}: offsets for {len(offsets) - 1} captions ending at {offsets[-1]}, but the "
                        f"data has {num_captions} captions and {flat_file.name} {len(flat)} tokens; {fix}")
    return flat, offsets


def cut_captions(flat: np.ndarray, offsets: np.ndarray, idx: np.ndarray, max_tokens: int, eos: int,
                 pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`tokenize_captions` on pre-tokenized captions: rows `idx` of the flat `<s> pieces` arrays,
    cut to `max_tokens - 1` tokens, `</s>` appended, right-padded; (input_ids, attention_mask)."""
    start = offsets[idx]
    kept = np.minimum(offsets[idx + 1] - start, max_tokens - 1)  # tokens before </s>
    cols = np.arange(int(kept.max()) + 1)
    body = cols[None, :] < kept[:, None]
    ids = np.where(body, flat[np.where(body, start[:, None] + cols[None, :], 0)], pad).astype(np.int64)
    ids[np.arange(len(idx)), kept] = eos
    mask = (cols[None, :] <= kept[:, None]).astype(np.int64)
    return torch.from_numpy(ids), torch.from_numpy(mask)


def tokenize_captions(tokenizer: PreTrainedTokenizerBase, captions: Sequence[str],
                      max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Caption strings -> (input_ids, attention_mask) [B, T], right-padded with the pad id: the
    one way captions become tokens, for training batches (`CaptionData`), eval's and the gap
    probe's text embeddings (`eval.multimodal.embed_texts`) and the alignment scorer alike.

    Each caption is `<s> caption </s>`, at most `max_tokens` (the run's --max_caption_tokens,
    `caption_max_tokens`) long. A longer caption loses its last caption tokens, never its end
    token: a text embedding is read at the last token, which is then `</s>` as for every other
    caption, and the captioning loss still learns where a caption ends."""
    if max_tokens < 2:
        raise ValueError(f"max_tokens {max_tokens}: a caption needs at least 2 tokens (<s> and </s>)")
    eos = tokenizer.eos_token_id
    encoded = tokenizer(list(captions), add_special_tokens=True)["input_ids"]  # BOS added
    seqs = [ids[: max_tokens - 1] + [eos] for ids in encoded]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


def caption_max_tokens(run_dir: str | Path) -> int:
    """The --max_caption_tokens a run (or one of its milestones) was trained with, from its
    `run_config.json`: what eval and the scorers must cut captions to, as training did. A
    directory without one (not made by train.py) gets the default, with a warning."""
    path = Path(run_dir) / "run_config.json"
    config = read_json(path) if path.is_file() else None
    data = config.get("data") if isinstance(config, dict) else None
    value = data.get("max_caption_tokens") if isinstance(data, dict) else None
    if value is None:
        warnings.warn(f"{path}: no data.max_caption_tokens; captions are cut to the default "
                      f"{DEFAULT_MAX_CAPTION_TOKENS} tokens", stacklevel=2)
        return DEFAULT_MAX_CAPTION_TOKENS
    if not isinstance(value, int) or isinstance(value, bool) or value < 2:
        raise DataError(f"{path}: data.max_caption_tokens {value!r} is not a caption length (an integer >= 2)")
    return value


class TextBlocks(torch.utils.data.Dataset):
    """Fixed-length blocks of the flat text token array: block i = tokens[i*L : (i+1)*L].

    A block's `num_words` counts the tokens that begin a word (`word_starts[id]`, see
    `babymm.tokenizer.word_starts`): a word cut by a block boundary counts in the block holding
    its first piece, so blocks add up to the words of the text."""

    def __init__(self, tokens_file: Path, block_size: int, word_starts: np.ndarray | None = None):
        self.tokens = np.load(tokens_file, mmap_mode="r")
        self.block_size = block_size
        self.word_starts = word_starts
        if len(self.tokens) < block_size:
            raise ValueError(f"{tokens_file}: {len(self.tokens)} tokens, fewer than one block of {block_size}")

    def __len__(self) -> int:
        return len(self.tokens) // self.block_size

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        L = self.block_size
        starts = np.asarray(indices, dtype=np.int64)[:, None] * L
        ids = torch.from_numpy(np.asarray(self.tokens[starts + np.arange(L)], dtype=np.int64))  # [B, L], one read
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                 "index": torch.as_tensor(indices, dtype=torch.long)}
        if self.word_starts is not None:
            batch["num_words"] = torch.from_numpy(self.word_starts[ids.numpy()].sum(axis=1).astype(np.int64))
        return batch


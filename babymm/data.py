"""Training data: caption batches (images + tokens) and text-only blocks, by index.

Both read what data_prep wrote, never the raw files: captions from the ingested `datasets`
dataset (pixels in Arrow, or rows of memory-mapped feature files), text from the flat token
array. Batches are built whole from a list of indices (`__getitems__`), so a step-indexed
batch sampler drives a plain `DataLoader`.
"""

from __future__ import annotations

import json
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
                 with_images: bool = True, features_dir: Path | None = None):
        """`features_dir`: frozen-encoder features of raw-image data (data_prep.extract_features);
        each caption then reads its image's row of `features.npy` (by image_id), not its pixels."""
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

    def tokenize(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """`<s> caption </s>`, at most max_tokens, right-padded (`tokenize_captions`). Returns ids, mask [B, T]."""
        return tokenize_captions(self.tokenizer, captions, self.max_tokens)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        rows = self.ds[indices]
        ids, mask = self.tokenize([str(c) for c in rows["caption"]])
        batch = {"input_ids": ids, "attention_mask": mask, "num_words": torch.as_tensor(rows["num_words"]).long(),
                 "index": torch.as_tensor(indices, dtype=torch.long)}
        if not self.with_images:
            return batch
        if self.table is not None:  # sorted, so the memory map is read front to back
            rows = self.table_row[np.asarray(indices)]
            order = np.argsort(rows, kind="stable")
            images = np.empty((len(rows), *self.table.shape[1:]), dtype=np.float32)
            images[order] = self.table[rows[order]]
            images = torch.from_numpy(images)  # [B, D] or [B, P, D]
        elif self.image_input == "pixels":
            # the numpy format widens integer columns to int64: back to the uint8 they were stored as
            images = torch.from_numpy(np.ascontiguousarray(rows["pixel_values"], dtype=np.uint8))  # [B, 3, S, S]
        else:
            images = torch.from_numpy(np.stack([
                np.asarray(self.features[f][r], dtype=np.float32)
                for f, r in zip(rows["feature_file"], rows["feature_row"], strict=True)
            ]))  # [B, D] or [B, P, D]
        return {**batch, "images": images}


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
        ids = torch.from_numpy(np.stack([np.asarray(self.tokens[i * L : (i + 1) * L], dtype=np.int64)
                                         for i in indices]))  # [B, L]
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                 "index": torch.as_tensor(indices, dtype=torch.long)}
        if self.word_starts is not None:
            batch["num_words"] = torch.from_numpy(self.word_starts[ids.numpy()].sum(axis=1).astype(np.int64))
        return batch


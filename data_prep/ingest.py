"""Stage 1: ingest and normalise BabyLM-format data into `prepared/ingest/`.

Reads, under `--data_dir`:
  text/*.train                one utterance or paragraph per line (the text-only portion)
  captions/*.jsonl            {"image": path relative to the file (or absolute), "caption": str}
  captions/X_captions.json    JSON list of captions, aligned by row with precomputed image
  + X_*.npy                   features (e.g. X_dino_v2_states_1of2.npy, _2of2.npy) [N, D] float32
and writes two `datasets` datasets: `text` (text, source) and `captions` (caption, source,
num_words, and either pixel_values [3, S, S] uint8 or feature_file + feature_row). Features
stay in their .npy files and are memory-mapped at training time, never copied or loaded whole.
Blank text lines are dropped and counted; any caption problem is an error naming file:line.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from tqdm import tqdm

from babymm.files import DataError, atomic_dir
from babymm.images import ImageError, load_image
from babymm.text import count_words, normalize_text
from data_prep.stage import (
    file_fingerprint,
    fingerprint,
    is_up_to_date,
    log,
    read_manifest,
    run_cli,
    stage_parser,
    write_manifest,
)

STAGE = "ingest"


def out_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "prepared" / STAGE


def _source_files(data_dir: Path) -> tuple[list[Path], list[Path], list[Path]]:
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data directory does not exist; pass --data_dir pointing at "
                        "BabyLM-format data, or generate the built-in world (python -m data_prep.world)")
    text = sorted((data_dir / "text").glob("*.train"))
    jsonl = sorted((data_dir / "captions").glob("*.jsonl"))
    feats = sorted((data_dir / "captions").glob("*_captions.json"))
    if not text and not jsonl and not feats:
        raise DataError(f"{data_dir}: no text/*.train, captions/*.jsonl or captions/*_captions.json "
                        "files; see README 'Data formats'")
    if jsonl and feats:
        raise DataError(f"{data_dir / 'captions'}: holds both raw-image jsonl and precomputed-feature "
                        "json captions; one run uses one kind of image input, keep one")
    return text, jsonl, feats


def _feature_files(captions_json: Path) -> list[Path]:
    prefix = captions_json.name[: -len("_captions.json")]
    files = sorted(captions_json.parent.glob(f"{prefix}_*.npy"))
    if not files:
        raise DataError(f"{captions_json}: no feature files {prefix}_*.npy beside it; "
                        "precomputed captions need their aligned [N, D] float32 features")
    return files


def _read_text(files: list[Path], skipped: dict[str, int]) -> Iterator[dict[str, Any]]:
    for path in files:
        with path.open(encoding="utf-8") as f:
            for line in f:
                text = normalize_text(line)
                if not text:
                    skipped[path.name] = skipped.get(path.name, 0) + 1
                    continue
                yield {"text": text, "source": path.stem}


def _clean_caption(raw: Any, where: str) -> str:
    if not isinstance(raw, str):
        raise DataError(f"{where}: caption must be a string, got {type(raw).__name__}")
    caption = normalize_text(raw)
    if not caption:
        raise DataError(f"{where}: empty caption; remove the record or give it a caption")
    return caption


def _read_jsonl_captions(files: list[Path], image_size: int) -> Iterator[dict[str, Any]]:
    for path in files:
        lines = path.read_text(encoding="utf-8").splitlines()
        for lineno, line in enumerate(tqdm(lines, desc=f"ingest {path.name}", unit="img"), 1):
            where = f"{path}:{lineno}"
            if not line.strip():
                raise DataError(f"{where}: blank line in a jsonl file; remove it")
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: malformed JSON ({e.msg}); each line must be one object") from e
            if not isinstance(record, dict) or "image" not in record or "caption" not in record:
                raise DataError(f"{where}: record needs 'image' and 'caption' keys")
            caption = _clean_caption(record["caption"], where)
            image = Path(record["image"])
            image = image if image.is_absolute() else (path.parent / image)
            try:
                pixels = load_image(image, image_size)
            except (ImageError, FileNotFoundError) as e:
                raise DataError(f"{where}: {e}") from e
            yield {"caption": caption, "source": path.stem, "num_words": count_words(caption),
                   "pixel_values": pixels}


def _read_feature_captions(files: list[Path], feature_files: list[str]) -> Iterator[dict[str, Any]]:
    for path in files:
        try:
            captions = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from e
        if not isinstance(captions, list):
            raise DataError(f"{path}: expected a JSON list of caption strings")
        rows = 0
        for f in _feature_files(path):
            arr = np.load(f, mmap_mode="r")
            if arr.ndim < 2:
                raise DataError(f"{f}: features must be [N, D] or [N, P, D], got shape {arr.shape}")
            feature_files.append(str(f.resolve()))
            for r in range(arr.shape[0]):
                if rows + r >= len(captions):
                    break
                where = f"{path}: record {rows + r}"
                caption = _clean_caption(captions[rows + r], where)
                yield {"caption": caption, "source": path.stem, "num_words": count_words(caption),
                       "feature_file": len(feature_files) - 1, "feature_row": r}
            rows += arr.shape[0]
        if rows != len(captions):
            raise DataError(f"{path}: {len(captions)} captions but {rows} feature rows in its .npy files; "
                            "they must align row by row")


def _from_generator(gen, **kwargs) -> datasets.Dataset:
    """`Dataset.from_generator`, re-raising our one-line DataError instead of its wrapper."""
    try:
        return datasets.Dataset.from_generator(gen, **kwargs)
    except datasets.exceptions.DatasetGenerationError as e:
        cause = e.__cause__ or e.__context__
        if isinstance(cause, DataError):
            raise cause from None
        raise


def require_ingested(data_dir: Path, captions: bool = False) -> dict[str, Any]:
    """The ingest manifest, or a DataError saying to run the ingest stage first."""
    manifest = read_manifest(out_dir(data_dir))
    if manifest is None:
        raise DataError(f"{out_dir(data_dir)}: not found; run the ingest stage first "
                        f"(python -m data_prep.ingest --data_dir {data_dir})")
    if captions and not manifest["captions"]:
        raise DataError(f"{data_dir}: no image-caption data was ingested; this stage needs captions "
                        "(captions/*.jsonl or captions/*_captions.json)")
    return manifest


def load_text(data_dir: Path) -> datasets.Dataset | None:
    """The ingested text-only portion, or None when the data has none."""
    path = out_dir(data_dir) / "text"
    return datasets.load_from_disk(str(path)) if path.exists() else None


def ingest(data_dir: Path, image_size: int = 32, overwrite: bool = False) -> Path:
    data_dir = Path(data_dir)
    text_files, jsonl_files, feat_files = _source_files(data_dir)
    all_inputs = text_files + jsonl_files + feat_files
    fp = fingerprint(STAGE, file_fingerprint(all_inputs), image_size)
    out = out_dir(data_dir)
    if not overwrite and is_up_to_date(out, fp):
        log(STAGE, f"{out} is up to date")
        return out
    skipped: dict[str, int] = {}
    feature_files: list[str] = []
    with atomic_dir(out) as tmp:
        cache = tmp / "cache"
        n_text = 0
        if text_files:  # an empty dataset cannot be saved and reloaded, so none is written
            text_ds = _from_generator(
                _read_text, gen_kwargs={"files": text_files, "skipped": skipped}, cache_dir=str(cache),
                features=datasets.Features({"text": datasets.Value("string"), "source": datasets.Value("string")}),
            )
            n_text = text_ds.num_rows
            if n_text:
                text_ds.save_to_disk(str(tmp / "text"))
            del text_ds
        if jsonl_files:
            features = datasets.Features({
                "caption": datasets.Value("string"), "source": datasets.Value("string"),
                "num_words": datasets.Value("int32"),
                "pixel_values": datasets.Array3D((3, image_size, image_size), "uint8"),
            })
            cap_ds = _from_generator(
                _read_jsonl_captions, gen_kwargs={"files": jsonl_files, "image_size": image_size},
                features=features, cache_dir=str(cache))
            image_input = "pixels"
        elif feat_files:
            cap_ds = datasets.Dataset.from_list(list(_read_feature_captions(feat_files, feature_files)))
            image_input = "features"
        else:
            cap_ds, image_input = None, "none"
        if cap_ds is not None:
            cap_ds.save_to_disk(str(tmp / "captions"))
        n_caps = cap_ds.num_rows if cap_ds is not None else 0
        del cap_ds
        shutil.rmtree(cache, ignore_errors=True)
        write_manifest(
            tmp, STAGE, fp, data_dir=str(data_dir.resolve()), image_size=image_size,
            image_input=image_input, feature_files=feature_files,
            text_files=[str(p) for p in text_files], caption_files=[str(p) for p in jsonl_files + feat_files],
            text_lines=n_text, captions=n_caps, blank_text_lines_skipped=skipped,
        )
    total_skipped = sum(skipped.values())
    log(STAGE, f"{n_text} text lines, {n_caps} captions ({image_input}); "
               f"{total_skipped} blank text lines skipped -> {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--image_size", type=int, default=32)
    return run_cli(p, argv, lambda a: ingest(a.data_dir, a.image_size, a.overwrite))


if __name__ == "__main__":
    sys.exit(main())

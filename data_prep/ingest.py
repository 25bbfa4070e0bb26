"""Stage 1: ingest and normalise BabyLM-format data into `prepared/ingest/`.

Reads, under `--data_dir`:
  text/*.train                one utterance or paragraph per line (the text-only portion)
  captions/*.jsonl            {"image": path relative to the file (or absolute), "caption": str}
                              (with --image_root DIR: relative to DIR, e.g. COCO's train2017/x.jpg)
  captions/X_captions.json    JSON list of captions, aligned by row with precomputed image
  + X_*.npy                   features (e.g. X_dino_v2_states_1of2.npy, _2of2.npy) [N, D] float32
and writes two `datasets` datasets: `text` (text, source) and `captions` (caption, source,
num_words, and either pixel_values [3, S, S] uint8 or feature_file + feature_row). Features
stay in their .npy files and are memory-mapped at training time, never copied or loaded whole.
Blank text lines are dropped and counted, and an empty (0-byte) .train file is reported. A bad
record (a line that is not UTF-8, malformed JSON, an empty caption, a missing, unreadable or
outside-the-data-directory image, a literal special-token string such as `<image>`) is an error
naming file:line, or with `on_bad_record="skip"` is skipped and counted per file and reason
(`skipped_records` in the manifest). A problem with a whole file (empty captions file, truncated
JSON or .npy, features of the wrong shape or dtype, captions and feature rows that do not align)
is always an error.

Images must lie inside the data directory (checked by name, so a symlinked image folder inside
it is fine), or, with `--image_root DIR` (LLaVA's --image_folder), inside DIR: an image store
kept once outside the data (COCO, CC3M) and shared by several caption files. Relative image
paths then resolve against DIR, an absolute path or a `..` that leads out of DIR is a bad record
naming file:line, and an image's `image_id` is its path relative to DIR. The root is part of
the ingest fingerprint (another root is other data) and is recorded in the manifest
(`image_root`), where feature extraction reads the images from.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
from tqdm import tqdm

from babymm.files import (
    BadRecord,
    DataError,
    atomic_dir,
    decode_line,
    iter_lines,
    load_npy,
    parse_jsonl_line,
    read_json,
)
from babymm.images import load_record_image, record_image_path
from babymm.text import count_words, normalize_text
from babymm.tokenizer import IMAGE_TOKEN, SPECIALS
from data_prep.stage import (
    file_fingerprint,
    fingerprint,
    is_up_to_date,
    log,
    prepared_dir,
    read_manifest,
    run_cli,
    stage_parser,
    write_manifest,
)

STAGE = "ingest"
VERSION = 3  # 2: captions carry image_id, text lines num_words; 3: normalize_text drops invisible characters
ON_BAD_RECORD = ("error", "skip")
# in training text the fast tokenizer would turn these into the special ids
SPECIAL_STRINGS = (*(token for token, _ in SPECIALS.values()), IMAGE_TOKEN)
# every special string has this character: a text without it needs no further look (the fast path)
_SPECIAL_MARK = "<"
assert all(_SPECIAL_MARK in t for t in SPECIAL_STRINGS)
WRITE_ROWS = 50_000  # rows per Arrow record batch written by ingest
IMAGE_ROOT_HELP = ("directory the relative image paths of captions/*.jsonl resolve against, and the only place "
                   "images may come from (e.g. a COCO or CC3M image store shared by several caption files); "
                   "default: paths relative to each jsonl file, inside --data_dir")


def out_dir(data_dir: Path, subset: str | None = None) -> Path:
    return prepared_dir(data_dir, subset) / STAGE


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


_PART = re.compile(r"^(?P<stem>.+)_(?P<part>\d+)of(?P<parts>\d+)\.npy$")


def _feature_files(captions_json: Path) -> list[Path]:
    """The feature files of `X_captions.json`: `X_<name>.npy`, or its parts `X_<name>_1of12.npy` ...
    `X_<name>_12of12.npy` in part order (by number: `_10of12` comes after `_2of12`). Every part
    must be there, and one feature family only (two would be concatenated into misaligned rows)."""
    prefix = captions_json.name[: -len("_captions.json")]
    files = sorted(captions_json.parent.glob(f"{prefix}_*.npy"))
    if not files:
        raise DataError(f"{captions_json}: no feature files {prefix}_*.npy beside it; "
                        "precomputed captions need their aligned [N, D] float32 features")
    families: dict[str, list[tuple[int, int, Path]]] = {}
    for f in files:
        m = _PART.match(f.name)
        stem, part, parts = (m["stem"], int(m["part"]), int(m["parts"])) if m else (f.name[:-4], 1, 1)
        families.setdefault(stem, []).append((part, parts, f))
    if len(families) > 1:
        raise DataError(f"{captions_json}: more than one set of feature files beside it "
                        f"({', '.join(sorted(families))}); keep the one the captions align with")
    (stem, found), = families.items()
    found.sort()
    totals = {parts for _, parts, _ in found}
    if len(totals) != 1 or [p for p, _, _ in found] != list(range(1, totals.pop() + 1)):
        raise DataError(f"{captions_json}: feature parts of {stem} are {', '.join(f.name for _, _, f in found)}; "
                        "expected _1ofN ... _NofN, each once: restore the missing part")
    return [f for _, _, f in found]


def image_root_of(image_root: str | Path | None) -> Path | None:
    """`--image_root` made absolute by name (a symlink is not followed, as for the data
    directory), or None; a DataError unless it is a directory."""
    if image_root is None:
        return None
    root = Path(os.path.normpath(os.path.abspath(image_root)))
    if not root.is_dir():
        raise DataError(f"--image_root {image_root}: not a directory; pass the directory the caption files' "
                        "image paths are relative to")
    return root


def _image_path(name: Any, jsonl: Path, data_dir: Path, image_root: Path | None, where: str) -> Path:
    """The image a jsonl record names: relative to `image_root` and inside it, or (no root)
    relative to the jsonl file and inside the data directory. BadRecord naming `where` otherwise."""
    if image_root is None:
        return record_image_path(name, jsonl.parent, data_dir, where)
    return record_image_path(name, image_root, image_root, where, outside=(
        f"--image_root {image_root}; give it relative to that directory, without a '..' leading out of it",
        "image outside the image root"))


def _jsonl_images(files: list[Path], data_dir: Path, image_root: Path | None = None) -> list[Path]:
    """The image files the jsonl records name (those that exist), for the ingest fingerprint:
    an image replaced in place must make the next ingest redo its work. Bad lines are left for
    the ingest itself to report."""
    images: set[Path] = set()
    for path in files:
        for _, raw in iter_lines(path):
            try:
                record = json.loads(raw)
                image = Path(record["image"])
            except (ValueError, KeyError, TypeError):
                continue
            image = image if image.is_absolute() else (image_root or path.parent) / image
            if image.is_file():
                images.add(image)
    return sorted(images)


def _bad(skipped: dict[str, dict[str, int]], on_bad: str, path: Path, reason: str, message: str) -> None:
    """A bad record: raise `message` (on_bad "error"), or count it under its file and `reason`."""
    if on_bad != "skip":
        raise DataError(f"{message}, or pass --on_bad_record skip")
    per_file = skipped.setdefault(path.name, {})
    per_file[reason] = per_file.get(reason, 0) + 1


def special_string(text: str) -> str | None:
    """The first literal special-token string in normalised `text` (e.g. '<image>', '<S>'), as
    written, or None. Case-blind: the fast tokenizer matches them after lowercasing."""
    if _SPECIAL_MARK not in text:
        return None
    lower = text.lower()
    found = [(lower.find(t), t) for t in SPECIAL_STRINGS if t in lower]
    if not found:
        return None
    start, token = min(found)
    return text[start : start + len(token)] if len(lower) == len(text) else token


def _special_problem(token: str) -> str:
    return f"literal special-token string {token!r} in training text; remove it"


def _read_text(files: list[Path], blank: dict[str, int], skipped: dict[str, dict[str, int]],
               on_bad: str) -> Iterator[dict[str, Any]]:
    for path in files:
        source = path.stem
        for lineno, raw in iter_lines(path):
            where = f"{path}:{lineno}"
            try:
                line = decode_line(raw, where)
            except DataError as e:
                _bad(skipped, on_bad, path, "not valid UTF-8", str(e))
                continue
            for part in line.split("\r"):  # a lone CR ends a line too, as in text-mode reading
                text = normalize_text(part)
                if not text:
                    blank[path.name] = blank.get(path.name, 0) + 1
                elif token := special_string(text):
                    _bad(skipped, on_bad, path, "special-token string", f"{where}: {_special_problem(token)}")
                else:
                    yield {"text": text, "source": source, "num_words": len(text.split())}  # = count_words


def _caption(raw: Any) -> tuple[str | None, str, str]:
    """(the normalised caption, "", "") or (None, reason, problem)."""
    if not isinstance(raw, str):
        return None, "caption not a string", f"caption must be a string, got {type(raw).__name__}; fix it"
    caption = normalize_text(raw)
    if not caption:
        return None, "empty caption", "empty caption; remove the record or give it a caption"
    if token := special_string(caption):
        return None, "special-token string", _special_problem(token)
    return caption, "", ""


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(block.count(b"\n") for block in iter(partial(f.read, 1 << 20), b""))


def _read_jsonl_captions(files: list[Path], image_size: int, data_dir: Path,
                         skipped: dict[str, dict[str, int]], on_bad: str,
                         image_root: Path | None = None) -> Iterator[dict[str, Any]]:
    for path in files:
        lines = iter_lines(path)
        for lineno, raw in tqdm(lines, desc=f"ingest {path.name}", unit="img", total=_count_lines(path)):
            where = f"{path}:{lineno}"
            bad = partial(_bad, skipped, on_bad, path)
            try:
                record = parse_jsonl_line(raw, where)
            except BadRecord as e:
                bad(e.reason, str(e))
                continue
            if record is None:
                bad("blank line", f"{where}: blank line in a jsonl file; remove it")
                continue
            if "image" not in record or "caption" not in record:
                bad("missing key", f"{where}: record needs 'image' and 'caption' keys; add them")
                continue
            caption, reason, problem = _caption(record["caption"])
            if caption is None:
                bad(reason, f"{where}: {problem}")
                continue
            try:  # the image path is relative to the jsonl file (or --image_root), or absolute
                image = _image_path(record["image"], path, data_dir, image_root, where)
                pixels = load_record_image(image, image_size, where, fix="remove the record")
            except BadRecord as e:
                bad(e.reason, str(e))
                continue
            yield {"caption": caption, "source": path.stem, "num_words": count_words(caption),
                   "image_id": _image_id(image, image_root or data_dir), "pixel_values": pixels}


def _image_id(image: Path, data_dir: Path) -> str:
    """The image a caption shows, as a path relative to the data directory (or --image_root):
    captions with the same id share an image (a budget keeps them together; `nouns` takes their max)."""
    return Path(os.path.relpath(os.path.abspath(image), os.path.abspath(data_dir))).as_posix()


def _load_features(path: Path) -> np.ndarray:
    arr = load_npy(path)
    if arr.ndim not in (2, 3):
        raise DataError(f"{path}: features must be [N, D] or [N, P, D], got shape {arr.shape}; regenerate them")
    if not np.issubdtype(arr.dtype, np.floating):
        raise DataError(f"{path}: features must be floating point (float16/32/64), got {arr.dtype}; "
                        "convert them, e.g. np.save(path, arr.astype(np.float32))")
    return arr


def _read_feature_captions(files: list[Path], feature_files: list[str], skipped: dict[str, dict[str, int]],
                           on_bad: str) -> Iterator[dict[str, Any]]:
    """Captions aligned with feature rows. Every file is checked (JSON, .npy shapes, counts)
    before any caption is yielded; a bad caption is skipped with its feature row."""
    checked = []
    row_shape: tuple[Path, tuple[int, ...]] | None = None
    for path in files:
        captions = read_json(path)
        if not isinstance(captions, list):
            raise DataError(f"{path}: expected a JSON list of caption strings, got {type(captions).__name__}")
        arrays = [(f, _load_features(f)) for f in _feature_files(path)]
        for f, arr in arrays:
            row_shape = row_shape or (f, arr.shape[1:])
            if arr.shape[1:] != row_shape[1]:
                raise DataError(f"{f}: feature rows of shape {arr.shape[1:]}, but {row_shape[0].name} has "
                                f"{row_shape[1]}; all feature files must share one row shape")
        rows = sum(arr.shape[0] for _, arr in arrays)
        if rows != len(captions):
            raise DataError(f"{path}: {len(captions)} captions but {rows} feature rows in its .npy files "
                            f"({', '.join(f.name for f, _ in arrays)}); they must align row by row")
        checked.append((path, captions, arrays))
    for path, captions, arrays in checked:
        first = 0  # the caption index of row 0 of the feature file f
        source = path.stem
        for f, arr in arrays:
            feature_files.append(os.path.abspath(f))  # lexical: a symlinked data directory stays as named
            file_index, name = len(feature_files) - 1, f.name
            for r in range(arr.shape[0]):
                caption, reason, problem = _caption(captions[first + r])
                if caption is None:  # skipped with its feature row: the rest stay aligned
                    _bad(skipped, on_bad, path, reason, f"{path}: record {first + r}: {problem}")
                    continue
                yield {"caption": caption, "source": source, "num_words": len(caption.split()),  # = count_words
                       "image_id": f"{name}#{r}", "feature_file": file_index, "feature_row": r}
            first += arr.shape[0]


def _write_dataset(rows: Iterator[dict[str, Any]], features: datasets.Features, path: Path,
                   split: str | None = None) -> datasets.Dataset | None:
    """The rows (plain string and integer columns) written to an Arrow stream file at `path`,
    WRITE_ROWS at a time, and memory-mapped as a Dataset with `features`: what
    `Dataset.from_generator` makes, without its per-row encoding, and without `from_list`'s
    list of every row in memory. None when there are no rows."""
    schema = features.arrow_schema
    names = list(features)
    n = 0
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        while True:
            chunk = list(islice(rows, WRITE_ROWS))
            if not chunk:
                break
            columns = [[row[k] for row in chunk] for k in names]
            writer.write_batch(pa.RecordBatch.from_arrays(
                [pa.array(c, type=schema.field(k).type) for k, c in zip(names, columns, strict=True)], schema=schema))
            n += len(chunk)
    if n == 0:
        return None
    return datasets.Dataset.from_file(str(path), info=datasets.DatasetInfo(features=features), split=split)


def _from_generator(gen, **kwargs) -> datasets.Dataset | None:
    """`Dataset.from_generator`, re-raising our one-line DataError instead of its wrapper; None
    when the generator yields nothing (e.g. only empty files, or every record skipped)."""
    try:
        return datasets.Dataset.from_generator(gen, **kwargs)
    except datasets.exceptions.DatasetGenerationError as e:
        cause = e.__cause__ or e.__context__
        if isinstance(cause, DataError):
            raise cause from None
        raise
    except ValueError as e:
        if "corresponds to no data" in str(e):  # datasets' word for a split with no examples
            return None
        raise


def require_ingested(data_dir: Path, captions: bool = False, subset: str | None = None) -> dict[str, Any]:
    """The ingest manifest (of a budgeted subset: the subset's, in the same form), or a DataError
    saying which stage to run first."""
    manifest = read_manifest(out_dir(data_dir, subset))
    if manifest is None:
        how = (f"python -m data_prep.ingest --data_dir {data_dir}" if subset is None
               else f"python -m data_prep.budget --data_dir {data_dir} with the budget that names {subset}")
        raise DataError(f"{out_dir(data_dir, subset)}: not found; run the {'ingest' if subset is None else 'budget'} "
                        f"stage first ({how})")
    if captions and not manifest["captions"]:
        raise DataError(f"{data_dir}: no image-caption data was ingested; this stage needs captions "
                        "(captions/*.jsonl or captions/*_captions.json)")
    return manifest


def load_text(data_dir: Path, subset: str | None = None) -> datasets.Dataset | None:
    """The ingested text-only portion, or None when the data has none."""
    path = out_dir(data_dir, subset) / "text"
    return datasets.load_from_disk(str(path)) if path.exists() else None


def ingest(data_dir: Path, image_size: int = 32, overwrite: bool = False, on_bad_record: str = "error",
           image_root: str | Path | None = None) -> Path:
    """`on_bad_record`: "error" (a bad record stops the stage with file:line) or "skip" (it is
    left out and counted in the manifest's `skipped_records`). `image_root`: the directory the
    jsonl image paths are relative to and confined to (default: each jsonl file's directory,
    confined to `data_dir`)."""
    data_dir = Path(os.path.abspath(data_dir))  # one fingerprint however it is written (links kept)
    if on_bad_record not in ON_BAD_RECORD:
        raise DataError(f"on_bad_record {on_bad_record!r} unknown; use one of {', '.join(ON_BAD_RECORD)}")
    root = image_root_of(image_root)
    text_files, jsonl_files, feat_files = _source_files(data_dir)
    # what ingest reads: the text and caption files, the feature files, and the images
    all_inputs = (text_files + jsonl_files + feat_files + [f for p in feat_files for f in _feature_files(p)]
                  + _jsonl_images(jsonl_files, data_dir, root))
    # another image root is other data (the same names, other images); none leaves the old fingerprint
    fp = fingerprint(STAGE, VERSION, file_fingerprint(all_inputs), image_size, on_bad_record,
                     *([str(root)] if root is not None else []))
    out = out_dir(data_dir)
    if not overwrite and is_up_to_date(out, fp):
        log(STAGE, f"{out} is up to date")
        return out
    for path in jsonl_files + feat_files:  # a whole file is never skipped
        if path.stat().st_size == 0:
            raise DataError(f"{path}: empty file (0 bytes); a captions file needs at least one record: "
                            "fill it or remove it")
    empty_text_files = [p.name for p in text_files if p.stat().st_size == 0]
    blank: dict[str, int] = {}
    skipped: dict[str, dict[str, int]] = {}
    feature_files: list[str] = []
    with atomic_dir(out) as tmp:
        cache = tmp / "cache"
        n_text = 0
        if text_files:  # an empty dataset cannot be saved and reloaded, so none is written
            cache.mkdir(exist_ok=True)
            text_ds = _write_dataset(
                _read_text(text_files, blank, skipped, on_bad_record),
                datasets.Features({"text": datasets.Value("string"), "source": datasets.Value("string"),
                                   "num_words": datasets.Value("int32")}),
                cache / "text.arrow", split="train")
            n_text = text_ds.num_rows if text_ds is not None else 0
            if n_text:
                text_ds.save_to_disk(str(tmp / "text"))
            del text_ds
        if jsonl_files:
            features = datasets.Features({
                "caption": datasets.Value("string"), "source": datasets.Value("string"),
                "num_words": datasets.Value("int32"), "image_id": datasets.Value("string"),
                "pixel_values": datasets.Array3D((3, image_size, image_size), "uint8"),
            })
            cap_ds = _from_generator(
                _read_jsonl_captions, features=features, cache_dir=str(cache),
                gen_kwargs={"files": jsonl_files, "image_size": image_size, "data_dir": data_dir,
                            "skipped": skipped, "on_bad": on_bad_record, "image_root": root})
            image_input = "pixels"
        elif feat_files:  # the columns and types Dataset.from_list inferred
            cache.mkdir(exist_ok=True)
            cap_ds = _write_dataset(
                _read_feature_captions(feat_files, feature_files, skipped, on_bad_record),
                datasets.Features({"caption": datasets.Value("string"), "source": datasets.Value("string"),
                                   "num_words": datasets.Value("int64"), "image_id": datasets.Value("string"),
                                   "feature_file": datasets.Value("int64"), "feature_row": datasets.Value("int64")}),
                cache / "captions.arrow")
            image_input = "features"
        else:
            cap_ds, image_input = None, "none"
        if image_input != "none" and (cap_ds is None or cap_ds.num_rows == 0):
            why = f" (skipped as bad: {_skipped_summary(skipped)})" if skipped else ""
            raise DataError(f"{data_dir / 'captions'}: no caption records left{why}; fix the data "
                            "or remove the captions")
        if cap_ds is not None:
            cap_ds.save_to_disk(str(tmp / "captions"))
        n_caps = cap_ds.num_rows if cap_ds is not None else 0
        del cap_ds
        shutil.rmtree(cache, ignore_errors=True)
        write_manifest(
            tmp, STAGE, fp, data_dir=str(data_dir.resolve()), image_root=str(root) if root is not None else None,
            image_size=image_size,
            image_input=image_input, feature_files=feature_files,
            text_files=[str(p) for p in text_files], caption_files=[str(p) for p in jsonl_files + feat_files],
            text_lines=n_text, captions=n_caps, blank_text_lines_skipped=blank,
            empty_text_files=empty_text_files, on_bad_record=on_bad_record, skipped_records=skipped,
        )
    n_bad = sum(sum(reasons.values()) for reasons in skipped.values())
    empty = f"; empty text files: {', '.join(empty_text_files)}" if empty_text_files else ""
    bad = f" ({_skipped_summary(skipped)})" if n_bad else ""
    log(STAGE, f"{n_text} text lines, {n_caps} captions ({image_input}); "
               f"{sum(blank.values())} blank text lines skipped; {n_bad} bad records skipped{bad}{empty} -> {out}")
    return out


def _skipped_summary(skipped: dict[str, dict[str, int]]) -> str:
    return "; ".join(f"{name}: " + ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items()))
                     for name, reasons in sorted(skipped.items()))


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--on_bad_record", choices=ON_BAD_RECORD, default="error",
                   help="a bad text line or caption record: stop with its file:line (error), or leave it "
                        "out and count it in the manifest (skip)")
    p.add_argument("--image_root", type=Path, default=None, help=IMAGE_ROOT_HELP)
    return run_cli(p, argv, lambda a: ingest(a.data_dir, a.image_size, a.overwrite, a.on_bad_record, a.image_root))


if __name__ == "__main__":
    sys.exit(main())

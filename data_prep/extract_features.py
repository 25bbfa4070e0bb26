"""Frozen-encoder features: raw training images -> `prepared/features/<key>/` (memory-mapped rows).

    python -m data_prep.extract_features --data_dir D --vision_model PATH --vision_pooling cls

For raw-image data (captions/*.jsonl) trained with `--vision_encoder features --vision_model
PATH`: every distinct image of the whole data's ingested captions is read from its original
file (`DATA/<image_id>`, or `IMAGE_ROOT/<image_id>` when ingest was given `--image_root`, as
its manifest records; never the small ingested pixels), encoded once by the frozen model in
PATH (babymm.frozen_vision) with the given pooling, and written as one row of `features.npy`
([N, D] float32, or [N, T, D] for `patch`), rows in sorted image_id order, listed in
`image_ids.json`. Budgeted subsets select their captions from the whole data, so one
extraction serves all of them; training looks a caption's row up by its image_id
(babymm.data.CaptionData(features_dir=...)). `<key>` is `frozen_vision.model_key`: the model
directory's name, the pooling and a hash of its contents, so another model or pooling gets its
own directory, and the stage reruns when the model or the ingested data change.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import datasets
import numpy as np
from tqdm import tqdm

from babymm import frozen_vision
from babymm.files import DataError, atomic_dir, is_inside, lexical_path, write_json_atomic
from data_prep import ingest as ingest_stage
from data_prep.stage import (
    fingerprint,
    is_up_to_date,
    log,
    prepared_dir,
    run_cli,
    stage_parser,
    write_manifest,
)

STAGE = "features"
VERSION = 1
FEATURES, IMAGE_IDS = "features.npy", "image_ids.json"
READERS = 4  # threads decoding images


def out_dir(data_dir: Path, key: str) -> Path:
    """Always the whole data's (`prepared/features/<key>`), whatever subset is trained on."""
    return prepared_dir(data_dir) / STAGE / key


def image_ids(captions: datasets.Dataset) -> list[str]:
    """The distinct image_ids of the ingested captions, sorted: the row order of the features."""
    ids: set[str] = set()
    for batch in captions.select_columns(["image_id"]).with_format(None).iter(batch_size=65536):
        ids.update(batch["image_id"])
    return sorted(ids)


def _caption_of(captions: datasets.Dataset, image_id: str) -> str:
    """Which caption record shows `image_id`, for an error message."""
    start = 0
    for batch in captions.select_columns(["image_id", "caption", "source"]).with_format(None).iter(batch_size=65536):
        for j, found in enumerate(batch["image_id"]):
            if found == image_id:
                return f"caption row {start + j} of {batch['source'][j]} ({batch['caption'][j]!r})"
        start += len(batch["image_id"])
    return "no caption"


def extract_features(data_dir: str | Path, vision_model: str | Path, pooling: str = "cls", batch_size: int = 32,
                     overwrite: bool = False, device: str | None = None) -> Path:
    """Encode every distinct training image with the frozen model; returns the features dir."""
    data_dir = Path(data_dir)
    frozen_vision.check_pooling(pooling)
    if batch_size < 1:
        raise DataError(f"--batch_size {batch_size} must be positive")
    upstream = ingest_stage.require_ingested(data_dir, captions=True)
    if upstream["image_input"] != "pixels":
        raise DataError(f"{data_dir}: the captions come with precomputed image features "
                        f"({upstream['image_input']}), so there are no raw images to encode; train on those "
                        "features (--vision_model then only computes the eval images' features)")
    key = frozen_vision.model_key(vision_model, pooling)
    fp = fingerprint(STAGE, VERSION, upstream["fingerprint"], key)
    out = out_dir(data_dir, key)
    if not overwrite and is_up_to_date(out, fp):
        log(STAGE, f"{out} is up to date")
        return out
    captions = datasets.load_from_disk(str(ingest_stage.out_dir(data_dir) / "captions"))
    ids = image_ids(captions)
    # the directory ingest resolved the image paths against (its manifest's image_root, else the data)
    root = Path(upstream["image_root"]) if upstream.get("image_root") else data_dir.absolute()

    def paths(batch: list[str]) -> list[Path]:
        out = [lexical_path(i, root) for i in batch]
        for i, p in zip(batch, out, strict=True):  # ingest refuses such images; the check costs nothing
            if not is_inside(p, root):
                raise DataError(f"{ingest_stage.out_dir(data_dir)}: image_id {i!r} is outside {root}; "
                                "re-run ingest (python -m data_prep.ingest --overwrite)")
        return out

    model = frozen_vision.load_frozen_vision(vision_model, pooling, device)
    started = time.perf_counter()
    batches = [slice(s, s + batch_size) for s in range(0, len(ids), batch_size)]
    with (atomic_dir(out) as tmp, ThreadPoolExecutor(1) as ahead, ThreadPoolExecutor(READERS) as readers,
          tqdm(total=len(ids), desc=f"features {key}", unit="img") as bar):

        def read(b: slice) -> Future:  # the next batch is decoded while this one is encoded
            return ahead.submit(frozen_vision.read_images, paths(ids[b]), [f"image {i!r}" for i in ids[b]], readers)

        table = None
        pending = read(batches[0])
        for n, b in enumerate(batches):
            try:
                images = pending.result()
            except frozen_vision.ImageReadError as e:
                raise DataError(f"{data_dir}: {e}, shown by {_caption_of(captions, ids[b][e.index])}; restore "
                                "the image, or remove its captions and re-run ingest") from None
            if n + 1 < len(batches):
                pending = read(batches[n + 1])
            rows = model.encode_batch(images)
            if table is None:  # the row shape is known once the model has run
                table = np.lib.format.open_memmap(tmp / FEATURES, mode="w+", dtype=np.float32,
                                                  shape=(len(ids), *rows.shape[1:]))
            table[b] = rows
            bar.update(len(images))
        table.flush()
        shape = list(table.shape)
        del table
        write_json_atomic(tmp / IMAGE_IDS, ids)
        write_manifest(tmp, STAGE, fp, **model.describe(), data_dir=str(data_dir.resolve()),
                       ingest_fingerprint=upstream["fingerprint"], images=len(ids), captions=captions.num_rows,
                       feature_shape=shape, dtype="float32", seconds=round(time.perf_counter() - started, 1))
    log(STAGE, f"{len(ids)} images of {captions.num_rows} captions -> {shape} ({pooling}) -> {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--vision_model", required=True,
                   help="local directory of a frozen pretrained vision model and its image processor (e.g. DINOv2)")
    p.add_argument("--vision_pooling", default="cls", choices=frozen_vision.POOLINGS,
                   help="cls: the CLS token; mean: the mean of the patch tokens; patch: every token [T, D]")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--device", default=None, help="default: cuda if there is one, else cpu")

    def run(a) -> Path:
        if a.subset is not None:
            log(STAGE, f"the whole data's features serve every subset, {a.subset} included")
        return extract_features(a.data_dir, a.vision_model, a.vision_pooling, a.batch_size, a.overwrite, a.device)

    return run_cli(p, argv, run)


if __name__ == "__main__":
    sys.exit(main())

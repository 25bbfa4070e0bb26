"""Speed of the training input pipeline alone (no model), at the real corpus's scale (a benchmark, not a test).

    python benchmarks/data_loading.py       # the 100M-word corpus (scale 10): ~4 min once its caches exist
    python benchmarks/data_loading.py --scale 1 --patch_images 2000 --batches 200 --cold_batches 50 \
        --out /tmp/dl.json                  # a quick look at a 10M-word corpus
    python benchmarks/data_loading.py --demand_pairs_per_s 5000 --demand_source "measured on 1x H100 ..."

The corpus is `benchmarks/data_prep.py`'s synthetic one in the real BabyLM multimodal layout
(`--scale 10`: 100M words, 2.9M captions row-aligned with float32 [N, 768] memory-mapped
DINOv2-like vectors, 8.9 GB), made once and cached under `--work_dir/scale-S/data`, then prepared
as `babymm/train.py` does (`data_prep.pipeline.prepare` with the `--config`'s curriculum and
vocabulary: the 2024 `git` baseline's, `length` and 32,768). The first time at scale 10 on 2 cores
that is ~15 minutes more: generate 1, prepare 6.5 (of which the tokens stage, text.npy and the
pre-tokenized captions.npy, ~6; it alone is redone when its format changes), write the patch file 1.

What is timed is the input of stage 2 exactly as train.py builds it, and nothing else:
`CaptionData(ingest, tokenizer, max_caption_tokens, with_images=True, features_dir=prepared.features,
tokens_dir=prepared.tokens)` then `advise_random_reads()` (a batch slices its pre-tokenized captions,
reads num_words / feature_file / feature_row from in-memory columns and each feature file's rows in
one sorted fancy index of a MADV_RANDOM memory map), `TextBlocks` (one fancy index of text.npy),
`step_loader(CaptionData, curriculum order, curriculum pacing)` and `step_loader(TextBlocks)` zipped
by `with_text`, with a real `accelerate.Accelerator(cpu=True)`, at the config's batch and lengths
(the 2024 recipe: 128 image-caption pairs + 128 text blocks of `block_size`, captions cut at
`max_caption_tokens`; both 128 in configs/baseline2024_git.yaml). The timed window starts at
`--start_progress` of a stage one caption epoch long (0.6: the `length` curriculum's whole pool is
open, its longest captions included). Per setting: fresh datasets and loaders (`open_seconds`),
`--warmup` batches drawn and thrown away (worker start-up), then `--batches` timed; pairs/s =
image-caption pairs delivered per second to a consumer that does nothing with them (what the
pipeline alone can feed), for num_workers in `--workers` (each of the two loaders gets that many
worker processes).

Page cache, said per row: `cold` passes start with the pipeline's files (feature .npy files, the
captions' Arrow files, captions.npy, caption_offsets.npy, text.npy) evicted from the page cache by
posix_fadvise(DONTNEED) (per file: other jobs' caches are left alone; `resident_before` is the
share of those bytes that `fincore` still finds cached), so every row a batch reads comes from the
disk: the first epoch of a run on a fresh machine. `warm` passes start with every byte of them read
once (cached): any later epoch, on a machine with the RAM to hold them (this one has 24 GB; they
take ~10 GB).

Patch tokens: a second corpus of `--patch_images` captions (drawn from the first one's) with
float32 [N, 197, 768] patch features in the same layout (`patch_captions.json` +
`patch_dino_v2_patches.npy`), ingested by data_prep, its captions tokenized by data prep's own
tokens-stage code with the main tokenizer (cached beside it), and read by the same `CaptionData`.
The real corpus's 2.9M images would need 1.7 TB of them, far beyond any RAM, so its cold rows
(reads hit the disk) are the ones that describe training on it; warm rows are an upper bound.

Where the time goes: every num_workers=0 pass also times, per batch, the caption sampler
(`StepBatchSampler.global_batch`: pacing + rng.choice), `babymm.data.cut_captions` (swapped in its
module for the pass), the feature memory maps' reads (each map wrapped), the rest of
`CaptionData.__getitems__` (in-memory columns, sort, copy, tensors), the text sampler,
`TextBlocks.__getitems__` and what is left (DataLoader, `with_text`). The wrappers cost a few
microseconds a batch. `cold_reads` (`--cold_reads` batches per feature kind, 0 skips it) compares,
from a dropped cache on the same random batches, babymm's read of a batch's feature rows
(`CaptionData.__getitems__` after `advise_random_reads`) with the same read without the advice
and with one os.preadv per row (babymm does neither of those two).

Demand: the image-caption pairs per second the base preset's GPU step would consume, ESTIMATED
(no GPU here) as the step at `--mfu` (0.40) of 989e12 FLOP/s (H100 SXM bf16 dense; `--peak_flops
X`, a measured peak, adds an alternative beside it). FLOPs per step are babymm's own count, the one
`train/mfu` uses: `babymm.speed.step_flops(decoder_shape(model), task.decoder_passes(model, batch))`
with the config's model built by train.py's `build` (its feature shape from the data: a 1-token
prefix for global vectors, 197 for patches) on a batch of the mean PADDED caption width of the timed
warm batches (rounded; what the step computes on) and `block_size`-token text blocks.
demand = mfu * peak / (FLOPs per step / pairs per step). `--demand_pairs_per_s` replaces it with a
measurement. ratio = pairs_per_s / demand; the goal is >= 10.

Writes `--out` (JSON: `pairs_per_s` = best num_workers, warm, global vectors; `pairs_per_s_cold`;
the demand and its inputs; `ratio`, `ratio_cold`; every setting; the breakdown; the cold reads;
machine, command, date) and a Markdown summary beside it (`.md`), and prints one JSON line per
setting.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# run as a script, this file's directory comes first on sys.path, where benchmarks/data_prep.py
# would shadow the data_prep package
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import torch  # noqa: E402

H100_BF16_DENSE = 989e12
FEATURE_DIM = 768
PATCH_VERSION = 1
GOAL_RATIO = 10.0


def corpus_generator() -> Any:
    """benchmarks/data_prep.py (the synthetic real-layout corpus), imported under another name."""
    spec = importlib.util.spec_from_file_location("bench_data_prep", ROOT / "benchmarks" / "data_prep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- demand ------------------------------------------------------------------------------------------
def demand_pairs_per_s(flops_per_step: float, pairs_per_step: int, peak_flops: float, mfu: float) -> float:
    """Pairs per second a step of `flops_per_step` consumes when the device runs at `mfu` of `peak_flops`."""
    return mfu * peak_flops / (flops_per_step / pairs_per_step)


def mean_shape_batch(batch: int, caption_width: float, text_batch: int, block_size: int) -> dict[str, torch.Tensor]:
    """A stage-2 batch of the measured mean padded shapes (what `decoder_passes` reads: the shapes)."""
    out = {"input_ids": torch.zeros(batch, round(caption_width), dtype=torch.long)}
    if text_batch:
        out["text_input_ids"] = torch.zeros(text_batch, block_size, dtype=torch.long)
    return out


def step_demand(model: torch.nn.Module, task: Any, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
    """babymm's own FLOP count of a training step on `batch` (babymm.speed, as `train/mfu` counts it)."""
    from babymm.speed import decoder_shape, step_flops

    shape, passes = decoder_shape(model), task.decoder_passes(model, batch)
    return {"n_params": shape.num_params, "n_layer": shape.num_layers, "n_head": shape.num_heads,
            "head_dim": shape.head_dim,
            "passes": [{"rows": q.rows, "seq_len": q.seq_len, "layer_fraction": q.layer_fraction} for q in passes],
            "flops_per_step": step_flops(shape, passes)}


# -- page cache ------------------------------------------------------------------------------------
def pipeline_files(ingest_dir: Path, tokens_dir: Path, text_file: Path | None) -> list[Path]:
    """Every file a stage-2 run reads: the feature .npy files, the captions' Arrow files (their small
    columns are read whole when CaptionData opens), the tokens stage's captions.npy and
    caption_offsets.npy, and text.npy when text blocks are mixed in."""
    manifest = json.loads((ingest_dir / "manifest.json").read_text())
    files = [Path(f) for f in manifest.get("feature_files", [])]
    files += sorted((ingest_dir / "captions").glob("*.arrow"))
    files += [tokens_dir / "captions.npy", tokens_dir / "caption_offsets.npy"]
    return files + ([text_file] if text_file is not None else [])


def drop_cache(paths: list[Path]) -> None:
    """Evict these files' pages from the page cache (those mapped by a live process stay)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm_cache(paths: list[Path]) -> None:
    """Read every byte of these files once, so they sit in the page cache."""
    buf = bytearray(64 << 20)
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


def resident_fraction(paths: list[Path]) -> float | None:
    """Share of these files' bytes in the page cache (util-linux `fincore`); None without it."""
    if shutil.which("fincore") is None:
        return None
    out = subprocess.run(["fincore", "--bytes", "--raw", "--noheadings", "--output", "RES,SIZE", *map(str, paths)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return None
    res = size = 0
    for line in out.stdout.split("\n"):
        if line.strip():
            r, s = line.split()
            res, size = res + int(r), size + int(s)
    return round(res / size, 4) if size else None


# -- the patch-feature corpus -------------------------------------------------------------------------
def make_patch_corpus(work_dir: Path, source_ingest: Path, images: int, tokens: int, seed: int = 0) -> Path:
    """`images` captions drawn from `source_ingest` with float32 [images, tokens, 768] patch features,
    in the real layout (`patch_captions.json` + `patch_dino_v2_patches.npy`); cached."""
    import datasets

    data_dir = work_dir / f"patch-{images}x{tokens}" / "data"
    params = {"version": PATCH_VERSION, "images": images, "tokens": tokens, "dim": FEATURE_DIM, "seed": seed,
              "source": str(source_ingest)}
    manifest = data_dir / "corpus.json"
    if manifest.exists() and json.loads(manifest.read_text())["params"] == params:
        return data_dir
    shutil.rmtree(data_dir, ignore_errors=True)
    (data_dir / "captions").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    source = datasets.load_from_disk(str(source_ingest / "captions"))
    rows = np.sort(rng.choice(source.num_rows, size=images, replace=False))
    captions = list(source.select(rows.tolist())["caption"])
    (data_dir / "captions" / "patch_captions.json").write_text(json.dumps(captions, ensure_ascii=False))
    path = data_dir / "captions" / "patch_dino_v2_patches.npy"
    t0 = time.perf_counter()
    corpus_generator()._write_features(path, images, rng.standard_normal((64, tokens, FEATURE_DIM), dtype=np.float32),
                                       flush_every=8)
    drop_cache([path])  # written, synced and evicted: the benchmark decides what is cached
    manifest.write_text(json.dumps({"params": params, "bytes": path.stat().st_size,
                                    "write_seconds": round(time.perf_counter() - t0, 1)}, indent=1))
    return data_dir


def patch_caption_tokens(patch_dir: Path, ingest_dir: Path, tokenizer_dir: Path) -> Path:
    """The patch corpus's captions.npy + caption_offsets.npy, made by data prep's own tokens-stage
    code with the main corpus's tokenizer (the patch corpus has no tokenizer of its own); cached."""
    from tokenizers import Tokenizer

    from babymm.files import read_json
    from data_prep.tokenize_text import _caption_tokens

    fp = [read_json(q / "manifest.json")["fingerprint"] for q in (ingest_dir, tokenizer_dir)]
    out = patch_dir / f"tokens-{fp[0]}-{fp[1]}"
    if not (out / "caption_offsets.npy").exists():
        out.mkdir(parents=True, exist_ok=True)
        flat, offsets = _caption_tokens(Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json")), ingest_dir)
        np.save(out / "captions.npy", flat)
        np.save(out / "caption_offsets.npy", offsets)
    return out


# -- the pipeline ---------------------------------------------------------------------------------------
class _TimedArray:
    """Stands in for one of `CaptionData.features` (a memory map): times its reads (`arr[rows]`,
    where the page faults happen), passes the rest (shape, dtype) through."""

    def __init__(self, arr: np.ndarray, clock: dict[str, float]):
        self._arr, self._clock = arr, clock

    def __getitem__(self, key: Any) -> np.ndarray:
        t = time.perf_counter()
        out = np.asarray(self._arr[key])
        self._clock["feature_rows"] += time.perf_counter() - t
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._arr, name)

    def __len__(self) -> int:
        return len(self._arr)


def _timed(clock: dict[str, float], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            clock[name] += time.perf_counter() - t

    return wrapper


def instrument(cap_loader: Any, text_loader: Any | None, captions: Any, text: Any | None,
               clock: dict[str, float]) -> Callable[[], None]:
    """Time the pipeline's parts on these very objects (instance attributes shadow the methods;
    `babymm.data.cut_captions`, which `__getitems__` calls by its module-level name, is swapped
    in the module). Returns what puts the module back."""
    import babymm.data

    sampler = cap_loader.batch_sampler
    sampler.global_batch = _timed(clock, "caption_sampler", sampler.global_batch)
    captions.features = [_TimedArray(a, clock) for a in captions.features]
    captions.__getitems__ = _timed(clock, "caption_items", captions.__getitems__)
    cut = babymm.data.cut_captions
    babymm.data.cut_captions = _timed(clock, "cut_captions", cut)
    if text_loader is not None:
        text_loader.batch_sampler.global_batch = _timed(clock, "text_sampler", text_loader.batch_sampler.global_batch)
        text.__getitems__ = _timed(clock, "text_blocks", text.__getitems__)

    def restore() -> None:
        babymm.data.cut_captions = cut

    return restore


BREAKDOWN = {  # component -> what it is
    "caption_sampler": "StepBatchSampler.global_batch for captions (pacing + rng.choice over the open pool)",
    "cut_captions": "babymm.data.cut_captions: slices of the pre-tokenized captions, cut, </s>, padded",
    "feature_rows": "the feature memmaps' sorted fancy-index reads (MADV_RANDOM), one per feature file",
    "caption_rest": "rest of CaptionData.__getitems__: in-memory num_words/feature_file/feature_row "
                    "columns, row sort, copy into the batch, tensors",
    "text_sampler": "StepBatchSampler.global_batch for text blocks",
    "text_blocks": "TextBlocks.__getitems__: one fancy index of text.npy + word counts",
    "loader_overhead": "the rest: DataLoader, with_text, the loop",
}


def breakdown(clock: dict[str, float], batches: int, wall: float) -> dict[str, dict[str, float]]:
    parts = {"caption_sampler": clock["caption_sampler"], "cut_captions": clock["cut_captions"],
             "feature_rows": clock["feature_rows"],
             "caption_rest": clock["caption_items"] - clock["cut_captions"] - clock["feature_rows"],
             "text_sampler": clock.get("text_sampler", 0.0), "text_blocks": clock.get("text_blocks", 0.0)}
    parts["loader_overhead"] = wall - sum(parts.values())
    return {k: {"ms_per_batch": round(1000 * v / batches, 3), "share": round(v / wall, 3)} for k, v in parts.items()}


class Pipeline:
    """What train.py's stage 2 reads: the prepared data and the recipe's batch."""

    def __init__(self, ingest_dir: Path, tokens_dir: Path, text_file: Path, tokenizer: Any, max_caption_tokens: int,
                 block_size: int, order: np.ndarray, pacing: Callable[[float], float], batch: int,
                 text_batch: int, seed: int, num_steps: int, start_step: int, features_dir: Path | None = None):
        from accelerate import Accelerator

        from babymm.tokenizer import word_starts

        self.ingest_dir, self.tokens_dir, self.text_file = ingest_dir, tokens_dir, text_file
        self.tokenizer, self.features_dir = tokenizer, features_dir
        self.max_caption_tokens, self.block_size = max_caption_tokens, block_size
        self.order, self.pacing, self.batch, self.text_batch = order, pacing, batch, text_batch
        self.seed, self.num_steps, self.start_step = seed, num_steps, start_step
        self.word_starts = word_starts(tokenizer)
        self.accelerator = Accelerator(cpu=True)

    @property
    def files(self) -> list[Path]:
        return pipeline_files(self.ingest_dir, self.tokens_dir, self.text_file if self.text_batch else None)

    def captions(self, advise: bool = True) -> Any:
        """CaptionData exactly as train.py builds it for stage 2 (fresh memory maps); `advise=False`
        leaves out `advise_random_reads` (the cold-read comparison only)."""
        from babymm.data import CaptionData

        captions = CaptionData(self.ingest_dir, self.tokenizer, self.max_caption_tokens, with_images=True,
                               features_dir=self.features_dir, tokens_dir=self.tokens_dir)
        if advise:
            captions.advise_random_reads()
        return captions

    def open(self, workers: int, clock: dict[str, float] | None = None
             ) -> tuple[Iterator[dict[str, torch.Tensor]], Callable[[], None]]:
        """Fresh datasets and loaders, as train.py's `multimodal_batches(start)`; with `clock`, the
        parts are timed (num_workers 0 only). Returns the batches and what undoes the timing."""
        from babymm.curriculum import PacingSpec, pacing_function
        from babymm.data import TextBlocks
        from babymm.training import step_loader, with_text

        captions = self.captions()
        cap = step_loader(captions, self.order, self.pacing, self.num_steps, self.batch, self.seed + 2,
                          self.accelerator, self.start_step, num_workers=workers, pin_memory=True)
        text = txt = None
        if self.text_batch:
            text = TextBlocks(self.text_file, self.block_size, self.word_starts)
            txt = step_loader(text, np.arange(len(text)), pacing_function(PacingSpec()), self.num_steps,
                              self.text_batch, self.seed + 3, self.accelerator, self.start_step, num_workers=workers,
                              pin_memory=True)
        restore = instrument(cap, txt, captions, text, clock) if clock is not None else (lambda: None)
        return (iter(with_text(cap, txt)) if txt is not None else iter(cap)), restore


def time_pass(pipe: Pipeline, workers: int, cache: str, batches: int, warmup: int) -> dict[str, Any]:
    """One setting: cache state set, fresh loaders, `warmup` batches, then `batches` timed."""
    gc.collect()  # the previous pass's memory maps and workers are gone before the cache is touched
    files = pipe.files
    t0 = time.perf_counter()
    if cache == "cold":
        drop_cache(files)
    else:
        warm_cache(files)
    cache_seconds = time.perf_counter() - t0
    resident = resident_fraction(files)
    clock: dict[str, float] = defaultdict(float)
    load = os.getloadavg()[0]
    t_open = time.perf_counter()
    it, restore = pipe.open(workers, clock if workers == 0 else None)
    t_first = time.perf_counter()
    try:
        for _ in range(warmup):
            next(it)
        clock.clear()
        widths, lengths, shape = [], [], None
        cpu0 = time.process_time()  # this process, all its threads
        t0 = time.perf_counter()
        for _ in range(batches):
            b = next(it)
            shape = list(b["images"].shape[1:])
            widths.append(b["input_ids"].shape[1])
            lengths.append(float(b["attention_mask"].sum()) / b["attention_mask"].shape[0])
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    finally:
        restore()
        if hasattr(it, "close"):  # with_text's generator: closing it lets the loaders' workers go
            it.close()
        del it
        gc.collect()
    row = {"workers": workers, "cache": cache, "resident_before": resident, "batches": batches,
           "seconds": round(wall, 3), "open_seconds": round(t_first - t_open, 3),
           "warmup_seconds": round(t0 - t_first, 3),
           "pairs_per_s": round(batches * pipe.batch / wall, 1), "batches_per_s": round(batches / wall, 2),
           "caption_width_mean": round(float(np.mean(widths)), 2), "caption_tokens_mean": round(float(np.mean(lengths)), 2),
           "image_shape": shape, "cache_prep_seconds": round(cache_seconds, 2), "load_average_1min": round(load, 2)}
    if workers == 0:  # CPU time, less disturbed than wall time by other jobs on the cores
        row["cpu_ms_per_batch"] = round(1000 * cpu / batches, 3)
        row["pairs_per_cpu_s"] = round(batches * pipe.batch / cpu, 1)
        row["breakdown"] = breakdown(clock, batches, wall)
    return row


def cold_reads(pipe: Pipeline, batches: int, seed: int = 0) -> dict[str, Any]:
    """ms per batch of random captions' feature rows from a dropped page cache, three ways on the
    same batches: babymm's (`CaptionData.__getitems__`: sorted fancy index of a MADV_RANDOM memory
    map, each fault served without read-around), the same map without the advice (the kernel
    reads around each fault), and one os.preadv per row into the batch (one read call of exactly
    each row). babymm does neither of the last two."""
    captions = pipe.captions()
    files = [Path(a.filename) for a in captions.features]
    rows, where = captions.columns["feature_row"], captions.columns["feature_file"]
    shape, dtype = captions.features[0].shape[1:], captions.features[0].dtype
    offsets = [a.offset for a in captions.features]
    del captions
    gc.collect()
    rng = np.random.default_rng(seed)
    picks = [rng.choice(len(rows), pipe.batch, replace=False) for _ in range(batches)]
    row_bytes = int(np.prod(shape)) * dtype.itemsize
    out: dict[str, Any] = {"file": files[0].name, "row_bytes": row_bytes, "batches": batches}
    drop_cache(files)
    fds = [os.open(f, os.O_RDONLY) for f in files]
    t0 = time.perf_counter()
    for idx in picks:
        images = np.empty((len(idx), *shape), dtype=dtype)
        for i, c in enumerate(idx):
            os.preadv(fds[where[c]], [memoryview(images[i]).cast("B")], offsets[where[c]] + int(rows[c]) * row_bytes)
    out["os.preadv per row"] = round(1000 * (time.perf_counter() - t0) / batches, 2)
    for fd in fds:
        os.close(fd)
    for method, advise in (("babymm (MADV_RANDOM memmap)", True), ("memmap without advise_random_reads", False)):
        gc.collect()  # the previous method's maps are gone: their pages can be evicted
        drop_cache(files)
        captions = pipe.captions(advise)  # fresh maps, nothing of them resident
        t0 = time.perf_counter()
        for idx in picks:
            captions.__getitems__(idx.tolist())
        out[method] = round(1000 * (time.perf_counter() - t0) / batches, 2)
        del captions
    return out


# -- reporting ----------------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    import importlib.metadata as md

    from babymm.environment import cpu_model

    return {"platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "ram_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "python": platform.python_version(), "torch": torch.__version__,
            **{pkg: md.version(pkg) for pkg in ("numpy", "datasets", "pyarrow", "tokenizers", "accelerate")},
            "load_average": os.getloadavg()}


def markdown(result: dict[str, Any]) -> str:
    import pandas as pd

    cols = ["features", "workers", "cache", "resident_before", "pairs_per_s", "batches_per_s", "pairs_per_cpu_s",
            "open_seconds", "load_average_1min"]
    table = pd.DataFrame([{k: r.get(k, "-") for k in cols} for r in result["settings"]]).to_markdown(index=False)
    parts = []
    for name, bd in result["breakdown"].items():
        parts.append(f"Breakdown, {name} (num_workers 0), ms per batch (share):\n\n" + pd.DataFrame(
            [{"component": k, "ms/batch": bd[k]["ms_per_batch"], "share": bd[k]["share"], "what": BREAKDOWN[k]}
             for k in BREAKDOWN if k in bd]).to_markdown(index=False))
    if result.get("cold_reads"):
        methods = ("babymm (MADV_RANDOM memmap)", "memmap without advise_random_reads", "os.preadv per row")
        parts.append("Cold feature reads, ms per batch of 128 random captions' feature rows (the same batches), page "
                     "cache dropped before each method: babymm's CaptionData.__getitems__ as train.py builds it, the "
                     "same without advise_random_reads, and one os.preadv per row (babymm does neither of the "
                     "last two):\n\n"
                     + pd.DataFrame([{"file": r["file"], "row bytes": r["row_bytes"], "batches": r["batches"],
                                      **{m: r[m] for m in methods}} for r in result["cold_reads"]]
                                    ).to_markdown(index=False)
                     + (f"\n\n{result['cold_reads_note']}" if result.get("cold_reads_note") else ""))
    d = result["demand_inputs"]
    patch = result.get("patch")
    patch_line = "" if not patch else (
        f"Patch features: best {patch['best_cold']['pairs_per_s']:,.0f} pairs/s cold (num_workers "
        f"{patch['best_cold']['workers']}), {patch['best_warm']['pairs_per_s']:,.0f} warm (num_workers "
        f"{patch['best_warm']['workers']}); demand {patch['demand_pairs_per_s']:,.0f} pairs/s "
        f"({patch['demand_feature_mb_per_s']:,.0f} MB/s of features; passes {patch['demand']['passes']}); "
        f"ratio cold {patch['ratio_cold']:.2f}, warm {patch['ratio_warm']:.2f}.\n")
    lines = [
        "# Training input pipeline alone: speed on the CPU",
        "",
        f"{result['date']}. Command: `{result['command']}`",
        "",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cpu_count']} cores, "
        f"{result['machine']['ram_gb']} GB RAM; torch {result['machine']['torch']}; load average before "
        f"{result['load_before']}.",
        "",
        f"Corpus: {result['corpus']['words']:,} words, {result['corpus']['captions']:,} captions, features "
        f"{result['corpus']['feature_bytes'] / 1e9:.1f} GB (synthetic, real BabyLM layout). Pipeline: train.py's "
        f"(CaptionData with tokens_dir + advise_random_reads, TextBlocks, step_loader, with_text): "
        f"{result['pipeline']['batch']} pairs + {result['pipeline']['text_batch']} text blocks of "
        f"{result['pipeline']['block_size']} tokens, captions cut at {result['pipeline']['max_caption_tokens']} "
        f"tokens, curriculum {result['pipeline']['curriculum']}, steps {result['pipeline']['start_step']}.. of "
        f"{result['pipeline']['stage_steps']}.",
        "",
        f"**pairs_per_s = {result['pairs_per_s']:,.0f}** (num_workers {result['best_workers']}, warm cache, "
        f"global vectors; cold best {result['pairs_per_s_cold']:,.0f}); **base_step_demand_pairs_per_s = "
        f"{result['base_step_demand_pairs_per_s']:,.0f}** ({result['base_step_demand_source']}); "
        f"**ratio = {result['ratio']:.2f}** (cold {result['ratio_cold']:.2f}; goal >= {GOAL_RATIO:g}).",
        "",
        f"Demand inputs (babymm.speed.step_flops(decoder_shape(model), task.decoder_passes(model, batch)) on a "
        f"batch of the mean padded shapes): N = {d['n_params']:,} trained parameters, {d['n_layer']} layers x "
        f"{d['n_head']} heads x {d['head_dim']}; caption width {d['caption_width']} (mean padded, timed warm "
        f"batches); passes {d['passes']}; FLOPs/step {d['flops_per_step']:.3e}, per pair "
        f"{d['flops_per_pair']:.3e}; {d['mfu']:.0%} of {d['peak_flops']:.3g} FLOP/s.",
        "",
        patch_line,
        table,
        "",
        *[q + "\n" for q in parts],
        result["notes"],
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work_dir", type=Path, default=Path("/tmp/babymm_bench"))
    p.add_argument("--scale", type=float, default=10, help="corpus size in units of 10M words (10: BabyLM's 100M)")
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "baseline2024_git.yaml",
                   help="the run whose input is measured (batch sizes, block size, caption length, vocab, "
                        "curriculum, model for the demand)")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="num_workers settings")
    p.add_argument("--batches", type=int, default=2000, help="timed batches per warm setting (global vectors)")
    p.add_argument("--cold_batches", type=int, default=400, help="timed batches per cold setting (global vectors)")
    p.add_argument("--warmup", type=int, default=8, help="batches drawn before the clock starts")
    p.add_argument("--start_progress", type=float, default=0.6,
                   help="where in stage 2 the timed window starts (0.6: the length curriculum's whole pool)")
    p.add_argument("--stage_steps", type=int, default=None, help="stage 2's length; default: one caption epoch")
    p.add_argument("--patch_images", type=int, default=24_000, help="images of the patch-feature corpus; 0 skips it")
    p.add_argument("--patch_tokens", type=int, default=197, help="P of the [N, P, 768] patch features")
    p.add_argument("--patch_batches", type=int, default=40, help="timed batches per patch setting")
    p.add_argument("--cold_reads", type=int, default=4,
                   help="batches of the cold-read comparison (babymm vs os.preadv) per feature kind; 0 skips it")
    p.add_argument("--peak_flops", type=float, default=None,
                   help="a measured device peak FLOP/s: an alternative demand beside the H100 one (989e12)")
    p.add_argument("--mfu", type=float, default=0.40, help="model FLOPs utilisation the estimate assumes")
    p.add_argument("--demand_pairs_per_s", type=float, default=None, help="a measured demand, replacing the estimate")
    p.add_argument("--demand_source", default=None, help="where --demand_pairs_per_s was measured")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "data_loading_cpu.json")
    args = p.parse_args(argv)
    if (args.demand_pairs_per_s is None) != (args.demand_source is None):
        p.error("--demand_pairs_per_s and --demand_source go together")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    command = ("python benchmarks/data_loading.py " + shlex.join(sys.argv[1:] if argv is None else argv)).rstrip()
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())

    from babymm.config import parse_config
    from babymm.curriculum import PacingSpec, load_curriculum, pacing_function
    from babymm.files import read_json, write_json_atomic, write_text_atomic
    from babymm.models import model_class
    from babymm.tasks import task_for
    from babymm.tokenizer import load_tokenizer
    from babymm.train import build, load_order
    from data_prep.pipeline import prepare

    cfg = parse_config(["--config", str(args.config)])
    d, t = cfg.data, cfg.train
    scale = int(args.scale) if float(args.scale).is_integer() else args.scale
    data_dir = args.work_dir / f"scale-{scale}" / "data"
    t0 = time.perf_counter()
    info = corpus_generator().generate(data_dir, scale)
    print(f"[bench] corpus: {info['words']:,} words, {info['feature_rows']:,} feature rows in {data_dir} "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    t0 = time.perf_counter()
    prepared = prepare(data_dir, d.curriculum, vocab_size=d.vocab_size, seed=t.seed, image_size=d.image_size,
                       build_world=False)
    print(f"[bench] prepared ({time.perf_counter() - t0:.0f} s)", flush=True)
    tokenizer = load_tokenizer(prepared.tokenizer)
    spec = load_curriculum(d.curriculum)
    order = load_order(prepared)
    fractions = read_json(prepared.curriculum / "manifest.json").get("stage_fractions")
    stage_steps = args.stage_steps or math.ceil(len(order) / t.batch_size)
    start_step = int(args.start_progress * stage_steps)
    task = task_for(model_class(cfg.model_type))(cfg.loss)
    text_batch = t.text_batch_size if task.uses_text else 0

    def pipeline(ingest_dir: Path, tokens_dir: Path, order: np.ndarray, pacing: Callable[[float], float],
                 features_dir: Path | None = None) -> Pipeline:
        return Pipeline(ingest_dir, tokens_dir, prepared.tokens / "text.npy", tokenizer, d.max_caption_tokens,
                        d.block_size, order, pacing, t.batch_size, text_batch, t.seed, stage_steps, start_step,
                        features_dir)

    settings: list[dict[str, Any]] = []
    breakdowns: dict[str, Any] = {}
    reads: list[dict[str, Any]] = []

    def run(pipe: Pipeline, features: str, batches: dict[str, int]) -> None:
        for cache, n in batches.items():
            for w in args.workers:
                row = {"features": features, **time_pass(pipe, w, cache, n, args.warmup)}
                if "breakdown" in row:
                    breakdowns[f"{features}, {cache}"] = row.pop("breakdown")
                settings.append(row)
                print(json.dumps(row), flush=True)
        if args.cold_reads:
            reads.append(cold_reads(pipe, args.cold_reads))
            print(json.dumps(reads[-1]), flush=True)

    main_pipe = pipeline(prepared.ingest, prepared.tokens, order, pacing_function(spec.pacing, fractions),
                         prepared.features)
    run(main_pipe, "global [N, 768]", {"cold": args.cold_batches, "warm": args.batches})
    warm_global = [r for r in settings if r["cache"] == "warm"]
    best = max(warm_global, key=lambda r: r["pairs_per_s"])
    best_cold = max((r for r in settings if r["cache"] == "cold"), key=lambda r: r["pairs_per_s"])
    width = float(np.mean([r["caption_width_mean"] for r in warm_global]))

    patch = patch_pipe = None
    if args.patch_images:
        t0 = time.perf_counter()
        patch_dir = make_patch_corpus(args.work_dir, prepared.ingest, args.patch_images, args.patch_tokens)
        from data_prep import ingest

        patch_ingest = ingest.ingest(patch_dir)
        patch_tokens = patch_caption_tokens(patch_dir, patch_ingest, prepared.tokenizer)
        print(f"[bench] patch corpus {patch_dir} ({time.perf_counter() - t0:.0f} s)", flush=True)
        rng = np.random.default_rng(t.seed)
        patch_pipe = pipeline(patch_ingest, patch_tokens, rng.permutation(args.patch_images),
                              pacing_function(PacingSpec()))
        feature_name = f"patch [N, {args.patch_tokens}, 768]"
        run(patch_pipe, feature_name, {"cold": args.patch_batches, "warm": args.patch_batches})
        rows = [r for r in settings if r["features"] == feature_name]
        patch = {"images": args.patch_images, "bytes": sum(f.stat().st_size for f in patch_pipe.files[:1]),
                 "best_cold": max((r for r in rows if r["cache"] == "cold"), key=lambda r: r["pairs_per_s"]),
                 "best_warm": max((r for r in rows if r["cache"] == "warm"), key=lambda r: r["pairs_per_s"])}

    # the demand: the config's model, built by train.py's `build` (vocabulary from the tokenizer, the
    # feature shape from the data), FLOPs by babymm.speed on a batch of the mean padded shapes
    def demand_of(pipe: Pipeline, width: float) -> dict[str, Any]:
        model = build(cfg, prepared, tokenizer, pipe.captions())
        out = step_demand(model, task, mean_shape_batch(t.batch_size, width, text_batch, d.block_size))
        out["caption_width"] = round(width, 2)
        del model
        gc.collect()
        return out

    demand_inputs = demand_of(main_pipe, width)
    flops = demand_inputs["flops_per_step"]
    estimate = demand_pairs_per_s(flops, t.batch_size, H100_BF16_DENSE, args.mfu)
    if args.demand_pairs_per_s is not None:
        demand, source = args.demand_pairs_per_s, args.demand_source
    else:
        demand = estimate
        source = f"estimated from {args.mfu:.0%} MFU on an H100 (989 TFLOP/s bf16 dense)"
    demand_inputs.update({
        "formula": "babymm.speed.step_flops(decoder_shape(model), task.decoder_passes(model, batch)): per pass "
                   "rows * seq_len * layer_fraction * (6 N + 12 L H Q seq_len); demand = mfu * peak / "
                   "(FLOPs/step / pairs per step)",
        "caption_width": round(width, 2), "batch_caption_width": round(width),
        "caption_width_kind": "mean padded width of the timed warm batches (the step computes on it)",
        "text_block": d.block_size, "flops_per_pair": flops / t.batch_size,
        "peak_flops": H100_BF16_DENSE, "mfu": args.mfu, "estimated_pairs_per_s": round(estimate, 1)})
    if args.peak_flops is not None:
        alt_demand = demand_pairs_per_s(flops, t.batch_size, args.peak_flops, args.mfu)
        demand_inputs["at_measured_peak"] = {"peak_flops": args.peak_flops, "pairs_per_s": round(alt_demand, 1),
                                             "ratio": round(best["pairs_per_s"] / alt_demand, 3)}
    if patch is not None:
        patch_width = float(np.mean([r["caption_width_mean"] for r in settings
                                     if r["features"] == feature_name and r["cache"] == "warm"]))
        patch["demand"] = demand_of(patch_pipe, patch_width)  # its own captions' mean padded width
        patch["demand_pairs_per_s"] = round(demand_pairs_per_s(patch["demand"]["flops_per_step"], t.batch_size,
                                                               H100_BF16_DENSE, args.mfu), 1)
        patch["demand_feature_mb_per_s"] = round(patch["demand_pairs_per_s"] * args.patch_tokens * FEATURE_DIM * 4
                                                 / 1e6, 1)
        patch["ratio_cold"] = round(patch["best_cold"]["pairs_per_s"] / patch["demand_pairs_per_s"], 3)
        patch["ratio_warm"] = round(patch["best_warm"]["pairs_per_s"] / patch["demand_pairs_per_s"], 3)

    feature_bytes = sum(Path(f).stat().st_size for f in
                        json.loads((prepared.ingest / "manifest.json").read_text())["feature_files"])
    result = {
        "pairs_per_s": best["pairs_per_s"], "best_workers": best["workers"],
        "pairs_per_s_cold": best_cold["pairs_per_s"], "best_workers_cold": best_cold["workers"],
        "base_step_demand_pairs_per_s": round(demand, 1), "base_step_demand_source": source,
        "demand_inputs": demand_inputs, "ratio": round(best["pairs_per_s"] / demand, 3),
        "ratio_cold": round(best_cold["pairs_per_s"] / demand, 3), "goal_ratio": GOAL_RATIO,
        "patch": patch, "cold_reads": reads, "settings": settings, "breakdown": breakdowns,
        "breakdown_components": BREAKDOWN,
        "corpus": {"dir": str(data_dir), "scale": scale, "words": info["words"], "captions": len(order),
                   "feature_bytes": feature_bytes},
        "pipeline": {"config": str(args.config), "batch": t.batch_size, "text_batch": text_batch,
                     "block_size": d.block_size, "max_caption_tokens": d.max_caption_tokens, "vocab": len(tokenizer),
                     "curriculum": d.curriculum, "stage_steps": stage_steps, "start_step": start_step,
                     "warmup_batches": args.warmup, "workers_apply_to": "each of the two loaders",
                     "captions": "CaptionData(..., tokens_dir=prepared.tokens) + advise_random_reads(), as train.py"},
        "cache_method": "cold: posix_fadvise(DONTNEED) on the feature .npy, captions Arrow, captions.npy, "
                        "caption_offsets.npy and text.npy files before the pass; warm: every byte of them read "
                        "first; resident_before: fincore",
        "notes": "pairs/s: image-caption pairs delivered per second by with_text(step_loader(CaptionData), "
                 "step_loader(TextBlocks)) to a consumer doing nothing; num_workers applies to each loader; "
                 "open_seconds: building the datasets and loaders (CaptionData reads its small Arrow columns whole).",
        "machine": machine_info(), "load_before": load_before, "command": command,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json_atomic(args.out, result)
    write_text_atomic(args.out.with_suffix(".md"), markdown(result))
    print(f"[bench] pairs_per_s {result['pairs_per_s']:,.0f} (num_workers {best['workers']}), demand "
          f"{demand:,.0f} ({source}), ratio {result['ratio']:.2f} -> {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

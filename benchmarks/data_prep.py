"""Speed and memory of data prep at real-corpus scale (a benchmark, not a test).

    python benchmarks/data_prep.py [--scales 1 2 4] [--work_dir /tmp/babymm_bench] [--vocab_size 16384]
                                   [--out results/data_prep_cpu.md] [--append]
    python benchmarks/data_prep.py --scales 10     # the full 100M-word BabyLM multimodal corpus

Generates (once per scale, cached under `--work_dir/scale-S/data`) a synthetic corpus in the real
BabyLM multimodal layout (REFERENCE.md section 1): scale 1 is ~10M words, half of them text in
six `text/<source>.train` files (short utterances and long paragraphs), half captions in
`captions/local_narr_captions.json` (~45 words a caption) and `captions/cc_3M_captions.json`
(~10 words), row-aligned with float32 [N, 768] features `local_narr_dino_v2_states.npy` and
`cc_3M_dino_v2_states_{1of2,2of2}.npy` (written through np.lib.format.open_memmap in chunks).
Scale 10 is the 100M-word corpus with 2.9M feature rows (8.9 GB of features).

Then, per scale in a fresh subprocess (so peak memory is per run), from an empty `prepared/`:
ingest, budget (`make_budget` at the data's full size and at half of it), count words, train
tokenizer, tokenize text, score captions (`length`, `rarity`) and build the `length` curriculum,
timing each stage (wall seconds and CPU seconds) and its peak RSS (VmHWM, reset before each stage
through /proc/self/clear_refs); the run's peak is getrusage(RUSAGE_SELF).ru_maxrss, and that of
its worker processes getrusage(RUSAGE_CHILDREN).ru_maxrss. Prints the tables and writes them, with
the command, the machine, the load, the library versions and a linear fit of time against words,
to `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# run as a script, this file's directory comes first on sys.path and its name would shadow the package
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
GENERATOR_VERSION = 1
FEATURE_DIM = 768
WORDS_PER_SCALE = 10_000_000  # scale 1: 5M text words + 5M caption words
VOCAB = 40_000  # synthetic word types, drawn Zipf-Mandelbrot

# text sources: share of the text words (BabyLM 2024 100M text proportions), words per utterance
# (uniform low..high), and the share of lines that are long paragraphs (uniform 40..250 words)
TEXT_SOURCES = {
    "bnc_spoken": (0.08, (3, 20), 0.02),
    "childes": (0.29, (2, 10), 0.0),
    "gutenberg": (0.26, (5, 25), 0.35),
    "open_subtitles": (0.20, (3, 14), 0.0),
    "simple_wiki": (0.15, (8, 25), 0.4),
    "switchboard": (0.02, (5, 20), 0.0),
}
PARAGRAPH_WORDS = (40, 250)
# caption files: share of the caption words (27M of 50M, 23M of 50M), words per caption, feature parts
CAPTION_SOURCES = {
    "local_narr": (27 / 50, (20, 70), 1),  # ~45 words: 0.6M images at scale 10
    "cc_3M": (23 / 50, (4, 16), 2),  # ~10 words: 2.3M images at scale 10
}
STAGES = ["ingest", "budget_full", "budget_half", "count_words", "train_tokenizer", "tokenize_text",
          "score_length", "score_rarity", "curriculum"]


# -- generation ---------------------------------------------------------------------------------
class Words:
    """A synthetic vocabulary and vectorised writers of lines from Zipfian word draws."""

    def __init__(self, rng: np.random.Generator):
        words: set[str] = set()
        while len(words) < VOCAB:  # unique words of 1..14 letters, ~6 on average
            n = VOCAB - len(words)
            lengths = (1 + rng.poisson(5.0, n)).clip(1, 14)
            letters = rng.integers(ord("a"), ord("z") + 1, size=(n, 14), dtype=np.uint8)
            accented = rng.random(n) < 0.01  # a few non-ASCII words (NFKC takes its slow path)
            for i in range(n):
                w = bytes(letters[i, : lengths[i]]).decode()
                words.add(w[:-1] + "\u00e9" if accented[i] else w)
        self.words = sorted(words, key=lambda w: (len(w), w))  # the frequent words are the short ones
        ranks = np.arange(1, VOCAB + 1, dtype=np.float64)
        p = 1.0 / (ranks + 2.7) ** 1.05
        self.cdf = np.cumsum(p / p.sum())
        self.rng = rng

    SUFFIXES = (" ", ", ", ". ", ".\n", "?\n")

    def table(self, capital: bool) -> list[bytes]:
        """Each word followed by each of SUFFIXES (capitalised or not), suffix-major."""
        base = [w.capitalize() if capital else w for w in self.words]
        return [(w + s).encode() for s in self.SUFFIXES for w in base]

    def lines(self, lengths: np.ndarray, capital_first: bool, punctuate: bool) -> bytes:
        """'\\n'-separated lines of the given word counts, as one UTF-8 blob."""
        n, k = int(lengths.sum()), len(self.SUFFIXES)
        ids = np.searchsorted(self.cdf, self.rng.random(n)).clip(0, VOCAB - 1)
        ends = np.cumsum(lengths) - 1
        suffix = np.zeros(n, dtype=np.int64)
        if punctuate:
            r = self.rng.random(n)
            suffix[r < 0.06] = 1  # commas
            suffix[r > 0.94] = 2  # sentence ends inside a paragraph
            suffix[ends] = 3 + (self.rng.random(len(ends)) < 0.2)
        else:
            suffix[ends] = 3
        first = np.zeros(n, dtype=bool)
        if capital_first:
            first[np.r_[0, ends[:-1] + 1]] = True
            first[1:] |= suffix[:-1] == 2
        tables = np.array(self.table(False) + self.table(True), dtype=object)
        blob = b"".join(tables[ids + VOCAB * (suffix + k * first)].tolist())
        return blob if punctuate else blob.replace(b".\n", b"\n")


def _line_lengths(rng: np.random.Generator, words: int, span: tuple[int, int], long_share: float) -> np.ndarray:
    """Word counts of lines summing to exactly `words`."""
    mean = (1 - long_share) * sum(span) / 2 + long_share * sum(PARAGRAPH_WORDS) / 2
    n = int(words / mean * 1.1) + 16
    lengths = rng.integers(span[0], span[1] + 1, n)
    long = rng.random(n) < long_share
    lengths[long] = rng.integers(PARAGRAPH_WORDS[0], PARAGRAPH_WORDS[1] + 1, int(long.sum()))
    csum = np.cumsum(lengths)
    k = int(np.searchsorted(csum, words))
    lengths = lengths[: k + 1].copy()
    lengths[-1] -= int(csum[k]) - words
    if lengths[-1] == 0:
        lengths = lengths[:-1]
    return lengths


def _write_features(path: Path, rows: int, block: np.ndarray, flush_every: int = 16) -> None:
    """[rows, *block.shape[1:]] float32 through a memory map, one block of rows at a time (the
    block repeated), flushed every `flush_every` blocks so the dirty pages never fill the RAM."""
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, *block.shape[1:]))
    for a in range(0, rows, len(block)):
        b = min(rows, a + len(block))
        arr[a:b] = block[: b - a]
        if (a // len(block)) % flush_every == flush_every - 1:
            arr.flush()
    arr.flush()
    del arr


def generate(data_dir: Path, scale: float, seed: int = 0) -> dict:
    """The synthetic corpus of `scale` under `data_dir` (cached: reused when its manifest matches)."""
    params = {"version": GENERATOR_VERSION, "scale": scale, "seed": seed}
    manifest = data_dir / "corpus.json"
    if manifest.exists() and (info := json.loads(manifest.read_text()))["params"] == params:
        return info
    shutil.rmtree(data_dir, ignore_errors=True)
    (data_dir / "text").mkdir(parents=True)
    (data_dir / "captions").mkdir()
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    vocab = Words(rng)
    total = round(WORDS_PER_SCALE * scale)
    text_words = total // 2
    info: dict = {"params": params, "text": {}, "captions": {}}
    shares = np.array([s for s, _, _ in TEXT_SOURCES.values()])
    counts = np.floor(text_words * shares / shares.sum()).astype(int)
    counts[0] += text_words - counts.sum()
    for (name, (_, span, long_share)), words in zip(TEXT_SOURCES.items(), counts, strict=True):
        lengths = _line_lengths(rng, int(words), span, long_share)
        (data_dir / "text" / f"{name}.train").write_bytes(vocab.lines(lengths, True, True))
        info["text"][name] = {"words": int(lengths.sum()), "lines": len(lengths)}
    caption_words = total - text_words
    block = rng.standard_normal((8192, FEATURE_DIM), dtype=np.float32)
    left = caption_words
    for i, (name, (share, span, parts)) in enumerate(CAPTION_SOURCES.items()):
        words = left if i == len(CAPTION_SOURCES) - 1 else round(caption_words * share)
        left -= words
        lengths = _line_lengths(rng, words, span, 0.0)
        captions = vocab.lines(lengths, name == "local_narr", name == "local_narr").decode().split("\n")[:-1]
        assert len(captions) == len(lengths)
        with (data_dir / "captions" / f"{name}_captions.json").open("w") as f:
            json.dump(captions, f, ensure_ascii=False)
        n = len(captions)
        bounds = np.linspace(0, n, parts + 1).astype(int)
        for p in range(parts):
            suffix = f"_{p + 1}of{parts}" if parts > 1 else ""
            _write_features(data_dir / "captions" / f"{name}_dino_v2_states{suffix}.npy",
                            int(bounds[p + 1] - bounds[p]), block)
        info["captions"][name] = {"words": int(lengths.sum()), "captions": n}
    info["words"] = sum(v["words"] for part in ("text", "captions") for v in info[part].values())
    info["feature_rows"] = sum(v["captions"] for v in info["captions"].values())
    info["generate_seconds"] = round(time.perf_counter() - t0, 1)
    manifest.write_text(json.dumps(info, indent=1))
    return info


# -- measurement (in a fresh subprocess per scale) ----------------------------------------------
def _hwm_kb() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _cpu_seconds() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def run_stages(data_dir: Path, vocab_size: int, words: int) -> dict:
    from data_prep import (
        budget,
        build_curriculum,
        count_words,
        ingest,
        score,
        tokenize_text,
        train_tokenizer,
    )

    shutil.rmtree(data_dir / "prepared", ignore_errors=True)
    steps = {
        "ingest": lambda: ingest.ingest(data_dir),
        "budget_full": lambda: budget.make_budget(data_dir, budget.Budget(words)),
        "budget_half": lambda: budget.make_budget(data_dir, budget.Budget(words // 2)),
        "count_words": lambda: count_words.count_words(data_dir, word_budget=max(words, count_words.BABYLM_BUDGET)),
        "train_tokenizer": lambda: train_tokenizer.train_tokenizer(data_dir, vocab_size=vocab_size),
        "tokenize_text": lambda: tokenize_text.tokenize_text(data_dir),
        "score_length": lambda: score.score_captions(data_dir, "length"),
        "score_rarity": lambda: score.score_captions(data_dir, "rarity"),
        "curriculum": lambda: build_curriculum.build_curriculum(data_dir, "length"),
    }
    result: dict = {"stages": {}, "hwm_reset": True}
    for name in STAGES:
        result["hwm_reset"] &= _reset_hwm()
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        steps[name]()
        wall = time.perf_counter() - t0
        hwm = _hwm_kb()
        result["stages"][name] = {"seconds": wall, "cpu_seconds": _cpu_seconds() - cpu0,
                                  "peak_rss_gb": hwm / 2**20 if hwm else None}
        print(f"[bench] {name}: {wall:.1f} s", flush=True)
    # clear_refs resets the high-water mark getrusage reads too: the run's peak is the largest stage's
    result["ru_maxrss_self_gb"] = max([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20]
                                      + [s["peak_rss_gb"] or 0.0 for s in result["stages"].values()])
    result["ru_maxrss_children_gb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return result


def _child(args: argparse.Namespace) -> int:
    info = json.loads((args.child / "corpus.json").read_text())
    result = run_stages(args.child, args.vocab_size, info["words"])
    Path(args.result).write_text(json.dumps(result))
    return 0


# -- report -------------------------------------------------------------------------------------
def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or platform.machine())
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {ram:.0f} GB RAM, {platform.system()} {platform.release()}"


def versions() -> str:
    import importlib.metadata as md

    out = [f"python {platform.python_version()}"]
    for pkg in ("torch", "datasets", "pyarrow", "numpy", "pandas", "sentencepiece", "tokenizers", "transformers"):
        try:
            out.append(f"{pkg} {md.version(pkg)}")
        except md.PackageNotFoundError:
            out.append(f"{pkg} -")
    return ", ".join(out)


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def tables(rows: list[dict]) -> tuple[str, str, str]:
    import pandas as pd

    main, detail = [], []
    for r in rows:
        st = r["stages"]
        total = sum(s["seconds"] for s in st.values())
        no_tok = total - st["train_tokenizer"]["seconds"]
        main.append({"scale": r["scale"], "words (M)": round(r["words"] / 1e6, 2),
                     "feature rows (M)": round(r["feature_rows"] / 1e6, 2),
                     **{f"{k} (s)": round(v["seconds"], 1) for k, v in st.items()},
                     "total (s)": round(total, 1), "words/s": round(r["words"] / total),
                     "words/s w/o tokenizer training": round(r["words"] / no_tok),
                     "peak RSS (GB)": round(r["ru_maxrss_self_gb"], 2),
                     "peak RSS workers (GB)": round(r["ru_maxrss_children_gb"], 2)})
        detail.append({"scale": r["scale"], **{k: (f"{v['peak_rss_gb']:.2f}" if v["peak_rss_gb"] is not None else "-")
                                               + f" / {v['cpu_seconds']:.1f}" for k, v in st.items()}})
    fit = ""
    if len(rows) >= 2:
        words = np.array([r["words"] for r in rows], dtype=float)
        totals = np.array([sum(s["seconds"] for s in r["stages"].values()) for r in rows])
        b, a = np.polyfit(words, totals, 1)
        per_stage = []
        for name in STAGES:
            ys = np.array([r["stages"][name]["seconds"] for r in rows])
            sb, sa = np.polyfit(words, ys, 1)
            per_stage.append(f"{name} {sa + sb * 1e8:.0f} s")
        fit = (f"Linear fit of total seconds against words over scales {', '.join(str(r['scale']) for r in rows)}: "
               f"{a:.1f} s + {b * 1e6:.2f} s per million words; projected for 100M words: "
               f"{a + b * 1e8:.0f} s ({(a + b * 1e8) / 60:.1f} min, {1e8 / (a + b * 1e8):,.0f} words/s). "
               f"Per stage at 100M: {'; '.join(per_stage)}.")
    return (pd.DataFrame(main).to_markdown(index=False), pd.DataFrame(detail).to_markdown(index=False), fit)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scales", nargs="+", type=float, default=[1, 2, 4],
                   help="corpus sizes in units of 10M words (10: the 100M-word corpus)")
    p.add_argument("--work_dir", type=Path, default=Path("/tmp/babymm_bench"))
    p.add_argument("--vocab_size", type=int, default=16384)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "data_prep_cpu.md")
    p.add_argument("--append", action="store_true", help="add this run's section to --out instead of replacing it")
    p.add_argument("--generate_only", action="store_true")
    p.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        return _child(args)
    command = "python benchmarks/data_prep.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    rows, loads = [], []
    for scale in args.scales:
        scale = int(scale) if float(scale).is_integer() else scale
        data_dir = args.work_dir / f"scale-{scale}" / "data"
        info = generate(data_dir, scale)
        print(f"[bench] scale {scale}: {info['words']:,} words, {info['feature_rows']:,} feature rows "
              f"(generated in {info['generate_seconds']} s) in {data_dir}", flush=True)
        if args.generate_only:
            continue
        log = data_dir.parent / "run.log"
        result = data_dir.parent / "result.json"
        before = load()
        with log.open("w") as f:
            proc = subprocess.run([sys.executable, __file__, "--child", str(data_dir), "--result", str(result),
                                   "--vocab_size", str(args.vocab_size)], stdout=f, stderr=subprocess.STDOUT,
                                  cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
        if proc.returncode != 0:
            print(log.read_text()[-4000:], file=sys.stderr)
            raise SystemExit(f"scale {scale}: the run failed (exit {proc.returncode}); log in {log}")
        row = {"scale": scale, "words": info["words"], "feature_rows": info["feature_rows"],
               **json.loads(result.read_text())}
        rows.append(row)
        loads.append(f"scale {scale}: {before} before, {load()} after")
        print(f"[bench] scale {scale}: {sum(s['seconds'] for s in row['stages'].values()):.1f} s; {loads[-1]}", flush=True)
    if not rows:
        return 0
    main_table, detail, fit = tables(rows)
    section = "\n".join([
        f"## {time.strftime('%Y-%m-%d %H:%M')}: scales {', '.join(str(r['scale']) for r in rows)}",
        "", f"Command: `{command}`", "", f"Machine: {machine()}", "", f"Versions: {versions()}", "",
        "Load (other jobs share this machine): " + "; ".join(loads), "",
        f"Tokenizer vocab {args.vocab_size}. Seconds are wall time per stage from an empty `prepared/`; "
        "total = the sum of all stages, budget included. Peak RSS: the run's ru_maxrss (RUSAGE_SELF), "
        "and the largest of its worker processes (RUSAGE_CHILDREN).", "",
        main_table, "",
        "Per stage: peak RSS in GB (VmHWM, reset before each stage) / CPU seconds (user + system, the run "
        "and its workers): less disturbed by other jobs than wall seconds.", "",
        detail, "", fit, "",
    ])
    print(section)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    head = ("# Data prep: speed and memory at real-corpus scale (CPU)\n\n"
            "Made by `benchmarks/data_prep.py` on a synthetic corpus in the real BabyLM multimodal layout "
            "(scale 1 = 10M words: 5M text words in six .train files, 5M caption words in local_narr "
            "(~45 words a caption) and cc_3M (~10 words), with float32 [N, 768] features memory-mapped).\n\n")
    old = args.out.read_text() if args.append and args.out.exists() else head
    args.out.write_text(old.rstrip("\n") + "\n\n" + section)
    print(f"[bench] -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

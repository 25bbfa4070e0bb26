"""All data stages in order, for one data directory and one curriculum.

    python -m data_prep.pipeline --data_dir data/world --curriculum length

ingest -> [budget] -> count words -> train tokenizer -> tokenize text -> score captions ->
curriculum [-> frozen-encoder features]. Every stage is idempotent, so this is also what
training calls to make sure its inputs exist. If `data_dir` is the built-in world's default
location and holds nothing, or is missing or empty and named with `--word_budget`, the world is
generated first (never downloaded; at a budget, with `--text_fraction` of its words text).
`--image_root DIR`: caption jsonl files whose images live outside the data directory (see
data_prep.ingest).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from babymm.curriculum import load_curriculum
from babymm.files import DataError
from babymm.models.vision import POOLINGS
from data_prep import (
    budget,
    build_curriculum,
    count_words,
    ingest,
    tokenize_text,
    train_tokenizer,
    world,
)
from data_prep.stage import log, run_cli

WORLD_DEFAULT_DIR = Path("data/world")


@dataclass
class Prepared:
    """Where training finds each prepared artifact."""

    data_dir: Path
    ingest: Path  # the whole data's ingest, or the budgeted subset's (same form)
    tokenizer: Path
    tokens: Path
    curriculum: Path | None  # None: scored by the run's own stage-1 model, built by the run
    words: Path  # the word count report (and the budget report of a subset)
    subset: str | None = None  # the budgeted subset's name, None for the data as it is
    features: Path | None = None  # frozen-encoder features of raw training images (--vision_model)


def _world_for(data_dir: Path, word_budget: int | None, image_size: int, build_world: bool | None,
               text_fraction: float = 0.5) -> None:
    """Generate the built-in world when `data_dir` is its default location and holds nothing, or
    is missing or empty and named with a budget (then at that budget, with `text_fraction` of
    its words text, so the budget stage, which uses such a world whole, takes the fraction asked);
    regenerate an older version in place with its own parameters."""
    if build_world is None:
        empty = not data_dir.exists() or not any(data_dir.iterdir())
        build_world = data_dir.resolve() == WORLD_DEFAULT_DIR.resolve() or (word_budget is not None and empty)
    manifest = data_dir / "world.json"
    if build_world and not manifest.exists():
        budget = word_budget or world.DEFAULT_BUDGET
        split = {}  # the world's own default split, unless a budget names one
        if word_budget is not None:
            if not 0 < text_fraction < 1:
                raise DataError(f"--text_fraction {text_fraction:g}: the built-in world always has text and captions, "
                                f"so {data_dir} cannot be generated with it; pass a fraction between 0 and 1, or a "
                                "--data_dir that holds data")
            split = {"caption_fraction": round(1 - text_fraction, 12)}  # 1 - 0.9 is 0.09999999999999998
        log("pipeline", f"{data_dir} has no data: generating the built-in world ({budget:,} words"
                        + (f", text fraction {text_fraction:g})" if split else ")"))
        world.generate_world(data_dir, word_budget=budget, seed=0, image_size=image_size, **split)
    elif build_world:
        saved = json.loads(manifest.read_text())
        old = saved["params"]
        outdated = old.get("version") != world.VERSION
        if outdated:  # another version's eval sets would be scored as if they were this version's
            log("pipeline", f"{data_dir} holds {old.get('version', 'an older world')}: regenerating it as "
                            f"{world.VERSION} with its own parameters")
        # with its own parameters, a world made before the arithmetic set gets that set alone
        if outdated or "arithmetic" not in saved.get("eval", {}):
            world.generate_world(data_dir, word_budget=old["word_budget"], seed=old["seed"],
                                 image_size=old["image_size"], caption_fraction=old["caption_fraction"],
                                 eval_scale=old.get("eval_scale", 1.0))


def prepare(data_dir: str | Path, curriculum: str = "length", *, word_budget: int | None = None,
            text_fraction: float = 0.5, data_seed: int = 0, image_size: int = 32, vocab_size: int = 2048,
            seed: int = 0, build_world: bool | None = None, on_bad_record: str = "error",
            vision_model: str | None = None, vision_pooling: str = "cls",
            image_root: str | Path | None = None) -> Prepared:
    """Run every stage that is not up to date.

    `word_budget`: train on exactly that many words (text + captions), `text_fraction` of them
    text, drawn with `data_seed` (data_prep.budget); the subset's tokenizer, tokens, scores and
    curricula live under its own name, so budgets and seeds never share prepared data. None: the
    data as it is, checked against the budget the built-in world was generated for, or BabyLM's
    100M words. A missing or empty `data_dir` named with a budget gets a world of that size.
    `seed` (the run's) breaks the curriculum's ties and draws its random order. `on_bad_record`:
    a bad text line or caption record stops ingest with its file:line ("error") or is skipped
    and counted ("skip"). `vision_model`: a local frozen vision model that turns raw training
    images into features once (data_prep.extract_features). `image_root`: where the relative
    image paths of captions/*.jsonl point, and the one directory images may come from (default:
    paths relative to each jsonl file, confined to `data_dir`; see data_prep.ingest)."""
    data_dir = Path(data_dir)
    _world_for(data_dir, word_budget, image_size, build_world, text_fraction)
    ing = ingest.ingest(data_dir, image_size=image_size, on_bad_record=on_bad_record, image_root=image_root)
    subset = None
    if word_budget is not None:
        subset = budget.make_budget(data_dir, budget.Budget(word_budget, text_fraction, data_seed))
        limit = word_budget
    else:  # the built-in world against the budget it was generated for; real data against BabyLM's cap
        world_manifest = data_dir / "world.json"
        limit = (json.loads(world_manifest.read_text())["params"]["word_budget"] if world_manifest.exists()
                 else count_words.BABYLM_BUDGET)
    count_words.count_words(data_dir, word_budget=limit, subset=subset)
    tok = train_tokenizer.train_tokenizer(data_dir, vocab_size=vocab_size, subset=subset)
    tokens = tokenize_text.tokenize_text(data_dir, subset=subset)
    # an order scored by the run's own stage-1 model is built by the run, after stage 1
    try:
        spec = load_curriculum(curriculum)
    except (FileNotFoundError, ValueError) as e:
        raise DataError(str(e)) from e
    cur = None if spec.scores_run_model else build_curriculum.build_curriculum(data_dir, curriculum, seed=seed,
                                                                                subset=subset)
    features = None
    if vision_model is not None and json.loads((ing / "manifest.json").read_text())["image_input"] == "pixels":
        from data_prep.extract_features import extract_features

        features = extract_features(data_dir, vision_model, vision_pooling)
    return Prepared(data_dir, ingest.out_dir(data_dir, subset), tok, tokens, cur,
                    count_words.out_dir(data_dir, subset), subset, features)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_dir", type=Path, default=WORLD_DEFAULT_DIR)
    p.add_argument("--curriculum", default="length")
    p.add_argument("--word_budget", type=int, default=None,
                   help="train on exactly this many words (text + captions); default: the data as it is")
    p.add_argument("--text_fraction", type=float, default=0.5, help="share of --word_budget for the text portion")
    p.add_argument("--data_seed", type=int, default=0, help="seed of the --word_budget draw")
    p.add_argument("--seed", type=int, default=0, help="the run's seed: breaks curriculum ties, draws random orders")
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--vocab_size", type=int, default=2048)
    p.add_argument("--on_bad_record", choices=ingest.ON_BAD_RECORD, default="error",
                   help="a bad text line or caption record: stop with its file:line (error), or leave it "
                        "out and count it in the ingest manifest (skip)")
    p.add_argument("--vision_model", default=None, help="local frozen vision model: raw images -> features")
    p.add_argument("--vision_pooling", default="cls", choices=POOLINGS)
    p.add_argument("--image_root", type=Path, default=None, help=ingest.IMAGE_ROOT_HELP)

    def run(a: argparse.Namespace) -> Prepared:
        if a.word_budget is None and (a.text_fraction != 0.5 or a.data_seed != 0):
            raise DataError("--text_fraction and --data_seed shape a --word_budget draw; pass --word_budget too")
        return prepare(a.data_dir, a.curriculum, word_budget=a.word_budget, text_fraction=a.text_fraction,
                       data_seed=a.data_seed, seed=a.seed, image_size=a.image_size, vocab_size=a.vocab_size,
                       on_bad_record=a.on_bad_record, vision_model=a.vision_model, vision_pooling=a.vision_pooling,
                       image_root=a.image_root)

    return run_cli(p, argv, run)


if __name__ == "__main__":
    sys.exit(main())

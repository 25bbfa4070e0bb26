"""All data stages in order, for one data directory and one curriculum.

    python -m data_prep.pipeline --data_dir data/world --curriculum length

ingest -> count words -> train tokenizer -> tokenize text -> score captions -> curriculum.
Every stage is idempotent, so this is also what training calls to make sure its inputs exist.
If `data_dir` is the built-in world's default location and holds nothing, or is missing or
empty and named with `--word_budget`, the world is generated first (never downloaded).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from babymm.files import DataError
from data_prep import build_curriculum, count_words, ingest, tokenize_text, train_tokenizer, world
from data_prep.stage import log, run_cli

WORLD_DEFAULT_DIR = Path("data/world")


@dataclass
class Prepared:
    """Where training finds each prepared artifact."""

    data_dir: Path
    ingest: Path
    tokenizer: Path
    tokens: Path
    curriculum: Path


def prepare(data_dir: str | Path, curriculum: str = "length", *, word_budget: int | None = None,
            image_size: int = 32, vocab_size: int = 2048, seed: int = 0,
            build_world: bool | None = None, on_bad_record: str = "error") -> Prepared:
    """Run every stage that is not up to date. `word_budget` is the size of the built-in world:
    it is generated at that size, and a world generated at another size is refused (never
    silently reused under the new label); a missing or empty `data_dir` named with a budget gets
    a new world. Real data is used whole and may not name a budget. `on_bad_record`: a bad text
    line or caption record stops ingest with its file:line ("error") or is skipped and counted
    ("skip")."""
    data_dir = Path(data_dir)
    if build_world is None:  # the default location, or a new directory asked for at a budget
        empty = not data_dir.exists() or not any(data_dir.iterdir())
        build_world = data_dir.resolve() == WORLD_DEFAULT_DIR.resolve() or (word_budget is not None and empty)
    manifest = data_dir / "world.json"
    if build_world and not manifest.exists():
        budget = word_budget or world.DEFAULT_BUDGET
        log("pipeline", f"{data_dir} has no data: generating the built-in world ({budget:,} words)")
        world.generate_world(data_dir, word_budget=budget, seed=seed, image_size=image_size)
    elif build_world and (old := json.loads(manifest.read_text())["params"]).get("version") != world.VERSION:
        # another version's eval sets would be scored as if they were this version's
        log("pipeline", f"{data_dir} holds {old.get('version', 'an older world')}: regenerating it as "
                        f"{world.VERSION} with its own parameters")
        world.generate_world(data_dir, word_budget=old["word_budget"], seed=old["seed"],
                             image_size=old["image_size"], caption_fraction=old["caption_fraction"],
                             eval_scale=old.get("eval_scale", 1.0))
    if word_budget is not None:
        if not manifest.exists():
            raise DataError(f"{data_dir}: --word_budget {word_budget:,} names the size of the built-in world, "
                            "and subsampling real data to a budget is not supported yet; leave it unset")
        generated = json.loads(manifest.read_text())["params"]["word_budget"]
        if generated != word_budget:
            raise DataError(f"{manifest}: this world was generated at {generated:,} words, not --word_budget "
                            f"{word_budget:,}; pass another --data_dir (a new world is generated there) or "
                            "leave --word_budget unset")
    ing = ingest.ingest(data_dir, image_size=image_size, on_bad_record=on_bad_record)
    # the built-in world is checked against the budget it was generated for; real data
    # against BabyLM's 100M-word cap
    world_manifest = data_dir / "world.json"
    budget = (json.loads(world_manifest.read_text())["params"]["word_budget"] if world_manifest.exists()
              else count_words.BABYLM_BUDGET)
    count_words.count_words(data_dir, word_budget=budget)
    tok = train_tokenizer.train_tokenizer(data_dir, vocab_size=vocab_size)
    tokens = tokenize_text.tokenize_text(data_dir)
    cur = build_curriculum.build_curriculum(data_dir, curriculum, seed=0)
    return Prepared(data_dir, ing, tok, tokens, cur)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_dir", type=Path, default=WORLD_DEFAULT_DIR)
    p.add_argument("--curriculum", default="length")
    p.add_argument("--word_budget", type=int, default=None,
                   help=f"size of the built-in world (default {world.DEFAULT_BUDGET:,} when generated)")
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--vocab_size", type=int, default=2048)
    p.add_argument("--on_bad_record", choices=ingest.ON_BAD_RECORD, default="error",
                   help="a bad text line or caption record: stop with its file:line (error), or leave it "
                        "out and count it in the ingest manifest (skip)")
    return run_cli(p, argv, lambda a: prepare(a.data_dir, a.curriculum, word_budget=a.word_budget,
                                              image_size=a.image_size, vocab_size=a.vocab_size,
                                              on_bad_record=a.on_bad_record))


if __name__ == "__main__":
    sys.exit(main())

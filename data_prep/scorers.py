"""Caption difficulty scorers behind one registry: `--scorer NAME` -> SCORERS[NAME].

A scorer maps every caption to a float, higher = harder. It may read the text-only portion
(e.g. for word frequencies) through `ScoringContext`. Add one by writing a function and
registering it; the score stage, the curricula and the manifests pick it up by name.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import datasets
import numpy as np


@dataclass
class ScoringContext:
    """What a scorer may need besides the captions; loaded lazily."""

    text: datasets.Dataset | None  # the ingested text-only portion (column `text`), if any

    @cached_property
    def unigram_counts(self) -> Counter:
        if self.text is None:
            raise ValueError("this scorer needs the text-only portion, and the data has none")
        counts: Counter = Counter()
        for batch in self.text.iter(batch_size=10_000):
            for line in batch["text"]:
                counts.update(line.lower().split())
        return counts


Scorer = Callable[[list[str], ScoringContext], np.ndarray]


def length(captions: list[str], ctx: ScoringContext) -> np.ndarray:
    """Words per caption."""
    return np.array([len(c.split()) for c in captions], dtype=np.float32)


def rarity(captions: list[str], ctx: ScoringContext) -> np.ndarray:
    """Mean unigram surprisal (bits) of the caption's words under the text portion,
    add-one smoothed, so captions of rare words count as harder."""
    counts = ctx.unigram_counts
    total, vocab = sum(counts.values()), len(counts) + 1
    out = np.empty(len(captions), dtype=np.float32)
    for i, c in enumerate(captions):
        words = c.lower().split()
        out[i] = np.mean([-math.log2((counts[w] + 1) / (total + vocab)) for w in words])
    return out


SCORERS: dict[str, Scorer] = {"length": length, "rarity": rarity}

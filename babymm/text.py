"""Text normalisation and word counting shared by data prep, training and eval.

One definition of "a word" (a whitespace-delimited token, as BabyLM counts them) and one
normalisation, so that the budget report, the tokenizer and the scorers agree.
"""

from __future__ import annotations

import re
import unicodedata

_WS = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """NFKC, collapse whitespace, strip. Case is kept; the tokenizer lowercases."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text)).strip()


def count_words(text: str) -> int:
    """Words as BabyLM counts them: whitespace-delimited tokens."""
    return len(text.split())


def with_article(phrase: str) -> str:
    """The phrase with its indefinite article, by its first letter: "an orange star", "a red star"."""
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase

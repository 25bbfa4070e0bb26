"""Text normalisation and word counting shared by data prep, training and eval.

One definition of "a word" (a whitespace-delimited token, as BabyLM counts them) and one
normalisation, so that the budget report, the tokenizer and the scorers agree.
"""

from __future__ import annotations

import re
import unicodedata

_WS = re.compile(r"\s+")
# Invisible characters that carry no text: a byte-order mark (U+FEFF, also a zero-width no-break
# space) and the word joiner that replaced it (U+2060), zero-width space and non-joiner, the
# direction marks (U+200E, U+200F, U+061C) and control characters that are not whitespace.
# Besides, the tokenizer's normalisation (SentencePiece's nmt_nfkc_cf) drops those control
# characters and makes the others spaces, which str.split() does not split on: left in, a word
# count and the tokenizer's word starts would disagree. Kept: the zero-width joiner (emoji,
# Indic scripts), soft hyphens and the bidirectional embedding and isolate controls.
_INVISIBLE = re.compile("[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\u061c\u200b\u200c\u200e\u200f\u2060\ufeff]")
# visible, but spaces to the tokenizer: U+FFFD (a character lost before the text got here) and
# U+2581 (SentencePiece's own space symbol); made spaces here too, so the words are the same
_AS_SPACE = re.compile("[\ufffd\u2581]")


def normalize_text(text: str) -> str:
    """NFKC, invisible characters removed, whitespace collapsed, stripped. Case is kept; the
    tokenizer lowercases. Whitespace is what str.split() splits on, and after this what the
    tokenizer starts a word at, so `count_words` counts the words the tokenizer sees."""
    text = _AS_SPACE.sub(" ", _INVISIBLE.sub("", unicodedata.normalize("NFKC", text)))
    return _WS.sub(" ", text).strip()


def count_words(text: str) -> int:
    """Words as BabyLM counts them: whitespace-delimited tokens."""
    return len(text.split())


def with_article(phrase: str) -> str:
    """The phrase with its indefinite article, by its first letter: "an orange star", "a red star"."""
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase

"""Stage 3: train a SentencePiece Unigram tokenizer on the text-only portion, save it as a
fast Hugging Face tokenizer (`tokenizer.json`).

Frequent words are given to the trainer whole (see _train_spm: SentencePiece's own seeds miss
the words of a small closed vocabulary, and the built-in world's tokenizer was nearly
character-level); a text that cannot support the vocabulary size asked for gets a smaller one,
said loudly and recorded in the manifest, but never one that splits a word seen 50+ times.

As the BabyLM baselines: Unigram, NFKC, lowercased, trained on the text portion only, with
`<pad>`=0, `<unk>`=1, `<s>`=2, `</s>`=3 and `<image>`. The fast tokenizer is rebuilt from
the trained piece/score list (the stock converters fail here: `LlamaTokenizerFast(vocab_file)`
encodes everything as BOS, `from_spm` needs protobuf) and SentencePiece's own normalisation
table (read from `spm.model`), and the stage refuses to finish unless it splits text exactly as
SentencePiece does, on a sample of the training lines, on every character the table rewrites
and on a sample of all the others.
The official BabyLM evaluation pipeline asks for offset mappings, which only fast tokenizers give.

One known difference remains, in `tokenizers` itself: its `Precompiled` normaliser looks a
multi-code-point grapheme cluster up whole and, when the cluster's first code point is one the
table rewrites, replaces the whole cluster by that code point's rewrite, so a combining mark after
an upper-case letter is lost ("B\u0301" -> "b", SentencePiece "b\u0301"); clusters of 6 bytes
or more skip the table's multi-code-point entries ("\uff76\uff9e" -> "\u30ab\u3099", SentencePiece
"\u30ac"). Ingest's NFKC composes most such clusters first. huggingface/tokenizers#2116.
"""

from __future__ import annotations

import io
import random
import re
import struct
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import sentencepiece as spm
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, processors
from transformers import PreTrainedTokenizerFast

from babymm.files import DataError, atomic_dir
from babymm.tokenizer import IMAGE_TOKEN, SPECIALS
from data_prep import ingest as ingest_stage
from data_prep.stage import (
    fingerprint,
    is_up_to_date,
    log,
    prepared_dir,
    run_cli,
    stage_parser,
    write_manifest,
)

STAGE = "tokenizer"
# strings whose normalisation is easy to get wrong: case, runs of spaces, NFKC, unknown chars
TRICKY = ["The RED Ball", "  two   spaces  ", "ﬁsh and Ｆｕｌｌ width", "tab\there", "zebra ☃ quux!",
          "é e\u0301", "what color is it? answer: red."]


def out_dir(data_dir: Path, subset: str | None = None) -> Path:
    return prepared_dir(data_dir, subset) / STAGE


# SentencePiece's default max_sentence_length: it silently skips longer lines
MIN_MAX_SENTENCE_BYTES = 4192
# SentencePiece reads this many lines at most (the first ones; it was its input_sentence_size)
INPUT_SENTENCES = 2_000_000
# a word seen this often in the training text must be one piece, "▁word" (if a piece can be that
# long); checked whenever the text cannot support the vocabulary size asked for
FREQUENT_WORD = 50
# the fewest times a word is seen for it to be offered to the trainer whole (see _train_spm)
SEED_WORD_MIN_COUNT = 2
# SentencePiece's max_sentencepiece_length (its default), in characters, "▁" included
MAX_PIECE_CHARS = 16
# what starts a whitespace word and can be one piece with its "▁": a run of letters or of digits
# (SentencePiece ends a piece where the Unicode script changes, and around digits)
_WORD_START = re.compile(r"(?<!\S)([^\W\d_]+|[0-9]+)")
# bump it when the way the tokenizer is trained changes: it is part of the stage's fingerprint,
# so tokenizers trained the old way are retrained, not reused. 2: whole-word seed lines, one
# training run with hard_vocab_limit off (1 had no number: SentencePiece's seeds only, and a
# retraining at the size the text supports)
RECIPE = 2


def word_counts(lines: list[str]) -> Counter[str]:
    """How often each word start (see _WORD_START) occurs in `lines`, case-folded as the
    tokenizer's normalisation folds it."""
    return Counter(_WORD_START.findall("\n".join(lines).casefold()))


def seed_word_lines(counts: Counter[str], vocab_size: int) -> list[str]:
    """The words given to the trainer once more, each as a line of its own (see _train_spm): the
    `vocab_size` most frequent word starts seen SEED_WORD_MIN_COUNT+ times that fit in a piece, in
    a fixed order. No more: a vocabulary cannot hold more whole words than it has pieces, and
    rarer whole-word seeds take pieces from the subwords. On 11M words drawn from English word
    frequencies, at 16,384 pieces, 1,202 of the 12,240 words seen 50+ times were split without
    seed lines, 1,192 with these, 1,421 with a seed line for every word seen twice."""
    words = sorted((w for w, n in counts.items() if n >= SEED_WORD_MIN_COUNT and len(w) < MAX_PIECE_CHARS),
                   key=lambda w: (-counts[w], w))
    return sorted(words[:vocab_size])


def split_frequent_words(sp: spm.SentencePieceProcessor, counts: Counter[str]) -> tuple[list[str], int]:
    """(the words seen FREQUENT_WORD+ times that the model does not keep as one piece, most
    frequent first; how many words seen that often fit in a piece at all)."""
    frequent = sorted((w for w, n in counts.items() if n >= FREQUENT_WORD and len(w) < MAX_PIECE_CHARS),
                      key=lambda w: (-counts[w], w))
    ids = sp.encode(frequent) if frequent else []
    return [w for w, i in zip(frequent, ids, strict=True) if len(i) != 1 or i[0] == sp.unk_id()], len(frequent)


def _train_spm(lines: list[str], vocab_size: int, prefix: Path, source: str = "the text",
               counts: Counter[str] | None = None) -> int:
    """Train `prefix`.model with up to `vocab_size` pieces; returns how many it has.

    Why the built-in world's tokenizer used to be nearly character-level (197 pieces where 2048
    were asked for; "question" -> "▁qu es t i on", "is" -> "▁ is"): a Unigram trainer keeps
    pieces only from its seed set, and SentencePiece seeds it with the substrings at the branch
    points of the text's suffix array, i.e. followed in the text by at least two different
    characters, that hold no "▁" past their first character. A whole word is a seed only if it is
    followed by two different characters somewhere. In real text nearly every frequent word is (a
    space, a comma, a longer word it begins); in the world's text of ~300 distinct words most are
    always followed by a space ("▁is▁", never anything else), or always by the same mark
    ("▁question:"), so "▁is" and "▁question" were never seeds, only fragments such as "▁i" and
    "▁qu". Of its ~430 seeds, EM kept what the 197 pieces are, and the hard vocabulary limit
    refused 2048 ("Vocabulary size too high (2048). Please set it to a value <= 197"); the old
    fallback retrained at 197, with the same fragments. None of the other trainer options was the
    limit: seed_sentencepiece_size (1M) was not reached, max_sentencepiece_length (16) is longer
    than the words, and shrinking_factor only acts while there are more than 1.1 x vocab_size
    pieces.

    The fix, at the root: the most frequent words (seed_word_lines) are also given to the trainer
    once each, as lines of their own after the text. At the end of a line a word is followed by
    the line's end, so it is a branch point, hence a seed, and EM keeps the frequent words whole.
    It costs EM one more count of each such word (and adds seeds that real text mostly has
    already). SentencePiece reads the text's first INPUT_SENTENCES lines, as before, and these.

    `hard_vocab_limit=False`: where the text cannot support `vocab_size` pieces (EM drops every
    piece that no likely split uses), one run keeps the pieces it has, and this says so on stderr,
    with the number, after checking that every word seen FREQUENT_WORD+ times is one piece; if one
    is not, it raises a DataError that names `source`.

    SentencePiece silently drops lines longer than `max_sentence_length` bytes, so it is set to
    the longest line (never below its default). The model comes back through `model_writer`, not
    `model_prefix`, which the model file would record: the same text gives the same file, byte for
    byte, wherever it is trained (one thread; the version is pinned). `counts`: word_counts of
    the first INPUT_SENTENCES lines, if the caller has them."""
    lines = lines[:INPUT_SENTENCES]
    counts = word_counts(lines) if counts is None else counts
    extra = seed_word_lines(counts, vocab_size)
    longest = max((len(line.encode("utf-8")) for line in lines), default=0)
    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines + extra), vocab_size=vocab_size, model_writer=writer,
        max_sentence_length=max(MIN_MAX_SENTENCE_BYTES, longest), hard_vocab_limit=False,
        model_type="unigram", normalization_rule_name="nmt_nfkc_cf",
        character_coverage=1.0, byte_fallback=False, user_defined_symbols=[IMAGE_TOKEN],
        pad_id=0, unk_id=1, bos_id=2, eos_id=3, num_threads=1, minloglevel=2,
        input_sentence_size=0, shuffle_input_sentence=False,  # 0: all of them (sliced above)
        max_sentencepiece_length=MAX_PIECE_CHARS,
    )
    Path(f"{prefix}.model").write_bytes(writer.getvalue())
    sp = spm.SentencePieceProcessor(model_file=f"{prefix}.model")
    pieces = sp.get_piece_size()
    if pieces < vocab_size:
        split, frequent = split_frequent_words(sp, counts)
        if split:
            shown = ", ".join(f"{w!r} -> {' '.join(sp.encode(w, out_type=str))}" for w in split[:3])
            raise DataError(
                f"{source}: SentencePiece can train only {pieces} of the {vocab_size} tokenizer pieces asked "
                f"for, and they split {len(split)} of the {frequent} words seen {FREQUENT_WORD}+ times "
                f"(e.g. {shown}); the text is too small or too uniform for a Unigram tokenizer: add text, "
                f"or report this")
        kept = (f"each of the {frequent} words seen {FREQUENT_WORD}+ times one of them" if frequent
                else f"no word is seen {FREQUENT_WORD}+ times")
        print(f"[{STAGE}] WARNING: {source} supports only {pieces} tokenizer pieces, not the {vocab_size} asked "
              f"for: it has only {len(counts)} distinct words, and SentencePiece keeps no piece that no likely "
              f"split of them uses; the tokenizer has {pieces}, {kept}", file=sys.stderr, flush=True)
    return pieces


# --- SentencePiece's normaliser, read from its model file ---------------------------------------
# spm.model is a serialized ModelProto (sentencepiece_model.proto); reading it needs no protobuf
# package, only its wire format: field 3 is the NormalizerSpec, and in it 1 = name,
# 2 = precompiled_charsmap, 3 = add_dummy_prefix, 4 = remove_extra_whitespaces,
# 5 = escape_whitespaces (the last three default to true when absent).
_NORMALIZER_SPEC = 3
_SPEC_FIELDS = {1: "name", 2: "precompiled_charsmap", 3: "add_dummy_prefix",
                4: "remove_extra_whitespaces", 5: "escape_whitespaces"}


def _proto_fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of each field of a serialized protobuf message: varints as int,
    length-delimited fields as bytes, fixed-width ones as their raw bytes."""
    i = 0

    def varint() -> int:
        nonlocal i
        value = shift = 0
        while True:
            if i >= len(buf):
                raise ValueError("truncated varint")
            b = buf[i]
            i += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value
            shift += 7

    while i < len(buf):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            yield number, varint()
            continue
        if wire == 2:
            size = varint()
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported wire type {wire} (field {number})")
        if i + size > len(buf):
            raise ValueError(f"field {number} runs past the end")
        yield number, buf[i : i + size]
        i += size


def normalizer_spec(spm_model: Path) -> dict:
    """The NormalizerSpec of a SentencePiece model file: name, precompiled_charsmap (bytes) and
    the whitespace switches."""
    spec: dict = {"name": "", "precompiled_charsmap": b"", "add_dummy_prefix": True,
                  "remove_extra_whitespaces": True, "escape_whitespaces": True}
    try:
        for number, value in _proto_fields(Path(spm_model).read_bytes()):
            if number == _NORMALIZER_SPEC and isinstance(value, bytes):
                for field, v in _proto_fields(value):
                    key = _SPEC_FIELDS.get(field)
                    if key in ("name", "precompiled_charsmap") and isinstance(v, bytes):
                        spec[key] = v.decode("utf-8", "replace") if key == "name" else v
                    elif key is not None and isinstance(v, int):
                        spec[key] = bool(v)
    except ValueError as e:
        raise DataError(f"{spm_model}: not a SentencePiece model file ({e})") from None
    return spec


def rewritten_characters(charsmap: bytes) -> list[str]:
    """Every code point that the normalisation table rewrites on its own (a one-code-point key
    of its double-array trie), found by walking the trie for all code points at once. The
    charsmap is a little-endian uint32 byte count, that many bytes of darts-clone trie units,
    then the replacement strings."""
    if len(charsmap) < 4:
        return []
    (trie_bytes,) = struct.unpack_from("<I", charsmap)
    units = np.frombuffer(charsmap, dtype="<u4", count=trie_bytes // 4, offset=4).astype(np.int64)
    cps = np.arange(0x110000, dtype=np.int64)
    cps = cps[(cps < 0xD800) | (cps > 0xDFFF)]
    # each code point's UTF-8 bytes, by hand: byte n > 0 of an L-byte sequence carries bits
    # 6 * (L - 1 - n) and up
    length = 1 + (cps >= 0x80) + (cps >= 0x800) + (cps >= 0x10000)
    utf8 = np.zeros((cps.size, 4), dtype=np.int64)
    utf8[:, 0] = np.select([length == 1, length == 2, length == 3],
                           [cps, 0xC0 | (cps >> 6), 0xE0 | (cps >> 12)], 0xF0 | (cps >> 18))
    for n in range(1, 4):
        shift = 6 * np.maximum(length - 1 - n, 0)
        utf8[:, n] = np.where(length > n, 0x80 | ((cps >> shift) & 0x3F), 0)

    def offset(u):
        return (u >> 10) << ((u & (1 << 9)) >> 6)

    # darts-clone's exactMatchSearch, for all code points at once; `idx` keeps the ones still
    # in the trie
    idx, node = np.arange(cps.size), np.zeros(cps.size, dtype=np.int64)
    for n in range(4):
        done = length[idx] <= n
        walking = idx[~done]
        nxt = node[~done] ^ offset(units[node[~done]]) ^ utf8[walking, n]
        ok = nxt < units.size
        walking, nxt = walking[ok], nxt[ok]
        ok = (units[nxt] & ((1 << 31) | 0xFF)) == utf8[walking, n]
        idx, node = np.concatenate([idx[done], walking[ok]]), np.concatenate([node[done], nxt[ok]])
    found = idx[(units[node] >> 8) & 1 == 1]
    return [chr(c) for c in np.sort(cps[found])]


# where a character stands in a line matters to SentencePiece: spaces are dropped at both ends
# and collapsed inside, and the dummy prefix goes in front
CONTEXTS = ("{}", "{}a", "a{}", " {} ", "{}{}")


def character_probes(spm_model: Path, every: int = 97, contexts: tuple[str, ...] = ("{}",),
                     chunk: int = 256) -> list[str]:
    """Texts for `check_agreement`: every character the model's normalisation table rewrites,
    and every `every`-th code point, as f"a{c}b" (`chunk` of them to a text, space-separated:
    one long text costs much less than many short ones), then each table character alone in
    every one of `contexts` (a format with {} for it, one text each)."""
    table = rewritten_characters(normalizer_spec(spm_model)["precompiled_charsmap"])
    cps = sorted({ord(c) for c in table}.union(range(0, 0xD800, every), range(0xE000, 0x110000, every)))
    probes = ["a" + "b a".join(map(chr, cps[i : i + chunk])) + "b" for i in range(0, len(cps), chunk)]
    return probes + [fmt.format(c, c) for fmt in contexts for c in table]


def build_fast_tokenizer(spm_model: Path) -> PreTrainedTokenizerFast:
    """A `tokenizers` Unigram model with SentencePiece's pieces, scores and normalisation."""
    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    tok = Tokenizer(models.Unigram(vocab, unk_id=SPECIALS["unk"][1], byte_fallback=False))
    spec = normalizer_spec(spm_model)
    switches = ("add_dummy_prefix", "remove_extra_whitespaces", "escape_whitespaces")
    if not spec["precompiled_charsmap"] or not all(spec[k] for k in switches):
        raise DataError(f"{spm_model}: expected a normalisation table and {', '.join(switches)}; the model "
                        f"has a {len(spec['precompiled_charsmap'])}-byte table and "
                        f"{ {k: spec[k] for k in switches} }")
    # SentencePiece's Normalizer::Normalize: the table (nmt_nfkc_cf: NFKC, case folding, control
    # characters dropped, format characters such as U+200B and U+FEFF made spaces), then runs of
    # spaces made one and spaces at both ends dropped (remove_extra_whitespaces), spaces written
    # as U+2581 (escape_whitespaces) and one put in front (add_dummy_prefix). Only " " counts as a
    # space here: the table has already rewritten every other whitespace character it rewrites
    # (U+0085 it keeps, so Strip(), which strips all Unicode whitespace, would be wrong).
    tok.normalizer = normalizers.Sequence([
        normalizers.Precompiled(spec["precompiled_charsmap"]),
        normalizers.Replace(Regex(" {2,}"), " "),
        normalizers.Replace(Regex(r"\A | \z"), ""),
        normalizers.Replace(" ", "▁"),
        normalizers.Prepend("▁"),
    ])
    # the normaliser has done what a Metaspace pre-tokenizer would (and better: Metaspace does not
    # prepend "▁" to a text that already starts with one); SentencePiece does not pre-split either
    tok.pre_tokenizer = None
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=False)
    bos, bos_id = SPECIALS["bos"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=SPECIALS["eos"][0], unk_token=SPECIALS["unk"][0],
        pad_token=SPECIALS["pad"][0], additional_special_tokens=[IMAGE_TOKEN], padding_side="right",
        model_max_length=1024,
    )


def check_agreement(fast: PreTrainedTokenizerFast, spm_model: Path, texts: list[str]) -> int:
    """Raise unless the fast tokenizer gives SentencePiece's ids on every text; returns count.
    One batch each way (the fast tokenizer's backend, as `fast(texts)` calls it, without offsets)."""
    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    ours = [e.ids for e in fast.backend_tokenizer.encode_batch_fast(texts, add_special_tokens=False)]
    theirs = sp.encode(texts)
    bad = [i for i, (o, t) in enumerate(zip(ours, theirs, strict=True)) if o != t]
    if bad:
        shown = "; ".join(f"{texts[i]!r}: {fast.convert_ids_to_tokens(ours[i])} vs {sp.id_to_piece(theirs[i])}"
                          for i in bad[:3])
        raise DataError(f"{spm_model}: fast tokenizer disagrees with SentencePiece on {len(bad)} of "
                        f"{len(texts)} texts, e.g. {shown}; report this")
    return len(texts)


def train_tokenizer(data_dir: Path, vocab_size: int = 2048, overwrite: bool = False,
                    subset: str | None = None) -> Path:
    data_dir = Path(data_dir)
    upstream = ingest_stage.require_ingested(data_dir, subset=subset)
    fp = fingerprint(STAGE, upstream["fingerprint"], vocab_size, spm.__version__, RECIPE)
    out = out_dir(data_dir, subset)
    if not overwrite and is_up_to_date(out, fp):
        log(STAGE, f"{out} is up to date")
        return out
    text = ingest_stage.load_text(data_dir, subset)
    if text is None:
        raise DataError(f"{data_dir}: no text-only portion (text/*.train) to train the tokenizer on")
    lines = text["text"][:]  # [:]: one Arrow read, not a formatted row at a time (walked three times)
    with atomic_dir(out) as tmp:
        counts = word_counts(lines[:INPUT_SENTENCES])
        source = f"{data_dir / 'text'}" + (f" (subset {subset})" if subset else "")
        actual = _train_spm(lines, vocab_size, tmp / "spm", source=source, counts=counts)
        split, frequent = split_frequent_words(spm.SentencePieceProcessor(model_file=str(tmp / "spm.model")), counts)
        fast = build_fast_tokenizer(tmp / "spm.model")
        sample = random.Random(0).sample(lines, min(2000, len(lines)))
        checked = check_agreement(fast, tmp / "spm.model", sample + TRICKY + character_probes(tmp / "spm.model"))
        fast.save_pretrained(tmp)
        write_manifest(tmp, STAGE, fp, requested_vocab_size=vocab_size, vocab_size=len(fast),
                       spm_pieces=actual, training_lines=len(lines),
                       training_words=int(sum(text["num_words"][:])),
                       special_tokens={k: v[0] for k, v in SPECIALS.items()} | {"image": IMAGE_TOKEN},
                       frequent_words=frequent, frequent_words_split=len(split), recipe=RECIPE,
                       agreement_checked_texts=checked, sentencepiece_version=spm.__version__)
    log(STAGE, f"{len(fast)} tokens (asked for {vocab_size}); {frequent - len(split)} of the {frequent} words seen "
               f"{FREQUENT_WORD}+ times are one token; identical to SentencePiece on {checked} texts -> {out}")
    return out



def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--vocab_size", type=int, default=2048)
    return run_cli(p, argv, lambda a: train_tokenizer(a.data_dir, a.vocab_size, a.overwrite, a.subset))


if __name__ == "__main__":
    sys.exit(main())

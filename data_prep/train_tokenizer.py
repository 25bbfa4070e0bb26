"""Stage 3: train a SentencePiece Unigram tokenizer on the text-only portion, save it as a
fast Hugging Face tokenizer (`tokenizer.json`).

As the BabyLM baselines: Unigram, NFKC, lowercased, trained on the text portion only, with
`<pad>`=0, `<unk>`=1, `<s>`=2, `</s>`=3 and `<image>`. The fast tokenizer is rebuilt from
the trained piece/score list (the stock converters fail here: `LlamaTokenizerFast(vocab_file)`
encodes everything as BOS, `from_spm` needs protobuf), and the stage refuses to finish unless
it splits text exactly as SentencePiece does. The official BabyLM evaluation pipeline asks
for offset mappings, which only fast tokenizers give.
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

import sentencepiece as spm
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from babymm.files import DataError, atomic_dir
from babymm.tokenizer import IMAGE_TOKEN, SPECIALS
from data_prep import ingest as ingest_stage
from data_prep.stage import fingerprint, is_up_to_date, log, run_cli, stage_parser, write_manifest

STAGE = "tokenizer"
# strings whose normalisation is easy to get wrong: case, runs of spaces, NFKC, unknown chars
TRICKY = ["The RED Ball", "  two   spaces  ", "ﬁsh and Ｆｕｌｌ width", "tab\there", "zebra ☃ quux!",
          "é e\u0301", "what color is it? answer: red."]


def out_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "prepared" / STAGE


# SentencePiece's default max_sentence_length: it silently skips longer lines
MIN_MAX_SENTENCE_BYTES = 4192


def _train_spm(lines: list[str], vocab_size: int, prefix: Path) -> int:
    """Train; if the corpus cannot support `vocab_size` pieces, retrain at the largest it can.
    SentencePiece silently drops lines longer than `max_sentence_length` bytes, so it is set to
    the longest line (never below its default)."""
    longest = max((len(line.encode("utf-8")) for line in lines), default=0)
    kwargs = dict(
        max_sentence_length=max(MIN_MAX_SENTENCE_BYTES, longest),
        model_prefix=str(prefix), model_type="unigram", normalization_rule_name="nmt_nfkc_cf",
        character_coverage=1.0, byte_fallback=False, user_defined_symbols=[IMAGE_TOKEN],
        pad_id=0, unk_id=1, bos_id=2, eos_id=3, num_threads=1, minloglevel=2,
        input_sentence_size=2_000_000, shuffle_input_sentence=False,
    )
    try:
        spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), vocab_size=vocab_size, **kwargs)
        return vocab_size
    except RuntimeError as e:
        m = re.search(r"Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+)", str(e))
        if not m:
            raise
        reachable = int(m.group(1))
        log(STAGE, f"the text supports at most {reachable} pieces (asked for {vocab_size}); using {reachable}")
        spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), vocab_size=reachable, **kwargs)
        return reachable


def build_fast_tokenizer(spm_model: Path) -> PreTrainedTokenizerFast:
    """A `tokenizers` Unigram model with SentencePiece's pieces, scores and normalisation."""
    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    tok = Tokenizer(models.Unigram(vocab, unk_id=SPECIALS["unk"][1], byte_fallback=False))
    # nmt_nfkc_cf: NFKC, whitespace runs -> one space, trimmed, case-folded
    tok.normalizer = normalizers.Sequence([
        normalizers.NFKC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip(),
        normalizers.Lowercase(),
    ])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=False)
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
    """Raise unless the fast tokenizer gives SentencePiece's ids on every text; returns count."""
    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    for text in texts:
        ours, theirs = fast(text, add_special_tokens=False)["input_ids"], sp.encode(text)
        if ours != theirs:
            raise DataError(f"{spm_model}: fast tokenizer disagrees with SentencePiece on {text!r}: "
                            f"{fast.convert_ids_to_tokens(ours)} vs {sp.id_to_piece(theirs)}; report this")
    return len(texts)


def train_tokenizer(data_dir: Path, vocab_size: int = 2048, overwrite: bool = False) -> Path:
    data_dir = Path(data_dir)
    upstream = ingest_stage.require_ingested(data_dir)
    fp = fingerprint(STAGE, upstream["fingerprint"], vocab_size)
    out = out_dir(data_dir)
    if not overwrite and is_up_to_date(out, fp):
        log(STAGE, f"{out} is up to date")
        return out
    text = ingest_stage.load_text(data_dir)
    if text is None:
        raise DataError(f"{data_dir}: no text-only portion (text/*.train) to train the tokenizer on")
    lines = text["text"]
    with atomic_dir(out) as tmp:
        actual = _train_spm(lines, vocab_size, tmp / "spm")
        fast = build_fast_tokenizer(tmp / "spm.model")
        sample = random.Random(0).sample(lines, min(2000, len(lines)))
        checked = check_agreement(fast, tmp / "spm.model", sample + TRICKY)
        fast.save_pretrained(tmp)
        write_manifest(tmp, STAGE, fp, requested_vocab_size=vocab_size, vocab_size=len(fast),
                       spm_pieces=actual, training_lines=len(lines),
                       training_words=sum(len(t.split()) for t in lines),
                       special_tokens={k: v[0] for k, v in SPECIALS.items()} | {"image": IMAGE_TOKEN},
                       agreement_checked_texts=checked)
    log(STAGE, f"{len(fast)} tokens (asked for {vocab_size}); identical to SentencePiece on {checked} texts -> {out}")
    return out



def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--vocab_size", type=int, default=2048)
    return run_cli(p, argv, lambda a: train_tokenizer(a.data_dir, a.vocab_size, a.overwrite))


if __name__ == "__main__":
    sys.exit(main())

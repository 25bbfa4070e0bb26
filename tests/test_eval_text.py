"""Text benchmarks through lm-eval against independent computations: a naive per-sentence
log-probability, lm-eval's own `hf` model, and the official BabyLM 2025 pipeline's EWoK rule."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from eval.lm_adapter import BabymmLM
from eval.text_tasks import score_suite, write_tasks

PAIRS = [("the red balls are big.", "the red balls is big."),
         ("these dogs are happy.", "this dogs are happy."),
         ("the big red cup is here.", "the red big cup is here."),
         ("the cats do not see the dog.", "the cats not do see the dog.")]
EWOK = [("the ball is to the left of the cup.", "the ball is to the right of the cup.",
         "the cup is to the right of the ball.", "the cup is to the left of the ball."),
        ("the dog is red.", "the dog is blue.", "the red one is the dog.", "the blue one is the dog."),
        ("there are two cats.", "there is one cat.", "the cats are here.", "the cat is here."),
        ("the boy has the hat.", "the girl has the hat.", "the boy is wearing it.", "the girl is wearing it.")]


@pytest.fixture(scope="module")
def lm_parts(tiny_run):
    return AutoModelForCausalLM.from_pretrained(tiny_run).eval(), AutoTokenizer.from_pretrained(tiny_run)


def naive_logprob(model, tok, sentence):
    """log P(sentence | BOS), one sentence at a time."""
    ids = torch.tensor([tok(sentence)["input_ids"]])  # BOS + sentence
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
    return logp.gather(-1, ids[0, 1:, None]).sum().item()


def official_ewok_logprob(model, tok, context, target):
    """The official BabyLM 2025 pipeline's causal rule (sentence_zero_shot/dataset.py): tokenize
    `context + " " + target` with the tokenizer's defaults (BOS first) and sum the log-probs of
    the tokens whose character span ends past the context."""
    sentence = f"{context} {target}"
    enc = tok(sentence, return_offsets_mapping=True)
    ids = torch.tensor([enc["input_ids"]])
    start = len(sentence) - len(" " + target) + enc["offset_mapping"][0][0]
    phrase = [i for i, (_, end) in enumerate(enc["offset_mapping"]) if end > start]
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].float(), -1)
    return sum(logp[i - 1, enc["input_ids"][i]].item() for i in phrase)


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _blimp_rows(pairs, uid):
    return [{"sentence_good": g, "sentence_bad": b, "field": "syntax", "UID": uid, "linguistics_term": "x"}
            for g, b in pairs]


def test_blimp_matches_naive_and_lm_eval_hf(lm_parts, tiny_run, tmp_path):
    model, tok = lm_parts
    _write(tmp_path / "blimp" / "pairs.jsonl", _blimp_rows(PAIRS, "pairs"))
    _write(tmp_path / "blimp" / "swapped.jsonl", _blimp_rows([(b, g) for g, b in PAIRS[:3]], "swapped"))
    metrics, records = score_suite(BabymmLM(model, tok), "blimp", tmp_path / "blimp", tmp_path / "work")
    hits = {name: [naive_logprob(model, tok, g) > naive_logprob(model, tok, b) for g, b in pairs]
            for name, pairs in (("pairs", PAIRS), ("swapped", [(b, g) for g, b in PAIRS[:3]]))}
    for name, h in hits.items():
        assert [r["hit"] for r in records[name]] == h
        assert metrics["subtasks"][name]["acc"] == pytest.approx(sum(h) / len(h))
    # BLiMP is reported as the unweighted mean of its subtasks
    assert metrics["acc"] == pytest.approx((sum(hits["pairs"]) / 4 + sum(hits["swapped"]) / 3) / 2)
    assert [r["id"] for r in records["pairs"]] == [f"pairs_{i}" for i in range(4)]
    assert [r["pred"] for r in records["pairs"]] == [g if h else b for (g, b), h in zip(PAIRS, hits["pairs"], strict=True)]
    # lm-eval's own HF backend on the saved directory agrees, offline
    import lm_eval
    from lm_eval.tasks import TaskManager

    hf = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={tiny_run},add_bos_token=True,device=cpu",
                                 tasks=["babymm_blimp_pairs"],
                                 task_manager=TaskManager(include_path=str(tmp_path / "work" / "blimp"),
                                                          include_defaults=False))
    assert hf["results"]["babymm_blimp_pairs"]["acc,none"] == pytest.approx(sum(hits["pairs"]) / 4)


def test_a_tie_is_not_a_hit(lm_parts, tmp_path):
    model, tok = lm_parts
    same = [(g, g) for g, _ in PAIRS]  # identical sentences: equal scores; lm-eval's acc would say 1.0
    _write(tmp_path / "blimp" / "same.jsonl", _blimp_rows(same, "same"))
    metrics, records = score_suite(BabymmLM(model, tok), "blimp", tmp_path / "blimp", tmp_path / "work")
    assert metrics["acc"] == 0.0 and not any(r["hit"] for r in records["same"])


def test_ewok_scored_as_the_official_pipeline(lm_parts, tiny_run, tmp_path):
    """EWoK: log P(Target | BOS, Context1). Without BOS before the context (the old adapter)
    the scores differ; per item they must equal the official pipeline's rule."""
    model, tok = lm_parts
    rows = [{"Context1": c1, "Context2": c2, "Target1": t1, "Target2": t2, "Domain": "d"}
            for c1, c2, t1, t2 in EWOK]
    _write(tmp_path / "ewok" / "d.jsonl", rows)
    metrics, records = score_suite(BabymmLM(model, tok), "ewok", tmp_path / "ewok", tmp_path / "work")
    for r, (c1, _, t1, t2) in zip(records["d"], EWOK, strict=True):
        official = [official_ewok_logprob(model, tok, c1, t) for t in (t1, t2)]
        assert r["scores"] == pytest.approx(official, abs=1e-4)
        assert r["hit"] == (official[0] > official[1])
    expected = sum(r["hit"] for r in records["d"]) / len(EWOK)
    assert metrics["acc"] == pytest.approx(expected)
    import lm_eval
    from lm_eval.tasks import TaskManager

    hf = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={tiny_run},add_bos_token=True,device=cpu",
                                 tasks=["babymm_ewok_d"],
                                 task_manager=TaskManager(include_path=str(tmp_path / "work" / "ewok"),
                                                          include_defaults=False))
    assert hf["results"]["babymm_ewok_d"]["acc,none"] == pytest.approx(expected)


def test_malformed_lines_name_file_and_line(tmp_path):
    d = tmp_path / "data"
    _write(d / "ok.jsonl", _blimp_rows(PAIRS, "ok"))
    with (d / "ok.jsonl").open("a") as f:
        f.write('{"sentence_good": "a b", "sentence_bad": ""}\n')
    with pytest.raises(ValueError, match=r"ok.jsonl:5: missing or empty field\(s\) \['sentence_bad'\]"):
        write_tasks("blimp", d, tmp_path / "tasks", "t")
    (d / "ok.jsonl").write_text('{"sentence_good": "a b",\n')
    with pytest.raises(ValueError, match=r"ok.jsonl:1: malformed JSON"):
        write_tasks("blimp", d, tmp_path / "tasks", "t")

"""Text benchmarks through lm-eval: local task files, the adapter, and known answers."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from eval.lm_adapter import BabymmLM
from eval.text_tasks import (
    run_text_tasks,
    to_submission_predictions,
    write_blimp_tasks,
    write_ewok_tasks,
)

PAIRS = [("the red balls are big.", "the red balls is big."),
         ("these dogs are happy.", "this dogs are happy."),
         ("the big red cup is here.", "the red big cup is here."),
         ("the cats do not see the dog.", "the cats not do see the dog.")]


def naive_logprob(model, tok, sentence):
    ids = torch.tensor([tok(sentence)["input_ids"]])  # BOS + sentence
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
    return logp.gather(-1, ids[0, 1:, None]).sum().item()


def _write(path, pairs):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"sentence_good": g, "sentence_bad": b, "field": "syntax", "UID": path.stem,
                                        "linguistics_term": "x"}) + "\n" for g, b in pairs))


def test_blimp_accuracy_matches_hand_computation(tiny_run, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_run).eval()
    tok = AutoTokenizer.from_pretrained(tiny_run)
    _write(tmp_path / "data" / "pairs.jsonl", PAIRS)
    # every pair and its mirror image: exactly half right, whatever the model
    _write(tmp_path / "data" / "mirrored.jsonl", PAIRS + [(b, g) for g, b in PAIRS])
    names = write_blimp_tasks(tmp_path / "data", tmp_path / "tasks", prefix="t_blimp")
    assert names == ["t_blimp_mirrored", "t_blimp_pairs"]
    samples: dict = {}
    res = run_text_tasks(BabymmLM(model, tok), tmp_path / "tasks", ["t_blimp"], samples=samples)
    expected = sum(naive_logprob(model, tok, g) > naive_logprob(model, tok, b) for g, b in PAIRS) / len(PAIRS)
    assert res["t_blimp_pairs"]["acc"] == pytest.approx(expected)
    assert res["t_blimp_mirrored"]["acc"] == pytest.approx(0.5)
    assert res["t_blimp"]["acc"] == pytest.approx((expected + 0.5) / 2)  # unweighted mean of subtasks
    preds = to_submission_predictions(samples, "t_blimp")
    assert [p["id"] for p in preds["pairs"]["predictions"]] == [f"pairs_{i}" for i in range(len(PAIRS))]
    # lm-eval's own HF backend on the saved directory agrees, offline
    import lm_eval
    from lm_eval.tasks import TaskManager

    hf = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={tiny_run},add_bos_token=True,device=cpu",
                                 tasks=["t_blimp_pairs"], task_manager=TaskManager(include_path=str(tmp_path / "tasks")))
    assert hf["results"]["t_blimp_pairs"]["acc,none"] == pytest.approx(expected)


def test_ewok_tasks_condition_on_context(tiny_run, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_run).eval()
    tok = AutoTokenizer.from_pretrained(tiny_run)
    items = [{"Context1": "the ball is red.", "Context2": "the ball is blue.", "Target1": "the ball is red.",
              "Target2": "the ball is blue.", "Domain": "color"}] * 3
    (tmp_path / "ewok").mkdir()
    (tmp_path / "ewok" / "color.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    write_ewok_tasks(tmp_path / "ewok", tmp_path / "tasks", prefix="t_ewok")
    res = run_text_tasks(BabymmLM(model, tok), tmp_path / "tasks", ["t_ewok"])
    lm = BabymmLM(model, tok)
    ctx, t1 = lm._encode_pair("the ball is red.", " the ball is red.")
    _, t2 = lm._encode_pair("the ball is red.", " the ball is blue.")
    (s1, _), (s2, _) = lm._loglikelihood_tokens([(None, ctx, t1), (None, ctx, t2)])
    assert res["t_ewok_color"]["acc"] == float(s1 > s2) and res["t_ewok_color"]["n"] == 3


def test_malformed_lines_name_file_and_line(tmp_path):
    d = tmp_path / "data"
    _write(d / "ok.jsonl", PAIRS)
    with (d / "ok.jsonl").open("a") as f:
        f.write('{"sentence_good": "a b", "sentence_bad": ""}\n')
    with pytest.raises(ValueError, match=r"ok.jsonl:5: missing or empty field\(s\) \['sentence_bad'\]"):
        write_blimp_tasks(d, tmp_path / "tasks")
    (d / "ok.jsonl").write_text('{"sentence_good": "a b",\n')
    with pytest.raises(ValueError, match=r"ok.jsonl:1: malformed JSON"):
        write_blimp_tasks(d, tmp_path / "tasks")

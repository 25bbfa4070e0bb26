"""Winoground and VQA scoring protocols and ranking rules, against hand computations.

- which tokens the official 2025 rule scores, on hand-made tokenizations (offsets included);
- the official ranking rule (torch.max: a tie goes to the first option, the target) beside
  babymm's strict one (a tie is a miss), on hand-made scores;
- whole tasks scored by a fake model whose log-probs are known: a bigram table scaled by the
  image's brightness, so a black image gives every token the same log-prob (ties) and a white
  one the table's preferences; the expected picks are worked out by hand below;
- `eval.run --protocol` reaches the tasks and is recorded, and is refused where it would do
  nothing.
"""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from eval import multimodal
from eval import run as eval_run
from eval.choices import first_best, ranked_choice_records
from eval.multimodal import derangement, official_request

BOS, EOS = 2, 3


# -- the offset rule on hand-made tokenizations ----------------------------------------------
class HandTokenizer:
    """A fixed tokenization per sentence (ids, character offsets), as a fast tokenizer gives."""

    def __init__(self, table):
        self.table = table

    def __call__(self, text, return_offsets_mapping=False, add_special_tokens=True):
        ids, offsets = self.table[text]
        out = {"input_ids": list(ids), "attention_mask": [1] * len(ids)}
        if return_offsets_mapping:
            out["offset_mapping"] = list(offsets)
        return out


def test_official_rule_scores_the_completion_tokens_and_not_an_appended_eos():
    # "is it red? yes": <s> is ▁it ▁red ? ▁ye s </s>; " yes" starts at character 10
    tok = HandTokenizer({"is it red? yes": ([BOS, 10, 11, 12, 13, 14, 15, EOS],
                                            [(0, 0), (0, 2), (2, 5), (5, 9), (9, 10), (10, 13), (13, 14), (0, 0)])})
    assert official_request(tok, "is it red? yes", " yes") == ([BOS, 10, 11, 12, 13], [14, 15])


def test_official_rule_scores_a_token_straddling_the_boundary():
    # "?▁y" spans characters 9-12 and ends past 10: it is scored, so the context loses the "?"
    # (lm-eval's rule, context tokens first, would score only "es")
    tok = HandTokenizer({"is it red? yes": ([BOS, 10, 11, 12, 20, 21],
                                            [(0, 0), (0, 2), (2, 5), (5, 9), (9, 12), (12, 14)])})
    assert official_request(tok, "is it red? yes", " yes") == ([BOS, 10, 11, 12], [20, 21])


def test_official_rule_never_scores_the_first_token():
    # no BOS: the whole sentence is the completion, but nothing predicts token 0
    tok = HandTokenizer({"a b": ([30, 31], [(0, 1), (1, 3)])})
    assert official_request(tok, "a b", "a b") == ([30], [31])


def test_official_rule_shifts_the_boundary_by_the_first_offset():
    # the first token starts at character 1, so the boundary is 6 - 3 + 1 = 4: the lone "▁"
    # (3, 4) ends at 4 and is not scored; without the shift it would be
    tok = HandTokenizer({" ab cd": ([40, 41, 42], [(1, 3), (3, 4), (4, 6)])})
    assert official_request(tok, " ab cd", " cd") == ([40, 41], [42])


def test_official_rule_with_nothing_to_score_and_with_a_gap():
    tok = HandTokenizer({"a b": ([BOS, 30, 31], [(0, 0), (0, 1), (1, 3)]),
                         "a b c": ([BOS, 30, 31, EOS, 32], [(0, 0), (0, 1), (1, 3), (0, 0), (3, 5)])})
    assert official_request(tok, "a b", "") == ([BOS, 30, 31], [])  # scores 0, as the pipeline's empty mask
    with pytest.raises(ValueError, match="not contiguous"):
        official_request(tok, "a b c", " b c")


# -- the two ranking rules ---------------------------------------------------------------------
def test_first_best_is_torch_max():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, size=(200, 4)).astype(float)  # many ties
    scores[rng.random((200, 4)) < 0.05] = np.nan
    assert first_best(scores).tolist() == torch.max(torch.tensor(scores), dim=1)[1].tolist()
    assert first_best(np.array([[1.0, 1.0], [0.0, 2.0], [np.nan, 5.0]])).tolist() == [0, 1, 0]


def test_a_tie_is_a_hit_officially_and_a_miss_strictly():
    scores = np.array([[-1.0, -1.0, -3.0],   # the target ties the best
                       [-1.0, -2.0, -3.0],   # strictly best
                       [-2.0, -1.0, -1.0]])  # beaten (by two tied options)
    hits, strict, recs = ranked_choice_records(["q_0", "q_1", "q_2"], [["a", "b", "c"]] * 3, scores, [0, 0, 0])
    assert hits.tolist() == [True, True, False] and strict.tolist() == [False, True, False]
    assert [r["pick"] for r in recs] == [0, 0, 1] and [r["pred"] for r in recs] == ["a", "a", "b"]
    assert [r["pred_strict"] for r in recs] == ["b", "a", "b"]
    assert [(r["hit"], r["hit_strict"]) for r in recs] == [(True, False), (True, True), (False, False)]
    assert recs[0] == {"id": "q_0", "pick": 0, "pred": "a", "target": "a", "hit": True, "pred_strict": "b",
                       "hit_strict": False, "scores": [-1.0, -1.0, -3.0]}


def test_derangement_never_lands_on_the_same_group():
    assert derangement(5) == [1, 2, 3, 4, 0]
    assert derangement(6, ["p0", "p0", "p1", "p1", "p2", "p2"]) == [2, 3, 4, 5, 0, 1]
    assert derangement(1) == [0]


# -- whole tasks, a fake model with known log-probs -------------------------------------------
WINO = [  # (caption A, caption B, brightness of image A, of image B)
    ("a red circle and a blue square", "a blue circle and a red square", 255, 0),
    ("a green star is above a pink ring", "a pink ring is above a green star", 0, 255),
]
QUESTION = "what color is it?"
ANSWERS = ["red", "blue", "green", "pink", "black", "white", "big red", "orange"]  # the target first


def word_tokenizer(texts):
    """Whole words and punctuation, `<s>` first (babymm's special ids), with offsets."""
    words = sorted({w for t in texts for w, _ in pre_tokenizers.Whitespace().pre_tokenize_str(t)})
    vocab = {"<pad>": 0, "<unk>": 1, "<s>": BOS, "</s>": EOS, **{w: i + 4 for i, w in enumerate(words)}}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", BOS)])
    return PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>")


class BigramModel(torch.nn.Module):
    """log P(next | prev, image) = log_softmax(b * M[prev])[next], b the image's brightness in
    [0, 1]: a black image gives every token log(1 / V), a white one the table M."""

    has_vision = True

    def __init__(self, table):
        super().__init__()
        self.config = SimpleNamespace(vision_encoder="conv", image_size=8, model_type="bigram")
        self.table = torch.nn.Parameter(table)

    def image_context(self, images):  # [B, 3, S, S] uint8 -> [B]
        return images.float().mean(dim=(1, 2, 3)) / 255

    def caption_logits(self, ids, mask, context):  # [B, T] -> [B, T, V]
        return context[:, None, None] * self.table[ids]


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer([c for a, b, _, _ in WINO for c in (a, b)] + [f"Question: {QUESTION} Answer: {a}"
                                                                        for a in ANSWERS])


@pytest.fixture(scope="module")
def model(tok):
    v = tok.convert_tokens_to_ids
    table = torch.zeros(len(tok), len(tok))
    table[v("red"), v("circle")] = 5.0  # favours WINO[0]'s caption A
    table[v("ring"), v("is")] = 5.0  # favours WINO[1]'s caption B
    table[v("?"), v("red")] = 5.0  # after the bare question (2025): the target
    table[v(":"), v("blue")] = 5.0  # after "Answer:" (2024): a distractor
    return BigramModel(table)


def _png(path, brightness):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (brightness,) * 3).save(path)


def winoground_dir(root):
    """Each item both ways, as the built-in world writes it."""
    rows = []
    for i, (a, b, bright_a, bright_b) in enumerate(WINO):
        for j, (c0, c1, bright) in enumerate([(a, b, bright_a), (b, a, bright_b)]):
            _png(root / "images" / f"w{i}_{j}.png", bright)
            rows.append({"image_idx": i, "image_key": f"w{i}_{j}", "caption_0": c0, "caption_1": c1,
                         "heldout_composition": i == 1})
    (root / "winoground.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def vqa_dir(root, brightness=(255, 0)):
    items = []
    for i, bright in enumerate(brightness):
        _png(root / "images" / f"v{i}.png", bright)
        items.append({"question": QUESTION, "target_ans": ANSWERS[0], "distractors": ANSWERS[1:],
                      "image_id": f"v{i}", "idx_in_hf_dataset": i})
    (root / "vqa.json").write_text(json.dumps(items))
    return root


def test_winoground_by_hand(model, tok, tmp_path):
    """Rows (item, image, captions) with own images:
      0: WINO[0], white A, (A, B): the table favours A           -> hit, hit strictly
      1: WINO[0], black B, (B, A): both 7 x log(1/V), a tie        -> hit, miss strictly
      2: WINO[1], black A, (A, B): a tie                           -> hit, miss strictly
      3: WINO[1], white B, (B, A): the table favours B             -> hit, hit strictly
    Shuffled: an item's rows share captions, so row i takes row i+2's image (never its pair's):
      0 <- row 2's black: a tie -> hit, miss;   1 <- row 3's white: favours A = caption_1 -> miss
      2 <- row 0's white: favours B = caption_1 -> miss;   3 <- row 1's black: a tie -> hit, miss
    """
    metrics, records = multimodal.winoground(model, tok, winoground_dir(tmp_path), batch_size=3)
    recs = records["winoground"]
    assert metrics["protocol"] == "2025" and metrics["n"] == 4
    assert [r["hit"] for r in recs] == [True] * 4 and [r["hit_strict"] for r in recs] == [True, False, False, True]
    assert metrics["acc"] == 1.0 and metrics["acc_strict"] == 0.5
    assert metrics["acc_shuffled_images"] == 0.5 and metrics["acc_shuffled_images_strict"] == 0.0
    assert metrics["acc_heldout_composition"] == 1.0 and metrics["acc_heldout_composition_strict"] == 0.5
    assert metrics["acc_heldout_composition_shuffled_images_strict"] == 0.0
    # the scores themselves: 7 words after <s>; on white, "circle" after "red" scores 5 - log(e^5 + V - 1),
    # any other word after "red" -log(e^5 + V - 1), every other token -log V
    v = len(tok)
    uniform, favoured, other = -math.log(v), 5 - math.log(math.exp(5) + v - 1), -math.log(math.exp(5) + v - 1)
    assert recs[0]["scores"] == pytest.approx([6 * uniform + favoured, 6 * uniform + other], abs=1e-4)
    assert recs[1]["scores"] == pytest.approx([7 * uniform] * 2, abs=1e-4)
    assert recs[1]["pick"] == 0 and recs[1]["pred"] == WINO[0][1] and recs[1]["pred_strict"] == WINO[0][0]
    # 2024 scores Winoground the same way
    assert multimodal.winoground(model, tok, tmp_path, protocol="2024")[0] == {**metrics, "protocol": "2024"}


def test_vqa_protocols_by_hand(model, tok, tmp_path):
    """Item 0 (white image): 2025 scores "red" after "?", which the table favours: the target;
    2024 scores it after ":", which favours "blue": a miss. Item 1 (black image): every
    one-word answer ties at log(1/V) ("big red" is lower): a hit officially, a miss strictly."""
    d = vqa_dir(tmp_path)
    m25, r25 = multimodal.vqa(model, tok, d)
    m24, r24 = multimodal.vqa(model, tok, d, protocol="2024")
    assert m25["protocol"] == "2025" and m24["protocol"] == "2024"
    assert [r["pred"] for r in r25["vqa"]] == ["red", "red"] and [r["pred"] for r in r24["vqa"]] == ["blue", "red"]
    assert [r["pred_strict"] for r in r25["vqa"]] == ["red", "blue"]
    assert (m25["acc"], m25["acc_strict"]) == (1.0, 0.5) and (m24["acc"], m24["acc_strict"]) == (0.5, 0.0)
    # shuffled: item 0 sees the black image (a tie), item 1 the white one (as above)
    assert (m25["acc_shuffled_images"], m25["acc_shuffled_images_strict"]) == (1.0, 0.5)
    assert (m24["acc_shuffled_images"], m24["acc_shuffled_images_strict"]) == (0.5, 0.0)
    v = len(tok)
    favoured = 5 - math.log(math.exp(5) + v - 1)
    assert r25["vqa"][0]["scores"][0] == pytest.approx(favoured, abs=1e-4)
    assert r25["vqa"][1]["scores"][6] == pytest.approx(-2 * math.log(v), abs=1e-4)  # "big red": two tokens
    with pytest.raises(ValueError, match="unknown protocol '2023'"):
        multimodal.vqa(model, tok, d, protocol="2023")


# -- eval.run --protocol -----------------------------------------------------------------------
@pytest.fixture
def fake_run(model, tok, tmp_path, monkeypatch):
    """A run directory whose model and tokenizer are the fake ones, and a data directory with
    only Winoground and VQA."""
    import babymm.models

    monkeypatch.setattr(babymm.models, "load_model", lambda run_dir: model)
    monkeypatch.setattr(eval_run, "load_tokenizer", lambda run_dir: tok)
    winoground_dir(tmp_path / "data" / "eval" / "winoground")
    vqa_dir(tmp_path / "data" / "eval" / "vqa")
    (tmp_path / "run").mkdir()
    return tmp_path / "run", tmp_path / "data"


def test_run_protocol_reaches_the_tasks_and_is_recorded(fake_run):
    run_dir, data = fake_run
    assert eval_run.main(["--run_dir", str(run_dir), "--data_dir", str(data), "--protocol", "2024"]) == 0
    res = json.loads((run_dir / "results.json").read_text())
    assert res["vqa"]["protocol"] == res["winoground"]["protocol"] == "2024"
    assert (res["vqa"]["acc"], res["vqa"]["acc_strict"]) == (0.5, 0.0)  # as test_vqa_protocols_by_hand
    assert res["summary"]["VQA"] == 0.5 and res["summary"]["VQA (strict)"] == 0.0
    assert res["summary"]["Winoground"] == 1.0 and res["summary"]["Winoground (strict)"] == 0.5
    preds = [json.loads(line) for line in (run_dir / "predictions" / "vqa.jsonl").read_text().splitlines()]
    assert [p["pred"] for p in preds] == ["blue", "red"] and [p["pick"] for p in preds] == [1, 0]
    eval_run.evaluate_run(run_dir, data, tasks=["vqa"])  # the default
    res = json.loads((run_dir / "results.json").read_text())
    assert res["vqa"]["protocol"] == "2025" and res["vqa"]["acc"] == 1.0
    assert res["winoground"]["protocol"] == "2024"  # kept as scored


def test_run_refuses_a_protocol_it_would_ignore(fake_run, capsys):
    run_dir, data = fake_run
    with pytest.raises(SystemExit) as e:
        eval_run.main(["--run_dir", str(run_dir), "--data_dir", str(data), "--protocol", "2024", "--tasks", "blimp"])
    assert e.value.code == 2 and "--protocol only changes winoground and vqa" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        eval_run.main(["--run_dir", str(run_dir), "--data_dir", str(data), "--protocol", "2023"])
    assert not (run_dir / "results.json").exists()

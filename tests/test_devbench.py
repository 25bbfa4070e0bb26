"""DevBench: readers, metrics against hand computation and recorded nlopt results, the world's
DevBench sets, and the whole evaluation on a tiny random GIT model."""

import math

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from babymm.files import DataError
from babymm.frozen_vision import read_image
from data_prep import devbench_world
from eval import devbench as db

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------- a hand-made layout


def _png(path, color):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)


def _layout(root, human_rows=None):
    """assets/gram-trog with two trials whose image 1 of trial t is red; optional human.csv."""
    task = root / "assets" / "gram-trog"
    lines = ["image1,image2,image3,image4,text1"]
    for t in (1, 2):
        names = [f"images/{t}-{k}.png" for k in range(1, 5)]
        for k, n in enumerate(names):
            _png(task / n, (255, 0, 0) if k == 0 else (0, 0, 255))
        lines.append(",".join(names) + f",sentence {t}")
    (task / "manifest.csv").write_text("\n".join(lines) + "\n")
    if human_rows is not None:
        (root / "evals" / "gram-trog").mkdir(parents=True)
        (root / "evals" / "gram-trog" / "human.csv").write_text(
            "trial,text1,image1,image2,image3,image4\n" + "\n".join(human_rows) + "\n")
    return task


def test_reader_resolves_paths_relative_to_the_task_folder(tmp_path):
    task = _layout(tmp_path)
    trials = db.read_manifest(task)
    assert [t.trial for t in trials] == [1, 2]
    assert trials[1].images[0] == task / "images" / "2-1.png"
    assert trials[1].texts == ("sentence 2",)
    assert read_image(trials[0].images[0]).getpixel((0, 0)) == (255, 0, 0)


def test_reader_names_file_and_line_of_a_bad_row(tmp_path):
    task = _layout(tmp_path)
    (task / "images" / "2-3.png").unlink()
    with pytest.raises(DataError, match=r"manifest.csv: line 3: image3 = 'images/2-3.png': no file"):
        db.read_manifest(task)
    (task / "manifest.csv").write_text("image1,image2,text1\na.png,b.png,x\n")
    with pytest.raises(DataError, match=r"header lacks column\(s\) \['image3', 'image4'\]"):
        db.read_manifest(task)


def test_human_reader_blank_is_zero_and_bad_cell_is_an_error(tmp_path):
    path = tmp_path / "human.csv"
    path.write_text("text1,age_bin,trial,image1,image2,image3,image4\nx,4,1,0.5,0.5,,0\nx,,2,1,0,0,0\n")
    h = db.read_human_choices(path, by_age=True)
    assert h.trials.tolist() == [1, 2]
    assert h.probs.tolist() == [[0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]
    assert h.age_bins[0] == 4 and math.isnan(h.age_bins[1])
    path.write_text("trial,image1,image2,image3,image4\n1,0.5,half,0,0\n")
    with pytest.raises(DataError, match=r"human.csv: line 2: image2 = 'half' is not a number"):
        db.read_human_choices(path)
    path.write_text("trial,image1,image2,image3,image4\n1.5,1,0,0,0\n")
    with pytest.raises(DataError, match="line 2: trial = '1.5'"):
        db.read_human_choices(path)


def test_human_similarity_reader(tmp_path):
    path = tmp_path / "s.mat"
    scipy.io.savemat(path, {"spose_sim": np.eye(3)})
    assert db.read_human_similarity(path).tolist() == np.eye(3).tolist()
    scipy.io.savemat(path, {"other": np.eye(3)})
    with pytest.raises(DataError, match="no key 'spose_sim'"):
        db.read_human_similarity(path)


# ---------------------------------------------------------------------------- metrics


def test_accuracy_needs_image1_strictly_best():
    scores = np.array([[3.0, 1, 1, 1],  # right
                       [2.0, 2, 1, 1],  # tie with image 2: wrong
                       [1.0, 0, 3, 0],  # wrong
                       [math.nan, 0, 0, 0],  # NaN: wrong
                       [-1.0, -2, -3, -1.5]])  # right
    assert db.choice_accuracy(scores) == pytest.approx(2 / 5)


def test_softmax_and_kl_by_hand():
    scores = np.array([[0.0, math.log(3), 0, 0]])
    q = db.softmax_choices(scores, 1.0)
    np.testing.assert_allclose(q, [[1 / 6, 3 / 6, 1 / 6, 1 / 6]])
    p = np.array([0.5, 0.5, 0.0, 0.0])
    by_hand = 0.5 * math.log(0.5 / (1 / 6)) + 0.5 * math.log(0.5 / 0.5) + 2 * 1e-10 * math.log(1e-10 / (1 / 6))
    assert db.kl_divergence(p, q[0]) == pytest.approx(by_hand, rel=1e-12)


def test_softmax_shifts_by_the_global_max_like_the_official_code():
    """A trial far below the best one underflows to 0/0 = NaN, as the official softmax does."""
    scores = np.array([[0.0, 0, 0, 0], [-30.0, -30, -30, -31]])
    assert np.isnan(db.softmax_choices(scores, 40.0)[1]).all()
    np.testing.assert_allclose(db.softmax_choices(scores, 1.0)[1].sum(), 1.0)


def test_mean_kl_pairs_rows_by_trial_as_the_official_code():
    q = np.array([[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]])  # model trials 1, 2
    p1, p3 = [0.4, 0.2, 0.2, 0.2], [1.0, 0, 0, 0]
    # trial 3 has no model row, trial 2 is listed twice by people: only trial 1 counts
    human = db.HumanChoices(np.array([1, 2, 2, 3]), np.array([p1, p1, p1, p3]), None)
    expected = sum(a * math.log(a / b) for a, b in zip(p1, q[0], strict=True))
    assert db.mean_kl(human, q) == pytest.approx(expected, rel=1e-12)
    assert math.isnan(db.mean_kl(db.HumanChoices(np.array([9]), np.array([p1]), None), q))


# (value, beta, evaluations) that nlopt 2.9.1's GN_DIRECT_L returned for these functions with the
# official settings (bounds [0.025, 40], ftol_abs 1e-4, maxeval 200, x0 = 1)
NLOPT_RESULTS = [
    (lambda b: (b - 3.3) ** 2, (1.179314563801245e-08, 3.299891403749429, 51)),
    (lambda b: (math.log(b) - 1.7) ** 2 + 0.1 * math.sin(5 * b), (-0.09266752943010152, 5.9583923944520665, 85)),
    (lambda b: 1.0, (1.0, 20.0125, 200)),
    (lambda b: -b, (-39.99996238999249, 39.99996238999249, 117)),
]


@pytest.mark.parametrize("f,expected", NLOPT_RESULTS)
def test_direct_l_takes_nlopts_steps(f, expected):
    fit = db.direct_l_minimize(f, db.BETA_LOWER, db.BETA_UPPER)
    assert (fit.kl, fit.beta, fit.evals) == expected


def test_fit_beta_recovers_the_temperature_of_simulated_children():
    rng = np.random.default_rng(0)
    scores = rng.normal(-3, 1, (30, 4))
    human = db.HumanChoices(np.arange(1, 31), db.softmax_choices(scores, 2.5), None)
    fit = db.fit_beta(human, scores)
    assert fit.beta == pytest.approx(2.5, abs=0.05)
    assert fit.kl < 1e-4
    flat = db.fit_beta(db.HumanChoices(np.arange(1, 31), np.full((30, 4), 0.25), None), scores)
    assert flat.beta == pytest.approx(db.BETA_LOWER, abs=0.01)  # uniform choices: the coldest softmax


def test_rsa_correlates_the_lower_triangles():
    human = np.array([[1.0, 9, 9], [0.1, 1, 9], [0.2, 0.3, 1]])  # lower triangle 0.1, 0.2, 0.3
    model = np.array([[1.0, 3, 2], [5.0, 1, 1], [6.0, 7, 1]])  # lower 5, 6, 7; upper 3, 2, 1
    assert db.rsa(human, model) == pytest.approx(1.0)
    assert db.rsa(human, model.T) == pytest.approx(-1.0)
    feats = np.array([[1.0, 0], [0, 1], [1, 1]])
    np.testing.assert_allclose(db.cosine_similarities(feats)[2], [1 / math.sqrt(2), 1 / math.sqrt(2), 1])


# ---------------------------------------------------------------------------- the world's sets


def test_world_sets_read_back_and_are_deterministic(tmp_path):
    a = devbench_world.write_devbench_sets(tmp_path / "a", seed=3, image_size=32, n_vocab=6, n_trog=6, n_things=10)
    b = devbench_world.write_devbench_sets(tmp_path / "b", seed=3, image_size=32, n_vocab=6, n_trog=6, n_things=10)
    c = devbench_world.write_devbench_sets(tmp_path / "c", seed=4, image_size=32, n_vocab=6, n_trog=6, n_things=10)
    vocab = db.read_manifest(a / "assets" / "lex-viz_vocab")
    trog = db.read_manifest(a / "assets" / "gram-trog")
    things = db.read_manifest(a / "assets" / "sem-things", n_images=1)
    assert (len(vocab), len(trog), len(things)) == (6, 6, 10)
    assert any(f" is {rel} the " in trog[0].texts[0] for rel in devbench_world.ARRANGEMENTS)
    assert trog[1].texts[0].startswith(("there is one ", "there are "))
    assert " is not " in trog[2].texts[0]
    sim = db.read_human_similarity(a / "evals" / "sem-things" / "spose_similarity.mat")
    words = [t.texts[0].split() for t in things]  # "size colour shape"
    i, j = 0, 1
    assert sim[i, j] == pytest.approx(sum(x == y for x, y in zip(words[i], words[j], strict=True)) / 3)
    assert np.diag(sim).tolist() == [1.0] * 10
    same = (a / "assets/gram-trog/images/0004-2.png").read_bytes() == (b / "assets/gram-trog/images/0004-2.png").read_bytes()
    other = (a / "assets/gram-trog/manifest.csv").read_text() != (c / "assets/gram-trog/manifest.csv").read_text()
    assert same and other


def test_world_vocab_match_shows_the_word(tmp_path):
    """A colour trial's image 1 has the named colour; the others do not."""
    from data_prep.world import BACKGROUND, COLORS

    out = devbench_world.write_devbench_sets(tmp_path, seed=0, image_size=32, n_vocab=2, n_trog=1, n_things=2)
    trial = db.read_manifest(out / "assets" / "lex-viz_vocab")[1]  # odd trials name a colour
    colors = [{c for _, c in read_image(p).getcolors(4096)} - {BACKGROUND} for p in trial.images]
    target = COLORS[trial.texts[0]]
    assert target in colors[0] and all(target not in c for c in colors[1:])


def test_world_things_similarity_recovered_by_attribute_features(tmp_path):
    """Features that one-hot encode the three attributes have cosine = shared fraction: RSA 1."""
    out = devbench_world.write_devbench_sets(tmp_path, seed=0, image_size=32, n_vocab=1, n_trog=1, n_things=12)
    trials = db.read_manifest(out / "assets" / "sem-things", n_images=1)
    vocab = sorted({w for t in trials for w in t.texts[0].split()})
    done = []

    def features(images):  # called in manifest order, in batches
        names = [t.texts[0].split() for t in trials[len(done):len(done) + len(images)]]
        done.extend(images)
        return np.array([[w in name for w in vocab] for name in names], float)

    metrics, records = db.things_task(out / "assets" / "sem-things",
                                      out / "evals" / "sem-things" / "spose_similarity.mat", features)
    assert metrics["devbench/sem-things/rsa"] == pytest.approx(1.0)
    assert len(records) == 12


def test_choice_task_accuracy_and_fit_with_controlled_scores(tmp_path):
    _layout(tmp_path, human_rows=["1,s,0.7,0.1,0.1,0.1", "2,s,0.25,0.25,0.25,0.25"])
    task_dir = tmp_path / "assets" / "gram-trog"
    human = tmp_path / "evals" / "gram-trog" / "human.csv"

    def red_wins(image, text):  # image 1 of every trial is red
        return 1.0 if image.getpixel((0, 0)) == (255, 0, 0) else 0.0

    metrics, records = db.choice_task("gram-trog", task_dir, human, red_wins)
    assert metrics["devbench/gram-trog/acc"] == 1.0
    assert [r["pick"] for r in records] == [1, 1]
    assert records[0]["scores"] == [1.0, 0.0, 0.0, 0.0]
    expected = db.fit_beta(db.read_human_choices(human), np.array([[1.0, 0, 0, 0]] * 2))
    assert (metrics["devbench/gram-trog/kl"], metrics["devbench/gram-trog/beta"]) == (expected.kl, expected.beta)
    metrics, _ = db.choice_task("gram-trog", task_dir, None, lambda im, t: -red_wins(im, t))
    assert metrics["devbench/gram-trog/acc"] == 0.0 and "devbench/gram-trog/kl" not in metrics


# ---------------------------------------------------------------------------- a tiny GIT model


def _tiny_git():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        GitConfig,
        GitForCausalLM,
        GitProcessor,
        PreTrainedTokenizerFast,
        ViTImageProcessor,
    )

    from data_prep.world import COLORS, NUMBERS, PLURAL, SHAPES

    words = ["[PAD]", "[UNK]", "the", "caption", "for", "this", "image", "is", ":", ".", "<image>",
             "there", "are", "not", "above", "below", "to", "left", "right", "of", "big", "small",
             *COLORS, *SHAPES, *PLURAL.values(), *NUMBERS]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(dict.fromkeys(words))}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]")
    processor = GitProcessor(image_processor=ViTImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok)
    config = GitConfig(vision_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                          intermediate_size=32, image_size=32, patch_size=16),
                       vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, max_position_embeddings=64, pad_token_id=0)
    torch.manual_seed(0)
    return GitForCausalLM(config), processor


def test_evaluate_devbench_end_to_end_on_a_tiny_git(tmp_path):
    model, processor = _tiny_git()
    out = devbench_world.write_devbench_sets(tmp_path, seed=0, image_size=32, n_vocab=4, n_trog=3, n_things=18)
    model.train()
    metrics, records = db.evaluate_devbench(model, processor, out)
    assert model.training  # left as it came
    assert set(records) == set(db.TASKS)
    assert [len(records[t]) for t in db.TASKS] == [4, 3, 18]
    assert metrics["devbench/score"] == pytest.approx(np.mean([metrics["devbench/sem-things/rsa"],
                                                               metrics["devbench/gram-trog/acc"],
                                                               metrics["devbench/lex-viz_vocab/acc"]]))
    # each score is the official recipe, recomputed here by hand: -loss of the prompt, labels = ids
    model.eval()
    trial = db.read_manifest(out / "assets" / "gram-trog")[2]
    enc = processor(images=read_image(trial.images[3]), text=f"The caption for this image is: {trial.texts[0]}.",
                    return_tensors="pt")
    enc.pop("token_type_ids", None)
    with torch.no_grad():
        by_hand = float(-model(**enc, labels=enc["input_ids"])["loss"])
    assert records["gram-trog"][2]["scores"][3] == by_hand
    picks = [int(np.argmax(r["scores"])) + 1 for r in records["lex-viz_vocab"]]
    assert [r["pick"] for r in records["lex-viz_vocab"]] == picks
    acc = np.mean([r["scores"][0] > max(r["scores"][1:]) for r in records["lex-viz_vocab"]])
    assert metrics["devbench/lex-viz_vocab/acc"] == acc


def test_image_features_are_batch_means_of_the_last_hidden_state():
    model, processor = _tiny_git()
    model.eval()
    images = [Image.new("RGB", (32, 32), c) for c in [(255, 0, 0), (0, 255, 0)]]
    feats = db.image_features(model, processor, images)
    enc = processor(images=images, text=[" ", " "], return_tensors="pt")
    enc.pop("token_type_ids", None)
    with torch.no_grad():
        hidden = model(**enc, labels=enc["input_ids"], output_hidden_states=True)["hidden_states"][-1]
    np.testing.assert_array_equal(feats, hidden.mean(dim=1).numpy())
    assert feats.shape == (2, 16) and not np.allclose(feats[0], feats[1])


def test_wrapper_type_follows_the_official_attribute_test():
    class Prefix(torch.nn.Module):
        git = object()

    class Cross(torch.nn.Module):
        model = object()

    assert db.needs_image_token(Prefix()) is False
    assert db.needs_image_token(Cross()) is True
    with pytest.raises(ValueError, match="neither .git"):
        db.needs_image_token(torch.nn.Linear(1, 1))


def test_cross_attention_prompts_start_with_the_image_token():
    seen = []

    class Processor:
        def __call__(self, images, text, return_tensors):
            seen.append(text)
            return {"input_ids": torch.zeros(1, 2, dtype=torch.long)}

    class Cross(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = torch.nn.Linear(1, 1)

        def forward(self, input_ids, labels):
            return {"loss": torch.tensor(0.25)}

    assert db.image_text_score(Cross(), Processor(), Image.new("RGB", (4, 4)), "a star") == -0.25
    assert seen == ["<image> The caption for this image is: a star."]

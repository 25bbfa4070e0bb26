"""The exported checkpoint is what the official BabyLM 2025 pipeline loads: transformers custom
code (`auto_map`, the modeling files beside the weights) that a Python process which cannot import
babymm loads, trusting the shipped code, with the forward, processor and DevBench paths the
pipeline uses. Expected values come from babymm's own model on the same inputs, or by hand."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoProcessor

from babymm.models import build_model, load_model, model_class, save_model
from babymm.tokenizer import load_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
IMAGE_TYPES = ["git", "flamingo", "coca"]
SIZE = 32


def tiny(t, vocab_size):
    cls = model_class(t)
    args = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_positions=128,
                vision_encoder="conv", vision_width=32, vision_heads=2, vision_layers=1, embed_dim=16)
    if t == "flamingo":
        args.update(num_latents=4, resampler_layers=1, cross_attn_every=1)
    torch.manual_seed(0)
    model = build_model(cls.config_class(**args).resolve(vocab_size=vocab_size, image_size=SIZE,
                                                          bos_token_id=2, eos_token_id=3, pad_token_id=0))
    with torch.no_grad():  # every weight matters (flamingo's gates start at 0)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def tokenizer(tiny_run, tiny_world):
    return load_tokenizer(tiny_world / "prepared" / "tokenizer")


@pytest.fixture(scope="module")
def exported(tokenizer, tmp_path_factory):
    """Each image type saved, with the inputs and babymm's own logits for them."""
    root = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "image.png")
    text = "the red circle is above the star."
    out = {}
    for t in IMAGE_TYPES:
        model = tiny(t, len(tokenizer))
        save_model(model, tokenizer, root / t)
        enc = tokenizer(text, return_tensors="pt")
        image = torch.from_numpy(pixels).permute(2, 0, 1)[None]
        with torch.no_grad():
            logits = model.caption_logits(enc["input_ids"], enc["attention_mask"], model.image_context(image))
            text_logits = model.caption_logits(enc["input_ids"], enc["attention_mask"], None)
        save_file({"input_ids": enc["input_ids"], "logits": logits, "text_logits": text_logits},
                  str(root / f"{t}.expected.safetensors"))
        out[t] = model
    return root, text, out


OFFICIAL_SIDE = textwrap.dedent('''
    import json, sys
    for name in ("babymm", "data_prep", "eval"):
        sys.modules[name] = None  # `import babymm` now raises ImportError
    import numpy as np, torch
    from PIL import Image
    from safetensors.torch import load_file
    from transformers import (AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification,
                              AutoProcessor)
    root, text, types = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    image = Image.open(f"{root}/image.png").convert("RGB")
    report = {}
    for t in types:
        path = f"{root}/{t}"
        model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(path, padding_side="right", trust_remote_code=True)
        expected = load_file(f"{root}/{t}.expected.safetensors")
        # the sentence_zero_shot call: processor with offsets, no tensors; the model on ids + pixels
        enc = processor(text=text, images=image, return_offsets_mapping=True)
        ids = torch.LongTensor(enc["input_ids"]).view(1, -1)  # one text: the pipeline collates it to [1, T]
        mask = torch.LongTensor(enc["attention_mask"]).view(1, -1)
        pixels = torch.FloatTensor(np.array(enc["pixel_values"]))
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels)
            text_only = model(input_ids=ids, attention_mask=mask)
        # the DevBench wrapper's calls
        if getattr(model, "git", None) is not None:
            encoder, prefix = model.git.image_encoder, ""
        else:
            encoder, prefix = model.model.decoder.img_encoder, "<image> "
        dev = processor(images=image, text=prefix + "The caption for this image is: a star.", return_tensors="pt")
        dev.pop("token_type_ids")
        plain = processor(images=image, text="The caption for this image is: a star.", return_tensors="pt")
        plain.pop("token_type_ids")
        with torch.no_grad():
            dev_loss = model(**dev, labels=dev["input_ids"])["loss"]
            plain_loss = model(**plain, labels=plain["input_ids"])["loss"]
            plain_logits = model(**plain)["logits"]
            feats = model(**plain, labels=plain["input_ids"], output_hidden_states=True)["hidden_states"][-1]
        report[t] = {
            "keys": sorted(enc.keys()),
            "ids_equal": ids.tolist() == expected["input_ids"].tolist(),
            "pixels": np.array(enc["pixel_values"])[0].tolist(),
            "logits_max_diff": (out["logits"] - expected["logits"]).abs().max().item(),
            "text_logits_max_diff": (text_only["logits"] - expected["text_logits"]).abs().max().item(),
            "encoder": type(encoder).__name__, "prefix": prefix,
            "dev_loss": dev_loss.item(), "plain_loss": plain_loss.item(),
            "plain_ids": plain["input_ids"].tolist(), "plain_logits": plain_logits.tolist(),
            "feature_shape": list(feats.shape),
            "auto_model": type(AutoModel.from_pretrained(path, trust_remote_code=True)).__name__,
        }
        # the official GLUE fine-tuning's AutoModel, and the reading task's model(**tokenizer(sentence))
        base = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
        with torch.no_grad():
            hidden = base(input_ids=ids, attention_mask=mask).last_hidden_state
            reading = model(**processor.tokenizer(text, return_tensors="pt"))
            causal = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        report[t].update(base_equal=torch.equal(hidden, causal["hidden_states"][-1]),
                         reading_equal=torch.equal(reading["logits"], text_only["logits"]))
        head = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True, num_labels=3)
        report[t].update(classifier=type(head).__name__, head_std=head.score.weight.std().item(),
                         head_tied=head.get_output_embeddings().weight is head.get_input_embeddings().weight)
    print(json.dumps(report))
''')


def test_official_side_loads_it_without_babymm(exported, tmp_path):
    root, text, models = exported
    script = tmp_path / "official_side.py"
    script.write_text(OFFICIAL_SIDE)
    done = subprocess.run([sys.executable, str(script), str(root), text, ",".join(IMAGE_TYPES)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    pixels = np.asarray(Image.open(root / "image.png").convert("RGB")).transpose(2, 0, 1)
    for t in IMAGE_TYPES:
        r = report[t]
        assert {"input_ids", "attention_mask", "offset_mapping", "pixel_values", "token_type_ids"} <= set(r["keys"])
        assert r["ids_equal"]
        assert np.array_equal(np.array(r["pixels"]), pixels)  # the pixels babymm's encoders are trained on
        assert r["logits_max_diff"] == 0.0 and r["text_logits_max_diff"] == 0.0
        assert r["encoder"] == "ConvEncoder"
        assert r["prefix"] == ("" if t == "git" else "<image> ")
        assert r["dev_loss"] == r["plain_loss"]  # the <image> marker is dropped
        # the loss is the mean next-token cross-entropy, computed here by hand from the logits
        logits, ids = torch.tensor(r["plain_logits"])[0], torch.tensor(r["plain_ids"])[0]
        by_hand = -torch.log_softmax(logits[:-1], -1)[torch.arange(len(ids) - 1), ids[1:]].mean().item()
        assert r["plain_loss"] == pytest.approx(by_hand, rel=1e-5)
        prefix = models[t].num_image_tokens if t == "git" else 0
        assert r["feature_shape"] == [1, prefix + len(r["plain_ids"][0]), 32]
        assert r["auto_model"] == "BabymmModel" and r["classifier"] == "BabymmForSequenceClassification"
        assert r["base_equal"] and r["reading_equal"]
        # a new head, initialised (not the meta device's empty memory), on the tied decoder
        assert 0.015 < r["head_std"] < 0.025 and r["head_tied"]


def test_inside_babymm_it_loads_without_remote_code(exported):
    root, text, models = exported
    for t in IMAGE_TYPES:
        hf = AutoModelForCausalLM.from_pretrained(root / t)  # no trust_remote_code: babymm registered it
        assert type(hf).__module__.startswith("babymm.")
        processor = AutoProcessor.from_pretrained(root / t)
        assert type(processor).__name__ == "GitProcessor"
        loaded = load_model(root / t)
        assert type(loaded) is type(models[t])
        for (name, a), (_, b) in zip(models[t].state_dict().items(), loaded.state_dict().items(), strict=True):
            assert torch.equal(a, b), name


def test_labels_mask_padding_and_ignored_positions(exported, tokenizer):
    """The exported loss counts real text targets only: padding and -100 labels are left out."""
    root, _, models = exported
    hf = AutoModelForCausalLM.from_pretrained(root / "git").eval()
    enc = tokenizer(["a red star.", "the big blue circle is here."], padding=True, return_tensors="pt")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    labels[1, 2] = -100
    image = torch.randint(0, 256, (2, 3, SIZE, SIZE), dtype=torch.uint8)
    with torch.no_grad():
        out = hf(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=image.float(),
                 labels=labels)
    logp = torch.log_softmax(out.logits[:, :-1], -1)
    terms = [-logp[b, i, labels[b, i + 1]] for b in range(2) for i in range(labels.shape[1] - 1)
             if labels[b, i + 1] != -100]
    assert out.loss.item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)


def test_bad_inputs_are_refused(exported):
    root, _, _ = exported
    hf = AutoModelForCausalLM.from_pretrained(root / "git").eval()
    ids = torch.tensor([[2, 5, 6, 7]])
    with pytest.raises(ValueError, match="token_type_ids"):
        hf(input_ids=ids, token_type_ids=torch.ones_like(ids))
    with pytest.raises(ValueError, match="pixel_values"):
        hf(input_ids=ids, image_features=torch.zeros(1, 8))
    marker = hf.config.image_token_id
    with pytest.raises(ValueError, match="<image>"):
        hf(input_ids=torch.tensor([[2, marker, 5], [2, 5, 6]]))


def test_text_type_exports_a_plain_llama(tokenizer, tmp_path):
    model = build_model(model_class("text").config_class(hidden_size=32, num_layers=2, num_heads=2,
                                                         intermediate_size=64).resolve(vocab_size=len(tokenizer)))
    save_model(model, tokenizer, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "llama"
    assert not (tmp_path / "modeling_babymm.py").exists()
    tok = json.loads((tmp_path / "tokenizer_config.json").read_text())  # what transformers 4 reads
    assert tok["tokenizer_class"] == "PreTrainedTokenizerFast" and "extra_special_tokens" not in tok
    assert "token_type_ids" not in tok.get("model_input_names", [])  # the run's own tokenizer, unchanged
    loaded = load_model(tmp_path)
    assert type(loaded) is type(model) and loaded.config == model.config
    ids = torch.tensor([[2, 5, 6, 7]])
    assert torch.equal(loaded.caption_logits(ids, torch.ones_like(ids)), model.caption_logits(ids, torch.ones_like(ids)))
    assert F.softmax(loaded.caption_logits(ids, torch.ones_like(ids)), -1).shape[-1] == len(tokenizer)


def test_files_transformers_4_reads(exported):
    """The official pipeline pins transformers 4.51, which (checked by hand in a venv with it)
    copies only the modeling file's own relative imports, reads the image processor from
    preprocessor_config.json (naming the processor class), and knows the fast tokenizer as
    PreTrainedTokenizerFast with `additional_special_tokens`."""
    import re

    root, _, _ = exported
    d = root / "flamingo"
    shipped = {p.stem for p in d.glob("*.py")}
    direct = set(re.findall(r"^from \.(\w+) import", (d / "modeling_babymm.py").read_text(), re.M))
    for f in d.glob("*.py"):
        assert set(re.findall(r"^from \.(\w+) import", f.read_text(), re.M)) <= direct, f.name
    assert shipped - {"modeling_babymm"} == direct
    assert not (d / "processor_config.json").exists()
    assert json.loads((d / "preprocessor_config.json").read_text())["processor_class"] == "GitProcessor"
    tok = json.loads((d / "tokenizer_config.json").read_text())
    assert tok["tokenizer_class"] == "PreTrainedTokenizerFast" and tok["additional_special_tokens"] == ["<image>"]
    assert "extra_special_tokens" not in tok


def test_export_again_in_place_removes_what_an_older_save_left(exported, tmp_path):
    """`python -m babymm.export --run_dir RUN` rewrites RUN whole: files of babymm's earlier format
    and transformers 5's processor_config.json (which transformers 4 cannot read) are removed."""
    import shutil

    from babymm.export import main as export_main

    root, _, models = exported
    run = shutil.copytree(root / "git", tmp_path / "run")
    for stale in ("babymm_config.json", "multimodal.safetensors", "processor_config.json"):
        (run / stale).write_text("{}")
    assert export_main(["--run_dir", str(run)]) == 0
    assert not any((run / f).exists() for f in ("babymm_config.json", "multimodal.safetensors",
                                                 "processor_config.json"))
    loaded = load_model(run)
    for (name, a), (_, b) in zip(models["git"].state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name

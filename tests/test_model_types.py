"""The four model types (git, flamingo, coca, text) behind one interface: forward and backward,
learning, save and load, the exported decoder, each type's own mechanism, vision inputs and
presets. Everything runs at toy size on the CPU; expected values are computed here by hand
(explicit loops, parameter-count formulas), never read back from the code under test."""

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from babymm.models import MODEL_TYPES, PRESETS, build_model, load_model, model_class, save_model

TYPES = ["git", "flamingo", "coca", "text"]
VISION_TYPES = ["git", "flamingo", "coca"]
V, PAD, BOS, EOS = 50, 0, 1, 2
B, T = 4, 7


pytestmark = pytest.mark.usefixtures("one_thread")


# -- helpers -----------------------------------------------------------------------------
def tiny_config(t, image_size=32, feature_dim=12, feature_tokens=1, **kw):
    cls = model_class(t)
    args = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_positions=64)
    derived = dict(vocab_size=V, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
    if cls.has_vision:
        args.update(vision_encoder="conv", vision_width=32, vision_heads=2, vision_layers=1, embed_dim=16)
        derived.update(image_size=image_size, feature_dim=feature_dim, feature_tokens=feature_tokens)
    if t == "flamingo":
        args.update(num_latents=4, resampler_layers=1, cross_attn_every=1)
    args.update(kw)
    return cls.config_class(**args).resolve(**derived)


def tiny_model(t, seed=0, **kw):
    torch.manual_seed(seed)
    return build_model(tiny_config(t, **kw))


def toy_batch(seed=1, size=32):
    """Captions (row 1 right-padded by 2), text blocks and uint8 images."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, V, (B, T), generator=g)
    ids[:, 0] = BOS
    mask = torch.ones(B, T, dtype=torch.long)
    ids[1, -3], ids[1, -2:], mask[1, -2:] = EOS, PAD, 0
    text_ids = torch.randint(3, V, (B, T + 2), generator=g)
    images = torch.randint(0, 256, (B, 3, size, size), dtype=torch.uint8, generator=g)
    return dict(input_ids=ids, attention_mask=mask, images=images, text_input_ids=text_ids,
                text_attention_mask=torch.ones_like(text_ids))


def my_clip(image, text, scale):
    logits = scale * image @ text.T
    labels = torch.arange(image.shape[0])
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def total_loss(model, batch):
    out = model(**batch)
    loss = out["caption_loss"] + out["text_loss"]
    if model.has_vision:
        loss = loss + my_clip(out["image_embeds"], out["text_embeds"], out["logit_scale"])
    return loss, out


def naive_lm_loss(logits, ids, mask):
    """Mean over every real next token of -log p, one position at a time."""
    terms = []
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1] - 1):
            if mask[b, t + 1]:
                terms.append(-torch.log_softmax(logits[b, t].double(), -1)[ids[b, t + 1]])
    return torch.stack(terms).mean()


def caption_logits_with_image(model, batch):
    return model.caption_logits(batch["input_ids"], batch["attention_mask"], model.image_context(batch["images"]))


def json_load(path):
    return json.loads(path.read_text())


def set_gates(model, value):
    with torch.no_grad():
        for block in model.cross_blocks.values():
            block.attn_gate.fill_(value)
            block.ff_gate.fill_(value)


# groups of parameters each vision type must train (name prefixes)
TYPE_PARTS = {"git": ["vision.", "image_head.", "text_head.", "log_logit_scale", "projector."],
              "flamingo": ["vision.", "image_head.", "text_head.", "log_logit_scale", "resampler.", "cross_blocks."],
              "coca": ["vision.", "image_head.", "text_head.", "log_logit_scale", "cross_blocks.", "text_norm.",
                       "cls_embedding", "image_pool."]}


def test_registry():
    assert sorted(MODEL_TYPES) == sorted(TYPES)
    with pytest.raises(ValueError, match="unknown"):
        model_class("blip")


# -- 1. forward / backward ---------------------------------------------------------------------
@pytest.mark.parametrize("t", TYPES)
def test_forward_shapes_losses_and_gradients(t):
    model, batch = tiny_model(t), toy_batch()
    loss, out = total_loss(model, batch)
    keys = {"caption_loss", "text_loss"} | ({"image_embeds", "text_embeds", "logit_scale"} if t != "text" else set())
    assert set(out) == keys
    # fresh weights predict near-uniformly; the loss is the mean over real next tokens only
    assert abs(out["caption_loss"].item() - math.log(V)) < 0.05
    with torch.no_grad():
        logits = caption_logits_with_image(model, batch)
        text_logits = model.caption_logits(batch["text_input_ids"], batch["text_attention_mask"], None)
    assert logits.shape == (B, T, V)
    assert out["caption_loss"].item() == pytest.approx(naive_lm_loss(logits, batch["input_ids"],
                                                                     batch["attention_mask"]).item(), abs=1e-5)
    assert out["text_loss"].item() == pytest.approx(naive_lm_loss(text_logits, batch["text_input_ids"],
                                                                  batch["text_attention_mask"]).item(), abs=1e-5)
    if t != "text":
        for k in ("image_embeds", "text_embeds"):
            assert out[k].shape == (B, 16)
            assert torch.allclose(out[k].norm(dim=-1), torch.ones(B), atol=1e-5)
        assert out["logit_scale"].item() == pytest.approx(1 / 0.07, rel=1e-5)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads.values()), \
        [n for n, g in grads.items() if g is None]
    assert all(grads[n].abs().sum() > 0 for n in grads if n.startswith("decoder."))
    assert all(n.startswith(("decoder.", *TYPE_PARTS.get(t, []))) for n in grads)  # no part left unchecked
    for part in TYPE_PARTS.get(t, []):
        names = [n for n in grads if n.startswith(part)]
        assert names, f"{t} has no parameters under {part}"
        for n in names:
            gated_off = t == "flamingo" and (n.startswith("resampler.") or
                                             (n.startswith("cross_blocks.") and not n.endswith("_gate")))
            # flamingo at step 0: tanh(0) = 0 multiplies the cross-attention and what feeds it
            assert (grads[n].abs().sum() == 0) == gated_off, n
    if t == "flamingo":
        gates = [n for n in grads if n.endswith("_gate")]
        assert len(gates) == 2 * 2 and all(grads[n].abs() > 0 for n in gates)


def test_logit_scale_clamp_and_fixed_temperature():
    model = tiny_model("git")
    with torch.no_grad():
        model.log_logit_scale.fill_(10.0)
    assert model.logit_scale.item() == pytest.approx(100.0)
    model.clamp_logit_scale()
    assert model.log_logit_scale.item() == pytest.approx(math.log(100.0))
    with torch.no_grad():
        model.log_logit_scale.fill_(-1.0)
    model.clamp_logit_scale()
    assert model.logit_scale.item() == pytest.approx(1.0)
    fixed = tiny_model("git", learn_temperature=False, temperature=0.5)
    assert "log_logit_scale" not in dict(fixed.named_parameters())
    assert fixed.logit_scale.item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="temperature"):
        tiny_model("git", temperature=0.001)


# -- 2. learning ------------------------------------------------------------------------------
@pytest.mark.parametrize("t", TYPES)
def test_a_few_steps_fit_a_fixed_batch(t):
    model, batch = tiny_model(t), toy_batch()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss, _ = total_loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.clamp_logit_scale()
        losses.append(loss.item())
    final = total_loss(model, batch)[0].item()
    assert all(math.isfinite(x) for x in losses)
    assert final < 0.7 * losses[0], (losses[0], final)


# -- 3. save and load ---------------------------------------------------------------------------
SAVE_CASES = [("git", {}), ("flamingo", {}), ("coca", {}), ("text", {}),
              ("git", dict(vision_encoder="vit", freeze_vision=True)),
              ("coca", dict(vision_encoder="features", learn_temperature=False, unimodal_layers=1, num_layers=3)),
              ("flamingo", dict(vision_encoder="features", num_layers=4, cross_attn_every=2))]


def perturbed(t, **kw):
    """A model whose every weight (flamingo's gates too) matters for its outputs."""
    model = tiny_model(t, **kw)
    torch.manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    if t == "flamingo":
        set_gates(model, 0.5)
    return model.eval()


def batch_for(model):
    batch = toy_batch()
    if getattr(model.config, "vision_encoder", None) == "features":
        batch["images"] = torch.randn(B, 12, generator=torch.Generator().manual_seed(3))
    return batch


@pytest.mark.parametrize("t,kw", SAVE_CASES, ids=[f"{t}-{i}" for i, (t, _) in enumerate(SAVE_CASES)])
def test_save_then_load_gives_identical_outputs(t, kw, tmp_path):
    model = perturbed(t, **kw)
    batch = batch_for(model)
    save_model(model, None, tmp_path)
    shipped = {"config.json", "model.safetensors"} | ({"modeling_babymm.py", "base.py", "vision.py", f"{t}.py"}
                                                      if model.has_vision else set())
    assert shipped <= {p.name for p in tmp_path.iterdir()}
    loaded = load_model(tmp_path).eval()
    assert type(loaded) is type(model) and loaded.config == model.config
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        assert torch.equal(caption_logits_with_image(loaded, batch), caption_logits_with_image(model, batch))
        assert torch.equal(loaded.caption_logits(ids, mask, None), model.caption_logits(ids, mask, None))
        if model.has_vision:
            assert torch.equal(loaded.embed_texts(ids, mask), model.embed_texts(ids, mask))
            assert torch.equal(loaded.embed_images(batch["images"]), model.embed_images(batch["images"]))
            assert torch.equal(loaded.logit_scale, model.logit_scale)
    if kw.get("freeze_vision"):
        assert not any(p.requires_grad for p in loaded.vision.parameters())
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nothing")


# -- 4. the exported decoder -----------------------------------------------------------------------
@pytest.mark.parametrize("t", TYPES)
def test_exported_decoder_is_the_text_path(t, tmp_path):
    from transformers import AutoModelForCausalLM

    model = perturbed(t)
    batch = toy_batch()
    save_model(model, None, tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(hf).__name__ == ("BabymmForCausalLM" if model.has_vision else "LlamaForCausalLM")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():  # no image: exactly the decoder's text path
        assert torch.equal(hf(input_ids=ids, attention_mask=mask).logits, model.caption_logits(ids, mask, None))


REQUESTS = [("the red ball", " is big."), ("", "the dog is happy."), ("the cat sees", " the dog."),
            ("there are two", " cats."), ("the boy has the hat.", " the girl is here."),
            ("the big cup ", "is here.")]


@pytest.fixture(scope="module")
def run_dir(tiny_world, tmp_path_factory):
    """Trains a type for a couple of steps on the tiny world (once per type), no eval."""
    from babymm import train

    runs = {}

    def get(t):
        if t not in runs:
            out = tmp_path_factory.mktemp("runs") / t
            rc = train.main(["--data_dir", str(tiny_world), "--output_dir", str(out), "--curriculum", "length",
                             "--preset", "tiny", "--model_type", t, "--run_eval", "false", "--eval_steps", "0",
                             "--text_pretrain_steps", "2", "--multimodal_steps", "3", "--batch_size", "8",
                             "--text_batch_size", "4", "--logging_steps", "1", "--warmup_steps", "1",
                             "--num_threads", "1"])
            assert rc == 0
            runs[t] = out
        return runs[t]

    return get


@pytest.mark.parametrize("t", TYPES)
def test_lm_eval_adapter_matches_lm_eval_hf(t, run_dir):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from eval.lm_adapter import BabymmLM

    out = run_dir(t)
    assert not (out / "results.json").exists()  # --run_eval false
    assert type(load_model(out)) is MODEL_TYPES[t]
    reqs = [Instance(request_type="loglikelihood", doc={}, arguments=(c, x), idx=i)
            for i, (c, x) in enumerate(REQUESTS)]
    ours = BabymmLM.from_pretrained(out, batch_size=4).loglikelihood(reqs)
    hf = HFLM(pretrained=str(out), add_bos_token=True, device="cpu", batch_size=4).loglikelihood(reqs)
    assert len(ours) == len(hf) == len(REQUESTS)
    for (a, ga), (b, gb) in zip(ours, hf, strict=True):
        assert a < 0 and a == pytest.approx(b, abs=1e-4) and ga == gb


# -- 5. flamingo -----------------------------------------------------------------------------------
def test_flamingo_gates_start_closed_and_blocks_sit_before_every_kth_layer():
    model = tiny_model("flamingo", num_layers=4, cross_attn_every=2).eval()
    assert sorted(model.cross_blocks) == ["1", "3"]
    batch = toy_batch()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        text = model.caption_logits(ids, mask, None)
        plain = model.decoder(input_ids=ids, attention_mask=mask).logits
        assert torch.equal(text, plain)
        assert torch.equal(caption_logits_with_image(model, batch), text)  # tanh(0) = 0: the text model
        set_gates(model, 0.5)
        assert not torch.allclose(caption_logits_with_image(model, batch), text, atol=1e-4)
        assert torch.equal(model.caption_logits(ids, mask, None), text)
        # what enters each layer: block i applied to layer i-1's output for i in {1, 3}, else untouched
        ins, outs = {}, {}
        hooks = []
        for i, layer in enumerate(model.decoder.model.layers):
            def pre(m, args, kwargs, i=i):
                ins[i] = args[0] if args else kwargs["hidden_states"]

            def post(m, args, output, i=i):
                outs[i] = output[0] if isinstance(output, tuple) else output

            hooks += [layer.register_forward_pre_hook(pre, with_kwargs=True), layer.register_forward_hook(post)]
        context = model.image_context(batch["images"])
        model.caption_logits(ids, mask, context)
        for h in hooks:
            h.remove()
        assert torch.equal(ins[0], model.decoder.get_input_embeddings()(ids))
        assert torch.equal(ins[2], outs[1])
        for i in (1, 3):
            assert torch.allclose(ins[i], model.cross_blocks[str(i)](outs[i - 1], context), atol=1e-6)
            assert not torch.allclose(ins[i], outs[i - 1], atol=1e-4)
    assert tiny_config("flamingo", num_layers=4, cross_attn_every=3).cross_attn_layers() == [2]
    with pytest.raises(ValueError, match="cross_attn_every"):
        tiny_model("flamingo", num_layers=4, cross_attn_every=5)


# -- 5b. git ---------------------------------------------------------------------------------------------
def git_hidden(model, ids, mask, context):
    """The decoder's final hidden states [B, P+T, H] of a GIT captioning pass: the image prefix, then the text."""
    seen = {}
    hook = model.decoder.model.norm.register_forward_hook(lambda m, args, out: seen.update(h=out))
    try:
        model.caption_logits(ids, mask, context)
    finally:
        hook.remove()
    assert seen["h"].shape[1] == context.shape[1] + ids.shape[1]
    return seen["h"]


def git_pass():
    """A perturbed GIT, the toy batch's ids and mask, its image prefix, and that pass's final hidden states."""
    model = perturbed("git")
    batch = toy_batch()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    context = model.image_context(batch["images"])
    return model, ids, mask, context, git_hidden(model, ids, mask, context)


def test_git_image_prefix_attends_both_ways():
    """GIT's prefix is bidirectional: the last image token reaches the first image position, and every
    image token reaches every text position."""
    with torch.no_grad():
        model, ids, mask, context, h = git_pass()
        P = context.shape[1]
        assert P == model.prefix_tokens == 16
        for j in (P - 1, 0):
            moved = context.clone()
            moved[:, j] += 5.0
            h2 = git_hidden(model, ids, mask, moved)
            delta = (h2 - h).abs().amax(-1)  # [B, P+T]
            assert delta[:, :P].min() > 1e-4, j  # every image position, the first one included
            assert delta[:, P:][mask.bool()].min() > 1e-4, j  # every real text position


def test_git_text_is_causal_and_never_reaches_the_image():
    """Changing text token k changes text positions k.. and no earlier position, image or text."""
    with torch.no_grad():
        model, ids, mask, context, h = git_pass()
        P = context.shape[1]
        for k in (1, 4):
            changed = ids.clone()
            changed[:, k] = (changed[:, k] + 1 - 3) % (V - 3) + 3
            h2 = git_hidden(model, changed, mask, context)
            assert torch.allclose(h2[:, :P + k], h[:, :P + k], atol=1e-6), k
            assert (h2[:, P + k] - h[:, P + k]).abs().amax(-1).min() > 1e-4, k


def test_git_padding_is_masked():
    """Row 1 (2 pads): its image and real text states equal those of the row alone, unpadded, and
    whatever token ids sit under the padding."""
    model = perturbed("git")
    batch = toy_batch()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    n = int(mask[1].sum())
    other_pads = ids.clone()
    other_pads[1, n:] = torch.tensor([7, 9])
    with torch.no_grad():
        context = model.image_context(batch["images"])
        P = context.shape[1]
        full = git_hidden(model, ids, mask, context)
        alone = git_hidden(model, ids[1:2, :n], mask[1:2, :n], context[1:2])
        assert torch.allclose(full[1, :P + n], alone[0], atol=1e-5)
        assert torch.allclose(git_hidden(model, other_pads, mask, context)[:, :P + n], full[:, :P + n], atol=1e-6)


def test_git_mask_is_the_same_under_sdpa_and_eager():
    """The custom 4-D mask is boolean for sdpa and additive for eager: both attention kernels agree."""
    model = perturbed("git")
    batch = toy_batch()
    assert model.decoder.config._attn_implementation == "sdpa"
    eager = copy.deepcopy(model)
    eager.decoder.set_attn_implementation("eager")
    assert eager.decoder.config._attn_implementation == "eager"
    with torch.no_grad():
        assert torch.allclose(caption_logits_with_image(eager, batch), caption_logits_with_image(model, batch),
                              atol=1e-5)


# -- 6. coca ---------------------------------------------------------------------------------------------
def test_coca_unimodal_text_embedding_ignores_the_image():
    model = perturbed("coca", num_layers=3, unimodal_layers=1)
    assert sorted(model.cross_blocks) == ["1", "2"]
    batch = toy_batch()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    other = dict(batch, images=toy_batch(seed=9)["images"])
    with torch.no_grad():
        out, out2 = model(**batch), model(**other)
        assert torch.allclose(model.embed_texts(ids, mask), out["text_embeds"], atol=1e-6)
        assert torch.equal(out["text_embeds"], out2["text_embeds"])
        assert not torch.allclose(caption_logits_with_image(model, batch),
                                  caption_logits_with_image(model, other), atol=1e-4)
        assert out["caption_loss"] != out2["caption_loss"]
    with pytest.raises(ValueError, match="unimodal_layers"):
        tiny_model("coca", num_layers=2, unimodal_layers=2)


def unimodal_states(model, embeds):
    """What enters CoCa's first multimodal layer (the unimodal layers' output) for input embeddings [B, N, H],
    run with no image."""
    seen = {}
    layer = model.decoder.model.layers[model.config.num_unimodal]
    hook = layer.register_forward_pre_hook(
        lambda m, args, kwargs: seen.update(h=args[0] if args else kwargs["hidden_states"]), with_kwargs=True)
    try:
        model.decoder(inputs_embeds=embeds)
    finally:
        hook.remove()
    return seen["h"]


def test_coca_text_embedding_is_the_unimodal_state_at_a_learned_cls():
    """Row by row, by hand: the caption's real tokens then the CLS parameter, through the unimodal layers;
    the state at the CLS, layer-normed and projected, is the text embedding, in eval and in training."""
    model = perturbed("coca", num_layers=3, unimodal_layers=1)
    batch = toy_batch()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        expected = []
        for b in range(B):
            n = int(mask[b].sum())
            embeds = torch.cat([model.decoder.get_input_embeddings()(ids[b, :n]), model.cls_embedding[None]])
            state = unimodal_states(model, embeds[None])[0, n]  # at the CLS
            expected.append(F.normalize(model.text_head(model.text_norm(state)), dim=-1))
        expected = torch.stack(expected)
        assert torch.allclose(model.embed_texts(ids, mask), expected, atol=1e-5)
        assert torch.allclose(model(**batch)["text_embeds"], expected, atol=1e-5)
        # not the state at EOS (the last real token), which CLIP and the other types read
        eos = torch.stack([unimodal_states(model, model.decoder.get_input_embeddings()(ids[b:b + 1]))[0, n - 1]
                           for b, n in enumerate(mask.sum(dim=1).tolist())])
        assert not torch.allclose(F.normalize(model.text_head(model.text_norm(eos)), dim=-1), expected, atol=1e-3)
    assert model.prefix_tokens == 1  # the CLS counts against --max_positions


def test_coca_cls_gives_the_embedding_and_stays_out_of_the_caption():
    """The CLS parameter moves every text embedding; the tokens under the padding move none; no caption
    position sees the CLS, so neither the caption logits nor the caption loss depend on it."""
    model = perturbed("coca")
    batch = toy_batch()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    n = int(mask[1].sum())
    other_pads = dict(batch, input_ids=ids.clone())
    other_pads["input_ids"][1, n:] = torch.tensor([7, 9])
    moved = copy.deepcopy(model)
    with torch.no_grad():
        moved.cls_embedding.add_(0.5 * torch.randn_like(moved.cls_embedding))
        out, out_moved = model(**batch), moved(**batch)
        assert (out["text_embeds"] - out_moved["text_embeds"]).abs().amax(-1).min() > 1e-4
        assert torch.allclose(model.embed_texts(ids, mask), model.embed_texts(other_pads["input_ids"], mask), atol=1e-6)
        assert torch.allclose(model(**other_pads)["text_embeds"], out["text_embeds"], atol=1e-6)
        assert torch.allclose(out_moved["caption_loss"], out["caption_loss"], atol=1e-6)
        assert torch.equal(out_moved["image_embeds"], out["image_embeds"])
        # the training pass (caption + CLS) gives caption_logits' logits at every real position
        context = model.image_context(batch["images"])
        logits, _ = model.caption_pass(ids, mask, context)
        assert logits.shape == (B, T, V)
        real = mask.bool()
        assert torch.allclose(logits[real], model.caption_logits(ids, mask, context)[real], atol=1e-5)


def test_coca_image_embedding_is_an_attention_pool():
    """By hand: one learned query attends (multi-head, softmax of q.k / sqrt(d)) over the vision tokens, then
    out-projection, LayerNorm, image projection; not the mean pool."""
    model = perturbed("coca")
    batch = toy_batch()
    pool, heads = model.image_pool, model.config.vision_heads
    with torch.no_grad():
        tokens = model.vision(batch["images"])  # [B, P, W]
        W = tokens.shape[-1]
        d = W // heads
        wq, wk, wv = pool.attn.in_proj_weight.chunk(3)
        bq, bk, bv = pool.attn.in_proj_bias.chunk(3)
        assert pool.query.shape == (1, W)
        q = (pool.query[0] @ wq.T + bq).view(heads, d)  # [h, d]
        k = (tokens @ wk.T + bk).view(B, -1, heads, d)  # [B, P, h, d]
        v = (tokens @ wv.T + bv).view(B, -1, heads, d)
        weights = torch.softmax(torch.einsum("hd,bphd->bhp", q, k) / math.sqrt(d), dim=-1)  # [B, h, P]
        assert weights.std(-1).min() > 1e-4  # not uniform
        pooled = torch.einsum("bhp,bphd->bhd", weights, v).reshape(B, W) @ pool.attn.out_proj.weight.T + \
            pool.attn.out_proj.bias
        pooled = F.layer_norm(pooled, (W,), pool.norm.weight, pool.norm.bias)
        expected = F.normalize(pooled @ model.image_head.weight.T, dim=-1)
        assert torch.allclose(model.embed_images(batch["images"]), expected, atol=1e-5)
        assert torch.allclose(model(**batch)["image_embeds"], expected, atol=1e-5)
        mean_pool = F.normalize(model.image_head(tokens.mean(dim=1)), dim=-1)
        assert not torch.allclose(mean_pool, expected, atol=1e-2)


@pytest.mark.parametrize("t", VISION_TYPES)
def test_right_padding_does_not_change_a_row(t):
    """Row 1 has 2 pad tokens: its logits and text embedding equal those of the row alone, unpadded."""
    model = perturbed(t)
    batch = toy_batch()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    n = int(mask[1].sum())
    with torch.no_grad():
        full = caption_logits_with_image(model, batch)
        alone = model.caption_logits(ids[1:2, :n], mask[1:2, :n], model.image_context(batch["images"][1:2]))
        assert torch.allclose(full[1, :n], alone[0], atol=1e-5)
        assert torch.allclose(model.embed_texts(ids, mask)[1], model.embed_texts(ids[1:2, :n], mask[1:2, :n])[0],
                              atol=1e-5)


@pytest.mark.parametrize("t", TYPES)
def test_caption_logits_are_causal_and_aligned(t):
    """Position i reads tokens 0..i: changing token 4 changes positions 4.. and none before."""
    model = perturbed(t)
    batch = toy_batch()
    changed = dict(batch, input_ids=batch["input_ids"].clone())
    changed["input_ids"][:, 4] = (changed["input_ids"][:, 4] + 1 - 3) % (V - 3) + 3
    with torch.no_grad():
        a, b = caption_logits_with_image(model, batch), caption_logits_with_image(model, changed)
    assert torch.allclose(a[:, :4], b[:, :4], atol=1e-6)
    assert (a[:, 4] - b[:, 4]).abs().amax(-1).min() > 1e-4


@pytest.mark.parametrize("t", ["flamingo", "coca"])
def test_a_deep_copy_still_reads_the_image(t):
    model = perturbed(t)
    batch = toy_batch()
    with torch.no_grad():
        assert torch.equal(caption_logits_with_image(copy.deepcopy(model), batch),
                           caption_logits_with_image(model, batch))


# -- 7. text -----------------------------------------------------------------------------------------------
def test_text_type_has_no_vision(run_dir, tiny_world):
    from babymm.config import parse_config
    from babymm.data import CaptionData
    from babymm.tokenizer import load_tokenizer

    model = tiny_model("text")
    assert not model.has_vision
    assert all(n.startswith("decoder.") for n, _ in model.named_parameters())
    assert model.image_context(toy_batch()["images"]) is None
    out = run_dir("text")
    assert json_load(out / "run_config.json")["model"]["model_type"] == "text"
    assert json_load(out / "config.json")["model_type"] == "llama"  # a plain decoder checkpoint
    tok = load_tokenizer(out)
    ingest = tiny_world / "prepared" / "ingest"
    no_images = CaptionData(ingest, tok, 40, with_images=False).__getitems__([0, 1, 2])
    assert "images" not in no_images and no_images["input_ids"].shape[0] == 3
    with_images = CaptionData(ingest, tok, 40).__getitems__([0, 1, 2])
    images = with_images["images"]
    assert images.shape == (3, 3, 32, 32) and not images.is_floating_point()
    assert 0 <= images.min() and images.max() <= 255
    assert torch.equal(no_images["input_ids"], with_images["input_ids"])
    for flags in (["--vision_encoder", "conv"], ["--uniform_weight", "0"], ["--eval_steps", "5"]):
        with pytest.raises(SystemExit):
            parse_config(["--model_type", "text", *flags])
    cfg = parse_config(["--model_type", "text", "--hidden_size", "48"])
    assert cfg.model.hidden_size == 48 and not hasattr(cfg.model, "vision_encoder")
    assert not hasattr(cfg.loss, "uniform_weight")


def test_caption_batches_keep_uint8_pixels(tiny_world, run_dir):
    from babymm.data import CaptionData
    from babymm.tokenizer import load_tokenizer

    data = CaptionData(tiny_world / "prepared" / "ingest", load_tokenizer(run_dir("text")), 40)
    assert data.__getitems__([0, 1])["images"].dtype == torch.uint8  # as ingested (Array3D uint8)


# -- 8. vision inputs -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("encoder,image_size,patch,tokens", [
    ("conv", 32, 8, 16), ("conv", 36, 8, 25), ("conv", 20, 8, 9), ("vit", 32, 8, 16), ("vit", 32, 4, 64)])
def test_pixel_encoders_token_counts(encoder, image_size, patch, tokens):
    model = tiny_model("git", vision_encoder=encoder, patch_size=patch, image_size=image_size)
    images = toy_batch(size=image_size)["images"]
    assert model.num_image_tokens == tokens
    with torch.no_grad():
        assert model.vision(images).shape == (B, tokens, 32)
        assert caption_logits_with_image(model, dict(toy_batch(), images=images)).shape == (B, T, V)


@pytest.mark.parametrize("t", VISION_TYPES)
@pytest.mark.parametrize("shape,tokens", [((B, 12), 1), ((B, 5, 12), 5)])
def test_feature_inputs(t, shape, tokens):
    model = tiny_model(t, vision_encoder="features", feature_tokens=tokens).eval()
    feats = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    batch = dict(toy_batch(), images=feats)
    assert model.num_image_tokens == tokens
    with torch.no_grad():
        assert model.vision(feats).shape == (B, tokens, 32)
        assert caption_logits_with_image(model, batch).shape == (B, T, V)  # git: image prefix cut off
        out = model(**batch)
    assert out["image_embeds"].shape == (B, 16) and torch.isfinite(out["caption_loss"])


@pytest.mark.parametrize("t", VISION_TYPES)
def test_freeze_vision(t):
    model = tiny_model(t, freeze_vision=True)
    batch = toy_batch()
    w = 32  # conv encoder of width w: four convolutions, 16 position vectors, a LayerNorm
    conv_params = (3 * 9 * w // 4 + w // 4) + (w // 4 * 9 * w // 2 + w // 2) + (w // 2 * 9 * w + w) + \
        (w * w + w) + 16 * w + 2 * w
    assert model.num_parameters() - model.num_parameters(trainable_only=True) == conv_params
    assert tiny_model(t).num_parameters() == model.num_parameters()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(3):
        loss, _ = total_loss(model, batch)
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is None for p in model.vision.parameters())
        opt.step()
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) == n.startswith("vision."), n


# -- 9. presets -------------------------------------------------------------------------------------------------
DECODER_FIELDS = ["hidden_size", "num_layers", "num_heads", "intermediate_size", "max_positions"]
VISION_FIELDS = ["vision_width", "vision_layers", "vision_heads", "embed_dim"]
FLAMINGO_FIELDS = ["num_latents", "resampler_layers", "cross_attn_every"]
TYPE_FIELDS = {"text": DECODER_FIELDS, "git": DECODER_FIELDS + VISION_FIELDS,
               "coca": DECODER_FIELDS + VISION_FIELDS, "flamingo": DECODER_FIELDS + VISION_FIELDS + FLAMINGO_FIELDS}


@pytest.mark.parametrize("preset", ["tiny", "small", "base"])
@pytest.mark.parametrize("t", TYPES)
def test_presets_set_every_field_the_type_has(preset, t):
    from babymm.config import parse_config

    cfg = parse_config(["--preset", preset, "--model_type", t])
    assert cfg.preset == preset and cfg.model_type == t
    assert cfg.data.vocab_size == PRESETS[preset]["vocab_size"]
    for f in TYPE_FIELDS[t]:
        assert getattr(cfg.model, f) == PRESETS[preset][f], f
    for f in set(DECODER_FIELDS + VISION_FIELDS + FLAMINGO_FIELDS) - set(TYPE_FIELDS[t]):
        assert not hasattr(cfg.model, f), f
    cfg.model.resolve(vocab_size=PRESETS[preset]["vocab_size"]).check()  # buildable
    over = parse_config(["--preset", preset, "--model_type", t, "--num_layers", "3", "--vocab_size", "999"])
    assert over.model.num_layers == 3 and over.data.vocab_size == 999
    assert over.model.hidden_size == PRESETS[preset]["hidden_size"]


def test_preset_anchor_values_and_precedence(tmp_path):
    from babymm.config import parse_config

    base = parse_config(["--preset", "base", "--model_type", "flamingo"]).model
    assert (base.hidden_size, base.num_layers, base.num_heads, base.intermediate_size) == (768, 12, 12, 3072)
    assert (base.max_positions, base.cross_attn_every) == (1024, 4)
    assert parse_config(["--model_type", "text"]).model.hidden_size == PRESETS["small"]["hidden_size"]  # default
    f = tmp_path / "run.yaml"
    f.write_text("model:\n  hidden_size: 80\n  num_heads: 4\n")
    cfg = parse_config(["--config", str(f), "--preset", "tiny", "--num_heads", "8"])
    assert (cfg.model.hidden_size, cfg.model.num_heads, cfg.model.num_layers) == (80, 8, PRESETS["tiny"]["num_layers"])
    with pytest.raises(SystemExit):
        parse_config(["--preset", "huge"])


@pytest.mark.parametrize("t", ["text", "git"])
def test_base_preset_parameter_count(t):
    """Counted on the meta device: no weights are allocated."""
    from babymm.config import parse_config

    cfg = parse_config(["--preset", "base", "--model_type", t])
    Vb, H, L, I = cfg.data.vocab_size, 768, 12, 3072
    expected = Vb * H + L * (4 * H * H + 3 * H * I + 2 * H) + H  # tied embeddings, no biases, RMSNorm
    if t == "git":
        w, E = 768, 512
        expected += (3 * 9 * w // 4 + w // 4) + (w // 4 * 9 * w // 2 + w // 2) + (w // 2 * 9 * w + w) + \
            (w * w + w) + 16 * w + 2 * w  # conv encoder at 32 px
        expected += (w * H + H) + (H * H + H) + w * E + H * E + 1  # projector, heads, logit scale
    with torch.device("meta"):
        model = build_model(cfg.model.resolve(vocab_size=Vb))
    assert model.num_parameters() == expected


@pytest.mark.parametrize("t", VISION_TYPES)
def test_each_caption_sees_only_its_own_image(t):
    """Replacing row 1's image changes row 1's caption logits and never row 0's."""
    model = tiny_model(t).eval()
    if t == "flamingo":
        set_gates(model, 0.5)  # open the gates, else no caption sees any image
    batch = toy_batch()
    other = dict(batch, images=batch["images"].clone())
    other["images"][1] = 255 - other["images"][1]
    with torch.no_grad():
        a, b = caption_logits_with_image(model, batch), caption_logits_with_image(model, other)
    assert torch.equal(a[0], b[0])
    assert not torch.allclose(a[1], b[1])

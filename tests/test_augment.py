"""babymm.augment: seeded image, feature and caption views. Expected values are worked by hand
(luma sums, hue sextants, Gaussian taps, binomial bounds), never read back from the code."""

import json
import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from babymm import augment
from babymm.augment import (
    IMAGE_OPS,
    CaptionAugmenter,
    augment_features,
    augment_pixels,
    load_synonyms,
    parse_image_ops,
)

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_images(n: int, side: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=gen(seed))


def constant_images(n: int, rgb: tuple[int, int, int], side: int = 16) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.uint8).view(1, 3, 1, 1).expand(n, 3, side, side).contiguous()


# ---------------------------------------------------------------------------- parse_image_ops


def test_parse_image_ops():
    assert parse_image_ops("moco") == ("crop", "flip", "jitter", "gray", "blur")
    assert parse_image_ops("none") == ()
    assert parse_image_ops("") == ()
    assert parse_image_ops("crop,flip") == ("crop", "flip")
    assert parse_image_ops(" gray , blur ") == ("gray", "blur")


def test_parse_image_ops_refuses_unknown_name():
    with pytest.raises(ValueError, match="zoom") as e:
        parse_image_ops("crop,zoom")
    assert all(op in str(e.value) for op in IMAGE_OPS)


# ---------------------------------------------------------------------------- augment_pixels


def test_pixels_seeded_shape_dtype_range():
    images = random_images(8)
    a = augment_pixels(images, IMAGE_OPS, gen(1))
    assert a.shape == images.shape and a.dtype == torch.float32 and a.device == images.device
    assert a.min() >= 0 and a.max() <= 255
    assert torch.equal(a, augment_pixels(images, IMAGE_OPS, gen(1)))
    assert not torch.allclose(a, augment_pixels(images, IMAGE_OPS, gen(2)))


def test_pixels_leave_float_input_alone():
    images = random_images(8).float()
    before = images.clone()
    augment_pixels(images, IMAGE_OPS, gen(0))
    assert torch.equal(images, before)
    assert torch.equal(augment_pixels(images, (), gen(0)), before)


def test_pixels_refuse_unknown_op_and_bad_shape():
    with pytest.raises(ValueError, match="zoom"):
        augment_pixels(random_images(2), ("zoom",), gen(0))
    with pytest.raises(ValueError, match="expected"):
        augment_pixels(torch.zeros(2, 1, 8, 8), ("flip",), gen(0))


def test_flip_only_flips_about_half():
    images = random_images(200, side=6)
    out = augment_pixels(images, ("flip",), gen(3))
    same = (out == images.float()).flatten(1).all(1)
    flipped = (out == images.flip(-1).float()).flatten(1).all(1)
    assert bool((same ^ flipped).all())  # each image exactly one of the two
    # Binomial(200, 0.5): mean 100, sd 7.07; 5 sd either side
    assert abs(int(flipped.sum()) - 100) < 36


def test_gray_only_uses_luma_weights():
    images = constant_images(1000, (100, 50, 200), side=2)
    out = augment_pixels(images, ("gray",), gen(4))
    luma = 0.299 * 100 + 0.587 * 50 + 0.114 * 200  # = 29.9 + 29.35 + 22.8 = 82.05
    pixel = out[:, :, 0, 0]
    gray = torch.isclose(pixel, torch.full_like(pixel, 82.05), atol=1e-3).all(1)
    kept = (pixel == torch.tensor([100.0, 50.0, 200.0])).all(1)
    assert math.isclose(luma, 82.05) and bool((gray ^ kept).all())
    assert torch.equal(out, out[:, :, :1, :1].expand_as(out))  # still constant images
    # Binomial(1000, 0.2): mean 200, sd 12.6; 5 sd
    assert abs(int(gray.sum()) - 200) < 63


def test_crop_of_constant_image_is_constant():
    out = augment_pixels(constant_images(16, (77, 77, 77)), ("crop",), gen(5))
    assert torch.allclose(out, torch.full_like(out, 77.0), atol=1e-3)


def test_crop_zooms_a_gradient():
    """Column j of the image is 8 j; a crop of width w (a share of the side) resampled to the
    side steps 8 w per output column, and w = sqrt(area * ratio) is in [sqrt(0.2 * 3/4), 1]."""
    side = 32
    ramp = (8 * torch.arange(side, dtype=torch.float32)).expand(3, side, side)
    images = ramp.expand(64, 3, side, side)
    out = augment_pixels(images, ("crop",), gen(6))
    assert torch.allclose(out, out[:, :, :1, :].expand_as(out))  # rows stay alike
    steps = out[:, 0, 0, 1:].diff(dim=-1).median(dim=-1).values
    assert bool((steps >= 8 * math.sqrt(0.2 * 0.75) - 1e-3).all()) and bool((steps <= 8 + 1e-3).all())
    assert bool((steps < 7.0).any())  # not every crop is the whole image


def test_crop_boxes_within_scale_and_ratio():
    u = torch.rand(2000, 2 * augment.CROP_TRIES + 2, generator=gen(7))
    x0, y0, w, h = augment.crop_boxes(u, 32, 32).unbind(1)
    eps = 1e-5
    assert bool(((x0 >= 0) & (y0 >= 0) & (x0 + w <= 1 + eps) & (y0 + h <= 1 + eps)).all())
    assert bool(((w * h >= 0.2 - eps) & (w * h <= 1 + eps)).all())
    assert bool(((w / h >= 0.75 - eps) & (w / h <= 4 / 3 + eps)).all())


def test_ops_draws_do_not_depend_on_other_ops():
    images = random_images(32)
    cropped = augment_pixels(images, ("crop",), gen(8))
    flipped = augment_pixels(images, ("flip",), gen(8))
    was_flipped = ~(flipped == images.float()).flatten(1).all(1)
    both = augment_pixels(images, ("crop", "flip"), gen(8))
    assert torch.equal(both, torch.where(was_flipped.view(-1, 1, 1, 1), cropped.flip(-1), cropped))


def test_blur_of_constant_image_is_unchanged():
    out = augment_pixels(constant_images(16, (30, 120, 240)), ("blur",), gen(9))
    assert torch.allclose(out, constant_images(16, (30, 120, 240)).float(), atol=1e-3)


def test_blur_kernel_size():
    assert augment.blur_kernel_size(224) == 23  # MoCo's
    assert augment.blur_kernel_size(64) == 7
    assert augment.blur_kernel_size(32) == 3
    assert augment.blur_kernel_size(8) == 3


def test_gaussian_blur_of_an_impulse():
    """k = 3, sigma = 1: taps (e^-0.5, 1, e^-0.5) / (1 + 2 e^-0.5) = (0.27407, 0.45186, 0.27407);
    an impulse of 255 becomes 255 * 0.45186^2 = 52.07 at its centre, 255 * 0.45186 * 0.27407
    = 31.58 beside it, and keeps its sum away from the edges."""
    x = torch.zeros(1, 3, 9, 9)
    x[:, :, 4, 4] = 255
    out = augment.gaussian_blur(x, torch.tensor([1.0]), 3)
    assert out[0, 0, 4, 4].item() == pytest.approx(52.07, abs=0.01)
    assert out[0, 1, 4, 5].item() == pytest.approx(31.58, abs=0.01)
    assert out.sum().item() == pytest.approx(3 * 255, rel=1e-5)


def test_jitter_of_gray_image_only_scales_it():
    """On a gray constant image contrast (blend with its own mean), saturation (with its own
    grayscale) and hue (no saturation) change nothing: what is left is brightness in [0.6, 1.4]."""
    out = augment_pixels(constant_images(1000, (100, 100, 100), side=2), ("jitter",), gen(10))
    value = out[:, 0, 0, 0]
    assert torch.allclose(out, value.view(-1, 1, 1, 1).expand_as(out), atol=1e-3)
    assert bool(((value >= 60 - 1e-3) & (value <= 140 + 1e-3)).all())
    changed = (value - 100).abs() > 1e-3
    # Binomial(1000, 0.8): mean 800, sd 12.6; 5 sd
    assert abs(int(changed.sum()) - 800) < 63


def test_hue_rotation_by_hand():
    """Pure red (h 0, s 1, v 1) turned by 1/12: h = 1/12, sextant 0, f = 0.5, so
    (v, t, p) = (1, 0.5, 0); turned by -1/12: h = 11/12, sextant 5, f = 0.5, (v, p, q) = (1, 0, 0.5)."""
    red = torch.tensor([255.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(2, 3, 1, 1)
    out = augment.adjust_hue(red, torch.tensor([1 / 12, -1 / 12]))[:, :, 0, 0]
    assert torch.allclose(out, torch.tensor([[255.0, 127.5, 0.0], [255.0, 0.0, 127.5]]), atol=1e-3)
    gray = torch.full((1, 3, 2, 2), 90.0)
    assert torch.allclose(augment.adjust_hue(gray, torch.tensor([0.1])), gray, atol=1e-3)
    images = random_images(4).float()
    assert torch.allclose(augment.adjust_hue(images, torch.zeros(4)), images, atol=1e-2)


def test_brightness_contrast_saturation_by_hand():
    pixel = torch.tensor([200.0, 100.0, 0.0]).view(1, 3, 1, 1)
    assert augment.adjust_brightness(pixel, torch.tensor([0.5])).flatten().tolist() == [100.0, 50.0, 0.0]
    assert augment.adjust_brightness(pixel, torch.tensor([2.0])).flatten().tolist() == [255.0, 200.0, 0.0]
    luma = 0.299 * 200 + 0.587 * 100  # 118.5
    sat0 = augment.adjust_saturation(pixel, torch.tensor([0.0])).flatten()
    assert torch.allclose(sat0, torch.full((3,), 118.5), atol=1e-3) and luma == pytest.approx(118.5)
    two = torch.tensor([[200.0, 100.0, 0.0], [0.0, 0.0, 0.0]]).T.reshape(1, 3, 1, 2)  # that pixel, black
    con0 = augment.adjust_contrast(two, torch.tensor([0.0]))
    assert torch.allclose(con0, torch.full_like(two, 118.5 / 2), atol=1e-3)  # mean luma, not mean value


# ---------------------------------------------------------------------------- augment_features


def test_features_zero_is_identity():
    x = torch.randn(4, 7, 16, generator=gen(0))
    assert torch.equal(augment_features(x, 0.0, 0.0, gen(1)), x)


def test_features_shape_dtype_seed():
    for shape in ((4, 16), (4, 7, 16)):
        x = torch.randn(*shape, generator=gen(0))
        a = augment_features(x, 0.2, 0.1, gen(1))
        assert a.shape == x.shape and a.dtype == x.dtype
        assert torch.equal(a, augment_features(x, 0.2, 0.1, gen(1)))
        assert not torch.equal(a, augment_features(x, 0.2, 0.1, gen(2)))
    half = torch.randn(4, 16, generator=gen(0)).to(torch.bfloat16)
    assert augment_features(half, 0.2, 0.1, gen(1)).dtype == torch.bfloat16


def test_feature_dropout_rate_and_scale():
    out = augment_features(torch.ones(100, 1000), 0.3, 0.0, gen(3))
    dropped = float((out == 0).float().mean())
    # 100,000 Bernoulli(0.3): sd of the share 0.00145; 0.01 is ~7 sd
    assert abs(dropped - 0.3) < 0.01
    assert torch.allclose(out[out != 0], torch.full_like(out[out != 0], 1 / 0.7))


def test_feature_noise_scales_with_each_vector():
    base = torch.randn(1, 20000, generator=gen(4))
    x = torch.cat([base, 10 * base])  # stds ~1 and ~10
    diff = augment_features(x, 0.0, 0.1, gen(5)) - x
    stds = diff.std(dim=-1) / x.std(dim=-1)
    assert torch.allclose(stds, torch.full((2,), 0.1), rtol=0.05)


def test_features_refuse_bad_settings():
    with pytest.raises(ValueError, match="dropout"):
        augment_features(torch.ones(2, 4), 1.0, 0.0, gen(0))
    with pytest.raises(ValueError, match="noise"):
        augment_features(torch.ones(2, 4), 0.0, -0.1, gen(0))
    with pytest.raises(ValueError, match="shape"):
        augment_features(torch.ones(4), 0.1, 0.0, gen(0))


# ---------------------------------------------------------------------------- synonyms file


def test_load_synonyms(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"big": ["large", "big"], "small": ["little"]}))
    assert load_synonyms(good) == {"big": ["large"], "small": ["little"]}  # a word is not its own synonym
    bad = {"notjson.json": "{big: [large]", "list.json": "[]", "str.json": '{"big": "large"}',
           "empty.json": '{"big": []}', "upper.json": '{"Big": ["large"]}',
           "phrase.json": '{"next to": ["beside"]}', "number.json": '{"big": [3]}'}
    for name, text in bad.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ValueError, match=name):
            load_synonyms(path)
    with pytest.raises(ValueError, match="missing.json"):
        load_synonyms(tmp_path / "missing.json")


def test_world_synonyms_keep_meaning():
    from data_prep import world

    table = load_synonyms(ROOT / "data_prep" / "synonyms_world.json")
    assert table
    protected = set(world.COLORS) | set(world.SHAPES) | set(world.PLURAL.values()) | set(world.NUMBERS)
    for word, options in table.items():
        assert word not in protected and not protected & set(options), word


# ---------------------------------------------------------------------------- CaptionAugmenter
# hand-made vocabulary: 0 <pad>, 1 <unk>, 2 <s>, 3 </s>; word starts 4 ▁a, 5 ▁big, 6 ▁red,
# 7 ▁circle, 8 ▁, 13 ▁small; continuations 9 l, 10 ar, 11 ge, 12 s
BOS, EOS = 2, 3
WORD_START = np.zeros(15, dtype=bool)
WORD_START[[4, 5, 6, 7, 8, 13]] = True
A, BIG, RED, CIRCLES, LARGE, SMALL = (4,), (5,), (6,), (7, 12), (8, 9, 10, 11), (13,)


def batch(captions: list[list[int]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded `<s> body </s>` rows, like data.cut_captions."""
    width = max(len(c) for c in captions) + 2
    ids = torch.full((len(captions), width), pad, dtype=torch.long)
    mask = torch.zeros((len(captions), width), dtype=torch.long)
    for i, c in enumerate(captions):
        ids[i, : len(c) + 2] = torch.tensor([BOS, *c, EOS])
        mask[i, : len(c) + 2] = 1
    return ids, mask


def rows(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
    return [r[m.bool()].tolist() for r, m in zip(ids, mask, strict=True)]


def words_of(row: list[int]) -> list[tuple[int, ...]]:
    """Hand split of a body into words at the word-start ids."""
    out: list[list[int]] = []
    for t in row[1:-1]:
        if WORD_START[t] or not out:
            out.append([t])
        else:
            out[-1].append(t)
    return [tuple(w) for w in out]


def check_padding(ids: torch.Tensor, mask: torch.Tensor, pad: int) -> None:
    lengths = mask.sum(1)
    assert mask.shape[1] == int(lengths.max())  # width = longest result
    assert torch.equal(mask, (torch.arange(mask.shape[1])[None, :] < lengths[:, None]).long())
    assert bool((ids[mask == 0] == pad).all())


CAPTIONS = [[*A, *BIG, *RED, *CIRCLES], [*SMALL, *CIRCLES, *A, *LARGE, *RED], [*RED]]


def test_split_words():
    assert augment.split_words([4, 5, 7, 12, 8, 9, 10, 11], WORD_START) == [A, BIG, CIRCLES, LARGE]
    assert augment.split_words([12, 4], WORD_START) == [(12,), A]  # a stray continuation alone


def test_alpha_zero_is_identity():
    ids, mask = batch(CAPTIONS)
    out_ids, out_mask = CaptionAugmenter(WORD_START, 0.0)(ids, mask, np.random.default_rng(0))
    assert torch.equal(out_ids, ids) and torch.equal(out_mask, mask)


def test_delete_keeps_whole_words_in_order():
    words = [A, BIG, RED, CIRCLES, LARGE]
    for seed in range(50):
        kept = augment.delete_words(words, 0.5, np.random.default_rng(seed))
        assert 1 <= len(kept)
        it = iter(words)
        assert all(w in it for w in kept)  # a subsequence: order kept, words whole
    assert len(augment.delete_words(words, 1.0, np.random.default_rng(0))) == 1


def test_swap_preserves_words():
    words = [A, BIG, RED, CIRCLES, LARGE]
    for seed in range(20):
        out = augment.swap_words(words, 1, np.random.default_rng(seed))
        assert Counter(out) == Counter(words)
        assert sum(a != b for a, b in zip(out, words, strict=True)) == 2  # one pair traded
    assert augment.swap_words([A], 3, np.random.default_rng(0)) == [A]


def test_synonym_replacement_puts_synonym_pieces_in_place():
    words = [A, BIG, RED, CIRCLES]
    out = augment.replace_synonyms(words, {BIG: [LARGE]}, 1, np.random.default_rng(0))
    assert out == [A, LARGE, RED, CIRCLES]
    assert augment.replace_synonyms(words, {SMALL: [BIG]}, 1, np.random.default_rng(0)) == words


def test_augmenter_keeps_ends_and_whole_words():
    ids, mask = batch(CAPTIONS)
    aug = CaptionAugmenter(WORD_START, 0.3)
    for seed in range(30):
        out = rows(*aug(ids, mask, np.random.default_rng(seed)))
        for before, after in zip(rows(ids, mask), out, strict=True):
            assert after[0] == BOS and after[-1] == EOS and len(after) >= 3
            assert Counter(words_of(after)) <= Counter(words_of(before))  # nothing split or invented


def test_augmenter_always_swaps_a_pair():
    """alpha 0.01 on 5 words: max(1, round(0.05)) = 1 swap; a caption keeps all 5 words with
    prob 0.99^5 = 0.95, and then is its words with exactly two places traded."""
    words = [A, BIG, RED, CIRCLES, LARGE]
    ids, mask = batch([[t for w in words for t in w]] * 20)
    out = [words_of(r) for r in rows(*CaptionAugmenter(WORD_START, 0.01)(ids, mask, np.random.default_rng(0)))]
    whole = [w for w in out if len(w) == 5]
    assert len(whole) >= 15
    assert all(sum(a != b for a, b in zip(w, words, strict=True)) == 2 for w in whole)


def test_augmenter_replaces_with_synonym_pieces():
    ids, mask = batch([[*A, *BIG, *RED]])
    aug = CaptionAugmenter(WORD_START, 0.1, {BIG: [LARGE]})
    seen_large = False
    for seed in range(20):
        after = rows(*aug(ids, mask, np.random.default_rng(seed)))[0]
        words = words_of(after)
        assert BIG not in words  # the only word with a synonym, and at least one is replaced
        assert set(words) <= {A, LARGE, RED}
        seen_large |= LARGE in words
    assert seen_large


def test_augmenter_repads_after_length_changes():
    ids, mask = batch([[*BIG], [*A, *RED, *CIRCLES, *RED, *A]], pad=14)
    aug = CaptionAugmenter(WORD_START, 0.9, {BIG: [LARGE]})  # pad_id None: the input's (14)
    out_ids, out_mask = aug(ids, mask, np.random.default_rng(1))
    check_padding(out_ids, out_mask, 14)
    first = rows(out_ids, out_mask)[0]
    assert first == [BOS, 8, 9, 10, 11, EOS]  # "big" -> "▁ l ar ge": 3 tokens became 6
    assert out_ids.dtype == ids.dtype and out_mask.dtype == mask.dtype
    ids2, mask2 = batch([[*RED], [*A, *RED, *CIRCLES]])  # no padding to read: pad_id given
    out2 = CaptionAugmenter(WORD_START, 0.9, pad_id=0)(ids2, mask2, np.random.default_rng(2))
    check_padding(*out2, 0)


def test_augmenter_max_tokens_drops_whole_words():
    """"big" (1 piece) becomes "large" (4): with room for 4 body tokens, "large" fits alone, so
    whichever words come back are whole, and "a large red" (6) never does."""
    ids, mask = batch([[*A, *BIG, *RED]])
    aug = CaptionAugmenter(WORD_START, 0.1, {BIG: [LARGE]}, pad_id=0, max_tokens=6)
    lengths = set()
    for seed in range(30):
        after = rows(*aug(ids, mask, np.random.default_rng(seed)))[0]
        assert len(after) <= 6 and after[0] == BOS and after[-1] == EOS
        assert Counter(words_of(after)) <= Counter([A, LARGE, RED])
        lengths.add(len(after))
    assert 6 in lengths  # "large" kept alone
    assert augment._fit([LARGE, A], 3) == [4]  # "large" does not fit; "a" does
    assert augment._fit([LARGE], 2) == [8, 9]  # nothing fits: the one word is cut


def test_augmenter_deterministic_per_seed():
    ids, mask = batch(CAPTIONS * 4)
    aug = CaptionAugmenter(WORD_START, 0.3, {BIG: [LARGE]})
    a = aug(ids, mask, np.random.default_rng(5))
    b = aug(ids, mask, np.random.default_rng(5))
    c = aug(ids, mask, np.random.default_rng(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert rows(*a) != rows(*c)


def test_augmenter_refuses_left_padding():
    ids, mask = batch(CAPTIONS)
    with pytest.raises(ValueError, match="right-padded"):
        CaptionAugmenter(WORD_START, 0.2)(ids, mask.flip(-1), np.random.default_rng(0))


# ---------------------------------------------------------------------------- the world's tokenizer


@pytest.fixture(scope="module")
def world_tokenizer(tiny_world, tmp_path_factory):
    from babymm.tokenizer import load_tokenizer
    from data_prep import ingest, train_tokenizer

    root = tmp_path_factory.mktemp("augment_tok") / "world"
    shutil.copytree(tiny_world, root, ignore=shutil.ignore_patterns("prepared"))
    ingest.ingest(root)
    return load_tokenizer(train_tokenizer.train_tokenizer(root, vocab_size=4096))


def test_world_tokenizer_synonyms(world_tokenizer):
    from babymm.data import tokenize_captions

    tok = world_tokenizer
    table = load_synonyms(ROOT / "data_prep" / "synonyms_world.json")
    aug = CaptionAugmenter.from_tokenizer(tok, 0.1, table)
    big = tuple(tok(" big", add_special_tokens=False)["input_ids"])
    assert len(big) == 1 and big in aug.synonyms  # the world's caption words are whole pieces
    assert aug.pad_id == tok.pad_token_id
    ids, mask = tokenize_captions(tok, ["a big red circle", "a star"], 40)
    seen = set()
    for seed in range(20):
        out_ids, out_mask = aug(ids, mask, np.random.default_rng(seed))
        check_padding(out_ids, out_mask, tok.pad_token_id)
        first = tok.decode(out_ids[0][out_mask[0].bool()], skip_special_tokens=True).split()
        assert set(first) <= {"a", "large", "red", "circle"} and first
        seen |= set(first)
        assert tok.decode(out_ids[1][out_mask[1].bool()], skip_special_tokens=True).split() in (
            ["a", "star"], ["star", "a"], ["a"], ["star"])
    assert "large" in seen

"""The built-in world: a deterministic, seeded generator of coloured-shape scenes.

    python -m data_prep.world --out data/world --word_budget 500000 --seed 0 [--eval_scale 1]

Writes BabyLM-format data (text `.train` files, a captions jsonl with PNG images, and eval
sets in the formats of BLiMP, EWoK, Winoground and VQA, plus zero-shot classification of
one-object images and SIMAT-style multimodal arithmetic, `_write_arithmetic`) so that the
rest of the pipeline has one path for the built-in world and real data. Winoground and VQA
are written twice, with the same items and image bytes: in babymm's layout (`eval/winoground`, `eval/vqa`) and in the official BabyLM 2025 pipeline's
(`eval/babylm2025/{winoground,vqa}`: its jsonl fields, and an `images/` dataset that
`datasets.load_dataset(dir, split="test")` opens offline), so the official pipeline can score a
run on the very items babymm scores it on. Captions are graded from one attribute ("a red
circle") up to relations, counts, negation and child-directed question-answer pairs, so caption
length and difficulty vary and a curriculum means something. The text corpus exercises every phenomenon the text eval sets
test (agreement across relative clauses, reflexives, negative polarity "ever", two-sentence
inferences) but never contains an eval sentence. Eight colour-shape compositions never occur
in training data (images, captions or text) and are marked in the image eval sets, which test
generalisation to them. Eval sets depend only on the seed, image size and `eval_scale`, never
on the word budget, so runs at different budgets are comparable; they are big enough (1,000
image items, 300 pairs per text subtask) that a 5-point difference is outside binomial noise,
and a smaller `eval_scale` writes a prefix of each full-size set.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import random
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw
from tqdm import tqdm

from babymm.files import atomic_dir, write_json_atomic
from babymm.text import with_article
from data_prep.stage import log

VERSION = "world-3"  # 3: Winoground items in both directions (two images each); the BabyLM 2025 layout; DevBench sets
DEFAULT_BUDGET = 500_000  # training words (text + captions) of the default world
COLORS = {
    "red": (220, 30, 30), "blue": (30, 70, 225), "green": (30, 150, 50), "yellow": (245, 220, 30),
    "purple": (130, 40, 170), "orange": (245, 135, 20), "black": (15, 15, 15), "white": (255, 255, 255),
    "pink": (250, 140, 200), "brown": (125, 75, 35),
}
SHAPES = ["circle", "square", "triangle", "star", "heart", "diamond", "cross", "ring"]
PLURAL = {s: s + ("es" if s.endswith("ss") else "s") for s in SHAPES}
NUMBERS = ["one", "two", "three", "four"]
BACKGROUND = (200, 200, 200)
# everyday lexicon of the text-only corpus (child-directed speech, narration, dialogue, stories)
THINGS = ["ball", "box", "cup", "dog", "cat", "bird", "duck", "car", "block", "hat", "shoe", "book",
          "spoon", "boat", "truck", "bear", "frog", "kite"]
THING_PLURAL = {t: t + ("es" if t.endswith(("x", "s")) else "s") for t in THINGS}
ANIMALS = ["dog", "cat", "bird", "duck", "bear", "frog"]  # the things that can see or like
PEOPLE = {"boy": "m", "girl": "f", "man": "m", "woman": "f", "mom": "f", "dad": "m"}  # gender
PEOPLE_PLURAL = {"boy": "boys", "girl": "girls", "man": "men", "woman": "women", "mom": "moms", "dad": "dads"}
ANIMATES = ANIMALS + list(PEOPLE)
NOUN_PLURAL = {**THING_PLURAL, **PEOPLE_PLURAL}
PRONOUNS = {"m": ("he", "him"), "f": ("she", "her")}  # subject, object
TRAITS = ["happy", "hungry", "sleepy", "here", "there", "soft", "wet", "fast", "little", "new"]
SOUNDS = {"dog": "woof", "cat": "meow", "duck": "quack", "bird": "tweet", "frog": "ribbit", "bear": "grr"}
VERBS = [("sees", "see"), ("likes", "like"), ("wants", "want"), ("has", "have"), ("finds", "find"),
         ("helps", "help"), ("washes", "wash")]
PARTICIPLES = {"see": "seen", "like": "liked", "want": "wanted", "have": "had", "find": "found",
               "help": "helped", "wash": "washed"}
REFLEXIVE_VERBS = [v for v in VERBS if v[1] not in ("have", "want")]  # "sees himself", not "has"
PREPS = ["near", "behind", "next to", "under", "on"]
SIZES = ["small", "big"]
# spatial relations of the EWoK-format set, each with its converse
SPATIAL = {"to the left of": "to the right of", "to the right of": "to the left of",
           "above": "below", "below": "above", "in front of": "behind", "behind": "in front of"}
HELDOUT_COUNT = 8
# full-size eval sets: items per file (BLiMP per subtask, EWoK per domain, zero-shot per file;
# Winoground rows, two per item, one per image, so it stays even); at 1,000 items the 95% CI
# half-width of an accuracy near 0.6 is about 3 points
EVAL_SIZES = {"blimp": 300, "ewok": 300, "winoground": 1000, "vqa": 1000, "captions": 1000, "zeroshot": 400,
              "devbench_vocab": 60, "devbench_trog": 60, "devbench_things": 40,  # DevBench: trials / images
              "arithmetic": 400}  # transformations, two images each (the retrieval database: 800 images)
MIN_EVAL_ITEMS = 10
MAX_EVAL_SCALE = 4.0
OFFICIAL_DIR = "babylm2025"  # eval/<this>/: Winoground and VQA in the official 2025 pipeline's layout


def eval_sizes(scale: float = 1.0) -> dict[str, int]:
    """Items per eval file at `scale` (rounded, at least MIN_EVAL_ITEMS; Winoground rounded to
    an even number of rows, whole items)."""
    sizes = {k: max(MIN_EVAL_ITEMS, round(n * scale)) for k, n in EVAL_SIZES.items()}
    sizes["winoground"] = 2 * max(MIN_EVAL_ITEMS // 2, round(EVAL_SIZES["winoground"] * scale / 2))
    return sizes


@dataclass(frozen=True)
class Obj:
    """One object of a scene; its grid cell fixes every position word and relation."""

    shape: str
    color: str
    size: str
    col: int  # 0 left, 1 right
    row: int  # 0 top, 1 bottom

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"


Made = tuple[list[Obj], str]  # a scene and a caption true of it


# ---------------------------------------------------------------------------- drawing


def _polygon(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Vertices of a filled shape of radius `r` centred on (cx, cy)."""
    def ring(n: int, radii: list[float], phase: float) -> list[tuple[float, float]]:
        return [(cx + radii[i % len(radii)] * math.cos(phase + 2 * math.pi * i / n),
                 cy + radii[i % len(radii)] * math.sin(phase + 2 * math.pi * i / n)) for i in range(n)]

    if kind == "triangle":
        return ring(3, [r], -math.pi / 2)
    if kind == "star":
        return ring(10, [r, r * 0.45], -math.pi / 2)
    if kind == "diamond":
        return [(cx, cy - r), (cx + 0.7 * r, cy), (cx, cy + r), (cx - 0.7 * r, cy)]
    if kind == "cross":
        t = r * 0.35  # half the arm's thickness
        return [(cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t), (cx + r, cy + t),
                (cx + t, cy + t), (cx + t, cy + r), (cx - t, cy + r), (cx - t, cy + t), (cx - r, cy + t),
                (cx - r, cy - t), (cx - t, cy - t)]
    if kind == "heart":
        pts = []
        for i in range(24):
            t = 2 * math.pi * i / 24
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            pts.append((cx + r * x / 16, cy - r * y / 16))
        return pts
    raise ValueError(kind)


def render(objects: list[Obj], size: int, rng: random.Random) -> bytes:
    """PNG bytes of the scene: each object in its cell of a 2x2 grid, a little jittered."""
    im = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(im)
    cell = size / 2
    for o in objects:
        r = (0.11 if o.size == "small" else 0.2) * size
        slack = max(0.0, cell / 2 - r - 1)
        cx = (o.col + 0.5) * cell + rng.uniform(-slack, slack)
        cy = (o.row + 0.5) * cell + rng.uniform(-slack, slack)
        fill = COLORS[o.color]
        box = [cx - r, cy - r, cx + r, cy + r]
        if o.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif o.shape == "square":
            draw.rectangle([cx - 0.85 * r, cy - 0.85 * r, cx + 0.85 * r, cy + 0.85 * r], fill=fill)
        elif o.shape == "ring":
            draw.ellipse(box, outline=fill, width=max(2, round(r / 2.5)))
        else:
            draw.polygon(_polygon(o.shape, cx, cy, r), fill=fill)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


# ---------------------------------------------------------------------------- scenes and captions


class World:
    """Scene, caption and sentence samplers sharing a lexicon and the held-out compositions."""

    def __init__(self, heldout: set[tuple[str, str]]):
        self.heldout = heldout
        self.allowed = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in heldout]

    def is_heldout(self, o: Obj) -> bool:
        return (o.color, o.shape) in self.heldout

    def obj(self, rng: random.Random, cell: tuple[int, int], heldout: bool = False,
            avoid: Collection[tuple[str, str]] = ()) -> Obj:
        """An object in `cell`: a held-out composition if asked, else an allowed one not in `avoid`."""
        pool = sorted(self.heldout) if heldout else self.allowed
        pool = [p for p in pool if p not in avoid] or pool
        color, shape = rng.choice(pool)
        return Obj(shape, color, rng.choice(SIZES), *cell)

    def scene(self, rng: random.Random, n: int, heldout: bool = False, distinct: bool = True) -> list[Obj]:
        """`n` objects in distinct cells; with `heldout` the first is a held-out composition, and
        with `distinct` no two share colour and shape, so "the red circle" names one object."""
        cells = rng.sample([(c, r) for c in (0, 1) for r in (0, 1)], n)
        objs: list[Obj] = []
        for i, cell in enumerate(cells):
            used = {(o.color, o.shape) for o in objs} if distinct else set()
            objs.append(self.obj(rng, cell, heldout=heldout and i == 0, avoid=used))
        return objs

    # -- captions, by level ------------------------------------------------------------
    def caption(self, rng: random.Random, level: int, heldout: bool = False) -> Made:
        """A scene and one caption of difficulty `level` (1-8) that is true of it."""
        for _ in range(100):
            made = CAPTIONERS[level](self, rng, heldout)
            if made is not None:
                return made
        raise RuntimeError(f"could not make a level-{level} caption")


def _one_attr(w: World, rng: random.Random, h: bool) -> Made:
    """Level 1, one object: "a red circle"."""
    objs = w.scene(rng, 1, h)
    return objs, with_article(objs[0].name)


def _size_attr(w: World, rng: random.Random, h: bool) -> Made:
    """Level 2, size and colour: "a big red circle"."""
    objs = w.scene(rng, 1, h)
    return objs, with_article(f"{objs[0].size} {objs[0].name}")


def _position(w: World, rng: random.Random, h: bool) -> Made:
    """Level 3: "a big red circle on the left", on an axis where no other object shares its half."""
    objs = w.scene(rng, rng.choice([1, 2]), h)
    o = objs[0]
    if len(objs) == 2 and objs[1].col != o.col:
        where = "on the left" if o.col == 0 else "on the right"
    elif len(objs) == 2 and objs[1].row != o.row:
        where = "at the top" if o.row == 0 else "at the bottom"
    else:
        where = rng.choice([["on the left", "on the right"][o.col], ["at the top", "at the bottom"][o.row]])
    return objs, f"{with_article(o.size)} {o.name} {where}"


def _two(w: World, rng: random.Random, h: bool) -> Made:
    """Level 4, two objects: "a red circle and a blue square"."""
    p, q = w.scene(rng, 2, h)
    return [p, q], f"{with_article(p.name)} and {with_article(q.name)}"


def _relation(w: World, rng: random.Random, h: bool) -> Made | None:
    """Level 5: "a (small) red circle is above a (big) blue square"; None for diagonal pairs."""
    p, q = w.scene(rng, 2, h)
    rel = relation(p, q)
    if rel is None:
        return None
    if rng.random() < 0.5:
        return [p, q], f"{with_article(p.name)} is {rel} {with_article(q.name)}"
    return [p, q], f"{with_article(p.size)} {p.name} is {rel} {with_article(q.size)} {q.name}"


def relation(a: Obj, b: Obj) -> str | None:
    """The spatial relation of a to b, when exactly one axis differs."""
    if a.col == b.col and a.row != b.row:
        return "above" if a.row < b.row else "below"
    if a.row == b.row and a.col != b.col:
        return "to the left of" if a.col < b.col else "to the right of"
    return None


def _count(w: World, rng: random.Random, h: bool) -> Made | None:
    """Level 6: "there are three green triangles", exactly that many of that colour and shape."""
    k = rng.randint(1, 4)
    color, shape = rng.choice(sorted(w.heldout) if h else w.allowed)
    cells = rng.sample([(c, r) for c in (0, 1) for r in (0, 1)], 4)
    objs = [Obj(shape, color, rng.choice(SIZES), *cells[i]) for i in range(k)]
    for cell in cells[k: k + rng.randint(0, 4 - k)]:
        objs.append(w.obj(rng, cell, avoid={(color, shape)}))
    if any(o.shape == shape and o.color == color for o in objs[k:]):
        return None
    if k == 1:
        return objs, f"there is one {color} {shape}"
    return objs, f"there are {NUMBERS[k - 1]} {color} {PLURAL[shape]}"


def _negation(w: World, rng: random.Random, h: bool) -> Made | None:
    """Level 7: "there is a red circle and no blue square" or "the circle is not blue"."""
    objs = w.scene(rng, rng.choice([1, 2]), h)
    o = objs[0]
    if rng.random() < 0.5:
        absent = rng.choice([p for p in w.allowed if all((x.color, x.shape) != p for x in objs)])
        return objs, f"there is {with_article(o.name)} and no {absent[0]} {absent[1]}"
    if sum(x.shape == o.shape for x in objs) != 1:
        return None
    other = rng.choice([c for c in COLORS if c != o.color and (c, o.shape) not in w.heldout])
    return objs, f"the {o.shape} is not {other}"


def _qa(w: World, rng: random.Random, h: bool) -> Made | None:
    """Level 8, child-directed QA in the zero-shot VQA prompt's format."""
    objs = w.scene(rng, rng.choice([1, 2, 3]), h)
    made = question(objs, rng)
    if made is None:
        return None
    q, ans, _ = made
    return objs, f"question: {q} answer: {ans}."


def question(objs: list[Obj], rng: random.Random) -> tuple[str, str, str] | None:
    """A question with one true answer about the scene: (question, answer, answer type)."""
    kind = rng.choice(["color", "shape", "count", "position"])
    o = rng.choice(objs)
    if kind == "color" and sum(x.shape == o.shape for x in objs) == 1:
        return f"what color is the {o.shape}?", o.color, "color"
    if kind == "shape" and sum(x.color == o.color for x in objs) == 1:
        return f"what shape is {o.color}?", o.shape, "shape"
    if kind == "count":
        k = sum(x.shape == o.shape for x in objs)
        return f"how many {PLURAL[o.shape]} are there?", NUMBERS[k - 1], "count"
    if kind == "position" and len(objs) == 2:
        a, b = objs
        if a.row == b.row and a.col != b.col and (a.color, a.shape) != (b.color, b.shape):
            return f"where is the {o.name}?", "left" if o.col == 0 else "right", "position"
    return None


CAPTIONERS: dict[int, Callable[[World, random.Random, bool], Made | None]] = {1: _one_attr, 2: _size_attr, 3: _position, 4: _two, 5: _relation,
                                   6: _count, 7: _negation, 8: _qa}
LEVEL_WEIGHTS = [1.0, 1.0, 1.0, 1.0, 1.2, 1.0, 1.0, 0.9]


# ---------------------------------------------------------------------------- grammar
# Phrase builders shared by the text corpus and the BLiMP-format pairs, so the good sentences
# of an eval set are drawn from the distribution the corpus teaches (but never occur in it).


def _bare(rng: random.Random, noun: str, plural: bool, adjs: int | None = None) -> str:
    """`noun` with 0-2 adjectives in size-colour order and no determiner: "big red balls".
    People take none ("the red boy", "the small moms" read oddly)."""
    n_adj = 0 if noun in PEOPLE else rng.choice([0, 1, 1, 2]) if adjs is None else adjs
    words = []
    if n_adj == 2:
        words = [rng.choice(SIZES), rng.choice(list(COLORS))]  # size before colour
    elif n_adj == 1:
        words = [rng.choice(SIZES + list(COLORS))]
    return " ".join([*words, NOUN_PLURAL[noun] if plural else noun])


def _phrase(rng: random.Random, noun: str, plural: bool, det: str | None = None,
            adjs: int | None = None) -> str:
    """A noun phrase around `noun`; the determiner is "the" or (singular) "a" unless given."""
    bare = _bare(rng, noun, plural, adjs)
    det = det or ("the" if plural else rng.choice(["the", "a", "the"]))
    return with_article(bare) if det == "a" else f"{det} {bare}"


def _np(rng: random.Random, plural: bool, det: str | None = None, adjs: int | None = None,
        nouns: list[str] = THINGS) -> str:
    """A noun phrase of the everyday lexicon (a noun from `nouns`)."""
    return _phrase(rng, rng.choice(nouns), plural, det, adjs)


def _cop(plural: bool) -> str:
    return "are" if plural else "is"


def _has(plural: bool) -> str:
    return "have" if plural else "has"


def _agree(verb: tuple[str, str], plural: bool) -> str:
    """The present-tense form of `verb` (singular, plural) agreeing with its subject."""
    return verb[1] if plural else verb[0]


def reflexive(noun: str, plural: bool) -> str:
    """The reflexive pronoun that `noun` binds: number, then gender for people."""
    if plural:
        return "themselves"
    return {"m": "himself", "f": "herself"}.get(PEOPLE.get(noun, ""), "itself")


def wrong_reflexives(noun: str, plural: bool) -> list[str]:
    """Reflexives that clearly cannot take `noun` as antecedent. Never "themselves" for one
    person (singular they) nor "himself"/"herself" for one animal (a pet can be "he")."""
    if plural:
        return ["himself", "herself", "itself"]
    if noun in PEOPLE:
        return ["herself" if PEOPLE[noun] == "m" else "himself"]
    return ["themselves"]


def _predicates(rng: random.Random, plural: bool) -> tuple[str, str]:
    """A predicate agreeing with a subject of number `plural`, and the same with the other number."""
    if rng.random() < 0.5:
        trait = rng.choice(TRAITS + list(COLORS))
        return f"{_cop(plural)} {trait}", f"{_cop(not plural)} {trait}"
    verb, obj = rng.choice(VERBS), _np(rng, rng.random() < 0.5, adjs=0)
    return f"{_agree(verb, plural)} {obj}", f"{_agree(verb, not plural)} {obj}"


def _relative_subject(rng: random.Random, plural: bool) -> str:
    """ "the dog that the cats see": the relative clause's subject has the other number, so it
    attracts agreement away from the head."""
    head = _np(rng, plural, adjs=rng.choice([0, 1]), nouns=THINGS + list(PEOPLE))
    inner = _np(rng, not plural, adjs=0, nouns=ANIMATES)
    return f"{head} that {inner} {_agree(rng.choice(VERBS), not plural)}"


def _two_pp_subject(rng: random.Random, plural: bool) -> str:
    """ "the cups near the boxes behind the ball": the noun next to the verb has the other number."""
    return (f"{_np(rng, plural, adjs=0)} {rng.choice(PREPS)} {_np(rng, rng.random() < 0.5, adjs=0)} "
            f"{rng.choice(PREPS)} {_np(rng, not plural, adjs=0)}")


def _perfect_vp(rng: random.Random) -> str:
    """ "seen the ball": a participle and its object."""
    return f"{PARTICIPLES[rng.choice(VERBS)[1]]} {_np(rng, rng.random() < 0.5, adjs=0)}"


def _definite(rng: random.Random, bare: str, plural: bool) -> str:
    """ "the" or (singular) "a" before a bare noun phrase."""
    return f"the {bare}" if plural or rng.random() < 0.5 else with_article(bare)


# ---------------------------------------------------------------------------- text corpus


def child_directed(rng: random.Random) -> str:
    """A child-directed utterance: "look, a big red ball!", "these are yellow cups."."""
    t, c, s = rng.choice(THINGS), rng.choice(list(COLORS)), rng.choice(SIZES)
    return rng.choice([
        f"look, {with_article(s)} {c} {t}!", f"where is the {c} {t}?", f"do you want the {c} {t}?",
        f"can you find the {s} {t}?", f"here is the {t}.", f"the {t} is {rng.choice(TRAITS)}.",
        f"these are {c} {THING_PLURAL[t]}.", f"this is {with_article(c)} {t}.", f"that one is not {c}.",
        "good job!", f"is the {t} {c}?", f"those {THING_PLURAL[t]} are {s}.",
        f"that {t} is {c}.", f"what {with_article(s)} {t}!", f"the {THING_PLURAL[t]} are {rng.choice(TRAITS)}.",
        f"show me the {c} {t}.", f"put the {t} in the box.", f"we do not throw the {t}.",
    ])


def narration(rng: random.Random) -> str:
    """A sentence exercising what the BLiMP-format sets test: agreement (across adjectives,
    prepositional phrases and relative clauses), determiner-noun agreement, adjective order,
    negation with do, reflexives, and where "ever" may go."""
    plural = rng.random() < 0.5
    kind = rng.randrange(10)
    if kind == 0:  # agreement with adjectives
        return f"{_np(rng, plural)} {_cop(plural)} {rng.choice(TRAITS + SIZES + list(COLORS))}."
    if kind == 1:  # agreement across a prepositional phrase
        return (f"{_np(rng, plural, adjs=0)} {rng.choice(PREPS)} {_np(rng, rng.random() < 0.5, adjs=0)} "
                f"{_cop(plural)} {rng.choice(TRAITS + list(COLORS))}.")
    if kind == 2:  # determiner-noun agreement
        det = rng.choice(["these", "those"] if plural else ["this", "that"])
        return f"{_np(rng, plural, det=det, adjs=rng.choice([0, 1]))} {_cop(plural)} {rng.choice(TRAITS + list(COLORS))}."
    if kind == 3:  # transitive verbs
        v = rng.choice(VERBS)
        return f"{_np(rng, plural, nouns=THINGS + list(PEOPLE))} {_agree(v, plural)} {_np(rng, rng.random() < 0.5)}."
    if kind == 4:  # negation with auxiliaries
        aux = "do" if plural else "does"
        return f"{_np(rng, plural, adjs=0)} {aux} not {rng.choice(VERBS)[1]} {_np(rng, rng.random() < 0.5, adjs=0)}."
    if kind == 5:
        return f"{_np(rng, plural, adjs=0)} {_cop(plural)} not {rng.choice(TRAITS + list(COLORS))}."
    if kind == 6:  # agreement across a relative clause
        return f"{_relative_subject(rng, plural)} {_predicates(rng, plural)[0]}."
    if kind == 7:  # agreement across two prepositional phrases
        return f"{_two_pp_subject(rng, plural)} {_predicates(rng, plural)[0]}."
    if kind == 8:  # reflexives
        return _anaphor_pair(rng)[0]
    return npi_sentence(rng)


def npi_sentence(rng: random.Random) -> str:
    """Where "ever" may go: licensed by "no" on the subject, by "not", in a question; and the
    same perfect sentences without "ever", including "no" inside a relative clause, which does
    not license it (so the scope contrast is learnable from positive evidence)."""
    plural = rng.random() < 0.5
    noun = rng.choice(ANIMATES)
    bare, has, vp = _bare(rng, noun, plural, adjs=rng.choice([0, 1])), _has(plural), _perfect_vp(rng)
    inner_plural = rng.random() < 0.5
    inner = _bare(rng, rng.choice([n for n in ANIMATES if n != noun]), inner_plural, adjs=0)
    verb = _agree(rng.choice(VERBS), inner_plural)
    return rng.choice([
        f"no {bare} {has} ever {vp}.",
        f"{_definite(rng, bare, plural)} {has} not ever {vp}.",
        f"{has} {_definite(rng, bare, plural)} ever {vp}?",
        f"{_definite(rng, bare, plural)} {has} {vp}.",
        f"no {bare} that the {inner} {verb} {has} ever {vp}.",
        f"the {bare} that no {inner} {verb} {has} {vp}.",
    ])


def dialogue(rng: random.Random) -> str:
    """A question-answer exchange in the level-8 caption format, about no image: it teaches the
    format and which words answer which question, not facts about any scene."""
    t = rng.choice(THINGS)
    k = rng.randint(1, 4)
    c = rng.choice(list(COLORS))
    animal, sound = rng.choice(list(SOUNDS.items()))
    where = rng.choice(["left", "right", "top", "bottom"])
    shape = rng.choice(SHAPES)
    return rng.choice([
        f"question: what does the {animal} say? answer: {sound}.",
        f"question: how many {THING_PLURAL[t]} are there? answer: {NUMBERS[k - 1]}.",
        f"question: what color is the {t}? answer: {c}.",
        f"question: where is the {t}? answer: {where}.",
        f"question: is the {t} {c}? answer: yes.",
        f"question: what shape is the {t}? answer: {shape}.",
        f"question: what is this? answer: {with_article(t)}.",
    ])


def story(rng: random.Random) -> str:
    """A context and a consequence true of it on one line, the inference an EWoK-format item
    tests ("the ball is above the cup. the cup is below the ball.")."""
    item = EWOK[rng.choice(list(EWOK))](rng)
    if rng.random() < 0.5:
        return f"{item.context1} {item.target1}"
    return f"{item.context2} {item.target2}"


TEXT_SOURCES: dict[str, Callable[[random.Random], str]] = {
    "child_directed": child_directed, "narration": narration, "dialogue": dialogue, "stories": story}


# ---------------------------------------------------------------------------- eval sets: BLiMP format


def blimp_pairs(rng: random.Random, subtask: str) -> tuple[str, str]:
    """A (good, bad) minimal pair of a BLiMP-format subtask, differing in one thing."""
    if subtask in HARD_BLIMP:
        return HARD_BLIMP[subtask](rng)
    plural = rng.random() < 0.5
    trait = rng.choice(TRAITS + list(COLORS))
    if subtask == "subject_verb_agreement":
        np_ = _np(rng, plural, adjs=rng.choice([1, 2]))
        return f"{np_} {_cop(plural)} {trait}.", f"{np_} {_cop(not plural)} {trait}."
    if subtask == "subject_verb_agreement_attractor":
        head, attractor = _np(rng, plural, adjs=0), _np(rng, not plural, adjs=0)
        prep = rng.choice(PREPS)
        return (f"{head} {prep} {attractor} {_cop(plural)} {trait}.",
                f"{head} {prep} {attractor} {_cop(not plural)} {trait}.")
    if subtask == "determiner_noun_agreement":
        t = rng.choice(THINGS)
        good, bad = (("these", "this") if rng.random() < 0.5 else ("those", "that")) if plural else \
            (("this", "these") if rng.random() < 0.5 else ("that", "those"))
        noun = THING_PLURAL[t] if plural else t
        return f"{good} {noun} {_cop(plural)} {trait}.", f"{bad} {noun} {_cop(plural)} {trait}."
    if subtask == "adjective_order":
        t, s, c = rng.choice(THINGS), rng.choice(SIZES), rng.choice(list(COLORS))
        rest = rng.choice(["is here.", "is there.", f"is {rng.choice(TRAITS[:3])}.", "is on the box."])
        return f"the {s} {c} {t} {rest}", f"the {c} {s} {t} {rest}"
    if subtask == "negation_auxiliary":
        subj, obj = _np(rng, plural, adjs=0), _np(rng, rng.random() < 0.5, adjs=0)
        aux, verb = ("do" if plural else "does"), rng.choice(VERBS)[1]
        return f"{subj} {aux} not {verb} {obj}.", f"{subj} not {aux} {verb} {obj}."
    raise ValueError(subtask)


def _long_attractor_pair(rng: random.Random) -> tuple[str, str]:
    """Agreement across a relative clause or two prepositional phrases whose last noun has the
    other number: "the dog that the cats see is happy." / "... are happy."."""
    plural = rng.random() < 0.5
    subject = (_relative_subject if rng.random() < 0.5 else _two_pp_subject)(rng, plural)
    good, bad = _predicates(rng, plural)
    return f"{subject} {good}.", f"{subject} {bad}."


def _anaphor_pair(rng: random.Random) -> tuple[str, str]:
    """A reflexive agreeing with its antecedent in number and gender: "the boys see
    themselves." / "the boys see himself."; half have an attractor ("the boy near the girl")
    whose own reflexive is the wrong one, which a model reading the last noun would pick."""
    noun, plural = rng.choice(ANIMATES), rng.random() < 0.5
    subject = _phrase(rng, noun, plural, det="the", adjs=rng.choice([0, 0, 1]))
    wrong = wrong_reflexives(noun, plural)
    if rng.random() < 0.5:
        other, other_plural = rng.choice([(n, p) for n in ANIMATES for p in (False, True)
                                          if reflexive(n, p) in wrong])
        subject += f" {rng.choice(PREPS)} {_phrase(rng, other, other_plural, det='the', adjs=0)}"
        wrong = [reflexive(other, other_plural)]
    verb = _agree(rng.choice(REFLEXIVE_VERBS), plural)
    return f"{subject} {verb} {reflexive(noun, plural)}.", f"{subject} {verb} {rng.choice(wrong)}."


def _npi_pair(rng: random.Random) -> tuple[str, str]:
    """Negative polarity "ever" needs "no" on the subject: "no dog has ever seen the ball." /
    "the dog has ever seen the ball."; or half the time "no" moves into a relative clause, where
    it does not scope over "ever": "no dog that the cat likes has ever ..." / "the dog that no
    cat likes has ever ..." (the same words)."""
    plural = rng.random() < 0.5
    noun = rng.choice(ANIMATES)
    bare = _bare(rng, noun, plural, adjs=rng.choice([0, 1]))
    rest = f"{_has(plural)} ever {_perfect_vp(rng)}."
    if rng.random() < 0.5:
        return f"no {bare} {rest}", f"{_definite(rng, bare, plural)} {rest}"
    inner_plural = rng.random() < 0.5
    inner = _bare(rng, rng.choice([n for n in ANIMATES if n != noun]), inner_plural, adjs=0)
    verb = _agree(rng.choice(VERBS), inner_plural)
    return f"no {bare} that the {inner} {verb} {rest}", f"the {bare} that no {inner} {verb} {rest}"


HARD_BLIMP: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "subject_verb_agreement_long_attractor": _long_attractor_pair,
    "anaphor_agreement": _anaphor_pair,
    "npi_licensing": _npi_pair,
}
BLIMP = {  # subtask: (field, linguistics_term), as in BLiMP
    "subject_verb_agreement": ("morphology", "subject_verb_agreement"),
    "subject_verb_agreement_attractor": ("morphology", "subject_verb_agreement"),
    "determiner_noun_agreement": ("morphology", "determiner_noun_agreement"),
    "adjective_order": ("syntax", "word_order"),
    "negation_auxiliary": ("syntax", "negation"),
    "subject_verb_agreement_long_attractor": ("morphology", "subject_verb_agreement"),
    "anaphor_agreement": ("morphology", "anaphor_agreement"),
    "npi_licensing": ("semantics", "npi_licensing"),
}


def blimp_rows(seed: int, subtask: str, n: int) -> list[dict]:
    """The first `n` pairs of a subtask, each good sentence once. A subtask has its own random
    stream, so a smaller `n` gives a prefix of a bigger one."""
    rng = random.Random(f"blimp-{seed}-{subtask}")
    field, term = BLIMP[subtask]
    seen: set[str] = set()
    rows: list[dict] = []
    for _ in range(100 * n):
        if len(rows) == n:
            return rows
        good, bad = blimp_pairs(rng, subtask)
        if good in seen or good == bad:
            continue
        seen.add(good)
        rows.append({"sentence_good": good, "sentence_bad": bad, "field": field, "UID": subtask,
                     "linguistics_term": term, "pair_id": len(rows)})
    raise RuntimeError(f"BLiMP-format {subtask}: fewer than {n} distinct pairs")


# ---------------------------------------------------------------------------- eval sets: EWoK format


@dataclass(frozen=True)
class EwokItem:
    """Target1 is true given Context1 and false given Context2; Target2 the reverse."""

    template: str
    context1: str
    context2: str
    target1: str
    target2: str


def _things(rng: random.Random, k: int) -> list[str]:
    """`k` noun phrases with distinct nouns ("the ball", "the red cup"), each naming one thing."""
    return [f"the {rng.choice(list(COLORS))} {t}" if rng.random() < 0.4 else f"the {t}"
            for t in rng.sample(THINGS, k)]


def _spatial_item(rng: random.Random) -> EwokItem:
    """A relation entails its converse ("a left of b" -> "b right of a") and chains
    ("a above b, b above c" -> "a above c"); Context2 uses the converse relation throughout."""
    rel = rng.choice(list(SPATIAL))
    conv = SPATIAL[rel]
    a, b, c = _things(rng, 3)
    if rng.random() < 0.5:
        return EwokItem("converse", f"{a} is {rel} {b}.", f"{a} is {conv} {b}.",
                        f"{b} is {conv} {a}.", f"{b} is {rel} {a}.")
    return EwokItem("transitive", f"{a} is {rel} {b}. {b} is {rel} {c}.",
                    f"{a} is {conv} {b}. {b} is {conv} {c}.", f"{a} is {rel} {c}.", f"{a} is {conv} {c}.")


def _property_item(rng: random.Random) -> EwokItem:
    """A thing keeps its colour when it changes hands: given away ("the ball is red. then the
    boy gives it to the girl." -> "now the girl has the red ball."), or traded, where both
    colours are in the context and only tracking who has what tells the targets apart."""
    t = rng.choice(THINGS)
    c1, c2 = rng.sample(list(COLORS), 2)
    p, q = rng.sample(list(PEOPLE), 2)
    if rng.random() < 0.5:
        give = "the {t} is {c}. then the {p} gives it to the {q}."
        return EwokItem("give", give.format(t=t, c=c1, p=p, q=q), give.format(t=t, c=c2, p=p, q=q),
                        f"now the {q} has the {c1} {t}.", f"now the {q} has the {c2} {t}.")
    trade = "the {p} has the {x} {t} and the {q} has the {y} {t}. then they trade."
    who, after = rng.choice([(q, c1), (p, c2)])  # what `who` has after trading, given Context1
    before = c2 if after == c1 else c1
    return EwokItem("trade", trade.format(p=p, q=q, t=t, x=c1, y=c2), trade.format(p=p, q=q, t=t, x=c2, y=c1),
                    f"now the {who} has the {after} {t}.", f"now the {who} has the {before} {t}.")


def _quantity_item(rng: random.Random) -> EwokItem:
    """Counting: giving one away leaves one fewer and getting one makes one more ("the boy has
    three balls. then he gives one to the girl." -> "now the boy has two balls."; the other
    person has the other gender, so "he" and "him" name one person); or who has more ("the boy
    has two balls and the girl has three balls." -> "the girl has more balls than the boy.")."""
    p = rng.choice(list(PEOPLE))
    q = rng.choice([x for x in PEOPLE if PEOPLE[x] != PEOPLE[p]])
    t = rng.choice(THINGS)
    adj = f"{rng.choice(list(COLORS))} " if rng.random() < 0.4 else ""

    def count(n: int) -> str:
        return f"{NUMBERS[n - 1]} {adj}{THING_PLURAL[t] if n > 1 else t}"

    if rng.random() < 0.5:
        k = rng.choice([2, 3])
        he, him = PRONOUNS[PEOPLE[p]]
        has = f"the {p} has {count(k)}."
        return EwokItem("give_one", f"{has} then {he} gives one to the {q}.", f"{has} then the {q} gives one to {him}.",
                        f"now the {p} has {count(k - 1)}.", f"now the {p} has {count(k + 1)}.")
    fewer, more = sorted(rng.sample(range(1, len(NUMBERS) + 1), 2))
    both = "the {p} has {a} and the {q} has {b}."
    return EwokItem("compare", both.format(p=p, q=q, a=count(fewer), b=count(more)),
                    both.format(p=p, q=q, a=count(more), b=count(fewer)),
                    f"the {q} has more {adj}{THING_PLURAL[t]} than the {p}.",
                    f"the {p} has more {adj}{THING_PLURAL[t]} than the {q}.")


EWOK: dict[str, Callable[[random.Random], EwokItem]] = {
    "spatial_relations": _spatial_item, "property_persistence": _property_item, "quantity": _quantity_item}


def ewok_lines(item: EwokItem) -> set[str]:
    """Every context-target line an item could appear as; the text corpus has none of them."""
    return {f"{c} {t}" for c in (item.context1, item.context2) for t in (item.target1, item.target2)}


def ewok_rows(seed: int, domain: str, n: int) -> list[dict]:
    """The first `n` items of a domain, each Context1-Target1 once; a prefix of a bigger `n`."""
    rng = random.Random(f"ewok-{seed}-{domain}")
    seen: set[tuple[str, str]] = set()
    rows: list[dict] = []
    for _ in range(100 * n):
        if len(rows) == n:
            return rows
        item = EWOK[domain](rng)
        if (item.context1, item.target1) in seen:
            continue
        seen.add((item.context1, item.target1))
        # ContextType/ContextDiff/TargetDiff: metadata EWoK ships and the official BabyLM
        # pipeline requires in every row
        rows.append({"Domain": domain, "TemplateName": item.template, "Context1": item.context1,
                     "Context2": item.context2, "Target1": item.target1, "Target2": item.target2,
                     "ContextType": "concrete", "ContextDiff": item.template, "TargetDiff": item.template,
                     "item_id": len(rows)})
    raise RuntimeError(f"EWoK-format {domain}: fewer than {n} distinct items")


# ---------------------------------------------------------------------------- eval sets: images


@dataclass(frozen=True)
class WinogroundItem:
    """Two scenes and two captions with the same words in another order (so never "a" vs "an"):
    caption A is true of scene A only, caption B of scene B only, as in Winoground. `tag` and
    `collapsed_tag` name the swap in Winoground's terms: colour adjectives swapped between the
    nouns (a relation swap) or the two noun phrases swapped around a spatial relation (an
    object swap)."""

    scene_a: list[Obj]
    scene_b: list[Obj]
    caption_a: str
    caption_b: str
    tag: str
    collapsed_tag: str


def winoground_item(w: World, rng: random.Random, heldout: bool) -> WinogroundItem:
    """Two objects of different colours and shapes. Scene B swaps their colours ("a red circle
    and a blue square" / "a blue circle and a red square") or their cells ("a red circle is
    above a blue square" / "a blue square is above a red circle"). With `heldout` scene A holds
    a held-out composition; without it neither scene does."""
    while True:
        p, q = w.scene(rng, 2, heldout)
        if p.color == q.color or p.shape == q.shape or "orange" in (p.color, q.color):
            continue
        rel = relation(p, q)
        if rel is not None and rng.random() < 0.5:
            b = [Obj(p.shape, p.color, p.size, q.col, q.row), Obj(q.shape, q.color, q.size, p.col, p.row)]
            item = WinogroundItem([p, q], b, f"a {p.name} is {rel} a {q.name}", f"a {q.name} is {rel} a {p.name}",
                                  "Noun Phrase", "Object")
        else:
            b = [Obj(p.shape, q.color, p.size, p.col, p.row), Obj(q.shape, p.color, q.size, q.col, q.row)]
            item = WinogroundItem([p, q], b, f"a {p.color} {p.shape} and a {q.color} {q.shape}",
                                  f"a {q.color} {p.shape} and a {p.color} {q.shape}", "Adjective-Color", "Relation")
        if heldout or not any(w.is_heldout(o) for o in b):
            return item


ANSWERS = {"color": list(COLORS), "shape": SHAPES, "count": NUMBERS, "position": ["left", "right"]}


def distractors(answer: str, kind: str, rng: random.Random) -> list[str]:
    """7 wrong answers: the same type first, then other types (never a position word that
    could be true of the object, so only left/right are used)."""
    same = [a for a in ANSWERS[kind] if a != answer]
    rng.shuffle(same)
    others = [a for k, v in ANSWERS.items() if k != kind for a in v if a not in ("left", "right")]
    rng.shuffle(others)
    return (same + others)[:7]


ZEROSHOT = {"shape": SHAPES, "color": list(COLORS)}  # file: class names, in every row's order


def zeroshot_object(w: World, rng: random.Random, attr: str, i: int) -> Obj:
    """The i-th object of zero-shot file `attr` ("shape" or "color"), in a random cell and size.
    Classes come in turn, so each is equally common; every fourth round uses the class's
    held-out composition where it has one (every shape has one, 8 of 10 colours do)."""
    classes = ZEROSHOT[attr]
    label = classes[i % len(classes)]
    index = 0 if attr == "color" else 1

    def matching(pairs: Collection[tuple[str, str]]) -> list[tuple[str, str]]:
        return [p for p in sorted(pairs) if p[index] == label]

    pool = (matching(w.heldout) if (i // len(classes)) % 4 == 1 else []) or matching(w.allowed)
    color, shape = rng.choice(pool)
    return Obj(shape, color, rng.choice(SIZES), rng.randrange(2), rng.randrange(2))


# ---------------------------------------------------------------------------- writer


def _in_text_ok(sentence: str, heldout: set[tuple[str, str]]) -> bool:
    """False if the sentence names a held-out colour anywhere with its shape (conservatively:
    anywhere in the sentence, so no training line can pair them)."""
    words = set(sentence.replace("?", " ").replace(".", " ").replace("!", " ").replace(",", " ").split())
    return not any(c in words and (s in words or PLURAL[s] in words) for c, s in heldout)


def choose_heldout(seed: int) -> set[tuple[str, str]]:
    """The held-out (colour, shape) compositions, at most one per colour and per shape, so
    every colour and every shape is still seen in training."""
    rng = random.Random(f"heldout-{seed}")
    pairs = [(c, s) for c in COLORS for s in SHAPES]
    chosen: list[tuple[str, str]] = []
    for c, s in rng.sample(pairs, len(pairs)):  # at most one per colour and per shape
        if all(c != x and s != y for x, y in chosen):
            chosen.append((c, s))
        if len(chosen) == HELDOUT_COUNT:
            break
    return set(chosen)


def check_params(word_budget: int, image_size: int, caption_fraction: float, eval_scale: float = 1.0) -> None:
    """Refuse parameters that cannot make a usable world, before any work."""
    if word_budget < 1:
        raise ValueError(f"word_budget must be positive, got {word_budget}")
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16 pixels (shapes need room), got {image_size}")
    if not 0 < caption_fraction < 1:
        raise ValueError(f"caption_fraction must be in (0, 1), got {caption_fraction}")
    if not 0 < eval_scale <= MAX_EVAL_SCALE:  # the determiner subtask has 1,440 distinct pairs
        raise ValueError(f"eval_scale must be in (0, {MAX_EVAL_SCALE}], got {eval_scale}")


def generate_world(out_dir: str | Path, word_budget: int = DEFAULT_BUDGET, seed: int = 0, image_size: int = 32,
                   caption_fraction: float = 0.4, *, eval_scale: float = 1.0, overwrite: bool = False) -> dict:
    """Write the world into `out_dir` and return its manifest (also `out_dir/world.json`).

    `eval_scale` multiplies every eval set's size (see `eval_sizes`); tests use small scales.
    A no-op when `world.json` there records the same parameters (unless `overwrite`). The
    directory is built aside and swapped in whole, so a failed run leaves nothing half-written.
    """
    check_params(word_budget, image_size, caption_fraction, eval_scale)
    out_dir = Path(out_dir)
    params = {"word_budget": word_budget, "seed": seed, "image_size": image_size,
              "caption_fraction": caption_fraction, "eval_scale": float(eval_scale), "version": VERSION}
    manifest_path = out_dir / "world.json"
    if not overwrite and manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        if old.get("params") == params:
            if "arithmetic" not in old.get("eval", {}):  # written before the set existed: add it alone
                old = _add_arithmetic(out_dir, old, seed, image_size, eval_sizes(eval_scale)["arithmetic"])
            log("world", f"{out_dir} is up to date ({word_budget:,} words, seed {seed})")
            return old
    heldout = choose_heldout(seed)
    w = World(heldout)
    sizes = eval_sizes(eval_scale)
    log("world", f"generating {out_dir}: {word_budget:,} words, seed {seed}, {image_size}px images; "
                 f"held out: {', '.join(f'{c} {s}' for c, s in sorted(heldout))}")
    with atomic_dir(out_dir) as tmp:
        counts, eval_lines = _write_text_evals(tmp, seed, sizes)
        held = {"winoground": _write_winoground(w, tmp, seed, image_size, sizes["winoground"]),
                "vqa": _write_vqa(w, tmp, seed, image_size, sizes["vqa"]),
                "captions": _write_heldout_captions(w, tmp, seed, image_size, sizes["captions"]),
                "zeroshot": _write_zeroshot(w, tmp, seed, image_size, sizes["zeroshot"]),
                "arithmetic": _write_arithmetic(w, tmp / "eval" / "arithmetic", seed, image_size,
                                                sizes["arithmetic"])}
        from data_prep.devbench_world import write_devbench_sets  # it imports this module

        devbench = {f"n_{k}": sizes[f"devbench_{k}"] for k in ("vocab", "trog", "things")}
        write_devbench_sets(tmp / "eval" / "devbench", seed, image_size, **devbench)
        counts["devbench"] = devbench
        counts.update({k: sizes[k] for k in ("winoground", "vqa", "captions", "arithmetic")})
        counts["zeroshot"] = {attr: sizes["zeroshot"] for attr in ZEROSHOT}
        log("world", "eval sets: " + ", ".join(
            f"{k} {sum(v.values()) if isinstance(v, dict) else v}" for k, v in counts.items()))
        text_words = _write_text(w, tmp, seed, int(word_budget * (1 - caption_fraction)), eval_lines)
        log("world", f"text: {sum(text_words.values()):,} words in {len(text_words)} files")
        caption_words, n_images, levels = _write_captions(w, tmp, seed, image_size,
                                                          int(word_budget * caption_fraction))
        manifest = {
            "params": params, "heldout_compositions": sorted(f"{c} {s}" for c, s in heldout),
            "text_words": text_words, "caption_words": caption_words,
            "total_words": sum(text_words.values()) + caption_words, "train_images": n_images,
            "caption_levels": levels, "eval": counts, "eval_heldout_composition": held,
            "sha256": _world_digest(tmp),
        }
        write_json_atomic(tmp / "world.json", manifest)
    log("world", f"{manifest['total_words']:,} words ({caption_words:,} in {n_images:,} captions) -> {out_dir}")
    return manifest


WORLD_PARTS = ("captions", "eval", "images", "text")  # what the world writes, beside world.json


def _world_digest(root: Path) -> str:
    """sha256 over the world's files (each file's path and content hash, in path order): those
    under `WORLD_PARTS`, so neither world.json nor what the pipeline adds (`prepared/`) counts."""
    digest = hashlib.sha256()
    for p in sorted(f for part in WORLD_PARTS for f in (root / part).rglob("*")):
        if p.is_file():
            digest.update(str(p.relative_to(root)).encode() + hashlib.sha256(p.read_bytes()).digest())
    return digest.hexdigest()


def _add_arithmetic(out_dir: Path, manifest: dict, seed: int, image_size: int, n: int) -> dict:
    """Give a world written before the arithmetic set existed that set alone: `eval/arithmetic`
    appears whole (built aside, swapped in), nothing else is touched (training files keep their
    bytes and modification times, so no prepared stage is redone), and the manifest gains the
    set's counts and the new digest: the same manifest a fresh world of these parameters has."""
    log("world", f"{out_dir}: adding the arithmetic eval set, which this world predates; the rest stays as it is")
    w = World(choose_heldout(seed))
    with atomic_dir(out_dir / "eval" / "arithmetic") as tmp:
        held = _write_arithmetic(w, tmp, seed, image_size, n)
    manifest = {**manifest, "eval": {**manifest["eval"], "arithmetic": n},
                "eval_heldout_composition": {**manifest["eval_heldout_composition"], "arithmetic": held}}
    manifest["sha256"] = _world_digest(out_dir)
    write_json_atomic(out_dir / "world.json", manifest)
    return manifest


def _save_png(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _write_text_evals(root: Path, seed: int, sizes: dict[str, int]) -> tuple[dict, set[str]]:
    """BLiMP-format pairs per subtask and EWoK-format items per domain. Returns the counts and
    every sentence and context-target line of the full-size sets (whatever the scale was), which
    the text corpus then leaves out: so the items are new to the model, and the training text
    does not depend on `eval_scale`."""
    exclude: set[str] = set()
    counts: dict[str, dict[str, int]] = {"blimp": {}, "ewok": {}}
    for subtask in BLIMP:
        rows = blimp_rows(seed, subtask, max(sizes["blimp"], EVAL_SIZES["blimp"]))
        exclude.update(s for r in rows for s in (r["sentence_good"], r["sentence_bad"]))
        _write_jsonl(root / "eval" / "blimp" / f"{subtask}.jsonl", rows[:sizes["blimp"]])
        counts["blimp"][subtask] = sizes["blimp"]
    for domain in EWOK:
        rows = ewok_rows(seed, domain, max(sizes["ewok"], EVAL_SIZES["ewok"]))
        for r in rows:
            exclude |= ewok_lines(EwokItem(r["TemplateName"], r["Context1"], r["Context2"],
                                           r["Target1"], r["Target2"]))
        _write_jsonl(root / "eval" / "ewok" / f"{domain}.jsonl", rows[:sizes["ewok"]])
        counts["ewok"][domain] = sizes["ewok"]
    return counts, exclude


def _write_winoground(w: World, root: Path, seed: int, size: int, n: int) -> int:
    """`n` Winoground-format rows, two per item (a quarter of the items with a held-out
    composition), as the real set is used: item i shows image A with (caption A, caption B),
    then image B with (caption B, caption A), so caption_0 is always the true one and a model
    that ignores the image scores exactly half when it never ties. No two items share captions.
    babymm's layout (`image_key`: the PNG's stem) and the official one (`image_idx`: the row of
    `images/test.parquet`, `image_key`: its column, `image_0` or `image_1`, as in
    facebook/winoground) hold the same rows and image bytes. Returns the flagged rows."""
    rng = random.Random(f"winoground-{seed}")
    rows, official, images = [], [], []
    seen: set[frozenset[str]] = set()
    for i in range(n // 2):
        item = winoground_item(w, rng, heldout=i % 4 == 0)
        while frozenset((item.caption_a, item.caption_b)) in seen:  # every item once: distinct caption pairs
            item = winoground_item(w, rng, heldout=i % 4 == 0)
        seen.add(frozenset((item.caption_a, item.caption_b)))
        pngs = (render(item.scene_a, size, rng), render(item.scene_b, size, rng))
        heldout = any(w.is_heldout(o) for o in item.scene_a + item.scene_b)
        for j, (c0, c1) in enumerate([(item.caption_a, item.caption_b), (item.caption_b, item.caption_a)]):
            row = {"caption_0": c0, "caption_1": c1, "tag": item.tag, "secondary_tag": "",
                   "collapsed_tag": item.collapsed_tag, "image_idx": i, "image_key": f"image_{j}",
                   "heldout_composition": heldout}
            official.append(row)
            rows.append({**row, "image_key": f"wino_{i:05d}_{j}"})
            _save_png(root / "eval" / "winoground" / "images" / f"wino_{i:05d}_{j}.png", pngs[j])
        images.append({"id": i, "image_0": pngs[0], "image_1": pngs[1]})
    _write_jsonl(root / "eval" / "winoground" / "winoground.jsonl", rows)
    _write_jsonl(root / "eval" / OFFICIAL_DIR / "winoground" / "winoground.jsonl", official)
    _write_image_dataset(root / "eval" / OFFICIAL_DIR / "winoground" / "images", images)
    return sum(r["heldout_composition"] for r in rows)


def _write_image_dataset(images_dir: Path, rows: list[dict]) -> None:
    """`images_dir/test.parquet`, a Hugging Face dataset whose `split="test"` holds `rows`, PNG
    bytes as `datasets.Image()` columns (stored as given, so pixel for pixel babymm's files):
    what the official pipeline's `--images_path DIR --image_split test` loads and indexes."""
    import datasets
    import pyarrow.parquet as pq

    def feature(value: object) -> datasets.Image | datasets.Value:
        if isinstance(value, bytes):
            return datasets.Image()
        return datasets.Value("int64" if isinstance(value, int) else "string")

    features = datasets.Features({k: feature(v) for k, v in rows[0].items()})
    columns = {k: [{"bytes": r[k], "path": None} if isinstance(r[k], bytes) else r[k] for r in rows]
               for k in features}
    images_dir.mkdir(parents=True, exist_ok=True)
    # written by pyarrow, with the features in the schema's metadata: no progress bar, same bytes every time
    pq.write_table(datasets.Dataset.from_dict(columns, features=features).data.table, images_dir / "test.parquet")


def _write_vqa(w: World, root: Path, seed: int, size: int, n: int) -> int:
    """VQA-format items (a quarter of the images with a held-out composition), in babymm's layout
    (`vqa.json`, `images/<image_id>.png`) and the official one (`vqa.jsonl`, the same records;
    the image is row `idx_in_hf_dataset` of `images/test.parquet`, column `image`, as in
    HuggingFaceM4/VQAv2); returns how many use a held-out composition."""
    rng = random.Random(f"vqa-{seed}")
    items: list[dict] = []
    images: list[dict] = []
    while len(items) < n:
        objs = w.scene(rng, rng.choice([1, 2, 3]), heldout=len(items) % 4 == 0)
        made = question(objs, rng)
        if made is None:
            continue
        q, ans, kind = made
        image_id = f"vqa_{len(items):05d}"
        png = render(objs, size, rng)
        _save_png(root / "eval" / "vqa" / "images" / f"{image_id}.png", png)
        images.append({"image_id": image_id, "image": png})
        items.append({"idx_in_hf_dataset": len(items), "question": q, "target_ans": ans,
                      "distractors": distractors(ans, kind, rng), "image_id": image_id,
                      "question_id": len(items), "question_type": kind,
                      "heldout_composition": any(w.is_heldout(o) for o in objs)})
    (root / "eval" / "vqa" / "vqa.json").write_text(json.dumps(items, indent=1) + "\n")
    _write_jsonl(root / "eval" / OFFICIAL_DIR / "vqa" / "vqa.jsonl", items)
    _write_image_dataset(root / "eval" / OFFICIAL_DIR / "vqa" / "images", images)
    return sum(it["heldout_composition"] for it in items)


def _write_heldout_captions(w: World, root: Path, seed: int, size: int, n: int) -> int:
    """New image-caption pairs (levels 1-7; a fifth with a held-out composition) for retrieval
    and the gap metrics; returns how many use a held-out composition."""
    rng = random.Random(f"captions-{seed}")
    rows = []
    for i in range(n):
        level = rng.choices(range(1, 8), weights=LEVEL_WEIGHTS[:7])[0]
        objs, caption = w.caption(rng, level, heldout=i % 5 == 0)
        rel = f"images/{i:05d}.png"
        _save_png(root / "eval" / "captions" / rel, render(objs, size, rng))
        rows.append({"image": rel, "caption": caption, "level": level,
                     "heldout_composition": any(w.is_heldout(o) for o in objs)})
    _write_jsonl(root / "eval" / "captions" / "heldout.jsonl", rows)
    return sum(r["heldout_composition"] for r in rows)


def _write_zeroshot(w: World, root: Path, seed: int, size: int, n: int) -> dict[str, int]:
    """Zero-shot classification of one-object images, one file per attribute (`shape.jsonl`,
    `color.jsonl`: image, label, labels); returns how many items per file use a held-out
    composition."""
    held: dict[str, int] = {}
    for attr, classes in ZEROSHOT.items():
        rng = random.Random(f"zeroshot-{attr}-{seed}")
        rows = []
        for i in range(n):
            obj = zeroshot_object(w, rng, attr, i)
            rel = f"images/{attr}_{i:05d}.png"
            _save_png(root / "eval" / "zeroshot" / rel, render([obj], size, rng))
            rows.append({"image": rel, "label": getattr(obj, attr), "labels": classes,
                         "heldout_composition": w.is_heldout(obj)})
        _write_jsonl(root / "eval" / "zeroshot" / f"{attr}.jsonl", rows)
        held[attr] = sum(r["heldout_composition"] for r in rows)
    return held


ARITHMETIC_KINDS = {"color": 0, "shape": 1}  # the attribute an item swaps (in turn): its place in a (colour, shape) pair


def arithmetic_pair(w: World, rng: random.Random, kind: str, heldout: bool) -> tuple[tuple[str, str], tuple[str, str]]:
    """(source, target) (colour, shape) pairs that differ in `kind` only. With `heldout` the
    target is a held-out composition (every shape has one; so does its colour), made from an
    allowed source: "red circle" + (star - circle) -> "red star", never seen in training.
    Otherwise both are allowed compositions."""
    i = ARITHMETIC_KINDS[kind]

    def swaps(pair: tuple[str, str]) -> list[tuple[str, str]]:  # allowed pairs that differ from `pair` at i only
        return [p for p in w.allowed if p[1 - i] == pair[1 - i] and p[i] != pair[i]]

    if heldout:
        target = rng.choice(sorted(w.heldout))
        return rng.choice(swaps(target)), target
    source = rng.choice(w.allowed)
    return source, rng.choice(swaps(source))


def _write_arithmetic(w: World, out: Path, seed: int, size: int, n: int) -> int:
    """SIMAT-style multimodal arithmetic (Couairon et al. 2021, facebookresearch/SIMAT) in
    `out` (`eval/arithmetic`): `arithmetic.jsonl`, one transformation a line, and `images/`.

    Item i swaps the colour (even i: "red" -> "blue") or the shape (odd i: "circle" -> "star")
    of a one-object scene: `source` shows `source_caption` ("a red circle"), `target` shows
    `target_caption` ("a blue circle"), the source with `old` replaced by `new`, known by
    construction. The target's size and grid cell are drawn afresh, as SIMAT's targets are other
    photographs showing the changed triple: a model that matches layout rather than content
    gains nothing from it. A quarter of the items (i // 2 % 4 == 1) have a held-out composition
    as their target (`heldout_composition`); sources are always seen compositions.

    The retrieval database is every image of the set, sources and targets, as SIMAT retrieves
    among all its images (its eval.py stacks every triplets.csv image) minus the query's own;
    a retrieved image counts if it shows the target description (SIMAT: if OSCAR judges it to
    show the target caption), so any "blue circle" of the set is right, whatever its size.

    The delta's texts are `old` and `new`, the words alone ("red", "blue"), because SIMAT embeds
    the words alone (its encode.py tokenizes the bare words of transfos.csv's value and target
    columns) and subtracts their normalised text embeddings; the captions are there to read.
    Its own `random.Random("arithmetic-{seed}")`, so no other set changes, and a smaller
    `eval_scale` writes a prefix. Returns how many items have a held-out target."""
    rng = random.Random(f"arithmetic-{seed}")
    kinds = list(ARITHMETIC_KINDS)
    rows = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        heldout = (i // len(kinds)) % 4 == 1
        (c0, s0), (c1, s1) = arithmetic_pair(w, rng, kind, heldout)
        src = Obj(s0, c0, rng.choice(SIZES), rng.randrange(2), rng.randrange(2))
        tgt = Obj(s1, c1, rng.choice(SIZES), rng.randrange(2), rng.randrange(2))
        old, new = (c0, c1) if kind == "color" else (s0, s1)
        item = f"arith_{i:05d}"
        row = {"id": item, "kind": kind, "old": old, "new": new,
               "source": f"images/{item}_src.png", "source_caption": with_article(src.name),
               "target": f"images/{item}_tgt.png", "target_caption": with_article(tgt.name),
               "heldout_composition": w.is_heldout(tgt)}
        _save_png(out / row["source"], render([src], size, rng))
        _save_png(out / row["target"], render([tgt], size, rng))
        rows.append(row)
    _write_jsonl(out / "arithmetic.jsonl", rows)
    return sum(r["heldout_composition"] for r in rows)


def _write_text(w: World, root: Path, seed: int, budget: int, exclude: set[str]) -> dict[str, int]:
    """The text-only files, an equal share of `budget` words each; never an eval sentence or a
    held-out composition. Returns the words written per file."""
    rng = random.Random(f"text-{seed}")
    per_source = budget // len(TEXT_SOURCES)
    words: dict[str, int] = {}
    (root / "text").mkdir()
    for name, make in TEXT_SOURCES.items():
        lines, n = [], 0
        while True:
            line = make(rng)
            if line in exclude or not _in_text_ok(line, w.heldout):
                continue
            k = len(line.split())
            if n + k > per_source:
                break
            lines.append(line)
            n += k
        (root / "text" / f"{name}.train").write_text("\n".join(lines) + "\n")
        words[name] = n
    return words


def _write_captions(w: World, root: Path, seed: int, size: int, budget: int) -> tuple[int, int, dict]:
    """Training images with one caption each until the next would pass `budget` words.
    Returns (words, images, images per level)."""
    rng = random.Random(f"train-{seed}")
    rows, n = [], 0
    levels: dict[int, int] = {}
    bar = tqdm(total=budget, desc="[world] train images", unit="word", leave=False)
    while True:
        level = rng.choices(range(1, 9), weights=LEVEL_WEIGHTS)[0]
        objs, caption = w.caption(rng, level)
        k = len(caption.split())
        if n + k > budget:
            break
        i = len(rows)
        _save_png(root / "images" / "train" / f"{i:06d}.png", render(objs, size, rng))
        rows.append({"image": f"../images/train/{i:06d}.png", "caption": caption, "level": level})
        levels[level] = levels.get(level, 0) + 1
        n += k
        bar.update(k)
    bar.close()
    _write_jsonl(root / "captions" / "train.jsonl", rows)
    return n, len(rows), dict(sorted(levels.items()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("data/world"), help="directory to write the world to")
    p.add_argument("--word_budget", type=int, default=DEFAULT_BUDGET, help="training words: text + captions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image_size", type=int, default=32, help="image side in pixels")
    p.add_argument("--caption_fraction", type=float, default=0.4, help="share of the budget for captions")
    p.add_argument("--eval_scale", type=float, default=1.0,
                   help="multiply every eval set's size (at least 10 items each); part of the world's identity")
    p.add_argument("--overwrite", action="store_true", help="regenerate even if up to date")
    args = p.parse_args(argv)
    try:
        check_params(args.word_budget, args.image_size, args.caption_fraction, args.eval_scale)
    except ValueError as e:
        p.error(str(e))
    generate_world(args.out, args.word_budget, args.seed, args.image_size, args.caption_fraction,
                   eval_scale=args.eval_scale, overwrite=args.overwrite)
    return 0


if __name__ == "__main__":
    sys.exit(main())

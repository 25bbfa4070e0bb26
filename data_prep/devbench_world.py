"""DevBench-format sets of the built-in world, so that eval.devbench runs on world-trained models.

    python -m data_prep.devbench_world --out data/world/devbench --seed 0 [--image_size 64]

Writes the layout the official pipeline downloads (and eval.devbench reads):
    assets/lex-viz_vocab/   4 one-object images, one word: the shape ("star") or the colour ("red")
    assets/gram-trog/       4 images, one sentence: spatial relations ("the circle is above the
                            square" vs the other three arrangements), counts ("there are two stars"
                            vs one, three, four) and negation ("the triangle is not red" vs a red
                            triangle, a red and a non-red other shape), TROG's foil design
    assets/sem-things/      one-object images (manifest text1, image1)
    evals/sem-things/spose_similarity.mat   a "human" similarity: the fraction of the attributes
                            shape, colour and size two objects share (the world's ground truth)
Image 1 is always the match, as in DevBench. No children's choices exist for the world, so there
are no human.csv files and eval.devbench reports accuracy without a KL fit for the two choice tasks.
Only compositions the world allows in training are drawn (never its held-out colour-shape pairs),
since these sets test vocabulary and grammar, not compositional generalisation. Deterministic in
the seed and sizes.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from pathlib import Path

import numpy as np

from data_prep.world import (
    COLORS,
    NUMBERS,
    PLURAL,
    SHAPES,
    SIZES,
    Obj,
    World,
    choose_heldout,
    render,
)

CELLS = [(c, r) for c in (0, 1) for r in (0, 1)]
# a relation of p to q, and the cells (col, row) that realise it; the four are TROG's four pictures
ARRANGEMENTS = {
    "above": ((0, 0), (0, 1)), "below": ((0, 1), (0, 0)),
    "to the left of": ((0, 0), (1, 0)), "to the right of": ((1, 0), (0, 0)),
}
REVERSE = {"above": "below", "below": "above", "to the left of": "to the right of",
           "to the right of": "to the left of"}


def _write_task(task_dir: Path, rows: list[dict[str, str]], images: dict[str, bytes], columns: list[str]) -> None:
    """manifest.csv and the PNGs it names (paths relative to task_dir)."""
    (task_dir / "images").mkdir(parents=True, exist_ok=True)
    for rel, png in images.items():
        (task_dir / rel).write_bytes(png)
    with open(task_dir / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _trial(i: int, scenes: list[list[Obj]], text: str, size: int, rng: random.Random,
           images: dict[str, bytes]) -> dict[str, str]:
    """One manifest row of four rendered scenes, the first the match."""
    row = {"text1": text}
    for k, objs in enumerate(scenes, start=1):
        rel = f"images/{i:04d}-{k}.png"
        images[rel] = render(objs, size, rng)
        row[f"image{k}"] = rel
    return row


def _one(rng: random.Random, shape: str, color: str) -> list[Obj]:
    return [Obj(shape, color, rng.choice(SIZES), *rng.choice(CELLS))]


def vocab_trials(w: World, rng: random.Random, n: int, size: int) -> tuple[list[dict[str, str]], dict[str, bytes]]:
    """Even trials name a shape (four shapes, each in an allowed colour), odd ones a colour (four
    colours of one shape)."""
    rows, images = [], {}
    for i in range(n):
        if i % 2 == 0:
            shapes = rng.sample(SHAPES, 4)
            scenes = [_one(rng, s, rng.choice([c for c, s2 in w.allowed if s2 == s])) for s in shapes]
            text = shapes[0]
        else:
            shape = rng.choice(SHAPES)
            colors = rng.sample([c for c, s in w.allowed if s == shape], 4)
            scenes = [_one(rng, shape, c) for c in colors]
            text = colors[0]
        rows.append(_trial(i, scenes, text, size, rng, images))
    return rows, images


def _relation_trial(w: World, rng: random.Random) -> tuple[list[list[Obj]], str]:
    """"the S1 is REL the S2" in the four arrangements, the reversal first among the foils."""
    c1, s1 = rng.choice(w.allowed)
    c2, s2 = rng.choice([(c, s) for c, s in w.allowed if s != s1])
    z1, z2 = rng.choice(SIZES), rng.choice(SIZES)
    rel = rng.choice(list(ARRANGEMENTS))
    order = [rel, REVERSE[rel], *[r for r in ARRANGEMENTS if r not in (rel, REVERSE[rel])]]
    scenes = [[Obj(s1, c1, z1, *ARRANGEMENTS[r][0]), Obj(s2, c2, z2, *ARRANGEMENTS[r][1])] for r in order]
    return scenes, f"the {s1} is {rel} the {s2}"


def _count_trial(w: World, rng: random.Random) -> tuple[list[list[Obj]], str]:
    color, shape = rng.choice(w.allowed)
    k = rng.randint(1, 4)
    counts = [k, *rng.sample([j for j in range(1, 5) if j != k], 3)]
    scenes = [[Obj(shape, color, rng.choice(SIZES), *cell) for cell in rng.sample(CELLS, j)] for j in counts]
    text = f"there is one {shape}" if k == 1 else f"there are {NUMBERS[k - 1]} {PLURAL[shape]}"
    return scenes, text


def _negation_trial(w: World, rng: random.Random) -> tuple[list[list[Obj]], str]:
    """"the S is not C": S in another colour; foils: S in C, another shape in C, another shape in
    the other colour (each drawn from allowed compositions)."""
    for _ in range(100):
        s, other = rng.sample(SHAPES, 2)
        c, c2 = rng.sample(list(COLORS), 2)
        if all((x, y) not in w.heldout for x, y in [(c, s), (c2, s), (c, other), (c2, other)]):
            break
    scenes = [_one(rng, s, c2), _one(rng, s, c), _one(rng, other, c), _one(rng, other, c2)]
    return scenes, f"the {s} is not {c}"


def trog_trials(w: World, rng: random.Random, n: int, size: int) -> tuple[list[dict[str, str]], dict[str, bytes]]:
    """Relations, counts and negation in turn."""
    makers = [_relation_trial, _count_trial, _negation_trial]
    rows, images = [], {}
    for i in range(n):
        scenes, text = makers[i % 3](w, rng)
        rows.append(_trial(i, scenes, text, size, rng, images))
    return rows, images


def things_items(w: World, rng: random.Random, n: int) -> list[tuple[str, str, str]]:
    """n distinct (shape, colour, size) objects of allowed compositions."""
    pool = [(s, c, z) for c, s in w.allowed for z in SIZES]
    if n > len(pool):
        raise ValueError(f"n_things={n}: the world has only {len(pool)} distinct objects")
    return rng.sample(pool, n)


def attribute_similarity(items: list[tuple[str, str, str]]) -> np.ndarray:
    """(n, n) fraction of the three attributes (shape, colour, size) two objects share."""
    a = np.array(items)  # (n, 3)
    return (a[:, None, :] == a[None, :, :]).mean(axis=2)


def write_devbench_sets(out_dir: Path, seed: int = 0, image_size: int = 64, n_vocab: int = 60,
                        n_trog: int = 60, n_things: int = 40) -> Path:
    """Write the three sets under `out_dir` (assets/ and evals/, the official layout); returns it."""
    import scipy.io

    out_dir = Path(out_dir)
    w = World(choose_heldout(seed))
    assets = out_dir / "assets"
    cols4 = ["image1", "image2", "image3", "image4", "text1"]
    rows, images = vocab_trials(w, random.Random(f"{seed}-devbench-vocab"), n_vocab, image_size)
    _write_task(assets / "lex-viz_vocab", rows, images, cols4)
    rows, images = trog_trials(w, random.Random(f"{seed}-devbench-trog"), n_trog, image_size)
    _write_task(assets / "gram-trog", rows, images, cols4)

    rng = random.Random(f"{seed}-devbench-things")
    items = things_items(w, rng, n_things)
    images = {f"images/{i:04d}.png": render([Obj(s, c, z, *rng.choice(CELLS))], image_size, rng)
              for i, (s, c, z) in enumerate(items)}
    rows = [{"text1": f"{z} {c} {s}", "image1": rel} for (s, c, z), rel in zip(items, images, strict=True)]
    _write_task(assets / "sem-things", rows, images, ["text1", "image1"])
    (out_dir / "evals" / "sem-things").mkdir(parents=True, exist_ok=True)
    # MAT v4: no creation time in the header, so the same seed writes the same bytes
    scipy.io.savemat(out_dir / "evals" / "sem-things" / "spose_similarity.mat",
                     {"spose_sim": attribute_similarity(items)}, format="4")
    return out_dir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image_size", type=int, default=64)
    ap.add_argument("--n_vocab", type=int, default=60)
    ap.add_argument("--n_trog", type=int, default=60)
    ap.add_argument("--n_things", type=int, default=40)
    a = ap.parse_args(argv)
    out = write_devbench_sets(a.out, a.seed, a.image_size, a.n_vocab, a.n_trog, a.n_things)
    print(f"[devbench_world] wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

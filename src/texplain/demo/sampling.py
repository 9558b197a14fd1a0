"""How a seed becomes a scene: count, colour, size, positions, prop and captions, each from the scene's own streams.

One to three objects (:data:`COUNT_PROBABILITIES`) share a colour that does
not vanish into the background (:data:`CLASHING_COLOURS`) and a size; a
single object may have a prop of its background beside it, in another third
of the image. The captions are made from these facts (:mod:`texplain.demo.captions`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

from texplain.demo.captions import CaptionFacts, caption_scene
from texplain.demo.scenes import BACKGROUNDS, CLASSES, COLOURS, STREAM_CAPTIONS, STREAM_LAYOUT, Prop, Scene, SceneObject
from texplain.errors import TexplainError

CLASHING_COLOURS: dict[str, frozenset[str]] = {
    "water": frozenset({"blue"}),
    "grass": frozenset({"green"}),
    "sand": frozenset({"yellow"}),
    "snow": frozenset({"white"}),
    "sky": frozenset({"blue"}),
    "road": frozenset({"grey", "black"}),
    "indoor": frozenset({"brown"}),
}
"""Colours not drawn on a background because the object would vanish into it."""

SIZE_EXTENTS: dict[str, float] = {"small": 0.28, "medium": 0.4, "large": 0.55}
"""Object width as a fraction of the image width."""
SIZES_FOR_COUNT: dict[int, tuple[str, ...]] = {
    1: ("small", "medium", "large"),
    2: ("small", "medium"),
    3: ("small",),
}
COUNT_PROBABILITIES = (0.6, 0.25, 0.15)
EXTENT_JITTER = 0.08
EDGE_MARGIN = 0.02
P_PROP = 0.6

PROPS: dict[str, tuple[str, ...]] = {
    "water": ("rock",),
    "grass": ("tree", "flowers"),
    "sand": ("rock", "palm tree"),
    "snow": ("pine tree",),
    "sky": ("cloud", "sun"),
    "road": ("stop sign",),
    "indoor": ("window", "plant"),
}
PROP_EXTENTS: dict[str, float] = {
    "tree": 0.36,
    "flowers": 0.22,
    "rock": 0.22,
    "palm tree": 0.4,
    "pine tree": 0.36,
    "cloud": 0.36,
    "sun": 0.2,
    "stop sign": 0.26,
    "window": 0.26,
    "plant": 0.26,
}
HIGH_PROPS = frozenset({"cloud", "sun", "window"})
"""Props that hang in the upper part of the image rather than stand on the ground."""

THIRDS = ("left", "middle", "right")
MIN_SIZE = 32
SPLIT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def check_size(size: int) -> None:
    """Images smaller than MIN_SIZE lose the objects' shapes."""
    if not isinstance(size, int) or size < MIN_SIZE:
        raise TexplainError(f"image size must be an integer of at least {MIN_SIZE} pixels, got {size!r}")


def check_names(names: Iterable[str], known: Sequence[str], what: str) -> tuple[str, ...]:
    """The names as a tuple, each known and none twice; a lone string is one name."""
    names = (names,) if isinstance(names, str) else tuple(names)
    for name in names:
        if name not in known:
            raise TexplainError(f"unknown {what} {name!r}; choose from {', '.join(known)}")
    if len(set(names)) != len(names):
        raise TexplainError(f"each {what} may be named once, got {', '.join(names)}")
    if not names:
        raise TexplainError(f"at least one {what} is needed")
    return names


def check_count(n: int, classes: Sequence[str], what: str) -> None:
    """Every class must appear at least once."""
    if not isinstance(n, int) or n < len(classes):
        raise TexplainError(f"{what} must be at least the number of classes ({len(classes)}), got {n!r}")


def check_seed(seed: int) -> None:
    """Seeds feed numpy's SeedSequence, which takes non-negative integers only."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TexplainError(f"seed must be a non-negative integer, got {seed!r}")


def _check_captions(n_captions: int) -> None:
    """A scene needs at least one caption."""
    if not isinstance(n_captions, int) or n_captions < 1:
        raise TexplainError(f"captions per image must be a positive integer, got {n_captions!r}")


def _third(x: float) -> str:
    """Which third of the image a horizontal position falls in."""
    return THIRDS[min(int(x * 3), 2)]


def _place_objects(
    rng: np.random.Generator, count: int, extent: float, background: str
) -> list[tuple[float, float]]:
    """Centres for ``count`` objects: one per column, jittered, fully inside the image."""
    low, high = extent / 2 + EDGE_MARGIN, 1 - extent / 2 - EDGE_MARGIN
    y_range = (0.3, 0.7) if background == "sky" else (0.45, 0.7)
    centres = []
    for column in range(count):
        x = (column + rng.uniform(0.3, 0.7)) / count
        y = rng.uniform(*y_range)
        centres.append((float(np.clip(x, low, high)), float(np.clip(y, low, high))))
    return centres


def _sample_prop(rng: np.random.Generator, background: str, object_x: float) -> Prop:
    """A prop of the background, in a third of the image that the single object is not in."""
    kind = PROPS[background][int(rng.integers(len(PROPS[background])))]
    free = [third for third in THIRDS if third != _third(object_x)]
    third = THIRDS.index(free[int(rng.integers(len(free)))])
    x = (third + rng.uniform(0.35, 0.65)) / 3
    y = rng.uniform(0.14, 0.28) if kind in HIGH_PROPS else rng.uniform(0.45, 0.62)
    return Prop(kind=kind, x=float(x), y=float(y), extent=PROP_EXTENTS[kind])


def make_scene(
    label: str,
    background: str,
    seed: int,
    size: int = 64,
    split: str = "train",
    planted: str | None = None,
    n_captions: int = 5,
) -> Scene:
    """One scene of class ``label`` on ``background``; colour, size, count and layout follow from ``seed``."""
    check_names([label], CLASSES, "class")
    check_names([background], BACKGROUNDS, "background")
    check_size(size)
    check_seed(seed)
    _check_captions(n_captions)
    if not SPLIT_NAME.match(split):
        raise TexplainError(f"split name must be letters, digits, '_' or '-', got {split!r}")
    rng = np.random.default_rng([seed, STREAM_LAYOUT])
    count = int(rng.choice(len(COUNT_PROBABILITIES), p=COUNT_PROBABILITIES)) + 1
    colours = [name for name in COLOURS if name not in CLASHING_COLOURS[background]]
    colour = colours[int(rng.integers(len(colours)))]
    size_word = SIZES_FOR_COUNT[count][int(rng.integers(len(SIZES_FOR_COUNT[count])))]
    extent = SIZE_EXTENTS[size_word] * (1 + rng.uniform(-EXTENT_JITTER, EXTENT_JITTER))
    objects = tuple(
        SceneObject(label, colour, size_word, x, y, float(extent), int(rng.choice((-1, 1))))
        for x, y in _place_objects(rng, count, extent, background)
    )
    single = count == 1
    prop = _sample_prop(rng, background, objects[0].x) if single and rng.random() < P_PROP else None
    facts = CaptionFacts(
        kind=label,
        count=count,
        colour=colour,
        size=size_word,
        background=background,
        prop=prop.kind if prop else None,
        position=_third(objects[0].x) if single else None,
    )
    captions = caption_scene(facts, np.random.default_rng([seed, STREAM_CAPTIONS]), n_captions)
    return Scene(objects, background, int(seed), size, captions, label, split, prop, planted)


def scene_seeds(rng: np.random.Generator, n: int) -> list[int]:
    """Independent per-scene seeds drawn from a data set's generator."""
    return [int(seed) for seed in rng.integers(0, 2**62, size=n)]

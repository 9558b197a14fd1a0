"""A procedurally generated, captioned synthetic world for the offline demo and tests.

Each image is a scene: one to three drawn objects of one class (bird, fish,
dog, cat, car, boat, plane), sharing a colour and a size, on a textured
background (water, grass, sand, snow, sky, road, indoor), perhaps with a
background prop (a tree, a cloud, a window, ...), plus pixel noise so that no
two images are identical. Every scene carries several natural captions made
from its facts by :mod:`texplain.data.world_captions`.

Two kinds of data sets come out of it:

* :func:`make_caption_world`: random objects on random backgrounds, to train
  the translator and pretrain the small language model (no shortcut).
* :func:`make_shortcut_split`: a Waterbirds-like labelled train/test split.
  Each class has a *planted* background (:data:`PLANTED_BACKGROUNDS`): in
  train a fraction ``bias`` of each class sits on its planted background, in
  test every class × background group is the same size. The default split is
  bird, car and dog, planted on water, snow and sand.

A scene is a frozen :class:`Scene`: everything about it is fixed by its
fields, so ``render()`` is a pure function and the same seed always gives the
same pixels and captions. ``render_background_only()`` draws the same scene
without its objects (same texture, same prop, same noise: the paper's Only-BG
test) and ``foreground_mask()`` says which pixels the objects cover; outside
the mask the two renders are identical.

Objects are drawn at twice the resolution and box-downsampled, so edges are
antialiased; the mask is every pixel that an object touches at all.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from texplain.data.world_captions import BACKGROUND_WORDS, CaptionFacts, caption_scene
from texplain.errors import TexplainError

__all__ = [
    "BACKGROUNDS",
    "BACKGROUND_WORDS",
    "CLASSES",
    "COLOURS",
    "DEFAULT_SHORTCUT_CLASSES",
    "PLANTED_BACKGROUNDS",
    "Prop",
    "Scene",
    "SceneObject",
    "make_caption_world",
    "make_scene",
    "make_shortcut_split",
    "planted_background",
    "write_world",
]

CLASSES = ("bird", "fish", "dog", "cat", "car", "boat", "plane")
BACKGROUNDS = ("water", "grass", "sand", "snow", "sky", "road", "indoor")

PLANTED_BACKGROUNDS: dict[str, str] = {
    "bird": "water",
    "car": "snow",
    "dog": "sand",
    "cat": "indoor",
    "fish": "grass",
    "boat": "road",
    "plane": "sky",
}
"""Each class's shortcut background in :func:`make_shortcut_split`; one class per background."""

DEFAULT_SHORTCUT_CLASSES = ("bird", "car", "dog")

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (210, 40, 40),
    "blue": (40, 80, 210),
    "green": (40, 160, 60),
    "yellow": (235, 205, 40),
    "orange": (240, 130, 30),
    "purple": (130, 60, 170),
    "white": (245, 245, 245),
    "black": (30, 30, 30),
    "brown": (120, 75, 40),
    "pink": (240, 130, 180),
    "grey": (130, 130, 130),
}
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
SUPERSAMPLE = 2
NOISE_SIGMA = 5.0
COLOUR_JITTER = 12.0
MIN_SIZE = 32
SPLIT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")

STREAM_LAYOUT, STREAM_TEXTURE, STREAM_NOISE, STREAM_CAPTIONS = range(4)
"""Independent random streams of one scene seed, so that changing one part leaves the others alone."""

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class SceneObject:
    """One drawn object; positions and width are fractions of the image side."""

    kind: str
    colour: str
    size: str
    x: float
    y: float
    extent: float
    facing: int


@dataclass(frozen=True)
class Prop:
    """A background detail (tree, cloud, window, ...): part of the background, not of the mask."""

    kind: str
    x: float
    y: float
    extent: float


@dataclass(frozen=True)
class Scene:
    """One image of the synthetic world, fully determined by its fields.

    ``label`` is the objects' class; ``planted`` is that class's planted
    background in a shortcut split and ``None`` elsewhere.
    """

    objects: tuple[SceneObject, ...]
    background: str
    seed: int
    size: int
    captions: tuple[str, ...]
    label: str
    split: str
    prop: Prop | None = None
    planted: str | None = None

    @property
    def group(self) -> str:
        """The Waterbirds-style group, ``"class|background"``."""
        return f"{self.label}|{self.background}"

    def render(self) -> Image.Image:
        """The scene as a ``size`` x ``size`` RGB image."""
        background, foreground, alpha = _layers(self)
        composite = background * (1.0 - alpha[..., None]) + foreground
        return _finish(composite, self.seed)

    def render_background_only(self) -> Image.Image:
        """The same scene with the objects left out: what the classifier could use besides them."""
        background, _, _ = _layers(self)
        return _finish(background, self.seed)

    def foreground_mask(self) -> np.ndarray:
        """Bool array (size, size): True where any object covers the pixel at all."""
        _, _, alpha = _layers(self)
        return alpha > 0


# ----------------------------------------------------------------------------
# Validation


def _check_size(size: int) -> None:
    """Images smaller than MIN_SIZE lose the objects' shapes."""
    if not isinstance(size, int) or size < MIN_SIZE:
        raise TexplainError(f"image size must be an integer of at least {MIN_SIZE} pixels, got {size!r}")


def _check_names(names: Iterable[str], known: Sequence[str], what: str) -> tuple[str, ...]:
    """The names as a tuple, each known and none twice."""
    names = tuple(names)
    for name in names:
        if name not in known:
            raise TexplainError(f"unknown {what} {name!r}; choose from {', '.join(known)}")
    if len(set(names)) != len(names):
        raise TexplainError(f"each {what} may be named once, got {', '.join(names)}")
    if not names:
        raise TexplainError(f"at least one {what} is needed")
    return names


def _check_count(n: int, classes: Sequence[str], what: str) -> None:
    """Every class must appear at least once."""
    if not isinstance(n, int) or n < len(classes):
        raise TexplainError(f"{what} must be at least the number of classes ({len(classes)}), got {n!r}")


def _check_captions(n_captions: int) -> None:
    """A scene needs at least one caption."""
    if not isinstance(n_captions, int) or n_captions < 1:
        raise TexplainError(f"captions per image must be a positive integer, got {n_captions!r}")


def planted_background(cls: str) -> str:
    """The background that ``make_shortcut_split`` plants under class ``cls`` in training."""
    _check_names([cls], CLASSES, "class")
    return PLANTED_BACKGROUNDS[cls]


# ----------------------------------------------------------------------------
# Scene sampling


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
    _check_names([label], CLASSES, "class")
    _check_names([background], BACKGROUNDS, "background")
    _check_size(size)
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


def _scene_seeds(rng: np.random.Generator, n: int) -> list[int]:
    """Independent per-scene seeds drawn from a data set's generator."""
    return [int(seed) for seed in rng.integers(0, 2**62, size=n)]


def _balanced_labels(rng: np.random.Generator, classes: Sequence[str], n: int) -> list[str]:
    """``n`` class labels, as equal in number as ``n`` allows, in random order."""
    labels = [classes[i % len(classes)] for i in range(n)]
    return [labels[i] for i in rng.permutation(n)]


def make_caption_world(
    n: int,
    seed: int = 0,
    size: int = 64,
    n_captions: int = 5,
    classes: Sequence[str] = CLASSES,
    backgrounds: Sequence[str] = BACKGROUNDS,
    split: str = "train",
) -> list[Scene]:
    """``n`` captioned scenes: classes balanced, backgrounds uniform and independent of the class.

    For training the translator and pretraining the language model: no
    background predicts the class, so nothing here teaches a shortcut.
    """
    classes = _check_names(classes, CLASSES, "class")
    backgrounds = _check_names(backgrounds, BACKGROUNDS, "background")
    _check_count(n, classes, "number of images")
    _check_size(size)
    rng = np.random.default_rng(seed)
    labels = _balanced_labels(rng, classes, n)
    places = [backgrounds[i] for i in rng.integers(len(backgrounds), size=n)]
    return [
        make_scene(label, place, scene_seed, size, split, None, n_captions)
        for label, place, scene_seed in zip(labels, places, _scene_seeds(rng, n))
    ]


def _spread(rng: np.random.Generator, n: int, names: Sequence[str]) -> list[str]:
    """``n`` names, each ``n // len(names)`` times and the remainder on randomly chosen names."""
    base, extra = divmod(n, len(names))
    lucky = set(rng.choice(len(names), size=extra, replace=False).tolist())
    return [name for i, name in enumerate(names) for _ in range(base + (i in lucky))]


def _groups(
    rng: np.random.Generator,
    classes: Sequence[str],
    backgrounds: Sequence[str],
    n: int,
    bias: float | None,
) -> list[tuple[str, str]]:
    """(class, background) pairs for one split, stratified rather than sampled.

    With ``bias`` each class puts exactly ``round(bias * n_class)`` items on
    its planted background and spreads the rest evenly over the split's other
    backgrounds; with ``None`` every group gets an equal share. Stratifying
    makes the realised bias equal the requested one instead of scattering
    around it. The pairs come back in random order.
    """
    pairs = []
    per_class = Counter(_spread(rng, n, classes))
    for cls in classes:
        n_class = per_class[cls]
        if bias is None:
            places = _spread(rng, n_class, backgrounds)
        else:
            planted = PLANTED_BACKGROUNDS[cls]
            n_planted = round(bias * n_class)
            others = [name for name in backgrounds if name != planted]
            places = [planted] * n_planted + _spread(rng, n_class - n_planted, others)
        pairs.extend((cls, place) for place in places)
    return [pairs[i] for i in rng.permutation(len(pairs))]

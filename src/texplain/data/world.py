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
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from texplain.atomic import write_text, writing
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


def _check_count(n: int, classes: Sequence[str], what: str) -> None:
    """Every class must appear at least once."""
    if not isinstance(n, int) or n < len(classes):
        raise TexplainError(f"{what} must be at least the number of classes ({len(classes)}), got {n!r}")


def _check_seed(seed: int) -> None:
    """Seeds feed numpy's SeedSequence, which takes non-negative integers only."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TexplainError(f"seed must be a non-negative integer, got {seed!r}")


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
    _check_seed(seed)
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
    _check_seed(seed)
    rng = np.random.default_rng(seed)
    labels = [str(label) for label in rng.permutation(_spread(rng, n, classes))]
    places = [backgrounds[i] for i in rng.integers(len(backgrounds), size=n)]
    return [
        make_scene(label, place, scene_seed, size, split, None, n_captions)
        for label, place, scene_seed in zip(labels, places, _scene_seeds(rng, n), strict=True)
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


def make_shortcut_split(
    classes: Sequence[str] = DEFAULT_SHORTCUT_CLASSES,
    backgrounds: Sequence[str] | None = None,
    n_train: int = 900,
    n_test: int = 450,
    bias: float | None = 0.95,
    seed: int = 0,
    size: int = 64,
    balanced: bool = False,
    n_captions: int = 5,
) -> list[Scene]:
    """A Waterbirds-like labelled split: the train scenes, then the test scenes.

    The label is the objects' class. In train, a fraction ``bias`` of each
    class sits on its planted background (:data:`PLANTED_BACKGROUNDS`) and
    the rest is spread evenly over the split's other backgrounds; in test
    every class x background group has (about) the same size. ``bias=None`` or
    ``balanced=True`` makes train balanced too: the control experiment.
    ``backgrounds`` defaults to the classes' planted backgrounds and must
    contain them. Classes are balanced in both splits.
    """
    classes = _check_names(classes, CLASSES, "class")
    if backgrounds is None:
        backgrounds = [PLANTED_BACKGROUNDS[cls] for cls in classes]
    backgrounds = _check_names(backgrounds, BACKGROUNDS, "background")
    if len(backgrounds) < 2:
        raise TexplainError("a shortcut split needs at least two backgrounds")
    for cls in classes:
        if PLANTED_BACKGROUNDS[cls] not in backgrounds:
            raise TexplainError(
                f"class {cls!r} needs its planted background {PLANTED_BACKGROUNDS[cls]!r} among the backgrounds"
            )
    if bias is not None and not (isinstance(bias, (int, float)) and 0 <= bias <= 1):
        raise TexplainError(f"bias must be between 0 and 1 (or None for a balanced split), got {bias!r}")
    _check_count(n_train, classes, "n_train")
    _check_count(n_test, classes, "n_test")
    _check_size(size)
    _check_seed(seed)
    rng = np.random.default_rng(seed)
    scenes = []
    for split, n, split_bias in (("train", n_train, None if balanced else bias), ("test", n_test, None)):
        pairs = _groups(rng, classes, backgrounds, n, split_bias)
        scenes.extend(
            make_scene(cls, place, scene_seed, size, split, PLANTED_BACKGROUNDS[cls], n_captions)
            for (cls, place), scene_seed in zip(pairs, _scene_seeds(rng, n), strict=True)
        )
    return scenes


# ----------------------------------------------------------------------------
# Drawing


class _Pen:
    """Draws shapes given in a unit box (x, y in [-1, 1], y down, facing right).

    The box is centred on (``cx``, ``cy``) pixels and ``half`` pixels from
    centre to side; ``facing=-1`` mirrors it. Every shape goes to the colour
    canvas and, when there is one, as full coverage to the alpha canvas.
    """

    def __init__(
        self,
        colour: ImageDraw.ImageDraw,
        alpha: ImageDraw.ImageDraw | None,
        cx: float,
        cy: float,
        half: float,
        facing: int = 1,
    ):
        self.colour, self.alpha = colour, alpha
        self.cx, self.cy, self.half, self.facing = cx, cy, half, facing

    def _xy(self, x: float, y: float) -> tuple[float, float]:
        """Pixel coordinates of a unit-box point."""
        return self.cx + self.facing * x * self.half, self.cy + y * self.half

    def _both(self, method: str, shape: object, fill: RGB, **kwargs: object) -> None:
        """Call one ImageDraw method on the colour canvas and, opaque, on the alpha canvas."""
        getattr(self.colour, method)(shape, fill=fill, **kwargs)
        if self.alpha is not None:
            getattr(self.alpha, method)(shape, fill=255, **kwargs)

    def polygon(self, points: Sequence[tuple[float, float]], fill: RGB) -> None:
        """A filled polygon through unit-box points."""
        self._both("polygon", [self._xy(x, y) for x, y in points], fill)

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: RGB) -> None:
        """A filled axis-aligned rectangle between two unit-box corners."""
        self.polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], fill)

    def ellipse(self, x: float, y: float, rx: float, ry: float, fill: RGB) -> None:
        """A filled ellipse centred at (x, y) with unit-box radii."""
        px, py = self._xy(x, y)
        box = (px - rx * self.half, py - ry * self.half, px + rx * self.half, py + ry * self.half)
        self._both("ellipse", box, fill)

    def line(self, points: Sequence[tuple[float, float]], fill: RGB, width: float) -> None:
        """A polyline whose width is in unit-box units."""
        pixels = max(1, round(width * self.half))
        self._both("line", [self._xy(x, y) for x, y in points], fill, width=pixels, joint="curve")


def _detail(colour: RGB) -> RGB:
    """A second tone of the body colour for wings, fins and ears: darker, or lighter on dark bodies."""
    if sum(colour) > 180:
        return tuple(int(c * 0.6) for c in colour)  # type: ignore[return-value]
    return tuple(min(255, c + 80) for c in colour)  # type: ignore[return-value]


def _eye(colour: RGB) -> RGB:
    """Black eyes, white on dark bodies."""
    return (20, 20, 20) if sum(colour) > 180 else (240, 240, 240)


BEAK = (245, 165, 20)
LEGS = (200, 120, 30)
GLASS = (185, 220, 240)
TYRE = (25, 25, 25)
HUB = (170, 170, 170)
SAIL = (250, 250, 245)
WOOD = (100, 65, 35)
LEAF = (40, 125, 45)


def _draw_bird(pen: _Pen, colour: RGB) -> None:
    """Side view: oval body, round head, beak, wing, tail and two legs."""
    pen.polygon([(-0.55, -0.05), (-1.0, -0.3), (-0.95, 0.2), (-0.5, 0.15)], _detail(colour))
    pen.line([(-0.05, 0.3), (-0.12, 0.75)], LEGS, 0.08)
    pen.line([(0.12, 0.3), (0.12, 0.75)], LEGS, 0.08)
    pen.ellipse(-0.1, 0.05, 0.55, 0.33, colour)
    pen.ellipse(0.45, -0.32, 0.25, 0.25, colour)
    pen.polygon([(0.64, -0.42), (0.98, -0.3), (0.64, -0.2)], BEAK)
    pen.ellipse(-0.15, 0.0, 0.35, 0.16, _detail(colour))
    pen.ellipse(0.53, -0.37, 0.07, 0.07, _eye(colour))


def _draw_fish(pen: _Pen, colour: RGB) -> None:
    """Side view: long oval body, forked tail, fins, gill and eye."""
    pen.polygon([(-0.45, 0.0), (-1.0, -0.45), (-0.85, 0.0), (-1.0, 0.45)], _detail(colour))
    pen.polygon([(-0.15, -0.3), (0.15, -0.6), (0.35, -0.28)], _detail(colour))
    pen.polygon([(0.0, 0.3), (0.15, 0.5), (0.3, 0.28)], _detail(colour))
    pen.ellipse(0.08, 0.0, 0.62, 0.36, colour)
    pen.line([(0.38, -0.22), (0.32, 0.0), (0.38, 0.22)], _detail(colour), 0.05)
    pen.ellipse(0.5, -0.08, 0.07, 0.07, _eye(colour))


def _draw_dog(pen: _Pen, colour: RGB) -> None:
    """Standing side view: long body on four legs, raised tail, head with snout and floppy ear."""
    for x in (-0.5, -0.32, 0.18, 0.36):
        pen.rect(x - 0.07, 0.05, x + 0.07, 0.65, colour)
    pen.line([(-0.58, -0.05), (-0.85, -0.45)], colour, 0.1)
    pen.ellipse(-0.08, 0.0, 0.58, 0.26, colour)
    pen.polygon([(0.2, -0.1), (0.45, -0.45), (0.62, -0.3), (0.42, 0.05)], colour)
    pen.ellipse(0.55, -0.38, 0.22, 0.2, colour)
    pen.ellipse(0.8, -0.3, 0.17, 0.1, colour)
    pen.ellipse(0.96, -0.32, 0.05, 0.05, (20, 20, 20))
    pen.ellipse(0.44, -0.3, 0.09, 0.2, _detail(colour))
    pen.ellipse(0.6, -0.44, 0.05, 0.05, _eye(colour))


def _draw_cat(pen: _Pen, colour: RGB) -> None:
    """Sitting front view: tall body, round head with two pointed ears, curled tail."""
    pen.line([(-0.3, 0.62), (-0.7, 0.6), (-0.85, 0.3), (-0.8, -0.05)], colour, 0.1)
    pen.ellipse(-0.05, 0.25, 0.38, 0.45, colour)
    pen.ellipse(0.12, 0.66, 0.2, 0.08, colour)
    pen.polygon([(-0.15, -0.55), (-0.1, -0.95), (0.08, -0.65)], colour)
    pen.polygon([(0.16, -0.65), (0.34, -0.95), (0.4, -0.55)], colour)
    pen.ellipse(0.12, -0.42, 0.3, 0.27, colour)
    pen.polygon([(-0.08, -0.62), (-0.06, -0.82), (0.03, -0.66)], _detail(colour))
    pen.polygon([(0.21, -0.66), (0.31, -0.82), (0.33, -0.62)], _detail(colour))
    pen.ellipse(0.02, -0.46, 0.06, 0.06, _eye(colour))
    pen.ellipse(0.22, -0.46, 0.06, 0.06, _eye(colour))
    pen.ellipse(0.12, -0.34, 0.05, 0.035, (230, 120, 150))


def _draw_car(pen: _Pen, colour: RGB) -> None:
    """Side view: low body, cabin with two windows, two wheels, headlight."""
    pen.polygon([(-1.0, 0.0), (-0.9, -0.12), (0.7, -0.12), (1.0, 0.05), (1.0, 0.35), (-1.0, 0.35)], colour)
    pen.polygon([(-0.55, -0.1), (-0.35, -0.5), (0.3, -0.5), (0.55, -0.1)], colour)
    pen.polygon([(-0.45, -0.14), (-0.3, -0.44), (-0.05, -0.44), (-0.05, -0.14)], GLASS)
    pen.polygon([(0.03, -0.14), (0.03, -0.44), (0.25, -0.44), (0.44, -0.14)], GLASS)
    for x in (-0.55, 0.55):
        pen.ellipse(x, 0.38, 0.22, 0.22, TYRE)
        pen.ellipse(x, 0.38, 0.09, 0.09, HUB)
    pen.ellipse(0.93, 0.08, 0.06, 0.05, (250, 230, 120))


def _draw_boat(pen: _Pen, colour: RGB) -> None:
    """Side view: tapered hull with a stripe, mast and two white sails."""
    pen.line([(0.0, 0.1), (0.0, -0.9)], WOOD, 0.06)
    pen.polygon([(0.06, -0.85), (0.06, 0.0), (0.72, 0.0)], SAIL)
    pen.polygon([(-0.06, -0.65), (-0.06, 0.0), (-0.55, 0.0)], SAIL)
    pen.polygon([(-1.0, 0.08), (1.0, 0.08), (0.72, 0.5), (-0.75, 0.5)], colour)
    pen.line([(-0.92, 0.2), (0.9, 0.2)], _detail(colour), 0.06)


def _draw_plane(pen: _Pen, colour: RGB) -> None:
    """Seen from above: long thin fuselage, two swept wings, tail plane, cockpit."""
    wing = _detail(colour)
    for side in (-1, 1):
        pen.polygon([(0.2, 0.0), (-0.2, side * 0.95), (-0.42, side * 0.95), (-0.2, 0.0)], wing)
        pen.polygon([(-0.68, 0.0), (-0.88, side * 0.38), (-0.98, side * 0.38), (-0.9, 0.0)], wing)
    pen.ellipse(0.0, 0.0, 0.97, 0.14, colour)
    pen.ellipse(0.75, 0.0, 0.1, 0.07, GLASS)


SHAPES: dict[str, Callable[[_Pen, RGB], None]] = {
    "bird": _draw_bird,
    "fish": _draw_fish,
    "dog": _draw_dog,
    "cat": _draw_cat,
    "car": _draw_car,
    "boat": _draw_boat,
    "plane": _draw_plane,
}


def _draw_tree(pen: _Pen) -> None:
    """Trunk under a round two-tone canopy."""
    pen.rect(-0.1, 0.2, 0.1, 1.0, WOOD)
    pen.ellipse(0.0, -0.25, 0.7, 0.6, (35, 105, 40))
    pen.ellipse(-0.2, -0.35, 0.35, 0.3, (55, 130, 50))


def _draw_flowers(pen: _Pen) -> None:
    """Four stems with coloured heads."""
    heads = [(-0.6, 0.2), (-0.2, -0.1), (0.2, 0.25), (0.6, 0.0)]
    colours = [(230, 60, 80), (250, 220, 60), (250, 250, 250), (200, 90, 220)]
    for (x, y), colour in zip(heads, colours, strict=True):
        pen.line([(x, y), (x, 1.0)], LEAF, 0.08)
        pen.ellipse(x, y, 0.17, 0.17, colour)


def _draw_rock(pen: _Pen) -> None:
    """A grey boulder with a highlight."""
    pen.ellipse(0.0, 0.2, 0.9, 0.55, (120, 118, 112))
    pen.ellipse(-0.25, 0.05, 0.4, 0.2, (155, 153, 146))


def _draw_palm_tree(pen: _Pen) -> None:
    """Leaning trunk with five fronds."""
    pen.polygon([(-0.05, 1.0), (0.12, 1.0), (0.22, -0.3), (0.1, -0.3)], (130, 90, 45))
    for tip in [(-0.7, -0.1), (-0.5, -0.7), (0.2, -0.95), (0.8, -0.6), (0.9, -0.1)]:
        pen.line([(0.16, -0.35), tip], LEAF, 0.15)


def _draw_pine_tree(pen: _Pen) -> None:
    """Three stacked dark triangles on a short trunk."""
    pen.rect(-0.08, 0.7, 0.08, 1.0, WOOD)
    for base, top, half_width in ((0.75, 0.05, 0.7), (0.3, -0.45, 0.55), (-0.15, -0.95, 0.4)):
        pen.polygon([(-half_width, base), (half_width, base), (0.0, top)], (25, 90, 50))


def _draw_cloud(pen: _Pen) -> None:
    """Overlapping white puffs."""
    white = (250, 250, 252)
    for x, y, rx, ry in ((-0.45, 0.1, 0.45, 0.28), (0.0, -0.1, 0.5, 0.38), (0.45, 0.1, 0.45, 0.28)):
        pen.ellipse(x, y, rx, ry, white)
    pen.ellipse(0.0, 0.2, 0.9, 0.2, white)


def _draw_sun(pen: _Pen) -> None:
    """A yellow disc with eight rays."""
    yellow = (255, 220, 60)
    for angle in np.arange(8) * np.pi / 4:
        c, s = float(np.cos(angle)), float(np.sin(angle))
        pen.line([(0.7 * c, 0.7 * s), (0.98 * c, 0.98 * s)], yellow, 0.1)
    pen.ellipse(0.0, 0.0, 0.58, 0.58, yellow)


def _draw_stop_sign(pen: _Pen) -> None:
    """A red octagon with a white bar on a grey pole."""
    pen.rect(-0.06, -0.1, 0.06, 1.0, (150, 150, 150))
    angles = np.arange(8) * np.pi / 4 + np.pi / 8
    pen.polygon([(0.55 * float(np.cos(a)), -0.45 + 0.55 * float(np.sin(a))) for a in angles], (200, 30, 30))
    pen.rect(-0.32, -0.52, 0.32, -0.38, (245, 245, 245))


def _draw_window(pen: _Pen) -> None:
    """A white frame around pale blue glass, split in four."""
    pen.rect(-0.9, -0.9, 0.9, 0.9, (245, 245, 245))
    pen.rect(-0.75, -0.75, 0.75, 0.75, (160, 205, 240))
    pen.line([(0.0, -0.8), (0.0, 0.8)], (245, 245, 245), 0.12)
    pen.line([(-0.8, 0.0), (0.8, 0.0)], (245, 245, 245), 0.12)


def _draw_plant(pen: _Pen) -> None:
    """A terracotta pot with leaves."""
    pen.polygon([(-0.4, 0.3), (0.4, 0.3), (0.3, 1.0), (-0.3, 1.0)], (190, 90, 50))
    for x, y, rx, ry in ((0.0, -0.25, 0.22, 0.55), (-0.38, -0.02, 0.32, 0.16), (0.38, -0.02, 0.32, 0.16)):
        pen.ellipse(x, y, rx, ry, LEAF)


PROP_SHAPES: dict[str, Callable[[_Pen], None]] = {
    "tree": _draw_tree,
    "flowers": _draw_flowers,
    "rock": _draw_rock,
    "palm tree": _draw_palm_tree,
    "pine tree": _draw_pine_tree,
    "cloud": _draw_cloud,
    "sun": _draw_sun,
    "stop sign": _draw_stop_sign,
    "window": _draw_window,
    "plant": _draw_plant,
}


# ----------------------------------------------------------------------------
# Background textures: each takes the texture stream and the side, returns (side, side, 3) float32


def _grid(side: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates in [0, 1), each (side, side)."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    return yy, xx


def _tone(rng: np.random.Generator, base: RGB) -> np.ndarray:
    """The base colour with a little random shift, (3,)."""
    return np.asarray(base, np.float32) + rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, 3).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, side: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1], (side, side): a cells x cells grid upsampled bilinearly."""
    coarse = Image.fromarray(rng.random((cells, cells)).astype(np.float32), mode="F")
    return np.asarray(coarse.resize((side, side), Image.Resampling.BILINEAR))


def _water(rng: np.random.Generator, side: int) -> np.ndarray:
    """Blue with rolling horizontal waves and pale crests."""
    yy, xx = _grid(side)
    bands, wiggles, sway = rng.uniform(6, 9), rng.uniform(1.5, 3), rng.uniform(0.05, 0.12)
    phase = rng.uniform(0, 2 * np.pi, 2)
    wave = np.sin(2 * np.pi * (yy * bands + sway * np.sin(2 * np.pi * xx * wiggles + phase[0])) + phase[1])
    crest = np.clip((wave - 0.8) / 0.2, 0, 1)
    return (
        _tone(rng, (35, 95, 175))
        + 22 * wave[..., None] * np.float32([0.6, 0.8, 1.0])
        + crest[..., None] * np.float32([90, 90, 70])
    )


def _grass(rng: np.random.Generator, side: int) -> np.ndarray:
    """Green with short vertical blades of lighter and darker green."""
    blade = max(3, side // 12)
    streaks = np.repeat(rng.standard_normal((side // blade + 2, side)).astype(np.float32), blade, axis=0)
    rows = np.arange(side)[:, None] + rng.integers(0, blade, side)[None, :]
    blades = np.take_along_axis(streaks, rows, axis=0)
    return _tone(rng, (70, 150, 55)) + blades[..., None] * np.float32([14, 28, 10])


def _sand(rng: np.random.Generator, side: int) -> np.ndarray:
    """Pale yellow-brown with diagonal ripples, fine grain and dark and light specks."""
    yy, xx = _grid(side)
    angle, ripples = rng.uniform(0, np.pi), rng.uniform(4, 7)
    ripple = np.sin(2 * np.pi * ripples * (xx * np.cos(angle) + yy * np.sin(angle)) + rng.uniform(0, 2 * np.pi))
    specks = rng.random((side, side))
    grain = rng.normal(0, 6, (side, side)).astype(np.float32)
    image = _tone(rng, (222, 196, 140)) + (8 * ripple + grain)[..., None]
    image[specks < 0.06] -= np.float32([60, 55, 45])
    image[specks > 0.97] += np.float32([25, 25, 25])
    return image


def _snow(rng: np.random.Generator, side: int) -> np.ndarray:
    """Near white with soft bluish shadows and sparse blue-grey flakes."""
    shadow = _smooth_noise(rng, side, 4)
    flakes = rng.random((side, side)) < 0.03
    image = _tone(rng, (238, 242, 250)) - shadow[..., None] * np.float32([35, 22, 6])
    image[flakes] -= np.float32([45, 32, 12])
    return image


def _sky(rng: np.random.Generator, side: int) -> np.ndarray:
    """A smooth gradient from deep blue at the top to pale blue at the horizon, with haze."""
    yy, _ = _grid(side)
    top, bottom = _tone(rng, (70, 130, 220)), _tone(rng, (175, 210, 245))
    haze = _smooth_noise(rng, side, 3)
    return top + (bottom - top) * yy[..., None] + 12 * haze[..., None]


def _road(rng: np.random.Generator, side: int) -> np.ndarray:
    """Grainy dark asphalt with a pavement strip, a white edge line and dashed lane marks."""
    yy, xx = _grid(side)
    grain = rng.normal(0, 14, (side, side)).astype(np.float32)[..., None]
    edge, lane, dashes = rng.uniform(0.1, 0.16), rng.uniform(0.42, 0.55), rng.uniform(3, 5)
    lane_colour = (235, 235, 235) if rng.random() < 0.5 else (235, 200, 50)
    half_line = max(0.025, 1.0 / side)
    image = _tone(rng, (85, 85, 90)) + grain
    image[yy < edge] = _tone(rng, (165, 162, 155)) + grain[yy < edge] * 0.5
    image[np.abs(yy - edge - half_line) < half_line] = np.float32([240, 240, 240])
    dashed = (np.abs(yy - lane) < half_line) & ((xx * dashes + rng.uniform()) % 1 < 0.55)
    image[dashed] = np.asarray(lane_colour, np.float32)
    return image


def _indoor(rng: np.random.Generator, side: int) -> np.ndarray:
    """A striped beige wall over a wooden plank floor, split by a white skirting board."""
    yy, xx = _grid(side)
    horizon = rng.uniform(0.5, 0.6)
    period = int(rng.integers(5, 10))
    stripes = ((np.arange(side) + rng.integers(period)) // period) % 2
    wall = _tone(rng, (215, 200, 175)) - 14 * stripes[None, :, None].astype(np.float32)
    plank = rng.uniform(0.08, 0.12)
    depth = np.clip(yy - horizon, 0, None)
    tones = rng.normal(0, 10, int(1 / plank) + 2).astype(np.float32)
    floor = _tone(rng, (150, 100, 60)) + tones[(depth / plank).astype(int)][..., None]
    floor[(depth % plank) < 1.0 / side] -= 45
    image = np.where((yy < horizon)[..., None], wall, floor)
    image[np.abs(yy - horizon) < max(0.02, 1.0 / side)] = np.float32([240, 238, 232])
    return image


TEXTURES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "water": _water,
    "grass": _grass,
    "sand": _sand,
    "snow": _snow,
    "sky": _sky,
    "road": _road,
    "indoor": _indoor,
}


# ----------------------------------------------------------------------------
# Rendering


def _background(scene: Scene) -> np.ndarray:
    """The textured background with its prop, (size, size, 3) float32 in [0, 255]."""
    texture = TEXTURES[scene.background](np.random.default_rng([scene.seed, STREAM_TEXTURE]), scene.size)
    image = Image.fromarray(np.clip(texture, 0, 255).round().astype(np.uint8), mode="RGB")
    if scene.prop is not None:
        prop = scene.prop
        pen = _Pen(ImageDraw.Draw(image), None, prop.x * scene.size, prop.y * scene.size, prop.extent * scene.size / 2)
        PROP_SHAPES[prop.kind](pen)
    return np.asarray(image, np.float32)


def _layers(scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Background (H, W, 3), premultiplied foreground (H, W, 3) and coverage (H, W) in [0, 1].

    The objects are drawn at ``SUPERSAMPLE`` times the size on black and
    box-downsampled, so the foreground is already multiplied by its coverage
    and ``background * (1 - alpha) + foreground`` is the antialiased image.
    """
    big = scene.size * SUPERSAMPLE
    colour, alpha = Image.new("RGB", (big, big)), Image.new("L", (big, big))
    colour_draw, alpha_draw = ImageDraw.Draw(colour), ImageDraw.Draw(alpha)
    for obj in scene.objects:
        pen = _Pen(colour_draw, alpha_draw, obj.x * big, obj.y * big, obj.extent * big / 2, obj.facing)
        SHAPES[obj.kind](pen, COLOURS[obj.colour])
    foreground = np.asarray(colour.reduce(SUPERSAMPLE), np.float32)
    coverage = np.asarray(alpha.reduce(SUPERSAMPLE), np.float32) / 255.0
    return _background(scene), foreground, coverage


def _finish(image: np.ndarray, seed: int) -> Image.Image:
    """Add the scene's pixel noise (same for every render of a scene) and quantise to an RGB image."""
    noise = np.random.default_rng([seed, STREAM_NOISE]).standard_normal(image.shape, dtype=np.float32)
    pixels = np.clip(image + NOISE_SIGMA * noise, 0, 255).round().astype(np.uint8)
    return Image.fromarray(pixels, mode="RGB")


# ----------------------------------------------------------------------------
# Writing


def _write_jsonl(path: Path, rows: Iterable[dict[str, object]]) -> None:
    """One JSON object per line, UTF-8, written atomically."""
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    write_text(path, text)


def _save_png(image: Image.Image, path: Path) -> None:
    """A fast-compressed PNG, written atomically."""
    with writing(path) as tmp:
        image.save(tmp, format="PNG", compress_level=1)


def write_world(scenes: Sequence[Scene], folder: str | Path, background_only: bool = False) -> Path:
    """Write the scenes as PNGs plus ``captions.jsonl`` and ``labels.jsonl``; return the folder.

    Images go to ``images/<split>/<index>_<class>_<background>.png``;
    ``captions.jsonl`` has ``{"image", "caption", "split"}`` per caption and
    ``labels.jsonl`` has ``{"path", "label", "split", "group", "background",
    "planted"}`` per image, paths relative to ``folder``. Every file is
    written atomically and the JSONL files last, so they never name a missing
    image. With ``background_only`` the images are the Only-BG renders and no
    captions are written, since the captions describe objects that are gone.
    """
    if not scenes:
        raise TexplainError("there are no scenes to write")
    folder = Path(folder)
    captions, labels = [], []
    for index, scene in enumerate(scenes):
        relative = f"images/{scene.split}/{index:06d}_{scene.label}_{scene.background}.png"
        image = scene.render_background_only() if background_only else scene.render()
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        _save_png(image, folder / relative)
        captions.extend({"image": relative, "caption": caption, "split": scene.split} for caption in scene.captions)
        labels.append(
            {
                "path": relative,
                "label": scene.label,
                "split": scene.split,
                "group": scene.group,
                "background": scene.background,
                "planted": scene.planted,
            }
        )
    if not background_only:
        _write_jsonl(folder / "captions.jsonl", captions)
    _write_jsonl(folder / "labels.jsonl", labels)
    return folder

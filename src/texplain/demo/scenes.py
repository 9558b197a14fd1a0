"""A scene of the synthetic world: the objects of one class on a textured background, and how it renders.

Each image is a scene: one to three drawn objects of one class (bird, fish,
dog, cat, car, boat, plane), sharing a colour and a size, on a textured
background (water, grass, sand, snow, sky, road, indoor), perhaps with a
background prop (a tree, a cloud, a window, ...), plus pixel noise so that no
two images are identical. Every scene carries several natural captions made
from its facts (:mod:`texplain.demo.captions`); how a seed becomes a scene is
:mod:`texplain.demo.sampling`, the data sets made of scenes :mod:`texplain.demo.splits`.

A scene is a frozen :class:`Scene`: everything about it is fixed by its
fields, so ``render()`` is a pure function and the same seed always gives the
same pixels. ``render_background_only()`` draws the same scene without its
objects (same texture, same prop, same noise: the paper's Only-BG test) and
``foreground_mask()`` says which pixels the objects cover; outside the mask
the two renders are identical.

Objects are drawn at twice the resolution and box-downsampled, so edges are
antialiased; the mask is every pixel that an object touches at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from texplain.demo.shapes import PROP_SHAPES, SHAPES, Pen
from texplain.demo.textures import TEXTURES

CLASSES = ("bird", "fish", "dog", "cat", "car", "boat", "plane")
BACKGROUNDS = ("water", "grass", "sand", "snow", "sky", "road", "indoor")

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
"""The objects' colours by the name their captions use."""

SUPERSAMPLE = 2
"""Objects are drawn at this many times the size and box-downsampled: antialiased edges."""
NOISE_SIGMA = 5.0
"""Pixel noise (per channel, in 8-bit levels) so that no two images are identical."""

STREAM_LAYOUT, STREAM_TEXTURE, STREAM_NOISE, STREAM_CAPTIONS = range(4)
"""Independent random streams of one scene seed, so that changing one part leaves the others alone."""


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


def _background(scene: Scene) -> np.ndarray:
    """The textured background with its prop, (size, size, 3) float32 in [0, 255]."""
    texture = TEXTURES[scene.background](np.random.default_rng([scene.seed, STREAM_TEXTURE]), scene.size)
    image = Image.fromarray(np.clip(texture, 0, 255).round().astype(np.uint8), mode="RGB")
    if scene.prop is not None:
        prop = scene.prop
        pen = Pen(ImageDraw.Draw(image), None, prop.x * scene.size, prop.y * scene.size, prop.extent * scene.size / 2)
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
        pen = Pen(colour_draw, alpha_draw, obj.x * big, obj.y * big, obj.extent * big / 2, obj.facing)
        SHAPES[obj.kind](pen, COLOURS[obj.colour])
    foreground = np.asarray(colour.reduce(SUPERSAMPLE), np.float32)
    coverage = np.asarray(alpha.reduce(SUPERSAMPLE), np.float32) / 255.0
    return _background(scene), foreground, coverage


def _finish(image: np.ndarray, seed: int) -> Image.Image:
    """Add the scene's pixel noise (same for every render of a scene) and quantise to an RGB image."""
    noise = np.random.default_rng([seed, STREAM_NOISE]).standard_normal(image.shape, dtype=np.float32)
    pixels = np.clip(image + NOISE_SIGMA * noise, 0, 255).round().astype(np.uint8)
    return Image.fromarray(pixels, mode="RGB")

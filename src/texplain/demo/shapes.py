"""The synthetic world's shapes: seven kinds of object and ten background props, drawn with a :class:`Pen`.

Every shape is drawn in a unit box (x, y in [-1, 1], y down, facing right);
the pen places, scales and mirrors it, and draws each part on the colour
canvas and, for objects, as full coverage on the alpha canvas too (what the
foreground mask and the Only-BG render are made from).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from PIL import ImageDraw

RGB = tuple[int, int, int]


class Pen:
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


def _draw_bird(pen: Pen, colour: RGB) -> None:
    """Side view: oval body, round head, beak, wing, tail and two legs."""
    pen.polygon([(-0.55, -0.05), (-1.0, -0.3), (-0.95, 0.2), (-0.5, 0.15)], _detail(colour))
    pen.line([(-0.05, 0.3), (-0.12, 0.75)], LEGS, 0.08)
    pen.line([(0.12, 0.3), (0.12, 0.75)], LEGS, 0.08)
    pen.ellipse(-0.1, 0.05, 0.55, 0.33, colour)
    pen.ellipse(0.45, -0.32, 0.25, 0.25, colour)
    pen.polygon([(0.64, -0.42), (0.98, -0.3), (0.64, -0.2)], BEAK)
    pen.ellipse(-0.15, 0.0, 0.35, 0.16, _detail(colour))
    pen.ellipse(0.53, -0.37, 0.07, 0.07, _eye(colour))


def _draw_fish(pen: Pen, colour: RGB) -> None:
    """Side view: long oval body, forked tail, fins, gill and eye."""
    pen.polygon([(-0.45, 0.0), (-1.0, -0.45), (-0.85, 0.0), (-1.0, 0.45)], _detail(colour))
    pen.polygon([(-0.15, -0.3), (0.15, -0.6), (0.35, -0.28)], _detail(colour))
    pen.polygon([(0.0, 0.3), (0.15, 0.5), (0.3, 0.28)], _detail(colour))
    pen.ellipse(0.08, 0.0, 0.62, 0.36, colour)
    pen.line([(0.38, -0.22), (0.32, 0.0), (0.38, 0.22)], _detail(colour), 0.05)
    pen.ellipse(0.5, -0.08, 0.07, 0.07, _eye(colour))


def _draw_dog(pen: Pen, colour: RGB) -> None:
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


def _draw_cat(pen: Pen, colour: RGB) -> None:
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


def _draw_car(pen: Pen, colour: RGB) -> None:
    """Side view: low body, cabin with two windows, two wheels, headlight."""
    pen.polygon([(-1.0, 0.0), (-0.9, -0.12), (0.7, -0.12), (1.0, 0.05), (1.0, 0.35), (-1.0, 0.35)], colour)
    pen.polygon([(-0.55, -0.1), (-0.35, -0.5), (0.3, -0.5), (0.55, -0.1)], colour)
    pen.polygon([(-0.45, -0.14), (-0.3, -0.44), (-0.05, -0.44), (-0.05, -0.14)], GLASS)
    pen.polygon([(0.03, -0.14), (0.03, -0.44), (0.25, -0.44), (0.44, -0.14)], GLASS)
    for x in (-0.55, 0.55):
        pen.ellipse(x, 0.38, 0.22, 0.22, TYRE)
        pen.ellipse(x, 0.38, 0.09, 0.09, HUB)
    pen.ellipse(0.93, 0.08, 0.06, 0.05, (250, 230, 120))


def _draw_boat(pen: Pen, colour: RGB) -> None:
    """Side view: tapered hull with a stripe, mast and two white sails."""
    pen.line([(0.0, 0.1), (0.0, -0.9)], WOOD, 0.06)
    pen.polygon([(0.06, -0.85), (0.06, 0.0), (0.72, 0.0)], SAIL)
    pen.polygon([(-0.06, -0.65), (-0.06, 0.0), (-0.55, 0.0)], SAIL)
    pen.polygon([(-1.0, 0.08), (1.0, 0.08), (0.72, 0.5), (-0.75, 0.5)], colour)
    pen.line([(-0.92, 0.2), (0.9, 0.2)], _detail(colour), 0.06)


def _draw_plane(pen: Pen, colour: RGB) -> None:
    """Seen from above: long thin fuselage, two swept wings, tail plane, cockpit."""
    wing = _detail(colour)
    for side in (-1, 1):
        pen.polygon([(0.2, 0.0), (-0.2, side * 0.95), (-0.42, side * 0.95), (-0.2, 0.0)], wing)
        pen.polygon([(-0.68, 0.0), (-0.88, side * 0.38), (-0.98, side * 0.38), (-0.9, 0.0)], wing)
    pen.ellipse(0.0, 0.0, 0.97, 0.14, colour)
    pen.ellipse(0.75, 0.0, 0.1, 0.07, GLASS)


SHAPES: dict[str, Callable[[Pen, RGB], None]] = {
    "bird": _draw_bird,
    "fish": _draw_fish,
    "dog": _draw_dog,
    "cat": _draw_cat,
    "car": _draw_car,
    "boat": _draw_boat,
    "plane": _draw_plane,
}


def _draw_tree(pen: Pen) -> None:
    """Trunk under a round two-tone canopy."""
    pen.rect(-0.1, 0.2, 0.1, 1.0, WOOD)
    pen.ellipse(0.0, -0.25, 0.7, 0.6, (35, 105, 40))
    pen.ellipse(-0.2, -0.35, 0.35, 0.3, (55, 130, 50))


def _draw_flowers(pen: Pen) -> None:
    """Four stems with coloured heads."""
    heads = [(-0.6, 0.2), (-0.2, -0.1), (0.2, 0.25), (0.6, 0.0)]
    colours = [(230, 60, 80), (250, 220, 60), (250, 250, 250), (200, 90, 220)]
    for (x, y), colour in zip(heads, colours, strict=True):
        pen.line([(x, y), (x, 1.0)], LEAF, 0.08)
        pen.ellipse(x, y, 0.17, 0.17, colour)


def _draw_rock(pen: Pen) -> None:
    """A grey boulder with a highlight."""
    pen.ellipse(0.0, 0.2, 0.9, 0.55, (120, 118, 112))
    pen.ellipse(-0.25, 0.05, 0.4, 0.2, (155, 153, 146))


def _draw_palm_tree(pen: Pen) -> None:
    """Leaning trunk with five fronds."""
    pen.polygon([(-0.05, 1.0), (0.12, 1.0), (0.22, -0.3), (0.1, -0.3)], (130, 90, 45))
    for tip in [(-0.7, -0.1), (-0.5, -0.7), (0.2, -0.95), (0.8, -0.6), (0.9, -0.1)]:
        pen.line([(0.16, -0.35), tip], LEAF, 0.15)


def _draw_pine_tree(pen: Pen) -> None:
    """Three stacked dark triangles on a short trunk."""
    pen.rect(-0.08, 0.7, 0.08, 1.0, WOOD)
    for base, top, half_width in ((0.75, 0.05, 0.7), (0.3, -0.45, 0.55), (-0.15, -0.95, 0.4)):
        pen.polygon([(-half_width, base), (half_width, base), (0.0, top)], (25, 90, 50))


def _draw_cloud(pen: Pen) -> None:
    """Overlapping white puffs."""
    white = (250, 250, 252)
    for x, y, rx, ry in ((-0.45, 0.1, 0.45, 0.28), (0.0, -0.1, 0.5, 0.38), (0.45, 0.1, 0.45, 0.28)):
        pen.ellipse(x, y, rx, ry, white)
    pen.ellipse(0.0, 0.2, 0.9, 0.2, white)


def _draw_sun(pen: Pen) -> None:
    """A yellow disc with eight rays."""
    yellow = (255, 220, 60)
    for angle in np.arange(8) * np.pi / 4:
        c, s = float(np.cos(angle)), float(np.sin(angle))
        pen.line([(0.7 * c, 0.7 * s), (0.98 * c, 0.98 * s)], yellow, 0.1)
    pen.ellipse(0.0, 0.0, 0.58, 0.58, yellow)


def _draw_stop_sign(pen: Pen) -> None:
    """A red octagon with a white bar on a grey pole."""
    pen.rect(-0.06, -0.1, 0.06, 1.0, (150, 150, 150))
    angles = np.arange(8) * np.pi / 4 + np.pi / 8
    pen.polygon([(0.55 * float(np.cos(a)), -0.45 + 0.55 * float(np.sin(a))) for a in angles], (200, 30, 30))
    pen.rect(-0.32, -0.52, 0.32, -0.38, (245, 245, 245))


def _draw_window(pen: Pen) -> None:
    """A white frame around pale blue glass, split in four."""
    pen.rect(-0.9, -0.9, 0.9, 0.9, (245, 245, 245))
    pen.rect(-0.75, -0.75, 0.75, 0.75, (160, 205, 240))
    pen.line([(0.0, -0.8), (0.0, 0.8)], (245, 245, 245), 0.12)
    pen.line([(-0.8, 0.0), (0.8, 0.0)], (245, 245, 245), 0.12)


def _draw_plant(pen: Pen) -> None:
    """A terracotta pot with leaves."""
    pen.polygon([(-0.4, 0.3), (0.4, 0.3), (0.3, 1.0), (-0.3, 1.0)], (190, 90, 50))
    for x, y, rx, ry in ((0.0, -0.25, 0.22, 0.55), (-0.38, -0.02, 0.32, 0.16), (0.38, -0.02, 0.32, 0.16)):
        pen.ellipse(x, y, rx, ry, LEAF)


PROP_SHAPES: dict[str, Callable[[Pen], None]] = {
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

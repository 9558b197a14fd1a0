"""The synthetic world's seven background textures, each drawn from its own random stream.

Each takes the scene's texture stream and the image side and returns a
(side, side, 3) float32 array in about [0, 255]: the renderer adds the prop,
the objects and the noise (:mod:`texplain.demo.scenes`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from texplain.demo.shapes import RGB

COLOUR_JITTER = 12.0
"""How far (per channel) a texture's base colour may shift from one scene to the next."""


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

"""Word clouds: the dominant words of an explanation, drawn as one PNG.

A word's size is proportional to its frequency (``relative_scaling=1.0``), so
a word in half of the sampled sentences is drawn half as large as one in all
of them. Words the caller highlights (typically the predicted class's words)
are red; every other word takes a dark neutral colour, so a red word standing
small among large dark ones shows at a glance that the classifier's features
speak more about something other than the class.

Drawing is deterministic: the same frequencies, highlight and seed give a
byte-identical PNG, and the file appears atomically (written beside the target,
then renamed), so a reader never sees half an image.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from pathlib import Path
from random import Random
from typing import Any, Callable

from wordcloud import WordCloud

from texplain.atomic import writing
from texplain.errors import TexplainError
from texplain.text.words import rank_words

HIGHLIGHT_COLOUR = "#d62728"
"""Red for highlighted words."""

NEUTRAL_PALETTE: tuple[str, ...] = ("#222222", "#2e3440", "#3b4252", "#4c566a", "#1f3b57")
"""Dark greys and a slate blue: readable on white and never mistaken for the red."""


def _colour_function(highlight: frozenset[str]) -> Callable[..., str]:
    """A wordcloud ``color_func``: red for highlighted words, else a palette colour.

    The palette choice uses the cloud's own seeded ``random_state`` so the
    colours, like the layout, depend only on the seed.
    """

    def colour(word: str, random_state: Random, **_: Any) -> str:
        if word.lower() in highlight:
            return HIGHLIGHT_COLOUR
        return random_state.choice(NEUTRAL_PALETTE)

    return colour


def _drawable(frequencies: Mapping[str, float], path: Path) -> dict[str, float]:
    """Positive-frequency words in a fixed order (descending, then alphabetical).

    The order is fixed because wordcloud places words in the order it sorts
    them, and equal frequencies would otherwise follow the caller's dict order.
    """
    for word, value in frequencies.items():
        if not isinstance(value, numbers.Real) or math.isnan(value) or value < 0:
            raise TexplainError(
                f"{path}: frequency of {word!r} must be a number >= 0, got {value!r}"
            )
    ranked = rank_words({word: float(value) for word, value in frequencies.items() if value > 0})
    if not ranked:
        raise TexplainError(f"{path}: nothing to draw, no word has a positive frequency")
    return dict(ranked)


def draw_word_cloud(
    frequencies: Mapping[str, float],
    path: str | Path,
    highlight: Iterable[str] = (),
    width: int = 800,
    height: int = 400,
    seed: int = 0,
) -> Path:
    """Draw ``frequencies`` (word -> strength, e.g. fraction of sentences) as a PNG.

    Args:
        frequencies: Word strengths; only their ratios matter. Words with
            strength 0 are left out.
        path: Where the PNG goes; missing parent folders are created.
        highlight: Words to draw in red (case-insensitive), e.g. the class
            name; a single string is one word.
        width, height: Image size in pixels.
        seed: Fixes layout and colours.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TexplainError(
                f"{path}: word cloud {name} must be a positive integer, got {value!r}"
            )
    words = _drawable(frequencies, path)
    if isinstance(highlight, str):
        highlight = (highlight,)
    cloud = WordCloud(
        width=width,
        height=height,
        background_color="white",
        relative_scaling=1.0,
        random_state=seed,
        color_func=_colour_function(frozenset(word.lower() for word in highlight)),
    )
    try:
        cloud.generate_from_frequencies(words)
    except ValueError as error:
        raise TexplainError(f"{path}: cannot lay out the word cloud: {error}") from error
    with writing(path) as tmp:
        cloud.to_image().save(tmp, format="PNG")
    return path

"""The caption grammar of the synthetic world: scene facts in, varied sentences out.

A scene of the synthetic world (:mod:`texplain.demo.scenes`) is described by a
handful of facts: the object class, how many there are, their colour and size,
the background, an optional background prop (a tree, a cloud, a window) and,
for a single object, where it stands. This module turns those facts into short
natural captions such as "a small red bird standing on green grass next to a
tree" or "two blue fish swimming in the water".

The grammar is deliberately a real little language: determiners, size
synonyms, verbs that depend on the object and the place, several phrasings of
each place and several sentence frames. It keeps two promises that the
analysis relies on:

* every caption names the object by its class word (plural when there are
  several: "two birds", "three fish"), and
* every caption names the background by its canonical word,
  ``BACKGROUND_WORDS[background]`` ("water", "grass", ..., "room" for indoor).

Colour names are used verbatim, never through synonyms, so that colour words
can be counted too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BACKGROUND_WORDS: dict[str, str] = {
    "water": "water",
    "grass": "grass",
    "sand": "sand",
    "snow": "snow",
    "sky": "sky",
    "road": "road",
    "indoor": "room",
}
"""The one word by which each background is named in every caption; analysis looks for it."""

PLURALS: dict[str, str] = {
    "bird": "birds",
    "fish": "fish",
    "dog": "dogs",
    "cat": "cats",
    "car": "cars",
    "boat": "boats",
    "plane": "planes",
}
"""The class word for more than one object."""

NUMBER_WORDS: dict[int, str] = {1: "one", 2: "two", 3: "three"}

SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little", "tiny"),
    "medium": ("medium-sized",),
    "large": ("large", "big"),
}

PLACE_PHRASES: dict[str, tuple[str, ...]] = {
    "water": ("in the water", "on the water", "in the blue water", "on the calm water", "in the shallow water"),
    "grass": ("on the grass", "on green grass", "in the tall grass", "on a patch of grass", "on the grass of a field"),
    "sand": ("on the sand", "on the beach sand", "on yellow sand", "on the dry sand", "in the sand"),
    "snow": ("in the snow", "on the snow", "on white snow", "in the deep snow", "on fresh snow"),
    "sky": ("in the sky", "in the blue sky", "against the sky", "up in the clear sky", "high in the sky"),
    "road": ("on the road", "on an asphalt road", "on a quiet road", "along the road", "on the grey road"),
    "indoor": ("in a room", "inside a room", "in the living room", "on the floor of a room", "in an empty room"),
}
"""How each background is said; every phrase contains its ``BACKGROUND_WORDS`` word."""

CLASS_VERBS: dict[str, tuple[str, ...]] = {
    "bird": ("standing", "sitting", "resting"),
    "fish": ("lying", "resting"),
    "dog": ("standing", "walking", "playing"),
    "cat": ("sitting", "resting"),
    "car": ("parked", "standing"),
    "boat": ("resting", "sitting"),
    "plane": ("parked", "standing"),
}
PLACE_VERBS: dict[str, tuple[str, ...]] = {"sky": ("floating", "hovering")}
CLASS_PLACE_VERBS: dict[tuple[str, str], tuple[str, ...]] = {
    ("bird", "sky"): ("flying", "gliding"),
    ("bird", "water"): ("swimming", "floating", "standing"),
    ("fish", "water"): ("swimming",),
    ("dog", "water"): ("swimming", "standing"),
    ("plane", "sky"): ("flying",),
    ("boat", "water"): ("floating", "sailing"),
    ("car", "road"): ("driving", "parked"),
}
"""Verbs from the most specific rule that applies: (class, place), then place, then class."""

PROP_NOUNS: dict[str, str] = {
    "tree": "a tree",
    "flowers": "some flowers",
    "rock": "a rock",
    "palm tree": "a palm tree",
    "pine tree": "a pine tree",
    "cloud": "a cloud",
    "sun": "the sun",
    "stop sign": "a stop sign",
    "window": "a window",
    "plant": "a potted plant",
}
PROP_PREPOSITIONS = ("next to", "near", "beside")
POSITION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("on the left", "on the left side", "at the left of the picture"),
    "middle": ("in the middle", "in the center", "in the middle of the picture"),
    "right": ("on the right", "on the right side", "at the right of the picture"),
}

FRAMES = (
    "{np} {verb} {place}{extra}",
    "{np} {place}{extra}",
    "there {be} {np} {place}{extra}",
    "a photo of {np} {place}{extra}",
    "a picture of {np} {verb} {place}{extra}",
    "{np} {be} {verb} {place}{extra}",
    "{place} there {be} {np}{extra}",
    "an image showing {np} {place}{extra}",
    "a scene with {np} {verb} {place}{extra}",
)
"""Sentence frames; ``{extra}`` is empty or a leading-space prop or position phrase."""

P_COLOUR = 0.85
P_SIZE = 0.55
P_PROP = 0.45
P_POSITION = 0.3
P_ONE = 0.1
ATTEMPTS_PER_CAPTION = 20


@dataclass(frozen=True)
class CaptionFacts:
    """What a caption may say about a scene; everything in it is visible in the image."""

    kind: str
    count: int
    colour: str
    size: str
    background: str
    prop: str | None = None
    position: str | None = None


def class_word(kind: str, count: int) -> str:
    """The class name as captions use it: singular for one object, plural otherwise."""
    return kind if count == 1 else PLURALS[kind]


def _article(word: str) -> str:
    """'a' or 'an' for the word that follows."""
    return "an" if word[0] in "aeiou" else "a"


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    """One option, uniformly."""
    return options[int(rng.integers(len(options)))]


def _noun_phrase(facts: CaptionFacts, rng: np.random.Generator) -> str:
    """Determiner or number, optional size and colour, then the class word."""
    words = []
    if rng.random() < P_SIZE:
        words.append(_pick(rng, SIZE_WORDS[facts.size]))
    if rng.random() < P_COLOUR:
        words.append(facts.colour)
    words.append(class_word(facts.kind, facts.count))
    spell_number = facts.count > 1 or rng.random() < P_ONE
    determiner = NUMBER_WORDS[facts.count] if spell_number else _article(words[0])
    return " ".join([determiner, *words])


def _verb(facts: CaptionFacts, rng: np.random.Generator) -> str:
    """A verb that suits the object in that place."""
    options = (
        CLASS_PLACE_VERBS.get((facts.kind, facts.background))
        or PLACE_VERBS.get(facts.background)
        or CLASS_VERBS[facts.kind]
    )
    return _pick(rng, options)


def _extra(facts: CaptionFacts, rng: np.random.Generator) -> str:
    """Sometimes a prop phrase, sometimes a position phrase, often nothing."""
    parts = []
    if facts.prop is not None and rng.random() < P_PROP:
        parts.append(f"{_pick(rng, PROP_PREPOSITIONS)} {PROP_NOUNS[facts.prop]}")
    if facts.position is not None and rng.random() < P_POSITION:
        parts.append(_pick(rng, POSITION_PHRASES[facts.position]))
    return "".join(f" {part}" for part in parts)


def one_caption(facts: CaptionFacts, rng: np.random.Generator) -> str:
    """One sentence: a random frame filled with random phrasings of the facts."""
    frame = _pick(rng, FRAMES)
    return frame.format(
        np=_noun_phrase(facts, rng),
        verb=_verb(facts, rng),
        place=_pick(rng, PLACE_PHRASES[facts.background]),
        be="is" if facts.count == 1 else "are",
        extra=_extra(facts, rng),
    )


def caption_scene(facts: CaptionFacts, rng: np.random.Generator, n: int) -> tuple[str, ...]:
    """``n`` captions of one scene, distinct where the grammar allows it.

    Distinct captions give the language model more to learn from each image;
    after ``ATTEMPTS_PER_CAPTION * n`` draws the remainder may repeat.
    """
    captions: list[str] = []
    for _ in range(ATTEMPTS_PER_CAPTION * n):
        caption = one_caption(facts, rng)
        if caption not in captions:
            captions.append(caption)
        if len(captions) == n:
            return tuple(captions)
    while len(captions) < n:
        captions.append(one_caption(facts, rng))
    return tuple(captions)

"""From per-image word counts to what a class's explanations say.

A class's explanation pools the sentences of all its images (one
:class:`~texplain.words.WordCounter` merged over them). A word is a shortcut
suspect for a class when it is not the class's own word, is frequent in the
class, and is over-represented there compared with the other classes: a word
the LM says for every class (a size, "small"; a verb, "standing") says
nothing about this class's features.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from texplain.words import WordConfig, WordCounter

MIN_RATIO = 1.5
"""A suspect's frequency in its class must be at least this multiple of its mean frequency elsewhere."""


@dataclass
class WordScore:
    """One word of a class: its frequency there, its mean frequency in the other classes, their ratio."""

    word: str
    frequency: float
    elsewhere: float

    @property
    def ratio(self) -> float:
        return self.frequency / max(self.elsewhere, 1e-3)

    def to_json(self) -> dict:
        return {"word": self.word, "frequency": round(self.frequency, 4), "elsewhere": round(self.elsewhere, 4),
                "ratio": round(self.ratio, 2)}


def pool_counters(counters: Iterable[WordCounter], config: WordConfig | None = None) -> WordCounter:
    """Merge per-image counters into one: the class's pooled sentences."""
    pooled = WordCounter(config)
    for counter in counters:
        pooled.merge(counter)
    return pooled


def class_frequencies(by_class: Mapping[str, WordCounter]) -> dict[str, dict[str, float]]:
    """Per class, word → fraction of the class's sentences that contain it."""
    return {name: counter.frequencies() for name, counter in by_class.items()}


def suspects(
    frequencies: Mapping[str, Mapping[str, float]],
    name: str,
    own_words: Iterable[str],
    k: int = 3,
    min_ratio: float = MIN_RATIO,
) -> list[WordScore]:
    """The class's top-``k`` non-class words among those over-represented in it, by frequency."""
    own = set(own_words)
    others = [f for other, f in frequencies.items() if other != name]
    scores = [
        WordScore(word, freq, sum(f.get(word, 0.0) for f in others) / max(len(others), 1))
        for word, freq in frequencies[name].items()
        if word not in own
    ]
    kept = [s for s in scores if s.ratio >= min_ratio]
    return sorted(kept, key=lambda s: (-s.frequency, s.word))[:k]


def rank_of(frequencies: Mapping[str, float], word: str) -> int | None:
    """1-based rank of ``word`` by frequency, or None when it never appears."""
    for rank, candidate in enumerate(frequencies, start=1):
        if candidate == word:
            return rank
    return None

"""Which words are shortcut suspects: one rule for a class's pooled sentences and for one image's.

A word points at a shortcut when the features carry it and it is not the
class. Three tests make that precise, and every place that asks (the
analysis of a data set, the demo's summary, mitigation's sample selection)
uses them through this module:

* **not the class**: the class's vocabulary (:mod:`texplain.text.class_vocabulary`: its
  name and WordNet relatives) is merged into one entry named after the class
  (:class:`ClassMerge`), so "seagull" and "duck" count as "bird" and never as
  a suspect;
* **frequent**: in at least ``min_frequency`` of the sentences;
* **not the LM's own**: its odds of being said at least ``min_lift`` times
  those after the null prefix that says it least (the lift of :mod:`.lm_prior`).

For a class (:func:`rank_suspects`) a suspect must also be over-represented
against the other classes pooled *and* against the LM prior: both log-odds
z-scores (:func:`~texplain.statistics.compare_counts`) at least
``min_z``, the one against the prior the largest against any kind of null
prefix; suspects are ranked by the weaker of the two. For one image
(:func:`dominant_words`) there is nothing to compare against, so its words
are ranked by frequency.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from texplain.analysis.config import SuspectRule
from texplain.analysis.lm_prior import LMPrior, lift
from texplain.statistics import compare_counts, wilson_interval


class ClassMerge:
    """Merges a class's vocabulary into one entry named after the class.

    Sentences mentioning any vocabulary word were counted per class at
    explanation time (``class_mentions``), which gives the merged count
    exactly; a label outside the classifier's classes was not, and gets the
    count of its most frequent vocabulary word, a lower bound.
    """

    def __init__(self, name: str, vocabulary: frozenset[str], indexed: bool = True):
        self.name, self.vocabulary, self.indexed = name, vocabulary, indexed

    def __call__(self, counts: Mapping[str, int], mentions: Mapping[str, int]) -> dict[str, int]:
        """Per-word document counts with the vocabulary's words replaced by the class entry."""
        merged = {w: c for w, c in counts.items() if w not in self.vocabulary}
        own = mentions.get(self.name, 0) if self.indexed else max((counts.get(w, 0) for w in self.vocabulary), default=0)
        if own:
            merged[self.name] = own
        return merged

    def prior_counts(self, prior: LMPrior) -> list[dict[str, int]]:
        """Each prior sample's counts (one per kind of null prefix), this class's vocabulary merged the same way."""
        return [self(sample.counter.document_counts(), sample.mentions) for sample in prior.samples()]

    def prior_frequency(self, prior: LMPrior, word: str) -> float:
        """Smoothed prior frequency of ``word``; for the class entry, of any vocabulary word."""
        return prior.mention_frequency(word) if word == self.name else prior.frequency(word)


@dataclass
class Suspect:
    """A shortcut suspect of a class, with the evidence for it."""

    word: str
    frequency: float
    low: float
    high: float
    z_classes: float
    z_prior: float | None
    lift: float | None
    examples: list[str] = field(default_factory=list)

    @property
    def score(self) -> float:
        """The weaker of the two pieces of evidence: the smaller z."""
        return self.z_classes if self.z_prior is None else min(self.z_classes, self.z_prior)

    def to_json(self) -> dict:
        return {"word": self.word, "frequency": round(self.frequency, 4), "low": round(self.low, 4),
                "high": round(self.high, 4), "z_classes": round(self.z_classes, 3),
                "z_prior": None if self.z_prior is None else round(self.z_prior, 3),
                "lift": None if self.lift is None else round(self.lift, 3), "examples": self.examples}


def rank_suspects(
    counts: Mapping[str, int],
    n_sentences: int,
    rest: Mapping[str, int],
    merge: ClassMerge,
    prior: LMPrior | None,
    rule: SuspectRule,
) -> list[Suspect]:
    """A class's suspects, strongest evidence first (see the module docstring).

    counts: the class's merged document counts over ``n_sentences``
    sentences; rest: the other classes' merged counts, pooled.
    """
    if n_sentences == 0 or not rest:
        return []
    z_classes = {s.word: s.z for s in compare_counts(counts, rest)}
    z_prior: dict[str, float] = {}
    for sample in merge.prior_counts(prior) if prior is not None else []:  # the largest z over the kinds
        for s in compare_counts(counts, sample):
            z_prior[s.word] = max(s.z, z_prior.get(s.word, s.z))
    found = []
    for word, count in counts.items():
        frequency = count / n_sentences
        if word == merge.name or frequency < rule.min_frequency:
            continue
        word_lift = None if prior is None else lift(frequency, merge.prior_frequency(prior, word))
        suspect = Suspect(word, frequency, 0.0, 0.0, z_classes.get(word, 0.0), z_prior.get(word), word_lift)
        if suspect.score >= rule.min_z and (word_lift is None or word_lift >= rule.min_lift):
            found.append(suspect)
    found = sorted(found, key=lambda s: (-s.score, s.word))[: rule.limit]
    if found:
        low, high = wilson_interval([counts[s.word] for s in found], [n_sentences] * len(found), rule.confidence)
        for suspect, lo, hi in zip(found, low, high):
            suspect.low, suspect.high = float(lo), float(hi)
    return found


@dataclass(frozen=True)
class DominantWord:
    """A word that dominates one image's sentences: its frequency there and its lift over the LM prior."""

    word: str
    frequency: float
    lift: float


def dominant_words(
    counts: Mapping[str, int],
    n_sentences: int,
    merge: ClassMerge,
    prior: LMPrior | None,
    min_frequency: float,
    min_lift: float,
) -> list[DominantWord]:
    """One image's dominant words, most frequent first (ties by word); the class entry included.

    counts: the image's merged document counts (see :class:`ClassMerge`).
    Without a prior every lift is 1 and only the frequency test applies.
    """
    if n_sentences < 1:
        return []
    out = []
    for word, count in counts.items():
        frequency = count / n_sentences
        word_lift = 1.0 if prior is None else lift(frequency, merge.prior_frequency(prior, word))
        if frequency >= min_frequency and (prior is None or word_lift >= min_lift):
            out.append(DominantWord(word, frequency, word_lift))
    return sorted(out, key=lambda d: (-d.frequency, d.word))

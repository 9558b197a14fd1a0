"""Mitigation (paper Table 2), step one: explanations pick the training samples that lean on a shortcut.

Every training image is explained (N sentences). Its words are counted per
sentence, the class's vocabulary (:mod:`texplain.text.class_vocabulary`:
the name and its WordNet relatives) is merged into one entry named after the
class, and each word's lift over the LM's own prior
(:mod:`texplain.analysis.lm_prior`) is computed. The image's *dominant* words
are those in at least ``min_frequency`` of its sentences with a lift of at
least ``min_lift``, most frequent first (:mod:`texplain.analysis.suspects`).
Two rules then pick the samples, and the word behind which each is masked:

- ``not-class`` (the paper's): the first dominant word is not the class;
  that word is masked. It needs photos that are described by their class:
  on BAR, action photos are described by their actors and places ("man",
  "rock", "water"), so it picks 95% of train and masks the actor as often
  as the place.
- ``suspects``: the class's shortcut suspects are found first, from all of
  its training images pooled (:func:`~texplain.analysis.suspects.rank_suspects`:
  over-represented against the other classes and the LM prior, the same
  rule as ``texplain analyse``); a sample is picked when one of them is
  among its first ``top`` dominant words (or, with ``threshold``, in at
  least that fraction of its sentences), and the strongest such suspect is
  masked. A class with no suspect has no shortcut found: none of its
  samples is picked, and the report says so.

``auto`` (the default) takes ``suspects`` when the classes are rarely said:
when the median class is the first dominant word of fewer than half of its
own images, the paper's rule would pick most of the training set and tell
nothing apart. The rule taken, and why, is recorded. The next steps, masking the region behind the word and
fine-tuning, are :mod:`.masks` and the methods run by :mod:`.runner`.
"""

from __future__ import annotations

import logging
import os
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from texplain.analysis.lm_prior import LMPrior, explain_prior, null_features
from texplain.analysis.suspects import ClassMerge, DominantWord, dominant_words, rank_suspects
from texplain.errors import TexplainError
from texplain.generate.explain import explain_stream
from texplain.mitigation.config import SelectionConfig
from texplain.models.classifiers import Classifier
from texplain.models.config import ExtractionConfig
from texplain.models.features import FeatureStore, extract_features
from texplain.models.lm import FrozenLM
from texplain.models.translator import Translator
from texplain.text.class_vocabulary import class_mentions, class_vocabularies, word_index

log = logging.getLogger(__name__)


@dataclass
class Selection:
    """Per training image, the word it is masked behind (None: not picked) and its class's word said in most of its
    sentences (``spared``; None: none is said); per class, its suspects and the share of its images whose first
    dominant word is the class.

    rule: the rule applied (``suspects`` or ``not-class``) and ``reason``, why.
    """

    paths: list[str]
    labels: list[str]
    words: list[str | None]
    spared: list[str | None]
    rule: str
    reason: str
    suspects: dict[str, list[str]] = field(default_factory=dict)
    class_first: dict[str, float] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """Share of the training images picked."""
        return len(self.indices()) / max(len(self.words), 1)

    def indices(self) -> list[int]:
        """Positions of the picked images."""
        return [i for i, w in enumerate(self.words) if w is not None]

    def per_class(self) -> dict[str, dict]:
        """Per class: images, picked, the words masked (most frequent first), its suspects, how often it is its images' first word."""
        out = {}
        for name in sorted(set(self.labels)):
            own = [i for i, label in enumerate(self.labels) if label == name]
            masked = Counter(self.words[i] for i in own if self.words[i] is not None)
            out[name] = {"images": len(own), "selected": sum(masked.values()), "masked_words": masked.most_common(),
                         "suspects": self.suspects.get(name, []), "class_first": round(self.class_first.get(name, 0.0), 4)}
        return out

    def to_json(self) -> dict:
        chosen = self.indices()
        return {
            "rule": self.rule,
            "reason": self.reason,
            "images": len(self.paths),
            "selected": len(chosen),
            "fraction": round(self.fraction, 4),
            "per_class": self.per_class(),
            "top_words_selected": Counter(self.words[i] for i in chosen).most_common(10),
        }


@dataclass
class _Explained:
    """One explained training image: its raw document counts, class mentions and sentence count."""

    path: str
    label: str
    counts: dict[str, int]
    mentions: dict[str, int]
    n_sentences: int


def train_features(
    classifier: Classifier, paths: Sequence[str], folder: str | os.PathLike, progress: bool = False
) -> FeatureStore:
    """The classifier's features of the training images, in a feature store under ``folder`` (reused if there)."""
    store, skipped = extract_features(classifier, list(paths), folder, ExtractionConfig(batch_size=64), progress=progress)
    if skipped:
        raise TexplainError(f"{skipped[0][0]}: a training image could not be read ({skipped[0][1]})")
    return store


def explain_training(
    classifier: Classifier,
    translator: Translator,
    lm: FrozenLM,
    store: FeatureStore,
    paths: Sequence[str],
    labels: Sequence[str],
    config: SelectionConfig,
    progress: bool = False,
) -> tuple[list[_Explained], dict[str, frozenset[str]], LMPrior]:
    """Every training image explained (its word counts and class mentions), the class vocabularies and the LM prior:
    what :func:`choose` reads, so that several rules can be applied to one explanation of the training split.

    The LM prior is explained first from the null prefixes of ``config.prior``
    (built from the classifier and ``store``), with the same sampling.
    """
    explain_config = config.explain_config()
    vocabularies = class_vocabularies(classifier.class_names, config.class_words, explain_config.words)
    index = word_index(vocabularies)
    prior = explain_prior(translator, lm, null_features(config.prior, classifier, store, list(paths)), explain_config, index,
                          config.prior.samples)
    explained = []
    explanations = explain_stream(translator, lm, (store.features([path])[0] for path in paths), explain_config, progress)
    for path, label, explanation in zip(paths, labels, explanations):
        mentions = class_mentions(explanation.sentences, index, explain_config.words)
        explained.append(_Explained(str(path), label, explanation.counter.document_counts(), mentions,
                                    explanation.counter.n_sentences))
    return explained, vocabularies, prior


def choose(explained: Sequence[_Explained], vocabularies: dict[str, frozenset[str]], prior: LMPrior | None,
           config: SelectionConfig) -> Selection:
    """Apply ``config.rule`` to explained images, with the class vocabularies and the LM prior."""
    merges = {name: ClassMerge(name, vocabulary) for name, vocabulary in vocabularies.items()}
    dominant = []
    for image in explained:
        merge = merges[image.label]
        merged = merge(image.counts, image.mentions)
        dominant.append((merged, dominant_words(merged, image.n_sentences, merge, prior, config.min_frequency, config.min_lift)))
    first: dict[str, list[bool]] = {}
    for image, (_, words) in zip(explained, dominant):
        first.setdefault(image.label, []).append(bool(words) and words[0].word == image.label)
    class_first = {name: sum(hits) / len(hits) for name, hits in first.items()}
    rule, reason = _rule(config, class_first)
    log.info("selection rule %s: %s", rule, reason)
    suspects: dict[str, list[str]] = {}
    if rule == "suspects":
        pooled = _pool(explained)
        for name in pooled:
            rest: Counter = Counter()
            for other, (counts, mentions, _) in pooled.items():
                if other != name:
                    rest.update(merges[name](counts, mentions))
            counts, mentions, n = pooled[name]
            found = rank_suspects(merges[name](counts, mentions), n, rest, merges[name], prior, config.suspects)
            suspects[name] = [s.word for s in found]
    words = []
    for image, (merged, found) in zip(explained, dominant):
        if rule == "not-class":
            words.append(found[0].word if found and found[0].word != image.label else None)
        else:
            words.append(_suspect_in(suspects[image.label], found, merged, image.n_sentences, config))
    spared = [_most_said(image.counts, vocabularies[image.label]) for image in explained]
    return Selection([image.path for image in explained], [image.label for image in explained], words, spared, rule,
                     reason, suspects, class_first)


def _most_said(counts: dict[str, int], vocabulary: frozenset[str]) -> str | None:
    """The word of ``vocabulary`` in most of an image's sentences (``counts``: per word; a tie goes to the
    alphabetically first), or None when none is said."""
    said = [(-counts[w], w) for w in vocabulary if counts.get(w, 0) > 0]
    return min(said)[1] if said else None


def _pool(explained: Sequence[_Explained]) -> dict[str, tuple[Counter, Counter, int]]:
    """Per class: its images' document counts and class mentions summed, and their sentences."""
    pooled: dict[str, tuple[Counter, Counter, int]] = {}
    for image in explained:
        counts, mentions, n = pooled.get(image.label, (Counter(), Counter(), 0))
        counts.update(image.counts)
        mentions.update(image.mentions)
        pooled[image.label] = (counts, mentions, n + image.n_sentences)
    return pooled


def _rule(config: SelectionConfig, class_first: dict[str, float]) -> tuple[str, str]:
    """The rule to apply and why, from how often each class is its own images' first dominant word."""
    median = statistics.median(class_first.values()) if class_first else 0.0
    measured = f"the median class is the first word of {median:.0%} of its images"
    if config.rule != "auto":
        return config.rule, f"asked for ({measured})"
    if median < 0.5:
        return "suspects", f"{measured}: the paper's rule would pick most of the training set"
    return "not-class", f"{measured}: the paper's rule tells its images apart"


def _suspect_in(suspects: Sequence[str], dominant: Sequence[DominantWord], merged: dict[str, int], n_sentences: int,
                config: SelectionConfig) -> str | None:
    """The class's strongest suspect among the image's first dominant words (or said often enough), else None."""
    if config.threshold is not None:
        return next((w for w in suspects if merged.get(w, 0) >= config.threshold * max(n_sentences, 1)), None)
    top = {d.word for d in dominant[: config.top]}
    return next((w for w in suspects if w in top), None)

"""The language model's own word prior: what it says whatever the image.

A caption LM says "man", "standing" or "front" after almost any prefix. Such
a word can dominate a class's sentences without the classifier's features
carrying it. The prior is measured by explaining *null* features, prefixes
that carry no image content, with the same translator, LM and sampling:

* ``blank``: the features of a uniform mid-grey image;
* ``mean``: the mean feature over the data set (every image's content
  averaged away);
* ``shuffled``: each feature coordinate drawn from a different image, so the
  marginals of real features remain and their joint structure (the content)
  is gone;
* ``lm``: no features at all, the LM after the translator's start alone (its
  end-of-sentence token for a prefix-ready caption LM, a request for a
  caption for a chat LM: :func:`~texplain.models.lm.start_tokens`).

The first three go through the translator, so they also hold what the
translator makes of an average input: where a classifier reads any average of
its features as one of its data set's places, they say that place (the demo's
object-pretrained resnet10t, seed 1: its mean prefix says "snow" in 74% of its
sentences, its shuffled ones in 68%, its blank one in 19%, the car class in
49%). ``lm`` is the LM's own words and nothing else: it cannot leak a place.

Each kind's counts are kept apart (the shuffled sets pooled into one), and a
word's prior is the *least* any kind says it: its smoothed frequency under the
kind that says it least, and a suspect's z-score against the prior is its
largest against any one kind. A kind that leaks a place of the data set then
cannot hide it, as long as one kind does not say it (pooled, the demo's prior
above says "snow" in 60% of its sentences and car's shortcut is not found),
while a word every kind says stays the LM's own. All four kinds are the
default: the three that go through the translator can all leak the same place
(the same classifier's seed 2, trained on one thread: the grey image says
"sand" in 82% of its sentences, the mean 88%, the shuffled 88%, dog's images
76%), and only the LM alone then keeps the shortcut visible. The price: the
least of several estimates is biased low, so the prior check is more lenient
than against any one kind (on BAR the actor, "man", which the LM alone says
less often than any photo of people, becomes a suspect of the classes that
show men most); suspects still have to stand out against the other classes.
A prior file written without per-kind counts is read as one pooled kind.

A word's *lift* is the odds ratio of saying it for a class against saying it
in the prior: (f / (1 - f)) / (p / (1 - p)). A finding should be well above
1. For a rare word it is about the ratio of frequencies; unlike that ratio
it is not capped for a word the prior already says often (the demo's LM can
say "snow" in 87% of its null-prefix sentences, so a class that says it in
98% is at most 1.13 times as frequent, but has 7.5 times the odds).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from texplain.analysis.config import PriorConfig
from texplain.errors import TexplainError
from texplain.text.class_vocabulary import class_mentions
from texplain.text.config import WordConfig
from texplain.text.words import WordCounter

if TYPE_CHECKING:  # the models are needed to make a prior, not to read one
    from torch import Tensor

    from texplain.generate.config import ExplainConfig
    from texplain.models.classifiers import Classifier
    from texplain.models.features import FeatureStore
    from texplain.models.lm import FrozenLM
    from texplain.models.translator import Translator

log = logging.getLogger(__name__)

BLANK_GREY = (128, 128, 128)
BLANK_SIZE = 224
SMOOTHING = 0.5
"""Pseudo-count added to a word's prior count, so a word the prior never says has a finite lift."""


@dataclass
class PriorSample:
    """The sentences written after one kind of null prefix: their word counts and class mentions."""

    counter: WordCounter
    mentions: dict[str, int] = field(default_factory=dict)

    def add(self, counter: WordCounter, mentions: Mapping[str, int]) -> None:
        """Count more sentences: their words and class mentions."""
        self.counter.merge(counter)
        for name, count in mentions.items():
            self.mentions[name] = self.mentions.get(name, 0) + count

    def frequency(self, count: int) -> float:
        """Smoothed fraction of these sentences that a word said ``count`` times is in: (count + 0.5) / (n + 1)."""
        return (count + SMOOTHING) / (self.counter.n_sentences + 2 * SMOOTHING)

    def to_dict(self) -> dict:
        return {"counts": self.counter.to_dict(), "mentions": dict(sorted(self.mentions.items()))}


@dataclass
class LMPrior:
    """Word counts of the sentences written after null prefixes, pooled and per kind.

    counter, mentions: pooled over every null prefix (the prior's own words in
    a report). by_kind: the same per kind, where the frequency of a word and
    the z-score against the prior are taken (see the module docstring); empty
    for a prior written before kinds were kept apart, which is then one kind.
    """

    counter: WordCounter
    mentions: dict[str, int] = field(default_factory=dict)
    kinds: tuple[str, ...] = ()
    by_kind: dict[str, PriorSample] = field(default_factory=dict)

    def samples(self) -> list[PriorSample]:
        """One sample per kind of null prefix; the pooled sentences when kinds were not kept apart."""
        return list(self.by_kind.values()) or [PriorSample(self.counter, self.mentions)]

    def frequency(self, word: str) -> float:
        """Smoothed fraction of sentences that mention ``word``, under the kind that says it least."""
        return min(s.frequency(s.counter.document_count(word)) for s in self.samples())

    def mention_frequency(self, name: str) -> float:
        """Smoothed fraction of sentences that mention class ``name`` by any of its words, under the least-saying kind."""
        return min(s.frequency(s.mentions.get(name, 0)) for s in self.samples())

    def frequencies_by_kind(self, words: Sequence[str]) -> dict[str, dict[str, float]]:
        """How often each kind of null prefix says each of ``words`` (unsmoothed): where a kind leaks a data set's place, it shows."""
        out = {}
        for kind, sample in self.by_kind.items():
            n = sample.counter.n_sentences
            out[kind] = {word: sample.counter.document_count(word) / n if n else 0.0 for word in words}
        return out

    @classmethod
    def of_kinds(cls, by_kind: Mapping[str, PriorSample], words: WordConfig) -> LMPrior:
        """The prior of these kinds' samples, their sentences pooled beside them."""
        pooled = PriorSample(WordCounter(words))
        for sample in by_kind.values():
            pooled.add(sample.counter, sample.mentions)
        return cls(pooled.counter, pooled.mentions, tuple(by_kind), dict(by_kind))

    def to_dict(self) -> dict:
        return {"kinds": list(self.kinds), **PriorSample(self.counter, self.mentions).to_dict(),
                "by_kind": {kind: sample.to_dict() for kind, sample in self.by_kind.items()}}

    @classmethod
    def from_dict(cls, data: Mapping) -> LMPrior:
        """Rebuild a prior from :meth:`to_dict` output; anything else is a one-line error."""
        try:
            by_kind = {str(kind): PriorSample(WordCounter.from_dict(d["counts"]), _mentions(d.get("mentions", {})))
                       for kind, d in data.get("by_kind", {}).items()}
            kinds = data.get("kinds", [])
            if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
                raise TypeError(f"kinds must be a list of names, not {kinds!r}")
            return cls(WordCounter.from_dict(data["counts"]), _mentions(data.get("mentions", {})), tuple(kinds), by_kind)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise TexplainError(f"LM prior is malformed: {exc}") from exc


def _mentions(value: object) -> dict[str, int]:
    """Class mentions as written: class name → a count of sentences (a whole number, 0 or more)."""
    if not isinstance(value, dict) or not all(type(c) is int and c >= 0 for c in value.values()):
        raise TypeError(f"mentions must map class names to counts, not {str(value)[:60]}")
    return dict(value)


FREQUENCY_CAP = 0.999
"""A word in every sentence counts as in this fraction of them, so that its lift stays finite."""


def lift(frequency: float, prior_frequency: float) -> float:
    """The odds ratio of a word's frequency for a class (or an image) over its smoothed prior frequency (< 1)."""
    frequency = min(frequency, FREQUENCY_CAP)
    return frequency / (1.0 - frequency) * (1.0 - prior_frequency) / prior_frequency


def null_features(
    config: PriorConfig, classifier: Classifier, store: FeatureStore, paths: Sequence[str]
) -> list[tuple[str, Tensor | None]]:
    """The null feature sets, each (kind, (T, D)), from the classifier and the data set's stored features.

    ``lm`` has no features: its entry is (``"lm"``, None).
    """
    out: list[tuple[str, Tensor | None]] = []
    if "blank" in config.kinds:
        out.append(("blank", blank_features(classifier)))
    if "mean" in config.kinds:
        out.append(("mean", mean_features(store, paths)))
    if "shuffled" in config.kinds:
        out += [("shuffled", f) for f in shuffled_features(store, paths, config.shuffled, config.pool, config.seed)]
    if "lm" in config.kinds:
        out.append(("lm", None))
    return out


def blank_features(classifier: Classifier) -> Tensor:
    """Features (T, D) of a uniform mid-grey image: what the classifier sees in nothing."""
    import torch
    from PIL import Image

    image = Image.new("RGB", (BLANK_SIZE, BLANK_SIZE), BLANK_GREY)
    pixels = classifier.preprocess(image).unsqueeze(0).to(classifier.device)  # (1, 3, H, W)
    with torch.inference_mode():
        features, _ = classifier.features_and_logits(pixels)  # (1, T, D)
    return features[0].float().cpu()


def mean_features(store: FeatureStore, paths: Sequence[str], batch: int = 256) -> Tensor:
    """Mean (T, D) of the stored features of ``paths``, read a batch at a time."""
    import torch

    from texplain.models.features import iter_batches

    if not paths:
        raise TexplainError("prior: no explained images to average")
    total = torch.zeros(store.token_shape, dtype=torch.float64)
    for chunk in iter_batches(paths, batch):
        total += store.load_all(chunk).double().sum(0)  # (T, D)
    return (total / len(paths)).float()


def shuffled_features(store: FeatureStore, paths: Sequence[str], n: int, pool: int, seed: int) -> list[Tensor]:
    """``n`` feature sets (T, D) whose every coordinate comes from a random one of ``pool`` images."""
    import torch

    if len(paths) < 2:
        raise TexplainError("prior: shuffled features need at least two explained images; choose other prior kinds")
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(paths), generator=generator)[:pool].tolist()
    feats = store.load_all([paths[i] for i in sorted(chosen)]).float()  # (M, T, D)
    index = torch.randint(feats.shape[0], (n, *feats.shape[1:]), generator=generator)  # (n, T, D)
    return list(torch.gather(feats, 0, index))


def explain_prior(
    translator: Translator,
    lm: FrozenLM,
    features: Sequence[tuple[str, Tensor | None]],
    config: ExplainConfig,
    index: Mapping[str, Sequence[str]],
    samples: int = 0,
) -> LMPrior:
    """Sample after every null prefix; the words (and class mentions) per kind and pooled.

    Each null prefix gets ``config``'s sentences, or ``samples`` when that is more;
    features None stand for the LM alone.
    """
    from dataclasses import replace

    from texplain.generate.explain import explain_features, explain_lm_alone

    if samples > config.sampling.num_samples:
        config = replace(config, sampling=replace(config.sampling, num_samples=samples))
    by_kind: dict[str, PriorSample] = {}
    for kind, feats in features:
        explanation = (explain_lm_alone(lm, config, translator.lm_start()) if feats is None
                       else explain_features(translator, lm, feats, config))
        by_kind.setdefault(kind, PriorSample(WordCounter(config.words))).add(
            explanation.counter, class_mentions(explanation.sentences, index, config.words))
        log.info("prior (%s): %s", kind, ", ".join(w for w, _ in explanation.top_words[:8]))
    return LMPrior.of_kinds(by_kind, config.words)

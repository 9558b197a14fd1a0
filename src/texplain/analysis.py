"""From per-image word counts to what a class's explanations say.

A class's explanation pools the sentences of all its images (one
:class:`~texplain.words.WordCounter` merged over them). A word is a shortcut
suspect for a class when it is not the class's own word, is frequent in the
class, and is over-represented there compared with the other classes: a word
the LM says for every class (a size, "small"; a verb, "standing") says
nothing about this class's features.

:func:`suspects` is the quick version for a handful of pooled counters (the
demo). :func:`analyse_results` is the full one over a results folder written
by :func:`~texplain.dataset_explain.explain_dataset`:

* per class (and per split, and all splits pooled) the pooled word counts,
  with the class's vocabulary (:mod:`texplain.classwords`) merged into one
  entry named after the class, so "seagull" and "duck" count as "bird";
* each word's frequency with a Wilson interval and its lift over the LM
  prior (:mod:`texplain.prior`);
* split comparison (train vs test, paper Fig. 7): the words whose strength
  shifts most, by log-odds z (:func:`compare_counts`);
* suspects: non-class words over-represented in the class against the other
  classes pooled *and* against the LM prior (both :func:`compare_counts` z at
  least ``min_z``), frequent enough to matter and with a lift of at least
  ``min_lift``, ranked by the smaller of the two z-scores, each with the
  images where the word is strongest;
* accuracy per group, per split, where groups are known.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

from texplain.classwords import ClassWordConfig, class_vocabularies
from texplain.dataset_explain import ResultsFolder
from texplain.errors import TexplainError
from texplain.prior import LMPrior, lift
from texplain.statistics import LogOdds, log_odds_dirichlet, wilson_interval
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


ALL_SPLITS = "all"
"""Split key of a class's pool over every split."""

GROUPINGS = ("label", "predicted")


@dataclass
class AnalysisConfig:
    """How a results folder is analysed.

    Attributes:
        by: pool images by their ``label`` (what the class's images evoke) or
            by the class the classifier ``predicted`` (what it sees when it
            says that class).
        top_words: words listed (and drawn) per class and split.
        suspects: suspects kept per class.
        min_frequency: a suspect is in at least this fraction of the class's sentences.
        min_z: a suspect's log-odds z against the other classes, and against
            the LM prior, are both at least this.
        min_lift: a suspect is said at least this many times more often than
            after a null prefix (only with a prior).
        compare: the two splits compared per class; None compares train and
            test when both are present.
        shifts: words listed per direction of a split comparison.
        examples: images shown per suspect (where the word is strongest).
        suspect_split: pool only this split for the suspects; None pools all.
        confidence: level of the Wilson intervals.
    """

    by: str = "label"
    top_words: int = 20
    suspects: int = 5
    min_frequency: float = 0.05
    min_z: float = 1.96
    min_lift: float = 1.5
    compare: tuple[str, str] | None = None
    shifts: int = 10
    examples: int = 3
    suspect_split: str | None = None
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if self.by not in GROUPINGS:
            raise TexplainError(f"analysis: by must be label or predicted, got {self.by!r}")
        if min(self.top_words, self.suspects, self.shifts, self.examples) < 1:
            raise TexplainError("analysis: top_words, suspects, shifts and examples must be at least 1")
        if not 0.0 <= self.min_frequency <= 1.0 or self.min_lift < 0:
            raise TexplainError("analysis: min_frequency must be in [0, 1] and min_lift non-negative")
        if self.compare is not None:
            self.compare = tuple(self.compare)
            if len(self.compare) != 2 or self.compare[0] == self.compare[1]:
                raise TexplainError(f"analysis: compare needs two different splits, got {self.compare!r}")


@dataclass
class Pool:
    """The pooled sentences of one class in one split: images, word counts, class mentions."""

    images: int
    counter: WordCounter
    mentions: Counter

    @property
    def n_sentences(self) -> int:
        return self.counter.n_sentences


@dataclass
class WordStat:
    """A word of a class: sentences mentioning it, its frequency with a Wilson interval, its lift over the prior."""

    word: str
    count: int
    frequency: float
    low: float
    high: float
    lift: float | None = None
    is_class: bool = False

    def to_json(self) -> dict:
        return {"word": self.word, "count": self.count, "frequency": round(self.frequency, 4),
                "low": round(self.low, 4), "high": round(self.high, 4),
                "lift": None if self.lift is None else round(self.lift, 3), "is_class": self.is_class}


@dataclass
class Suspect:
    """A shortcut suspect: frequent in the class, over-represented against other classes and the prior."""

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


@dataclass
class ClassReport:
    """Everything the report shows for one class."""

    name: str
    images: dict[str, int]
    words: dict[str, list[WordStat]]
    class_word: dict[str, WordStat]
    suspects: list[Suspect]
    shift: dict[str, list[LogOdds]]

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "images": self.images,
            "class_word": {split: w.to_json() for split, w in self.class_word.items()},
            "words": {split: [w.to_json() for w in ws] for split, ws in self.words.items()},
            "suspects": [s.to_json() for s in self.suspects],
            "shift": {split: [s.to_json() for s in ss] for split, ss in self.shift.items()},
        }


@dataclass
class DatasetAnalysis:
    """A results folder analysed: per class reports, splits, accuracy per group, the prior's own words."""

    classes: dict[str, ClassReport]
    splits: list[str]
    compare: tuple[str, str] | None
    accuracy: dict[str, dict]
    prior_words: list[WordStat]
    notes: list[str]
    config: AnalysisConfig
    vocabularies: dict[str, frozenset[str]]

    def to_json(self) -> dict:
        return {
            "config": asdict(self.config),
            "splits": self.splits,
            "compare": list(self.compare) if self.compare else None,
            "notes": self.notes,
            "accuracy": self.accuracy,
            "prior_words": [w.to_json() for w in self.prior_words],
            "classes": {name: c.to_json() for name, c in self.classes.items()},
        }


def analyse_results(results: ResultsFolder, config: AnalysisConfig | None = None) -> DatasetAnalysis:
    """Aggregate a results folder per class and split, compare splits, rank suspects; see the module docstring."""
    config = config or AnalysisConfig()
    settings = results.settings
    words = WordConfig(**settings["words"])
    pools = pool_results(results, config.by, words)
    if not pools:
        raise TexplainError(f"{results.folder}: no explained images yet; run texplain explain-dataset first")
    names = sorted({name for _, name in pools})
    splits = sorted({split for split, _ in pools if split != ALL_SPLITS}, key=_split_order)
    notes: list[str] = []
    compare = _comparison(config.compare, splits, notes)
    indexed = set(settings["class_names"])
    vocabularies = class_vocabularies(
        list(dict.fromkeys([*settings["class_names"], *names])),
        ClassWordConfig.from_json(settings["class_words"]), words,
    )
    prior = results.prior()
    if prior is None:
        notes.append("no LM prior in these results: lifts are not shown and suspects are not checked against it")
    suspect_key = config.suspect_split or ALL_SPLITS
    if config.suspect_split is not None and config.suspect_split not in splits:
        raise TexplainError(f"analysis: no split {config.suspect_split!r} (splits: {', '.join(splits) or 'none'})")
    classes = {}
    for name in names:
        merge = _Merger(name, vocabularies[name], name in indexed)
        class_pools = {split: pools[(split, name)] for split in [ALL_SPLITS, *splits] if (split, name) in pools}
        others = [pools[(suspect_key, other)] for other in names if other != name and (suspect_key, other) in pools]
        own = class_pools.get(suspect_key)
        classes[name] = ClassReport(
            name=name,
            images={split: pool.images for split, pool in class_pools.items()},
            words={split: word_stats(merge(pool), pool.n_sentences, merge.prior(prior), config, is_class=name)
                   for split, pool in class_pools.items()},
            class_word={split: _class_word(merge, pool, prior, config) for split, pool in class_pools.items()},
            suspects=rank_suspects(own, others, merge, prior, config) if own is not None else [],
            shift=_shift(class_pools, compare, merge, config),
        )
        if len(class_pools) == 1 + len(splits) or not splits:
            continue
        missing = sorted(set(splits) - set(class_pools))
        notes.append(f"class {name!r} has no images in split {', '.join(missing)}")
    _attach_examples(results, classes, config)
    prior_words = word_stats(prior.counter.document_counts(), prior.counter.n_sentences, None, config) if prior else []
    return DatasetAnalysis(classes, splits, compare, accuracy_by_group(results), prior_words, notes, config, vocabularies)


def pool_results(results: ResultsFolder, by: str, words: WordConfig) -> dict[tuple[str, str], Pool]:
    """Per (split, class) and per (``all``, class), the pooled counts; one pass over the rows."""
    pools: dict[tuple[str, str], Pool] = {}
    for row in results.iter_rows(["label", "split", "predicted", "n_sentences", "words", "class_mentions"]):
        counter = WordCounter.from_dict({
            "config": asdict(words), "n_sentences": row["n_sentences"],
            "document_counts": {w["word"]: w["count"] for w in row["words"]},
        })
        mentions = Counter({m["name"]: m["count"] for m in row["class_mentions"]})
        name = row[by]
        for split in {ALL_SPLITS, row["split"] or ALL_SPLITS}:
            pool = pools.setdefault((split, name), Pool(0, WordCounter(words), Counter()))
            pool.images += 1
            pool.counter.merge(counter)
            pool.mentions.update(mentions)
    return pools


def word_stats(
    counts: Mapping[str, int], n_sentences: int, prior_frequency: Mapping[str, float] | None, config: AnalysisConfig,
    is_class: str | None = None,
) -> list[WordStat]:
    """The ``config.top_words`` most frequent words with Wilson intervals and (with a prior) lifts."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: config.top_words]
    if not ranked or n_sentences == 0:
        return []
    low, high = wilson_interval([c for _, c in ranked], [n_sentences] * len(ranked), config.confidence)
    return [
        WordStat(word, count, count / n_sentences, float(lo), float(hi),
                 None if prior_frequency is None else lift(count / n_sentences, prior_frequency[word]),
                 word == is_class)
        for (word, count), lo, hi in zip(ranked, low, high)
    ]


def rank_suspects(
    own: Pool, others: Sequence[Pool], merge: _Merger, prior: LMPrior | None, config: AnalysisConfig
) -> list[Suspect]:
    """Non-class words over-represented in ``own`` against ``others`` pooled and against the prior.

    Both comparisons are :func:`compare_counts`.
    """
    counts = merge(own)
    n = own.n_sentences
    if n == 0 or not others:
        return []
    rest = Counter()
    for other in others:
        rest.update(merge(other))
    z_classes = {s.word: s.z for s in compare_counts(counts, rest)}
    z_prior, prior_frequency = {}, None
    if prior is not None:
        z_prior = {s.word: s.z for s in compare_counts(counts, merge.prior_counts(prior))}
        prior_frequency = merge.prior(prior)
    found = []
    for word, count in counts.items():
        frequency = count / n
        if word == merge.name or frequency < config.min_frequency:
            continue
        word_lift = None if prior_frequency is None else lift(frequency, prior_frequency[word])
        suspect = Suspect(word, frequency, 0.0, 0.0, z_classes.get(word, 0.0), z_prior.get(word), word_lift)
        if suspect.score >= config.min_z and (word_lift is None or word_lift >= config.min_lift):
            found.append(suspect)
    found = sorted(found, key=lambda s: (-s.score, s.word))[: config.suspects]
    if found:
        low, high = wilson_interval([counts[s.word] for s in found], [n] * len(found), config.confidence)
        for suspect, lo, hi in zip(found, low, high):
            suspect.low, suspect.high = float(lo), float(hi)
    return found


def compare_counts(counts_a: Mapping[str, int], counts_b: Mapping[str, int]) -> list[LogOdds]:
    """Log-odds z of every word, A against B, with the two pooled as the Dirichlet prior.

    The prior is scaled to weigh as much as the smaller group (a_0 =
    min(n_A, n_B)). Unscaled, the pooled counts of a large group (a class's
    300 000 sentences) would swamp a small one (the LM prior's few thousand)
    and shrink every real difference toward zero.
    """
    smaller = min(sum(counts_a.values()), sum(counts_b.values()))
    return log_odds_dirichlet(counts_a, counts_b, prior_strength=smaller) if smaller > 0 else []


def accuracy_by_group(results: ResultsFolder) -> dict[str, dict]:
    """Per split (and ``all``), accuracy per group, worst group and average; empty where no group is known."""
    import torch

    from texplain.classifier_training import group_accuracy

    rows = [r for r in results.iter_rows(["label", "predicted", "split", "group"]) if r["group"] is not None]
    index = {name: i for i, name in enumerate(sorted({r["label"] for r in rows} | {r["predicted"] for r in rows}))}
    out = {}
    for split in sorted({r["split"] for r in rows if r["split"]}) + ([ALL_SPLITS] if rows else []):
        chosen = [r for r in rows if split in (ALL_SPLITS, r["split"])]
        predictions = torch.tensor([index[r["predicted"]] for r in chosen])
        labels = torch.tensor([index[r["label"]] for r in chosen])
        out[split] = group_accuracy(predictions, labels, [r["group"] for r in chosen])
    return out


class _Merger:
    """Merges a class's vocabulary into one entry named after the class (see the module docstring).

    Sentences mentioning any vocabulary word were counted per class at
    explanation time (``class_mentions``), which gives the merged count
    exactly; a label outside the classifier's classes was not, and gets the
    count of its most frequent vocabulary word, a lower bound.
    """

    def __init__(self, name: str, vocabulary: frozenset[str], indexed: bool):
        self.name, self.vocabulary, self.indexed = name, vocabulary, indexed

    def __call__(self, pool: Pool) -> dict[str, int]:
        return self._merge(pool.counter.document_counts(), pool.mentions)

    def _merge(self, counts: Mapping[str, int], mentions: Mapping[str, int]) -> dict[str, int]:
        merged = {w: c for w, c in counts.items() if w not in self.vocabulary}
        own = mentions.get(self.name, 0) if self.indexed else max((counts.get(w, 0) for w in self.vocabulary), default=0)
        if own:
            merged[self.name] = own
        return merged

    def prior_counts(self, prior: LMPrior) -> dict[str, int]:
        """The prior's counts with this class's vocabulary merged the same way."""
        return self._merge(prior.counter.document_counts(), prior.mentions)

    def prior(self, prior: LMPrior | None) -> Mapping[str, float] | None:
        """Smoothed prior frequency of any word, the merged class entry included (None without a prior)."""
        if prior is None:
            return None
        return _PriorFrequency(prior, self.name)


class _PriorFrequency(Mapping):
    """word → smoothed prior frequency, computed on access (the vocabulary may be large)."""

    def __init__(self, prior: LMPrior, name: str):
        self._prior, self._name = prior, name

    def __getitem__(self, word: str) -> float:
        return self._prior.mention_frequency(word) if word == self._name else self._prior.frequency(word)

    def __iter__(self):
        return iter(self._prior.counter.document_counts())

    def __len__(self) -> int:
        return len(self._prior.counter.document_counts())


def _class_word(merge: _Merger, pool: Pool, prior: LMPrior | None, config: AnalysisConfig) -> WordStat:
    """The merged class entry's statistics in one pool (count 0 when the class is never said)."""
    count = merge(pool).get(merge.name, 0)
    stats = word_stats({merge.name: count}, pool.n_sentences, merge.prior(prior), config, is_class=merge.name)
    return stats[0] if stats else WordStat(merge.name, 0, 0.0, 0.0, 1.0, None, True)


def _split_order(split: str) -> tuple[int, str]:
    """Train first, then validation, then test, then any other split by name."""
    rank = {"train": 0, "val": 1, "valid": 1, "validation": 1, "dev": 1, "test": 2}
    return rank.get(split.lower(), 3), split


def _comparison(wanted: tuple[str, str] | None, splits: Sequence[str], notes: list[str]) -> tuple[str, str] | None:
    """The two splits to compare: the requested ones (which must exist) or train/test when both exist."""
    if wanted is not None:
        missing = [s for s in wanted if s not in splits]
        if missing:
            raise TexplainError(
                f"analysis: cannot compare splits {wanted[0]!r} and {wanted[1]!r}: no images in "
                f"{', '.join(map(repr, missing))} (splits: {', '.join(splits) or 'none'})"
            )
        return wanted
    if {"train", "test"} <= set(splits):
        return ("train", "test")
    notes.append(f"no split comparison: needs train and test, found {', '.join(splits) or 'no splits'}")
    return None


def _shift(
    pools: Mapping[str, Pool], compare: tuple[str, str] | None, merge: _Merger, config: AnalysisConfig
) -> dict[str, list[LogOdds]]:
    """The words most shifted towards each compared split (log-odds z), for one class."""
    if compare is None or not all(split in pools for split in compare):
        return {}
    scores = compare_counts(merge(pools[compare[0]]), merge(pools[compare[1]]))
    towards_a = [s for s in scores if s.z > 0][: config.shifts]
    towards_b = [s for s in reversed(scores) if s.z < 0][: config.shifts]
    return {compare[0]: towards_a, compare[1]: towards_b}


def _attach_examples(results: ResultsFolder, classes: Mapping[str, ClassReport], config: AnalysisConfig) -> None:
    """For every suspect, the images of its class where the word's frequency is highest (one pass)."""
    wanted = {(name, s.word): s for name, c in classes.items() for s in c.suspects}
    if not wanted:
        return
    heaps: dict[tuple[str, str], list[tuple[float, str]]] = {key: [] for key in wanted}
    for row in results.iter_rows(["image", "label", "predicted", "split", "n_sentences", "words"]):
        if config.suspect_split is not None and row["split"] != config.suspect_split:
            continue
        counts = {w["word"]: w["count"] for w in row["words"]}
        for (name, word), heap in heaps.items():
            if row[config.by] == name and counts.get(word) and row["n_sentences"]:
                item = (counts[word] / row["n_sentences"], row["image"])
                (heapq.heappush if len(heap) < config.examples else heapq.heappushpop)(heap, item)
    for key, heap in heaps.items():
        wanted[key].examples = [image for _, image in sorted(heap, key=lambda fi: (-fi[0], fi[1]))]

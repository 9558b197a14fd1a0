"""From per-image word counts to what a class's explanations say, over a results folder.

:func:`analyse_results` reads a results folder written by
:func:`~texplain.analysis.explain_dataset.explain_dataset` and gives:

* per class (and per split, and all splits pooled) the pooled word counts,
  with the class's vocabulary (:mod:`texplain.text.class_vocabulary`) merged into one
  entry named after the class, so "seagull" and "duck" count as "bird";
* each word's frequency with a Wilson interval and its lift over the LM
  prior (:mod:`texplain.analysis.lm_prior`);
* split comparison (train vs test, paper Fig. 7): the words whose strength
  shifts most, by log-odds z (:func:`~texplain.statistics.compare_counts`);
* suspects (:mod:`texplain.analysis.suspects`), each with the images where the word is strongest;
* accuracy per group, per split, where groups are known.

It needs neither torch nor the models: analysing existing results is fast.
"""

from __future__ import annotations

import heapq
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from texplain.analysis.config import AnalysisConfig
from texplain.analysis.lm_prior import LMPrior, lift
from texplain.analysis.only_background import OnlyBackgroundClass, pair_rows, summarise
from texplain.analysis.results import MANIFEST, ResultsFolder
from texplain.analysis.suspects import ClassMerge, Suspect, rank_suspects
from texplain.errors import TexplainError, first_line
from texplain.statistics import (
    LogOdds,
    compare_counts,
    group_accuracy,
    wilson_interval,
)
from texplain.text.class_vocabulary import class_vocabularies
from texplain.text.config import ClassWordConfig, WordConfig
from texplain.text.words import WordCounter, rank_words

ALL_SPLITS = "all"
"""Split key of a class's pool over every split."""


@dataclass
class Pool:
    """The pooled sentences of one class in one split: images, word counts, class mentions."""

    images: int
    counter: WordCounter
    mentions: Counter

    @property
    def n_sentences(self) -> int:
        return self.counter.n_sentences

    def merged(self, merge: ClassMerge) -> dict[str, int]:
        """Document counts with ``merge``'s class vocabulary as one entry."""
        return merge(self.counter.document_counts(), self.mentions)


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
    sentences: dict[str, float] = field(default_factory=dict)
    prior_by_kind: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per kind of null prefix, the fraction of its sentences saying each of ``prior_words``."""

    def to_json(self) -> dict:
        return {
            "config": asdict(self.config),
            "sentences_per_image": self.sentences,
            "splits": self.splits,
            "compare": list(self.compare) if self.compare else None,
            "notes": self.notes,
            "accuracy": self.accuracy,
            "prior_words": [w.to_json() for w in self.prior_words],
            "prior_by_kind": {kind: {w: round(f, 4) for w, f in words.items()} for kind, words in self.prior_by_kind.items()},
            "classes": {name: c.to_json() for name, c in self.classes.items()},
        }


def analyse_results(results: ResultsFolder, config: AnalysisConfig | None = None) -> DatasetAnalysis:
    """Aggregate a results folder per class and split, compare splits, rank suspects; see the module docstring."""
    config = config or AnalysisConfig()
    class_names, words, class_words = _recorded_settings(results)
    pools = pool_results(results, config.by, words)
    if not pools:
        raise TexplainError(f"{results.folder}: no explained images yet; run texplain explain-dataset first")
    names = sorted({name for _, name in pools})
    splits = sorted({split for split, _ in pools if split != ALL_SPLITS}, key=_split_order)
    notes: list[str] = []
    compare = _comparison(config.compare, splits, notes)
    indexed = set(class_names)
    vocabularies = class_vocabularies(list(dict.fromkeys([*class_names, *names])), class_words, words)
    prior = results.prior()
    if prior is None:
        notes.append("no LM prior in these results: lifts are not shown and suspects are not checked against it")
    suspect_key = config.suspect_split or ALL_SPLITS
    if config.suspect_split is not None and config.suspect_split not in splits:
        raise TexplainError(f"analysis: no split {config.suspect_split!r} (splits: {', '.join(splits) or 'none'})")
    classes = {}
    for name in names:
        merge = ClassMerge(name, vocabularies[name], name in indexed)
        class_pools = {split: pools[(split, name)] for split in [ALL_SPLITS, *splits] if (split, name) in pools}
        merged = {split: pool.merged(merge) for split, pool in class_pools.items()}
        rest: Counter = Counter()
        for other in names:
            if other != name and (suspect_key, other) in pools:
                rest.update(pools[(suspect_key, other)].merged(merge))
        own = class_pools.get(suspect_key)
        classes[name] = ClassReport(
            name=name,
            images={split: pool.images for split, pool in class_pools.items()},
            words={split: word_stats(merged[split], pool.n_sentences, merge, prior, config, is_class=name)
                   for split, pool in class_pools.items()},
            class_word={split: _class_word(merge, merged[split], pool.n_sentences, prior, config)
                        for split, pool in class_pools.items()},
            suspects=[] if own is None else rank_suspects(
                merged[suspect_key], own.n_sentences, rest, merge, prior, config.suspects),
            shift=_shift(merged, compare, config),
        )
        if len(class_pools) == 1 + len(splits) or not splits:
            continue
        missing = sorted(set(splits) - set(class_pools))
        notes.append(f"class {name!r} has no images in split {', '.join(missing)}")
    _attach_examples(results, classes, config)
    prior_words = word_stats(prior.counter.document_counts(), prior.counter.n_sentences, None, None, config) if prior else []
    return DatasetAnalysis(classes, splits, compare, accuracy_by_group(results), prior_words, notes, config, vocabularies,
                           sentences_per_image(results),
                           prior.frequencies_by_kind([w.word for w in prior_words]) if prior else {})


def _recorded_settings(results: ResultsFolder) -> tuple[list[str], WordConfig, ClassWordConfig]:
    """The class names, word settings and class-word settings the rows were made with, as the manifest records them."""
    settings = results.settings or {}
    try:
        class_names = settings["class_names"]
        if not isinstance(class_names, list) or not all(isinstance(n, str) for n in class_names):
            raise TypeError("class_names is not a list of names")
        return class_names, WordConfig(**settings["words"]), ClassWordConfig.from_json(settings["class_words"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TexplainError(f"{results.folder / MANIFEST}: its settings are damaged ({first_line(exc)})") from exc


def sentences_per_image(results: ResultsFolder) -> dict[str, float]:
    """The fewest, mean and most sentences an image got (they differ when sampling was adaptive)."""
    counts = [row["n_sentences"] for row in results.iter_rows(["n_sentences"])]
    if not counts:
        return {}
    return {"min": min(counts), "mean": round(sum(counts) / len(counts), 1), "max": max(counts)}


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
    counts: Mapping[str, int], n_sentences: int, merge: ClassMerge | None, prior: LMPrior | None,
    config: AnalysisConfig, is_class: str | None = None,
) -> list[WordStat]:
    """The ``config.top_words`` most frequent words with Wilson intervals and (with a prior and a merge) lifts."""
    ranked = rank_words(counts)[: config.top_words]
    if not ranked or n_sentences == 0:
        return []
    low, high = wilson_interval([c for _, c in ranked], [n_sentences] * len(ranked), config.suspects.confidence)
    return [
        WordStat(word, count, count / n_sentences, float(lo), float(hi),
                 None if prior is None or merge is None else lift(count / n_sentences, merge.prior_frequency(prior, word)),
                 word == is_class)
        for (word, count), lo, hi in zip(ranked, low, high)
    ]


def accuracy_by_group(results: ResultsFolder) -> dict[str, dict]:
    """Per split (and ``all``), accuracy per group, worst group and average; empty where no group is known."""
    rows = [r for r in results.iter_rows(["label", "predicted", "split", "group"]) if r["group"] is not None]
    out = {}
    for split in sorted({r["split"] for r in rows if r["split"]}) + ([ALL_SPLITS] if rows else []):
        chosen = [r for r in rows if split in (ALL_SPLITS, r["split"])]
        out[split] = group_accuracy([r["predicted"] for r in chosen], [r["label"] for r in chosen],
                                    [r["group"] for r in chosen])
    return out


def _class_word(
    merge: ClassMerge, counts: Mapping[str, int], n_sentences: int, prior: LMPrior | None, config: AnalysisConfig
) -> WordStat:
    """The merged class entry's statistics in one pool (count 0 when the class is never said)."""
    count = counts.get(merge.name, 0)
    stats = word_stats({merge.name: count}, n_sentences, merge, prior, config, is_class=merge.name)
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
    merged: Mapping[str, Mapping[str, int]], compare: tuple[str, str] | None, config: AnalysisConfig
) -> dict[str, list[LogOdds]]:
    """The words most shifted towards each compared split (log-odds z), from a class's merged counts per split."""
    if compare is None or not all(split in merged for split in compare):
        return {}
    scores = compare_counts(merged[compare[0]], merged[compare[1]])
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


def analyse_folders(
    results: str | os.PathLike, config: AnalysisConfig | None = None, only_background: str | os.PathLike | None = None
) -> tuple[ResultsFolder, DatasetAnalysis, dict[str, OnlyBackgroundClass] | None]:
    """Open a results folder and analyse it, with the only-background results of the same images when given.

    Returns the folder, its analysis and the only-background summary per
    class (None without one): what :func:`texplain.report.html_report.write_report` draws.
    """
    config = config or AnalysisConfig()
    folder = ResultsFolder.open(results)
    analysis = analyse_results(folder, config)
    if only_background is None:
        return folder, analysis, None
    pairs = pair_rows(folder, ResultsFolder.open(only_background))
    return folder, analysis, summarise(pairs, analysis.vocabularies, by=config.by)

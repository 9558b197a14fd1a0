"""Dominant words: from the language model's sentences to word frequencies.

TExplain samples many sentences for one image; the words that recur across
them are what the classifier's features carry, the rare ones are the language
model's noise. This module normalises each sentence into content words
(lowercase, stop words out, lemmatised so that "dogs" and "dog" are one word)
and counts, for every word, the fraction of sentences that mention it.

A word repeated inside one sentence counts once: the frequency of a word is a
document frequency, ``sentences containing it / sentences``, so it lies in
[0, 1] and is comparable across images with different numbers of samples.
Counting streams: :class:`WordCounter` keeps one integer per distinct word,
never the sentences, so 1000 samples per image over a whole dataset stay cheap
and counters for many images merge into a class-level counter.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

import simplemma
from wordcloud import STOPWORDS

from texplain.data.wordnet import wordnet
from texplain.errors import TexplainError
from texplain.text.config import WordConfig, require_int

CAPTION_FILLERS: frozenset[str] = frozenset({"image", "picture", "photo", "photograph", "pic"})
"""Words a captioning model says about the medium rather than the content.

They appear in sentences for every image alike ("a photo of ..."), so they
would dominate every word cloud while saying nothing about the features.
Only medium nouns belong here; words about what is depicted never do.
"""

STOP_WORDS: frozenset[str] = frozenset(STOPWORDS) | CAPTION_FILLERS
"""English function words (``wordcloud.STOPWORDS``) plus :data:`CAPTION_FILLERS`."""

_TOKEN = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")
"""Runs of letters, with apostrophes only inside a word ("don't", "dog's")."""

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


@functools.lru_cache(maxsize=64)
def _stopwords(extra: tuple[str, ...]) -> frozenset[str]:
    """:data:`STOP_WORDS` plus a config's extra words, built once per distinct extra set."""
    return STOP_WORDS | frozenset(extra)


@functools.lru_cache(maxsize=65536)
def _lemma(word: str) -> str:
    """English dictionary form of a lowercase word: a WordNet lemma, or the word itself; cached (captions repeat words).

    simplemma's lemma where WordNet lists it ("dogs" → "dog") or where it is
    the word itself. Its English table also cuts some forms into non-words
    ("playing" → "playe", "guarding" → "guarde", "mixed" → "mixe"); there
    WordNet's own morphology gives the base form ("play", "guard", "mix"),
    and where it has none the word stays as written ("kayakers"): a word a
    user reads is always a word.
    """
    lemma = simplemma.lemmatize(word, lang="en").lower()
    if lemma == word or lemma in _wordnet_lemmas():
        return lemma
    reader = wordnet()
    bases = (reader.morphy(word, pos) for pos in (reader.VERB, reader.NOUN, reader.ADJ, reader.ADV))
    return next((base for base in bases if base), word)


@functools.lru_cache(maxsize=1)
def _wordnet_lemmas() -> frozenset[str]:
    """Every single-word lemma WordNet lists (about 150,000)."""
    return frozenset(wordnet().all_lemma_names())


def sentence_words(sentence: str, config: WordConfig) -> list[str]:
    """Content words of one sentence, in order, duplicates kept.

    Tokens are runs of letters (digits and punctuation split and vanish),
    lowercased. A token is dropped if it, or its lemma, is a stop word, or if
    the kept form is shorter than ``config.min_length``.
    """
    stopwords = _stopwords(config.extra_stopwords)
    return [word for token in _TOKEN.findall(_normalised(sentence)) if (word := _kept(token, config, stopwords))]


def content_word_spans(sentence: str, config: WordConfig) -> list[tuple[int, int]]:
    """Character spans (start, end) in ``sentence`` of the tokens that :func:`sentence_words` keeps."""
    stopwords = _stopwords(config.extra_stopwords)
    return [m.span() for m in _TOKEN.finditer(_normalised(sentence)) if _kept(m.group(), config, stopwords)]


def _normalised(sentence: str) -> str:
    """Lowercase, with typographic apostrophes made plain (one character each, so spans stay in place)."""
    return sentence.translate(_APOSTROPHES).lower()


def _kept(token: str, config: WordConfig, stopwords: frozenset[str]) -> str | None:
    """The word a token counts as, or None when it is a stop word or too short."""
    if token in stopwords:
        return None
    word = _lemma(token) if config.lemmatise else token
    return word if len(word) >= config.min_length and word not in stopwords else None


def rank_words(counts: Mapping[str, float]) -> list[tuple[str, float]]:
    """(word, count or frequency) pairs, highest first, ties alphabetically: the one order every word list follows."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


class WordCounter:
    """Streaming document-frequency counter over sentences.

    Holds the number of sentences seen and, per word, the number of sentences
    containing it: memory grows with the vocabulary, not with the sentences.
    """

    def __init__(self, config: WordConfig | None = None):
        self.config = config if config is not None else WordConfig()
        self._n_sentences = 0
        self._counts: Counter[str] = Counter()

    def update(self, sentences: Iterable[str]) -> None:
        """Count each sentence's distinct words once; ``sentences`` may be a generator."""
        if isinstance(sentences, str):
            raise TexplainError("update expects an iterable of sentences, got a single string")
        for sentence in sentences:
            self._counts.update(set(sentence_words(sentence, self.config)))
            self._n_sentences += 1

    @property
    def n_sentences(self) -> int:
        """Number of sentences counted so far (including ones with no content words)."""
        return self._n_sentences

    def document_counts(self) -> dict[str, int]:
        """Per word, how many sentences contain it at least once."""
        return dict(self._counts)

    def document_count(self, word: str) -> int:
        """How many sentences contain ``word``, without copying every count (a lookup per word, per image)."""
        return self._counts.get(word, 0)

    def frequencies(self) -> dict[str, float]:
        """Per word, the fraction of sentences containing it, most frequent first.

        Ties are ordered alphabetically so the result is deterministic; no
        sentences gives an empty dict.
        """
        if self._n_sentences == 0:
            return {}
        return {word: count / self._n_sentences for word, count in rank_words(self._counts)}

    def top(self, k: int | None = None) -> list[tuple[str, float]]:
        """The ``k`` (default ``config.top_k``) most frequent words as (word, frequency)."""
        if k is None:
            k = self.config.top_k
        require_int("k", k, minimum=0)
        return list(self.frequencies().items())[:k]

    def merge(self, other: WordCounter) -> None:
        """Add another counter's sentences and counts, e.g. to aggregate images into a class.

        Both counters must use the same configuration, otherwise the same
        sentence would have been counted as different words.
        """
        if other.config != self.config:
            raise TexplainError(
                f"cannot merge word counts made with different settings: "
                f"{other.config} vs {self.config}"
            )
        self._counts.update(other._counts)
        self._n_sentences += other._n_sentences

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state: config, sentence count and per-word document counts."""
        config = asdict(self.config)
        config["extra_stopwords"] = list(self.config.extra_stopwords)
        return {
            "config": config,
            "n_sentences": self._n_sentences,
            "document_counts": dict(sorted(self._counts.items())),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WordCounter:
        """Rebuild a counter from :meth:`to_dict` output, checking it is consistent."""
        try:
            config_fields = dict(data["config"])
            n_sentences = data["n_sentences"]
            counts = dict(data["document_counts"])
        except (KeyError, TypeError, ValueError) as error:
            raise TexplainError(f"word counts are malformed: missing or bad {error}") from error
        config_fields["extra_stopwords"] = tuple(config_fields.get("extra_stopwords", ()))
        try:
            config = WordConfig(**config_fields)
        except TypeError as error:
            raise TexplainError(f"word counts have a bad config: {error}") from error
        require_int("n_sentences", n_sentences, minimum=0)
        for word, count in counts.items():
            if not isinstance(word, str):
                raise TexplainError(f"word counts are malformed: word {word!r} is not a string")
            require_int(f"count of {word!r}", count, minimum=1)
            if count > n_sentences:
                raise TexplainError(
                    f"word counts are malformed: {word!r} is in {count} sentences "
                    f"but only {n_sentences} were counted"
                )
        counter = cls(config)
        counter._n_sentences = n_sentences
        counter._counts = Counter(counts)
        return counter


def count_words(sentences: Iterable[str], config: WordConfig | None = None) -> dict[str, float]:
    """Fraction of ``sentences`` containing each content word, most frequent first."""
    counter = WordCounter(config)
    counter.update(sentences)
    return counter.frequencies()

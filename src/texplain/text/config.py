"""The text room's settings: how sentences become counted words, and class names class vocabularies.

They live apart from the code that uses them (:mod:`.words`,
:mod:`.class_vocabulary`) so that the command line reads their defaults
without loading the lemmatiser, WordNet or the word-cloud package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from texplain.errors import TexplainError


@dataclass
class WordConfig:
    """How sentences become counted words.

    Attributes:
        top_k: How many words :meth:`~texplain.text.words.WordCounter.top` returns by default.
        min_length: Words shorter than this many characters (after
            lemmatising) are dropped; the default removes stray letters left by
            contractions and initials.
        extra_stopwords: Words to drop besides :data:`~texplain.text.words.STOP_WORDS`, e.g. a
            dataset's boilerplate. Matched case-insensitively against both the
            word and its lemma; stored lowercased, deduplicated and sorted so
            that equal sets give equal configs.
        lemmatise: Reduce words to their dictionary form (simplemma, checked
            against WordNet: :mod:`texplain.text.words`), so that plural and singular
            nouns count together.
    """

    top_k: int = 20
    min_length: int = 2
    extra_stopwords: tuple[str, ...] = ()
    lemmatise: bool = True

    def __post_init__(self) -> None:
        require_int("top_k", self.top_k, minimum=1)
        require_int("min_length", self.min_length, minimum=1)
        if not isinstance(self.extra_stopwords, (tuple, list, set, frozenset)):
            raise TexplainError(
                f"extra_stopwords must be a tuple of words, got {self.extra_stopwords!r}"
            )
        if not all(isinstance(word, str) and word.strip() for word in self.extra_stopwords):
            raise TexplainError(
                f"extra_stopwords must hold non-empty strings, got {self.extra_stopwords!r}"
            )
        normalised = {word.strip().lower() for word in self.extra_stopwords}
        self.extra_stopwords = tuple(sorted(normalised))
        if not isinstance(self.lemmatise, bool):
            raise TexplainError(f"lemmatise must be true or false, got {self.lemmatise!r}")


@dataclass(frozen=True)
class ClassOverride:
    """One class's hand edits: ``add`` and ``remove`` words, and ``wordnet`` on or off for it."""

    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    wordnet: bool = True

    def to_json(self) -> dict:
        return {"add": list(self.add), "remove": list(self.remove), "wordnet": self.wordnet}


@dataclass(frozen=True)
class ClassWordConfig:
    """How class names become class vocabularies.

    Attributes:
        wordnet: Expand names through WordNet at all (off: only the name's own
            words and the overrides' additions).
        senses: How many of the name's WordNet synsets (commonest first) to expand.
        hyponyms: Include every word below those synsets ("duck" for "bird").
        hypernym_depth: Levels of more general words to include
            ("dog" for "golden retriever" at 4); 0 for none.
        overrides: Per class name, a :class:`ClassOverride`.
    """

    wordnet: bool = True
    senses: int = 1
    hyponyms: bool = True
    hypernym_depth: int = 4
    overrides: Mapping[str, ClassOverride] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.senses < 1 or self.hypernym_depth < 0:
            raise TexplainError("class words: senses must be >= 1 and hypernym_depth >= 0")

    def to_json(self) -> dict:
        """JSON-ready settings (stored with results, so analysis uses the same vocabularies)."""
        return {"wordnet": self.wordnet, "senses": self.senses, "hyponyms": self.hyponyms,
                "hypernym_depth": self.hypernym_depth,
                "overrides": {name: o.to_json() for name, o in sorted(self.overrides.items())}}

    @classmethod
    def from_json(cls, data: Mapping) -> ClassWordConfig:
        overrides = parse_overrides(data.get("overrides", {}), "class-word settings")
        return cls(wordnet=bool(data.get("wordnet", cls.wordnet)), senses=int(data.get("senses", cls.senses)),
                   hyponyms=bool(data.get("hyponyms", cls.hyponyms)),
                   hypernym_depth=int(data.get("hypernym_depth", cls.hypernym_depth)), overrides=overrides)


def parse_overrides(data: object, where: str) -> dict[str, ClassOverride]:
    """Validate the {class: [words] | {add, remove, wordnet}} mapping."""
    if not isinstance(data, Mapping):
        raise TexplainError(f"{where}: class words must map class names to word lists or objects")
    overrides = {}
    for name, entry in data.items():
        if isinstance(entry, list):
            entry = {"add": entry}
        if not isinstance(entry, Mapping) or set(entry) - {"add", "remove", "wordnet"}:
            raise TexplainError(f"{where}: class {name!r} needs a word list or an object with add, remove, wordnet")
        lists = {key: entry.get(key, []) for key in ("add", "remove")}
        for key, words in lists.items():
            if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
                raise TexplainError(f"{where}: class {name!r}: {key} must be a list of words")
        if not isinstance(entry.get("wordnet", True), bool):
            raise TexplainError(f"{where}: class {name!r}: wordnet must be true or false")
        overrides[str(name)] = ClassOverride(tuple(lists["add"]), tuple(lists["remove"]), entry.get("wordnet", True))
    return overrides


def require_int(name: str, value: Any, minimum: int) -> None:
    """Raise a one-line error unless ``value`` is an int (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TexplainError(f"{name} must be an integer >= {minimum}, got {value!r}")

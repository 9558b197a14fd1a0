"""Which counted words mean "the class itself": the class name and its WordNet relatives.

This is the one rule for "does this word name the class" (:func:`names_class`):
the report's red words, the suspects, mitigation's selection, the causal
check's non-class word and evaluation's "top word names the class" all ask it.

A bird classifier's explanations say "seagull", "duck" or "sparrow" as often
as "bird"; none of them is a shortcut. A class's *vocabulary* is the set of
normalised words (as :func:`~texplain.text.words.sentence_words` makes them) that
count as the class:

* the class name: for a name of several words that WordNet knows as a phrase
  ("great white shark") the phrase's relatives and its head noun (the last
  word, "shark"), not the modifiers ("white" may well be a shortcut); for a
  phrase WordNet does not know, every word of the name;
* from WordNet 3.0 (offline, :func:`texplain.data.wordnet.wordnet`), for the
  name's first ``senses`` synsets (WordNet lists the commonest sense first,
  so "bird" is the animal, not the slang for a girl): their synonyms, every
  hyponym below a noun ("seagull" and "duck" under "bird") and hypernyms up to
  ``hypernym_depth`` levels (four reach "dog" from "golden retriever" and
  "cat" from "tabby", and stop well before "animal" for a dog breed);
* per-class overrides: words to add, words to remove, or WordNet off for one
  class, from a JSON or YAML file (see :func:`load_overrides`).

Only one-word lemmas are used: counted words are single tokens, so a phrase
("sea gull") could never match, and its parts ("sea") must not become the class.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from texplain.data.files import load_json, read_text
from texplain.errors import TexplainError, first_line
from texplain.optional import require
from texplain.text.config import ClassOverride, ClassWordConfig, WordConfig, parse_overrides
from texplain.text.words import sentence_words


def load_overrides(path: str | Path) -> dict[str, ClassOverride]:
    """Read per-class overrides from JSON or YAML.

    The file maps a class name to either a list of extra words
    (``{"bird": ["feather", "wing"]}``) or an object with any of ``add``,
    ``remove`` (lists of words) and ``wordnet`` (true/false).
    """
    path = Path(path)
    if path.suffix.lower() not in (".yaml", ".yml"):
        return parse_overrides(load_json(path), str(path))
    yaml = require("yaml", "reading YAML class words")
    try:
        data = yaml.safe_load(read_text(path))
    except (yaml.YAMLError, ValueError, RecursionError) as exc:  # a bad date is a ValueError, deep nesting recursion
        raise TexplainError(f"{path}: bad YAML ({first_line(exc)})") from exc
    return parse_overrides(data, str(path))


def class_vocabulary(name: str, config: ClassWordConfig, words: WordConfig | None = None) -> frozenset[str]:
    """The normalised words that count as class ``name`` (never empty unless the override removes all)."""
    words = words or WordConfig()
    override = config.overrides.get(name, ClassOverride())
    plain = name.replace("_", " ").replace("-", " ").strip()
    terms: set[str] = set()
    use_wordnet = config.wordnet and override.wordnet
    synsets = _synsets(plain, config.senses) if use_wordnet and " " in plain else []
    if synsets:
        terms.add(plain.split()[-1])
    else:
        terms.update(plain.split())
        if use_wordnet:
            synsets = _synsets(plain.split()[-1], config.senses)
    terms.update(_relatives(synsets, config))
    terms.update(override.add)
    vocabulary = {w for term in terms for w in sentence_words(term, words)}
    removed = {w for term in override.remove for w in sentence_words(term, words)}
    return frozenset(vocabulary - removed)


def names_class(word: str, name: str, config: ClassWordConfig | None = None, words: WordConfig | None = None) -> bool:
    """Whether the counted word ``word`` means class ``name``: it is in the class's vocabulary."""
    config, words = config or ClassWordConfig(), words or WordConfig()
    return word in _vocabulary(name, json.dumps([config.to_json(), asdict(words)], sort_keys=True))


@functools.lru_cache(maxsize=4096)
def _vocabulary(name: str, settings: str) -> frozenset[str]:
    """:func:`class_vocabulary` kept per (name, settings as JSON): a hyponym closure takes a noticeable time."""
    config, words = json.loads(settings)
    return class_vocabulary(name, ClassWordConfig.from_json(config), WordConfig(**words))


def class_vocabularies(
    names: Iterable[str], config: ClassWordConfig, words: WordConfig | None = None
) -> dict[str, frozenset[str]]:
    """Per class name, its vocabulary; unknown override names are an error (a typo would silently do nothing)."""
    names = list(names)
    unknown = sorted(set(config.overrides) - set(names))
    if unknown:
        raise TexplainError(f"class words: no class named {', '.join(map(repr, unknown))} (classes: {', '.join(names)})")
    return {name: class_vocabulary(name, config, words) for name in names}


def word_index(vocabularies: Mapping[str, Iterable[str]]) -> dict[str, tuple[str, ...]]:
    """Inverse of :func:`class_vocabularies`: word → the classes whose vocabulary holds it."""
    index: dict[str, list[str]] = {}
    for name, vocabulary in vocabularies.items():
        for word in vocabulary:
            index.setdefault(word, []).append(name)
    return {word: tuple(names) for word, names in index.items()}


def class_mentions(sentences: Iterable[str], index: Mapping[str, Sequence[str]], words: WordConfig) -> dict[str, int]:
    """Per class, how many sentences mention at least one of its words.

    A union over the vocabulary, which per-word document counts cannot give
    afterwards: a sentence saying both "duck" and "bird" counts once for bird.
    """
    counts: dict[str, int] = {}
    for sentence in sentences:
        hit = {name for word in set(sentence_words(sentence, words)) for name in index.get(word, ())}
        for name in hit:
            counts[name] = counts.get(name, 0) + 1
    return counts


def _synsets(term: str, senses: int) -> list:
    """The term's first ``senses`` WordNet synsets (any part of speech, commonest first)."""
    from texplain.data.wordnet import wordnet

    return wordnet().synsets(term.replace(" ", "_"))[:senses]


def _relatives(synsets: Sequence, config: ClassWordConfig) -> set[str]:
    """One-word lemma names of the synsets, their hyponyms (all levels) and hypernyms (some levels).

    Hyponyms are taken below nouns only: below verbs WordNet lists manners of
    doing ("sky" under "throw"), which are scenes rather than the class.
    """
    related = list(synsets)
    for synset in synsets:
        if config.hyponyms and synset.pos() == "n":
            related.extend(synset.closure(lambda s: s.hyponyms() + s.instance_hyponyms()))
        related.extend(synset.closure(lambda s: s.hypernyms(), depth=config.hypernym_depth) if config.hypernym_depth else [])
    return {lemma.lower() for s in related for lemma in s.lemma_names() if lemma.isalpha()}

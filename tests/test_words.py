"""Dominant-word counting on hand-written sentences with hand-computed fractions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from texplain.errors import TexplainError
from texplain.text.config import WordConfig
from texplain.text.words import WordCounter, count_words, sentence_words

SENTENCES = [
    "A dog runs on the grass.",
    "Two dogs play with a ball, and the dog barks.",
    "A cat sleeps on the grass.",
    "The photo shows nothing.",
]
"""Content words per sentence (distinct): {dog, run, grass}, {two, dog, play, ball, bark},
{cat, sleep, grass}, {show, nothing} ("photo" is a caption filler). Four sentences in all."""


def test_sentence_words_drops_stopwords_digits_and_punctuation_and_keeps_order() -> None:
    words = sentence_words("The 3 dogs, and a cat's toy... in the photo!", WordConfig())
    assert words == ["dog", "cat", "toy"]


def test_plural_and_singular_nouns_merge() -> None:
    config = WordConfig()
    assert sentence_words("dogs dog Dogs", config) == ["dog", "dog", "dog"]
    assert sentence_words("children women buses", config) == ["child", "woman", "bus"]


SIMPLEMMA_NON_WORDS = (
    "playing", "outstretched", "bikers", "waterskiing", "guarding", "kayakers", "backlit", "unseen", "wetsuits", "suds",
    "drenched", "waterskis", "travelling", "ollies", "mixing", "frolicking", "fixing", "thinking", "mouthguards",
    "mixed",
    "frolicks", "windsurfers", "unspooled", "unpainted", "trows", "trekkies", "tatoos", "shrowded", "sandcastles",
    "recked", "powerlines", "pompoms", "playes", "patroling", "paraglides", "loaves", "labelled", "karts", "jetskiing",
    "hoodies", "helments", "guarded", "griding", "gelled", "fixes", "developed", "deposited", "crafted", "cosplayers",
    "clowds", "cathing", "breakdances", "ballons", "backflips", "accends",
)
"""Flickr8k caption words whose simplemma lemma is not a WordNet lemma ("playing" → "playe", 1,730 times)."""

FLICKR8K_CAPTIONS = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k" / "captions.tsv"


def test_simplemma_non_words_become_wordnet_base_forms() -> None:
    words = sentence_words("playing guarding mixed drenched travelling loaves", WordConfig())
    assert words == ["play", "guard", "mix", "drench", "travel", "loaf"]
    assert sentence_words("kayakers outstretched unseen", WordConfig()) == ["kayakers", "outstretched", "unseen"]


def _wordnet_lemma_or_itself(words: list[str]) -> list[tuple[str, str]]:
    """The (word, lemma) pairs whose lemma is neither a WordNet lemma nor the word as written."""
    from texplain.data.wordnet import wordnet

    lemmas = set(wordnet().all_lemma_names())
    kept = [(word, sentence_words(word, WordConfig(min_length=1))) for word in words]
    return [(word, lemma[0]) for word, lemma in kept if lemma and lemma[0] != word and lemma[0] not in lemmas]


def test_every_lemma_of_simplemma_non_words_is_a_word() -> None:
    assert _wordnet_lemma_or_itself(list(SIMPLEMMA_NON_WORDS)) == []


@pytest.mark.skipif(not FLICKR8K_CAPTIONS.is_file(), reason="Flickr8k captions not beside the project")
def test_every_lemma_of_the_flickr8k_caption_vocabulary_is_a_word() -> None:
    vocabulary = set()
    for line in FLICKR8K_CAPTIONS.read_text(encoding="utf-8").splitlines()[1:]:
        vocabulary.update(re.findall(r"[a-z]+", line.split("\t")[-1].lower()))
    assert len(vocabulary) > 7000
    assert _wordnet_lemma_or_itself(sorted(vocabulary)) == []


def test_lemmatise_off_keeps_surface_forms() -> None:
    assert sentence_words("Dogs and a dog", WordConfig(lemmatise=False)) == ["dogs", "dog"]


def test_min_length_and_extra_stopwords() -> None:
    config = WordConfig(min_length=4, extra_stopwords=("Grass",))
    assert sentence_words("a dog runs on the grass near trees", config) == ["near", "tree"]


def test_extra_stopword_matches_the_lemma_too() -> None:
    assert sentence_words("dogs chase cats", WordConfig(extra_stopwords=("dog",))) == [
        "chase",
        "cat",
    ]


def test_count_words_gives_fraction_of_sentences_containing_each_word() -> None:
    frequencies = count_words(SENTENCES)
    assert frequencies == {
        "dog": 0.5,
        "grass": 0.5,
        "ball": 0.25,
        "bark": 0.25,
        "cat": 0.25,
        "nothing": 0.25,
        "play": 0.25,
        "run": 0.25,
        "show": 0.25,
        "sleep": 0.25,
        "two": 0.25,
    }
    assert list(frequencies) == sorted(frequencies, key=lambda w: (-frequencies[w], w))


def test_word_repeated_in_one_sentence_counts_once() -> None:
    assert count_words(["dog dog dogs", "cat"]) == {"cat": 0.5, "dog": 0.5}


def test_empty_input_has_no_frequencies() -> None:
    counter = WordCounter()
    counter.update([])
    assert counter.n_sentences == 0
    assert counter.frequencies() == {}
    assert counter.top() == []
    assert count_words([]) == {}


def test_sentences_without_content_words_still_count_in_the_denominator() -> None:
    assert count_words(["the and of", "a dog"]) == {"dog": 0.5}


def test_streaming_two_updates_equals_one_update() -> None:
    streamed = WordCounter()
    streamed.update(iter(SENTENCES[:1]))
    streamed.update(sentence for sentence in SENTENCES[1:])
    whole = WordCounter()
    whole.update(SENTENCES)
    assert streamed.n_sentences == whole.n_sentences == 4
    assert streamed.document_counts() == whole.document_counts()
    assert streamed.frequencies() == whole.frequencies()


def test_document_counts_are_sentences_per_word() -> None:
    counter = WordCounter()
    counter.update(SENTENCES)
    assert counter.document_counts()["dog"] == 2
    assert counter.document_counts()["bark"] == 1


def test_top_defaults_to_config_top_k_and_ranks_by_frequency_then_word() -> None:
    counter = WordCounter(WordConfig(top_k=3))
    counter.update(SENTENCES)
    assert counter.top() == [("dog", 0.5), ("grass", 0.5), ("ball", 0.25)]
    assert counter.top(1) == [("dog", 0.5)]
    assert counter.top(0) == []


def test_merge_adds_counts_and_sentences() -> None:
    first = WordCounter()
    first.update(SENTENCES[:2])
    second = WordCounter()
    second.update(SENTENCES[2:])
    first.merge(second)
    assert first.n_sentences == 4
    assert first.frequencies() == count_words(SENTENCES)


def test_merge_refuses_counters_with_different_settings() -> None:
    with pytest.raises(TexplainError, match="different settings"):
        WordCounter().merge(WordCounter(WordConfig(lemmatise=False)))


def test_json_round_trip_preserves_counts_and_config() -> None:
    counter = WordCounter(WordConfig(top_k=5, extra_stopwords=("ball",)))
    counter.update(SENTENCES)
    restored = WordCounter.from_dict(json.loads(json.dumps(counter.to_dict())))
    assert restored.config == counter.config
    assert restored.n_sentences == 4
    assert restored.document_counts() == counter.document_counts()
    assert restored.frequencies() == counter.frequencies()
    assert "ball" not in restored.frequencies()


@pytest.mark.parametrize(
    "data",
    [
        {"n_sentences": 1, "document_counts": {}},
        {"config": {}, "n_sentences": 1, "document_counts": {"dog": 2}},
        {"config": {"top_k": 0}, "n_sentences": 1, "document_counts": {}},
        {"config": {"colour": "red"}, "n_sentences": 1, "document_counts": {}},
        {"config": {}, "n_sentences": -1, "document_counts": {}},
    ],
)
def test_from_dict_rejects_malformed_data(data: dict) -> None:
    with pytest.raises(TexplainError):
        WordCounter.from_dict(data)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"top_k": 0}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"min_length": 0}, "min_length"),
        ({"min_length": True}, "min_length"),
        ({"extra_stopwords": "dog"}, "extra_stopwords"),
        ({"extra_stopwords": ("dog", "")}, "extra_stopwords"),
        ({"lemmatise": "yes"}, "lemmatise"),
    ],
)
def test_bad_config_raises_one_line_error(fields: dict, message: str) -> None:
    with pytest.raises(TexplainError, match=message) as caught:
        WordConfig(**fields)
    assert "\n" not in str(caught.value)


def test_extra_stopwords_are_normalised_so_equal_sets_give_equal_configs() -> None:
    assert WordConfig(extra_stopwords=["Ball", "tree", "ball"]) == WordConfig(
        extra_stopwords=("tree", "ball")
    )


def test_update_refuses_a_bare_string() -> None:
    with pytest.raises(TexplainError, match="single string"):
        WordCounter().update("a dog on grass")

"""Class vocabularies from WordNet (offline) and per-class overrides."""

from __future__ import annotations

import json

import pytest

from texplain.errors import TexplainError
from texplain.text.class_vocabulary import (
    class_mentions,
    class_vocabularies,
    class_vocabulary,
    load_overrides,
    names_class,
    word_index,
)
from texplain.text.config import ClassOverride, ClassWordConfig, WordConfig


@pytest.fixture(scope="module")
def default() -> ClassWordConfig:
    return ClassWordConfig()


def test_hyponyms_synonyms_and_hypernyms_count_as_the_class(default):
    bird = class_vocabulary("bird", default)
    assert {"bird", "seagull", "duck", "sparrow", "vertebrate", "animal"} <= bird  # animal: three levels up
    assert not {"water", "girl", "sky"} & bird  # not the scene, not the slang sense
    assert "animal" not in class_vocabulary("bird", ClassWordConfig(hypernym_depth=1))
    car = class_vocabulary("car", default)
    assert {"car", "automobile", "cab", "convertible"} <= car and "road" not in car


def test_words_are_normalised_like_counted_words(default):
    # lemmas go through sentence_words: plural and case as a caption would give them
    dog = class_vocabulary("Dog", ClassWordConfig(wordnet=False))
    assert dog == {"dog"}
    assert "vault" in class_vocabulary("pole vaulting", default)


def test_multi_word_names(default):
    shark = class_vocabulary("great white shark", default)
    assert "shark" in shark and "white" not in shark and "great" not in shark
    # a phrase WordNet does not know keeps every word of the name
    assert {"stripe", "cat", "tabby"} <= class_vocabulary("striped cat", default)  # "striped" lemmatised
    assert class_vocabulary("striped_cat", ClassWordConfig(wordnet=False)) == {"stripe", "cat"}


def test_wordnet_off_and_hypernym_depth(default):
    assert class_vocabulary("bird", ClassWordConfig(wordnet=False)) == {"bird"}
    assert "vertebrate" not in class_vocabulary("bird", ClassWordConfig(hypernym_depth=0))
    assert "duck" not in class_vocabulary("bird", ClassWordConfig(hyponyms=False))
    assert "chordate" in class_vocabulary("bird", ClassWordConfig(hypernym_depth=3))


def test_overrides_add_remove_and_switch_off_wordnet():
    config = ClassWordConfig(overrides={
        "bird": ClassOverride(add=("Feathers",), remove=("duck",)),
        "car": ClassOverride(wordnet=False),
    })
    bird = class_vocabulary("bird", config)
    assert "feather" in bird and "duck" not in bird and "seagull" in bird
    assert class_vocabulary("car", config) == {"car"}


def test_overrides_from_json_and_yaml(tmp_path):
    as_json = tmp_path / "words.json"
    as_json.write_text(json.dumps({"bird": ["wing"], "car": {"remove": ["cab"], "wordnet": True}}))
    as_yaml = tmp_path / "words.yaml"
    as_yaml.write_text("bird: [wing]\ncar:\n  remove: [cab]\n")
    for path in (as_json, as_yaml):
        overrides = load_overrides(path)
        assert overrides["bird"].add == ("wing",)
        assert overrides["car"].remove == ("cab",) and overrides["car"].wordnet is True


@pytest.mark.parametrize("text,message", [
    ("[1, 2]", "must map class names"),
    ('{"bird": 3}', "word list or an object"),
    ('{"bird": {"add": [""]}}', "add must be a list of words"),
    ('{"bird": {"wordnet": "no"}}', "wordnet must be true or false"),
    ('{"bird": ', "bad JSON"),
])
def test_bad_override_files_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "words.json"
    path.write_text(text)
    with pytest.raises(TexplainError, match=message):
        load_overrides(path)


def test_an_override_for_an_unknown_class_is_refused():
    config = ClassWordConfig(wordnet=False, overrides={"brid": ClassOverride(add=("x",))})
    with pytest.raises(TexplainError, match="no class named 'brid'"):
        class_vocabularies(["bird", "car"], config)


def test_config_round_trips_through_json():
    config = ClassWordConfig(senses=2, overrides={"bird": ClassOverride(add=("wing",), wordnet=False)})
    assert ClassWordConfig.from_json(json.loads(json.dumps(config.to_json()))) == config


def test_class_mentions_count_each_sentence_once_per_class():
    vocabularies = {"bird": frozenset({"bird", "duck", "seagull"}), "car": frozenset({"car"})}
    sentences = [
        "a duck and a bird on the water",  # bird once, though two of its words
        "seagulls over the sea",            # plural lemmatised to seagull
        "a car and a duck",                 # both classes
        "the water is calm",                # neither
    ]
    assert class_mentions(sentences, word_index(vocabularies), WordConfig()) == {"bird": 3, "car": 1}


def test_top_word_names_class_through_wordnet():
    assert names_class("dog", "golden retriever")  # four is-a steps up
    assert names_class("cat", "tabby")
    assert names_class("shark", "great white shark")  # a word of the name
    assert not names_class("grass", "dog")
    assert not names_class("animal", "golden retriever")  # too general
    assert not names_class("dog", "class_0")  # not in WordNet

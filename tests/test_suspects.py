"""The one suspect rule, on hand-made counts: merging the class's words, the frequency, lift and z tests."""

from __future__ import annotations

import pytest

from texplain.analysis.config import SuspectRule
from texplain.analysis.lm_prior import LMPrior, PriorSample
from texplain.analysis.suspects import ClassMerge, dominant_words, rank_suspects
from texplain.errors import TexplainError
from texplain.statistics import compare_counts
from texplain.text.words import WordCounter


def prior_saying(word: str, sentences: int = 100) -> LMPrior:
    """A prior whose every sentence says ``word`` and nothing else."""
    counter = WordCounter()
    counter.update([f"the {word}"] * sentences)
    return LMPrior(counter, {})


def prior_of_kinds(**sentences: list[str]) -> LMPrior:
    """A prior whose null-prefix kinds wrote these sentences (the pooled counts are their sum)."""
    by_kind, pooled = {}, WordCounter()
    for kind, written in sentences.items():
        counter = WordCounter()
        counter.update(written)
        pooled.merge(counter)
        by_kind[kind] = PriorSample(counter, {})
    return LMPrior(pooled, {}, tuple(by_kind), by_kind)


def test_class_words_merge_into_one_entry_with_the_exact_mention_count():
    merge = ClassMerge("bird", frozenset({"bird", "duck"}))
    assert merge({"duck": 30, "bird": 20, "water": 50}, {"bird": 45}) == {"water": 50, "bird": 45}
    outside = ClassMerge("heron", frozenset({"heron", "egret"}), indexed=False)  # a label the classifier lacks
    assert outside({"heron": 3, "egret": 9, "water": 5}, {}) == {"water": 5, "heron": 9}  # a lower bound


def test_a_word_over_represented_against_classes_and_prior_is_the_suspect():
    merge = ClassMerge("bird", frozenset({"bird"}))
    own = {"water": 80, "bird": 40, "man": 60, "sky": 3}
    rest = {"water": 10, "man": 120, "road": 90}
    found = rank_suspects(own, 100, rest, merge, prior_saying("man"), SuspectRule())
    # man is frequent but the LM says it anyway and other classes say it more; sky is too rare; bird is the class.
    assert [s.word for s in found] == ["water"]
    water = found[0]
    z_classes = {s.word: s.z for s in compare_counts(own, rest)}["water"]
    assert water.z_classes == pytest.approx(z_classes)
    assert water.frequency == pytest.approx(0.8) and water.low < 0.8 < water.high
    assert water.lift == pytest.approx((0.8 / 0.2) / ((0.5 / 101) / (100.5 / 101)))  # odds ratio


def test_a_word_the_prior_says_often_is_still_a_suspect_when_the_class_says_it_nearly_always():
    # The demo's LM says "snow" after 87% of its null prefixes; the class says it in 98% of its sentences.
    merge = ClassMerge("car", frozenset({"car"}))
    counter = WordCounter()
    counter.update(["deep white snow two"] * 870 + ["two road"] * 130)
    own = {"snow": 294, "car": 60, "white": 100, "deep": 100, "two": 100}
    found = rank_suspects(own, 300, {"snow": 30, "road": 200, "white": 100, "two": 150}, merge, LMPrior(counter, {}),
                          SuspectRule())
    assert [s.word for s in found] == ["snow"]
    assert 0.98 / (870.5 / 1001) < SuspectRule().min_lift < found[0].lift  # a ratio of frequencies would stay below


def test_without_a_prior_only_the_classes_are_compared():
    merge = ClassMerge("bird", frozenset({"bird"}))
    own, rest = {"water": 80, "man": 90}, {"man": 10, "road": 90}
    found = rank_suspects(own, 100, rest, merge, None, SuspectRule())
    z = {s.word: s.z for s in compare_counts(own, rest)}
    assert z["water"] > z["man"] > 1.96  # water is never said elsewhere: the stronger evidence
    assert [s.word for s in found] == ["water", "man"] and all(s.z_prior is None and s.lift is None for s in found)


def test_thresholds_and_limit_apply():
    merge = ClassMerge("bird", frozenset({"bird"}))
    own, rest = {"water": 80, "lake": 70, "pond": 60}, {"road": 90}
    assert [s.word for s in rank_suspects(own, 100, rest, merge, None, SuspectRule(limit=2))] == ["water", "lake"]
    assert rank_suspects(own, 100, rest, merge, None, SuspectRule(min_frequency=0.9)) == []
    assert rank_suspects(own, 0, rest, merge, None, SuspectRule()) == []
    with pytest.raises(TexplainError):
        SuspectRule(limit=0)


def test_one_image_dominant_words_use_the_same_merge_and_lift():
    merge = ClassMerge("dog", frozenset({"dog", "puppy"}))
    counts = merge({"sand": 6, "dog": 3, "puppy": 4, "man": 9}, {"dog": 7})
    found = dominant_words(counts, 10, merge, prior_saying("man", 10), 0.1, 1.5)
    assert [d.word for d in found] == ["dog", "sand"]  # man is the LM's own word
    assert found[0].frequency == pytest.approx(0.7)


def test_a_place_one_null_prefix_leaks_is_still_a_suspect_when_another_does_not_say_it():
    """The object-pretrained demo: its mean image says "snow", its blank one rarely; the car class says it often."""
    prior = prior_of_kinds(blank=["calm water"] * 180 + ["deep snow"] * 20, mean=["deep snow"] * 150 + ["two"] * 50)
    assert prior.frequency("snow") == pytest.approx(20.5 / 201)  # the blank prefix's, not the pooled 170 of 400
    merge = ClassMerge("car", frozenset({"car"}))
    own, rest = {"snow": 45, "car": 40, "two": 30}, {"snow": 10, "two": 60, "road": 80}
    found = rank_suspects(own, 100, rest, merge, prior, SuspectRule())
    assert [s.word for s in found] == ["snow"]
    z_blank = {s.word: s.z for s in compare_counts(own, merge.prior_counts(prior)[0])}["snow"]
    assert found[0].z_prior == pytest.approx(z_blank)  # the larger z of the two kinds
    pooled = LMPrior(prior.counter, {})  # a prior file written before kinds were kept apart
    assert pooled.frequency("snow") == pytest.approx(170.5 / 401)
    assert rank_suspects(own, 100, rest, merge, pooled, SuspectRule()) == []


def test_a_word_every_null_prefix_says_stays_the_lms_own():
    prior = prior_of_kinds(blank=["man standing"] * 150 + ["calm"] * 50, mean=["man"] * 160 + ["snow"] * 40)
    merge = ClassMerge("diving", frozenset({"diving"}))
    own, rest = {"man": 70, "water": 60}, {"man": 20, "road": 80}
    assert [s.word for s in rank_suspects(own, 100, rest, merge, prior, SuspectRule())] == ["water"]


def test_a_prior_round_trips_with_its_kinds():
    prior = prior_of_kinds(blank=["calm water"] * 3, shuffled=["deep snow"] * 5)
    prior.by_kind["blank"].mentions["bird"] = 2
    back = LMPrior.from_dict(prior.to_dict())
    assert back.kinds == ("blank", "shuffled")
    assert {k: (s.counter.document_counts(), s.mentions) for k, s in back.by_kind.items()} == \
        {"blank": ({"calm": 3, "water": 3}, {"bird": 2}), "shuffled": ({"deep": 5, "snow": 5}, {})}
    assert back.mention_frequency("bird") == pytest.approx(0.5 / 6)  # shuffled never mentions it

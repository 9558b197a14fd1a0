"""When an image has enough sentences: its top-k words are settled.

The paper draws a fixed 1000 sentences per image. What a user reads is the
top-k dominant words, and for most images those are clear long before 1000:
a word said in 60% of the sentences and one said in 10% do not swap places
with more samples. Sentences are therefore drawn in rounds, and an image
stops when its top-k set is *settled*:

    at most ``tolerance`` of the top-k words have a Wilson interval (at
    ``confidence``) that still overlaps the interval of the best word outside
    the top k,

and at least ``min_sentences`` were drawn (a word seen in all of the first
ten sentences is not yet a finding). Words whose frequencies tie never
separate, so such an image runs to the cap.

The defaults (80% intervals, up to three of the ten words still uncertain)
were chosen by ``benchmarks/stop_rules.py``, which replays rules on the same
real sentences (50 Flickr8k dev photos, the Flickr8k translator) and compares
the words where a rule stops with an independent 1000-sentence draw. Two
independent 1000-sentence draws agree on only 9.2 of their top 10 words:
real photos' tenth and eleventh words are often a hair apart, so demanding
that every boundary word be settled (95%, one uncertain word) ran nearly
every photo to the cap (median 1000 sentences). The defaults stop at a
median of 350 sentences (mean 478) with 9.0 of 10 words in common with the
independent draw; 200 sentences would give 8.8 whatever the rule.

Why not "the top-k set is unchanged over a few rounds": a set can stay the
same by chance while two of its words are level with outside words, and a
stable set says nothing about how far it is from the cap's answer.
"""

from __future__ import annotations

from collections.abc import Mapping

from texplain.generate.config import StopRule
from texplain.statistics import wilson_interval
from texplain.text.words import rank_words


def uncertain_words(counts: Mapping[str, int], n_sentences: int, rule: StopRule) -> int:
    """How many of the top-k words could still swap with the best word outside them.

    counts: per word, the sentences that contain it (document counts).
    With no more than k words seen, nothing outside can displace them: 0.
    """
    ranked = rank_words(counts)
    if len(ranked) <= rule.k or n_sentences == 0:
        return 0
    inside = [c for _, c in ranked[: rule.k]]
    low, _ = wilson_interval(inside, [n_sentences] * len(inside), rule.confidence)
    _, high = wilson_interval([ranked[rule.k][1]], [n_sentences], rule.confidence)
    return int((low <= high[0]).sum())


def settled(counts: Mapping[str, int], n_sentences: int, rule: StopRule) -> bool:
    """Whether an image with these document counts over ``n_sentences`` sentences may stop."""
    return n_sentences >= rule.min_sentences and uncertain_words(counts, n_sentences, rule) <= rule.tolerance

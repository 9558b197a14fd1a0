"""Adaptive sampling's stopping rule on hand-made count streams, and explaining many images in shared batches."""

from __future__ import annotations

import random

import pytest
import torch

from test_sampling import WORDS, tiny_gpt2, word_tokenizer
from texplain.errors import TexplainError
from texplain.generate.config import ExplainConfig, SamplingConfig, StopRule
from texplain.generate.explain import explain_features, explain_stream
from texplain.generate.stopping import settled, uncertain_words
from texplain.models.lm import FrozenLM
from texplain.text.config import WordConfig

RULE = StopRule(k=10, confidence=0.95, tolerance=1, min_sentences=50)


def stopping_point(probabilities: dict[str, float], cap: int = 1000, round_size: int = 25, seed: int = 0,
                   rule: StopRule = RULE) -> int:
    """Sentences drawn when the rule stops a stream whose sentences each say word w with probability p_w."""
    rng = random.Random(seed)
    counts: dict[str, int] = {}
    for n in range(round_size, cap + 1, round_size):
        for _ in range(round_size):
            for word, p in probabilities.items():
                if rng.random() < p:
                    counts[word] = counts.get(word, 0) + 1
        if settled(counts, n, rule):
            return n
    return cap


def test_top_words_far_apart_stop_early():
    clear = {f"top{i}": 0.9 - 0.04 * i for i in range(10)} | {f"rare{i}": 0.05 for i in range(20)}
    assert stopping_point(clear) <= 100


@pytest.mark.parametrize("rule", [RULE, StopRule()], ids=["strict", "default"])
def test_tied_words_at_the_boundary_run_to_the_cap(rule):
    tied = {f"w{i}": 0.3 for i in range(14)}
    assert stopping_point(tied, rule=rule) == 1000
    assert stopping_point(tied, seed=1, rule=rule) == 1000


def test_the_default_rule_stops_where_only_the_boundary_words_are_close():
    # seven clear words, then four within a point of each other around the tenth place
    close = {f"top{i}": 0.9 - 0.08 * i for i in range(7)} | {f"edge{i}": 0.2 - 0.01 * i for i in range(4)}
    assert stopping_point(close, rule=StopRule()) < 1000 and stopping_point(close) == 1000


def test_the_default_tolerance_is_a_share_of_k():
    assert [StopRule(k=k).tolerance for k in (1, 3, 10, 20)] == [0, 1, 3, 6]
    assert StopRule(k=3, tolerance=0).tolerance == 0


def test_uncertain_words_by_hand():
    counts = {f"a{i}": 90 for i in range(9)} | {"edge": 30, "out": 28, "far": 2}
    assert uncertain_words(counts, 100, RULE) == 1  # only "edge" overlaps "out"
    assert settled(counts, 100, RULE) and not settled(counts, 40, RULE)  # too few sentences yet
    assert uncertain_words({"a": 5, "b": 3}, 10, RULE) == 0  # fewer than k words: nothing can displace them
    with pytest.raises(TexplainError):
        StopRule(k=0)


def double_lm() -> FrozenLM:
    """A tiny GPT-2 in float64, so that batching cannot change a single logit bit that matters."""
    tokenizer = word_tokenizer()
    return FrozenLM(tiny_gpt2(len(tokenizer), init=0.3).double(), tokenizer, "tiny64")


class Prefixes(torch.nn.Module):
    """A stand-in translator: each image's 'features' are already its prefix (1, K, d)."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


@pytest.mark.parametrize("adaptive", [False, True])
def test_shared_batches_give_each_image_its_own_sentences(adaptive):
    lm = double_lm()
    images = [torch.randn(4, 32, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in range(5)]
    sampling = SamplingConfig(num_samples=60, min_words=2, max_words=6, batch_size=90, round_size=15, seed=3,
                              adaptive=adaptive, stop=StopRule(k=3, min_sentences=15))
    config = ExplainConfig(sampling=sampling, words=WordConfig(min_length=1))
    together = list(explain_stream(Prefixes(), lm, images, config))
    alone = [explain_features(Prefixes(), lm, image, config) for image in images]
    assert [e.sentences for e in together] == [e.sentences for e in alone]
    assert all(set(" ".join(e.sentences).split()) <= set(WORDS) for e in together)
    lengths = [len(e.sentences) for e in together]
    assert all(15 <= n <= 60 and n % 15 == 0 for n in lengths) if adaptive else lengths == [60] * 5


def test_adaptive_needs_a_k_the_lm_can_settle():
    lm = double_lm()
    config = ExplainConfig(sampling=SamplingConfig(num_samples=10, adaptive=True, stop=StopRule(k=len(lm.tokenizer))))
    with pytest.raises(TexplainError, match="can never settle"):
        explain_features(Prefixes(), lm, torch.randn(4, 32, dtype=torch.float64), config)

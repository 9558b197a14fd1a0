"""The linear probe and precision@k on hand-made features whose words are known."""

from __future__ import annotations

import pytest
import torch

from texplain.errors import TexplainError
from texplain.evaluation.metrics import precision_at_k
from texplain.evaluation.probe import ProbeConfig, fit_probe

WORDS = ["dog", "grass", "water", "snow", "car", "road"]


def world(n: int, seed: int) -> tuple[torch.Tensor, list[set[str]]]:
    """Feature d carries word d (plus noise and six distractor dimensions); each image has two or three words."""
    generator = torch.Generator().manual_seed(seed)
    present = torch.rand(n, len(WORDS), generator=generator) < 0.4  # (N, 6)
    features = torch.cat([present.float() * 2 + 0.3 * torch.randn(n, len(WORDS), generator=generator),
                          torch.randn(n, 6, generator=generator)], dim=1)  # (N, 12)
    return features, [{w for w, p in zip(WORDS, row) if p} for row in present.tolist()]


def test_the_probe_reads_out_linearly_held_words():
    features, words = world(400, 0)
    probe = fit_probe(features, words, ProbeConfig(min_images=5, k=3))
    test_features, test_words = world(100, 1)
    tops = probe.top_words(test_features, 2)
    precision = sum(precision_at_k(t, w, 2) for t, w in zip(tops, test_words) if w) / sum(1 for w in test_words if w)
    assert precision > 0.9
    assert sorted(probe.vocabulary) == sorted(WORDS) and probe.penalty in ProbeConfig().penalties
    assert set(probe.validation) == set(ProbeConfig().penalties)


def test_rare_words_stay_out_of_the_vocabulary():
    features, words = world(50, 2)
    words[0] = words[0] | {"zebra"}
    assert "zebra" not in fit_probe(features, words).vocabulary


def test_precision_at_k_on_a_hand_made_example():
    assert precision_at_k(["dog", "grass", "sky"], {"dog", "grass", "ball"}, k=3) == pytest.approx(2 / 3)
    assert precision_at_k(["sky", "dog"], {"dog"}, k=1) == 0.0


def test_bad_input_is_one_error():
    with pytest.raises(TexplainError):
        fit_probe(torch.zeros(3, 4), [{"a"}] * 3)
    with pytest.raises(TexplainError):
        fit_probe(torch.zeros(20, 4), [set()] * 20)

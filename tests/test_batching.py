"""Batches of similar caption lengths for the caption LM."""

from __future__ import annotations

import torch

from texplain.training.batching import length_batches


def test_length_batches_hold_every_item_once_and_group_similar_lengths():
    lengths = [i % 7 for i in range(203)]
    batches = length_batches(lengths, 10, torch.Generator().manual_seed(0))
    assert sorted(i for b in batches for i in b) == list(range(203))
    assert min(len(b) for b in batches) >= 2  # a last batch of one joins the one before
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 2  # random batches of lengths 0..6 would spread about 5


def test_the_same_generator_state_gives_the_same_batches():
    lengths = [i % 5 for i in range(50)]
    first = length_batches(lengths, 8, torch.Generator().manual_seed(3))
    assert first == length_batches(lengths, 8, torch.Generator().manual_seed(3))
    assert first != length_batches(lengths, 8, torch.Generator().manual_seed(4))

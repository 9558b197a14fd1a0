"""Batches for training: similar lengths for the caption LM, random samples for the translator (batch norm)."""

from __future__ import annotations

import torch

from texplain.training.batching import length_batches, shuffled_batches


def test_length_batches_hold_every_item_once_and_group_similar_lengths():
    lengths = [i % 7 for i in range(203)]
    batches = length_batches(lengths, 10, torch.Generator().manual_seed(0))
    assert sorted(i for b in batches for i in b) == list(range(203))
    assert min(len(b) for b in batches) >= 2  # a last batch of one joins the one before
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 2  # random batches of lengths 0..6 would spread about 5


def test_shuffled_batches_mix_items_that_length_batches_would_keep_apart():
    lengths = [10] * 64 + [20] * 64  # two caption templates, two kinds of image
    mixed = shuffled_batches(len(lengths), 16, torch.Generator().manual_seed(0))
    assert sorted(i for b in mixed for i in b) == list(range(128))
    assert all(len({lengths[i] for i in b}) == 2 for b in mixed)
    apart = length_batches(lengths, 16, torch.Generator().manual_seed(0))
    assert all(len({lengths[i] for i in b}) == 1 for b in apart)


def test_the_same_generator_state_gives_the_same_batches():
    first = shuffled_batches(50, 8, torch.Generator().manual_seed(3))
    assert first == shuffled_batches(50, 8, torch.Generator().manual_seed(3))
    assert first != shuffled_batches(50, 8, torch.Generator().manual_seed(4))

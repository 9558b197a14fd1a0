"""Masks spread over the classes: every class ends with the most-masked class's share, the added images borrow picked
maps, the picked images keep their own."""

from __future__ import annotations

import torch

from texplain.mitigation.spread import spread_count, spread_masks, spread_targets


def labels_and_picks():
    """Three classes of 20, 10 and 30 images; 10 of class 0 picked (half of it), 1 of class 1, none of class 2."""
    labels = torch.tensor([0] * 20 + [1] * 10 + [2] * 30)
    index = list(range(0, 20, 2)) + [25]
    heats = [torch.full((4, 4), float(k)) for k in range(len(index))]  # each map told apart by its value
    return labels, index, heats


def test_every_class_gets_the_most_masked_share():
    labels, index, _ = labels_and_picks()
    assert spread_targets(labels, index, 3).tolist() == [10, 5, 15]
    assert spread_targets(labels, index, 4).tolist() == [10, 5, 15, 0]  # a class with no image stays at none
    assert spread_count(labels, index, 3) == 30


def test_spread_adds_unpicked_images_with_borrowed_maps():
    labels, index, heats = labels_and_picks()
    positions, maps = spread_masks(labels, index, heats, 3, torch.Generator().manual_seed(0))
    assert positions == sorted(positions) and len(set(positions)) == len(positions) == 30
    assert torch.bincount(labels[positions]).tolist() == [10, 5, 15]
    own = dict(zip(index, heats))
    got = dict(zip(positions, maps))
    assert all(got[i] is own[i] for i in index)  # the picked keep their maps
    assert all(any(m is h for h in heats) for i, m in got.items() if i not in own)  # the added borrow one
    again = spread_masks(labels, index, heats, 3, torch.Generator().manual_seed(0))
    other = spread_masks(labels, index, heats, 3, torch.Generator().manual_seed(1))
    assert again[0] == positions and other[0] != positions  # the seed decides which images


def test_nothing_picked_spreads_nothing():
    labels, _, _ = labels_and_picks()
    assert spread_masks(labels, [], [], 3, torch.Generator().manual_seed(0)) == ([], [])

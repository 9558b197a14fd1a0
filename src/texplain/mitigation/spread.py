"""Masks spread over the classes, so that a filled region tells nothing about the class.

When the picked images fall mostly in one class (on BAR, 195 of 301 are
racing's), a fine-tune learns the filled regions themselves as that class's
cue (racing rose to 94.9% with the head alone). Spreading adds masks to
images of the other classes until every class has the same share of its
images masked as the most-masked class; each added image borrows the map of
a picked image drawn at random (of any class), so neither the amount nor the
shape of the masks differs by class. The picked images keep their own maps.
On BAR with the head alone, spreading brings racing back to the plain
fine-tune's (82.8 against 84.3; benchmarks/results/bar/spread/head/).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def spread_targets(labels: Tensor, index: Sequence[int], classes: int) -> Tensor:
    """How many images of each class (C,) are masked once spread: the most-masked class's share of each class's
    images (labels (N,) as indices; ``index``: the picked positions), and never fewer than were picked."""
    sizes = torch.bincount(labels, minlength=classes)  # (C,)
    picked = torch.bincount(labels[list(index)], minlength=classes)  # (C,)
    share = (picked / sizes.clamp(min=1)).max()
    return torch.maximum(picked, torch.round(share * sizes).long())


def spread_count(labels: Tensor, index: Sequence[int], classes: int) -> int:
    """How many images are masked in all once the picked positions ``index`` are spread (:func:`spread_targets`)."""
    return int(spread_targets(labels, index, classes).sum())


def spread_masks(
    labels: Tensor, index: Sequence[int], heats: Sequence[Tensor], classes: int, generator: torch.Generator,
) -> tuple[list[int], list[Tensor]]:
    """The picked positions ``index`` with their maps ``heats``, plus images of the less-masked classes drawn at random
    (never a picked one) with a picked image's map each, up to :func:`spread_targets`; sorted by position."""
    if not index:
        return [], []
    chosen = set(index)
    picked = torch.bincount(labels[list(index)], minlength=classes).tolist()
    added: list[int] = []
    for c, target in enumerate(spread_targets(labels, index, classes).tolist()):
        free = [i for i in torch.nonzero(labels == c).flatten().tolist() if i not in chosen]
        added += [free[j] for j in torch.randperm(len(free), generator=generator)[: target - picked[c]].tolist()]
    borrowed = torch.randint(len(heats), (len(added),), generator=generator).tolist()
    maps = dict(zip(index, heats)) | {i: heats[j] for i, j in zip(added, borrowed)}
    order = sorted(maps)
    return order, [maps[i] for i in order]

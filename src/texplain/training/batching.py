"""Batches of similar lengths: padding a caption batch to its longest caption wastes the LM's time on nothing."""

from __future__ import annotations

from collections.abc import Sequence

import torch

WINDOW = 50
"""Batches per window: items are sorted by length only within a window, so the order stays random."""


def length_batches(lengths: Sequence[int], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """Shuffled batches of item indices, each of items of similar lengths.

    Items are shuffled, sorted by length within windows of :data:`WINDOW`
    batches, cut into batches, and the batches shuffled again; a last batch
    of one item joins the one before (batch norm needs two). The same
    generator state gives the same batches.
    """
    order = torch.randperm(len(lengths), generator=generator).tolist()
    window = WINDOW * batch_size
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2] += batches.pop()
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]

"""The held-out part of the training split: early stopping and DFR's last layer, never the test split.

Every method fine-tunes on the rest of train and stops when its loss on the
held-out part (prepared as the method prepares its own set: masked for
TExplain, up-weighted nowhere) stops falling; DFR retrains the last layer
on it, as the DFR paper does with a validation split. The part is drawn per
stratum (the group where the data names groups, else the class) so that a
rare group is held out too, with a fixed seed: every method and every seed
sees the same part. A classifier meant to be mitigated is best trained
without it (``benchmarks/bar_analysis.py`` does so).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from texplain.errors import TexplainError

HOLDOUT_SEED = 0
"""The part held out does not change with the fine-tuning seed."""


def holdout_positions(strata: Sequence[str], fraction: float, seed: int = HOLDOUT_SEED) -> list[int]:
    """Positions held out, sorted: round(fraction * n) of each stratum of n, at least one of any stratum of two or more.

    A stratum of one stays in training, so that every group can still be
    fine-tuned on. ``fraction`` 0 holds nothing out.
    """
    if not 0.0 <= fraction < 1.0:
        raise TexplainError(f"holdout must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return []
    members: dict[str, list[int]] = {}
    for position, stratum in enumerate(strata):
        members.setdefault(stratum, []).append(position)
    generator = torch.Generator().manual_seed(seed)
    held: list[int] = []
    for stratum in sorted(members):
        positions = members[stratum]
        if len(positions) < 2:
            continue
        count = min(max(1, round(fraction * len(positions))), len(positions) - 1)
        order = torch.randperm(len(positions), generator=generator)[:count].tolist()
        held.extend(positions[i] for i in order)
    return sorted(held)

"""keep: what each region of an image says on its own.

A shortcut such as a background fills most of the image, so it is
*redundant*: hiding one part of it leaves the rest to say the word. Maps that
ask what the word *needs* (Grad-CAM, occlusion: how much hiding a cell lowers
the score) are then flat over the background and, on the demo world's
object-pretrained CNN, find it no better than chance (a mask's background
share 0.86 where the background is 0.85 of the image;
``benchmarks/mitigation_masks.py``). keep asks what is *enough*: every
window of ``window`` x ``window`` cells of a ``grid`` x ``grid`` grid is kept
alone, the rest hidden, and the word is scored on that image; a cell's heat
is the mean score of the windows that hold it, less the lowest. A window of
water says "water" on its own, a window of bird does not.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from texplain.attribution.heat import grid_edges, normalise, score_copies


def keep_heat(score: Callable[[Tensor], Tensor], pixels: Tensor, grid: int, window: int) -> Tensor:
    """What each region says on its own: pixels (1, 3, H, W) → heat (grid, grid) in [0, 1].

    Every window of ``window`` x ``window`` cells is kept in a copy whose other
    pixels are zero (the preprocessing's mean colour); all copies are scored
    in batches. A cell's heat is the mean score of the windows that hold it,
    less the lowest cell's, scaled by the largest; windows that all score
    alike give an all-zero map.
    """
    _, _, h, w = pixels.shape
    rows, cols = grid_edges(h, grid), grid_edges(w, grid)
    starts = [(i, j) for i in range(grid - window + 1) for j in range(grid - window + 1)]
    copies = torch.zeros((len(starts), *pixels.shape[1:]), dtype=pixels.dtype, device=pixels.device)  # (n, 3, H, W)
    for k, (i, j) in enumerate(starts):
        box = (slice(None), slice(rows[i], rows[i + window]), slice(cols[j], cols[j + window]))
        copies[k][box] = pixels[0][box]
    scores = score_copies(score, copies).float().cpu()  # (n,)
    total, count = torch.zeros(grid, grid), torch.zeros(grid, grid)
    for (i, j), value in zip(starts, scores):
        total[i : i + window, j : j + window] += value
        count[i : i + window, j : j + window] += 1
    heat = total / count
    return normalise(heat - heat.min())

"""Occlusion: how much hiding each cell of a grid lowers a score (Zeiler & Fergus 2014)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from texplain.attribution.heat import grid_edges, normalise, score_copies


def occlusion_heat(score: Callable[[Tensor], Tensor], pixels: Tensor, grid: int) -> Tensor:
    """How much hiding each cell lowers ``score``: pixels (1, 3, H, W) → heat (grid, grid) in [0, 1].

    Each of the grid x grid cells is set in turn to zero, the preprocessing's
    mean colour (not the image's own, which would keep a background's colour);
    all occluded copies are scored in one batch. Drops are clamped at
    zero and scaled by the largest; no drop anywhere gives an all-zero map.
    """
    _, _, h, w = pixels.shape
    rows, cols = grid_edges(h, grid), grid_edges(w, grid)
    copies = pixels.repeat(grid * grid, 1, 1, 1)  # (g*g, 3, H, W)
    for i in range(grid):
        for j in range(grid):
            copies[i * grid + j, :, rows[i] : rows[i + 1], cols[j] : cols[j + 1]] = 0.0
    with torch.inference_mode():
        base = score(pixels)  # (1,)
    return normalise((base - score_copies(score, copies)).float().cpu().reshape(grid, grid))

"""A heat map: a non-negative map (h, w) scaled to [0, 1]; the region it marks at a threshold, at any image size.

Every way of localising (Grad-CAM, keep, occlusion) returns one; masking
(:mod:`.fills`) hides its region.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


def normalise(heat: Tensor) -> Tensor:
    """Scale a non-negative map to [0, 1] by its maximum; an all-zero map stays zero."""
    heat = heat.clamp(min=0)
    top = heat.max()
    return heat / top if top > 0 else heat


def resized(heat: Tensor, size: tuple[int, int]) -> Tensor:
    """``heat`` (h, w) at ``size`` (H, W), bilinear, as every region is taken; unchanged when already that size."""
    if tuple(heat.shape) == tuple(size):
        return heat
    return nn.functional.interpolate(heat[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]


def region(heat: Tensor, size: tuple[int, int], threshold: float) -> Tensor:
    """Boolean mask (H, W): where ``heat`` (h, w), resized to ``size``, reaches ``threshold`` (and is not zero)."""
    heat = resized(heat, size)
    return (heat >= threshold) & (heat > 0)


def grid_edges(size: int, grid: int) -> list[int]:
    """Pixel edges of ``grid`` cells along a side of ``size`` pixels (grid + 1 values)."""
    return torch.linspace(0, size, grid + 1).round().long().tolist()


def score_copies(score: Callable[[Tensor], Tensor], copies: Tensor) -> Tensor:
    """``score`` of every copy (n, 3, H, W), in batches of 64, without gradients: (n,)."""
    with torch.inference_mode():
        return torch.cat([score(chunk) for chunk in copies.split(64)])

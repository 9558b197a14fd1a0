"""Hiding the region a heat map marks, and what goes in its place: every fill, in one place.

- ``shuffle``: the same region of a training image drawn at random (whatever
  its class), so the filled pixels have the same distribution whatever the
  sample's class: they carry no class cue. Mitigation's default; it needs
  donor images.
- ``zero``: the preprocessing's mean colour (zero after normalisation): the
  causal check's default, since it needs no other image; a flat grey is a
  cue in itself where its amount differs by class.
- the image's own ``mean`` colour, a strong ``blur`` of it, or ``noise``
  with its per-channel mean and spread (:data:`IMAGE_FILLS`, which also work
  on a PIL image): these keep the background's colour, the cue itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from texplain.attribution.heat import region
from texplain.errors import TexplainError

IMAGE_FILLS = ("mean", "blur", "noise")
"""Fills made from the image itself."""
FILLS = ("shuffle", *IMAGE_FILLS, "zero")
"""Every fill, mitigation's default first."""


def mask_batch(
    pixels: Tensor,
    heats: Sequence[Tensor],
    threshold: float,
    fill: str,
    generator: torch.Generator,
    donors: Tensor | None = None,
) -> tuple[Tensor, list[float]]:
    """Mask each image (pixels (n, 3, H, W)) where its heat map reaches ``threshold``.

    ``donors`` (m, 3, H, W) are the images a ``shuffle`` fill copies from,
    one drawn at random per image. Returns the masked pixels (n, 3, H, W) and
    each image's masked fraction.
    """
    if fill not in FILLS:
        raise TexplainError(f"mask fill {fill!r}: choose one of {', '.join(FILLS)}")
    if fill == "shuffle" and (donors is None or len(donors) == 0):
        raise TexplainError("mask fill shuffle: needs training images to copy regions from")
    masked, fractions = [], []
    size = tuple(pixels.shape[-2:])
    for image, heat in zip(pixels, heats):
        where = region(heat.cpu(), size, threshold)  # (H, W)
        if fill == "zero":
            masked.append(torch.where(where[None], torch.zeros_like(image), image))
        elif fill == "shuffle":
            donor = donors[int(torch.randint(len(donors), (1,), generator=generator))]  # (3, H, W)
            masked.append(torch.where(where[None], donor.to(image), image))
        else:
            masked.append(mask_image(image, heat.cpu(), threshold, fill, generator))
        fractions.append(float(where.float().mean()))
    return torch.stack(masked), fractions


def mask_image(
    image: Tensor | Image.Image,
    heat: Tensor,
    threshold: float = 0.5,
    fill: str = "mean",
    generator: torch.Generator | None = None,
) -> Tensor | Image.Image:
    """Hide the region where ``heat`` (h, w) reaches ``threshold``; returns the same kind as ``image``.

    image: pixels (3, H, W) or (1, 3, H, W), or a PIL image (8-bit RGB). The
    heat map is resized (bilinear) to the image when the sizes differ. fill:
    ``mean`` (the image's per-channel mean colour), ``blur`` (a strong
    Gaussian blur of the image) or ``noise`` (Gaussian noise with the image's
    per-channel mean and spread; ``generator`` seeds it).
    """
    if fill not in IMAGE_FILLS:
        raise TexplainError(f"mask fill {fill!r}: choose one of {', '.join(IMAGE_FILLS)}")
    if not 0.0 <= threshold <= 1.0:
        raise TexplainError(f"mask threshold must be in [0, 1], got {threshold}")
    if isinstance(image, Image.Image):
        array = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)  # (H, W, 3)
        masked = _mask_tensor(array.permute(2, 0, 1), heat, threshold, fill, generator)  # (3, H, W)
        out = (masked.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        return Image.fromarray(out, mode="RGB")
    if image.dim() == 4:
        return _mask_tensor(image[0], heat, threshold, fill, generator)[None]
    return _mask_tensor(image, heat, threshold, fill, generator)


def _mask_tensor(image: Tensor, heat: Tensor, threshold: float, fill: str, generator: torch.Generator | None) -> Tensor:
    """Masked copy of pixels (3, H, W)."""
    mask = region(heat.to(image.device), tuple(image.shape[-2:]), threshold)  # (H, W)
    mean = image.mean(dim=(1, 2), keepdim=True)  # (3, 1, 1)
    if fill == "mean":
        filler = mean.expand_as(image)
    elif fill == "blur":
        from torchvision.transforms.functional import gaussian_blur

        side = max(image.shape[-2:])
        kernel = 2 * (side // 8) + 1
        filler = gaussian_blur(image[None], [kernel, kernel], [side / 8.0, side / 8.0])[0]
    else:
        std = image.std(dim=(1, 2), keepdim=True)  # (3, 1, 1)
        noise = torch.randn(image.shape, generator=generator, device="cpu").to(image.device)
        filler = mean + std * noise
    return torch.where(mask[None], filler, image)  # (3, H, W)

"""Mitigation, step two: find the region behind a sample's shortcut word and hide it without leaving a cue.

**Where.** A shortcut such as a background fills most of the image, so it is
*redundant*: hiding one part of it leaves the rest to say the word. Maps that
ask what the word *needs* (Grad-CAM, occlusion: how much hiding a cell lowers
the score) are then flat over the background and, on the demo world's
object-pretrained CNN, find it no better than chance (a mask's background
share 0.84 where the background is 0.85 of the image;
``benchmarks/mitigation_masks.py``). The default, ``keep``, asks what is
*enough*: every window of ``window`` x ``window`` cells of a ``grid`` x
``grid`` grid is kept alone, the rest hidden, and the word is scored on that
image; a cell's heat is the mean score of the windows that hold it, less the
lowest. A window of water says "water" on its own, a window of bird does not.

Grad-CAM of the word (through the translator and the LM,
:func:`texplain.attribution.gradcam.word_cam`) stays an option: its map is
taken at the deepest stage whose map has at least 8 cells a side
(``layer="auto"``, :func:`~texplain.attribution.gradcam.finer_layer`; at
64 px a CNN's last map is 2 x 2), or at a named layer, or the feature layer.
MaskTune's option (``localise="class"``) scores the labelled class's logit
instead of the word. A map with no positive value anywhere says nothing: it
is reported and its sample is left out.

**How.** The region at or above ``threshold`` is filled. The default fill,
``shuffle``, copies the same region from a training image drawn at random
(whatever its class), so the filled pixels have the same distribution
whatever the sample's class: they carry no class cue. The image's own mean
colour, a blur or matched noise would keep the background's colour (the cue
itself); a flat grey (``zero``) is a new cue in itself, its amount differing
by class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from texplain.attribution.gradcam import (
    class_cam,
    finer_layer,
    mask_image,
    normalise,
    region,
    word_cam,
    word_log_prob,
    word_token_rows,
)
from texplain.errors import TexplainError
from texplain.mitigation.config import MaskConfig
from texplain.models.classifiers import Classifier
from texplain.models.lm import FrozenLM
from texplain.models.translator import Translator

MIN_SIDE = 8
"""Cells a side the ``auto`` Grad-CAM layer's map has at least."""



def cam_layer(classifier: Classifier, pixels: Tensor, mask: MaskConfig) -> str | None:
    """The module Grad-CAM hooks for ``mask.layer`` (None: the feature layer, or a heat that is not Grad-CAM), checked against the classifier."""
    if mask.heat != "gradcam" or mask.layer == "features":
        return None
    if mask.layer == "auto":
        return finer_layer(classifier, pixels[:1], MIN_SIDE)
    if mask.layer not in dict(classifier.module.named_modules()):
        raise TexplainError(f"mask layer {mask.layer!r}: the classifier has no such module")
    return mask.layer


def localise(
    classifier: Classifier,
    translator: Translator | None,
    lm: FrozenLM | None,
    pixels: Tensor,
    word: str | None,
    class_index: int,
    mask: MaskConfig,
    layer: str | None = None,
) -> Tensor:
    """Heat map in [0, 1] of one image (pixels (1, 3, H, W)) behind ``word`` or the class logit.

    Grad-CAM gives (H, W), taken at ``layer`` (see :func:`cam_layer`);
    keep and occlusion give (grid, grid), which masking resizes.
    """
    pixels = pixels.to(classifier.device)
    if mask.localise == "word" and (word is None or translator is None or lm is None):
        raise TexplainError("word localisation needs a word, a translator and a language model")
    if mask.heat == "gradcam":
        if mask.localise == "class":
            return class_cam(classifier, pixels, class_index, layer=layer)
        return word_cam(classifier, translator, lm, pixels, word, layer=layer)
    if mask.localise == "class":
        def score(x: Tensor) -> Tensor:
            return classifier.features_and_logits(x)[1][:, class_index]  # (B,)
    else:
        rows = word_token_rows(lm, word)
        translator.eval()

        def score(x: Tensor) -> Tensor:
            features, _ = classifier.features_and_logits(x)  # (B, T, D)
            return word_log_prob(lm, translator(features.to(lm.device)), rows)  # (B,)

    if mask.heat == "keep":
        return keep_heat(score, pixels, mask.grid, mask.window)
    return occlusion_heat(score, pixels, mask.grid)


def _cells(size: int, grid: int) -> list[int]:
    """Pixel edges of ``grid`` cells along a side of ``size`` pixels (grid + 1 values)."""
    return torch.linspace(0, size, grid + 1).round().long().tolist()


def _scores(score: Callable[[Tensor], Tensor], copies: Tensor) -> Tensor:
    """``score`` of every copy (n, 3, H, W), in batches of 64, without gradients: (n,)."""
    with torch.inference_mode():
        return torch.cat([score(chunk) for chunk in copies.split(64)])


def keep_heat(score: Callable[[Tensor], Tensor], pixels: Tensor, grid: int, window: int) -> Tensor:
    """What each region says on its own: pixels (1, 3, H, W) → heat (grid, grid) in [0, 1].

    Every window of ``window`` x ``window`` cells is kept in a copy whose other
    pixels are zero (the preprocessing's mean colour); all copies are scored
    in batches. A cell's heat is the mean score of the windows that hold it,
    less the lowest cell's, scaled by the largest; windows that all score
    alike give an all-zero map.
    """
    _, _, h, w = pixels.shape
    rows, cols = _cells(h, grid), _cells(w, grid)
    starts = [(i, j) for i in range(grid - window + 1) for j in range(grid - window + 1)]
    copies = torch.zeros((len(starts), *pixels.shape[1:]), dtype=pixels.dtype, device=pixels.device)  # (n, 3, H, W)
    for k, (i, j) in enumerate(starts):
        box = (slice(None), slice(rows[i], rows[i + window]), slice(cols[j], cols[j + window]))
        copies[k][box] = pixels[0][box]
    scores = _scores(score, copies).float().cpu()  # (n,)
    total, count = torch.zeros(grid, grid), torch.zeros(grid, grid)
    for (i, j), value in zip(starts, scores):
        total[i : i + window, j : j + window] += value
        count[i : i + window, j : j + window] += 1
    heat = total / count
    return normalise(heat - heat.min())


def occlusion_heat(score: Callable[[Tensor], Tensor], pixels: Tensor, grid: int) -> Tensor:
    """How much hiding each cell lowers ``score``: pixels (1, 3, H, W) → heat (grid, grid) in [0, 1].

    Each of the grid x grid cells is set in turn to zero, the preprocessing's
    mean colour (not the image's own, which would keep a background's colour);
    all occluded copies are scored in one batch. Drops are clamped at
    zero and scaled by the largest; no drop anywhere gives an all-zero map.
    """
    _, _, h, w = pixels.shape
    rows, cols = _cells(h, grid), _cells(w, grid)
    copies = pixels.repeat(grid * grid, 1, 1, 1)  # (g*g, 3, H, W)
    for i in range(grid):
        for j in range(grid):
            copies[i * grid + j, :, rows[i] : rows[i + 1], cols[j] : cols[j + 1]] = 0.0
    with torch.inference_mode():
        base = score(pixels)  # (1,)
    return normalise((base - _scores(score, copies)).float().cpu().reshape(grid, grid))


def random_heat(size: tuple[int, int], generator: torch.Generator) -> Tensor:
    """A random heat map (h, w) of independent uniform values: with threshold 1 - f it masks about f of the cells."""
    return torch.rand(size, generator=generator)


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

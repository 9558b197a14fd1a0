"""Mitigation, step two: where a sample's shortcut word (or, for MaskTune, its class) is, as a heat map.

Three ways (:data:`~texplain.mitigation.config.HEAT_METHODS`), each in :mod:`texplain.attribution`:
``keep`` (the default: what each window of a grid says on its own, which finds
a redundant background; :mod:`~texplain.attribution.keep`), Grad-CAM of the
word through the translator and the LM, or of the class logit
(:mod:`~texplain.attribution.gradcam`), and ``occlusion``
(:mod:`~texplain.attribution.occlusion`). Grad-CAM's map is taken at the
deepest stage whose map has at least 8 cells a side (``layer="auto"``,
:func:`~texplain.attribution.gradcam.finer_layer`; at 64 px a CNN's last map
is 2 x 2), or at a named layer, or the feature layer. A map with no positive
value anywhere says nothing: it is reported and its sample is left out.

The region at or above ``threshold`` is then hidden with one of
:data:`~texplain.attribution.fills.FILLS` (default ``shuffle``, which
carries no class cue; see :mod:`texplain.attribution.fills`). With
``--spare-class`` the region of the image's own class word (its map found
the same way) is taken out of the shortcut word's first
(:func:`spare_maps`): on BAR the climber stands in front of the rock that
explains climbing, and masking "rock" hides the climber with it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor

from texplain.attribution.gradcam import class_cam, finer_layer, word_cam
from texplain.attribution.heat import region
from texplain.attribution.keep import keep_heat
from texplain.attribution.occlusion import occlusion_heat
from texplain.attribution.word_score import word_log_prob, word_token_rows
from texplain.errors import TexplainError
from texplain.mitigation.config import MaskConfig
from texplain.models.classifiers import Classifier
from texplain.models.lm import FrozenLM
from texplain.models.translator import Translator
from texplain.progress import tqdm

log = logging.getLogger(__name__)

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


def heat_maps(
    classifier: Classifier,
    translator: Translator | None,
    lm: FrozenLM | None,
    pixels: Tensor,
    positions: Sequence[int],
    words: Sequence[str | None],
    labels: Tensor,
    mask: MaskConfig,
    progress: bool = False,
) -> tuple[dict[int, Tensor], int]:
    """Heat map per position of ``pixels`` (N, 3, H, W) behind its word (``words[i]``) or its class (``labels[i]``).

    A map with no positive value says nothing about where the shortcut is:
    it is left out, and how many there were is returned beside the maps.
    """
    layer = cam_layer(classifier, pixels, mask)
    log.info("%s (%s) heat maps: %s", mask.heat, mask.localise, mask.where(layer))
    heats, zero = {}, 0
    for i in tqdm(positions, desc=f"{mask.heat} ({mask.localise})", unit="img", disable=not progress):
        heat = localise(classifier, translator, lm, pixels[i : i + 1], words[i], int(labels[i]), mask, layer).cpu()
        if heat.max() > 0:
            heats[i] = heat
        else:
            zero += 1
    if zero:
        log.warning("%d of %d heat maps are all zero; those samples are left out", zero, len(positions))
    return heats, zero


def spare_maps(heats: dict[int, Tensor], spared: dict[int, Tensor], threshold: float) -> dict[int, Tensor]:
    """The maps ``heats`` (position -> map) set to zero wherever the same position's map in ``spared`` (its class
    word's, any size) reaches ``threshold``, so that the class's region is never masked; a map with nothing left at
    ``threshold`` would mask nothing and is left out."""
    out = {}
    for i, heat in heats.items():
        if i in spared:
            heat = torch.where(region(spared[i], tuple(heat.shape[-2:]), threshold), torch.zeros_like(heat), heat)
        if (heat >= threshold).any():
            out[i] = heat
    return out

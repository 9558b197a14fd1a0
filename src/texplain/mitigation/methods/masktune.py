"""MaskTune (Asgari et al. 2022): mask where the classifier looks for the labelled class, fine-tune one epoch on the masked set.

Grad-CAM of the labelled class's logit is taken on every training sample
(at the layer TExplain's Grad-CAM would use), whatever heat TExplain's
masks use, so the baseline stays the published one; the model is then
fine-tuned on the masked samples alone for ``masktune_epochs`` (one).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from texplain.attribution.fills import mask_batch
from texplain.mitigation.bench import Bench
from texplain.mitigation.masks import heat_maps
from texplain.models.classifiers import Classifier


class MaskTune:
    """Class-logit Grad-CAM masks on every sample, one epoch of fine-tuning."""

    name = "masktune"
    label = "MaskTune"

    def __init__(self) -> None:
        self.heats: dict[int, Tensor] = {}

    def prepare(self, bench: Bench) -> dict:
        mask = replace(bench.config.mask, localise="class", heat="gradcam")
        positions = list(range(len(bench.train_labels)))
        self.heats, zero = heat_maps(bench.classifier, None, None, bench.train_pixels, positions, [None] * len(positions),
                                     bench.train_labels, mask, bench.progress)
        return {"masktune_zero_heat_maps": zero}

    def run(self, bench: Bench, seed: int) -> tuple[Classifier, dict]:
        index = sorted(self.heats)
        pixels = bench.train_pixels.clone()
        pixels[index], _ = mask_batch(bench.train_pixels[index], [self.heats[i] for i in index], bench.config.mask.threshold,
                                      bench.config.mask.fill, torch.Generator().manual_seed(seed), bench.train_pixels)
        keep = set(index)
        train, held = [i for i in bench.tuned if i in keep], [i for i in bench.held if i in keep]
        classifier, history = bench.fine_tune(pixels, train, held, seed, self.label, changed=index,
                                              epochs=bench.config.masktune_epochs)
        return classifier, {"fine_tuned_on": len(train), "history": history.to_json()}

"""RandMask: random masks as large as TExplain's, on as many random samples as it masks (or on all): the control for masking itself.

It is fine-tuned exactly as TExplain is; only where the masks fall
differs. The random maps are drawn at an eighth of the image's side (at
least 2 x 2 cells) and thresholded to cover, on average, TExplain's masked
share (or 1 - threshold when TExplain found nothing to size them by).
"""

from __future__ import annotations

import torch
from torch import Tensor

from texplain.attribution.fills import mask_batch
from texplain.mitigation.bench import Bench, Method
from texplain.mitigation.methods.texplain import TExplain
from texplain.models.classifiers import Classifier


class RandMask(Method):
    """Random masks on TExplain's number of samples (``every=False``) or on every sample."""

    def __init__(self, texplain: TExplain, every: bool) -> None:
        self.texplain, self.every = texplain, every
        self.name = "randmask_all" if every else "randmask"
        self.label = "RandMask (all)" if every else "RandMask (same number)"

    def run(self, bench: Bench, seed: int) -> tuple[Classifier, dict]:
        generator = torch.Generator().manual_seed(seed)
        n = len(bench.train_labels)
        count = n if self.every else self.texplain.count
        index, heats = random_maps(bench.train_pixels, count, generator)
        share = self.texplain.fraction or 1.0 - bench.config.mask.threshold
        threshold = min(max(1.0 - share, 1e-3), 1.0)
        masked, _ = mask_batch(bench.train_pixels[index], heats, threshold, bench.config.mask.fill, generator,
                               bench.train_pixels)
        classifier, history, samples = bench.fine_tune_masked(index, masked, seed, self.label)
        return classifier, {"fine_tuned_on": samples, "masked": count, "history": history.to_json()}


def random_maps(pixels: Tensor, count: int, generator: torch.Generator) -> tuple[list[int], list[Tensor]]:
    """``count`` random positions of ``pixels`` (N, 3, H, W), sorted, and a random map in [0, 1) for each, an eighth
    of the image's side (at least 2 x 2 cells)."""
    index = sorted(torch.randperm(len(pixels), generator=generator)[:count].tolist())
    h, w = pixels.shape[-2:]
    return index, [torch.rand((max(2, h // 8), max(2, w // 8)), generator=generator) for _ in index]

"""TExplain's mitigation: the samples explained by a shortcut word, masked where that word is, then fine-tuning.

Selection (:mod:`~texplain.mitigation.selection`) and the heat maps behind
each picked sample's word (:mod:`~texplain.mitigation.masks`; with
``spare_class``, less its class word's region) do not depend
on the seed and are computed once, over the whole training split. Each seed
masks the picked samples (the ``shuffle`` fill's donors drawn with the
seed; with ``spread_masks``, as many more of the other classes' images as
make every class's masked share the same, :mod:`~texplain.mitigation.spread`)
and fine-tunes on the training split with them in place of the
originals (or beside them, ``keep_originals``), stopping early on the
held-out part masked the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from texplain.attribution.fills import mask_batch
from texplain.errors import TexplainError
from texplain.mitigation.bench import Bench
from texplain.mitigation.masks import heat_maps, spare_maps
from texplain.mitigation.selection import Selection, choose, explain_training, train_features
from texplain.mitigation.spread import spread_count, spread_masks
from texplain.models.classifiers import Classifier
from texplain.training.classifier_training import TrainingHistory

log = logging.getLogger(__name__)


@dataclass
class MaskedExample:
    """One masked training sample for the report: the image, its label, the word behind the mask, the heat map."""

    path: str
    label: str
    word: str | None
    heat: Tensor
    fraction: float


class TExplain:
    """Select by explanation, mask behind the word, fine-tune."""

    name = "texplain"
    label = "TExplain"

    def __init__(self) -> None:
        self.selection: Selection | None = None
        self.heats: dict[int, Tensor] = {}
        self.fraction = 0.0
        self.count = 0
        self.examples: list[MaskedExample] = []

    def prepare(self, bench: Bench) -> dict:
        """Explain and select every training image, and find each picked image's region."""
        if bench.translator is None or bench.lm is None:
            raise TexplainError("mitigation: TExplain and RandMask need a translator and a language model")
        config = bench.config
        labels = [bench.classifier.class_names[int(i)] for i in bench.train_labels]
        store = train_features(bench.classifier, bench.train_paths, bench.out / "train_features", bench.progress)
        explained = explain_training(bench.classifier, bench.translator, bench.lm, store, bench.train_paths, labels,
                                     config.selection, bench.progress)
        self.selection = choose(*explained, config.selection)
        picked = self.selection.indices()
        log.info("selected %d of %d training images (%.1f%%) by rule %s", len(picked), len(labels),
                 100 * self.selection.fraction, self.selection.rule)
        if not picked:
            hint = ("no class has a shortcut suspect; try --select not-class, " if self.selection.rule == "suspects"
                    else "")
            raise TexplainError(f"TExplain: no training sample was picked by rule {self.selection.rule}, nothing to mask "
                                f"({hint}lower --min-frequency or --min-lift, or sample more sentences)")
        self.heats, zero = heat_maps(bench.classifier, bench.translator, bench.lm, bench.train_pixels, picked,
                                     self.selection.words, bench.train_labels, config.mask, bench.progress)
        if not self.heats:
            raise TexplainError("TExplain: every selected sample's heat map is all zero: no region raises its word")
        spared, emptied = 0, 0
        if config.spare_class:
            words = self.selection.spared
            found, _ = heat_maps(bench.classifier, bench.translator, bench.lm, bench.train_pixels,
                                 [i for i in self.heats if words[i] is not None], words, bench.train_labels, config.mask,
                                 bench.progress)
            kept = spare_maps(self.heats, found, config.mask.threshold)
            spared, emptied = len(found), len(self.heats) - len(kept)
            log.info("spared the class word's region in %d maps; %d were left with nothing to mask", spared, emptied)
            if not kept:
                raise TexplainError("TExplain: --spare-class left no region to mask: the class word's region covers "
                                    "every shortcut word's")
            self.heats = kept
        fractions = {i: bench.masked_fraction(h) for i, h in self.heats.items()}
        self.fraction = float(np.mean(list(fractions.values())))
        self.count = len(self.heats)
        if config.spread_masks:
            self.count = spread_count(bench.train_labels, list(self.heats), len(bench.classifier.class_names))
        self.examples = [MaskedExample(bench.train_paths[i], labels[i], self.selection.words[i], self.heats[i], fractions[i])
                         for i in list(self.heats)[: config.examples]]
        return {"selection": self.selection.to_json(), "texplain_masked_fraction": round(self.fraction, 4),
                "texplain_zero_heat_maps": zero, "texplain_masked_images": len(self.heats),
                "texplain_spared_maps": spared, "texplain_spared_emptied": emptied,
                "texplain_spread_images": self.count - len(self.heats)}

    def run(self, bench: Bench, seed: int) -> tuple[Classifier, dict]:
        classifier, history, samples, masked = fine_tune_on_maps(bench, list(self.heats), list(self.heats.values()), seed,
                                                                 self.label)
        folder = bench.checkpoint(classifier, f"texplain-seed{seed}")
        return classifier, {"fine_tuned_on": samples, "masked": masked, "history": history.to_json(),
                            "checkpoint": str(folder)}


def fine_tune_on_maps(
    bench: Bench, index: list[int], heats: list[Tensor], seed: int, what: str,
) -> tuple[Classifier, TrainingHistory, int, int]:
    """A copy of the classifier fine-tuned with the training images at ``index`` masked where their maps ``heats`` rise
    above the threshold (spread over the classes first with ``config.spread_masks``; the fill's donors drawn with
    ``seed``), and how many samples it was fine-tuned on and how many images were masked."""
    generator = torch.Generator().manual_seed(seed)
    if bench.config.spread_masks:
        index, heats = spread_masks(bench.train_labels, index, heats, len(bench.classifier.class_names), generator)
    masked, _ = mask_batch(bench.train_pixels[index], heats, bench.config.mask.threshold, bench.config.mask.fill,
                           generator, bench.train_pixels)
    classifier, history, samples = bench.fine_tune_masked(index, masked, seed, what)
    return classifier, history, samples, len(index)

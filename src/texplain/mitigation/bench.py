"""What every mitigation method shares: the classifier, both splits' pixels, the held-out part, one fine-tuning recipe, one score.

The training split is loaded once (preprocessed pixels in memory: the
decoded, resized images every method and seed reuse) and cut in two
(:mod:`.holdout`): the part every method fine-tunes on and the held-out part
it stops early on (and DFR retrains on). Each method hands back the whole
training split as it wants it seen (masked, for TExplain), and
:meth:`Bench.fine_tune` cuts it the same way for all; every method is then
scored on the same test images, per group and per class.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from texplain.attribution.heat import region
from texplain.errors import TexplainError
from texplain.mitigation.config import MitigateConfig
from texplain.models.classifiers import Classifier, load_classifier, save_classifier
from texplain.models.lm import FrozenLM
from texplain.models.translator import Translator
from texplain.statistics import group_accuracy, mistaken_for
from texplain.training.classifier_training import TrainingHistory, predict, train_classifier
from texplain.training.frozen_front import cut_inputs, front_is_a_chain, last_stage, skipping, split_at


@dataclass
class Bench:
    """The classifier (its name and loaded), the training split (pixels, labels, groups; tuned and held-out positions),
    the test split (pixels, labels, groups, classes), the translator and LM where needed, the output folder."""

    config: MitigateConfig
    classifier_spec: str
    classifier: Classifier
    train_paths: list[str]
    train_pixels: Tensor
    train_labels: Tensor
    train_groups: list[str]
    held: list[int]
    test_pixels: Tensor
    test_labels: Tensor
    test_groups: list[str]
    test_classes: list[str]
    out: Path
    translator: Translator | None = None
    lm: FrozenLM | None = None
    progress: bool = False
    _cut: tuple[str | None] | None = field(default=None, init=False, repr=False)
    _train_front: Tensor | None = field(default=None, init=False, repr=False)
    _test_front: tuple[Tensor, list[str]] | None = field(default=None, init=False, repr=False)

    @property
    def tuned(self) -> list[int]:
        """Positions fine-tuned on: the training split less the held-out part."""
        held = set(self.held)
        return [i for i in range(len(self.train_labels)) if i not in held]

    @property
    def has_groups(self) -> bool:
        """Whether the data names groups beyond the classes (BAR does not)."""
        return any(group != self.classifier.class_names[int(label)] for group, label in zip(self.train_groups, self.train_labels))

    def load(self) -> Classifier:
        """A fresh copy of the original classifier (a folder it names is only read)."""
        return load_classifier(self.classifier_spec, trust_code=self.config.trust_code)

    def fine_tune(
        self, pixels: Tensor, train: Sequence[int], held: Sequence[int] | None, seed: int, what: str,
        changed: Sequence[int] = (), epochs: int | None = None, classifier: Classifier | None = None,
        labels: Tensor | None = None,
    ) -> tuple[Classifier, TrainingHistory]:
        """A copy of the classifier (or ``classifier``) fine-tuned on the positions ``train`` of a whole training split
        as the method sees it (pixels (N, 3, H, W); a position may repeat), stopping early on the positions ``held``.

        ``changed``: the positions whose pixels differ from the original
        images (masked): where the last stages train from cached inputs,
        only these go through the frozen front again (:meth:`front_inputs`).
        ``labels``: the label (M,) of every row of ``pixels`` where a method
        adds rows after the training split's (masked copies); by default the
        training split's labels.
        """
        every = self.train_labels if labels is None else labels
        labels = every[list(train)]
        check_classes(labels, self.classifier.class_names, self.config.min_per_class, what)
        if len(labels) < 2:
            raise TexplainError(f"{what}: need at least 2 samples to fine-tune on, got {len(labels)}")
        settings = replace(self.config.finetune, epochs=epochs or self.config.finetune.epochs, seed=seed,
                           device=self.config.device)
        classifier = classifier or self.load()
        torch.manual_seed(seed)
        train, held = list(train), list(held or [])
        front = self.front_inputs(pixels, changed)
        given = None if front is None else (front[train], front[held])
        history = train_classifier(classifier, pixels[train], labels, settings, progress=False,
                                   held_out=(pixels[held], every[held]) if held else None, front_inputs=given)
        return classifier, history

    def fine_tune_masked(
        self, index: Sequence[int], masked: Tensor, seed: int, what: str,
    ) -> tuple[Classifier, TrainingHistory, int]:
        """A copy of the classifier fine-tuned with the training images at ``index`` masked (``masked`` (n, 3, H, W)),
        and how many samples it was fine-tuned on.

        The masked images take their originals' place, or, with
        ``config.keep_originals``, are added beside them as copies (a
        held-out image's copy is held out with it): the shortcut is then
        seen both present and hidden under one label.
        """
        index = list(index)
        if not self.config.keep_originals:
            pixels = self.train_pixels.clone()
            pixels[index] = masked
            classifier, history = self.fine_tune(pixels, self.tuned, self.held, seed, what, changed=index)
            return classifier, history, len(self.tuned)
        n, held = len(self.train_labels), set(self.held)
        pixels = torch.cat([self.train_pixels, masked])
        labels = torch.cat([self.train_labels, self.train_labels[index]])
        train = self.tuned + [n + j for j, i in enumerate(index) if i not in held]
        held_rows = self.held + [n + j for j, i in enumerate(index) if i in held]
        classifier, history = self.fine_tune(pixels, train, held_rows, seed, what, labels=labels)
        return classifier, history, len(train)

    def front_inputs(self, pixels: Tensor, changed: Sequence[int]) -> Tensor | None:
        """The last stages' inputs for a whole training split as a method sees it (pixels (M, 3, H, W): the split's N
        rows, then any a method adds), or None where fine-tuning does not train from them (``trainable`` is not
        ``last-stages``, or the front is not a chain).

        The original images' inputs are computed once; only the ``changed``
        positions and the added rows go through the front again.
        """
        cut = self.cut()
        if cut is None:
            return None
        if self._train_front is None:
            self._train_front = cut_inputs(self.classifier.module, cut, self.train_pixels, 64, self.progress)
        n, inputs = len(self.train_pixels), self._train_front
        index = [i for i in changed if i < n]
        if index:
            inputs = inputs.clone()
            inputs[index] = cut_inputs(self.classifier.module, cut, pixels[index], 64)
        if len(pixels) > n:
            inputs = torch.cat([inputs, cut_inputs(self.classifier.module, cut, pixels[n:], 64)])
        return inputs

    def predict_train(self, classifier: Classifier, positions: Sequence[int]) -> Tensor:
        """The classifier's predictions (n,) for the original training images at ``positions``, from the cached last-stage inputs where there are some."""
        front = self.front_inputs(self.train_pixels, ())
        if front is None:
            return predict(classifier, self.train_pixels[list(positions)])
        with skipping(classifier.module, split_at(classifier.module, self.cut())[0]):
            return predict(classifier, front[list(positions)])

    def cut(self) -> str | None:
        """The last stage, where fine-tuning trains from cached inputs; None where it does not (found once)."""
        if self._cut is None:
            module, cut = self.classifier.module, None
            if self.config.finetune.trainable == "last-stages":
                cut = last_stage(module)
                cut = cut if front_is_a_chain(module, cut, self.train_pixels[:2]) else None
            self._cut = (cut,)
        return self._cut[0]

    def score(self, classifier: Classifier, seed: int, extra: dict) -> dict:
        """Accuracy per group and per class on the test images, and where each class's errors go.

        When fine-tuning trains the last stages, no method changes the
        network before them; where the forward pass is a chain through that
        cut (:func:`~texplain.training.frozen_front.front_is_a_chain`) the
        test images' inputs to it are computed once, and each classifier
        runs its last stages only.
        """
        if self._test_front is None:
            self._test_front = self._test_inputs()
        inputs, front = self._test_front
        with skipping(classifier.module, front):
            predictions = predict(classifier, inputs).tolist()
        accuracy = group_accuracy(predictions, self.test_labels.tolist(), self.test_groups)
        per_class = group_accuracy(predictions, self.test_labels.tolist(), self.test_classes)["per_group"]
        errors = mistaken_for(predictions, self.test_labels.tolist(), self.classifier.class_names)
        return {"seed": seed, **accuracy, "per_class": per_class, "mistaken_for": errors, **extra}

    def _test_inputs(self) -> tuple[Tensor, list[str]]:
        """The test images as the last stage receives them, and the modules before it; or the pixels and none."""
        cut = self.cut()
        if cut is None:
            return self.test_pixels, []
        module = self.classifier.module
        return cut_inputs(module, cut, self.test_pixels, 64, self.progress), split_at(module, cut)[0]

    def masked_fraction(self, heat: Tensor) -> float:
        """Masked share of one training image for a heat map at the mask threshold."""
        return float(region(heat, tuple(self.train_pixels.shape[-2:]), self.config.mask.threshold).float().mean())

    def checkpoint(self, classifier: Classifier, name: str) -> Path:
        """Save a fine-tuned classifier under ``out/checkpoints/name``, never in the original's folder."""
        return save_checkpoint(classifier, self.out / "checkpoints" / name, self.classifier_spec)


class Method(Protocol):
    """A mitigation method: seed-independent work once, then one classifier per seed."""

    name: str
    label: str

    def prepare(self, bench: Bench) -> dict:
        """Work every seed shares; returns what the result records about it (by default none: nothing)."""
        return {}

    def run(self, bench: Bench, seed: int) -> tuple[Classifier, dict]:
        """The classifier this method gives for ``seed``, and what the run records beside its scores."""


def check_classes(labels: Tensor, class_names: Sequence[str], min_per_class: int, what: str) -> None:
    """Refuse to fine-tune when a class has fewer than ``min_per_class`` samples (labels (n,) as indices)."""
    if len(labels) == 0:
        raise TexplainError(f"{what}: no sample to fine-tune on (lower --min-frequency or --min-lift, or sample more sentences)")
    counts = Counter(labels.tolist())
    short = [(name, counts.get(i, 0)) for i, name in enumerate(class_names) if counts.get(i, 0) < min_per_class]
    if short:
        listed = ", ".join(f"{name} ({n})" for name, n in short)
        raise TexplainError(f"{what}: too few samples to fine-tune on for class {listed}; "
                            f"need {min_per_class} per class (lower --min-per-class to accept it)")


def check_not_original(folder: str | os.PathLike, original: str | os.PathLike) -> None:
    """Refuse an output folder that is the original classifier's folder or lies inside it (``original``: its name)."""
    folder, original = Path(folder).resolve(), Path(original).resolve()
    if folder == original or original in folder.parents:
        raise TexplainError(f"{folder}: would write into the original classifier's folder {original}; choose another --out")


def save_checkpoint(classifier: Classifier, folder: str | os.PathLike, original: str | os.PathLike) -> Path:
    """Save a fine-tuned classifier to a new folder, never the original classifier's (see :func:`check_not_original`)."""
    check_not_original(folder, original)
    return save_classifier(classifier, folder)

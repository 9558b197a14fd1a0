"""The Table 2 harness: TExplain's mitigation beside its baselines, same data, same seeds.

Methods (names as in the JSON and the table):

- ``erm``: the classifier as trained, untouched.
- ``randmask``: random masks on as many random training samples as TExplain
  selected, fine-tuned like TExplain.
- ``randmask_all``: random masks on every training sample, fine-tuned like TExplain.
- ``masktune``: Grad-CAM of the labelled class's logit masked on every
  training sample (at the layer TExplain's Grad-CAM would use), then
  fine-tuned for ``masktune_epochs`` (one, as MaskTune).
- ``jtt``: Just Train Twice: the training samples the classifier gets wrong
  are repeated ``jtt_upweight`` times among all the others, and it is
  fine-tuned on that set.
- ``dfr``: Deep Feature Reweighting: the last layer is retrained from scratch
  on a group-balanced part of the training set, the features kept. It uses
  the group labels, which TExplain never sees; the table says so.
- ``texplain``: the problematic samples (:mod:`.selection`), masked behind
  their non-class word (:mod:`.masks`), fine-tuned for ``finetune.epochs``.

Random masks cover, on average, the same share of the image as TExplain's
masks (or 1 - threshold when TExplain does not run). Selection and the
TExplain / MaskTune heat maps do not depend on the seed and are computed
once; each seed changes the random masks, the fill's donors, the balanced
subset and the fine-tuning order. Every method is scored on the same test
images: accuracy per group (class x background where the data names groups,
else per class), the worst group and the average, as mean and sample
standard deviation over the seeds.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from texplain.attribution.gradcam import region
from texplain.data.labelled import LabelledImage
from texplain.errors import TexplainError
from texplain.mitigation.config import MaskConfig, MitigateConfig
from texplain.mitigation.masks import cam_layer, localise, mask_batch, random_heat
from texplain.mitigation.selection import Selection, select_problematic, train_features
from texplain.models.classifiers import Classifier, load_classifier, replace_head, save_classifier
from texplain.models.lm import FrozenLM
from texplain.models.translator import Translator
from texplain.progress import tqdm
from texplain.statistics import group_accuracy
from texplain.training.classifier_training import label_indices, load_pixels, predict, train_classifier
from texplain.training.config import ClassifierTrainConfig

log = logging.getLogger(__name__)

METHOD_LABELS = {
    "erm": "ERM", "randmask": "RandMask (same number)", "randmask_all": "RandMask (all)",
    "masktune": "MaskTune", "jtt": "JTT", "dfr": "DFR (uses group labels)", "texplain": "TExplain",
}




@dataclass
class MaskedExample:
    """One masked training sample for the report: the image, its label, the word behind the mask, the heat map."""

    path: str
    label: str
    word: str | None
    heat: Tensor
    fraction: float


@dataclass
class Harness:
    """What every method shares: the classifier folder, train pixels and labels, test pixels, labels and groups."""

    classifier_folder: Path
    classifier: Classifier
    train_pixels: Tensor
    train_labels: Tensor
    train_groups: list[str]
    test_pixels: Tensor
    test_labels: Tensor
    test_groups: list[str]
    test_classes: list[str]


def check_translator(classifier: Classifier, translator: Translator, sample: Tensor) -> None:
    """Refuse a translator whose input does not fit the classifier's features (sample pixels (1, 3, H, W))."""
    with torch.inference_mode():
        features, _ = classifier.features_and_logits(sample.to(classifier.device))  # (1, T, D)
    have = tuple(features.shape[1:])
    want = (translator.config.in_tokens, translator.config.in_dim)
    layer = translator.provenance.feature_layer
    if have != want or (layer and layer != classifier.feature_layer):
        raise TexplainError(
            f"the translator does not match classifier {classifier.spec}: it reads features {want} from layer "
            f"{layer or '?'}, the classifier gives {have} from {classifier.feature_layer}"
        )


def run_mitigation(
    classifier_folder: str | os.PathLike,
    translator: Translator | None,
    lm: FrozenLM | None,
    train_items: Sequence[LabelledImage],
    test_items: Sequence[LabelledImage],
    out: str | os.PathLike,
    config: MitigateConfig | None = None,
    progress: bool = False,
) -> tuple[dict, list[MaskedExample]]:
    """Run every method over every seed; returns the JSON-ready result and a few masked examples.

    The TExplain checkpoint of each seed is saved under ``out/checkpoints``;
    the training images' features are kept in ``out/train_features``.
    """
    config = config or MitigateConfig()
    out = Path(out)
    check_not_original(out, classifier_folder)
    harness = _harness(Path(classifier_folder), train_items, test_items, config, progress)
    needs_words = "texplain" in config.methods or "randmask" in config.methods
    if needs_words and (translator is None or lm is None):
        raise TexplainError("mitigation: TExplain and RandMask need a translator and a language model")
    if needs_words:
        check_translator(harness.classifier, translator, harness.train_pixels[:1])
        translator.to(config.device)
        lm = lm.to(config.device)
    paths = [str(i.path) for i in train_items]
    labels = [i.label for i in train_items]
    result: dict = {"settings": config.to_json(), "train_images": len(train_items), "test_images": len(test_items),
                    "groups": sorted(set(harness.test_groups)), "classes": harness.classifier.class_names}
    selection, examples, texplain_heats = None, [], {}
    if needs_words:
        store = train_features(harness.classifier, paths, out / "train_features", progress)
        selection, _ = select_problematic(harness.classifier, translator, lm, store, paths, labels, config.selection, progress)
        result["selection"] = selection.to_json()
        log.info("selected %d of %d training images (%.1f%%)", len(selection.indices()), len(paths), 100 * selection.fraction)
        chosen = torch.tensor(selection.indices(), dtype=torch.long)
        check_classes(harness.train_labels[chosen], harness.classifier.class_names, config.min_per_class, "TExplain")
    if "texplain" in config.methods:
        texplain_heats, zero = _heats(harness, translator, lm, selection, config.mask, progress)
        result["texplain_zero_heat_maps"] = zero
        if not texplain_heats:
            raise TexplainError("TExplain: every selected sample's heat map is all zero: no region raises its word")
        fractions = [_fraction(h, harness, config.mask.threshold) for h in texplain_heats.values()]
        result["texplain_masked_fraction"] = round(float(np.mean(fractions)), 4)
        examples = [MaskedExample(paths[i], labels[i], selection.words[i], texplain_heats[i], f)
                    for i, f in list(zip(texplain_heats, fractions))[: config.examples]]
    masktune_heats = {}
    if "masktune" in config.methods:
        every = Selection(paths, labels, [None] * len(paths), [True] * len(paths))
        masktune_heats, result["masktune_zero_heat_maps"] = _heats(
            harness, None, None, every, replace(config.mask, localise="class", heat="gradcam"), progress)
    random_fraction = result.get("texplain_masked_fraction", 1.0 - config.mask.threshold)
    if "jtt" in config.methods:
        errors = (predict(harness.classifier, harness.train_pixels) != harness.train_labels).nonzero().squeeze(1)
        result["jtt_errors"] = len(errors)
    runs: dict[str, list[dict]] = {}
    for method in config.methods:
        runs[method] = []
        for seed in config.seeds:
            if method == "dfr":
                runs[method].append(_score(_dfr(harness, config, seed), harness, seed, {"method": "dfr"}))
            else:
                train = _method_set(method, harness, selection, texplain_heats, masktune_heats, random_fraction,
                                    config, seed, errors if method == "jtt" else None)
                runs[method].append(_run_one(method, harness, train, config, seed, out, progress))
            log.info("%s seed %d: worst group %.3f, average %.3f", method, seed,
                     runs[method][-1]["worst_group"], runs[method][-1]["average"])
    result["runs"] = runs
    result["summary"] = {m: summarise_runs(r) for m, r in runs.items()}
    return result, examples


def _harness(
    folder: Path, train_items: Sequence[LabelledImage], test_items: Sequence[LabelledImage], config: MitigateConfig,
    progress: bool,
) -> Harness:
    """Load the classifier and preprocess both splits once."""
    if not train_items or not test_items:
        raise TexplainError("mitigation: needs labelled train and test images")
    classifier = load_classifier(str(folder), trust_code=config.trust_code).to(config.device)
    names = classifier.class_names
    return Harness(
        classifier_folder=folder, classifier=classifier,
        train_pixels=load_pixels(classifier, train_items, progress), train_labels=label_indices(train_items, names),
        train_groups=[i.group or i.label for i in train_items],
        test_pixels=load_pixels(classifier, test_items, progress), test_labels=label_indices(test_items, names),
        test_groups=[i.group or i.label for i in test_items], test_classes=[i.label for i in test_items],
    )


def _heats(
    harness: Harness, translator: Translator | None, lm: FrozenLM | None, selection: Selection, mask: MaskConfig,
    progress: bool,
) -> tuple[dict[int, Tensor], int]:
    """Heat map per selected training image, by position, behind its word or its class logit; and the zero maps.

    A map with no positive value says nothing about where the shortcut is:
    its sample is left out, and how many there were is returned.
    """
    layer = cam_layer(harness.classifier, harness.train_pixels, mask)
    log.info("%s (%s) heat maps: %s", mask.heat, mask.localise, mask.where(layer))
    heats, zero = {}, 0
    for i in tqdm(selection.indices(), desc=f"{mask.heat} ({mask.localise})", unit="img", disable=not progress):
        heat = localise(harness.classifier, translator, lm, harness.train_pixels[i : i + 1], selection.words[i],
                        int(harness.train_labels[i]), mask, layer).cpu()
        if heat.max() > 0:
            heats[i] = heat
        else:
            zero += 1
    if zero:
        log.warning("%d of %d heat maps are all zero; those samples are left out", zero, len(selection.indices()))
    return heats, zero


def _fraction(heat: Tensor, harness: Harness, threshold: float) -> float:
    """Masked share of one image for a heat map."""
    return float(region(heat, tuple(harness.train_pixels.shape[-2:]), threshold).float().mean())


def _method_set(
    method: str, harness: Harness, selection: Selection | None, texplain_heats: dict[int, Tensor],
    masktune_heats: dict[int, Tensor], random_fraction: float, config: MitigateConfig, seed: int,
    errors: Tensor | None = None,
) -> tuple[Tensor, Tensor] | None:
    """The (pixels (n, 3, H, W), labels (n,)) a method fine-tunes on for one seed; None for ERM."""
    generator = torch.Generator().manual_seed(seed)
    n = len(harness.train_pixels)
    donors = harness.train_pixels
    if method == "erm":
        return None
    if method == "jtt":
        index = torch.cat([torch.arange(n), errors.repeat(config.jtt_upweight - 1)])
        index = index[torch.randperm(len(index), generator=generator)]
        return harness.train_pixels[index], harness.train_labels[index]
    if method in ("texplain", "masktune"):
        heats = texplain_heats if method == "texplain" else masktune_heats
        index = list(heats)
        masked, _ = mask_batch(harness.train_pixels[index], [heats[i] for i in index], config.mask.threshold,
                               config.mask.fill, generator, donors)
        return masked, harness.train_labels[index]
    count = len(selection.indices()) if method == "randmask" else n
    index = sorted(torch.randperm(n, generator=generator)[:count].tolist())
    grid = _grid(harness)
    heats = [random_heat(grid, generator) for _ in index]
    threshold = min(max(1.0 - random_fraction, 1e-3), 1.0)
    masked, _ = mask_batch(harness.train_pixels[index], heats, threshold, config.mask.fill, generator, donors)
    return masked, harness.train_labels[index]


def _grid(harness: Harness) -> tuple[int, int]:
    """The size random masks are drawn at: an eighth of the image, at least 2 x 2 cells."""
    h, w = harness.train_pixels.shape[-2:]
    return max(2, h // 8), max(2, w // 8)


def _run_one(
    method: str, harness: Harness, train: tuple[Tensor, Tensor] | None, config: MitigateConfig, seed: int, out: Path,
    progress: bool,
) -> dict:
    """Fine-tune (unless ERM) and score on the test images: group accuracy plus per-class accuracy."""
    if train is None:
        return _score(harness.classifier, harness, seed, {"fine_tuned_on": 0})
    pixels, labels = train
    if method != "texplain":
        check_classes(labels, harness.classifier.class_names, config.min_per_class, METHOD_LABELS[method])
    epochs = config.masktune_epochs if method == "masktune" else config.finetune.epochs
    settings = replace(config.finetune, epochs=epochs, seed=seed, device=config.device)
    classifier = fine_tune(harness.classifier_folder, pixels, labels, settings, progress=False,
                           trust_code=config.trust_code)
    extra = {"fine_tuned_on": len(labels)}
    if method == "texplain":
        folder = save_checkpoint(classifier, out / "checkpoints" / f"texplain-seed{seed}", harness.classifier_folder)
        extra["checkpoint"] = str(folder)
    return _score(classifier, harness, seed, extra)


def _dfr(harness: Harness, config: MitigateConfig, seed: int) -> Classifier:
    """The classifier with its last layer retrained from scratch on a group-balanced subset of the training set.

    Every group contributes as many images as the smallest group has (drawn
    with the seed), so no group's background can predict the class there.
    """
    generator = torch.Generator().manual_seed(seed)
    groups = sorted(set(harness.train_groups))
    members = {g: [i for i, x in enumerate(harness.train_groups) if x == g] for g in groups}
    size = min(len(m) for m in members.values())
    index = torch.tensor([m[j] for m in members.values() for j in torch.randperm(len(m), generator=generator)[:size].tolist()])
    classifier = load_classifier(str(harness.classifier_folder), trust_code=config.trust_code)
    replace_head(classifier.module, len(classifier.class_names))
    torch.manual_seed(seed)
    settings = replace(config.finetune, epochs=config.dfr_epochs, lr=config.dfr_lr, seed=seed, device=config.device,
                       head_only=True)
    train_classifier(classifier, harness.train_pixels[index], harness.train_labels[index], settings, progress=False)
    return classifier


def _score(classifier: Classifier, harness: Harness, seed: int, extra: dict) -> dict:
    """Accuracy per group and per class on the test images."""
    predictions = predict(classifier, harness.test_pixels)
    accuracy = group_accuracy(predictions.tolist(), harness.test_labels.tolist(), harness.test_groups)
    per_class = group_accuracy(predictions.tolist(), harness.test_labels.tolist(), harness.test_classes)["per_group"]
    return {"seed": seed, **accuracy, "per_class": per_class, **extra}


def _mean_std(values: Sequence[float]) -> dict:
    """Mean and sample standard deviation (0 for a single value)."""
    array = np.asarray(values, dtype=float)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {"mean": float(array.mean()), "std": std}


def summarise_runs(runs: Sequence[dict]) -> dict:
    """Mean ± std over seeds of worst-group and average accuracy, and of each group's and class's accuracy."""
    def by(key: str) -> dict:
        return {name: _mean_std([r[key][name] for r in runs]) for name in runs[0][key]}

    return {
        "worst_group": _mean_std([r["worst_group"] for r in runs]),
        "average": _mean_std([r["average"] for r in runs]),
        "per_group": by("per_group"),
        "per_class": by("per_class"),
        "seeds": [r["seed"] for r in runs],
    }


def check_classes(labels: Tensor, class_names: Sequence[str], min_per_class: int, what: str) -> None:
    """Refuse to fine-tune when a class has fewer than ``min_per_class`` samples (labels (n,) as indices)."""
    if len(labels) == 0:
        raise TexplainError(f"{what}: no problematic sample found, nothing to fine-tune on "
                            "(lower --min-frequency or --min-lift, or sample more sentences)")
    counts = Counter(labels.tolist())
    short = [(name, counts.get(i, 0)) for i, name in enumerate(class_names) if counts.get(i, 0) < min_per_class]
    if short:
        listed = ", ".join(f"{name} ({n})" for name, n in short)
        raise TexplainError(f"{what}: too few samples to fine-tune on for class {listed}; "
                            f"need {min_per_class} per class (lower --min-per-class to accept it)")


def fine_tune(
    classifier_folder: str | os.PathLike, pixels: Tensor, labels: Tensor, config: ClassifierTrainConfig,
    progress: bool = False, trust_code: bool = False,
) -> Classifier:
    """A fresh copy of the saved classifier, fine-tuned on pixels (n, 3, H, W) and labels (n,); the folder is only read.

    ``trust_code`` is :func:`~texplain.models.classifiers.load_classifier`'s.
    """
    classifier = load_classifier(str(classifier_folder), trust_code=trust_code)
    if len(pixels) < 2:
        raise TexplainError(f"fine-tuning: need at least 2 samples, got {len(pixels)}")
    torch.manual_seed(config.seed)
    train_classifier(classifier, pixels, labels, config, progress=progress)
    return classifier


def check_not_original(folder: str | os.PathLike, original: str | os.PathLike) -> None:
    """Refuse an output folder that is the original classifier's folder or lies inside it."""
    folder, original = Path(folder).resolve(), Path(original).resolve()
    if folder == original or original in folder.parents:
        raise TexplainError(f"{folder}: would write into the original classifier's folder {original}; choose another --out")


def save_checkpoint(classifier: Classifier, folder: str | os.PathLike, original: str | os.PathLike) -> Path:
    """Save a fine-tuned classifier to a new folder, never the original classifier's (see :func:`check_not_original`)."""
    check_not_original(folder, original)
    return save_classifier(classifier, folder)

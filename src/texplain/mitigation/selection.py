"""Mitigation (paper Table 2): explanations pick the samples that lean on a shortcut; mask it; fine-tune.

Three steps, each a small function here; the harness that runs them beside
the baselines is :mod:`texplain.mitigation.harness`.

1. **Selection.** Every training image is explained (N sentences). Its words
   are counted per sentence, the class's vocabulary
   (:mod:`texplain.analysis.class_vocabulary`: the name and its WordNet relatives) is merged
   into one entry named after the class, and each word's lift over the LM's
   own prior (:mod:`texplain.analysis.lm_prior`) is computed. The *dominant* words are
   those in at least ``min_frequency`` of the sentences with a lift of at
   least ``min_lift``, most frequent first (the one rule of
   :mod:`texplain.analysis.suspects`). An image is *problematic* when its first
   dominant word is not its labelled class.
2. **Localise and mask.** The region behind that word comes from word-grounded
   Grad-CAM (:func:`texplain.attribution.gradcam.word_cam`); the MaskTune-style option uses
   Grad-CAM of the class logit (:func:`texplain.attribution.gradcam.class_cam`). Where
   the feature layer's tokens are all alike (a small ViT's last layer) Grad-CAM
   is flat, so occlusion is offered too: the score's drop when each cell of a
   grid is hidden. The region at or above ``threshold`` is filled (the image's
   mean colour, blur, noise, or zero: the preprocessing's mean colour).
3. **Fine-tune.** A fresh copy of the classifier is fine-tuned on the masked
   problematic samples only, with a small learning rate for a few epochs, and
   saved to a new folder: the original classifier is never written.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from texplain.analysis.class_vocabulary import (
    ClassWordConfig,
    class_mentions,
    class_vocabularies,
    word_index,
)
from texplain.analysis.lm_prior import (
    LMPrior,
    PriorConfig,
    explain_prior,
    null_features,
)
from texplain.analysis.suspects import ClassMerge, dominant_words
from texplain.attribution.gradcam import (
    FILLS,
    class_cam,
    mask_image,
    normalise,
    region,
    word_cam,
    word_log_prob,
    word_token_rows,
)
from texplain.errors import TexplainError
from texplain.generate.explain import ExplainConfig, explain_stream
from texplain.generate.sampling import SamplingConfig
from texplain.generate.words import WordConfig
from texplain.models.classifiers import Classifier, load_classifier, save_classifier
from texplain.models.features import ExtractionConfig, FeatureStore, extract_features
from texplain.models.lm import FrozenLM
from texplain.models.translator import Translator
from texplain.training.classifier_training import (
    ClassifierTrainConfig,
    train_classifier,
)

LOCALISERS = ("word", "class")
MASK_FILLS = (*FILLS, "zero")
"""Gradcam's fills, plus ``zero``: the preprocessing's mean colour, which hides a background's colour too."""
HEAT_METHODS = ("gradcam", "occlusion")


@dataclass
class SelectionConfig:
    """How training images are explained and judged problematic.

    sampling: how each image's sentences are drawn (a few: every training
    image is explained). min_frequency: a dominant word is in at least this
    fraction of the image's sentences. min_lift: and said at least this many
    times more often than after a null prefix. prior: which null prefixes make
    the LM prior. class_words: how class names become vocabularies.
    """

    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(num_samples=20))
    min_frequency: float = 0.1
    min_lift: float = 1.5
    prior: PriorConfig = field(default_factory=PriorConfig)
    class_words: ClassWordConfig = field(default_factory=ClassWordConfig)

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_frequency <= 1.0 or self.min_lift < 0:
            raise TexplainError("selection: min_frequency must be in [0, 1] and min_lift non-negative")

    def explain_config(self) -> ExplainConfig:
        """The sampling and word settings every training image (and the prior) is explained with."""
        return ExplainConfig(sampling=self.sampling, words=WordConfig(top_k=50), word_cloud=False)


@dataclass
class MaskConfig:
    """Where and how a sample is masked.

    localise: ``word`` (the non-class word, TExplain's) or ``class`` (the
    labelled class's logit, MaskTune's). heat: ``gradcam`` (Grad-CAM at the
    classifier's feature layer) or ``occlusion`` (how much hiding each cell of
    a ``grid`` x ``grid`` grid lowers the score; for
    models whose feature-layer tokens are all alike, such as a ViT's last
    layer, where Grad-CAM is flat). threshold: the masked region is where the
    heat map reaches it. fill: mean, blur, noise (of the image, see
    :func:`texplain.attribution.gradcam.mask_image`; all keep the image's mean colour) or zero.
    """

    localise: str = "word"
    threshold: float = 0.5
    fill: str = "mean"
    heat: str = "gradcam"
    grid: int = 8

    def __post_init__(self) -> None:
        if self.localise not in LOCALISERS:
            raise TexplainError(f"mask localise {self.localise!r}: choose word or class")
        if self.fill not in MASK_FILLS:
            raise TexplainError(f"mask fill {self.fill!r}: choose one of {', '.join(MASK_FILLS)}")
        if not 0.0 < self.threshold <= 1.0:
            raise TexplainError(f"mask threshold must be in (0, 1], got {self.threshold}")
        if self.heat not in HEAT_METHODS or self.grid < 2:
            raise TexplainError(f"mask heat {self.heat!r}: choose gradcam or occlusion (grid at least 2)")


@dataclass
class Selection:
    """Per training image, its first dominant word (None: no word dominates) and whether it is problematic."""

    paths: list[str]
    labels: list[str]
    words: list[str | None]
    problematic: list[bool]

    @property
    def fraction(self) -> float:
        """Share of the training images selected."""
        return sum(self.problematic) / max(len(self.problematic), 1)

    def indices(self) -> list[int]:
        """Positions of the problematic images."""
        return [i for i, p in enumerate(self.problematic) if p]

    def to_json(self) -> dict:
        chosen = self.indices()
        return {
            "images": len(self.paths),
            "selected": len(chosen),
            "fraction": round(self.fraction, 4),
            "no_dominant_word": sum(w is None for w in self.words),
            "selected_per_class": dict(sorted(Counter(self.labels[i] for i in chosen).items())),
            "top_words_selected": Counter(self.words[i] for i in chosen).most_common(10),
        }


def train_features(
    classifier: Classifier, paths: Sequence[str], folder: str | os.PathLike, progress: bool = False
) -> FeatureStore:
    """The classifier's features of the training images, in a feature store under ``folder`` (reused if there)."""
    store, skipped = extract_features(classifier, list(paths), folder, ExtractionConfig(batch_size=64), progress=progress)
    if skipped:
        raise TexplainError(f"{skipped[0][0]}: a training image could not be read ({skipped[0][1]})")
    return store


def select_problematic(
    classifier: Classifier,
    translator: Translator,
    lm: FrozenLM,
    store: FeatureStore,
    paths: Sequence[str],
    labels: Sequence[str],
    config: SelectionConfig,
    progress: bool = False,
) -> tuple[Selection, LMPrior]:
    """Explain every training image and mark those whose first dominant word is not its class.

    The LM prior is explained first from the null prefixes of ``config.prior``
    (built from the classifier and ``store``), with the same sampling.
    """
    explain_config = config.explain_config()
    vocabularies = class_vocabularies(classifier.class_names, config.class_words, explain_config.words)
    index = word_index(vocabularies)
    prior = explain_prior(translator, lm, null_features(config.prior, classifier, store, list(paths)), explain_config, index,
                          config.prior.samples)
    words: list[str | None] = []
    explanations = explain_stream(translator, lm, (store.features([path])[0] for path in paths), explain_config, progress)
    for label, explanation in zip(labels, explanations):
        mentions = class_mentions(explanation.sentences, index, explain_config.words)
        merge = ClassMerge(label, vocabularies[label])
        found = dominant_words(merge(explanation.counter.document_counts(), mentions), explanation.counter.n_sentences,
                               merge, prior, config.min_frequency, config.min_lift)
        words.append(found[0].word if found else None)
    problematic = [w is not None and w != label for w, label in zip(words, labels)]
    return Selection(list(paths), list(labels), words, problematic), prior


def localise(
    classifier: Classifier,
    translator: Translator | None,
    lm: FrozenLM | None,
    pixels: Tensor,
    word: str | None,
    class_index: int,
    mask: MaskConfig,
) -> Tensor:
    """Heat map in [0, 1] of one image (pixels (1, 3, H, W)) behind ``word`` or the class logit.

    Grad-CAM gives (H, W); occlusion gives (grid, grid), which masking resizes.
    """
    pixels = pixels.to(classifier.device)
    if mask.localise == "word" and (word is None or translator is None or lm is None):
        raise TexplainError("word localisation needs a word, a translator and a language model")
    if mask.heat == "gradcam":
        if mask.localise == "class":
            return class_cam(classifier, pixels, class_index)
        return word_cam(classifier, translator, lm, pixels, word)
    if mask.localise == "class":
        return occlusion_heat(lambda x: classifier.features_and_logits(x)[1][:, class_index], pixels, mask.grid)
    rows = word_token_rows(lm, word)
    translator.eval()

    def score(x: Tensor) -> Tensor:
        features, _ = classifier.features_and_logits(x)  # (B, T, D)
        return word_log_prob(lm, translator(features.to(lm.device)), rows)  # (B,)

    return occlusion_heat(score, pixels, mask.grid)


def occlusion_heat(score: Callable[[Tensor], Tensor], pixels: Tensor, grid: int) -> Tensor:
    """How much hiding each cell lowers ``score``: pixels (1, 3, H, W) → heat (grid, grid) in [0, 1].

    Each of the grid x grid cells is set in turn to zero, the preprocessing's
    mean colour (not the image's own, which would keep a background's colour);
    all occluded copies are scored in one batch. Drops are clamped at
    zero and scaled by the largest; no drop anywhere gives an all-zero map.
    """
    _, _, h, w = pixels.shape
    rows = torch.linspace(0, h, grid + 1).round().long().tolist()
    cols = torch.linspace(0, w, grid + 1).round().long().tolist()
    copies = pixels.repeat(grid * grid, 1, 1, 1)  # (g*g, 3, H, W)
    for i in range(grid):
        for j in range(grid):
            copies[i * grid + j, :, rows[i] : rows[i + 1], cols[j] : cols[j + 1]] = 0.0
    with torch.inference_mode():
        base = score(pixels)  # (1,)
        occluded = torch.cat([score(chunk) for chunk in copies.split(64)])  # (g*g,)
    return normalise((base - occluded).float().cpu().reshape(grid, grid))


def random_heat(size: tuple[int, int], generator: torch.Generator) -> Tensor:
    """A random heat map (h, w) of independent uniform values: with threshold 1 - f it masks about f of the cells."""
    return torch.rand(size, generator=generator)


def mask_batch(
    pixels: Tensor, heats: Sequence[Tensor], threshold: float, fill: str, generator: torch.Generator
) -> tuple[Tensor, list[float]]:
    """Mask each image (pixels (n, 3, H, W)) where its heat map reaches ``threshold``.

    Returns the masked pixels (n, 3, H, W) and each image's masked fraction.
    """
    masked, fractions = [], []
    size = tuple(pixels.shape[-2:])
    for image, heat in zip(pixels, heats):
        where = region(heat.cpu(), size, threshold)  # (H, W)
        if fill == "zero":
            masked.append(torch.where(where[None], torch.zeros_like(image), image))
        else:
            masked.append(mask_image(image, heat.cpu(), threshold, fill, generator))
        fractions.append(float(where.float().mean()))
    return torch.stack(masked), fractions


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

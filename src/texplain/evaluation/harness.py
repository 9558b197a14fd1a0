"""Faithfulness evaluation: explanations against human captions, beside baselines, with sanity checks.

For each image that has reference captions, the classifier's features are
explained as usual (N nucleus-sampled sentences, dominant words). Every
figure comes in three rows:

- ``explanation``: the image's own sentences and words;
- ``null_prefix``: a caption-only LM that sees no image. By default the
  translator applied to the mean feature of the evaluated images (it knows
  the dataset, not the image); ``zero`` uses all-zero features, ``empty`` the
  LM started from the translator's start alone (:data:`~texplain.evaluation.config.NULL_PREFIXES`);
- ``shuffled``: each image explained with another image's features (a seeded
  derangement), scored against the first image's captions.

The explanation must beat both; each metric reports the margins (absolute and
relative), the share of images where the explanation wins, and a one-sided
Wilcoxon signed-rank p-value (:mod:`texplain.evaluation.scores`; the metrics are :mod:`texplain.evaluation.metrics`):
ROUGE-L, METEOR, MiniLM and (optionally) mean-pooled-BERT cosine per sampled
sentence against its best reference, averaged per image then over images;
precision@k of the dominant words against the references' content words;
whether the top word names the classifier's top-1 class. Then the sanity
checks (:mod:`texplain.evaluation.sanity`) and the causal check (:mod:`texplain.evaluation.causal`)
on the first few images.

Images without references, unreadable images and images whose explanation
has no content word are listed and left out: every figure counts only the
images that have both references and an explanation. Which images and
captions are evaluated comes from :mod:`texplain.evaluation.references`, the
printed table from :mod:`texplain.evaluation.table`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from texplain.errors import TexplainError
from texplain.evaluation.causal import causal_checks
from texplain.evaluation.config import NULL_PREFIXES, EvaluateConfig
from texplain.evaluation.sanity import (
    derangement,
    randomisation_cascade,
    reseeded_agreement,
    same_seed_identical,
    shuffled_pairing,
)
from texplain.evaluation.scores import caption_metrics, compare, rounded, word_metrics
from texplain.generate.explain import Explanation, explain_features, explain_lm_alone, explain_stream
from texplain.models.classifiers import Classifier
from texplain.models.config import ExtractionConfig
from texplain.models.explainer import Explainer
from texplain.models.features import ImageItem, classify_images, readable_pixels
from texplain.models.lm import FrozenLM
from texplain.models.translator import Translator
from texplain.progress import tqdm

log = logging.getLogger(__name__)


SHUFFLED = "each image explained with another image's features (seeded derangement), scored against its own captions"

EXAMPLE_SENTENCES = 3


@dataclass
class Evaluated:
    """One image that has references and a non-empty explanation."""

    image: str
    references: list[str]
    prediction: list[dict]
    explanation: Explanation


def evaluate(
    explainer: Explainer,
    references: Mapping[str, Sequence[str]],
    config: EvaluateConfig | None = None,
    progress: bool = True,
) -> dict:
    """Explain every image in ``references`` (path → captions) and measure against its captions.

    Returns the JSON-ready report: ``images`` (how many counted, and which
    were left out and why), one entry per metric with the three rows and the
    margins, ``sanity``, ``causal`` and ``per_image``.
    """
    config = config or EvaluateConfig()
    classifier, translator, lm = explainer.classifier, explainer.translator, explainer.lm
    paths = list(references)
    read, features, predictions, unreadable = image_features(classifier, paths, progress)
    kept, kept_rows, empty = [], [], []
    for i, (path, explanation) in enumerate(zip(read, explain_stream(translator, lm, features, config.explain, progress))):
        if explanation.top_words:
            kept.append(Evaluated(path, list(references[path]), predictions[i], explanation))
            kept_rows.append(i)
        else:
            empty.append(path)
            log.warning("%s: the explanation has no content word; left out", path)
    if len(kept) < 2:
        raise TexplainError(
            f"evaluate: {len(kept)} image(s) have both references and a non-empty explanation "
            f"({len(unreadable)} unreadable, {len(empty)} empty); at least 2 are needed for the shuffled control"
        )
    kept_features = features[kept_rows]  # (n, T, D)
    null = null_explanation(translator, lm, kept_features, config)
    permutation = derangement(len(kept), config.seed)
    rows = {
        "explanation": [e.explanation for e in kept],
        "null_prefix": [null] * len(kept),
        "shuffled": [kept[j].explanation for j in permutation],
    }
    report: dict = {
        "images": {
            "evaluated": len(kept),
            "with_references": len(paths),
            "unreadable": [{"image": p, "reason": r} for p, r in unreadable],
            "empty_explanations": empty,
        },
        "settings": _settings(config),
        "baselines": {"null_prefix": NULL_PREFIXES[config.null_prefix], "shuffled": SHUFFLED},
    }
    captions = [e.references for e in kept]
    per_metric = caption_metrics(rows, captions, config.minilm, config.bert, report, progress)
    per_metric.update(word_metrics(rows, captions, [e.prediction[0]["name"] for e in kept], config.words,
                                   config.precision_k))
    for name, values in per_metric.items():
        report[name] = compare(values)
    report["sanity"] = sanity_checks(classifier, translator, lm, kept, config, permutation, progress)
    report["causal"] = causal_section(classifier, translator, lm, kept, config, progress)
    report["per_image"] = [_image_record(e, i, per_metric) for i, e in enumerate(kept)]
    return report


def image_features(
    classifier: Classifier, paths: Sequence[str], progress: bool = False, batch_size: int = ExtractionConfig.batch_size
) -> tuple[list[str], Tensor, list[list[dict]], list[tuple[str, str]]]:
    """The readable images, their features (n, T, D) and top-5 classes, and (path, reason) for the others."""
    read, features, predictions, unreadable = [], [], [], []
    items = (ImageItem(str(p)) for p in tqdm(paths, desc="features", unit="img", disable=not progress))
    for batch in classify_images(classifier, items, batch_size, unreadable):
        read += [item.key for item in batch.items]
        features.append(batch.features.float().cpu())
        predictions += batch.top5
    for _, reason in unreadable:
        log.warning("skipped %s", reason)
    if not features:
        first = f" (first: {unreadable[0][1]})" if unreadable else ""
        raise TexplainError(f"evaluate: none of the {len(paths)} images could be read{first}")
    return read, torch.cat(features), predictions, unreadable


def null_explanation(translator: Translator, lm: FrozenLM, features: Tensor, config: EvaluateConfig) -> Explanation:
    """The caption-only baseline: sentences from a prefix that carries no image (see :data:`~texplain.evaluation.config.NULL_PREFIXES`)."""
    if config.null_prefix == "empty":
        return explain_lm_alone(lm, config.explain, translator.lm_start())
    mean = features.mean(0)  # (T, D)
    return explain_features(translator, lm, mean if config.null_prefix == "mean" else torch.zeros_like(mean), config.explain)


def sanity_checks(
    classifier: Classifier, translator: Translator, lm: FrozenLM, kept: Sequence[Evaluated], config: EvaluateConfig,
    permutation: Sequence[int], progress: bool = False,
) -> dict:
    """Randomisation cascade, shuffled pairing (all images), reseeded ceiling and the seed check."""
    k = config.correlation_k
    explanations = [e.explanation for e in kept]
    out: dict = {"correlation_k": k, "shuffled_pairing": shuffled_pairing(explanations, permutation, k)}
    subset = list(kept[: config.sanity_images])
    if not subset:
        out["skipped"] = "sanity_images is 0"
        return out
    pixels, good = readable_pixels(classifier, [e.image for e in subset])
    with torch.inference_mode():
        features, _ = classifier.features_and_logits(pixels.to(classifier.device))  # (m, T, D)
    reference = [e.explanation for e in subset]
    out["images"] = len(good)
    out["reseeded"] = reseeded_agreement(translator, lm, features, reference, config.explain, k)
    out["same_seed_identical"] = same_seed_identical(translator, lm, features[0], config.explain)
    if config.cascade:
        steps = randomisation_cascade(classifier, translator, lm, pixels, reference, config.explain, k, config.seed, progress)
        out["cascade"] = [s.to_json() for s in steps]
    else:
        out["cascade"] = {"skipped": "--no-cascade"}
    return out


def causal_section(
    classifier: Classifier, translator: Translator, lm: FrozenLM, kept: Sequence[Evaluated], config: EvaluateConfig,
    progress: bool = False,
) -> dict:
    """The causal check (:func:`texplain.evaluation.causal.causal_checks`) on the first ``causal_images`` images."""
    subset = list(kept[: config.causal_images])
    if not subset:
        return {"skipped": "causal_images is 0"}
    pixels, good = readable_pixels(classifier, [e.image for e in subset])
    return causal_checks(
        classifier, translator, lm, good, pixels, [e.explanation for e in subset], config.explain,
        config.mask, config.seed, progress,
    )


def _image_record(evaluated: Evaluated, index: int, per_metric: Mapping[str, Mapping[str, np.ndarray]]) -> dict:
    """One image's explanation and its scores in each row (same keys as ``texplain explain``'s records)."""
    return {
        "image": evaluated.image,
        **evaluated.explanation.to_json(EXAMPLE_SENTENCES),
        "prediction": evaluated.prediction,
        "references": evaluated.references,
        **{name: {c: rounded(float(v[index])) for c, v in values.items()} for name, values in per_metric.items()},
    }


def _settings(config: EvaluateConfig) -> dict:
    settings = asdict(config)
    settings["bert"] = str(config.bert) if config.bert else None
    settings["null_prefix_meaning"] = NULL_PREFIXES[config.null_prefix]
    settings["top_word_names_class_rule"] = "the word is in the class's vocabulary (texplain.text.class_vocabulary)"
    return settings

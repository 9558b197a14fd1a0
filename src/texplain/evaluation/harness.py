"""Faithfulness evaluation: explanations against human captions, beside baselines, with sanity checks.

For each image that has reference captions, the classifier's features are
explained as usual (N nucleus-sampled sentences, dominant words). Every
figure comes in three rows:

- ``explanation``: the image's own sentences and words;
- ``null_prefix``: a caption-only LM that sees no image. By default the
  translator applied to the mean feature of the evaluated images (it knows
  the dataset, not the image); ``zero`` uses all-zero features, ``empty`` the
  LM started from the translator's start alone (:data:`NULL_PREFIXES`);
- ``shuffled``: each image explained with another image's features (a seeded
  derangement), scored against the first image's captions.

The explanation must beat both; each metric reports the margins (absolute and
relative), the share of images where the explanation wins, and a one-sided
Wilcoxon signed-rank p-value. Metrics (see :mod:`texplain.evaluation.metrics`):
ROUGE-L, METEOR, MiniLM and (optionally) mean-pooled-BERT cosine per sampled
sentence against its best reference, averaged per image then over images;
precision@k of the dominant words against the references' content words;
whether the top word names the classifier's top-1 class. Then the sanity
checks (:mod:`texplain.evaluation.sanity`) and the causal check (:mod:`texplain.evaluation.causal`)
on the first few images.

Images without references, unreadable images and images whose explanation
has no content word are listed and left out: every figure counts only the
images that have both references and an explanation.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from texplain.analysis.class_vocabulary import names_class
from texplain.data.captions import read_captions
from texplain.data.images import images_in
from texplain.errors import TexplainError
from texplain.evaluation.causal import CAUSAL_FILLS, causal_checks
from texplain.evaluation.metrics import (
    MeanPooledEncoder,
    Meteor,
    RougeL,
    SentenceEncoder,
    best_cosine,
    embed_texts,
    load_minilm,
    precision_at_k,
    reference_words,
    word_matching,
    wup_similarity,
)
from texplain.evaluation.sanity import (
    derangement,
    randomisation_cascade,
    reseeded_agreement,
    same_seed_identical,
    shuffled_pairing,
)
from texplain.generate.explain import ExplainConfig, Explanation, explain_features, explain_lm_alone, explain_stream
from texplain.generate.sampling import SamplingConfig
from texplain.generate.words import WordConfig
from texplain.mitigation.masks import MaskConfig
from texplain.models.classifiers import Classifier
from texplain.models.explainer import Explainer
from texplain.models.features import readable_pixels, top_classes
from texplain.models.lm import FrozenLM
from texplain.models.translator import Translator

log = logging.getLogger(__name__)

CONDITIONS = ("explanation", "null_prefix", "shuffled")
BASELINES = ("null_prefix", "shuffled")

NULL_PREFIXES: dict[str, str] = {
    "mean": "translator applied to the mean feature of the evaluated images (knows the dataset, not the image)",
    "zero": "translator applied to all-zero features",
    "empty": "the LM with an empty prefix (the translator's start alone: the end-of-sentence token of a caption LM)",
}

SHUFFLED = "each image explained with another image's features (seeded derangement), scored against its own captions"

EXAMPLE_SENTENCES = 3


@dataclass
class EvaluateConfig:
    """What ``evaluate`` samples and measures.

    sampling: N, p, sentence length and seed for every explanation (the
    baselines use the same). words: how sentences become words. precision_k:
    the k of precision@k. correlation_k: top words per side in the rank
    correlations. null_prefix: ``mean``, ``zero`` or ``empty`` (see
    :data:`NULL_PREFIXES`). minilm: score MiniLM cosine. bert: a BERT-like
    folder for the paper's mean-pooled cosine (None: skipped with a note).
    sanity_images, causal_images: how many of the images the sanity and causal
    checks use (0 turns them off); cascade: run the randomisation cascade.
    mask_heat, mask_threshold, mask_fill: how the causal check finds the
    word's region (one of :data:`~texplain.mitigation.masks.HEAT_METHODS`) and
    masks it (one of :data:`~texplain.evaluation.causal.CAUSAL_FILLS`). seed: shuffling,
    weight randomisation and noise masks.
    """

    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(num_samples=50, min_words=5, max_words=30, batch_size=100)
    )
    words: WordConfig = field(default_factory=WordConfig)
    precision_k: int = 10
    correlation_k: int = 10
    null_prefix: str = "mean"
    minilm: bool = True
    bert: Path | None = None
    sanity_images: int = 8
    cascade: bool = True
    causal_images: int = 8
    mask_heat: str = "keep"
    mask_threshold: float = 0.5
    mask_fill: str = "zero"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.null_prefix not in NULL_PREFIXES:
            raise TexplainError(f"evaluate: null prefix {self.null_prefix!r}: choose one of {', '.join(NULL_PREFIXES)}")
        if self.precision_k < 1 or self.correlation_k < 2:
            raise TexplainError("evaluate: precision_k must be at least 1 and correlation_k at least 2")
        if self.sanity_images < 0 or self.causal_images < 0:
            raise TexplainError("evaluate: sanity_images and causal_images must be 0 or more")
        if self.bert is not None and not Path(self.bert).exists():
            raise TexplainError(f"evaluate: --bert {self.bert}: no such folder")
        if self.mask_fill not in CAUSAL_FILLS:
            raise TexplainError(f"evaluate: mask fill {self.mask_fill!r}: choose one of {', '.join(CAUSAL_FILLS)}")
        _ = self.mask  # MaskConfig checks the heat and the threshold

    @property
    def explain(self) -> ExplainConfig:
        return ExplainConfig(sampling=self.sampling, words=self.words, word_cloud=False)

    @property
    def mask(self) -> MaskConfig:
        """How the causal check finds and hides the region behind a word."""
        return MaskConfig(threshold=self.mask_threshold, fill=self.mask_fill, heat=self.mask_heat)


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
    per_metric = caption_metrics(rows, [e.references for e in kept], config, report, progress)
    per_metric.update(word_metrics(rows, kept, config))
    for name, values in per_metric.items():
        report[name] = compare(values)
    report["sanity"] = sanity_checks(classifier, translator, lm, kept, config, permutation, progress)
    report["causal"] = causal_section(classifier, translator, lm, kept, config, progress)
    report["per_image"] = [_image_record(e, i, per_metric) for i, e in enumerate(kept)]
    return report


def image_features(
    classifier: Classifier, paths: Sequence[str], progress: bool = False, batch_size: int = 16
) -> tuple[list[str], Tensor, list[list[dict]], list[tuple[str, str]]]:
    """The readable images, their features (n, T, D) and top-5 classes, and (path, reason) for the others."""
    read, features, predictions, unreadable = [], [], [], []
    for start in tqdm(range(0, len(paths), batch_size), desc="features", unit="batch", disable=not progress):
        pixels, good = readable_pixels(classifier, paths[start : start + batch_size], unreadable)
        if pixels is None:
            continue
        read += good
        with torch.inference_mode():
            tokens, logits = classifier.features_and_logits(pixels.to(classifier.device))  # (B, T, D), (B, C)
        features.append(tokens.float().cpu())
        predictions += top_classes(logits, classifier.class_names)
    for _, reason in unreadable:
        log.warning("skipped %s", reason)
    if not features:
        first = f" (first: {unreadable[0][1]})" if unreadable else ""
        raise TexplainError(f"evaluate: none of the {len(paths)} images could be read{first}")
    return read, torch.cat(features), predictions, unreadable


def null_explanation(translator: Translator, lm: FrozenLM, features: Tensor, config: EvaluateConfig) -> Explanation:
    """The caption-only baseline: sentences from a prefix that carries no image (see :data:`NULL_PREFIXES`)."""
    if config.null_prefix == "empty":
        return explain_lm_alone(lm, config.explain, translator.lm_start())
    mean = features.mean(0)  # (T, D)
    return explain_features(translator, lm, mean if config.null_prefix == "mean" else torch.zeros_like(mean), config.explain)


def caption_metrics(
    rows: Mapping[str, Sequence[Explanation]], references: Sequence[Sequence[str]], config: EvaluateConfig, report: dict,
    progress: bool = False,
) -> dict[str, dict[str, np.ndarray]]:
    """Per metric and condition, each image's mean over its sentences of the best-reference score.

    Records in ``report`` which METEOR matchers ran and which encoders were
    used or skipped (``bert_cosine`` gets a ``skipped`` note without a BERT).
    """
    rouge, meteor = RougeL(), Meteor()
    report["meteor_matching"] = meteor.matching
    report["word_matching"] = word_matching()
    out: dict[str, dict[str, np.ndarray]] = {"rouge_l": {}, "meteor": {}}
    for condition, explanations in rows.items():
        rouge_scores, meteor_scores = [], []
        for explanation, refs in tqdm(list(zip(explanations, references)), desc=f"score {condition}", unit="img", disable=not progress):
            rouge_scores.append(np.mean([rouge.best(s, refs) for s in explanation.sentences]))
            meteor_scores.append(np.mean([meteor.best(s, refs) for s in explanation.sentences]))
        out["rouge_l"][condition] = np.array(rouge_scores)
        out["meteor"][condition] = np.array(meteor_scores)
    encoders: dict[str, SentenceEncoder] = {}
    if config.minilm:
        encoders["minilm_cosine"] = load_minilm()
    if config.bert is not None:
        encoders["bert_cosine"] = MeanPooledEncoder(config.bert)
    else:
        report["bert_cosine"] = {"skipped": "no BERT given (--bert PATH); none ships offline"}
    for name, encoder in encoders.items():
        out[name] = cosine_scores(encoder, rows, references)
    report["encoders"] = {name: encoder.name for name, encoder in encoders.items()}
    return out


def cosine_scores(
    encoder: SentenceEncoder, rows: Mapping[str, Sequence[Explanation]], references: Sequence[Sequence[str]]
) -> dict[str, np.ndarray]:
    """Per condition, each image's mean over sentences of the best cosine with a reference; texts encoded once."""
    texts = [s for explanations in rows.values() for e in explanations for s in e.sentences]
    vectors = embed_texts(encoder, texts + [r for refs in references for r in refs])
    out = {}
    for condition, explanations in rows.items():
        scores = []
        for explanation, refs in zip(explanations, references):
            sentences = torch.stack([vectors[s] for s in explanation.sentences])  # (S, E)
            scores.append(float(best_cosine(sentences, torch.stack([vectors[r] for r in refs])).mean()))
        out[condition] = np.array(scores)
    return out


def word_metrics(rows: Mapping[str, Sequence[Explanation]], kept: Sequence[Evaluated], config: EvaluateConfig) -> dict[str, dict[str, np.ndarray]]:
    """Precision@k against reference words, and whether (and how closely) the top word names the top-1 class."""
    ref_words = [reference_words(e.references, config.words) for e in kept]
    classes = [e.prediction[0]["name"] for e in kept]
    k = config.precision_k
    precision, names, wup = {}, {}, {}
    for condition, explanations in rows.items():
        top = [[w for w, _ in e.top_words] for e in explanations]
        precision[condition] = np.array([precision_at_k(t, words, k) for t, words in zip(top, ref_words)])
        names[condition] = np.array([float(names_class(t[0], c)) for t, c in zip(top, classes)])
        wup[condition] = np.array([_nan(wup_similarity(t[0], c)) for t, c in zip(top, classes)])
    return {f"precision_at_{k}": precision, "top_word_names_class": names, "top_word_class_wup": wup}


def compare(values: Mapping[str, np.ndarray]) -> dict:
    """The three rows of one metric (means over images) and how far the explanation is ahead of each baseline."""
    from scipy.stats import wilcoxon

    means = {c: _nanmean(v) for c, v in values.items()}
    out: dict = {c: _round(m) for c, m in means.items()}
    out["images"] = int(np.sum(~np.isnan(values["explanation"])))
    ahead = []
    for base in BASELINES:
        both = ~np.isnan(values["explanation"]) & ~np.isnan(values[base])
        diff = values["explanation"][both] - values[base][both]
        margin = means["explanation"] - means[base]
        out[f"margin_vs_{base}"] = _round(margin)
        out[f"relative_margin_vs_{base}"] = _round(margin / means[base]) if means[base] > 0 else None
        out[f"wins_vs_{base}"] = _round(float(np.mean(diff > 0))) if diff.size else None
        out[f"p_value_vs_{base}"] = (
            _round(float(wilcoxon(diff, alternative="greater").pvalue), 6) if np.any(diff != 0) else None
        )
        ahead.append(margin > 0)
    out["beats_baselines"] = bool(all(ahead))
    return out


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


def select_references(
    captions: Path, images_dir: Path | None = None, split: str | None = None, images: Path | None = None,
    limit: int | None = None,
) -> tuple[dict[str, list[str]], list[str]]:
    """The images to evaluate with their reference captions, and the given images that have none.

    Every captioned image of ``split`` by default; only those under
    ``images`` (a folder or a file) when given; the first ``limit`` of them.
    """
    references = read_references(captions, images_dir, split)
    missing: list[str] = []
    if images is not None:
        candidates = [str(p) for p in images_in(images)]
        references, missing = match_images(candidates, references, captions)
    if limit is not None:
        if limit < 2:
            raise TexplainError(f"evaluate: --limit {limit}: at least 2 images are needed for the shuffled control")
        references = dict(list(references.items())[:limit])
    return references, missing


def read_references(path: Path, images_dir: Path | None, split: str | None) -> dict[str, list[str]]:
    """Image path → its reference captions, in the file's order."""
    references: dict[str, list[str]] = {}
    for pair in read_captions(path, images_dir, split):
        references.setdefault(str(pair.image), []).append(pair.caption)
    return references


def match_images(
    images: Sequence[str], references: Mapping[str, list[str]], source: os.PathLike | str = "the captions"
) -> tuple[dict[str, list[str]], list[str]]:
    """Pair each image with its references: by path, else by file name when that is unique.

    Returns (image → captions, images without references). None matching at
    all means the ids do not match: a one-line error with an example of each.
    """
    by_path = {os.path.realpath(p): p for p in references}
    names: dict[str, list[str]] = {}
    for p in references:
        names.setdefault(Path(p).name, []).append(p)
    matched, missing = {}, []
    for image in images:
        key = by_path.get(os.path.realpath(image))
        if key is None and len(names.get(Path(image).name, [])) == 1:
            key = names[Path(image).name][0]
        if key is None:
            missing.append(image)
        else:
            matched[image] = list(references[key])
    if not matched:
        example = next(iter(references), "none")
        raise TexplainError(
            f"evaluate: none of the {len(images)} images has reference captions in {source}: the image ids do not "
            f"match (e.g. {Path(images[0]).name if images else 'no image'} vs {Path(example).name})"
        )
    for image in missing:
        log.warning("%s: no reference captions in %s; left out", image, source)
    return matched, missing


def format_table(report: dict) -> str:
    """The report's metrics as a plain-text table: the three rows, then the margins (absolute and relative)."""
    header = f"{'metric':<22}{'explanation':>12}{'null-prefix':>12}{'shuffled':>10}{'vs null':>18}{'vs shuffled':>18}  beats both"
    lines = [header, "-" * len(header)]
    for name in metric_names(report):
        row = report[name]
        cells = [_cell(row[c]) for c in CONDITIONS] + [_margin(row, base) for base in BASELINES]
        lines.append(f"{name:<22}{cells[0]:>12}{cells[1]:>12}{cells[2]:>10}{cells[3]:>18}{cells[4]:>18}  "
                     f"{'yes' if row['beats_baselines'] else 'NO'}")
    return "\n".join(lines)


def metric_names(report: dict) -> list[str]:
    """Keys of the report that hold a metric's three rows."""
    return [k for k, v in report.items() if isinstance(v, dict) and "explanation" in v and "beats_baselines" in v]


def _image_record(evaluated: Evaluated, index: int, per_metric: Mapping[str, Mapping[str, np.ndarray]]) -> dict:
    """One image's explanation and its scores in each row (same keys as ``texplain explain``'s records)."""
    return {
        "image": evaluated.image,
        **evaluated.explanation.to_json(EXAMPLE_SENTENCES),
        "prediction": evaluated.prediction,
        "references": evaluated.references,
        **{name: {c: _round(float(v[index])) for c, v in values.items()} for name, values in per_metric.items()},
    }


def _settings(config: EvaluateConfig) -> dict:
    settings = asdict(config)
    settings["bert"] = str(config.bert) if config.bert else None
    settings["null_prefix_meaning"] = NULL_PREFIXES[config.null_prefix]
    settings["top_word_names_class_rule"] = "the word is in the class's vocabulary (texplain.analysis.class_vocabulary)"
    return settings


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _margin(row: dict, base: str) -> str:
    """'+0.026 (+11%)': the explanation's lead over one baseline."""
    margin, relative = row[f"margin_vs_{base}"], row[f"relative_margin_vs_{base}"]
    if margin is None:
        return "n/a"
    return f"{margin:+.3f}" + (f" ({relative:+.0%})" if relative is not None else "")


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _nanmean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.any(~np.isnan(values)) else math.nan


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)

"""Every metric in three rows: per-image scores of the explanation and its two baselines, and how far it leads.

A row is a condition (:data:`CONDITIONS`): the image's own explanation, the
null prefix, or another image's explanation (shuffled); each holds one
score per image. Caption metrics score every sampled sentence against its
best reference and average per image; word metrics score the dominant words
(precision@k against the references' content words, whether the top word
names the top-1 class). :func:`compare` turns one metric's rows into its
means, margins (absolute and relative), wins and a one-sided Wilcoxon
signed-rank p-value per baseline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

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
from texplain.generate.explain import Explanation
from texplain.progress import tqdm
from texplain.text.class_vocabulary import names_class
from texplain.text.config import WordConfig

CONDITIONS = ("explanation", "null_prefix", "shuffled")
BASELINES = ("null_prefix", "shuffled")

Rows = Mapping[str, Sequence[Explanation]]
"""Per condition, one explanation per evaluated image (in the same order as the references)."""


def caption_metrics(
    rows: Rows, references: Sequence[Sequence[str]], minilm: bool, bert: Path | None, report: dict,
    progress: bool = False,
) -> dict[str, dict[str, np.ndarray]]:
    """Per metric and condition, each image's mean over its sentences of the best-reference score.

    ROUGE-L and METEOR always; MiniLM cosine when ``minilm``; the paper's
    mean-pooled BERT cosine with a ``bert`` folder. Records in ``report``
    which METEOR matchers ran and which encoders were used or skipped
    (``bert_cosine`` gets a ``skipped`` note without a BERT).
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
    if minilm:
        encoders["minilm_cosine"] = load_minilm()
    if bert is not None:
        encoders["bert_cosine"] = MeanPooledEncoder(bert)
    else:
        report["bert_cosine"] = {"skipped": "no BERT given (--bert PATH); none ships offline"}
    for name, encoder in encoders.items():
        out[name] = cosine_scores(encoder, rows, references)
    report["encoders"] = {name: encoder.name for name, encoder in encoders.items()}
    return out


def cosine_scores(encoder: SentenceEncoder, rows: Rows, references: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
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


def word_metrics(
    rows: Rows, references: Sequence[Sequence[str]], classes: Sequence[str], words: WordConfig, k: int
) -> dict[str, dict[str, np.ndarray]]:
    """Precision@k against reference words, and whether (and how closely) the top word names the top-1 class.

    ``classes``: each image's top-1 class name.
    """
    ref_words = [reference_words(refs, words) for refs in references]
    precision, names, wup = {}, {}, {}
    for condition, explanations in rows.items():
        top = [[w for w, _ in e.top_words] for e in explanations]
        precision[condition] = np.array([precision_at_k(t, ws, k) for t, ws in zip(top, ref_words)])
        names[condition] = np.array([float(names_class(t[0], c)) for t, c in zip(top, classes)])
        wup[condition] = np.array([_nan(wup_similarity(t[0], c)) for t, c in zip(top, classes)])
    return {f"precision_at_{k}": precision, "top_word_names_class": names, "top_word_class_wup": wup}


def compare(values: Mapping[str, np.ndarray]) -> dict:
    """The three rows of one metric (means over images) and how far the explanation is ahead of each baseline."""
    from scipy.stats import wilcoxon

    means = {c: _nanmean(v) for c, v in values.items()}
    out: dict = {c: rounded(m) for c, m in means.items()}
    out["images"] = int(np.sum(~np.isnan(values["explanation"])))
    ahead = []
    for base in BASELINES:
        both = ~np.isnan(values["explanation"]) & ~np.isnan(values[base])
        diff = values["explanation"][both] - values[base][both]
        margin = means["explanation"] - means[base]
        out[f"margin_vs_{base}"] = rounded(margin)
        out[f"relative_margin_vs_{base}"] = rounded(margin / means[base]) if means[base] > 0 else None
        out[f"wins_vs_{base}"] = rounded(float(np.mean(diff > 0))) if diff.size else None
        out[f"p_value_vs_{base}"] = (
            rounded(float(wilcoxon(diff, alternative="greater").pvalue), 6) if np.any(diff != 0) else None
        )
        ahead.append(margin > 0)
    out["beats_baselines"] = bool(all(ahead))
    return out


def rounded(value: float | None, digits: int = 4) -> float | None:
    """A score as the report writes it: rounded, and None where there is none (NaN)."""
    return None if value is None or math.isnan(value) else round(value, digits)


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _nanmean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.any(~np.isnan(values)) else math.nan

"""Mitigation (paper Table 2), step one: explanations pick the training samples that lean on a shortcut.

Every training image is explained (N sentences). Its words are counted per
sentence, the class's vocabulary (:mod:`texplain.text.class_vocabulary`:
the name and its WordNet relatives) is merged into one entry named after the
class, and each word's lift over the LM's own prior
(:mod:`texplain.analysis.lm_prior`) is computed. The *dominant* words are those
in at least ``min_frequency`` of the sentences with a lift of at least
``min_lift``, most frequent first (the one rule of
:mod:`texplain.analysis.suspects`). An image is *problematic* when its first
dominant word is not its labelled class. The next steps, masking the region
behind that word and fine-tuning, are :mod:`.masks` and :mod:`.harness`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from texplain.analysis.lm_prior import LMPrior, explain_prior, null_features
from texplain.analysis.suspects import ClassMerge, dominant_words
from texplain.errors import TexplainError
from texplain.generate.explain import explain_stream
from texplain.mitigation.config import SelectionConfig
from texplain.models.classifiers import Classifier
from texplain.models.config import ExtractionConfig
from texplain.models.features import FeatureStore, extract_features
from texplain.models.lm import FrozenLM
from texplain.models.translator import Translator
from texplain.text.class_vocabulary import class_mentions, class_vocabularies, word_index


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
